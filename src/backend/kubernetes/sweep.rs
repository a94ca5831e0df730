//! The orphan sweep: objects labelled with a runtime id that no record has are deleted, and so are
//! pods their record no longer wants (a pause or a resume interrupted between its record update
//! and its pod deletion leaves a paused runtime's pod, or an earlier generation's, running);
//! records whose Secret is gone are removed (the session key cannot be recovered), and records
//! missing other objects are completed. What to do is a pure function of one snapshot ([`plan`]): sets of
//! names, so a round is O(N) in the number of objects.
//!
//! The sweep also keeps the sandboxes' shared NetworkPolicy ([`manifests::sandbox_network_policy`]),
//! and only once it is in place deletes the per-sandbox policies earlier versions created, so
//! the migration leaves no sandbox unprotected.
//!
//! An idle namespace costs no requests: a round lists the kinds the cache does not hold only
//! when the cache saw a change recently enough that its objects may have become sweepable
//! (within the orphan grace before the last sweep, or since), and otherwise at least every
//! [`FULL_SWEEP_ROUNDS`] rounds (for what the cache cannot see: a Service deleted by hand).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};

use super::KubernetesBackend;
use super::cached::{CachedRecord, Meta};
use super::manifests::{self, SANDBOX_NETWORK_POLICY};
use super::record::{claim_name, object_name, pod_name};
use crate::runtime::{BackendError, BackendResult, SweepReport};

/// An idle replica still sweeps every this many maintenance intervals.
pub const FULL_SWEEP_ROUNDS: u32 = 10;

/// Whether a round sweeps: never swept yet, the cache changed since `grace` (plus a second of
/// timestamp resolution) before the last sweep started, or that sweep is `every` old.
pub fn due(
    last_sweep: Option<Instant>,
    changed_at: Instant,
    grace: Duration,
    every: Duration,
    now: Instant,
) -> bool {
    let Some(last) = last_sweep else { return true };
    let settled = last.checked_sub(grace + Duration::from_secs(1));
    settled.is_none_or(|settled| changed_at >= settled) || now.duration_since(last) >= every
}

/// The kinds of object a runtime owns besides its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Secret,
    Pod,
    Service,
    Ingress,
    NetworkPolicy,
    Claim,
}

impl Kind {
    /// The name used in logs and in the `kind` label of the request metric.
    pub fn what(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::Pod => "sandbox pod",
            Kind::Service => "service",
            Kind::Ingress => "ingress",
            Kind::NetworkPolicy => "network policy",
            Kind::Claim => "workspace claim",
        }
    }
}

/// What the sweep does about one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordAction {
    /// Its Secret is gone: remove the runtime (by runtime id).
    RemoveLostSecret(String),
    /// Some object is missing: recreate (index into the records given to [`plan`]).
    Repair(usize),
}

/// One round's work: orphans (objects no record wants) in the order given, then one action per
/// record that needs one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepPlan {
    pub orphans: Vec<(Kind, String)>,
    pub records: Vec<RecordAction>,
}

/// Whether an object created at `created` is older than `grace` at `now`. Creation timestamps are
/// whole seconds, rounded down: an object stamped 12:00:00 may have been made at 12:00:00.99, so
/// its age counts from the end of that second (else a grace of 1 s could be no grace at all).
pub fn older_than(created: Option<jiff::Timestamp>, grace: Duration, now: jiff::Timestamp) -> bool {
    let Some(created) = created else { return false };
    let latest = created + jiff::SignedDuration::from_secs(1);
    now > latest && now.duration_since(latest).unsigned_abs() > grace
}

