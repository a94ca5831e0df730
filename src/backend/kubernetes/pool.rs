//! The Kubernetes backend's warm pools. A member is the pod a cold start of its shape would get
//! (named after the runtime id it will have), started dormant (`OH_DEFERRED_INIT=true`) with a
//! random init key in a Secret of its own, and labelled as a member of its pool: no record, no
//! session, no owner, so it is never a runtime in any view.
//!
//! The cluster holds the whole state, so any replica can claim and any leader can refill:
//! - the leader keeps each pool at its size from the pod cache ([`plan_refill`]): a new leader
//!   counts the members its predecessor created;
//! - a claim flips a ready member's state label with its resourceVersion as the precondition: of
//!   two replicas racing for one member, one gets 409 Conflict and tries the next member;
//! - the claimer delivers the session through `POST /api/init` to the pod's address, then writes
//!   the record and turns the init Secret into the runtime's Secret, so from there on the runtime
//!   is an ordinary one (resume starts a cold pod from its record). Anything failing on the way
//!   deletes the member and the start goes cold.
//!
//! A claimed member without a record after the orphan grace (its claimer died) is an orphan.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{EnvVar, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use serde_json::json;

use super::KubernetesBackend;
use super::cached::{CachedPod, CachedRecord};
use super::lifecycle::CACHE_CATCH_UP;
use super::manifests::{self, Identity};
use super::record::{self, COMPONENT_SECRET, LABEL_SESSION_HASH, claim_name, object_name};
use super::settings::KubeSettings;
use super::store;
use super::writes::Created;
use crate::pool::init::{dormant_environment, init_body};
use crate::pool::{PoolSpec, Pools, Shape};
use crate::runtime::env::Injected;
use crate::runtime::urls;
use crate::runtime::{BackendResult, Runtime, RuntimeSpec, ids};

/// On members: the name of their pool.
pub const LABEL_POOL: &str = "runtime-api.openhands.dev/pool";
/// On members: a hash of the shape they were made for (a pool renamed or reshaped by a new
/// configuration never serves the old shape).
pub const LABEL_POOL_SHAPE: &str = "runtime-api.openhands.dev/pool-shape";
/// On member pods: [`STATE_DORMANT`] until a start claims them, then [`STATE_CLAIMED`].
pub const LABEL_POOL_STATE: &str = "runtime-api.openhands.dev/pool-state";
pub const STATE_DORMANT: &str = "dormant";
pub const STATE_CLAIMED: &str = "claimed";
/// On claimed member pods: when, and by which replica (its identity, no secret).
pub const ANNOTATION_CLAIMED_AT: &str = "runtime-api.openhands.dev/claimed-at";
pub const ANNOTATION_CLAIMED_BY: &str = "runtime-api.openhands.dev/claimed-by";
/// On the record of a runtime a member served: the pool's name.
pub const ANNOTATION_WARM_POOL: &str = "runtime-api.openhands.dev/warm-pool";
/// The init key's variable in a member's Secret.
pub const INIT_KEY: &str = "OH_SECRET_KEY";
/// The session-key variable a member boots with (see [`member_objects`]); one of
/// [`SESSION_KEY_VARS`](crate::runtime::env::SESSION_KEY_VARS), so a claim overwrites it.
const DORMANT_SESSION_KEY: &str = "OH_SESSION_API_KEYS_0";

/// A member not Ready by then is replaced (an image pull on a fresh node can take minutes).
pub const MEMBER_BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Members booting at once, over every pool: a refill after a burst of claims does not flood the
/// scheduler and the nodes' image pulls; the next ones follow as these become Ready.
pub const MAX_BOOTING: usize = 5;

/// The label value of a shape.
pub fn shape_hash(shape: &Shape) -> String {
    ids::session_hash(&format!("{shape:?}"))
}

/// A member pod as the cache shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub pod: String,
    pub runtime_id: String,
    pub pool: String,
    pub shape: String,
    pub claimed: bool,
    pub claimed_at: Option<jiff::Timestamp>,
    /// Its pod is Ready: the dormant agent server answers its readiness probe.
    pub ready: bool,
    /// Its pod failed for good (phase Failed).
    pub failed: bool,
    pub deleting: bool,
    pub address: Option<IpAddr>,
    pub created: Option<jiff::Timestamp>,
    pub resource_version: String,
    pub uid: String,
}

