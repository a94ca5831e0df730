//! Settings, from environment variables (the original service's names and defaults) or the same
//! settings as command-line flags. Validation turns every bad value into one clear line.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::maintenance::FailedAction;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// Each runtime is a local child process running the OpenHands agent server.
    Process,
    /// Each runtime is a set of Kubernetes objects in NAMESPACE.
    Kubernetes,
}

/// How sandbox URLs are routed through the ingress controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoutingMode {
    /// `https://{id}.{BASE_DOMAIN}`, `https://vscode-{id}.{BASE_DOMAIN}`, `work-1-`, `work-2-`.
    Subdomain,
    /// `https://{BASE_DOMAIN}/{id}` with `/vscode`, `/work-1`, `/work-2` below it.
    Path,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// OpenHands Remote Runtime API: isolated, pausable, resumable agent sandboxes.
///
/// Every flag can also be set through the environment variable shown next to it.
#[derive(Debug, Clone, Parser)]
#[command(name = "runtime-api", version, about, long_about = None)]
pub struct Config {
    /// Port of the HTTP API.
    #[arg(long, env = "SERVER_PORT", default_value_t = 8080)]
    pub server_port: u16,

    /// Address the HTTP API binds to (0.0.0.0 inside a container).
    #[arg(long, env = "BIND_ADDRESS", default_value = "127.0.0.1")]
    pub bind_address: IpAddr,

    /// Key every runtime-API call must send in X-API-Key (required).
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Where runtimes live: `process` (local child processes) or `kubernetes`.
    #[arg(long, env = "BACKEND", value_enum, default_value_t = BackendKind::Process)]
    pub backend: BackendKind,

    /// Kubernetes namespace for sandboxes.
    #[arg(long, env = "NAMESPACE", default_value = "openhands")]
    pub namespace: String,

    /// Ingress class of the sandboxes' Ingress objects.
    #[arg(long, env = "INGRESS_CLASS", default_value = "nginx")]
    pub ingress_class: String,

    /// Base domain of sandbox URLs (subdomain routing: https://{id}.{BASE_DOMAIN}).
    #[arg(long, env = "BASE_DOMAIN", default_value = "sandbox.example.com")]
    pub base_domain: String,

    /// Answer of GET /registry_prefix.
    #[arg(long, env = "REGISTRY_PREFIX", default_value = "ghcr.io/openhands")]
    pub registry_prefix: String,

    /// Image used when a start request names none.
    #[arg(long, env = "DEFAULT_IMAGE", default_value = "ghcr.io/openhands/runtime:latest")]
    pub default_image: String,

    /// Agent server port inside a sandbox.
    #[arg(long, env = "AGENT_SERVER_PORT", default_value_t = 60000)]
    pub agent_server_port: u16,

    /// VS Code port inside a sandbox.
    #[arg(long, env = "VSCODE_PORT", default_value_t = 60001)]
    pub vscode_port: u16,

    /// First worker port inside a sandbox.
    #[arg(long, env = "WORKER_1_PORT", default_value_t = 12000)]
    pub worker_1_port: u16,

    /// Second worker port inside a sandbox.
    #[arg(long, env = "WORKER_2_PORT", default_value_t = 12001)]
    pub worker_2_port: u16,

    /// OpenHands app server URL; sandboxes send webhooks to {APP_SERVER_URL}/api/v1/webhooks.
    #[arg(long, env = "APP_SERVER_URL")]
    pub app_server_url: Option<String>,

    /// Public URL of the OpenHands UI, allowed as a CORS origin by sandboxes.
    #[arg(long, env = "APP_SERVER_PUBLIC_URL")]
    pub app_server_public_url: Option<String>,

    /// Kubernetes: `subdomain` or `path` routing of sandbox URLs.
    #[arg(long, env = "ROUTING_MODE", value_enum, default_value_t = RoutingMode::Subdomain)]
    pub routing_mode: RoutingMode,

    /// Kubernetes: scheme of sandbox URLs handed to clients.
    #[arg(long, env = "SANDBOX_URL_SCHEME", default_value = "https")]
    pub sandbox_url_scheme: String,

    /// Kubernetes: TLS Secret (a wildcard certificate) for the sandbox Ingress hosts.
    #[arg(long, env = "INGRESS_TLS_SECRET")]
    pub ingress_tls_secret: Option<String>,

