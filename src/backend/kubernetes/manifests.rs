//! The child objects of one runtime (Secret, Pod, Service, Ingress, NetworkPolicy, workspace
//! claim) and its URLs, built as pure functions from its spec and the settings, so that every
//! field can be unit-tested without a cluster. Names and labels come from [`super::record`].

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvFromSource, EnvVar, HTTPGetAction,
    LocalObjectReference, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, Probe,
    ResourceRequirements, SeccompProfile, Secret, SecretEnvSource, SecretVolumeSource,
    SecurityContext, Service, ServicePort, ServiceSpec, Toleration, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, IPBlock, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, NetworkPolicy, NetworkPolicyEgressRule,
    NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::quantity;
use super::record::{
    ANNOTATION_CREATED_AT, COMPONENT_INGRESS, COMPONENT_NETWORK_POLICY, COMPONENT_SANDBOX,
    COMPONENT_SECRET, COMPONENT_SERVICE, COMPONENT_WORKSPACE, LABEL_COMPONENT, LABEL_RUNTIME_ID,
    MANAGED_BY, claim_name, labels, object_name, pod_name,
};
use super::settings::KubeSettings;
use crate::config::{self, RoutingMode};
use crate::runtime::env::{Injected, SESSION_KEY_VARS, injected_environment, sandbox_environment};
pub use crate::runtime::urls::Urls;
use crate::runtime::urls::{self, UrlStyle};
use crate::runtime::{BackendError, BackendResult, Command, RuntimeSpec};

/// The name of the sandboxes' shared NetworkPolicy ([`sandbox_network_policy`]).
pub const SANDBOX_NETWORK_POLICY: &str = "oh-sandboxes";

const CA_MOUNT_DIR: &str = "/etc/runtime-api/ca";
const CONTAINER_NAME: &str = "agent-server";

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
        metadata: id.meta(object_name(id.runtime_id), COMPONENT_SECRET, &s.namespace),
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// With path-shaped URLs VS Code serves under the runtime's path (`/{id}/vscode`, or
/// `/sandbox/{id}/vscode`).
fn vscode_base_path(s: &KubeSettings, runtime_id: &str) -> Option<String> {
    urls::vscode_base_path(&s.url_style, runtime_id)
}

fn injected<'a>(
    s: &'a KubeSettings,
    vscode_base_path: Option<&'a str>,
    session_key: &'a str,
) -> Injected<'a> {
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
    let mut vars: Vec<(String, String)> =
        injected_environment(&injected(s, base_path.as_deref(), ""))
            .into_iter()
            .filter(|(k, _)| !SESSION_KEY_VARS.contains(&k.as_str()))
            .collect();
    if s.ca_cert_secret.is_some() {
        let bundle = format!("{CA_MOUNT_DIR}/ca.crt");
        for name in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"] {
            vars.push((name.to_string(), bundle.clone()));
        }
    }
    vars.into_iter()
        .map(|(name, value)| EnvVar { name, value: Some(value), ..Default::default() })
        .collect()
}

/// The runtime class the pod gets: a requested class must be allowed; with no allowlist,
/// requests cannot choose and the cluster default applies.
pub fn runtime_class(s: &KubeSettings, spec: &RuntimeSpec) -> BackendResult<Option<String>> {
    match &spec.runtime_class {
        None => Ok(None),
        Some(_) if s.runtime_classes.is_empty() => Ok(None),
        Some(class) if s.runtime_classes.contains(class) => Ok(Some(class.clone())),
        Some(class) => Err(BackendError::invalid(format!(
            "runtime_class {class:?} is not allowed here (allowed: {})",
            s.runtime_classes.join(", ")
        ))),
    }
}

fn tolerations(wanted: &[config::parse::Toleration]) -> Vec<Toleration> {
    wanted
        .iter()
        .map(|t| Toleration {
            key: Some(t.key.clone()),
            operator: Some(if t.value.is_some() { "Equal" } else { "Exists" }.into()),
            value: t.value.clone(),
            effect: t.effect.clone(),
            toleration_seconds: None,
        })
        .collect()
}

