//! The Kubernetes objects of one runtime, built as pure functions from its spec and the settings,
//! so that every field can be unit-tested without a cluster.
//!
//! Naming: the record (a ConfigMap) is named after a hash of the session id, which makes `/start`
//! idempotent across replicas (a second create gets AlreadyExists). Everything else is named after
//! the random runtime id, so a fresh runtime for the same session never collides with the leftovers
//! of the previous one. All names are lower-case hex with a short prefix: always DNS-1123 and short.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, Container, ContainerPort, EnvFromSource, EnvVar, HTTPGetAction,
    LocalObjectReference, PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource,
    Pod, PodSecurityContext, PodSpec, Probe, ResourceRequirements, SeccompProfile, Secret, SecretEnvSource,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, IPBlock, Ingress, IngressBackend, IngressRule, IngressServiceBackend,
    IngressSpec, IngressTLS, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicySpec, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::quantity;
use super::settings::KubeSettings;
use crate::config::RoutingMode;
use crate::runtime::env::{Injected, SESSION_KEY_VARS, injected_environment, sandbox_environment};
use crate::runtime::{Command, RuntimeSpec};

pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "runtime-api");
pub const LABEL_RUNTIME_ID: &str = "runtime-api.openhands.dev/runtime-id";
pub const LABEL_SESSION_HASH: &str = "runtime-api.openhands.dev/session-hash";
pub const LABEL_COMPONENT: &str = "runtime-api.openhands.dev/component";
pub const ANNOTATION_SESSION_ID: &str = "runtime-api.openhands.dev/session-id";
pub const ANNOTATION_PAUSED: &str = "runtime-api.openhands.dev/paused";
pub const ANNOTATION_GENERATION: &str = "runtime-api.openhands.dev/pod-generation";
pub const DATA_SPEC: &str = "spec.json";
pub const DATA_CREATED_AT: &str = "created-at";

pub const COMPONENT_RECORD: &str = "record";
pub const COMPONENT_SANDBOX: &str = "sandbox";

const CA_MOUNT_DIR: &str = "/etc/runtime-api/ca";
const CONTAINER_NAME: &str = "agent-server";

pub fn record_name(session_hash: &str) -> String {
    format!("oh-session-{session_hash}")
}

/// Name of the runtime's Secret, Service, Ingress and NetworkPolicy.
pub fn object_name(runtime_id: &str) -> String {
    format!("oh-rt-{runtime_id}")
}

/// Pods get a generation suffix so resume can create a new pod while the old one still terminates.
pub fn pod_name(runtime_id: &str, generation: u32) -> String {
    format!("oh-rt-{runtime_id}-{generation}")
}

pub fn claim_name(runtime_id: &str) -> String {
    format!("oh-rt-{runtime_id}-workspace")
}

/// Label selector of everything a runtime owns.
pub fn runtime_selector(runtime_id: &str) -> String {
    format!("{LABEL_RUNTIME_ID}={runtime_id}")
}

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

/// Identity of one runtime, shared by all its builders.
#[derive(Debug, Clone)]
pub struct Identity<'a> {
    pub runtime_id: &'a str,
    pub session_hash: &'a str,
    pub owner: OwnerReference,
}

impl Identity<'_> {
    fn meta(&self, name: String, component: &str, namespace: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.to_string()),
            labels: Some(labels(self.runtime_id, self.session_hash, component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..Default::default()
        }
    }
}

/// The owner reference every child object carries, pointing at the runtime's record.
pub fn owner_reference(record: &ConfigMap) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: record.metadata.name.clone()?,
        uid: record.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: None,
    })
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

/// The runtime's secrets: its session key and the caller's environment, imported into the pod
/// with `envFrom`, so no secret appears in the pod spec.
pub fn secret(
    s: &KubeSettings,
    id: &Identity<'_>,
    session_key: &str,
    caller_env: &BTreeMap<String, String>,
) -> Secret {
    let base_path = vscode_base_path(s, id.runtime_id);
    let injected = injected(s, base_path.as_deref(), session_key);
    let data = sandbox_environment(caller_env, &injected)
        .into_iter()
        .filter(|(k, _)| caller_env.contains_key(k) || SESSION_KEY_VARS.contains(&k.as_str()))
        .map(|(k, v)| (k, ByteString(v.into_bytes())))
        .collect();
    Secret {
        metadata: id.meta(object_name(id.runtime_id), "secret", &s.namespace),
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// In path mode VS Code serves under `/{runtime_id}/vscode`.
fn vscode_base_path(s: &KubeSettings, runtime_id: &str) -> Option<String> {
    (s.routing == RoutingMode::Path).then(|| format!("/{runtime_id}/vscode"))
}

fn injected<'a>(s: &'a KubeSettings, vscode_base_path: Option<&'a str>, session_key: &'a str) -> Injected<'a> {
    Injected {
        session_key,
        app_server_url: s.app_server_url.as_deref(),
        app_server_public_url: s.app_server_public_url.as_deref(),
        ports: s.ports,
        vscode_base_path,
    }
}