/// The member a pod is, if it is one.
pub fn member(pod: &CachedPod) -> Option<Member> {
    let labels = pod.pool.as_ref()?;
    Some(Member {
        pod: pod.meta.name.clone(),
        runtime_id: pod.meta.runtime_id.clone()?,
        pool: labels.pool.clone(),
        shape: labels.shape.clone(),
        claimed: labels.claimed,
        claimed_at: labels.claimed_at,
        ready: pod.ready,
        failed: pod.failed,
        deleting: pod.meta.deleting,
        address: pod.address,
        created: pod.meta.created,
        resource_version: pod.meta.resource_version.clone(),
        uid: pod.meta.uid.clone(),
    })
}

/// Whether `member` belongs to `pool` as configured now.
fn serves(member: &Member, pool: &PoolSpec) -> bool {
    member.pool == pool.name && member.shape == shape_hash(&pool.shape)
}

/// One refill round's work.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Refill {
    /// Pools to add one member to, one entry per member.
    pub create: Vec<String>,
    /// Dormant members to delete: of no configured pool, failed, or not Ready in time.
    pub delete: Vec<Member>,
}

/// Decides a refill round from the cached members (claimed ones are runtimes in the making, not
/// the pool's). Pure, so the counting that keeps a pool at exactly its size is unit-tested.
pub fn plan_refill(pools: &Pools, members: &[Member], now: jiff::Timestamp) -> Refill {
    let stuck = |m: &Member| {
        !m.ready
            && m.created.is_some_and(|c| now.duration_since(c).unsigned_abs() > MEMBER_BOOT_TIMEOUT)
    };
    let dormant: Vec<&Member> = members.iter().filter(|m| !m.claimed && !m.deleting).collect();
    let (kept, delete): (Vec<&Member>, Vec<&Member>) = dormant
        .into_iter()
        .partition(|m| !m.failed && !stuck(m) && pools.0.iter().any(|p| serves(m, p)));
    let mut booting = kept.iter().filter(|m| !m.ready).count();
    let mut create = Vec::new();
    for pool in &pools.0 {
        let have = kept.iter().filter(|m| serves(m, pool)).count();
        for _ in have..pool.size {
            if booting >= MAX_BOOTING {
                break;
            }
            booting += 1;
            create.push(pool.name.clone());
        }
    }
    Refill { create, delete: delete.into_iter().cloned().collect() }
}

/// The runtime ids the orphan sweep must leave alone: dormant members, and claimed ones whose
/// claim is younger than `grace` (their claimer is still writing the record).
pub fn protected(
    pods: &[std::sync::Arc<CachedPod>],
    grace: Duration,
    now: jiff::Timestamp,
) -> HashSet<String> {
    pods.iter()
        .filter_map(|p| member(p))
        .filter(|m| {
            !m.claimed || m.claimed_at.is_none_or(|t| now.duration_since(t).unsigned_abs() < grace)
        })
        .map(|m| m.runtime_id)
        .collect()
}

/// Labels and no owner: what makes an object a member's.
fn member_meta(meta: &mut ObjectMeta, pool: &PoolSpec) {
    meta.owner_references = None;
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(LABEL_POOL.into(), pool.name.clone());
    labels.insert(LABEL_POOL_SHAPE.into(), shape_hash(&pool.shape));
}

