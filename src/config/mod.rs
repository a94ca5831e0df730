//! Settings, from environment variables (the original service's names and defaults) or the same
//! settings as command-line flags, in groups: HTTP, sandboxes (both backends), Kubernetes, process,
//! maintenance. Parsing is typed (clap, with [`parse`] for lists, maps and quantities); one
//! validation pass then reports every inconsistent setting, one line each. The original Go
//! service's settings are accepted under their own names too ([`original`]).

pub mod original;
pub mod parse;

use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, ValueEnum};

use self::parse::{List, Map, Tolerations};
use crate::maintenance::FailedAction;
use crate::runtime::env::SandboxPorts;
use crate::runtime::urls::UrlStyle;
use crate::telemetry::{LogFormat, LogLevel};

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
    /// `http://oh-rt-{id}.{NAMESPACE}.svc.cluster.local:{port}`: the sandbox's own Service, for
    /// clients in the cluster (OpenHands installed beside the service); no Ingress is created.
    Service,
    /// No per-sandbox Ingress: this service's gateway (GATEWAY_PORT) forwards by the subdomain
    /// hosts above, or by `/{id}` path prefix under GATEWAY_URL, and wakes paused sandboxes.
    Gateway,
}

/// The key clients send in `X-API-Key`: present and not blank, or the service does not start.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn parse(s: &str) -> Result<ApiKey, String> {
        if s.trim().is_empty() {
            return Err("API_KEY must not be empty".into());
        }
        Ok(ApiKey(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// OpenHands Remote Runtime API: isolated, pausable, resumable agent sandboxes.
///
/// Every flag can also be set through the environment variable shown next to it.
#[derive(Debug, Clone, Parser)]
#[command(name = "runtime-api", version, about, long_about = None)]
pub struct Config {
    /// Where runtimes live: `process` (local child processes) or `kubernetes`.
    #[arg(long, env = "BACKEND", value_enum, default_value_t = BackendKind::Process)]
    pub backend: BackendKind,
    #[command(flatten)]
    pub http: HttpConfig,
    #[command(flatten)]
    pub sandbox: SandboxConfig,
    #[command(flatten)]
    pub kubernetes: KubernetesConfig,
    #[command(flatten)]
    pub process: ProcessConfig,
    #[command(flatten)]
    pub maintenance: MaintenanceConfig,
    #[command(flatten)]
    pub original: original::OriginalConfig,
    #[command(flatten)]
    pub gateway: GatewayConfig,
}

/// The HTTP API itself.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "HTTP API")]
pub struct HttpConfig {
    /// Port of the HTTP API.
    #[arg(long, env = "SERVER_PORT", default_value_t = 8080)]
    pub server_port: u16,

    /// Address the HTTP API binds to (0.0.0.0 inside a container).
    #[arg(long, env = "BIND_ADDRESS", default_value = "127.0.0.1")]
    pub bind_address: IpAddr,

    /// Key every runtime-API call must send in X-API-Key (required).
    #[arg(long, env = "API_KEY", hide_env_values = true, value_parser = ApiKey::parse)]
    pub api_key: ApiKey,

    /// Answer of GET /registry_prefix.
    #[arg(long, env = "REGISTRY_PREFIX", default_value = "ghcr.io/openhands")]
    pub registry_prefix: String,

    /// Image used when a start request names none.
    #[arg(long, env = "DEFAULT_IMAGE", default_value = "ghcr.io/openhands/runtime:latest")]
    pub default_image: String,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 30)]
    pub shutdown_timeout_seconds: u64,

    /// Log format: `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log level of this service: `error`, `warn`, `info`, `debug` or `trace` (the original
    /// service's setting). RUST_LOG, when set, takes precedence [default: info].
    #[arg(long, env = "LOG_LEVEL", value_enum, ignore_case = true)]
    pub log_level: Option<LogLevel>,
}

/// What every sandbox gets, whatever the backend.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Sandboxes")]
pub struct SandboxConfig {
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

    /// Give a resumed runtime a new session key (only for deployments that serve V1 clients alone:
    /// SDK clients keep the first key).
    #[arg(long, env = "ROTATE_SESSION_KEY_ON_RESUME", default_value_t = false)]
    pub rotate_session_key_on_resume: bool,

    /// Dormant agent servers kept ready for requests shaped like the SDK's with DEFAULT_IMAGE
    /// (its command, working directory `/`, user and file group 10001, factor 1); 0: no pool.
    #[arg(long, env = "WARM_POOL_SIZE", default_value_t = 0)]
    pub warm_pool_size: usize,

