//! Everything the Kubernetes backend needs to know from the configuration, in the shape its
//! builders use.

use std::collections::BTreeMap;

use crate::config::parse::Toleration;
use crate::config::{BackendKind, Config, RoutingMode};
use crate::runtime::env::SandboxPorts;
use crate::runtime::urls::UrlStyle;

#[derive(Debug, Clone, PartialEq)]
pub struct KubeSettings {
    pub namespace: String,
    pub base_domain: String,
    pub url_scheme: String,
    pub routing: RoutingMode,
    /// Shape of runtime URLs (routing mode, PROXY_BASE_URL or DIRECT_ROUTING).
    pub url_style: UrlStyle,
    /// DIRECT_ROUTING: per-sandbox Ingress paths `/sandbox/{id}` on BASE_DOMAIN.
    pub direct_routing: bool,
    pub direct_routing_cors_allow_origin: Option<String>,
    pub ingress_class: String,
    /// Sandbox Services get a cluster IP (else headless).
    pub service_cluster_ip: bool,
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
    /// Key of the CA bundle in that Secret.
    pub ca_cert_secret_key: String,
    pub workspace_storage_size: Option<String>,
    pub workspace_storage_class: Option<String>,
    pub pod_labels: BTreeMap<String, String>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    /// Namespace of the ingress controller, admitted by the sandboxes' NetworkPolicy.
    pub ingress_namespace: String,
    /// Labels of this service's own pods, admitted by the sandboxes' NetworkPolicy.
    pub service_pod_labels: BTreeMap<String, String>,
    pub rotate_key_on_resume: bool,
    /// Objects younger than this are never treated as orphans or half-created.
    pub orphan_grace: std::time::Duration,
    /// MAINTENANCE_INTERVAL_SECONDS: an idle replica sweeps every few of these.
    pub maintenance_interval: std::time::Duration,
    /// Longest waits for one API-server write and one uncached read.
    pub timeouts: super::writes::Timeouts,
    /// Warm pools of dormant member pods (empty: every start is cold).
    pub pools: crate::pool::Pools,
}

impl KubeSettings {
    /// The Kubernetes group plus what sandboxes share with the process backend; everything is
    /// already parsed and validated by [`Config::load`].
    pub fn from_config(c: &Config) -> KubeSettings {
        let k = &c.kubernetes;
        KubeSettings {
            namespace: k.namespace.clone(),
            base_domain: k.base_domain.clone(),
            url_scheme: k.sandbox_url_scheme.clone(),
            routing: k.routing_mode,
            url_style: c.url_style_for(BackendKind::Kubernetes),
            direct_routing: c.gateway.direct_routing,
            direct_routing_cors_allow_origin: c.gateway.direct_routing_cors_allow_origin.clone(),
            ingress_class: k.ingress_class.clone(),
            service_cluster_ip: k.sandbox_service_cluster_ip,
            ingress_tls_secret: k.ingress_tls_secret.clone(),
            ingress_annotations: k.ingress_annotations.0.clone(),
            ports: c.sandbox.ports(),
            app_server_url: c.sandbox.app_server_url.clone(),
            app_server_public_url: c.sandbox.app_server_public_url.clone(),
            cpu_request_millis: k.sandbox_cpu_request,
            memory_request_bytes: k.sandbox_memory_request,
            cpu_limit_millis: k.sandbox_cpu_limit,
            memory_limit_bytes: k.sandbox_memory_limit,
            runtime_classes: k.runtime_classes.0.clone(),
            privileged_runtime_classes: k.privileged_runtime_classes.0.clone(),
            image_pull_secrets: k.image_pull_secrets.0.clone(),
            insecure_registries: k.insecure_registries.0.clone(),
            ca_cert_secret: k.ca_cert_secret.clone(),
            ca_cert_secret_key: k.ca_cert_secret_key.clone().unwrap_or_else(|| "ca.crt".into()),
            workspace_storage_size: k.workspace_storage_size.clone(),
            workspace_storage_class: k.workspace_storage_class.clone(),
            pod_labels: k.sandbox_pod_labels.0.clone(),
            node_selector: k.sandbox_node_selector.0.clone(),
            tolerations: k.sandbox_tolerations.0.clone(),
            ingress_namespace: k.ingress_namespace.clone(),
            service_pod_labels: k.service_pod_labels.0.clone(),
            rotate_key_on_resume: c.sandbox.rotate_session_key_on_resume,
            orphan_grace: std::time::Duration::from_secs(k.orphan_grace_seconds),
            maintenance_interval: std::time::Duration::from_secs(
                c.maintenance.maintenance_interval_seconds,
            ),
            timeouts: super::writes::Timeouts {
                operation: k.k8s_operation_timeout,
                query: k.k8s_query_timeout,
            },
            pools: c.pools(),
        }
    }

    /// Whether each sandbox gets its own Ingress (so the sweep expects one): not in gateway mode
    /// (one wildcard route fronts the gateway) nor in service mode (clients use the Service).
    pub fn per_sandbox_ingress(&self) -> bool {
        !matches!(self.routing, RoutingMode::Gateway | RoutingMode::Service)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use clap::Parser;

    use super::*;

    pub(crate) fn settings(mode: &str) -> KubeSettings {
        let args =
            ["runtime-api", "--api-key", "k", "--backend", "kubernetes", "--routing-mode", mode];
        KubeSettings::from_config(&Config::parse_from(args))
    }

    /// A regression: service mode created no Ingress, but the sweep expected one, so it took
    /// every service-mode runtime for half-created.
    #[test]
    fn only_the_ingress_modes_give_each_sandbox_an_ingress() {
        assert!(settings("subdomain").per_sandbox_ingress());
        assert!(settings("path").per_sandbox_ingress());
        assert!(!settings("gateway").per_sandbox_ingress());
        assert!(!settings("service").per_sandbox_ingress());
    }
}
