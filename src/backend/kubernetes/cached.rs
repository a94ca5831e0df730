//! What the caches keep of a runtime's record, its Secret and its sandbox pod: the few facts
//! reads, the pools and the sweep use, taken from each watch event as it arrives. A whole `Pod`
//! costs about 3 KB in memory even stripped (its inline spec, a B-tree node per label map, an
//! allocation per key); these entries cost a few hundred bytes, and the work of reading an
//! object (a pod's status classified, a record's spec parsed) is done once per event instead of
//! once per read.
//!
//! The reflector stores keep them through [`Lookup`]. Their keys carry the name only: every
//! object of a store is in the service's namespace, and a key's copy of the uid and
//! resourceVersion would double what the entry itself keeps.

use std::borrow::Cow;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::runtime::reflector::Lookup;

use super::pool::{
    ANNOTATION_CLAIMED_AT, INIT_KEY, LABEL_POOL, LABEL_POOL_SHAPE, LABEL_POOL_STATE, STATE_CLAIMED,
};
use super::record::{ANNOTATION_LAST_ACTIVITY, RecordInfo, runtime_id_of, secret_value};
use super::status::{self, Observed};

/// The key of a runtime's Secret that reads use.
pub const SESSION_KEY: &str = "SESSION_API_KEY";

/// The metadata every cached object keeps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    /// The runtime-id label, if any.
    pub runtime_id: Option<String>,
    pub created: Option<jiff::Timestamp>,
    /// Its deletion has begun (it still exists until its finalizers and grace period are done).
    pub deleting: bool,
}

impl Meta {
    pub fn of(meta: &ObjectMeta) -> Meta {
        Meta {
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
            runtime_id: runtime_id_of(meta).map(str::to_string),
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
            deleting: meta.deletion_timestamp.is_some(),
        }
    }

    /// The resourceVersion as a number, for "has the cache caught up with my write" checks
    /// (see [`super::store::caught_up`]).
    pub fn version(&self) -> Option<u64> {
        self.resource_version.parse().ok()
    }
}

/// A runtime's record as the cache keeps it: read once per change.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedRecord {
    pub meta: Meta,
    /// What it says; `None` for a record this service cannot read (written by something else,
    /// or by an incompatible version): its runtime id still protects its objects from the sweep.
    pub info: Option<RecordInfo>,
    /// The gateway's last request to the runtime.
    pub last_activity: Option<jiff::Timestamp>,
}

impl CachedRecord {
    pub fn of(record: &ConfigMap) -> CachedRecord {
        CachedRecord {
            meta: Meta::of(&record.metadata),
            info: RecordInfo::parse(record),
            last_activity: record
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_LAST_ACTIVITY))
                .and_then(|t| t.parse().ok()),
        }
    }

    /// The owner reference every child object carries, pointing at this record.
    pub fn owner_reference(&self) -> Option<OwnerReference> {
        (!self.meta.uid.is_empty()).then(|| OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: self.meta.name.clone(),
            uid: self.meta.uid.clone(),
            controller: Some(true),
            block_owner_deletion: None,
        })
    }

    /// The record as the object of a Kubernetes Event.
    pub fn object_reference(&self, namespace: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
            name: Some(self.meta.name.clone()),
            namespace: Some(namespace.to_string()),
            uid: Some(self.meta.uid.clone()),
            resource_version: Some(self.meta.resource_version.clone()),
            ..Default::default()
        }
    }
}

/// A warm pool member's labels: which pool and shape, and whether a start claimed it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolLabels {
    pub pool: String,
    pub shape: String,
    pub claimed: bool,
    pub claimed_at: Option<jiff::Timestamp>,
}

/// A sandbox pod as the cache keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedPod {
    pub meta: Meta,
    /// Its status as clients see it (while its runtime is not paused).
    pub observed: Observed,
    /// Its Ready condition is True.
    pub ready: bool,
    /// Phase Failed: it will not come back.
    pub failed: bool,
    pub address: Option<IpAddr>,
    /// Set on warm pool members only.
    pub pool: Option<PoolLabels>,
}