    /// More warm pools, separated by `;`: `size=N,image=IMAGE` plus optional `name=`, `factor=`,
    /// `class=`, `user=`, `group=`, `fs_group=`, `workdir=` (`none` clears one) and last
    /// `command=` (the rest of the entry); omitted keys keep the SDK's values.
    #[arg(long, env = "WARM_POOLS", default_value = "", value_parser = crate::pool::parse_pool_list)]
    pub warm_pools: crate::pool::PoolList,
}

impl SandboxConfig {
    pub fn ports(&self) -> SandboxPorts {
        SandboxPorts {
            agent: self.agent_server_port,
            vscode: self.vscode_port,
            worker_1: self.worker_1_port,
            worker_2: self.worker_2_port,
        }
    }
}

/// The Kubernetes backend.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Kubernetes backend")]
pub struct KubernetesConfig {
    /// Kubernetes namespace for sandboxes.
    #[arg(long, env = "NAMESPACE", default_value = "openhands")]
    pub namespace: String,

    /// Ingress class of the sandboxes' Ingress objects.
    #[arg(long, env = "INGRESS_CLASS", default_value = "nginx")]
    pub ingress_class: String,

    /// Base domain of sandbox URLs (subdomain routing: https://{id}.{BASE_DOMAIN}).
    #[arg(long, env = "BASE_DOMAIN", default_value = "sandbox.example.com")]
    pub base_domain: String,

    /// `subdomain`, `path` (both through per-sandbox Ingresses), `gateway` (this service), or
    /// `service`: in-cluster Service URLs and no Ingress.
    #[arg(long, env = "ROUTING_MODE", value_enum, default_value_t = RoutingMode::Subdomain)]
    pub routing_mode: RoutingMode,

    /// Give each sandbox's Service a cluster IP. By default the Services are headless: their names
    /// resolve to the pod (every port is the pod's own), with no IP to allocate per start (the API
    /// server's allocator walks every allocated IP on each one) and no kube-proxy rules per sandbox
    /// on every node. Set it for an ingress controller that needs cluster IPs.
    #[arg(long, env = "SANDBOX_SERVICE_CLUSTER_IP", default_value_t = false)]
    pub sandbox_service_cluster_ip: bool,

    /// Scheme of sandbox URLs handed to clients.
    #[arg(long, env = "SANDBOX_URL_SCHEME", default_value = "https")]
    pub sandbox_url_scheme: String,

    /// TLS Secret (a wildcard certificate) for the sandbox Ingress hosts.
    #[arg(long, env = "INGRESS_TLS_SECRET")]
    pub ingress_tls_secret: Option<String>,

    /// Extra annotations on each sandbox Ingress, as `key=value,key2=value2`.
    #[arg(long, env = "INGRESS_ANNOTATIONS", default_value = "", value_parser = parse::map)]
    pub ingress_annotations: Map,

    /// Namespace of the ingress controller, the only outside source of sandbox traffic.
    #[arg(long, env = "INGRESS_NAMESPACE", default_value = "ingress-nginx")]
    pub ingress_namespace: String,

