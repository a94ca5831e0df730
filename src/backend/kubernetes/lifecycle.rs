//! The `Backend` operations of the Kubernetes backend: how a runtime is seen (from the cache) and
//! how start, pause, resume and stop change it (through [`Writer`]). Every write waits for the
//! cache to show it before answering, so a client reads its own writes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use serde_json::json;

use super::cached::CachedRecord;
use super::manifests::{self, Identity};
use super::record::{
    self, ANNOTATION_COMPLETED_AT, ANNOTATION_GENERATION, ANNOTATION_GENERATION_AT,
    ANNOTATION_PAUSE_REASON, ANNOTATION_PAUSED, ANNOTATION_PAUSED_AT, RecordInfo, claim_name,
    object_name, pod_name,
};
use super::status;
use super::store;
use super::writes::{Created, Writer};
use super::{KubeSettings, KubernetesBackend};
use crate::registry::{self, Credentials, docker_config_credentials};
use crate::runtime::plan::{Known, ResumePlan, StartPlan, plan_resume, plan_start};
use crate::runtime::spec::EnvLimits;
use crate::runtime::{
    AgentEndpoint, Backend, BackendError, BackendResult, Candidate, ImageCheck, ListFilter,
    ListPage, PodStatus, Readiness, RouteTarget, Runtime, RuntimeSpec, Status, SweepReport, ids,
};

/// How long a write waits for the cache to show it before answering anyway.
pub(super) const CACHE_CATCH_UP: Duration = Duration::from_secs(10);

/// A record this service cannot read: written by something else, or by an incompatible version.
fn malformed() -> BackendError {
    BackendError::internal("malformed runtime record")
}

/// What a record says, or the error of a record this service cannot read.
fn info_of(record: &CachedRecord) -> BackendResult<&RecordInfo> {
    record.info.as_ref().ok_or_else(malformed)
}

/// What the children of a record need: its contents and the owner reference pointing at it.
fn owned_by(record: &CachedRecord) -> BackendResult<(&RecordInfo, OwnerReference)> {
    let owner = record
        .owner_reference()
        .ok_or_else(|| BackendError::internal("the runtime record has no uid"))?;
    Ok((info_of(record)?, owner))
}

/// A cached record as lifecycle decisions see it.
struct Current {
    record: Arc<CachedRecord>,
    info: RecordInfo,
    known: Known,
    view: Runtime,
}

impl KubernetesBackend {
    /// What the cache says of a record: its contents, what the plans need, what clients see.
    fn current(&self, record: Arc<CachedRecord>) -> BackendResult<Current> {
        let info = info_of(&record)?.clone();
        let view = self.view(&record).ok_or_else(malformed)?;
        let known = Known {
            being_removed: record.meta.deleting,
            has_credentials: self.inner.store.secret(&object_name(&info.runtime_id)).is_some(),
            paused: info.paused,
            status: view.status,
            pod_status: view.pod_status,
        };
        Ok(Current { record, info, known, view })
    }

    pub(super) fn writer(&self) -> &Writer {
        &self.inner.writer
    }

    /// Registry credentials from the configured image pull secrets (read when asked: rare).
    async fn pull_credentials(&self) -> BackendResult<HashMap<String, Credentials>> {
        let mut all = HashMap::new();
        for name in &self.inner.settings.image_pull_secrets {
            let Some(secret) = self.writer().foreign_secret(name).await? else { continue };
            if let Some(config) = secret.data.as_ref().and_then(|d| d.get(".dockerconfigjson")) {
                all.extend(docker_config_credentials(&config.0));
            }
        }
        Ok(all)
    }