/// Non-secret injected variables, set directly in the pod spec.
fn plain_environment(s: &KubeSettings, runtime_id: &str) -> Vec<EnvVar> {
    let base_path = vscode_base_path(s, runtime_id);
    let mut vars: Vec<(String, String)> = injected_environment(&injected(s, base_path.as_deref(), ""))
        .into_iter()
        .filter(|(k, _)| !SESSION_KEY_VARS.contains(&k.as_str()))
        .collect();
    if s.ca_cert_secret.is_some() {
        let bundle = format!("{CA_MOUNT_DIR}/ca.crt");
        for name in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"] {
            vars.push((name.to_string(), bundle.clone()));
        }
    }
    vars.into_iter().map(|(name, value)| EnvVar { name, value: Some(value), ..Default::default() }).collect()
}

/// The runtime class the pod gets: a requested class must be allowed; with no allowlist,
/// requests cannot choose and the cluster default applies.
pub fn runtime_class(s: &KubeSettings, spec: &RuntimeSpec) -> Result<Option<String>, String> {
    match &spec.runtime_class {
        None => Ok(None),
        Some(_) if s.runtime_classes.is_empty() => Ok(None),
        Some(class) if s.runtime_classes.contains(class) => Ok(Some(class.clone())),
        Some(class) => Err(format!(
            "runtime_class {class:?} is not allowed here (allowed: {})",
            s.runtime_classes.join(", ")
        )),
    }
}

fn container_command(command: &Command) -> Option<Vec<String>> {
    match command {
        Command::ImageDefault => None,
        Command::Shell(line) => Some(vec!["/bin/sh".into(), "-c".into(), line.clone()]),
        Command::Exec(argv) => Some(argv.clone()),
    }
}

fn resources(s: &KubeSettings, factor: f64) -> ResourceRequirements {
    let pair = |millis: u64, bytes: u64| {
        [
            ("cpu".to_string(), Quantity(quantity::cpu(millis, factor))),
            ("memory".to_string(), Quantity(quantity::memory(bytes, factor))),
        ]
        .into_iter()
        .collect()
    };
    ResourceRequirements {
        requests: Some(pair(s.cpu_request_millis, s.memory_request_bytes)),
        limits: Some(pair(s.cpu_limit_millis, s.memory_limit_bytes)),
        ..Default::default()
    }
}

/// Where the workspace claim is mounted: the working directory, unless that is `/`.
pub fn workspace_mount_path(spec: &RuntimeSpec) -> String {
    match spec.working_dir.as_deref() {
        Some(dir) if !dir.trim_end_matches('/').is_empty() => dir.to_string(),
        _ => "/workspace".to_string(),
    }
}