impl CachedPod {
    pub fn of(pod: &Pod) -> CachedPod {
        let status = pod.status.as_ref();
        let labels = pod.metadata.labels.as_ref();
        let label = |key: &str| labels.and_then(|l| l.get(key));
        let pool = label(LABEL_POOL_STATE).map(|state| PoolLabels {
            pool: label(LABEL_POOL).cloned().unwrap_or_default(),
            shape: label(LABEL_POOL_SHAPE).cloned().unwrap_or_default(),
            claimed: state == STATE_CLAIMED,
            claimed_at: pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_CLAIMED_AT))
                .and_then(|t| t.parse().ok()),
        });
        CachedPod {
            meta: Meta::of(&pod.metadata),
            observed: status::observe_pod(pod),
            ready: status::is_ready(pod),
            failed: status.and_then(|s| s.phase.as_deref()) == Some("Failed"),
            address: status.and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse().ok()),
            pool,
        }
    }
}

/// A runtime's Secret as the cache keeps it: the session key, and a pool member's init key (the
/// caller's environment, up to 512 KiB, stays in the API server; only the pod reads it).
#[derive(Debug, Clone, PartialEq)]
pub struct CachedSecret {
    pub meta: Meta,
    pub session_key: Option<String>,
    pub init_key: Option<String>,
}

impl CachedSecret {
    pub fn of(secret: &Secret) -> CachedSecret {
        let value = |key: &str| secret_value(secret, key);
        let member = secret.metadata.labels.as_ref().is_some_and(|l| l.contains_key(LABEL_POOL));
        CachedSecret {
            meta: Meta::of(&secret.metadata),
            session_key: value(SESSION_KEY),
            init_key: if member { value(INIT_KEY) } else { None },
        }
    }
}

/// The [`Lookup`] of a cached kind: its API identity, and its name as the store's key.
macro_rules! lookup {
    ($cached:ty, $kind:literal, $plural:literal) => {
        impl Lookup for $cached {
            type DynamicType = ();

            fn kind(_: &()) -> Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> Cow<'_, str> {
                "".into()
            }
            fn version(_: &()) -> Cow<'_, str> {
                "v1".into()
            }
            fn plural(_: &()) -> Cow<'_, str> {
                $plural.into()
            }
            fn name(&self) -> Option<Cow<'_, str>> {
                Some(Cow::Borrowed(&self.meta.name))
            }
            fn namespace(&self) -> Option<Cow<'_, str>> {
                None
            }
            fn resource_version(&self) -> Option<Cow<'_, str>> {
                None
            }
            fn uid(&self) -> Option<Cow<'_, str>> {
                None
            }
        }
    };
}