/// Decides a sweep round from a snapshot of the records and the objects of every kind. Objects
/// (and records) younger than `grace` may belong to a start in flight and are left alone;
/// `claims_expected` and `ingress_expected` say whether runtimes have those objects.
pub fn plan(
    records: &[&CachedRecord],
    objects: &[(Kind, &Meta)],
    claims_expected: bool,
    ingress_expected: bool,
    grace: Duration,
    now: jiff::Timestamp,
) -> SweepPlan {
    let old_enough = |created: Option<jiff::Timestamp>| older_than(created, grace, now);
    let known: HashSet<&str> =
        records.iter().filter_map(|r| r.meta.runtime_id.as_deref()).collect();
    // The one pod each readable record wants: none while paused, else its generation's.
    let wanted_pods: HashMap<&str, Option<String>> = records
        .iter()
        .filter_map(|r| r.info.as_ref())
        .map(|i| {
            let pod = (!i.paused).then(|| pod_name(&i.runtime_id, i.generation));
            (i.runtime_id.as_str(), pod)
        })
        .collect();
    let unwanted = |kind: Kind, meta: &Meta| match meta.runtime_id.as_deref() {
        None => false,
        // A per-sandbox policy of an earlier version: the shared one replaced it.
        Some(_) if kind == Kind::NetworkPolicy => true,
        Some(id) if !known.contains(id) => true,
        Some(id) => {
            kind == Kind::Pod
                && wanted_pods
                    .get(id)
                    .is_some_and(|wanted| wanted.as_deref() != Some(meta.name.as_str()))
        }
    };
    let present: HashSet<(Kind, &str)> =
        objects.iter().map(|(kind, meta)| (*kind, meta.name.as_str())).collect();
    let orphans = objects
        .iter()
        .filter(|(_, meta)| !meta.deleting && old_enough(meta.created))
        .filter(|(kind, meta)| unwanted(*kind, meta))
        .map(|(kind, meta)| (*kind, meta.name.clone()))
        .collect();
    let mut actions = Vec::new();
    for (i, record) in records.iter().enumerate() {
        if record.meta.deleting || !old_enough(record.meta.created) {
            continue;
        }
        let Some(info) = &record.info else { continue };
        let has = |kind: Kind, name: &str| present.contains(&(kind, name));
        let object = object_name(&info.runtime_id);
        if !has(Kind::Secret, &object) {
            actions.push(RecordAction::RemoveLostSecret(info.runtime_id.clone()));
            continue;
        }
        let missing = (!info.paused
            && !has(Kind::Pod, &pod_name(&info.runtime_id, info.generation)))
            || !has(Kind::Service, &object)
            || (ingress_expected && !has(Kind::Ingress, &object))
            || (claims_expected && !has(Kind::Claim, &claim_name(&info.runtime_id)));
        if missing {
            actions.push(RecordAction::Repair(i));
        }
    }
    SweepPlan { orphans, records: actions }
}

impl KubernetesBackend {
    /// One sweep round: a snapshot (the cache for records, Secrets and pods; a list request for
    /// the kinds it does not hold), the [`plan`], then its execution.
    pub(super) async fn sweep_once(&self) -> BackendResult<SweepReport> {
        let s = &self.inner.settings;
        let store = &self.inner.store;
        let writer = self.writer();
        let started = Instant::now();
        let last = *self.inner.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
        let every = s.maintenance_interval * FULL_SWEEP_ROUNDS;
        if !due(last, store.changed_at(), s.orphan_grace, every, started) {
            return Ok(SweepReport::default());
        }
        // Ages count at the round's start, and the cache is read after the lists: an object a
        // list shows old enough was made more than the grace before the cache's snapshot, so what
        // was written with it (a member's pod after its claim, a record before its objects) is in
        // that snapshot unless its writer took longer than the grace.
        let now = jiff::Timestamp::now();
        let mut listed: Vec<(Kind, Meta)> = Vec::new();
        let services = writer.list_managed_meta::<Service>("services").await?;
        listed.extend(services.into_iter().map(|meta| (Kind::Service, meta)));
        let ingresses = writer.list_managed_meta::<Ingress>("ingresses").await?;
        listed.extend(ingresses.into_iter().map(|meta| (Kind::Ingress, meta)));
        // Whole: the shared one's spec is compared with the wanted one's.
        let policies: Vec<NetworkPolicy> = writer.list_managed("network policies").await?;
        // Before any per-sandbox policy is deleted as an orphan below.
        self.keep_network_policy(&policies).await?;
        listed.extend(policies.iter().map(|o| (Kind::NetworkPolicy, Meta::of(&o.metadata))));
        drop(policies);
        let claims_expected = s.workspace_storage_size.is_some();
        if claims_expected {
            let claims = writer.list_managed_meta::<PersistentVolumeClaim>("claims").await?;
            listed.extend(claims.into_iter().map(|meta| (Kind::Claim, meta)));
        }

        let records = store.records();
        let (secrets, pods) = (store.secrets(), store.pods());
        // Pool members are not orphans (unless claimed by a replica that died before its record).
        let members = super::pool::protected(&pods, s.orphan_grace, now);
        let mut objects: Vec<(Kind, &Meta)> = Vec::new();
        objects.extend(secrets.iter().map(|o| (Kind::Secret, &o.meta)));
        objects.extend(pods.iter().map(|o| (Kind::Pod, &o.meta)));
        objects.extend(listed.iter().map(|(kind, meta)| (*kind, meta)));
        let record_refs: Vec<&CachedRecord> = records.iter().map(Arc::as_ref).collect();
        // (A member claimed moments ago whose record exists is that runtime's, swept as such.)
        let recorded: HashSet<&str> =
            records.iter().filter_map(|r| r.meta.runtime_id.as_deref()).collect();
        objects.retain(|(_, meta)| {
            let id = meta.runtime_id.as_deref();
            id.is_none_or(|id| !members.contains(id) || recorded.contains(id))
        });
        let ingress_expected = s.per_sandbox_ingress();
        let plan =
            plan(&record_refs, &objects, claims_expected, ingress_expected, s.orphan_grace, now);

        let mut report = SweepReport::default();
        // Decided on a complete snapshot: what changed before `started` is accounted for.
        *self.inner.last_sweep.lock().unwrap_or_else(|p| p.into_inner()) = Some(started);
        for (kind, name) in &plan.orphans {
            tracing::info!(kind = kind.what(), name = %name, "deleting an orphaned object");
            self.delete_object(*kind, name).await?;
            report.orphans_deleted += 1;
        }
        for action in plan.records {
            match action {
                RecordAction::RemoveLostSecret(runtime_id) => {
                    let record = records
                        .iter()
                        .find(|r| r.meta.runtime_id.as_deref() == Some(runtime_id.as_str()));
                    let Some(record) = record else { continue };
                    if self.remove_lost(record).await? {
                        tracing::warn!(%runtime_id, "removed a runtime whose secret is gone");
                        writer.event(record, true, "Removed", "its Secret is gone".into());
                        report.orphans_deleted += 1;
                    }
                }
                RecordAction::Repair(i) => {
                    let record = &records[i];
                    let runtime_id = record.meta.runtime_id.as_deref();
                    let has_secret =
                        runtime_id.is_some_and(|id| store.secret(&object_name(id)).is_some());
                    tracing::info!(runtime_id, "recreating missing objects of a runtime");
                    self.ensure_objects(record, has_secret, None).await?;
                    writer.event(record, true, "Repaired", "recreated missing objects".into());
                    report.repaired += 1;
                }
            }
        }
        Ok(report)
    }