    /// The runtime object as clients see it, from a record and the cache.
    pub(super) fn view(&self, record: &CachedRecord) -> Option<Runtime> {
        let info = record.info.as_ref()?;
        let s = &self.inner.settings;
        let secret = self.inner.store.secret(&object_name(&info.runtime_id));
        let session_api_key = secret.and_then(|s| s.session_key.clone()).unwrap_or_default();
        let pod = self.inner.store.pod(&pod_name(&info.runtime_id, info.generation));
        let mut observed = status::observe(info.paused, pod.as_ref().map(|p| &p.observed));
        if info.paused {
            observed.detail = info.pause_reason.clone();
        }
        if record.meta.deleting {
            observed.status = Status::Stopped;
            observed.pod_status = PodStatus::NotFound;
            observed.detail = Some("the runtime is being stopped".into());
        }
        let urls = manifests::urls(s, &info.runtime_id);
        Some(Runtime {
            runtime_id: info.runtime_id.clone(),
            session_id: info.session_id.clone(),
            url: urls.url,
            session_api_key,
            status: observed.status,
            pod_status: observed.pod_status,
            work_hosts: urls.work_hosts,
            vscode_url: Some(urls.vscode_url),
            restart_count: observed.restart_count,
            restart_reasons: observed.restart_reasons,
            status_detail: observed.detail,
            created_at: info.created_at.clone(),
            image: info.spec.image.clone(),
            resource_factor: info.spec.resource_factor,
        })
    }

    /// Reads the kept views after rebuilding those whose objects changed (see [`super::views`]).
    fn read_views<T>(&self, read: impl FnOnce(&super::views::State) -> T) -> T {
        let store = &self.inner.store;
        let build = |id: &str| store.record_for_runtime(id).and_then(|r| self.view(&r));
        store.views().read(build, || store.runtime_ids(), read)
    }

    /// The IP of the record's current pod, once it has one.
    fn pod_address(&self, info: &RecordInfo) -> Option<std::net::IpAddr> {
        self.inner.store.pod(&pod_name(&info.runtime_id, info.generation))?.address
    }

    /// The cached record of a runtime that is not being stopped.
    fn live_record(&self, runtime_id: &str) -> BackendResult<Arc<CachedRecord>> {
        self.inner
            .store
            .record_for_runtime(runtime_id)
            .filter(|r| !r.meta.deleting)
            .ok_or_else(|| BackendError::runtime_not_found(runtime_id))
    }

    /// Creates every object of a runtime that its record implies; existing ones are left alone.
    pub(super) async fn ensure_objects(
        &self,
        record: &CachedRecord,
        has_secret: bool,
        create_secret: Option<(&str, &BTreeMap<String, String>)>,
    ) -> BackendResult<()> {
        let (info, owner) = owned_by(record)?;
        let s = &self.inner.settings;
        let id = Identity { runtime_id: &info.runtime_id, session_hash: &info.session_hash, owner };
        if let Some((key, env)) = create_secret {
            self.writer().create("secret", &manifests::secret(s, &id, key, env)).await?;
        } else if !has_secret {
            return Err(BackendError::internal("the runtime's secret is missing"));
        }
        if let Some(claim) = manifests::workspace_claim(s, &id) {
            self.writer().create::<PersistentVolumeClaim>("workspace claim", &claim).await?;
        }
        self.ensure_routing(&id).await?;
        if !info.paused {
            self.create_pod(info, id).await?;
        }
        Ok(())
    }

    /// The runtime's Service and, in the ingress modes, its Ingress.
    pub(super) async fn ensure_routing(&self, id: &Identity<'_>) -> BackendResult<()> {
        let s = &self.inner.settings;
        self.writer().create::<Service>("service", &manifests::service(s, id)).await?;
        if let Some(ingress) = manifests::ingress(s, id) {
            self.writer().create::<Ingress>("ingress", &ingress).await?;
        }
        Ok(())
    }