fn alive_probe(port: u16, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/alive".into()),
            port: IntOrString::Int(i32::from(port)),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

/// The sandbox pod. `runtime_class` comes from [`runtime_class`], already checked.
pub fn pod(
    s: &KubeSettings,
    id: &Identity<'_>,
    spec: &RuntimeSpec,
    runtime_class: Option<String>,
    generation: u32,
) -> Pod {
    let mut meta = id.meta(pod_name(id.runtime_id, generation), COMPONENT_SANDBOX, &s.namespace);
    let mut pod_labels = s.pod_labels.clone();
    pod_labels.extend(meta.labels.take().unwrap_or_default());
    meta.labels = Some(pod_labels);
    let privileged = runtime_class.as_ref().is_some_and(|c| s.privileged_runtime_classes.contains(c));
    let ports = [
        ("agent", s.ports.agent),
        ("vscode", s.ports.vscode),
        ("work-1", s.ports.worker_1),
        ("work-2", s.ports.worker_2),
    ];
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    if s.workspace_storage_size.is_some() {
        volumes.push(Volume {
            name: "workspace".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(id.runtime_id),
                read_only: None,
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount { name: "workspace".into(), mount_path: workspace_mount_path(spec), ..Default::default() });
    }
    if let Some(ca) = &s.ca_cert_secret {
        volumes.push(Volume {
            name: "ca-bundle".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(ca.clone()),
                items: Some(vec![k8s_openapi::api::core::v1::KeyToPath {
                    key: "ca.crt".into(),
                    path: "ca.crt".into(),
                    mode: None,
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount { name: "ca-bundle".into(), mount_path: CA_MOUNT_DIR.into(), read_only: Some(true), ..Default::default() });
    }
    let container = Container {
        name: CONTAINER_NAME.into(),
        image: Some(spec.image.clone()),
        command: container_command(&spec.command),
        working_dir: spec.working_dir.clone(),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_string()),
        ports: Some(
            ports
                .iter()
                .map(|(name, port)| ContainerPort {
                    name: Some(name.to_string()),
                    container_port: i32::from(*port),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                })
                .collect(),
        ),
        env_from: Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource { name: object_name(id.runtime_id), optional: Some(false) }),
            ..Default::default()
        }]),
        env: Some(plain_environment(s, id.runtime_id)),
        resources: Some(resources(s, spec.resource_factor)),
        startup_probe: Some(alive_probe(s.ports.agent, 2, 150)),
        readiness_probe: Some(alive_probe(s.ports.agent, 5, 3)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(privileged),
            capabilities: (!privileged).then(|| Capabilities { drop: Some(vec!["NET_RAW".into()]), add: None }),
            ..Default::default()
        }),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        ..Default::default()
    };
    Pod {
        metadata: meta,
        spec: Some(PodSpec {
            containers: vec![container],
            runtime_class_name: runtime_class,
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            restart_policy: Some("Always".into()),
            termination_grace_period_seconds: Some(10),
            image_pull_secrets: (!s.image_pull_secrets.is_empty()).then(|| {
                s.image_pull_secrets.iter().map(|n| LocalObjectReference { name: n.clone() }).collect()
            }),
            node_selector: (!s.node_selector.is_empty()).then(|| s.node_selector.clone()),
            security_context: Some(PodSecurityContext {
                run_as_user: spec.run_as_user,
                run_as_group: spec.run_as_group,
                fs_group: spec.fs_group,
                seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
                ..Default::default()
            }),
            volumes: (!volumes.is_empty()).then_some(volumes),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Selects the runtime's pod whatever its generation.
fn sandbox_selector(runtime_id: &str) -> BTreeMap<String, String> {
    [(LABEL_RUNTIME_ID, runtime_id), (LABEL_COMPONENT, COMPONENT_SANDBOX)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn service(s: &KubeSettings, id: &Identity<'_>) -> Service {
    let ports = [
        ("agent", s.ports.agent),
        ("vscode", s.ports.vscode),
        ("work-1", s.ports.worker_1),
        ("work-2", s.ports.worker_2),
    ];
    Service {
        metadata: id.meta(object_name(id.runtime_id), "service", &s.namespace),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(sandbox_selector(id.runtime_id)),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, port)| ServicePort {
                        name: Some(name.to_string()),
                        port: i32::from(*port),
                        target_port: Some(IntOrString::Int(i32::from(*port))),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The URLs a client gets; they depend only on the runtime id, so they survive pause and resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Urls {
    pub url: String,
    pub vscode_url: String,
    pub work_hosts: BTreeMap<String, u16>,
}

pub fn urls(s: &KubeSettings, runtime_id: &str) -> Urls {
    let scheme = &s.url_scheme;
    let base = &s.base_domain;
    let at = |prefix: &str| match s.routing {
        RoutingMode::Subdomain if prefix.is_empty() => format!("{scheme}://{runtime_id}.{base}"),
        RoutingMode::Subdomain => format!("{scheme}://{prefix}-{runtime_id}.{base}"),
        RoutingMode::Path if prefix.is_empty() => format!("{scheme}://{base}/{runtime_id}"),
        RoutingMode::Path => format!("{scheme}://{base}/{runtime_id}/{prefix}"),
    };
    Urls {
        url: at(""),
        vscode_url: at("vscode"),
        work_hosts: [(at("work-1"), s.ports.worker_1), (at("work-2"), s.ports.worker_2)].into_iter().collect(),
    }
}

fn backend(service: &str, port: u16) -> IngressBackend {
    IngressBackend {
        service: Some(IngressServiceBackend {
            name: service.to_string(),
            port: Some(ServiceBackendPort { number: Some(i32::from(port)), name: None }),
        }),
        resource: None,
    }
}

/// Subdomain mode: four hosts on one Ingress. Path mode: one host, four regex paths rewritten to
/// the sandbox's root (ingress-nginx annotations).
pub fn ingress(s: &KubeSettings, id: &Identity<'_>) -> Ingress {
    let service = object_name(id.runtime_id);
    let targets = [
        ("", s.ports.agent),
        ("vscode", s.ports.vscode),
        ("work-1", s.ports.worker_1),
        ("work-2", s.ports.worker_2),
    ];
    let mut annotations = s.ingress_annotations.clone();
    let (rules, hosts) = match s.routing {
        RoutingMode::Subdomain => {
            let host = |prefix: &str| {
                if prefix.is_empty() {
                    format!("{}.{}", id.runtime_id, s.base_domain)
                } else {
                    format!("{prefix}-{}.{}", id.runtime_id, s.base_domain)
                }
            };
            let rules: Vec<IngressRule> = targets
                .iter()
                .map(|(prefix, port)| IngressRule {
                    host: Some(host(prefix)),
                    http: Some(HTTPIngressRuleValue {
                        paths: vec![HTTPIngressPath {
                            path: Some("/".into()),
                            path_type: "Prefix".into(),
                            backend: backend(&service, *port),
                        }],
                    }),
                })
                .collect();
            let hosts = targets.iter().map(|(p, _)| host(p)).collect();
            (rules, hosts)
        }
        RoutingMode::Path => {
            annotations.insert("nginx.ingress.kubernetes.io/use-regex".into(), "true".into());
            annotations.insert("nginx.ingress.kubernetes.io/rewrite-target".into(), "/$2".into());
            // Longest prefixes first, so `/{id}/vscode` is not swallowed by `/{id}`.
            let paths = targets
                .iter()
                .rev()
                .map(|(prefix, port)| {
                    let base = if prefix.is_empty() {
                        format!("/{}", id.runtime_id)
                    } else {
                        format!("/{}/{prefix}", id.runtime_id)
                    };
                    HTTPIngressPath {
                        path: Some(format!("{base}(/|$)(.*)")),
                        path_type: "ImplementationSpecific".into(),
                        backend: backend(&service, *port),
                    }
                })
                .collect();
            let rule = IngressRule { host: Some(s.base_domain.clone()), http: Some(HTTPIngressRuleValue { paths }) };
            (vec![rule], vec![s.base_domain.clone()])
        }
    };
    let mut meta = id.meta(object_name(id.runtime_id), "ingress", &s.namespace);
    meta.annotations = (!annotations.is_empty()).then_some(annotations);
    Ingress {
        metadata: meta,
        spec: Some(IngressSpec {
            ingress_class_name: Some(s.ingress_class.clone()),
            rules: Some(rules),
            tls: (s.url_scheme == "https")
                .then(|| vec![IngressTLS { hosts: Some(hosts), secret_name: s.ingress_tls_secret.clone() }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Only the ingress controller and this service may reach the sandbox; the sandbox may reach
/// anything but the cloud metadata endpoints.
pub fn network_policy(s: &KubeSettings, id: &Identity<'_>) -> NetworkPolicy {
    let ingress_controller = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(
                [("kubernetes.io/metadata.name".to_string(), s.ingress_namespace.clone())].into_iter().collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    let this_service = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector { match_labels: Some(s.service_pod_labels.clone()), ..Default::default() }),
        ..Default::default()
    };
    let anywhere_but_metadata = |cidr: &str, metadata: &str| NetworkPolicyPeer {
        ip_block: Some(IPBlock { cidr: cidr.into(), except: Some(vec![metadata.into()]) }),
        ..Default::default()
    };
    NetworkPolicy {
        metadata: id.meta(object_name(id.runtime_id), "network-policy", &s.namespace),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(sandbox_selector(id.runtime_id)),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![ingress_controller, this_service]),
                ports: None,
            }]),
            egress: Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![
                    anywhere_but_metadata("0.0.0.0/0", "169.254.169.254/32"),
                    anywhere_but_metadata("::/0", "fd00:ec2::254/128"),
                ]),
                ports: None,
            }]),
        }),
    }
}

/// The workspace claim, when `WORKSPACE_STORAGE_SIZE` is set.
pub fn workspace_claim(s: &KubeSettings, id: &Identity<'_>) -> Option<PersistentVolumeClaim> {
    let size = s.workspace_storage_size.as_ref()?;
    Some(PersistentVolumeClaim {
        metadata: id.meta(claim_name(id.runtime_id), "workspace", &s.namespace),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: s.workspace_storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_string(), Quantity(size.clone()))].into_iter().collect()),
                limits: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}