/// The objects of a new member: its Secret (the init key), its pod (a cold start's pod of the
/// shape, dormant) and, with workspace storage, its claim.
pub fn member_objects(
    s: &KubeSettings,
    pool: &PoolSpec,
    runtime_id: &str,
    init_key: &str,
    created_at: &str,
) -> BackendResult<(Secret, Pod, Option<PersistentVolumeClaim>)> {
    let spec = pool.shape.member_spec();
    let class = manifests::runtime_class(s, &spec)?;
    let id = Identity { runtime_id, session_hash: "", owner: OwnerReference::default() };
    let mut pod = manifests::pod(s, &id, &spec, class, 1, created_at);
    member_meta(&mut pod.metadata, pool);
    pod.labels_mut().insert(LABEL_POOL_STATE.into(), STATE_DORMANT.into());
    let base_path = urls::vscode_base_path(&s.url_style, runtime_id);
    let mut secret_data = BTreeMap::new();
    if let Some(container) = pod.spec.as_mut().and_then(|p| p.containers.first_mut()) {
        let env = container.env.get_or_insert_with(Vec::new);
        // The agent server binds loopback when it starts without a session key (and all
        // interfaces with one): a member would be unreachable in its pod. Its init key serves as
        // that key until `/api/init` replaces it, so the dormant server also refuses everyone
        // else meanwhile; the claim overwrites the variable with the session's key.
        secret_data.insert(DORMANT_SESSION_KEY.into(), ByteString(init_key.as_bytes().to_vec()));
        for (name, value) in dormant_environment(init_key, s.ports, base_path.as_deref()) {
            if name == INIT_KEY {
                secret_data.insert(name, ByteString(value.into_bytes()));
                continue;
            }
            env.retain(|v| v.name != name);
            env.push(EnvVar { name, value: Some(value), ..Default::default() });
        }
    }
    let mut secret = Secret {
        metadata: ObjectMeta {
            name: Some(object_name(runtime_id)),
            namespace: Some(s.namespace.clone()),
            labels: Some(record::labels(runtime_id, "", COMPONENT_SECRET)),
            ..Default::default()
        },
        data: Some(secret_data),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    member_meta(&mut secret.metadata, pool);
    let claim = manifests::workspace_claim(s, &id).map(|mut c| {
        member_meta(&mut c.metadata, pool);
        c
    });
    Ok((secret, pod, claim))
}

/// Where a claim stands when it gives up: the start goes cold.
enum Lost {
    /// No member could be claimed.
    Miss,
    /// A member was claimed but could not serve (deleted since).
    InitFailure,
}

impl KubernetesBackend {
    /// Members of every pool, from the cache.
    fn members(&self) -> Vec<Member> {
        self.inner.store.pods().iter().filter_map(|p| member(p)).collect()
    }

    /// One refill round (the leader's): creates missing members, deletes those of no pool and
    /// those that failed or never came up, then sets the pool gauges.
    pub(super) async fn keep_pools(&self) -> BackendResult<()> {
        let s = &self.inner.settings;
        let members = self.members();
        if s.pools.is_empty() && members.is_empty() {
            return Ok(());
        }
        let plan = plan_refill(&s.pools, &members, jiff::Timestamp::now());
        for m in &plan.delete {
            tracing::info!(pool = %m.pool, runtime_id = %m.runtime_id, ready = m.ready, failed = m.failed, "deleting a pool member that no pool wants");
            self.discard_member(&m.runtime_id, &m.pod).await?;
        }
        for name in &plan.create {
            let Some(pool) = s.pools.by_name(name) else { continue };
            self.create_member(pool).await?;
        }
        self.pool_gauges();
        Ok(())
    }

    /// Sets each pool's gauges from the cache.
    fn pool_gauges(&self) {
        let members = self.members();
        for pool in &self.inner.settings.pools.0 {
            let of_pool =
                || members.iter().filter(|m| serves(m, pool) && !m.claimed && !m.deleting);
            let ready = of_pool().filter(|m| m.ready).count();
            let starting = of_pool().count() - ready;
            self.inner.metrics.pool.members(&pool.name, pool.size, ready, starting);
        }
    }

    /// Creates one member and waits until the cache shows it, so the next round counts it.
    async fn create_member(&self, pool: &PoolSpec) -> BackendResult<()> {
        let s = &self.inner.settings;
        let runtime_id = ids::new_runtime_id();
        let init_key = ids::new_session_key();
        let created_at = jiff::Timestamp::now().to_string();
        let (secret, pod, claim) = member_objects(s, pool, &runtime_id, &init_key, &created_at)?;
        self.writer().create("secret", &secret).await?;
        if let Some(claim) = claim {
            self.writer().create("workspace claim", &claim).await?;
        }
        self.ensure_network_policy().await?;
        self.writer().create("sandbox pod", &pod).await?;
        let name = pod.name_any();
        let store = &self.inner.store;
        store::wait_until(CACHE_CATCH_UP, || store.pod(&name).is_some()).await;
        tracing::info!(pool = %pool.name, runtime_id = %runtime_id, "pool member created");
        Ok(())
    }

    /// Deletes a member's objects and waits until the cache no longer counts its pod.
    async fn discard_member(&self, runtime_id: &str, pod: &str) -> BackendResult<()> {
        self.writer().delete::<Pod>("sandbox pod", pod).await?;
        self.writer().delete::<Secret>("secret", &object_name(runtime_id)).await?;
        if self.inner.settings.workspace_storage_size.is_some() {
            self.writer()
                .delete::<PersistentVolumeClaim>("workspace claim", &claim_name(runtime_id))
                .await?;
        }
        let store = &self.inner.store;
        store::wait_until(CACHE_CATCH_UP, || store.pod(pod).is_none_or(|p| p.meta.deleting)).await;
        Ok(())
    }

    /// A start of a pooled shape: a runtime made from a claimed member, or `None` (counted as a
    /// miss or an init failure) when the start must go cold. Never an error of its own.
    pub(super) async fn start_warm(
        &self,
        pool: &PoolSpec,
        spec: &RuntimeSpec,
        session_hash: &str,
    ) -> Option<BackendResult<Runtime>> {
        let metrics = &self.inner.metrics.pool;
        let started = std::time::Instant::now();
        match self.claim_and_init(pool, spec, session_hash).await {
            Ok(runtime) => {
                metrics.claim(&pool.name, "hit");
                metrics.started(true, started.elapsed().as_secs_f64());
                Some(runtime)
            }
            Err(Lost::Miss) => {
                metrics.claim(&pool.name, "miss");
                None
            }
            Err(Lost::InitFailure) => {
                metrics.claim(&pool.name, "init_failure");
                None
            }
        }
    }

    /// Claims a ready member of `pool` (trying each in turn, from a point that differs per
    /// session so concurrent starts spread over the members), initialises it, and makes it the
    /// session's runtime.
    async fn claim_and_init(
        &self,
        pool: &PoolSpec,
        spec: &RuntimeSpec,
        session_hash: &str,
    ) -> Result<BackendResult<Runtime>, Lost> {
        let mut ready: Vec<Member> = self
            .members()
            .into_iter()
            .filter(|m| serves(m, pool) && !m.claimed && !m.deleting && m.ready)
            .filter(|m| m.address.is_some())
            .collect();
        if ready.is_empty() {
            return Err(Lost::Miss);
        }
        ready.sort_by(|a, b| a.pod.cmp(&b.pod));
        let offset = u64::from_str_radix(session_hash.get(..8).unwrap_or("0"), 16).unwrap_or(0);
        let start = (offset % ready.len() as u64) as usize;
        ready.rotate_left(start);
        for m in ready {
            let patch = json!({"metadata": {
                "resourceVersion": m.resource_version,
                "labels": { LABEL_POOL_STATE: STATE_CLAIMED, LABEL_SESSION_HASH: session_hash },
                "annotations": {
                    ANNOTATION_CLAIMED_AT: jiff::Timestamp::now().to_string(),
                    ANNOTATION_CLAIMED_BY: self.inner.identity,
                },
            }});
            match self.writer().patch_if::<Pod>("sandbox pod", &m.pod, patch).await {
                Ok(Some(_)) => {}
                // Another start claimed it first, or it is gone: the next one.
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(pool = %pool.name, error = %e.chain(), "could not claim a pool member; starting cold");
                    return Err(Lost::Miss);
                }
            }
            return match self.serve(pool, &m, spec, session_hash).await {
                Ok(runtime) => Ok(Ok(runtime)),
                Err(Served::Conflict) => {
                    // This session's record appeared meanwhile (another replica's start):
                    // the member goes, the start answers as a second start would.
                    let _ = self.discard_member(&m.runtime_id, &m.pod).await;
                    Err(Lost::InitFailure)
                }
                Err(Served::Failed(why)) => {
                    tracing::warn!(pool = %pool.name, runtime_id = %m.runtime_id, error = %why, "a claimed pool member could not serve; deleting it and starting cold");
                    if let Err(e) = self.discard_member(&m.runtime_id, &m.pod).await {
                        tracing::warn!(runtime_id = %m.runtime_id, error = %e.chain(), "could not delete a failed pool member; the orphan sweep will");
                    }
                    Err(Lost::InitFailure)
                }
            };
        }
        Err(Lost::Miss)
    }

    /// Initialises a claimed member with the session and writes the runtime around it: record,
    /// Secret (the session's, replacing the init key), owner references, Service and routing.
    async fn serve(
        &self,
        pool: &PoolSpec,
        m: &Member,
        spec: &RuntimeSpec,
        session_hash: &str,
    ) -> Result<Runtime, Served> {
        let s = &self.inner.settings;
        let failed = |e: crate::runtime::BackendError| Served::Failed(e.chain().to_string());
        // From the cache (it keeps members' init keys); the API server if it lags.
        let secret_name = object_name(&m.runtime_id);
        let cached = self.inner.store.secret(&secret_name).and_then(|s| s.init_key.clone());
        let init_key = match cached {
            Some(key) => key,
            None => self
                .writer()
                .get_secret(&secret_name)
                .await
                .map_err(failed)?
                .and_then(|secret| record::secret_value(&secret, INIT_KEY))
                .ok_or_else(|| Served::Failed("the member's init Secret is gone".into()))?,
        };
        let session_key = ids::new_session_key();
        let base_path = urls::vscode_base_path(&s.url_style, &m.runtime_id);
        let injected = Injected {
            session_key: &session_key,
            app_server_url: s.app_server_url.as_deref(),
            app_server_public_url: s.app_server_public_url.as_deref(),
            ports: s.ports,
            vscode_base_path: base_path.as_deref(),
        };
        let body = init_body(&spec.environment, &injected);
        let address =
            m.address.ok_or_else(|| Served::Failed("the member has no address".into()))?;
        let url = format!("http://{}", std::net::SocketAddr::new(address, s.ports.agent));
        self.inner.init.initialize(&url, &init_key, &body).await.map_err(Served::Failed)?;

        let created_at = jiff::Timestamp::now().to_string();
        let mut record =
            record::record(&s.namespace, &m.runtime_id, session_hash, spec, &created_at);
        record.annotations_mut().insert(ANNOTATION_WARM_POOL.into(), pool.name.clone());
        let created = match self.writer().create_record(&record).await.map_err(failed)? {
            Created::New(created) => CachedRecord::of(&created),
            Created::AlreadyExists => return Err(Served::Conflict),
        };
        match self.adopt(&created, m, &session_key, spec).await {
            Ok(runtime) => {
                tracing::info!(runtime_id = %m.runtime_id, session_id = %spec.session_id, pool = %pool.name, "runtime created from a warm pool member");
                Ok(runtime)
            }
            Err(why) => {
                self.roll_back(&created, &crate::runtime::BackendError::internal(why.clone()))
                    .await;
                Err(Served::Failed(why))
            }
        }
    }

    /// Makes the member's objects the runtime's: the Secret gets the session's variables and
    /// loses the init key, the pod and claim get the record as owner (the pod only if it is
    /// still the one initialised), then the Service and routing a cold start has.
    async fn adopt(
        &self,
        created: &CachedRecord,
        m: &Member,
        session_key: &str,
        spec: &RuntimeSpec,
    ) -> Result<Runtime, String> {
        let s = &self.inner.settings;
        let text = |e: crate::runtime::BackendError| e.chain().to_string();
        let owner = created.owner_reference().ok_or("the record has no uid")?;
        let session_hash = created
            .info
            .as_ref()
            .map(|i| i.session_hash.clone())
            .ok_or("malformed runtime record")?;
        let id = Identity { runtime_id: &m.runtime_id, session_hash: &session_hash, owner };
        let session_secret = manifests::secret(s, &id, session_key, &spec.environment);
        let mut data = json!(session_secret.data);
        data[INIT_KEY] = json!(null);
        let mut labels = json!(session_secret.metadata.labels);
        labels[LABEL_POOL] = json!(null);
        labels[LABEL_POOL_SHAPE] = json!(null);
        let adopted = json!({
            "metadata": {
                "labels": labels,
                "ownerReferences": [&id.owner],
            },
            "data": data,
        });
        let secret_name = object_name(&m.runtime_id);
        let owned = json!({"metadata": {"uid": m.uid, "ownerReferences": [&id.owner]}});
        // Independent writes, at once: they are most of a warm start's time.
        let (secret, pod, claim, routing) = tokio::join!(
            self.writer().patch_if::<Secret>("secret", &secret_name, adopted),
            self.writer().patch_if::<Pod>("sandbox pod", &m.pod, owned),
            async {
                if s.workspace_storage_size.is_none() {
                    return Ok(None);
                }
                let owned = json!({"metadata": {"ownerReferences": [&id.owner]}});
                let name = claim_name(&m.runtime_id);
                self.writer()
                    .patch_if::<PersistentVolumeClaim>("workspace claim", &name, owned)
                    .await
            },
            self.ensure_routing(&id),
        );
        let written = secret.map_err(text)?.ok_or("the member's Secret is gone")?;
        pod.map_err(text)?.ok_or("the member's pod was deleted while it was claimed")?;
        claim.map_err(text)?;
        routing.map_err(text)?;
        self.writer().event(
            created,
            false,
            "Started",
            format!(
                "runtime {} created from a warm pool member for image {}",
                m.runtime_id, spec.image
            ),
        );
        let store = &self.inner.store;
        store::wait_until(CACHE_CATCH_UP, || {
            let cached = store.secret(&secret_name).and_then(|s| s.meta.version());
            store::caught_up(cached, store::version_of(&written))
        })
        .await;
        self.await_cached(created).await;
        self.view(created).ok_or_else(|| "malformed runtime record".to_string())
    }
}