    /// The sandboxes' shared NetworkPolicy, created once per replica before its first sandbox
    /// pod (AlreadyExists is fine); afterwards the leader's sweep keeps it.
    pub(super) async fn ensure_network_policy(&self) -> BackendResult<()> {
        if self.inner.policy_in_place.load(Ordering::Relaxed) {
            return Ok(());
        }
        let policy = manifests::sandbox_network_policy(&self.inner.settings);
        self.writer().create::<NetworkPolicy>("network policy", &policy).await?;
        self.inner.policy_in_place.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The sandbox pod of the record's current generation.
    async fn create_pod(&self, info: &RecordInfo, id: Identity<'_>) -> BackendResult<()> {
        let s = &self.inner.settings;
        let class = manifests::runtime_class(s, &info.spec)?;
        let created_at = jiff::Timestamp::now().to_string();
        let pod = manifests::pod(s, &id, &info.spec, class, info.generation, &created_at);
        self.ensure_network_policy().await?;
        self.writer().create::<Pod>("sandbox pod", &pod).await
    }

    /// Waits until the cache holds `record` at least as new as written, and its Secret.
    pub(super) async fn await_cached(&self, written: &CachedRecord) {
        let name = &written.meta.name;
        let secret_name = written.meta.runtime_id.as_deref().map(object_name);
        let store = &self.inner.store;
        let caught_up = store::wait_until(CACHE_CATCH_UP, || {
            store::caught_up(
                store.record(name).and_then(|r| r.meta.version()),
                written.meta.version(),
            ) && secret_name.as_ref().is_none_or(|s| store.secret(s).is_some())
        })
        .await;
        if !caught_up {
            tracing::warn!(record = %name, "the cache did not catch up with a write in time");
        }
    }

    /// A new runtime: from a warm pool member when a pool serves the request's shape and has
    /// one ready, else a cold start.
    async fn create_fresh(&self, spec: RuntimeSpec, session_hash: &str) -> BackendResult<Runtime> {
        let pools = &self.inner.settings.pools;
        if let Some(pool) = pools.for_shape(&crate::pool::Shape::of(&spec)) {
            if let Some(result) = self.start_warm(pool, &spec, session_hash).await {
                return result;
            }
        }
        let started = std::time::Instant::now();
        let result = self.create_runtime(spec, session_hash).await;
        if result.is_ok() {
            self.inner.metrics.pool.started(false, started.elapsed().as_secs_f64());
        }
        result
    }

    async fn create_runtime(
        &self,
        spec: RuntimeSpec,
        session_hash: &str,
    ) -> BackendResult<Runtime> {
        let s = &self.inner.settings;
        let runtime_id = ids::new_runtime_id();
        let session_key = ids::new_session_key();
        let created_at = jiff::Timestamp::now().to_string();
        let record = record::record(&s.namespace, &runtime_id, session_hash, &spec, &created_at);
        let created = match self.writer().create_record(&record).await? {
            Created::New(created) => CachedRecord::of(&created),
            Created::AlreadyExists => return self.existing_after_conflict(&record, &spec).await,
        };
        tracing::info!(runtime_id = %runtime_id, session_id = %spec.session_id, "runtime record created");
        let ensured = self.ensure_objects(&created, false, Some((&session_key, &spec.environment)));
        if let Err(e) = ensured.await {
            self.roll_back(&created, &e).await;
            return Err(e);
        }
        self.writer().event(
            &created,
            false,
            "Started",
            format!("runtime {runtime_id} created for image {}", spec.image),
        );
        self.await_cached(&created).await;
        self.view(&created).ok_or_else(malformed)
    }

    /// Removes a runtime whose creation failed, so the failed `/start` leaves nothing behind and
    /// nothing in `/list`. Best effort: what cannot be deleted now (the API server is down) is
    /// the orphan sweep's, since a record without its Secret is removed there.
    pub(super) async fn roll_back(&self, record: &CachedRecord, cause: &BackendError) {
        let Some(runtime_id) = record.meta.runtime_id.as_deref() else { return };
        tracing::warn!(runtime_id, error = %cause.chain(), "start failed; removing what it created");
        if let Err(e) = self.delete_runtime(record, runtime_id).await {
            tracing::warn!(runtime_id, error = %e.chain(), "could not remove a failed start; the orphan sweep will");
        }
    }

    /// Deletes the record and then every object it owns, explicitly (garbage collection would
    /// get there too, but later and not when it is off), and waits for the cache to drop it.
    async fn delete_runtime(&self, record: &CachedRecord, runtime_id: &str) -> BackendResult<()> {
        self.writer().delete::<ConfigMap>("runtime record", &record.meta.name).await?;
        self.delete_owned(record, runtime_id).await
    }

    /// Removes a runtime whose Secret the sweep found missing, unless its record changed since
    /// that snapshot: a start completing it touches the record before it creates the Secret, so
    /// the sweep never removes a runtime a client was just given. `false` when it was spared.
    pub(super) async fn remove_lost(&self, record: &CachedRecord) -> BackendResult<bool> {
        let (Some(runtime_id), version) =
            (record.meta.runtime_id.as_deref(), &record.meta.resource_version)
        else {
            return Ok(false);
        };
        if version.is_empty() {
            return Ok(false);
        }
        // The cache's Secrets may be a moment behind its records: ask the API server.
        if self.writer().get_secret(&object_name(runtime_id)).await?.is_some() {
            return Ok(false);
        }
        if !self.writer().delete_record_at(&record.meta.name, version).await? {
            return Ok(false);
        }
        self.delete_owned(record, runtime_id).await?;
        Ok(true)
    }

    /// Everything a runtime owns, once its record is gone (from now on its session starts
    /// afresh); then waits until the cache no longer shows the record.
    async fn delete_owned(&self, record: &CachedRecord, runtime_id: &str) -> BackendResult<()> {
        let name = &record.meta.name;
        let object = object_name(runtime_id);
        self.writer().delete_pods(runtime_id).await?;
        self.writer().delete::<Ingress>("ingress", &object).await?;
        self.writer().delete::<Service>("service", &object).await?;
        self.writer().delete::<Secret>("secret", &object).await?;
        if self.inner.settings.workspace_storage_size.is_some() {
            self.writer()
                .delete::<PersistentVolumeClaim>("workspace claim", &claim_name(runtime_id))
                .await?;
        }
        let uid = &record.meta.uid;
        store::wait_until(CACHE_CATCH_UP, || {
            self.inner.store.record(name).is_none_or(|r| &r.meta.uid != uid)
        })
        .await;
        Ok(())
    }

    /// Another replica (or request) created this session's record first. Its creator may die
    /// before storing the session key (and the sweep removes a record without one), so finish
    /// the creation now rather than wait for it: what exists already is left alone, and whoever
    /// stored the key first wins.
    async fn existing_after_conflict(
        &self,
        record: &ConfigMap,
        spec: &RuntimeSpec,
    ) -> BackendResult<Runtime> {
        let existing = CachedRecord::of(&self.writer().get_record(&record.name_any()).await?);
        if existing.meta.deleting {
            self.await_cached(&existing).await;
            return self.view(&existing).ok_or_else(malformed);
        }
        self.complete_creation(&existing, spec).await
    }

    /// Stores a new session key for a record whose creation was interrupted (or is under way
    /// elsewhere) and creates what is missing; whoever stores the key first wins, and every
    /// caller answers with the stored key. A failure removes the runtime, as a failed start does.
    async fn complete_creation(
        &self,
        record: &CachedRecord,
        spec: &RuntimeSpec,
    ) -> BackendResult<Runtime> {
        let runtime_id = record.meta.runtime_id.as_deref().unwrap_or_default();
        tracing::info!(runtime_id, "completing a runtime another start created");
        // Touched first: the sweep removes a record without a Secret only while the record is
        // as it saw it (see `remove_lost`); if the sweep removed it already, start afresh.
        let touch = json!({"metadata": {"annotations": {
            ANNOTATION_COMPLETED_AT: jiff::Timestamp::now().to_string(),
        }}});
        let touched =
            self.writer().patch_if::<ConfigMap>("runtime record", &record.meta.name, touch);
        let Some(record) = &touched.await?.map(|r| CachedRecord::of(&r)) else {
            let session_hash = ids::session_hash(&spec.session_id);
            // Boxed: a fresh start may meet a conflict and complete again.
            return Box::pin(self.create_fresh(spec.clone(), &session_hash)).await;
        };
        let key = ids::new_session_key();
        let ensured = self.ensure_objects(record, false, Some((&key, &spec.environment)));
        if let Err(e) = ensured.await {
            self.roll_back(record, &e).await;
            return Err(e);
        }
        self.await_cached(record).await;
        self.view(record).ok_or_else(malformed)
    }
}

#[async_trait]
impl Backend for KubernetesBackend {
    async fn start(&self, spec: RuntimeSpec) -> BackendResult<Runtime> {
        manifests::runtime_class(&self.inner.settings, &spec)?;
        let session_hash = ids::session_hash(&spec.session_id);
        let _serialised = self.inner.session_locks.lock(&session_hash).await;
        let existing = self.inner.store.record_for_session(&session_hash).map(|r| self.current(r));
        let existing = existing.transpose()?;
        match (plan_start(existing.as_ref().map(|c| &c.known)), existing) {
            (StartPlan::Create, _) | (_, None) => self.create_fresh(spec, &session_hash).await,
            (StartPlan::AwaitRemovalThenCreate, Some(c)) => {
                let name = &c.record.meta.name;
                store::wait_until(CACHE_CATCH_UP, || self.inner.store.record(name).is_none()).await;
                self.create_fresh(spec, &session_hash).await
            }
            (StartPlan::CompleteCreation, Some(c)) => {
                self.complete_creation(&c.record, &spec).await
            }
            (StartPlan::Resume, Some(c)) => self.resume(&c.info.runtime_id).await,
            (StartPlan::CompleteObjects, Some(c)) => {
                let has_secret =
                    self.inner.store.secret(&object_name(&c.info.runtime_id)).is_some();
                self.ensure_objects(&c.record, has_secret, None).await?;
                Ok(c.view)
            }
            (StartPlan::Return, Some(c)) => Ok(c.view),
        }
    }