    /// Labels of this service's own pods, also admitted to sandboxes.
    #[arg(
        long,
        env = "SERVICE_POD_LABELS",
        default_value = "app.kubernetes.io/name=runtime-api",
        value_parser = parse::map
    )]
    pub service_pod_labels: Map,

    /// CPU request of a sandbox at resource_factor 1 (scaled by the factor); kept in millicores.
    #[arg(long, env = "SANDBOX_CPU_REQUEST", default_value = "1", value_parser = parse::millicores)]
    pub sandbox_cpu_request: u64,

    /// Memory request of a sandbox at resource_factor 1; kept in bytes.
    #[arg(long, env = "SANDBOX_MEMORY_REQUEST", default_value = "2Gi", value_parser = parse::bytes)]
    pub sandbox_memory_request: u64,

    /// CPU limit of a sandbox at resource_factor 1; kept in millicores.
    #[arg(long, env = "SANDBOX_CPU_LIMIT", default_value = "2", value_parser = parse::millicores)]
    pub sandbox_cpu_limit: u64,

    /// Memory limit of a sandbox at resource_factor 1; kept in bytes.
    #[arg(long, env = "SANDBOX_MEMORY_LIMIT", default_value = "4Gi", value_parser = parse::bytes)]
    pub sandbox_memory_limit: u64,

    /// Runtime classes a request may ask for (comma list). A class outside the list is rejected
    /// with 400; when the list is empty, requested classes are ignored (cluster default).
    #[arg(long, env = "RUNTIME_CLASSES", default_value = "", value_parser = parse::list)]
    pub runtime_classes: List,

    /// Runtime classes whose sandboxes may escalate privileges (comma list).
    #[arg(
        long,
        env = "PRIVILEGED_RUNTIME_CLASSES",
        default_value = "sysbox-runc",
        value_parser = parse::list
    )]
    pub privileged_runtime_classes: List,

    /// imagePullSecrets for sandbox pods (comma list of Secret names).
    #[arg(long, env = "IMAGE_PULL_SECRETS", default_value = "", value_parser = parse::list)]
    pub image_pull_secrets: List,

    /// Registries `/image_exists` speaks to over plain HTTP (comma list of host:port), e.g. a
    /// registry on loopback. All others are asked over HTTPS.
    #[arg(long, env = "INSECURE_REGISTRIES", default_value = "", value_parser = parse::list)]
    pub insecure_registries: List,

    /// Secret with a CA bundle (under CA_CERT_SECRET_KEY), mounted into sandboxes and used
    /// through SSL_CERT_FILE, REQUESTS_CA_BUNDLE and NODE_EXTRA_CA_CERTS.
    #[arg(long, env = "CA_CERT_SECRET")]
    pub ca_cert_secret: Option<String>,

    /// Key of the CA bundle in that Secret [default: `ca.crt`; `ca-certificates.crt`, the
    /// original service's default, when the Secret is named by CA_CERT_SECRET_NAME].
    #[arg(long, env = "CA_CERT_SECRET_KEY")]
    pub ca_cert_secret_key: Option<String>,

    /// Longest wait for one Kubernetes write (create, patch, delete), as a Go duration.
    #[arg(long, env = "K8S_OPERATION_TIMEOUT", default_value = "60s", value_parser = parse::go_duration)]
    pub k8s_operation_timeout: Duration,

    /// Longest wait for one Kubernetes read that the watch-fed cache cannot answer (get, list),
    /// as a Go duration.
    #[arg(long, env = "K8S_QUERY_TIMEOUT", default_value = "10s", value_parser = parse::go_duration)]
    pub k8s_query_timeout: Duration,

    /// Size of a PersistentVolumeClaim per runtime at its working directory (e.g. `10Gi`;
    /// unset: no volume). Kept across pause/resume, deleted on stop.
    #[arg(long, env = "WORKSPACE_STORAGE_SIZE")]
    pub workspace_storage_size: Option<String>,

    /// Storage class of the workspace claims (unset: the cluster default).
    #[arg(long, env = "WORKSPACE_STORAGE_CLASS")]
    pub workspace_storage_class: Option<String>,

    /// Extra labels on sandbox pods, as `key=value,...`.
    #[arg(long, env = "SANDBOX_POD_LABELS", default_value = "", value_parser = parse::map)]
    pub sandbox_pod_labels: Map,

    /// nodeSelector of sandbox pods, as `key=value,...`.
    #[arg(long, env = "SANDBOX_NODE_SELECTOR", default_value = "", value_parser = parse::map)]
    pub sandbox_node_selector: Map,

    /// Tolerations of sandbox pods, as kubectl writes taints: `key[=value][:Effect],...`
    /// (`Equal` with a value, `Exists` without; no effect: every effect), e.g. for a node pool
    /// tainted for sandboxes.
    #[arg(long, env = "SANDBOX_TOLERATIONS", default_value = "", value_parser = parse::tolerations)]
    pub sandbox_tolerations: Tolerations,

    /// Objects younger than this are never swept as orphans or half-created.
    #[arg(long, env = "ORPHAN_GRACE_SECONDS", default_value_t = 60)]
    pub orphan_grace_seconds: u64,
}

/// The process backend.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Process backend")]
pub struct ProcessConfig {
    /// Directory for runtime records, working directories and logs
    /// [default: $XDG_STATE_HOME/runtime-api or ~/.local/state/runtime-api].
    #[arg(long, env = "STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Command starting one agent server, run through /bin/sh. Placeholders:
    /// {port}, {vscode_port}, {worker_1_port}, {worker_2_port}, {runtime_id}, {workdir}.
    #[arg(
        long,
        env = "PROCESS_AGENT_COMMAND",
        default_value = "openhands-agent-server --host 127.0.0.1 --port {port}"
    )]
    pub process_agent_command: String,
}

impl ProcessConfig {
    /// The state directory, with the XDG default applied.
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

/// Background work and the election of the replica that runs it.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Maintenance")]
pub struct MaintenanceConfig {
    /// Pause running runtimes whose agent server reports being idle longer than this (0: never).
    #[arg(long, env = "RUNTIME_IDLE_SECONDS", default_value_t = 1800)]
    pub runtime_idle_seconds: u64,

    /// Stop runtimes paused for longer than this (0: never). The only rule that removes paused
    /// runtimes.
    #[arg(long, env = "RUNTIME_DEAD_SECONDS", default_value_t = 7 * 24 * 3600)]
    pub runtime_dead_seconds: u64,