/// Why serving a claimed member stopped.
enum Served {
    /// The session's record exists already.
    Conflict,
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::kubernetes::record::pod_name;

    fn pools() -> Pools {
        Pools::new(3, "ghcr.io/a/b:1", &[])
    }

    fn m(n: usize, pool: &PoolSpec, ready: bool) -> Member {
        Member {
            pod: format!("oh-rt-{n}-1"),
            runtime_id: n.to_string(),
            pool: pool.name.clone(),
            shape: shape_hash(&pool.shape),
            claimed: false,
            claimed_at: None,
            ready,
            failed: false,
            deleting: false,
            address: None,
            created: Some(jiff::Timestamp::now()),
            resource_version: "1".into(),
            uid: n.to_string(),
        }
    }

    #[test]
    fn a_pool_is_filled_to_its_size_counting_booting_members() {
        let pools = pools();
        let p = &pools.0[0];
        let now = jiff::Timestamp::now();
        assert_eq!(plan_refill(&pools, &[], now).create, vec!["default"; 3]);
        let one = [m(1, p, false)];
        assert_eq!(plan_refill(&pools, &one, now).create.len(), 2);
        let full = [m(1, p, true), m(2, p, false), m(3, p, true)];
        assert_eq!(plan_refill(&pools, &full, now), Refill::default());
        // Claimed and deleting members are not the pool's any more.
        let mut claimed = full.clone();
        claimed[0].claimed = true;
        claimed[1].deleting = true;
        assert_eq!(plan_refill(&pools, &claimed, now).create.len(), 2);
    }