    async fn get(&self, runtime_id: &str) -> BackendResult<Option<Runtime>> {
        Ok(self.inner.store.record_for_runtime(runtime_id).and_then(|r| self.view(&r)))
    }

    async fn get_by_session(&self, session_id: &str) -> BackendResult<Option<Runtime>> {
        let record = self.inner.store.record_for_session(&ids::session_hash(session_id));
        Ok(record.and_then(|r| self.view(&r)))
    }

    async fn list(&self, filter: &ListFilter) -> BackendResult<Vec<Runtime>> {
        Ok(self
            .inner
            .store
            .records()
            .iter()
            .filter_map(|r| self.view(r))
            .filter(|r| filter.matches(r.status))
            .collect())
    }

    /// From the kept views: only runtimes whose objects changed since the last read are rebuilt.
    async fn list_page(
        &self,
        filter: &ListFilter,
        offset: usize,
        limit: Option<usize>,
    ) -> BackendResult<ListPage> {
        Ok(self.read_views(|views| views.page(filter, offset, limit)))
    }

    /// From the kept views, as `/list`: the records' index says which runtime each session has.
    async fn sessions_page(&self, session_ids: &[String]) -> BackendResult<Vec<Arc<str>>> {
        let store = &self.inner.store;
        let runtime_ids: Vec<String> = session_ids
            .iter()
            .filter_map(|s| store.record_for_session(&ids::session_hash(s)))
            .filter_map(|r| r.meta.runtime_id.clone())
            .collect();
        Ok(self.read_views(|views| runtime_ids.iter().filter_map(|id| views.json_of(id)).collect()))
    }