    /// Act on runtimes in error (crash loop, image pull failure...) for longer than this
    /// (0: never).
    #[arg(long, env = "RUNTIME_FAILED_SECONDS", default_value_t = 900)]
    pub runtime_failed_seconds: u64,

    /// What to do with runtimes in error past RUNTIME_FAILED_SECONDS: `pause` or `stop`.
    #[arg(long, env = "RUNTIME_FAILED_ACTION", value_enum, default_value_t = FailedAction::Pause)]
    pub runtime_failed_action: FailedAction,

    /// Seconds between maintenance rounds.
    #[arg(long, env = "MAINTENANCE_INTERVAL_SECONDS", default_value_t = 30)]
    pub maintenance_interval_seconds: u64,

    /// Kubernetes: name of the Lease that elects the replica running maintenance.
    #[arg(long, env = "LEASE_NAME", default_value = "runtime-api-leader")]
    pub lease_name: String,

    /// Kubernetes: lease duration; a dead leader is replaced within about this long.
    #[arg(long, env = "LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,

    /// This replica's identity in the Lease and in Events (the pod name in a Deployment).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
}

impl MaintenanceConfig {
    /// This replica's identity: POD_NAME, else the host name with a random suffix.
    pub fn identity(&self) -> String {
        self.pod_name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_else(|_| "runtime-api".into());
            format!("{}-{}", host.trim(), &crate::runtime::ids::new_runtime_id()[..8])
        })
    }
}

/// The sandbox gateway (ROUTING_MODE=gateway) and the original service's proxy settings.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Gateway")]
pub struct GatewayConfig {
    /// Port of the sandbox gateway (ROUTING_MODE=gateway), on BIND_ADDRESS.
    #[arg(long, env = "GATEWAY_PORT", default_value_t = 8081)]
    pub gateway_port: u16,

    /// Public URL of the gateway. `http(s)://*.domain[:port]`: runtime URLs are
    /// `http(s)://{runtime_id}.domain[:port]` (a wildcard DNS name). `http(s)://host[:port]`: they
    /// are `{GATEWAY_URL}/{runtime_id}`. Unset: `{SANDBOX_URL_SCHEME}://{runtime_id}.{BASE_DOMAIN}`.
    #[arg(long, env = "GATEWAY_URL")]
    pub gateway_url: Option<String>,

    /// How long a request to a paused sandbox waits for it to wake before a 503.
    #[arg(long, env = "GATEWAY_WAKE_TIMEOUT_SECONDS", default_value_t = 120)]
    pub gateway_wake_timeout_seconds: u64,

    /// How long the gateway waits for a sandbox's response head before a 504.
    #[arg(long, env = "GATEWAY_UPSTREAM_TIMEOUT_SECONDS", default_value_t = 300)]
    pub gateway_upstream_timeout_seconds: u64,

    /// Concurrent requests and WebSockets per sandbox through the gateway (429 beyond).
    #[arg(long, env = "GATEWAY_MAX_CONNECTIONS_PER_RUNTIME", default_value_t = 256)]
    pub gateway_max_connections_per_runtime: u32,

    /// Shortest time between two writes of a sandbox's last activity to its record.
    #[arg(long, env = "GATEWAY_ACTIVITY_INTERVAL_SECONDS", default_value_t = 60)]
    pub gateway_activity_interval_seconds: u64,

    /// The original service's proxy: runtime URLs become `{PROXY_BASE_URL}/sandbox/{runtime_id}`
    /// and the API port forwards `/sandbox/{runtime_id}/...` to the sandbox.
    #[arg(long, env = "PROXY_BASE_URL")]
    pub proxy_base_url: Option<String>,

    /// Kubernetes: per-sandbox Ingress paths `/sandbox/{runtime_id}/...` on BASE_DOMAIN straight
    /// to the pod (the original service's direct routing); URLs under https://{BASE_DOMAIN}/sandbox.
    #[arg(long, env = "DIRECT_ROUTING", default_value_t = false)]
    pub direct_routing: bool,

    /// CORS origin allowed by the direct-routing Ingresses (ingress-nginx annotations).
    #[arg(long, env = "DIRECT_ROUTING_CORS_ALLOW_ORIGIN")]
    pub direct_routing_cors_allow_origin: Option<String>,
}

impl GatewayConfig {
    /// A wildcard GATEWAY_URL (`http://*.localhost:8081`) as its scheme and what follows `*.`.
    pub fn wildcard(&self) -> Option<(&str, &str)> {
        let url = self.gateway_url.as_deref()?;
        let (scheme, rest) = url.split_once("://")?;
        Some((scheme, rest.strip_prefix("*.")?.trim_end_matches('/')))
    }