    /// Kubernetes: extra annotations on each sandbox Ingress, as `key=value,key2=value2`.
    #[arg(long, env = "INGRESS_ANNOTATIONS", default_value = "")]
    pub ingress_annotations: String,

    /// Kubernetes: namespace of the ingress controller, the only outside source of sandbox traffic.
    #[arg(long, env = "INGRESS_NAMESPACE", default_value = "ingress-nginx")]
    pub ingress_namespace: String,

    /// Kubernetes: labels of this service's own pods, also admitted to sandboxes.
    #[arg(long, env = "SERVICE_POD_LABELS", default_value = "app.kubernetes.io/name=runtime-api")]
    pub service_pod_labels: String,

    /// Kubernetes: CPU request of a sandbox at resource_factor 1 (scaled by the factor).
    #[arg(long, env = "SANDBOX_CPU_REQUEST", default_value = "1")]
    pub sandbox_cpu_request: String,

    /// Kubernetes: memory request of a sandbox at resource_factor 1.
    #[arg(long, env = "SANDBOX_MEMORY_REQUEST", default_value = "2Gi")]
    pub sandbox_memory_request: String,

    /// Kubernetes: CPU limit of a sandbox at resource_factor 1.
    #[arg(long, env = "SANDBOX_CPU_LIMIT", default_value = "2")]
    pub sandbox_cpu_limit: String,

    /// Kubernetes: memory limit of a sandbox at resource_factor 1.
    #[arg(long, env = "SANDBOX_MEMORY_LIMIT", default_value = "4Gi")]
    pub sandbox_memory_limit: String,

    /// Kubernetes: runtime classes a request may ask for (comma list). A class outside the list is
    /// rejected with 400; when the list is empty, requested classes are ignored (cluster default).
    #[arg(long, env = "RUNTIME_CLASSES", default_value = "")]
    pub runtime_classes: String,

    /// Kubernetes: runtime classes whose sandboxes may escalate privileges (comma list).
    #[arg(long, env = "PRIVILEGED_RUNTIME_CLASSES", default_value = "sysbox-runc")]
    pub privileged_runtime_classes: String,

    /// Kubernetes: imagePullSecrets for sandbox pods (comma list of Secret names).
    #[arg(long, env = "IMAGE_PULL_SECRETS", default_value = "")]
    pub image_pull_secrets: String,

    /// Registries `/image_exists` speaks to over plain HTTP (comma list of host:port), e.g. a
    /// registry on loopback. All others are asked over HTTPS.
    #[arg(long, env = "INSECURE_REGISTRIES", default_value = "")]
    pub insecure_registries: String,

    /// Kubernetes: Secret with a CA bundle under key `ca.crt`, mounted into sandboxes and used
    /// through SSL_CERT_FILE, REQUESTS_CA_BUNDLE and NODE_EXTRA_CA_CERTS.
    #[arg(long, env = "CA_CERT_SECRET")]
    pub ca_cert_secret: Option<String>,

    /// Kubernetes: size of a PersistentVolumeClaim per runtime at its working directory
    /// (e.g. `10Gi`; unset: no volume). Kept across pause/resume, deleted on stop.
    #[arg(long, env = "WORKSPACE_STORAGE_SIZE")]
    pub workspace_storage_size: Option<String>,

    /// Kubernetes: storage class of the workspace claims (unset: the cluster default).
    #[arg(long, env = "WORKSPACE_STORAGE_CLASS")]
    pub workspace_storage_class: Option<String>,

    /// Kubernetes: extra labels on sandbox pods, as `key=value,...`.
    #[arg(long, env = "SANDBOX_POD_LABELS", default_value = "")]
    pub sandbox_pod_labels: String,

    /// Kubernetes: nodeSelector of sandbox pods, as `key=value,...`.
    #[arg(long, env = "SANDBOX_NODE_SELECTOR", default_value = "")]
    pub sandbox_node_selector: String,

    /// Pause running runtimes whose agent server reports being idle longer than this (0: never).
    #[arg(long, env = "RUNTIME_IDLE_SECONDS", default_value_t = 1800)]
    pub runtime_idle_seconds: u64,

    /// Stop runtimes paused for longer than this (0: never). The only rule that removes paused runtimes.
    #[arg(long, env = "RUNTIME_DEAD_SECONDS", default_value_t = 7 * 24 * 3600)]
    pub runtime_dead_seconds: u64,