    async fn status_counts(&self) -> BackendResult<Vec<(Status, usize)>> {
        Ok(self.read_views(|views| Status::ALL.map(|s| (s, views.count_of(s))).to_vec()))
    }

    async fn pause(&self, runtime_id: &str, reason: Option<&str>) -> BackendResult<Runtime> {
        let record = self.live_record(runtime_id)?;
        let info = info_of(&record)?;
        let patched = if info.paused {
            (*record).clone()
        } else {
            let patched = self
                .writer()
                .patch_record(
                    &record.meta.name,
                    json!({
                        ANNOTATION_PAUSED: "true",
                        ANNOTATION_PAUSED_AT: jiff::Timestamp::now().to_string(),
                        ANNOTATION_PAUSE_REASON: reason,
                    }),
                )
                .await?;
            let patched = CachedRecord::of(&patched);
            self.writer().event(
                &patched,
                false,
                "Paused",
                reason.unwrap_or("paused by a client").to_string(),
            );
            patched
        };
        self.writer().delete_pods(runtime_id).await?;
        self.await_cached(&patched).await;
        tracing::info!(runtime_id, session_id = %info.session_id, "runtime paused");
        self.view(&patched).ok_or_else(|| BackendError::runtime_not_found(runtime_id))
    }

    /// Exactly one writer resumes a paused runtime, whichever replica (or gateway request) asks:
    /// the record's new generation is written only if the record is unchanged since it was read;
    /// whoever loses finds the runtime resumed by the winner and returns it.
    async fn resume(&self, runtime_id: &str) -> BackendResult<Runtime> {
        let mut first_generation = None;
        let mut attempts = 0;
        let (patched, info) = loop {
            let Current { record, info, known, view } =
                self.current(self.live_record(runtime_id)?)?;
            let resumed_by_another = first_generation.is_some_and(|g| info.generation > g);
            if resumed_by_another && !info.paused {
                return Ok(view);
            }
            match plan_resume(&known) {
                ResumePlan::AlreadyRunning => return Ok(view),
                ResumePlan::CredentialsLost => {
                    return Err(BackendError::internal(format!(
                        "runtime {runtime_id} has lost its secret; stop it and start a new one"
                    )));
                }
                // Not paused and no pod: a resume decided this generation moments ago (here or on
                // another replica) and its pod is not created or not cached yet. Relaunching
                // then made two resumes out of one; a pod still missing after the orphan grace
                // is lost, and this relaunches it (as the sweep's repair would).
                ResumePlan::Relaunch
                    if !info.paused
                        && decided_recently(&info, self.inner.settings.orphan_grace) =>
                {
                    return Ok(view);
                }
                ResumePlan::Relaunch => {}
            }
            first_generation.get_or_insert(info.generation);
            let version = &record.meta.resource_version;
            let annotations = json!({
                ANNOTATION_PAUSED: "false",
                ANNOTATION_GENERATION: (info.generation + 1).to_string(),
                ANNOTATION_GENERATION_AT: jiff::Timestamp::now().to_string(),
                ANNOTATION_PAUSED_AT: null,
                ANNOTATION_PAUSE_REASON: null,
            });
            let name = &record.meta.name;
            match self.writer().patch_record_at(name, version, annotations).await? {
                Some(patched) => break (CachedRecord::of(&patched), info),
                None if attempts < 5 => {
                    attempts += 1;
                    // Someone changed the record since the cache saw it: catch up and decide again.
                    let fresh = self.writer().get_record(name).await?;
                    self.await_cached(&CachedRecord::of(&fresh)).await;
                }
                None => {
                    return Err(BackendError::conflict(format!(
                        "runtime {runtime_id} keeps changing; try again"
                    )));
                }
            }
        };
        let generation = info.generation + 1;
        let secret_name = object_name(runtime_id);
        let rotated = if self.inner.settings.rotate_key_on_resume {
            let key = ids::new_session_key();
            let encoded: BTreeMap<&str, String> = crate::runtime::env::SESSION_KEY_VARS
                .iter()
                .map(|k| {
                    (*k, base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &key))
                })
                .collect();
            Some(self.writer().patch_secret_data(&secret_name, json!(encoded)).await?)
        } else {
            None
        };
        // A new pod generation: the old pod may still be terminating under its own name.
        self.writer().delete_pods(runtime_id).await?;
        self.writer().event(
            &patched,
            false,
            "Resumed",
            format!("sandbox pod generation {generation}"),
        );
        // Only the pod was gone; anything else missing is the orphan sweep's to repair.
        let (patched_info, owner) = owned_by(&patched)?;
        let id = Identity {
            runtime_id: &patched_info.runtime_id,
            session_hash: &patched_info.session_hash,
            owner,
        };
        self.create_pod(patched_info, id).await?;
        if let Some(written) = rotated {
            store::wait_until(CACHE_CATCH_UP, || {
                let cached = self.inner.store.secret(&secret_name);
                store::caught_up(cached.and_then(|s| s.meta.version()), store::version_of(&written))
            })
            .await;
        }
        self.await_cached(&patched).await;
        tracing::info!(runtime_id, session_id = %info.session_id, generation, "runtime resumed");
        self.view(&patched).ok_or_else(|| BackendError::runtime_not_found(runtime_id))
    }