    /// The domain whose subdomains name runtimes at the gateway: a wildcard GATEWAY_URL's (without
    /// its port), else BASE_DOMAIN.
    pub fn routing_domain(&self, base_domain: &str) -> String {
        match self.wildcard() {
            Some((_, authority)) => {
                authority.rsplit_once(':').map_or(authority, |(host, _)| host).to_string()
            }
            None => base_domain.to_string(),
        }
    }

    /// Whether the gateway listener runs.
    pub fn enabled(&self, routing: RoutingMode) -> bool {
        routing == RoutingMode::Gateway
    }

    fn problems(
        &self,
        routing: RoutingMode,
        backend: BackendKind,
        server_port: u16,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for (name, value) in
            [("GATEWAY_URL", &self.gateway_url), ("PROXY_BASE_URL", &self.proxy_base_url)]
        {
            if let Some(v) = value {
                // A wildcard host is checked as one of the names it stands for.
                match url::Url::parse(&v.replacen("://*.", "://x.", 1)) {
                    Ok(u)
                        if matches!(u.scheme(), "http" | "https")
                            && u.has_host()
                            && u.query().is_none()
                            && (!v.contains("://*.") || u.path() == "/") => {}
                    _ => out.push(format!("{name} must be an http(s) URL, got {v:?}")),
                }
            }
        }
        if self.enabled(routing) {
            if self.gateway_port == 0 || self.gateway_port == server_port {
                out.push(format!(
                    "GATEWAY_PORT must be a port other than SERVER_PORT ({server_port})"
                ));
            }
            if self.gateway_max_connections_per_runtime == 0 {
                out.push("GATEWAY_MAX_CONNECTIONS_PER_RUNTIME must be at least 1".into());
            }
            if self.gateway_wake_timeout_seconds == 0 || self.gateway_upstream_timeout_seconds == 0
            {
                out.push(
                    "GATEWAY_WAKE_TIMEOUT_SECONDS and GATEWAY_UPSTREAM_TIMEOUT_SECONDS must be at least 1"
                        .into(),
                );
            }
        }
        if self.direct_routing && backend != BackendKind::Kubernetes {
            out.push("DIRECT_ROUTING needs BACKEND=kubernetes".into());
        }
        if self.direct_routing && routing == RoutingMode::Gateway {
            out.push("DIRECT_ROUTING and ROUTING_MODE=gateway exclude each other".into());
        }
        out
    }
}

impl Config {
    /// The warm pools: `WARM_POOL_SIZE` of the SDK shape of `DEFAULT_IMAGE`, then `WARM_POOLS`.
    pub fn pools(&self) -> crate::pool::Pools {
        crate::pool::Pools::new(
            self.sandbox.warm_pool_size,
            &self.http.default_image,
            &self.sandbox.warm_pools.0,
        )
    }

    /// The shape of runtime URLs: DIRECT_ROUTING, else PROXY_BASE_URL, else the routing mode
    /// (the process backend hands out its own loopback addresses unless a gateway fronts it).
    pub fn url_style(&self) -> UrlStyle {
        self.url_style_for(self.backend)
    }

    /// [`Config::url_style`] as `backend` would have it.
    pub fn url_style_for(&self, backend: BackendKind) -> UrlStyle {
        let (g, k) = (&self.gateway, &self.kubernetes);
        let kube = backend == BackendKind::Kubernetes;
        let subdomain = || UrlStyle::Subdomain {
            scheme: k.sandbox_url_scheme.clone(),
            base_domain: k.base_domain.clone(),
        };
        if g.direct_routing {
            return UrlStyle::Sandbox {
                base: format!("{}://{}", k.sandbox_url_scheme, k.base_domain),
            };
        }
        if let Some(base) = &g.proxy_base_url {
            return UrlStyle::Sandbox { base: base.clone() };
        }
        match k.routing_mode {
            RoutingMode::Gateway => match (g.wildcard(), &g.gateway_url) {
                (Some((scheme, authority)), _) => UrlStyle::Subdomain {
                    scheme: scheme.to_string(),
                    base_domain: authority.to_string(),
                },
                (None, Some(base)) => UrlStyle::Prefix { base: base.clone() },
                (None, None) => subdomain(),
            },
            _ if !kube => UrlStyle::Direct,
            RoutingMode::Subdomain => subdomain(),
            RoutingMode::Path => {
                UrlStyle::Prefix { base: format!("{}://{}", k.sandbox_url_scheme, k.base_domain) }
            }
            RoutingMode::Service => UrlStyle::ClusterService { namespace: k.namespace.clone() },
        }
    }
}