    #[test]
    fn no_more_than_max_booting_members_start_at_once() {
        let pools = Pools::new(20, "ghcr.io/a/b:1", &[]);
        let p = &pools.0[0];
        let now = jiff::Timestamp::now();
        assert_eq!(plan_refill(&pools, &[], now).create.len(), MAX_BOOTING);
        let booting: Vec<Member> = (0..MAX_BOOTING - 1).map(|n| m(n, p, false)).collect();
        assert_eq!(plan_refill(&pools, &booting, now).create.len(), 1);
    }

    #[test]
    fn members_of_no_pool_failed_or_stuck_are_replaced() {
        let pools = pools();
        let p = &pools.0[0];
        let now = jiff::Timestamp::now();
        let mut gone = m(1, p, true);
        gone.pool = "removed".into();
        let mut reshaped = m(2, p, true);
        reshaped.shape = "other".into();
        let mut failed = m(3, p, true);
        failed.failed = true;
        let mut stuck = m(4, p, false);
        stuck.created = Some(now - MEMBER_BOOT_TIMEOUT - Duration::from_secs(1));
        let mut claimed_stuck = stuck.clone();
        claimed_stuck.claimed = true;
        let plan = plan_refill(&pools, &[gone, reshaped, failed, stuck, claimed_stuck], now);
        let deleted: Vec<_> = plan.delete.iter().map(|m| m.runtime_id.as_str()).collect();
        assert_eq!(deleted, ["1", "2", "3", "4"]);
        assert_eq!(plan.create.len(), 3);
    }