    async fn stop(&self, runtime_id: &str) -> BackendResult<Runtime> {
        let record = self
            .inner
            .store
            .record_for_runtime(runtime_id)
            .ok_or_else(|| BackendError::runtime_not_found(runtime_id))?;
        let last = self.view(&record).ok_or_else(|| BackendError::runtime_not_found(runtime_id))?;
        // The record first: from now on this session starts afresh; then everything it owned.
        self.delete_runtime(&record, runtime_id).await?;
        self.writer().event(&record, false, "Stopped", format!("runtime {runtime_id} stopped"));
        tracing::info!(runtime_id, session_id = %last.session_id, "runtime stopped");
        Ok(last.stopped())
    }

    async fn image_exists(&self, image: &str) -> BackendResult<ImageCheck> {
        let credentials = self.pull_credentials().await?;
        let host = registry::parse_image(image).map(|i| i.registry).unwrap_or_default();
        Ok(self.inner.registry.check(image, credentials.get(&host)).await)
    }

    fn readiness(&self) -> Readiness {
        self.inner.store.readiness()
    }

    fn reads_complete(&self) -> Readiness {
        self.inner.store.synced()
    }

    /// The caller's environment lives in the runtime's Secret (at most 1 MiB, base64 on the
    /// wire) and reaches the container through execve.
    fn environment_limits(&self) -> EnvLimits {
        EnvLimits { total_bytes: 512 * 1024, ..EnvLimits::EXEC }
    }