    /// Creates the shared NetworkPolicy when missing and puts it back in shape when changed.
    async fn keep_network_policy(&self, listed: &[NetworkPolicy]) -> BackendResult<()> {
        let wanted = manifests::sandbox_network_policy(&self.inner.settings);
        let current = listed.iter().find(|p| p.metadata.name == wanted.metadata.name);
        match current {
            None => {
                tracing::info!(
                    name = SANDBOX_NETWORK_POLICY,
                    "creating the sandboxes' network policy"
                );
                self.inner.policy_in_place.store(false, Ordering::Relaxed);
                self.ensure_network_policy().await
            }
            Some(p) if p.metadata.deletion_timestamp.is_some() => Err(BackendError::unavailable(
                "the sandboxes' network policy is being deleted; the next round recreates it",
            )),
            Some(p) if p.spec != wanted.spec || p.metadata.labels != wanted.metadata.labels => {
                tracing::warn!(
                    name = SANDBOX_NETWORK_POLICY,
                    "restoring the sandboxes' network policy"
                );
                let version = p.metadata.resource_version.as_deref().unwrap_or_default();
                self.writer().replace("network policy", &wanted, version).await
            }
            Some(_) => Ok(()),
        }
    }

    async fn delete_object(&self, kind: Kind, name: &str) -> BackendResult<()> {
        let (writer, what) = (self.writer(), kind.what());
        match kind {
            Kind::Secret => writer.delete::<Secret>(what, name).await,
            Kind::Pod => writer.delete::<Pod>(what, name).await,
            Kind::Service => writer.delete::<Service>(what, name).await,
            Kind::Ingress => writer.delete::<Ingress>(what, name).await,
            Kind::NetworkPolicy => writer.delete::<NetworkPolicy>(what, name).await,
            Kind::Claim => writer.delete::<PersistentVolumeClaim>(what, name).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;
    use crate::backend::kubernetes::record::{self, ANNOTATION_PAUSED, LABEL_RUNTIME_ID};
    use crate::runtime::RuntimeSpec;

    const GRACE: Duration = Duration::from_secs(60);

    fn now() -> jiff::Timestamp {
        "2026-01-01T12:00:00Z".parse().unwrap()
    }

    fn aged(meta: &mut ObjectMeta, seconds: i64) {
        meta.creation_timestamp = Some(Time(now() - jiff::SignedDuration::from_secs(seconds)));
    }

    fn record(runtime_id: &str, age: i64, paused: bool) -> ConfigMap {
        let spec = RuntimeSpec::new(format!("session-{runtime_id}"), "img");
        let mut r = record::record("ns", runtime_id, runtime_id, &spec, "t");
        aged(&mut r.metadata, age);
        r.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANNOTATION_PAUSED.into(), paused.to_string());
        r
    }

    fn object(name: String, runtime_id: &str, age: i64) -> ObjectMeta {
        let mut meta = ObjectMeta {
            name: Some(name),
            labels: Some([(LABEL_RUNTIME_ID.to_string(), runtime_id.to_string())].into()),
            ..Default::default()
        };
        aged(&mut meta, age);
        meta
    }

    /// Every object of a complete runtime, pod generation 1 (its NetworkPolicy is shared).
    fn complete(runtime_id: &str, age: i64, claim: bool) -> Vec<(Kind, ObjectMeta)> {
        let o = object_name(runtime_id);
        let mut all = vec![
            (Kind::Secret, object(o.clone(), runtime_id, age)),
            (Kind::Pod, object(pod_name(runtime_id, 1), runtime_id, age)),
            (Kind::Service, object(o.clone(), runtime_id, age)),
            (Kind::Ingress, object(o, runtime_id, age)),
        ];
        if claim {
            all.push((Kind::Claim, object(claim_name(runtime_id), runtime_id, age)));
        }
        all
    }

    fn run(records: &[ConfigMap], objects: &[(Kind, ObjectMeta)], claims: bool) -> SweepPlan {
        let records: Vec<CachedRecord> = records.iter().map(CachedRecord::of).collect();
        let records: Vec<&CachedRecord> = records.iter().collect();
        let metas = summaries(objects);
        let objects: Vec<(Kind, &Meta)> = metas.iter().map(|(k, m)| (*k, m)).collect();
        plan(&records, &objects, claims, true, GRACE, now())
    }

    fn summaries(objects: &[(Kind, ObjectMeta)]) -> Vec<(Kind, Meta)> {
        objects.iter().map(|(k, m)| (*k, Meta::of(m))).collect()
    }

    #[test]
    fn complete_runtimes_need_nothing() {
        let objects = [complete("a", 600, true), complete("b", 600, true)].concat();
        let records = [record("a", 600, false), record("b", 600, false)];
        assert_eq!(run(&records, &objects, true), SweepPlan::default());
    }

    #[test]
    fn old_objects_without_a_record_are_orphans_young_or_deleting_ones_are_not() {
        let mut objects = complete("gone", 600, false);
        objects.extend(complete("young", 10, false));
        let mut deleting = object(object_name("leaving"), "leaving", 600);
        deleting.deletion_timestamp = Some(Time(now()));
        objects.push((Kind::Service, deleting));
        let plan = run(&[], &objects, false);
        let orphans: Vec<(Kind, &str)> =
            plan.orphans.iter().map(|(k, n)| (*k, n.as_str())).collect();
        let gone = object_name("gone");
        let pod = pod_name("gone", 1);
        assert_eq!(
            orphans,
            [
                (Kind::Secret, gone.as_str()),
                (Kind::Pod, pod.as_str()),
                (Kind::Service, gone.as_str()),
                (Kind::Ingress, gone.as_str()),
            ]
        );
        assert!(plan.records.is_empty());
    }

    #[test]
    fn ages_count_from_the_end_of_the_stamped_second() {
        // Stamped 61 s ago with a grace of 60 s: made between 61 and 60 s ago, maybe not older.
        let objects = [complete("edge", 61, true), complete("old", 62, true)].concat();
        let plan = run(&[], &objects, true);
        assert!(plan.orphans.iter().all(|(_, name)| !name.contains("edge")), "{plan:?}");
        assert_eq!(plan.orphans.len(), 5, "{plan:?}");
        let stamped = |s: i64| Some(now() - jiff::SignedDuration::from_secs(s));
        let one = Duration::from_secs(1);
        assert!(!older_than(stamped(1), Duration::ZERO, now()), "maybe made just now");
        assert!(older_than(stamped(2), one - Duration::from_millis(1), now()));
        assert!(!older_than(stamped(-5), one, now()), "a clock behind the API server's");
        assert!(!older_than(None, one, now()));
    }

    #[test]
    fn a_record_without_its_secret_is_removed_and_one_missing_an_object_is_repaired() {
        let mut objects: Vec<(Kind, ObjectMeta)> =
            complete("lost", 600, false).into_iter().filter(|(k, _)| *k != Kind::Secret).collect();
        objects.extend(
            complete("no-ingress", 600, false).into_iter().filter(|(k, _)| *k != Kind::Ingress),
        );
        let records = [record("lost", 600, false), record("no-ingress", 600, false)];
        assert_eq!(
            run(&records, &objects, false).records,
            [RecordAction::RemoveLostSecret("lost".into()), RecordAction::Repair(1)]
        );
    }

    #[test]
    fn gateway_mode_expects_no_ingress() {
        let objects: Vec<(Kind, ObjectMeta)> =
            complete("g", 600, false).into_iter().filter(|(k, _)| *k != Kind::Ingress).collect();
        let records = [record("g", 600, false)];
        let records: Vec<CachedRecord> = records.iter().map(CachedRecord::of).collect();
        let refs: Vec<&CachedRecord> = records.iter().collect();
        let metas = summaries(&objects);
        let metas: Vec<(Kind, &Meta)> = metas.iter().map(|(k, m)| (*k, m)).collect();
        assert!(plan(&refs, &metas, false, false, GRACE, now()).records.is_empty());
        assert_eq!(
            run(&[record("g", 600, false)], &objects, false).records,
            [RecordAction::Repair(0)]
        );
    }

    #[test]
    fn paused_runtimes_need_no_pod_and_claims_count_only_when_configured() {
        let objects: Vec<(Kind, ObjectMeta)> =
            complete("p", 600, false).into_iter().filter(|(k, _)| *k != Kind::Pod).collect();
        assert!(run(&[record("p", 600, true)], &objects, false).records.is_empty());
        assert_eq!(
            run(&[record("p", 600, false)], &objects, false).records,
            [RecordAction::Repair(0)]
        );
        assert_eq!(
            run(&[record("p", 600, true)], &objects, true).records,
            [RecordAction::Repair(0)]
        );
    }

    #[test]
    fn pods_of_a_paused_runtime_or_an_earlier_generation_are_orphans_when_old_enough() {
        // Paused, but its pod was never deleted (the service died between the two writes).
        let mut objects = complete("paused", 600, false);
        // Resumed to generation 2 while generation 1's pod survived (a pause and a resume racing),
        // and generation 3's pod, young: a resume may be creating it.
        objects.extend(complete("resumed", 600, false));
        objects.push((Kind::Pod, object(pod_name("resumed", 2), "resumed", 600)));
        objects.push((Kind::Pod, object(pod_name("resumed", 3), "resumed", 10)));
        let mut resumed = record("resumed", 600, false);
        resumed
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(record::ANNOTATION_GENERATION.into(), "2".into());
        let plan = run(&[record("paused", 600, true), resumed], &objects, false);
        assert_eq!(
            plan.orphans,
            [(Kind::Pod, pod_name("paused", 1)), (Kind::Pod, pod_name("resumed", 1))]
        );
        assert!(plan.records.is_empty(), "{plan:?}");
    }

    #[test]
    fn per_sandbox_policies_of_earlier_versions_are_orphans_even_with_a_record() {
        let mut objects = complete("old", 600, false);
        objects.push((Kind::NetworkPolicy, object(object_name("old"), "old", 600)));
        objects.push((Kind::NetworkPolicy, object(object_name("young"), "young", 10)));
        // The shared policy carries no runtime id: never an orphan.
        let shared = ObjectMeta { name: Some("oh-sandboxes".into()), ..Default::default() };
        objects.push((Kind::NetworkPolicy, shared));
        let plan = run(&[record("old", 600, false)], &objects, false);
        assert_eq!(plan.orphans, [(Kind::NetworkPolicy, object_name("old"))]);
        assert!(plan.records.is_empty(), "{plan:?}");
    }

    #[test]
    fn an_idle_cache_is_swept_only_every_so_often() {
        let t0 = Instant::now();
        let (grace, every) = (GRACE, Duration::from_secs(300));
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(due(None, t0, grace, every, t0));
        // A change since the last sweep, or young enough at that sweep to have been skipped.
        assert!(due(Some(at(100)), at(120), grace, every, at(130)));
        assert!(due(Some(at(100)), at(50), grace, every, at(130)));
        // Settled before the last sweep: nothing until the full-sweep period.
        assert!(!due(Some(at(100)), at(30), grace, every, at(130)));
        assert!(due(Some(at(100)), at(30), grace, every, at(400)));
    }

    #[test]
    fn young_and_deleting_records_are_left_alone() {
        let mut leaving = record("leaving", 600, false);
        leaving.metadata.deletion_timestamp = Some(Time(now()));
        let records = [record("young", 10, false), leaving];
        let plan = run(&records, &[], false);
        assert_eq!(plan, SweepPlan::default());
    }
}
