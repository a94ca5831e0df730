//! Everything the Kubernetes backend needs to know from the configuration, parsed once.

use std::collections::BTreeMap;

use crate::config::{Config, ConfigError, RoutingMode};
use crate::runtime::env::SandboxPorts;

use super::quantity::{parse_bytes, parse_millicores};

#[derive(Debug, Clone, PartialEq)]
pub struct KubeSettings {
    pub namespace: String,
    pub base_domain: String,
    pub url_scheme: String,
    pub routing: RoutingMode,
    pub ingress_class: String,
    pub ingress_tls_secret: Option<String>,
    pub ingress_annotations: BTreeMap<String, String>,
    pub ports: SandboxPorts,
    pub app_server_url: Option<String>,
    pub app_server_public_url: Option<String>,
    /// Base resources for `resource_factor` 1, in millicores and bytes.
    pub cpu_request_millis: u64,
    pub memory_request_bytes: u64,
    pub cpu_limit_millis: u64,
    pub memory_limit_bytes: u64,
    /// Runtime classes requests may name; empty means "requests cannot choose one".
    pub runtime_classes: Vec<String>,
    /// Runtime classes whose sandboxes may escalate privileges (e.g. sysbox-runc for Docker-in-Docker).
    pub privileged_runtime_classes: Vec<String>,
    pub image_pull_secrets: Vec<String>,
    pub insecure_registries: Vec<String>,
    pub ca_cert_secret: Option<String>,
    pub workspace_storage_size: Option<String>,
    pub workspace_storage_class: Option<String>,
    pub pod_labels: BTreeMap<String, String>,
    pub node_selector: BTreeMap<String, String>,
    /// Namespace of the ingress controller, admitted by each sandbox's NetworkPolicy.
    pub ingress_namespace: String,
    /// Labels of this service's own pods, admitted by each sandbox's NetworkPolicy.
    pub service_pod_labels: BTreeMap<String, String>,
    pub rotate_key_on_resume: bool,
    /// Objects younger than this are never treated as orphans or half-created.
    pub orphan_grace: std::time::Duration,
}

impl KubeSettings {
    pub fn from_config(c: &Config) -> Result<KubeSettings, ConfigError> {
        let bad = |name: &str, e: String| ConfigError(format!("{name}: {e}"));
        Ok(KubeSettings {
            namespace: c.namespace.clone(),
            base_domain: c.base_domain.clone(),
            url_scheme: c.sandbox_url_scheme.clone(),
            routing: c.routing_mode,
            ingress_class: c.ingress_class.clone(),
            ingress_tls_secret: c.ingress_tls_secret.clone().filter(|s| !s.is_empty()),
            ingress_annotations: parse_map(&c.ingress_annotations)
                .map_err(|e| bad("INGRESS_ANNOTATIONS", e))?,
            ports: SandboxPorts {
                agent: c.agent_server_port,
                vscode: c.vscode_port,
                worker_1: c.worker_1_port,
                worker_2: c.worker_2_port,
            },
            app_server_url: c.app_server_url.clone(),
            app_server_public_url: c.app_server_public_url.clone(),
            cpu_request_millis: parse_millicores(&c.sandbox_cpu_request)
                .map_err(|e| bad("SANDBOX_CPU_REQUEST", e))?,
            memory_request_bytes: parse_bytes(&c.sandbox_memory_request)
                .map_err(|e| bad("SANDBOX_MEMORY_REQUEST", e))?,
            cpu_limit_millis: parse_millicores(&c.sandbox_cpu_limit)
                .map_err(|e| bad("SANDBOX_CPU_LIMIT", e))?,
            memory_limit_bytes: parse_bytes(&c.sandbox_memory_limit)
                .map_err(|e| bad("SANDBOX_MEMORY_LIMIT", e))?,
            runtime_classes: parse_list(&c.runtime_classes),
            privileged_runtime_classes: parse_list(&c.privileged_runtime_classes),
            image_pull_secrets: parse_list(&c.image_pull_secrets),
            insecure_registries: parse_list(&c.insecure_registries),
            ca_cert_secret: c.ca_cert_secret.clone().filter(|s| !s.is_empty()),
            workspace_storage_size: c.workspace_storage_size.clone().filter(|s| !s.is_empty()),
            workspace_storage_class: c.workspace_storage_class.clone().filter(|s| !s.is_empty()),
            pod_labels: parse_map(&c.sandbox_pod_labels)
                .map_err(|e| bad("SANDBOX_POD_LABELS", e))?,
            node_selector: parse_map(&c.sandbox_node_selector)
                .map_err(|e| bad("SANDBOX_NODE_SELECTOR", e))?,
            ingress_namespace: c.ingress_namespace.clone(),
            service_pod_labels: parse_map(&c.service_pod_labels)
                .map_err(|e| bad("SERVICE_POD_LABELS", e))?,
            rotate_key_on_resume: c.rotate_session_key_on_resume,
            orphan_grace: std::time::Duration::from_secs(c.orphan_grace_seconds),
        })
    }
}

/// `a,b , c` -> `["a", "b", "c"]`.
pub fn parse_list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// `k=v,k2=v2` -> a map; an entry without `=` is an error.
pub fn parse_map(s: &str) -> Result<BTreeMap<String, String>, String> {
    parse_list(s)
        .into_iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(format!("expected key=value, got {kv:?}")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_maps() {
        assert_eq!(parse_list(" a, ,b "), ["a", "b"]);
        let m = parse_map("x=1, y = two,z=").unwrap();
        assert_eq!(m["x"], "1");
        assert_eq!(m["y"], "two");
        assert_eq!(m["z"], "");
        assert!(parse_map("novalue").is_err());
        assert!(parse_map("").unwrap().is_empty());
    }
}