/// The container's `command` and `args` for a request's command. OpenHands' clients send whole
/// command lines: the SDK a string (`/usr/local/bin/openhands-agent-server --port 60000`), the V1
/// app server a list starting with the program. Both replace the image's ENTRYPOINT (the upstream
/// agent-server images' is `tini -- openhands-agent-server`, which would take the program path as
/// a stray argument); what tini did (PID 1 reaping orphans) the pod's shared process namespace
/// does. A list starting with an option is what `docker run IMAGE --port 60000` means:
/// arguments to the entrypoint, which stays.
fn container_command(command: &Command) -> (Option<Vec<String>>, Option<Vec<String>>) {
    match command {
        Command::ImageDefault => (None, None),
        Command::Shell(line) => (Some(vec!["/bin/sh".into(), "-c".into(), line.clone()]), None),
        Command::Exec(argv) if argv.first().is_some_and(|a| a.starts_with('-')) => {
            (None, Some(argv.clone()))
        }
        Command::Exec(argv) => (Some(argv.clone()), None),
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
    created_at: &str,
) -> Pod {
    let mut meta = id.meta(pod_name(id.runtime_id, generation), COMPONENT_SANDBOX, &s.namespace);
    meta.annotations =
        Some([(ANNOTATION_CREATED_AT.to_string(), created_at.to_string())].into_iter().collect());
    let mut pod_labels = s.pod_labels.clone();
    pod_labels.extend(meta.labels.take().unwrap_or_default());
    meta.labels = Some(pod_labels);
    let privileged =
        runtime_class.as_ref().is_some_and(|c| s.privileged_runtime_classes.contains(c));
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
        mounts.push(VolumeMount {
            name: "workspace".into(),
            mount_path: workspace_mount_path(spec),
            ..Default::default()
        });
    }
    if let Some(ca) = &s.ca_cert_secret {
        volumes.push(Volume {
            name: "ca-bundle".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(ca.clone()),
                items: Some(vec![k8s_openapi::api::core::v1::KeyToPath {
                    key: s.ca_cert_secret_key.clone(),
                    path: "ca.crt".into(),
                    mode: None,
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "ca-bundle".into(),
            mount_path: CA_MOUNT_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let (command, args) = container_command(&spec.command);
    let container = Container {
        name: CONTAINER_NAME.into(),
        image: Some(spec.image.clone()),
        command,
        args,
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
            secret_ref: Some(SecretEnvSource {
                name: object_name(id.runtime_id),
                optional: Some(false),
            }),
            ..Default::default()
        }]),
        env: Some(plain_environment(s, id.runtime_id)),
        resources: Some(resources(s, spec.resource_factor)),
        startup_probe: Some(alive_probe(s.ports.agent, 2, 150)),
        readiness_probe: Some(alive_probe(s.ports.agent, 5, 3)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(privileged),
            capabilities: (!privileged)
                .then(|| Capabilities { drop: Some(vec!["NET_RAW".into()]), add: None }),
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
            share_process_namespace: Some(true),
            restart_policy: Some("Always".into()),
            termination_grace_period_seconds: Some(10),
            image_pull_secrets: (!s.image_pull_secrets.is_empty()).then(|| {
                s.image_pull_secrets
                    .iter()
                    .map(|n| LocalObjectReference { name: n.clone() })
                    .collect()
            }),
            node_selector: (!s.node_selector.is_empty()).then(|| s.node_selector.clone()),
            tolerations: (!s.tolerations.is_empty()).then(|| tolerations(&s.tolerations)),
            security_context: Some(PodSecurityContext {
                run_as_user: spec.run_as_user,
                run_as_group: spec.run_as_group,
                fs_group: spec.fs_group,
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
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
        metadata: id.meta(object_name(id.runtime_id), COMPONENT_SERVICE, &s.namespace),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            // Headless: the name resolves to the pod as soon as it has an address, as a cluster
            // IP would accept connections before the pod is ready.
            cluster_ip: (!s.service_cluster_ip).then(|| "None".into()),
            publish_not_ready_addresses: (!s.service_cluster_ip).then_some(true),
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

/// The runtime's URLs; they depend only on its id, so they survive pause and resume.
pub fn urls(s: &KubeSettings, runtime_id: &str) -> Urls {
    urls::urls(&s.url_style, runtime_id, s.ports).unwrap_or_else(|| {
        let style = UrlStyle::Subdomain {
            scheme: s.url_scheme.clone(),
            base_domain: s.base_domain.clone(),
        };
        urls::urls(&style, runtime_id, s.ports).expect("subdomain URLs always exist")
    })
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
/// the sandbox's root (ingress-nginx annotations). DIRECT_ROUTING: the original service's
/// `/sandbox/{id}` paths. Gateway mode: none (one wildcard Ingress fronts the gateway); service
/// mode: none (in-cluster clients use the Service).
pub fn ingress(s: &KubeSettings, id: &Identity<'_>) -> Option<Ingress> {
    if !s.per_sandbox_ingress() {
        return None;
    }
    let service = object_name(id.runtime_id);
    let targets = [
        ("", s.ports.agent),
        ("vscode", s.ports.vscode),
        ("work-1", s.ports.worker_1),
        ("work-2", s.ports.worker_2),
    ];
    let mut annotations = s.ingress_annotations.clone();
    let (rules, hosts) = match s.routing {
        _ if s.direct_routing => direct_routing_rules(s, id, &service, &mut annotations),
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
            let rule = IngressRule {
                host: Some(s.base_domain.clone()),
                http: Some(HTTPIngressRuleValue { paths }),
            };
            (vec![rule], vec![s.base_domain.clone()])
        }
        RoutingMode::Gateway | RoutingMode::Service => unreachable!("returned above"),
    };
    let mut meta = id.meta(object_name(id.runtime_id), COMPONENT_INGRESS, &s.namespace);
    meta.annotations = (!annotations.is_empty()).then_some(annotations);
    Some(Ingress {
        metadata: meta,
        spec: Some(IngressSpec {
            ingress_class_name: Some(s.ingress_class.clone()),
            rules: Some(rules),
            tls: (s.url_scheme == "https").then(|| {
                vec![IngressTLS { hosts: Some(hosts), secret_name: s.ingress_tls_secret.clone() }]
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The original service's direct routing on one Ingress: `/sandbox/{id}/worker1|worker2|...`
/// rewritten to the port's root, and `/sandbox/{id}/vscode...` kept whole (VS Code serves under
/// that base path). ingress-nginx has one rewrite per Ingress, `/$2`: the VS Code regex puts the
/// whole path in its second group. Longest prefixes first.
fn direct_routing_rules(
    s: &KubeSettings,
    id: &Identity<'_>,
    service: &str,
    annotations: &mut BTreeMap<String, String>,
) -> (Vec<IngressRule>, Vec<String>) {
    let root = format!("/sandbox/{}", id.runtime_id);
    annotations.insert("nginx.ingress.kubernetes.io/use-regex".into(), "true".into());
    annotations.insert("nginx.ingress.kubernetes.io/rewrite-target".into(), "/$2".into());
    annotations.insert("nginx.ingress.kubernetes.io/websocket-services".into(), service.into());
    if let Some(origin) = &s.direct_routing_cors_allow_origin {
        for (k, v) in [
            ("enable-cors", "true"),
            ("cors-allow-origin", origin.as_str()),
            ("cors-allow-methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS"),
            (
                "cors-allow-headers",
                "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Authorization,X-Session-API-Key",
            ),
        ] {
            annotations.insert(format!("nginx.ingress.kubernetes.io/{k}"), v.into());
        }
    }
    let path = |regex: String, port: u16| HTTPIngressPath {
        path: Some(regex),
        path_type: "ImplementationSpecific".into(),
        backend: backend(service, port),
    };
    let paths = vec![
        path(format!("/()({}/vscode(/.*)?$)", &root[1..]), s.ports.vscode),
        path(format!("{root}/worker1(/|$)(.*)"), s.ports.worker_1),
        path(format!("{root}/worker2(/|$)(.*)"), s.ports.worker_2),
        path(format!("{root}(/|$)(.*)"), s.ports.agent),
    ];
    let rule = IngressRule {
        host: Some(s.base_domain.clone()),
        http: Some(HTTPIngressRuleValue { paths }),
    };
    (vec![rule], vec![s.base_domain.clone()])
}

/// The one NetworkPolicy of every sandbox in the namespace (kept by the leader's sweep, created
/// by the first start of each replica): only the ingress controller and this service may reach a
/// sandbox; a sandbox may reach anything but the cloud metadata endpoints. It selects sandbox pods
/// by label, so it is one object whatever the number of sandboxes.
pub fn sandbox_network_policy(s: &KubeSettings) -> NetworkPolicy {
    let ingress_controller = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(
                [("kubernetes.io/metadata.name".to_string(), s.ingress_namespace.clone())]
                    .into_iter()
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    let this_service = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(s.service_pod_labels.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let anywhere_but_metadata = |cidr: &str, metadata: &str| NetworkPolicyPeer {
        ip_block: Some(IPBlock { cidr: cidr.into(), except: Some(vec![metadata.into()]) }),
        ..Default::default()
    };
    let label = |(k, v): (&str, &str)| (k.to_string(), v.to_string());
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(SANDBOX_NETWORK_POLICY.into()),
            namespace: Some(s.namespace.clone()),
            labels: Some(
                [MANAGED_BY, (LABEL_COMPONENT, COMPONENT_NETWORK_POLICY)].map(label).into(),
            ),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(
                    [MANAGED_BY, (LABEL_COMPONENT, COMPONENT_SANDBOX)].map(label).into(),
                ),
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
        metadata: id.meta(claim_name(id.runtime_id), COMPONENT_WORKSPACE, &s.namespace),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: s.workspace_storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(
                    [("storage".to_string(), Quantity(size.clone()))].into_iter().collect(),
                ),
                limits: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::runtime::PullPolicy;

    fn settings(extra: &[&str]) -> KubeSettings {
        let args = ["runtime-api", "--api-key", "k", "--namespace", "sandboxes"]
            .iter()
            .chain(extra.iter());
        KubeSettings::from_config(&Config::from_args(args).unwrap())
    }

    fn spec() -> RuntimeSpec {
        RuntimeSpec {
            session_id: "AbC".into(),
            image: "ghcr.io/openhands/agent-server:1.58.2-python".into(),
            command: Command::Shell("/usr/local/bin/openhands-agent-server --port 60000".into()),
            working_dir: Some("/workspace".into()),
            environment: [("GITHUB_TOKEN".to_string(), "ghp-x".to_string())].into_iter().collect(),
            resource_factor: 2.0,
            runtime_class: Some("sysbox-runc".into()),
            run_as_user: Some(10001),
            run_as_group: Some(10001),
            fs_group: Some(10001),
            image_pull_policy: Some(PullPolicy::Always),
        }
    }

    fn identity() -> Identity<'static> {
        Identity {
            runtime_id: "0123456789abcdef0123456789abcdef",
            session_hash: "feedbeef",
            owner: OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: "oh-session-feedbeef".into(),
                uid: "uid-1".into(),
                controller: Some(true),
                block_owner_deletion: None,
            },
        }
    }

    #[test]
    fn pod_follows_the_spec_and_the_settings() {
        let s = settings(&[
            "--image-pull-secrets",
            "regcred",
            "--sandbox-pod-labels",
            "team=a",
            "--sandbox-node-selector",
            "pool=sandboxes",
        ]);
        let pod =
            pod(&s, &identity(), &spec(), Some("sysbox-runc".into()), 3, "2026-01-01T00:00:00Z");
        assert_eq!(pod.metadata.name.as_deref(), Some("oh-rt-0123456789abcdef0123456789abcdef-3"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("sandboxes"));
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_RUNTIME_ID], "0123456789abcdef0123456789abcdef");
        assert_eq!(labels[LABEL_COMPONENT], COMPONENT_SANDBOX);
        assert_eq!(labels["team"], "a");
        assert_eq!(pod.metadata.owner_references.as_ref().unwrap()[0].uid, "uid-1");
        let ps = pod.spec.as_ref().unwrap();
        assert_eq!(ps.automount_service_account_token, Some(false));
        assert_eq!(ps.runtime_class_name.as_deref(), Some("sysbox-runc"));
        assert_eq!(ps.image_pull_secrets.as_ref().unwrap()[0].name, "regcred");
        assert_eq!(ps.node_selector.as_ref().unwrap()["pool"], "sandboxes");
        let sc = ps.security_context.as_ref().unwrap();
        assert_eq!(
            (sc.run_as_user, sc.run_as_group, sc.fs_group),
            (Some(10001), Some(10001), Some(10001))
        );
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        let c = &ps.containers[0];
        assert_eq!(
            c.command.as_ref().unwrap(),
            &["/bin/sh", "-c", "/usr/local/bin/openhands-agent-server --port 60000"]
        );
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(c.working_dir.as_deref(), Some("/workspace"));
        let ports: Vec<i32> = c.ports.as_ref().unwrap().iter().map(|p| p.container_port).collect();
        assert_eq!(ports, [60000, 60001, 12000, 12001]);
        let res = c.resources.as_ref().unwrap();
        assert_eq!(res.requests.as_ref().unwrap()["cpu"].0, "2");
        assert_eq!(res.requests.as_ref().unwrap()["memory"].0, "4Gi");
        assert_eq!(res.limits.as_ref().unwrap()["cpu"].0, "4");
        assert_eq!(res.limits.as_ref().unwrap()["memory"].0, "8Gi");
        // sysbox-runc is privileged by default: escalation allowed for Docker-in-Docker.
        assert_eq!(c.security_context.as_ref().unwrap().allow_privilege_escalation, Some(true));
        let startup = c.startup_probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(
            (startup.path.as_deref(), &startup.port),
            (Some("/alive"), &IntOrString::Int(60000))
        );
        assert!(c.readiness_probe.is_some());
        // Secrets only by reference.
        assert_eq!(
            c.env_from.as_ref().unwrap()[0].secret_ref.as_ref().unwrap().name,
            "oh-rt-0123456789abcdef0123456789abcdef"
        );
        let json = serde_json::to_string(&pod).unwrap();
        assert!(!json.contains("ghp-x") && !json.contains("SESSION_API_KEY"), "{json}");
        let env: BTreeMap<_, _> = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| (e.name.as_str(), e.value.clone().unwrap()))
            .collect();
        assert_eq!(env["OH_VSCODE_PORT"], "60001");
        assert_eq!(env["WORKER_1"], "12000");
    }

    #[test]
    fn command_forms_and_unprivileged_default() {
        let s = settings(&[]);
        let exec = RuntimeSpec {
            command: Command::Exec(vec!["/bin/agent".into(), "--port".into(), "60000".into()]),
            runtime_class: None,
            ..spec()
        };
        let p = pod(&s, &identity(), &exec, None, 1, "2026-01-01T00:00:00Z");
        let c = &p.spec.as_ref().unwrap().containers[0];
        // A list starting with a program replaces the image's entrypoint (the V1 app server's)...
        assert_eq!(c.command.as_ref().unwrap(), &["/bin/agent", "--port", "60000"]);
        assert_eq!(c.args, None);
        // ... one starting with an option is arguments to it, as `docker run IMAGE --port 1`.
        let args =
            RuntimeSpec { command: Command::Exec(vec!["--port".into(), "1".into()]), ..spec() };
        let p = pod(&s, &identity(), &args, None, 1, "2026-01-01T00:00:00Z");
        let c = &p.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            (c.command.as_ref(), c.args.as_ref().unwrap()),
            (None, &vec!["--port".to_string(), "1".into()])
        );
        // The pause container is PID 1 and reaps what the agent orphans, as tini would.
        assert_eq!(p.spec.as_ref().unwrap().share_process_namespace, Some(true));
        // A string replaces it with a shell running the line.
        let shell = pod(&s, &identity(), &spec(), None, 1, "2026-01-01T00:00:00Z");
        let c = &shell.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            c.command.as_ref().unwrap(),
            &["/bin/sh", "-c", "/usr/local/bin/openhands-agent-server --port 60000"]
        );
        assert_eq!(c.args, None);
        assert_eq!(c.security_context.as_ref().unwrap().allow_privilege_escalation, Some(false));
        assert_eq!(p.spec.as_ref().unwrap().runtime_class_name, None);
        let entrypoint = RuntimeSpec { command: Command::ImageDefault, ..spec() };
        assert_eq!(
            pod(&s, &identity(), &entrypoint, None, 1, "2026-01-01T00:00:00Z")
                .spec
                .unwrap()
                .containers[0]
                .command,
            None
        );
    }

    #[test]
    fn runtime_class_allowlist() {
        let open = settings(&[]);
        assert_eq!(
            runtime_class(&open, &spec()).unwrap(),
            None,
            "no allowlist: the cluster default"
        );
        let strict = settings(&["--runtime-classes", "gvisor,kata"]);
        let refused = runtime_class(&strict, &spec()).unwrap_err();
        assert_eq!(refused.kind(), crate::runtime::ErrorKind::Invalid);
        assert!(refused.to_string().contains("not allowed"));
        let gvisor = RuntimeSpec { runtime_class: Some("gvisor".into()), ..spec() };
        assert_eq!(runtime_class(&strict, &gvisor).unwrap(), Some("gvisor".into()));
    }

    #[test]
    fn secret_holds_key_and_caller_environment_only() {
        let s = settings(&["--app-server-url", "https://app.example.com"]);
        let secret = secret(&s, &identity(), "the-key", &spec().environment);
        let data = secret.data.unwrap();
        let keys: Vec<_> = data.keys().map(String::as_str).collect();
        assert_eq!(keys, ["GITHUB_TOKEN", "OH_SESSION_API_KEYS_0", "SESSION_API_KEY"]);
        assert_eq!(data["SESSION_API_KEY"].0, b"the-key");
        // The webhook URL is not secret: it is in the pod spec instead.
        let p = pod(&s, &identity(), &spec(), None, 1, "2026-01-01T00:00:00Z");
        let env = p.spec.unwrap().containers[0].env.clone().unwrap();
        assert!(env.iter().any(|e| e.name == "OH_WEBHOOKS_0_BASE_URL"
            && e.value.as_deref() == Some("https://app.example.com/api/v1/webhooks")));
    }

    #[test]
    fn subdomain_routing() {
        let s = settings(&[
            "--base-domain",
            "sb.example.com",
            "--ingress-class",
            "traefik",
            "--ingress-tls-secret",
            "wildcard",
            "--ingress-annotations",
            "a=b",
        ]);
        let id = identity();
        let u = urls(&s, id.runtime_id);
        assert_eq!(u.url, format!("https://{}.sb.example.com", id.runtime_id));
        assert_eq!(u.vscode_url, format!("https://vscode-{}.sb.example.com", id.runtime_id));
        assert_eq!(
            u.work_hosts[&format!("https://work-2-{}.sb.example.com", id.runtime_id)],
            12001
        );
        let ing = ingress(&s, &id).unwrap();
        assert_eq!(ing.metadata.annotations.as_ref().unwrap()["a"], "b");
        let spec = ing.spec.unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("traefik"));
        let rules = spec.rules.unwrap();
        assert_eq!(rules.len(), 4);
        let host_ports: Vec<(String, i32)> = rules
            .iter()
            .map(|r| {
                let b = &r.http.as_ref().unwrap().paths[0].backend;
                (
                    r.host.clone().unwrap(),
                    b.service.as_ref().unwrap().port.as_ref().unwrap().number.unwrap(),
                )
            })
            .collect();
        assert_eq!(host_ports[1], (format!("vscode-{}.sb.example.com", id.runtime_id), 60001));
        let tls = &spec.tls.unwrap()[0];
        assert_eq!(tls.secret_name.as_deref(), Some("wildcard"));
        assert_eq!(tls.hosts.as_ref().unwrap().len(), 4);
    }

    #[test]
    fn service_routing_gives_in_cluster_urls_and_no_ingress() {
        let s = settings(&["--routing-mode", "service"]);
        let id = identity();
        let u = urls(&s, id.runtime_id);
        let host = format!("oh-rt-{}.sandboxes.svc.cluster.local", id.runtime_id);
        assert_eq!(u.url, format!("http://{host}:60000"));
        assert_eq!(u.vscode_url, format!("http://{host}:60001"));
        assert_eq!(u.work_hosts[&format!("http://{host}:12000")], 12000);
        assert_eq!(u.work_hosts[&format!("http://{host}:12001")], 12001);
        assert!(ingress(&s, &id).is_none());
        // The ports of those URLs are the Service's.
        let service_ports: Vec<i32> =
            service(&s, &id).spec.unwrap().ports.unwrap().iter().map(|p| p.port).collect();
        for port in [60000, 60001, 12000, 12001] {
            assert!(service_ports.contains(&port), "{service_ports:?}");
        }
        // Headless by default (a port is the pod's own: port and target port must agree).
        let spec_of = |s: &KubeSettings| service(s, &id).spec.unwrap();
        let headless = spec_of(&s);
        assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
        assert_eq!(headless.publish_not_ready_addresses, Some(true));
        for p in headless.ports.unwrap() {
            assert_eq!(p.target_port, Some(IntOrString::Int(p.port)));
        }
        let with_ip =
            spec_of(&settings(&["--routing-mode", "service", "--sandbox-service-cluster-ip"]));
        assert_eq!((with_ip.cluster_ip, with_ip.publish_not_ready_addresses), (None, None));
        let p = pod(&s, &id, &spec(), None, 1, "2026-01-01T00:00:00Z");
        let env = p.spec.unwrap().containers[0].env.clone().unwrap();
        assert!(!env.iter().any(|e| e.name == "OH_VSCODE_BASE_PATH"));
    }

    #[test]
    fn sandbox_tolerations_reach_the_pod() {
        let p = pod(&settings(&[]), &identity(), &spec(), None, 1, "2026-01-01T00:00:00Z");
        assert_eq!(p.spec.unwrap().tolerations, None);
        let s = settings(&["--sandbox-tolerations", "pool=sandboxes:NoSchedule,dedicated"]);
        let p = pod(&s, &identity(), &spec(), None, 1, "2026-01-01T00:00:00Z");
        let t = p.spec.unwrap().tolerations.unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].key.as_deref(), t[0].operator.as_deref(), t[0].value.as_deref()),
            (Some("pool"), Some("Equal"), Some("sandboxes"))
        );
        assert_eq!(t[0].effect.as_deref(), Some("NoSchedule"));
        assert_eq!((t[1].operator.as_deref(), t[1].value.as_deref()), (Some("Exists"), None));
        assert_eq!(t[1].effect, None);
    }

    #[test]
    fn path_routing_sets_the_vscode_base_path() {
        let s = settings(&["--routing-mode", "path", "--base-domain", "oh.example.com"]);
        let id = identity();
        let u = urls(&s, id.runtime_id);
        assert_eq!(u.url, format!("https://oh.example.com/{}", id.runtime_id));
        assert_eq!(u.vscode_url, format!("https://oh.example.com/{}/vscode", id.runtime_id));
        let ing = ingress(&s, &id).unwrap();
        let paths =
            &ing.spec.as_ref().unwrap().rules.as_ref().unwrap()[0].http.as_ref().unwrap().paths;
        assert_eq!(paths.len(), 4);
        assert_eq!(
            paths[0].path.as_deref(),
            Some(format!("/{}/work-2(/|$)(.*)", id.runtime_id).as_str())
        );
        assert_eq!(paths[3].path.as_deref(), Some(format!("/{}(/|$)(.*)", id.runtime_id).as_str()));
        let p = pod(&s, &id, &spec(), None, 1, "2026-01-01T00:00:00Z");
        let env = p.spec.unwrap().containers[0].env.clone().unwrap();
        assert!(env.iter().any(|e| e.name == "OH_VSCODE_BASE_PATH"
            && e.value.as_deref() == Some(format!("/{}/vscode", id.runtime_id).as_str())));
    }

    #[test]
    fn gateway_mode_has_no_ingress_and_urls_on_the_gateway() {
        let id = identity();
        let s = settings(&["--routing-mode", "gateway", "--base-domain", "sb.example.com"]);
        assert_eq!(ingress(&s, &id), None);
        assert_eq!(
            urls(&s, id.runtime_id).url,
            format!("https://{}.sb.example.com", id.runtime_id)
        );
        let s = settings(&["--routing-mode", "gateway", "--gateway-url", "http://gw:8081/"]);
        assert_eq!(ingress(&s, &id), None);
        let u = urls(&s, id.runtime_id);
        assert_eq!(u.url, format!("http://gw:8081/{}", id.runtime_id));
        assert_eq!(u.vscode_url, format!("http://gw:8081/{}/vscode", id.runtime_id));
    }

    #[test]
    fn direct_routing_is_the_original_sandbox_paths() {
        let id = identity();
        let rt = id.runtime_id;
        let s = settings(&[
            "--direct-routing",
            "--base-domain",
            "oh.example.com",
            "--direct-routing-cors-allow-origin",
            "https://app.example.com",
        ]);
        let u = urls(&s, rt);
        assert_eq!(u.url, format!("https://oh.example.com/sandbox/{rt}"));
        assert_eq!(u.vscode_url, format!("https://oh.example.com/sandbox/{rt}/vscode"));
        let ing = ingress(&s, &id).unwrap();
        let notes = ing.metadata.annotations.clone().unwrap();
        assert_eq!(notes["nginx.ingress.kubernetes.io/rewrite-target"], "/$2");
        assert_eq!(
            notes["nginx.ingress.kubernetes.io/cors-allow-origin"],
            "https://app.example.com"
        );
        let rule = &ing.spec.unwrap().rules.unwrap()[0];
        assert_eq!(rule.host.as_deref(), Some("oh.example.com"));
        let paths: Vec<(String, i32)> = rule
            .http
            .as_ref()
            .unwrap()
            .paths
            .iter()
            .map(|p| {
                let port = p.backend.service.as_ref().unwrap().port.as_ref().unwrap().number;
                (p.path.clone().unwrap(), port.unwrap())
            })
            .collect();
        assert_eq!(paths[0], (format!("/()(sandbox/{rt}/vscode(/.*)?$)"), 60001));
        assert_eq!(paths[1], (format!("/sandbox/{rt}/worker1(/|$)(.*)"), 12000));
        assert_eq!(paths[3], (format!("/sandbox/{rt}(/|$)(.*)"), 60000));
        let p = pod(&s, &id, &spec(), None, 1, "2026-01-01T00:00:00Z");
        let env = p.spec.unwrap().containers[0].env.clone().unwrap();
        assert!(env.iter().any(|e| e.name == "OH_VSCODE_BASE_PATH"
            && e.value.as_deref() == Some(format!("/sandbox/{rt}/vscode").as_str())));
    }

    #[test]
    fn network_policy_admits_only_ingress_and_service_and_blocks_metadata() {
        let s = settings(&[
            "--ingress-namespace",
            "traefik",
            "--service-pod-labels",
            "app=runtime-api",
        ]);
        let np = sandbox_network_policy(&s);
        assert_eq!(np.metadata.name.as_deref(), Some(SANDBOX_NETWORK_POLICY));
        // Every sandbox pod of this service, and nothing else.
        assert_eq!(
            np.spec.as_ref().unwrap().pod_selector.as_ref().unwrap().match_labels,
            Some(
                [
                    ("app.kubernetes.io/managed-by".to_string(), "runtime-api".to_string()),
                    (LABEL_COMPONENT.to_string(), COMPONENT_SANDBOX.to_string())
                ]
                .into()
            )
        );
        let np = np.spec.unwrap();
        assert_eq!(np.policy_types.unwrap(), ["Ingress", "Egress"]);
        let from = np.ingress.unwrap()[0].from.clone().unwrap();
        assert_eq!(
            from[0].namespace_selector.as_ref().unwrap().match_labels.as_ref().unwrap()["kubernetes.io/metadata.name"],
            "traefik"
        );
        assert_eq!(
            from[1].pod_selector.as_ref().unwrap().match_labels.as_ref().unwrap()["app"],
            "runtime-api"
        );
        let to = np.egress.unwrap()[0].to.clone().unwrap();
        assert_eq!(
            to[0].ip_block.as_ref().unwrap().except.as_ref().unwrap(),
            &["169.254.169.254/32"]
        );
    }

    #[test]
    fn workspace_claim_and_mount_only_when_configured() {
        let none = settings(&[]);
        assert!(workspace_claim(&none, &identity()).is_none());
        assert!(
            pod(&none, &identity(), &spec(), None, 1, "2026-01-01T00:00:00Z")
                .spec
                .unwrap()
                .volumes
                .is_none()
        );
        let s =
            settings(&["--workspace-storage-size", "10Gi", "--workspace-storage-class", "fast"]);
        let claim = workspace_claim(&s, &identity()).unwrap();
        let cs = claim.spec.unwrap();
        assert_eq!(cs.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(cs.resources.unwrap().requests.unwrap()["storage"].0, "10Gi");
        let root = RuntimeSpec { working_dir: Some("/".into()), ..spec() };
        assert_eq!(workspace_mount_path(&root), "/workspace");
        assert_eq!(workspace_mount_path(&spec()), "/workspace");
    }

    #[test]
    fn ca_bundle_is_mounted_and_announced() {
        let s = settings(&["--ca-cert-secret", "corp-ca"]);
        let p = pod(&s, &identity(), &spec(), None, 1, "2026-01-01T00:00:00Z");
        let ps = p.spec.unwrap();
        assert_eq!(
            ps.volumes.unwrap()[0].secret.as_ref().unwrap().secret_name.as_deref(),
            Some("corp-ca")
        );
        let c = &ps.containers[0];
        assert_eq!(c.volume_mounts.as_ref().unwrap()[0].mount_path, CA_MOUNT_DIR);
        let env = c.env.as_ref().unwrap();
        assert!(env.iter().any(|e| e.name == "SSL_CERT_FILE"
            && e.value.as_deref() == Some("/etc/runtime-api/ca/ca.crt")));
    }

    /// The original service's names, set alone, reach the objects (see `config::original`).
    #[test]
    fn original_names_reach_the_pod_and_the_ingress() {
        let s = settings(&[
            "--sandbox-ingress-annotations",
            "cert-manager.io/cluster-issuer=letsencrypt,nginx.ingress.kubernetes.io/proxy-body-size=0",
            "--ca-cert-secret-name",
            "corp-ca",
            "--image-pull-secrets",
            "regcred,mirror",
        ]);
        let ing = ingress(&s, &identity()).unwrap();
        let annotations = ing.metadata.annotations.unwrap();
        assert_eq!(annotations["cert-manager.io/cluster-issuer"], "letsencrypt");
        assert_eq!(annotations["nginx.ingress.kubernetes.io/proxy-body-size"], "0");
        let ps = pod(&s, &identity(), &spec(), None, 1, "2026-01-01T00:00:00Z").spec.unwrap();
        let pull: Vec<_> = ps.image_pull_secrets.unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(pull, ["regcred", "mirror"]);
        let secret = ps.volumes.unwrap()[0].secret.clone().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("corp-ca"));
        let item = &secret.items.unwrap()[0];
        assert_eq!((item.key.as_str(), item.path.as_str()), ("ca-certificates.crt", "ca.crt"));
        let s = settings(&["--ca-cert-secret-name", "corp-ca", "--ca-cert-secret-key", "x.pem"]);
        let ps = pod(&s, &identity(), &spec(), None, 1, "2026-01-01T00:00:00Z").spec.unwrap();
        assert_eq!(ps.volumes.unwrap()[0].secret.clone().unwrap().items.unwrap()[0].key, "x.pem");
    }
}