lookup!(CachedRecord, "ConfigMap", "configmaps");
lookup!(CachedPod, "Pod", "pods");
lookup!(CachedSecret, "Secret", "secrets");

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::runtime::{PodStatus, Status};

    #[test]
    fn a_pod_keeps_its_identity_status_address_and_pool_labels() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "oh-rt-r1-1", "uid": "u1", "resourceVersion": "42",
                "creationTimestamp": "2026-11-30T10:00:00Z",
                "labels": {"runtime-api.openhands.dev/runtime-id": "r1",
                    LABEL_POOL: "small", LABEL_POOL_SHAPE: "abc", LABEL_POOL_STATE: "claimed"},
                "annotations": {ANNOTATION_CLAIMED_AT: "2026-11-30T10:01:00Z"}},
            "spec": {"containers": [{"name": "agent", "image": "big/image:tag"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.7",
                "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let cached = CachedPod::of(&pod);
        assert_eq!(
            cached.meta,
            Meta {
                name: "oh-rt-r1-1".into(),
                uid: "u1".into(),
                resource_version: "42".into(),
                runtime_id: Some("r1".into()),
                created: Some("2026-11-30T10:00:00Z".parse().unwrap()),
                deleting: false,
            }
        );
        assert_eq!(cached.meta.version(), Some(42));
        assert_eq!(
            (cached.observed.status, cached.observed.pod_status),
            (Status::Running, PodStatus::Ready)
        );
        assert!(cached.ready && !cached.failed);
        assert_eq!(cached.address, Some("10.0.0.7".parse().unwrap()));
        assert_eq!(
            cached.pool,
            Some(PoolLabels {
                pool: "small".into(),
                shape: "abc".into(),
                claimed: true,
                claimed_at: Some("2026-11-30T10:01:00Z".parse().unwrap()),
            })
        );
    }

    #[test]
    fn a_runtimes_pod_is_no_pool_member_and_a_failed_one_says_so() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "deletionTimestamp": "2026-11-30T10:00:00Z"},
            "status": {"phase": "Failed", "reason": "Evicted"}
        }))
        .unwrap();
        let cached = CachedPod::of(&pod);
        assert!(cached.pool.is_none() && cached.failed && cached.meta.deleting && !cached.ready);
        assert_eq!((cached.address, cached.meta.runtime_id), (None, None));
    }

    #[test]
    fn a_secret_keeps_the_session_key_and_only_a_pool_members_init_key() {
        let secret = |member: bool| {
            let mut s = Secret::default();
            let data = [SESSION_KEY, INIT_KEY, "GITHUB_TOKEN"]
                .map(|k| (k.to_string(), k8s_openapi::ByteString(format!("{k}-v").into_bytes())));
            s.data = Some(data.into_iter().collect());
            if member {
                s.metadata.labels = Some([(LABEL_POOL.to_string(), "p".into())].into());
            }
            CachedSecret::of(&s)
        };
        let runtime = secret(false);
        assert_eq!(
            (runtime.session_key.as_deref(), runtime.init_key.as_deref()),
            (Some("SESSION_API_KEY-v"), None)
        );
        let member = secret(true);
        assert_eq!(member.init_key.as_deref(), Some("OH_SECRET_KEY-v"));
    }

    #[test]
    fn a_record_is_read_once_and_knows_its_references() {
        let spec = crate::runtime::RuntimeSpec::new("session-1", "img");
        let mut record = super::super::record::record("ns", "r1", "h1", &spec, "t0");
        record.metadata.uid = Some("u1".into());
        record.metadata.resource_version = Some("9".into());
        let annotations = record.metadata.annotations.as_mut().unwrap();
        annotations.insert(ANNOTATION_LAST_ACTIVITY.into(), "2026-11-30T10:00:00Z".into());
        let cached = CachedRecord::of(&record);
        assert_eq!(cached.info, RecordInfo::parse(&record));
        assert_eq!(cached.info.as_ref().map(|i| i.session_id.as_str()), Some("session-1"));
        assert_eq!(cached.last_activity, Some("2026-11-30T10:00:00Z".parse().unwrap()));
        let owner = cached.owner_reference().unwrap();
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("ConfigMap", "oh-session-h1", "u1")
        );
        let reference = cached.object_reference("ns");
        assert_eq!(
            (reference.namespace.as_deref(), reference.uid.as_deref(), reference.kind.as_deref()),
            (Some("ns"), Some("u1"), Some("ConfigMap"))
        );
        // Not created yet (no uid): nothing can be owned by it.
        record.metadata.uid = None;
        assert_eq!(CachedRecord::of(&record).owner_reference(), None);
        // Unreadable: kept, with its runtime id, for the sweep.
        record.data = None;
        let unreadable = CachedRecord::of(&record);
        assert_eq!((unreadable.info, unreadable.meta.runtime_id.as_deref()), (None, Some("r1")));
    }

    #[test]
    fn store_keys_are_the_name_alone() {
        let pod = CachedPod::of(
            &serde_json::from_value(json!({"metadata": {
            "name": "p", "namespace": "ns", "uid": "u", "resourceVersion": "7"}}))
            .unwrap(),
        );
        let key = pod.to_object_ref(());
        assert_eq!(key, kube::runtime::reflector::ObjectRef::new("p"));
        assert_eq!((key.namespace, key.extra.uid, key.extra.resource_version), (None, None, None));
    }
}
