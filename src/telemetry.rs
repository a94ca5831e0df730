//! Logs and metrics: tracing set-up (text or JSON) and the Prometheus registry behind `/metrics`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::runtime::Status;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global tracing subscriber. `RUST_LOG` filters; the default is `info`.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: String,
    pub outcome: String,
}

/// Every metric the service exports; cheap to clone (all handles are `Arc`s inside).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram>,
    pub runtimes: Family<StatusLabels, Gauge>,
    pub operations: Family<OperationLabels, Counter>,
    pub start_duration: Histogram,
    pub start_to_running: Histogram,
    pub maintenance: Family<OperationLabels, Counter>,
    pub leader: Gauge,
    pub cache_objects: Family<KindLabels, Gauge>,
    pub kube_requests: Family<KubeLabels, Counter>,
    pub gateway: GatewayMetrics,
}

/// The sandbox gateway's metrics.
#[derive(Clone)]
pub struct GatewayMetrics {
    /// Forwarded (or refused) requests by sandbox port and status code.
    pub requests: Family<GatewayLabels, Counter>,
    /// Body bytes by direction: `request` (to sandboxes) or `response` (from them).
    pub bytes: Family<DirectionLabels, Counter>,
    /// Time from forwarding a request to the sandbox's response head.
    pub upstream_latency: Histogram,
    /// Wakes of paused sandboxes by outcome, and their duration until the agent answered.
    pub wakes: Family<OutcomeLabels, Counter>,
    pub wake_duration: Histogram,
    pub open_websockets: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GatewayLabels {
    pub port: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

impl GatewayMetrics {
    fn register(registry: &mut Registry) -> GatewayMetrics {
        let m = GatewayMetrics {
            requests: Family::default(),
            bytes: Family::default(),
            upstream_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 18)),
            wakes: Family::default(),
            wake_duration: Histogram::new(exponential_buckets(0.05, 2.0, 14)),
            open_websockets: Gauge::default(),
        };
        registry.register(
            "gateway_requests",
            "Requests through the sandbox gateway by sandbox port and status code",
            m.requests.clone(),
        );
        registry.register(
            "gateway_bytes",
            "Body bytes through the sandbox gateway by direction (request, response)",
            m.bytes.clone(),
        );
        registry.register(
            "gateway_upstream_latency_seconds",
            "Time from forwarding a request to the sandbox's response head",
            m.upstream_latency.clone(),
        );
        registry.register(
            "gateway_wakes",
            "Paused sandboxes woken by a request, by outcome",
            m.wakes.clone(),
        );
        registry.register(
            "gateway_wake_duration_seconds",
            "Time from a request finding its sandbox paused to the agent server answering",
            m.wake_duration.clone(),
        );
        registry.register(
            "gateway_open_websockets",
            "WebSocket connections open through the sandbox gateway",
            m.open_websockets.clone(),
        );
        m
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KubeLabels {
    pub verb: String,
    pub kind: String,
    pub outcome: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("runtime_api");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status code",
            http_requests.clone(),
        );
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            http_duration.clone(),
        );
        let runtimes = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "runtimes",
            "Runtimes by status, as of the last scrape",
            runtimes.clone(),
        );
        let operations = Family::<OperationLabels, Counter>::default();
        registry.register(
            "operations",
            "Runtime operations by kind and outcome",
            operations.clone(),
        );
        let start_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "start_duration_seconds",
            "Time from POST /start to its response",
            start_duration.clone(),
        );
        let start_to_running = Histogram::new(exponential_buckets(0.05, 2.0, 14));
        registry.register(
            "start_to_running_seconds",
            "Time from the creation of a runtime to its agent server answering",
            start_to_running.clone(),
        );
        let maintenance = Family::<OperationLabels, Counter>::default();
        registry.register(
            "maintenance_actions",
            "Maintenance actions by kind and outcome",
            maintenance.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica runs the background work",
            leader.clone(),
        );
        let cache_objects = Family::<KindLabels, Gauge>::default();
        registry.register(
            "cache_objects",
            "Objects in the watch-fed cache by kind",
            cache_objects.clone(),
        );
        let kube_requests = Family::<KubeLabels, Counter>::default();
        registry.register(
            "kube_requests",
            "Kubernetes API write requests by verb, kind and outcome",
            kube_requests.clone(),
        );
        let gateway = GatewayMetrics::register(&mut registry);
        Metrics {
            gateway,
            maintenance,
            leader,
            cache_objects,
            kube_requests,
            registry: Arc::new(registry),
            http_requests,
            http_duration,
            runtimes,
            operations,
            start_duration,
            start_to_running,
        }
    }

    pub fn operation(&self, operation: &str, outcome: &str) {
        self.operations
            .get_or_create(&OperationLabels {
                operation: operation.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn maintenance(&self, kind: &str, outcome: &str) {
        self.maintenance
            .get_or_create(&OperationLabels { operation: kind.into(), outcome: outcome.into() })
            .inc();
    }

    pub fn kube_request(&self, verb: &str, kind: &str, outcome: &str) {
        self.kube_requests
            .get_or_create(&KubeLabels {
                verb: verb.into(),
                kind: kind.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Sets the per-status gauge from a fresh count (every status present, zeros included).
    pub fn set_runtime_counts(&self, counts: impl Fn(Status) -> usize) {
        for status in Status::ALL {
            self.runtimes
                .get_or_create(&StatusLabels { status: status.as_str().into() })
                .set(counts(status) as i64);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