    /// Act on runtimes in error (crash loop, image pull failure...) for longer than this (0: never).
    #[arg(long, env = "RUNTIME_FAILED_SECONDS", default_value_t = 900)]
    pub runtime_failed_seconds: u64,

    /// What to do with runtimes in error past RUNTIME_FAILED_SECONDS: `pause` or `stop`.
    #[arg(long, env = "RUNTIME_FAILED_ACTION", value_enum, default_value_t = FailedAction::Pause)]
    pub runtime_failed_action: FailedAction,

    /// Seconds between maintenance rounds.
    #[arg(long, env = "MAINTENANCE_INTERVAL_SECONDS", default_value_t = 30)]
    pub maintenance_interval_seconds: u64,

    /// Kubernetes: objects younger than this are never swept as orphans or half-created.
    #[arg(long, env = "ORPHAN_GRACE_SECONDS", default_value_t = 60)]
    pub orphan_grace_seconds: u64,

    /// Kubernetes: name of the Lease that elects the replica running maintenance.
    #[arg(long, env = "LEASE_NAME", default_value = "runtime-api-leader")]
    pub lease_name: String,

    /// Kubernetes: lease duration; a dead leader is replaced within about this long.
    #[arg(long, env = "LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,

    /// This replica's identity in the Lease and in Events (the pod name in a Deployment).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// Process backend: directory for runtime records, working directories and logs
    /// [default: $XDG_STATE_HOME/runtime-api or ~/.local/state/runtime-api].
    #[arg(long, env = "STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Process backend: command starting one agent server, run through /bin/sh. Placeholders:
    /// {port}, {vscode_port}, {worker_1_port}, {worker_2_port}, {runtime_id}, {workdir}.
    #[arg(
        long,
        env = "PROCESS_AGENT_COMMAND",
        default_value = "openhands-agent-server --host 127.0.0.1 --port {port}"
    )]
    pub process_agent_command: String,

    /// Give a resumed runtime a new session key (only for deployments that serve V1 clients alone:
    /// SDK clients keep the first key).
    #[arg(long, env = "ROTATE_SESSION_KEY_ON_RESUME", default_value_t = false)]
    pub rotate_session_key_on_resume: bool,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 30)]
    pub shutdown_timeout_seconds: u64,

    /// Log format: `text` or `json`. Filter with RUST_LOG (default `info`).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// A configuration problem, reported as one line at start-up.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Parses flags and environment; returns a one-line error instead of clap's multi-line one.
    pub fn from_args<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut config = Config::try_parse_from(args)?;
        // An optional setting given as an empty string (common in manifests and charts) is unset.
        for value in [
            &mut config.app_server_url,
            &mut config.app_server_public_url,
            &mut config.ingress_tls_secret,
            &mut config.ca_cert_secret,
            &mut config.workspace_storage_size,
            &mut config.workspace_storage_class,
            &mut config.pod_name,
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                *value = None;
            }
        }
        if config.state_dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            config.state_dir = None;
        }
        Ok(config)
    }

    /// The API key, known to be present after [`Config::validate`].
    pub fn api_key(&self) -> &str {
        self.api_key.as_deref().unwrap_or_default()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.api_key.as_deref() {
            None => {
                return Err(ConfigError(
                    "API_KEY is required (environment variable API_KEY or --api-key)".into(),
                ));
            }
            Some(k) if k.trim().is_empty() => {
                return Err(ConfigError("API_KEY must not be empty".into()));
            }
            Some(_) => {}
        }
        let ports = [
            ("AGENT_SERVER_PORT", self.agent_server_port),
            ("VSCODE_PORT", self.vscode_port),
            ("WORKER_1_PORT", self.worker_1_port),
            ("WORKER_2_PORT", self.worker_2_port),
        ];
        for (i, (name, port)) in ports.iter().enumerate() {
            if *port == 0 {
                return Err(ConfigError(format!("{name} must not be 0")));
            }
            if let Some((other, _)) = ports[..i].iter().find(|(_, p)| p == port) {
                return Err(ConfigError(format!(
                    "{name} and {other} are both {port}; sandbox ports must differ"
                )));
            }
        }
        for (name, value) in [
            ("APP_SERVER_URL", &self.app_server_url),
            ("APP_SERVER_PUBLIC_URL", &self.app_server_public_url),
        ] {
            if let Some(v) = value {
                match url::Url::parse(v) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
                    _ => {
                        return Err(ConfigError(format!(
                            "{name} must be an http(s) URL, got {v:?}"
                        )));
                    }
                }
            }
        }
        if !is_dns_name(&self.base_domain) {
            return Err(ConfigError(format!(
                "BASE_DOMAIN must be a DNS name such as sandbox.example.com, got {:?}",
                self.base_domain
            )));
        }
        if self.backend == BackendKind::Kubernetes && !is_dns_label(&self.namespace) {
            return Err(ConfigError(format!(
                "NAMESPACE {:?} is not a valid namespace name",
                self.namespace
            )));
        }
        if self.process_agent_command.trim().is_empty() {
            return Err(ConfigError("PROCESS_AGENT_COMMAND must not be empty".into()));
        }
        if !self.process_agent_command.contains("{port}") {
            return Err(ConfigError(
                "PROCESS_AGENT_COMMAND must contain {port}, the port the agent server listens on"
                    .into(),
            ));
        }
        if !matches!(self.sandbox_url_scheme.as_str(), "http" | "https") {
            return Err(ConfigError(format!(
                "SANDBOX_URL_SCHEME must be http or https, got {:?}",
                self.sandbox_url_scheme
            )));
        }
        if self.maintenance_interval_seconds == 0 {
            return Err(ConfigError("MAINTENANCE_INTERVAL_SECONDS must be at least 1".into()));
        }
        if self.lease_duration_seconds < 3 {
            return Err(ConfigError("LEASE_DURATION_SECONDS must be at least 3".into()));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError("MAX_BODY_BYTES must be at least 1024".into()));
        }
        Ok(())
    }

    /// This replica's identity: POD_NAME, else the host name with a random suffix.
    pub fn identity(&self) -> String {
        self.pod_name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_else(|_| "runtime-api".into());
            format!("{}-{}", host.trim(), &crate::runtime::ids::new_runtime_id()[..8])
        })
    }

    /// The process backend's state directory, with the XDG default applied.
    pub fn state_dir(&self) -> PathBuf {
        if let Some(dir) = &self.state_dir {
            return dir.clone();
        }
        let base = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(|| PathBuf::from("."));
        base.join("runtime-api")
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_name(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(|l| is_dns_label(&l.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::from_args(std::iter::once("runtime-api").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_match_the_original_service() {
        let c = parse(&["--api-key", "k"]);
        assert_eq!(c.server_port, 8080);
        assert_eq!(c.namespace, "openhands");
        assert_eq!(c.ingress_class, "nginx");
        assert_eq!(c.base_domain, "sandbox.example.com");
        assert_eq!(c.registry_prefix, "ghcr.io/openhands");
        assert_eq!(c.default_image, "ghcr.io/openhands/runtime:latest");
        assert_eq!(
            (c.agent_server_port, c.vscode_port, c.worker_1_port, c.worker_2_port),
            (60000, 60001, 12000, 12001)
        );
        assert_eq!(c.backend, BackendKind::Process);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn missing_api_key_is_one_clear_line() {
        let err = parse(&[]).validate().unwrap_err().to_string();
        assert!(err.contains("API_KEY is required"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn rejects_colliding_ports_and_bad_urls() {
        let c = parse(&["--api-key", "k", "--vscode-port", "60000"]);
        assert!(c.validate().unwrap_err().0.contains("VSCODE_PORT and AGENT_SERVER_PORT"));
        let c = parse(&["--api-key", "k", "--app-server-url", "not a url"]);
        assert!(c.validate().unwrap_err().0.contains("APP_SERVER_URL"));
        let c = parse(&["--api-key", "k", "--base-domain", "bad_domain!"]);
        assert!(c.validate().unwrap_err().0.contains("BASE_DOMAIN"));
    }

    #[test]
    fn empty_optional_settings_are_unset() {
        let c = parse(&["--api-key", "k", "--app-server-url", "", "--ca-cert-secret", " "]);
        assert_eq!((c.app_server_url, c.ca_cert_secret), (None, None));
    }

    #[test]
    fn agent_command_needs_a_port_placeholder() {
        let c = parse(&["--api-key", "k", "--process-agent-command", "agent-server"]);
        assert!(c.validate().unwrap_err().0.contains("{port}"));
    }
}
