//! The runtime record and the naming scheme: what every object of a runtime is called and
//! labelled, what the record (a ConfigMap, owner of all the others) stores, and how it is read
//! back. The store, the builders, lifecycle and the sweep all speak this one schema.
//!
//! Naming: the record is named after a hash of the session id, which makes `/start` idempotent
//! across replicas (a second create gets AlreadyExists). Everything else is named after the random
//! runtime id, so a fresh runtime for the same session never collides with the leftovers of the
//! previous one. All names are lower-case hex with a short prefix: always DNS-1123 and short.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::runtime::RuntimeSpec;
#[cfg(doc)]
use crate::runtime::ids;

/// On every object this service creates; the watches and the orphan sweep select on it.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "runtime-api");
/// The random runtime id: names everything but the record, selects everything a runtime owns.
pub const LABEL_RUNTIME_ID: &str = "runtime-api.openhands.dev/runtime-id";
/// [`ids::session_hash`] of the session id: the raw id is never a label value.
pub const LABEL_SESSION_HASH: &str = "runtime-api.openhands.dev/session-hash";
/// Which object of the runtime this is (one of the `COMPONENT_*` values).
pub const LABEL_COMPONENT: &str = "runtime-api.openhands.dev/component";
/// On the record: the raw session id, as the client sent it.
pub const ANNOTATION_SESSION_ID: &str = "runtime-api.openhands.dev/session-id";
/// On the record: `true` while paused (the pod is gone, everything else kept).
pub const ANNOTATION_PAUSED: &str = "runtime-api.openhands.dev/paused";
/// On the record: the generation of the current pod, bumped by every resume.
pub const ANNOTATION_GENERATION: &str = "runtime-api.openhands.dev/pod-generation";
/// On the record: when it was paused (RFC 3339), for dead cleanup.
pub const ANNOTATION_PAUSED_AT: &str = "runtime-api.openhands.dev/paused-at";
/// When the current pod generation was decided (by a resume): its pod may not exist yet.
pub const ANNOTATION_GENERATION_AT: &str = "runtime-api.openhands.dev/generation-at";
/// On the record: why maintenance paused it, shown in `status_detail`.
pub const ANNOTATION_PAUSE_REASON: &str = "runtime-api.openhands.dev/pause-reason";
/// On the record: the gateway's last request to the runtime (RFC 3339), written at most once per
/// GATEWAY_ACTIVITY_INTERVAL_SECONDS by whichever replica forwarded it; read by idle pause.
pub const ANNOTATION_LAST_ACTIVITY: &str = "runtime-api.openhands.dev/last-activity";
/// On pods: when this service created them (RFC 3339, sub-second), for the start-to-running metric.
pub const ANNOTATION_CREATED_AT: &str = "runtime-api.openhands.dev/created-at";
/// When a start completed a runtime whose creator died before its Secret was written.
pub const ANNOTATION_COMPLETED_AT: &str = "runtime-api.openhands.dev/completed-at";
/// Record data: the spec as started, JSON, without environment values (those are in the Secret).
pub const DATA_SPEC: &str = "spec.json";
/// Record data: the creation time clients see.
pub const DATA_CREATED_AT: &str = "created-at";

/// Values of [`LABEL_COMPONENT`].
pub const COMPONENT_RECORD: &str = "record";
pub const COMPONENT_SANDBOX: &str = "sandbox";
pub const COMPONENT_SECRET: &str = "secret";
pub const COMPONENT_SERVICE: &str = "service";
pub const COMPONENT_INGRESS: &str = "ingress";
pub const COMPONENT_NETWORK_POLICY: &str = "network-policy";
pub const COMPONENT_WORKSPACE: &str = "workspace";

/// The record is named after the session: a second `/start` anywhere gets AlreadyExists.
pub fn record_name(session_hash: &str) -> String {
    format!("oh-session-{session_hash}")
}

/// Name of the runtime's Secret, Service, Ingress and NetworkPolicy.
pub fn object_name(runtime_id: &str) -> String {
    format!("{}{runtime_id}", crate::runtime::urls::SERVICE_PREFIX)
}

/// Pods get a generation suffix so resume can create a new pod while the old one still terminates.
pub fn pod_name(runtime_id: &str, generation: u32) -> String {
    format!("oh-rt-{runtime_id}-{generation}")
}

/// Name of the runtime's workspace claim.
pub fn claim_name(runtime_id: &str) -> String {
    format!("oh-rt-{runtime_id}-workspace")
}

/// Label selector of everything a runtime owns.
pub fn runtime_selector(runtime_id: &str) -> String {
    format!("{LABEL_RUNTIME_ID}={runtime_id}")
}