/// Why the configuration was refused: help or version asked for (clap prints and exits), or one
/// line per bad setting.
#[derive(Debug)]
pub enum LoadError {
    Display(clap::Error),
    Invalid(Vec<String>),
}

impl Config {
    /// Parses flags and environment, then validates: the one way to get a [`Config`] at start-up.
    /// Also returns the warnings to print (original settings that are ignored here).
    pub fn load<I, T>(args: I) -> Result<(Config, Vec<String>), LoadError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let (config, warnings) = Config::with_warnings(args).map_err(|e| match e.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => LoadError::Display(e),
            _ => LoadError::Invalid(vec![clap_line(&e)]),
        })?;
        let problems = config.problems();
        if problems.is_empty() { Ok((config, warnings)) } else { Err(LoadError::Invalid(problems)) }
    }

    /// Parses flags and environment (no validation beyond the types), with the original
    /// service's names applied where ours are not set.
    pub fn from_args<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Ok(Config::with_warnings(args)?.0)
    }

    /// [`Config::from_args`], plus one warning line per original setting that is ignored here.
    pub fn with_warnings<I, T>(args: I) -> Result<(Config, Vec<String>), clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = Config::command().try_get_matches_from(args)?;
        let mut config = Config::from_arg_matches(&matches)?;
        // An optional setting given as an empty string (common in manifests and charts) is unset.
        let k = &mut config.kubernetes;
        for value in [
            &mut config.sandbox.app_server_url,
            &mut config.sandbox.app_server_public_url,
            &mut k.ingress_tls_secret,
            &mut k.ca_cert_secret,
            &mut k.ca_cert_secret_key,
            &mut config.original.ca_cert_secret_name,
            &mut config.original.dd_agent_host,
            &mut k.workspace_storage_size,
            &mut k.workspace_storage_class,
            &mut config.maintenance.pod_name,
            &mut config.gateway.gateway_url,
            &mut config.gateway.proxy_base_url,
            &mut config.gateway.direct_routing_cors_allow_origin,
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                *value = None;
            }
        }
        if config.process.state_dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            config.process.state_dir = None;
        }
        // Ours is set when it did not come from its default.
        let ours_set = |id: &str| {
            matches.value_source(id).is_some_and(|source| source != ValueSource::DefaultValue)
        };
        let warnings = config.apply_original_names(ours_set);
        Ok((config, warnings))
    }

    /// Every inconsistent setting, one line each (empty: the configuration is usable).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut bad = |line: String| out.push(format!("invalid configuration: {line}"));
        let ports = [
            ("AGENT_SERVER_PORT", self.sandbox.agent_server_port),
            ("VSCODE_PORT", self.sandbox.vscode_port),
            ("WORKER_1_PORT", self.sandbox.worker_1_port),
            ("WORKER_2_PORT", self.sandbox.worker_2_port),
        ];
        for (i, (name, port)) in ports.iter().enumerate() {
            if *port == 0 {
                bad(format!("{name} must not be 0"));
            } else if let Some((other, _)) = ports[..i].iter().find(|(_, p)| p == port) {
                bad(format!("{name} and {other} are both {port}; sandbox ports must differ"));
            }
        }
        for (name, value) in [
            ("APP_SERVER_URL", &self.sandbox.app_server_url),
            ("APP_SERVER_PUBLIC_URL", &self.sandbox.app_server_public_url),
        ] {
            if let Some(v) = value {
                match url::Url::parse(v) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
                    _ => bad(format!("{name} must be an http(s) URL, got {v:?}")),
                }
            }
        }
        let k = &self.kubernetes;
        if !is_dns_name(&k.base_domain) {
            bad(format!(
                "BASE_DOMAIN must be a DNS name such as sandbox.example.com, got {:?}",
                k.base_domain
            ));
        }
        if self.backend == BackendKind::Kubernetes && !is_dns_label(&k.namespace) {
            bad(format!("NAMESPACE {:?} is not a valid namespace name", k.namespace));
        }
        let command = &self.process.process_agent_command;
        if command.trim().is_empty() {
            bad("PROCESS_AGENT_COMMAND must not be empty".into());
        } else if !command.contains("{port}") {
            bad("PROCESS_AGENT_COMMAND must contain {port}, the port the agent server listens on"
                .into());
        }
        if !matches!(k.sandbox_url_scheme.as_str(), "http" | "https") {
            bad(format!(
                "SANDBOX_URL_SCHEME must be http or https, got {:?}",
                k.sandbox_url_scheme
            ));
        }
        if self.maintenance.maintenance_interval_seconds == 0 {
            bad("MAINTENANCE_INTERVAL_SECONDS must be at least 1".into());
        }
        if self.maintenance.lease_duration_seconds < 3 {
            bad("LEASE_DURATION_SECONDS must be at least 3".into());
        }
        if self.http.max_body_bytes < 1024 {
            bad("MAX_BODY_BYTES must be at least 1024".into());
        }
        for (name, timeout) in [
            ("K8S_OPERATION_TIMEOUT", k.k8s_operation_timeout),
            ("K8S_QUERY_TIMEOUT", k.k8s_query_timeout),
        ] {
            if timeout < Duration::from_secs(1) {
                bad(format!("{name} must be at least 1s"));
            }
        }
        for line in self.gateway.problems(k.routing_mode, self.backend, self.http.server_port) {
            bad(line);
        }
        // A pool of a runtime class the allowlist refuses would never get a member: refused
        // here rather than failing every refill round.
        if self.backend == BackendKind::Kubernetes && !k.runtime_classes.0.is_empty() {
            for pool in &self.pools().0 {
                if let Some(class) = &pool.shape.runtime_class {
                    if !k.runtime_classes.0.contains(class) {
                        bad(format!(
                            "WARM_POOLS pool {:?}: runtime class {class:?} is not in RUNTIME_CLASSES",
                            pool.name
                        ));
                    }
                }
            }
        }
        out
    }
}