    fn cache_sizes(&self) -> Vec<(&'static str, usize)> {
        self.inner.store.sizes().to_vec()
    }

    /// Through the runtime's Service, inside the cluster (sandbox URLs may not be reachable
    /// from here, and need not be).
    async fn agent_endpoint(&self, runtime_id: &str) -> BackendResult<Option<AgentEndpoint>> {
        let running = self.get(runtime_id).await?.filter(|r| r.status == Status::Running);
        Ok(running.map(|r| AgentEndpoint {
            url: agent_url(&self.inner.settings, &r.runtime_id),
            runtime_id: r.runtime_id,
            session_id: r.session_id,
            session_api_key: r.session_api_key,
        }))
    }

    async fn candidates(&self) -> BackendResult<Vec<Candidate>> {
        let s = &self.inner.settings;
        let now = jiff::Timestamp::now();
        Ok(self
            .inner
            .store
            .records()
            .iter()
            .filter(|r| !r.meta.deleting)
            .filter_map(|r| {
                let info = r.info.as_ref()?;
                // The pod's address, as the gateway reaches it; else the runtime's Service (DNS
                // inside the cluster).
                let agent_url = match self.pod_address(info) {
                    Some(ip) => format!("http://{}", std::net::SocketAddr::new(ip, s.ports.agent)),
                    None => agent_url(s, &info.runtime_id),
                };
                let paused_for = info.paused_at.map(|t| now.duration_since(t).unsigned_abs());
                let mut candidate = Candidate::from_view(self.view(r)?, paused_for, agent_url);
                candidate.last_activity = r.last_activity;
                Some(candidate)
            })
            .collect())
    }

    fn route(&self, runtime_id: &str) -> Option<RouteTarget> {
        let record = self.inner.store.record_for_runtime(runtime_id)?;
        let view = self.view(&record)?;
        Some(RouteTarget {
            status: view.status,
            status_detail: view.status_detail,
            address: self.pod_address(record.info.as_ref()?),
            ports: self.inner.settings.ports,
        })
    }

    async fn record_activity(&self, runtime_id: &str, at: jiff::Timestamp) -> BackendResult<()> {
        let record = self.live_record(runtime_id)?;
        let annotations = json!({ record::ANNOTATION_LAST_ACTIVITY: at.to_string() });
        self.writer().patch_record(&record.meta.name, annotations).await.map(|_| ())
    }

    /// See [`KubernetesBackend::sweep_once`].
    async fn sweep(&self) -> BackendResult<SweepReport> {
        self.sweep_once().await
    }

    /// See [`KubernetesBackend::keep_pools`].
    async fn keep_pools(&self) -> BackendResult<()> {
        KubernetesBackend::keep_pools(self).await
    }
}

/// Whether the record's current pod generation was decided less than `grace` ago.
fn decided_recently(info: &RecordInfo, grace: Duration) -> bool {
    info.generation_at
        .is_some_and(|t| jiff::Timestamp::now().duration_since(t).unsigned_abs() < grace)
}

/// The agent server of a runtime, through its Service, inside the cluster.
fn agent_url(s: &KubeSettings, runtime_id: &str) -> String {
    format!("http://{}.{}.svc:{}", object_name(runtime_id), s.namespace, s.ports.agent)
}
