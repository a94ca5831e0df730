//! Logs, traces and metrics: tracing set-up (text or JSON logs; OpenTelemetry spans exported
//! over OTLP when the standard `OTEL_*` variables ask for it), W3C trace context and baggage in
//! and out, and the Prometheus registry behind `/metrics`.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::baggage::{BaggageExt, KeyValueMetadata};
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::SdkTracerProvider;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::runtime::Status;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The original service's LOG_LEVEL: how much this service says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// The log filter: RUST_LOG when set, else LOG_LEVEL (more detail is asked of this service
/// only, not of its libraries), else `info`.
pub fn log_filter(rust_log: Option<&str>, level: Option<LogLevel>) -> String {
    if let Some(filter) = rust_log.filter(|f| !f.trim().is_empty()) {
        return filter.to_string();
    }
    match level.unwrap_or(LogLevel::Info) {
        LogLevel::Error => "error".into(),
        LogLevel::Warn => "warn".into(),
        LogLevel::Info => "info".into(),
        LogLevel::Debug => "info,runtime_api=debug".into(),
        LogLevel::Trace => "info,runtime_api=trace".into(),
    }
}

/// Spans exported over OTLP: this service's own at `info` and the Kubernetes client's one span
/// per request (kube emits it at `debug`). OpenTelemetry's own logs are never turned into spans.
const TRACE_FILTER: &str = "info,kube_client=debug,opentelemetry=off,opentelemetry_sdk=off,\
    opentelemetry_otlp=off,opentelemetry_http=off";

/// Whether the standard variables ask for traces: an OTLP endpoint is set and the SDK is not
/// disabled (`OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER=none`).
pub fn traces_enabled(env: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) && !disabled
}

/// The tracer provider; [`Tracing::shutdown`] flushes the spans still queued.
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("runtime-api: could not flush traces: {e}");
        }
    }
}

/// Installs the global tracing subscriber (logs, and spans for OpenTelemetry) and the W3C
/// propagators. Spans always carry trace ids, so the caller's trace reaches agent servers even
/// when nothing is exported; they are exported over OTLP/HTTP (protobuf) when
/// [`traces_enabled`]. The exporter, sampler and resource read the standard `OTEL_*`
/// variables; the service name defaults to `runtime-api`. Call outside the async runtime.
pub fn init_tracing(format: LogFormat, level: Option<LogLevel>) -> Tracing {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = EnvFilter::try_new(log_filter(rust_log.as_deref(), level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_target(false);
    let fmt = match format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Text => fmt.boxed(),
    };

    global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("runtime-api");
    }
    let mut provider = SdkTracerProvider::builder().with_resource(resource.build());
    let mut exporter_error = None;
    if traces_enabled(|name| std::env::var(name).ok()) {
        match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
            Ok(exporter) => provider = provider.with_batch_exporter(exporter),
            Err(e) => exporter_error = Some(e),
        }
    }
    let provider = provider.build();
    let tracer = provider.tracer("runtime-api");
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(EnvFilter::new(TRACE_FILTER));
    tracing_subscriber::registry().with(fmt.with_filter(filter)).with(otel).init();
    if let Some(e) = exporter_error {
        tracing::error!(error = %e, "traces are not exported: cannot build the OTLP exporter");
    }
    Tracing { provider }
}

/// Public endpoints probed by orchestrators and scrapers: no span (they would drown the rest).
const UNTRACED: [&str; 4] = ["/health", "/livez", "/readyz", "/metrics"];

/// A server span per API request, continuing the caller's trace (`traceparent`) and carrying its
/// `baggage` to every call made on its behalf.
pub async fn trace_request(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string());
    if route.as_deref().is_some_and(|r| UNTRACED.contains(&r)) {
        return next.run(req).await;
    }
    let route = route.unwrap_or_else(|| "other".into());
    let method = req.method().as_str().to_string();
    let span = tracing::info_span!(
        "request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    // The caller's context (its span and baggage) is the parent: spans under this one, and the
    // OpenTelemetry context current while they run, carry both.
    let caller = global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(req.headers())));
    let _ = span.set_parent(caller);
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

/// Headers for a call to a runtime's agent server: the current span (`traceparent`) and the
/// baggage it inherited from the caller (see [`trace_request`]) plus `runtime_id` and
/// `session_id`. Call it inside the span of the call (the entered span's context is current).
pub fn agent_headers(runtime_id: &str, session_id: &str) -> HeaderMap {
    let current = Context::current();
    let mut baggage: Vec<KeyValueMetadata> = current
        .baggage()
        .iter()
        .map(|(k, (v, meta))| KeyValueMetadata::new(k.clone(), v.clone(), meta.clone()))
        .collect();
    baggage.push(KeyValue::new("runtime_id", runtime_id.to_string()).into());
    baggage.push(KeyValue::new("session_id", session_id.to_string()).into());
    let cx = current.with_baggage(baggage);
    let mut headers = HeaderMap::new();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderInjector(&mut headers)));
    headers
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
    pub maintenance_round: Histogram,
    pub leader: Gauge,
    pub cache_objects: Family<KindLabels, Gauge>,
    pub kube_requests: Family<KubeLabels, Counter>,
    pub gateway: GatewayMetrics,
    pub pool: crate::pool::PoolMetrics,
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
            "Runtimes by status (kept from the watch events, read at each scrape)",
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
        let maintenance_round = Histogram::new(exponential_buckets(0.001, 2.0, 18));
        registry.register(
            "maintenance_round_duration_seconds",
            "Duration of one maintenance round on the leader (rules, then the orphan sweep)",
            maintenance_round.clone(),
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
            "Kubernetes API requests by verb, kind and outcome: writes, and the sweep's lists",
            kube_requests.clone(),
        );
        let gateway = GatewayMetrics::register(&mut registry);
        let pool = crate::pool::PoolMetrics::register(&mut registry);
        Metrics {
            gateway,
            pool,
            maintenance,
            maintenance_round,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_wins_over_log_level_which_details_this_service_only() {
        assert_eq!(log_filter(Some("warn,kube=debug"), Some(LogLevel::Debug)), "warn,kube=debug");
        assert_eq!(log_filter(Some(" "), Some(LogLevel::Debug)), "info,runtime_api=debug");
        assert_eq!(log_filter(None, Some(LogLevel::Warn)), "warn");
        assert_eq!(log_filter(None, None), "info");
    }

    #[test]
    fn traces_are_exported_only_when_an_endpoint_is_set_and_the_sdk_is_on() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        assert!(!traces_enabled(env(&[])));
        assert!(!traces_enabled(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")])));
        assert!(traces_enabled(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")])));
        assert!(traces_enabled(env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c/v1")])));
        assert!(!traces_enabled(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ])));
        assert!(!traces_enabled(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ])));
    }
}