/// A clap error as one line. A missing required setting names its variable, as operators set
/// them through the environment.
fn clap_line(e: &clap::Error) -> String {
    if e.kind() == ErrorKind::MissingRequiredArgument {
        if let Some(ContextValue::Strings(args)) = e.get(ContextKind::InvalidArg) {
            let names: Vec<String> = args
                .iter()
                .map(|arg| {
                    // `--api-key <API_KEY>`: the value name is the variable's name.
                    let (flag, var) = arg.split_once(' ').unwrap_or((arg, arg));
                    let var = var.trim_matches(|c| c == '<' || c == '>');
                    format!("{var} is required (environment variable {var} or {flag})")
                })
                .collect();
            return format!("invalid configuration: {}", names.join("; "));
        }
    }
    let rendered = e.render().to_string();
    rendered.lines().next().unwrap_or("invalid arguments").to_string()
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

    fn load(args: &[&str]) -> Result<Config, Vec<String>> {
        Config::load(std::iter::once("runtime-api").chain(args.iter().copied()))
            .map(|(config, _)| config)
            .map_err(|e| match e {
                LoadError::Invalid(lines) => lines,
                LoadError::Display(e) => panic!("{e}"),
            })
    }

    #[test]
    fn defaults_match_the_original_service() {
        let c = parse(&["--api-key", "k"]);
        assert_eq!(c.http.server_port, 8080);
        assert_eq!(c.kubernetes.namespace, "openhands");
        assert_eq!(c.kubernetes.ingress_class, "nginx");
        assert_eq!(c.kubernetes.base_domain, "sandbox.example.com");
        assert_eq!(c.http.registry_prefix, "ghcr.io/openhands");
        assert_eq!(c.http.default_image, "ghcr.io/openhands/runtime:latest");
        let ports = c.sandbox.ports();
        assert_eq!(
            (ports.agent, ports.vscode, ports.worker_1, ports.worker_2),
            (60000, 60001, 12000, 12001)
        );
        assert_eq!(c.backend, BackendKind::Process);
        assert_eq!(c.kubernetes.sandbox_cpu_request, 1000);
        assert_eq!(c.kubernetes.sandbox_memory_limit, 4 << 30);
        assert_eq!(c.kubernetes.privileged_runtime_classes.0, ["sysbox-runc"]);
        assert_eq!(c.kubernetes.service_pod_labels.0["app.kubernetes.io/name"], "runtime-api");
        assert!(c.problems().is_empty());
    }

    #[test]
    fn a_missing_api_key_is_one_line_naming_the_variable() {
        let lines = load(&[]).unwrap_err();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("API_KEY is required"), "{lines:?}");
        assert!(load(&["--api-key", " "]).unwrap_err()[0].contains("API_KEY must not be empty"));
        assert_eq!(
            format!("{:?}", parse(&["--api-key", "secret"]).http.api_key),
            "ApiKey(<redacted>)"
        );
    }

    #[test]
    fn malformed_quantities_maps_and_lists_are_refused_at_parse_time() {
        let line = load(&["--api-key", "k", "--sandbox-cpu-request", "lots"]).unwrap_err();
        assert!(
            line[0].contains("SANDBOX_CPU_REQUEST") && line[0].contains("invalid CPU"),
            "{line:?}"
        );
        let line = load(&["--api-key", "k", "--sandbox-node-selector", "novalue"]).unwrap_err();
        assert!(line[0].contains("SANDBOX_NODE_SELECTOR"), "{line:?}");
        let c = parse(&[
            "--api-key",
            "k",
            "--runtime-classes",
            "gvisor, kata,",
            "--sandbox-memory-request",
            "512Mi",
        ]);
        assert_eq!(c.kubernetes.runtime_classes.0, ["gvisor", "kata"]);
        assert_eq!(c.kubernetes.sandbox_memory_request, 512 << 20);
    }

    #[test]
    fn every_inconsistent_setting_is_one_line() {
        let lines = load(&[
            "--api-key",
            "k",
            "--vscode-port",
            "60000",
            "--app-server-url",
            "not a url",
            "--base-domain",
            "bad_domain!",
            "--maintenance-interval-seconds",
            "0",
        ])
        .unwrap_err();
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert!(lines[0].contains("VSCODE_PORT and AGENT_SERVER_PORT"));
        assert!(lines[1].contains("APP_SERVER_URL"));
        assert!(lines[2].contains("BASE_DOMAIN"));
        assert!(lines[3].contains("MAINTENANCE_INTERVAL_SECONDS"));
        assert!(lines.iter().all(|l| !l.contains('\n')));
    }

    #[test]
    fn empty_optional_settings_are_unset() {
        let c = parse(&["--api-key", "k", "--app-server-url", "", "--ca-cert-secret", " "]);
        assert_eq!((c.sandbox.app_server_url, c.kubernetes.ca_cert_secret), (None, None));
    }

    #[test]
    fn kubernetes_timeouts_are_at_least_a_second() {
        let lines = load(&["--api-key", "k", "--k8s-query-timeout", "500ms"]).unwrap_err();
        assert_eq!(lines, ["invalid configuration: K8S_QUERY_TIMEOUT must be at least 1s"]);
    }

    #[test]
    fn gateway_urls_by_path_by_wildcard_host_or_by_base_domain() {
        let style = |extra: &[&str]| {
            let mut args = vec!["--api-key", "k", "--routing-mode", "gateway"];
            args.extend_from_slice(extra);
            let c = load(&args).unwrap();
            (c.url_style(), c.gateway.routing_domain(&c.kubernetes.base_domain))
        };
        assert_eq!(
            style(&["--gateway-url", "http://*.localhost:8081"]),
            (
                UrlStyle::Subdomain { scheme: "http".into(), base_domain: "localhost:8081".into() },
                "localhost".into()
            )
        );
        assert_eq!(
            style(&["--gateway-url", "http://127.0.0.1:8081"]).0,
            UrlStyle::Prefix { base: "http://127.0.0.1:8081".into() }
        );
        assert_eq!(
            style(&["--base-domain", "sb.example.com"]),
            (
                UrlStyle::Subdomain {
                    scheme: "https".into(),
                    base_domain: "sb.example.com".into()
                },
                "sb.example.com".into()
            )
        );
        let lines = load(&[
            "--api-key",
            "k",
            "--routing-mode",
            "gateway",
            "--gateway-url",
            "http://*.localhost/x",
            "--gateway-port",
            "8080",
            "--direct-routing",
        ])
        .unwrap_err();
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert!(lines[0].contains("GATEWAY_URL"), "{lines:?}");
        assert!(lines[1].contains("GATEWAY_PORT"), "{lines:?}");
        assert!(lines[2].contains("DIRECT_ROUTING needs BACKEND=kubernetes"), "{lines:?}");
    }

    #[test]
    fn warm_pools_are_accepted_on_both_backends() {
        for backend in ["kubernetes", "process"] {
            let config =
                load(&["--api-key", "k", "--backend", backend, "--warm-pool-size", "2"]).unwrap();
            assert_eq!(config.pools().0.len(), 1, "{backend}");
        }
        let pools = "size=1,image=ghcr.io/a/b:1,class=gvisor";
        let args = ["--api-key", "k", "--backend", "kubernetes", "--warm-pools", pools];
        assert!(load(&args).is_ok(), "no allowlist: the cluster default class applies");
        let lines = load(&[&args[..], &["--runtime-classes", "kata"]].concat()).unwrap_err();
        assert!(lines[0].contains("not in RUNTIME_CLASSES"), "{lines:?}");
        assert!(load(&[&args[..], &["--runtime-classes", "gvisor"]].concat()).is_ok());
    }

    #[test]
    fn agent_command_needs_a_port_placeholder() {
        let lines =
            load(&["--api-key", "k", "--process-agent-command", "agent-server"]).unwrap_err();
        assert!(lines[0].contains("{port}"), "{lines:?}");
    }
}