/// The four labels every object of a runtime carries.
pub fn labels(runtime_id: &str, session_hash: &str, component: &str) -> BTreeMap<String, String> {
    [
        (MANAGED_BY.0, MANAGED_BY.1),
        (LABEL_RUNTIME_ID, runtime_id),
        (LABEL_SESSION_HASH, session_hash),
        (LABEL_COMPONENT, component),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Label selector of every object this service manages, or of one component of them.
pub fn managed_selector(component: Option<&str>) -> String {
    let all = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
    match component {
        Some(component) => format!("{all},{LABEL_COMPONENT}={component}"),
        None => all,
    }
}

/// The record: the spec as started (environment values live in the Secret), the raw session id,
/// and the mutable state (paused, pod generation) in annotations.
pub fn record(
    namespace: &str,
    runtime_id: &str,
    session_hash: &str,
    spec: &RuntimeSpec,
    created_at: &str,
) -> ConfigMap {
    let stored = RuntimeSpec { environment: BTreeMap::new(), ..spec.clone() };
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(record_name(session_hash)),
            namespace: Some(namespace.to_string()),
            labels: Some(labels(runtime_id, session_hash, COMPONENT_RECORD)),
            annotations: Some(
                [
                    (ANNOTATION_SESSION_ID, spec.session_id.as_str()),
                    (ANNOTATION_PAUSED, "false"),
                    (ANNOTATION_GENERATION, "1"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ),
            ..Default::default()
        },
        data: Some(
            [
                (DATA_SPEC.to_string(), serde_json::to_string(&stored).expect("a spec serialises")),
                (DATA_CREATED_AT.to_string(), created_at.to_string()),
            ]
            .into_iter()
            .collect(),
        ),
        ..Default::default()
    }
}

/// What a record says about its runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordInfo {
    pub runtime_id: String,
    pub session_id: String,
    pub session_hash: String,
    pub paused: bool,
    pub generation: u32,
    pub spec: RuntimeSpec,
    pub created_at: String,
    pub paused_at: Option<jiff::Timestamp>,
    pub pause_reason: Option<String>,
    /// When the current generation was decided: the resume's time, else the creation's.
    pub generation_at: Option<jiff::Timestamp>,
}

impl RecordInfo {
    /// Reads a record back; `None` for one this service cannot read (written by something else,
    /// or by an incompatible version).
    pub fn parse(record: &ConfigMap) -> Option<RecordInfo> {
        let labels = record.metadata.labels.as_ref()?;
        let annotations = record.metadata.annotations.as_ref()?;
        let data = record.data.as_ref()?;
        Some(RecordInfo {
            runtime_id: labels.get(LABEL_RUNTIME_ID)?.clone(),
            session_hash: labels.get(LABEL_SESSION_HASH)?.clone(),
            session_id: annotations.get(ANNOTATION_SESSION_ID)?.clone(),
            paused: annotations.get(ANNOTATION_PAUSED).map(|v| v == "true").unwrap_or(false),
            generation: annotations
                .get(ANNOTATION_GENERATION)
                .and_then(|g| g.parse().ok())
                .unwrap_or(1),
            spec: serde_json::from_str(data.get(DATA_SPEC)?).ok()?,
            created_at: data.get(DATA_CREATED_AT).cloned().unwrap_or_default(),
            paused_at: annotations.get(ANNOTATION_PAUSED_AT).and_then(|t| t.parse().ok()),
            pause_reason: annotations.get(ANNOTATION_PAUSE_REASON).cloned(),
            generation_at: annotations
                .get(ANNOTATION_GENERATION_AT)
                .and_then(|t| t.parse().ok())
                .or_else(|| record.metadata.creation_timestamp.as_ref().map(|t| t.0)),
        })
    }
}

/// The runtime id a record (or any object of a runtime) is labelled with.
pub fn runtime_id_of(meta: &ObjectMeta) -> Option<&str> {
    meta.labels.as_ref()?.get(LABEL_RUNTIME_ID).map(String::as_str)
}

/// One value of the runtime's Secret, decoded.
pub fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::runtime::Command;

    #[test]
    fn names_are_dns_labels() {
        let hash = crate::runtime::ids::session_hash("AnyCASE session/ID ü");
        for name in [
            record_name(&hash),
            object_name(RUNTIME_ID),
            pod_name(RUNTIME_ID, 12),
            claim_name(RUNTIME_ID),
        ] {
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
        }
    }

    const RUNTIME_ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn secret_values_decode() {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "s"},
            "data": {"SESSION_API_KEY": "a2V5", "DEBUG": "dHJ1ZQ=="}
        }))
        .unwrap();
        assert_eq!(secret_value(&secret, "SESSION_API_KEY").as_deref(), Some("key"));
        assert_eq!(secret_value(&secret, "MISSING"), None);
    }

    fn spec() -> RuntimeSpec {
        RuntimeSpec {
            session_id: "MixedCase".into(),
            image: "img".into(),
            command: Command::Shell("run".into()),
            working_dir: None,
            environment: [("SECRET".to_string(), "v".to_string())].into_iter().collect(),
            resource_factor: 2.0,
            runtime_class: None,
            run_as_user: Some(10001),
            run_as_group: None,
            fs_group: None,
            image_pull_policy: None,
        }
    }

    #[test]
    fn record_info_round_trips_the_builder() {
        let spec = spec();
        let record = record("ns", "rid", "hash", &spec, "2026-01-01T00:00:00Z");
        let info = RecordInfo::parse(&record).unwrap();
        assert_eq!((info.runtime_id.as_str(), info.session_id.as_str()), ("rid", "MixedCase"));
        assert_eq!(runtime_id_of(&record.metadata), Some("rid"));
        assert!(!info.paused);
        assert_eq!(info.generation, 1);
        assert!(info.spec.environment.is_empty(), "environment values belong in the Secret");
        assert_eq!(info.spec, RuntimeSpec { environment: BTreeMap::new(), ..spec });
    }

    #[test]
    fn a_record_missing_its_schema_is_unreadable() {
        let mut record = record("ns", "rid", "hash", &spec(), "now");
        record.data.as_mut().unwrap().insert(DATA_SPEC.into(), "{not json".into());
        assert_eq!(RecordInfo::parse(&record), None);
        assert_eq!(managed_selector(None), "app.kubernetes.io/managed-by=runtime-api");
        assert_eq!(
            managed_selector(Some(COMPONENT_RECORD)),
            "app.kubernetes.io/managed-by=runtime-api,runtime-api.openhands.dev/component=record"
        );
    }
}