    #[test]
    fn member_objects_are_a_dormant_cold_pod_with_the_init_key_in_its_secret() {
        let mut s = crate::backend::kubernetes::settings::tests::settings("service");
        s.pools = pools();
        let p = &s.pools.0[0];
        let (secret, pod, claim) = member_objects(&s, p, "r1", "init-key", "now").unwrap();
        assert!(claim.is_none());
        let labels = pod.labels();
        assert_eq!(labels[LABEL_POOL_STATE], STATE_DORMANT);
        assert_eq!(labels[LABEL_POOL], "default");
        assert_eq!(labels[record::LABEL_RUNTIME_ID], "r1");
        assert_eq!(pod.name_any(), pod_name("r1", 1));
        assert!(
            pod.metadata.owner_references.is_none() && secret.metadata.owner_references.is_none()
        );
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let env: BTreeMap<_, _> = container
            .env
            .iter()
            .flatten()
            .map(|v| (v.name.as_str(), v.value.as_deref().unwrap_or("")))
            .collect();
        assert_eq!(env["OH_DEFERRED_INIT"], "true");
        // The key only in the Secret the pod imports, never in the pod spec.
        assert!(!serde_json::to_string(&pod).unwrap().contains("init-key"));
        assert_eq!(secret.data.as_ref().unwrap()[INIT_KEY].0, b"init-key");
        // Regression: without a session key the dormant agent server bound 127.0.0.1, and the
        // members on the real node never turned Ready (startup probe: connection refused).
        assert_eq!(secret.data.as_ref().unwrap()[DORMANT_SESSION_KEY].0, b"init-key");
        assert!(crate::runtime::env::SESSION_KEY_VARS.contains(&DORMANT_SESSION_KEY));
        assert_eq!(secret.name_any(), object_name("r1"));
        assert_eq!(container.image.as_deref(), Some("ghcr.io/a/b:1"));
    }

    #[test]
    fn the_sweep_spares_dormant_and_freshly_claimed_members_only() {
        let pools = pools();
        let p = &pools.0[0];
        let now = jiff::Timestamp::now();
        let grace = Duration::from_secs(60);
        let pod = |n: usize, state: &str, claimed_ago: Option<u64>| {
            let (_, mut pod, _) = member_objects(
                &crate::backend::kubernetes::settings::tests::settings("service"),
                p,
                &n.to_string(),
                "k",
                "t",
            )
            .unwrap();
            pod.labels_mut().insert(LABEL_POOL_STATE.into(), state.into());
            if let Some(ago) = claimed_ago {
                let at = now - Duration::from_secs(ago);
                pod.annotations_mut().insert(ANNOTATION_CLAIMED_AT.into(), at.to_string());
            }
            std::sync::Arc::new(CachedPod::of(&pod))
        };
        let pods = [
            pod(1, STATE_DORMANT, None),
            pod(2, STATE_CLAIMED, Some(5)),
            pod(3, STATE_CLAIMED, Some(120)),
        ];
        let kept = protected(&pods, grace, now);
        assert_eq!(kept, ["1".to_string(), "2".to_string()].into_iter().collect());
    }
}
