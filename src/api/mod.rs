//! The HTTP face of the service: routes, authentication, metrics middleware. It speaks only the
//! runtime domain (`crate::runtime`) and knows nothing of where runtimes run.

mod conversations;
pub mod error;
mod handlers;
pub mod openapi;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
pub mod types;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::gateway::Gateway;
use crate::gateway::route::PathStyle;
use crate::runtime::{Backend, Readiness};
use crate::telemetry::{HttpLabels, Metrics, RouteLabels};
use error::ApiError;

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub backend: Arc<dyn Backend>,
    pub metrics: Metrics,
    pub registry_prefix: Arc<str>,
    pub default_image: Arc<str>,
    /// SHA-256 of the API key: comparing digests is constant-time whatever the lengths.
    api_key_digest: [u8; 32],
    /// How long requests wait for complete reads ([`SYNC_WAIT`]; shorter in tests).
    sync_wait: Duration,
    /// PROXY_BASE_URL: the original service's `/sandbox/{id}/...` proxy on this port.
    sandbox_proxy: Option<Gateway>,
}

impl AppState {
    pub fn new(
        backend: Arc<dyn Backend>,
        metrics: Metrics,
        api_key: &str,
        registry_prefix: &str,
        default_image: &str,
    ) -> Self {
        AppState {
            backend,
            metrics,
            registry_prefix: registry_prefix.into(),
            default_image: default_image.into(),
            api_key_digest: Sha256::digest(api_key.as_bytes()).into(),
            sync_wait: SYNC_WAIT,
            sandbox_proxy: None,
        }
    }

    /// Serves `/sandbox/{runtime_id}/...` through `gateway` (no API key: the sandbox checks its
    /// session key, as in the original service).
    pub fn with_sandbox_proxy(self, gateway: Gateway) -> Self {
        AppState { sandbox_proxy: Some(gateway), ..self }
    }

    pub fn with_sync_wait(self, sync_wait: Duration) -> Self {
        AppState { sync_wait, ..self }
    }

    fn key_matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest.ct_eq(&self.api_key_digest).into()
    }
}

/// The whole API. Health, metrics and the OpenAPI document are public; everything else needs
/// `X-API-Key`.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    // Endpoints that find runtimes in the backend's cache. `/start` is not among them: it writes
    // to the API server, whose answer is authoritative (the record's name keeps one runtime per
    // session even when the cache has not seen it yet).
    let cached = Router::new()
        .route("/stop", post(handlers::stop))
        .route("/pause", post(handlers::pause))
        .route("/resume", post(handlers::resume))
        .route("/list", get(handlers::list))
        .route("/runtime/{runtime_id}", get(handlers::get_runtime))
        .route("/sessions/batch", get(handlers::sessions_batch))
        .route("/sessions/batch-conversations", post(conversations::batch_conversations))
        .route("/sessions/{session_id}", get(handlers::get_session))
        .route_layer(middleware::from_fn_with_state(state.clone(), await_complete_reads));
    let protected = Router::new()
        .route("/start", post(handlers::start))
        .route("/registry_prefix", get(handlers::registry_prefix))
        .route("/image_exists", get(handlers::image_exists))
        .route("/build", post(handlers::build))
        .route("/build_status", get(handlers::build_status))
        .merge(cached)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_api_key));
    let mut public = Router::new()
        .route("/health", get(handlers::health))
        .route("/livez", get(handlers::livez))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .route("/openapi.json", get(openapi::openapi_json));
    if state.sandbox_proxy.is_some() {
        public = public
            .route("/sandbox/{runtime_id}", any(sandbox_proxy))
            .route("/sandbox/{runtime_id}/{*rest}", any(sandbox_proxy));
    }
    protected
        .merge(public)
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn(limit_request_head))
        .layer(middleware::from_fn_with_state(state.clone(), record_metrics))
        .layer(middleware::from_fn(crate::telemetry::trace_request))
        .with_state(state)
}

/// Longest request target and largest header section answered by the API. Beyond them the
/// answer is a JSON 414 / 431 from here; hyper's own, much larger limits (about 400 KiB, 100
/// headers) answer with an empty body, and are out of reach.
pub const MAX_URI_BYTES: usize = 16 * 1024;
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// What is wrong with a request's head, if anything: the status and message to answer with.
pub fn head_problem(uri_len: usize, header_bytes: usize) -> Option<ApiError> {
    if uri_len > MAX_URI_BYTES {
        return Some(ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request target is longer than {MAX_URI_BYTES} bytes"),
        ));
    }
    if header_bytes > MAX_HEADER_BYTES {
        return Some(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("the request headers are larger than {MAX_HEADER_BYTES} bytes"),
        ));
    }
    None
}

/// The original service's proxy: `/sandbox/{runtime_id}/...` forwarded to the sandbox.
async fn sandbox_proxy(State(state): State<AppState>, req: Request) -> Response {
    match &state.sandbox_proxy {
        Some(gateway) => gateway.serve_path(req, PathStyle::Sandbox).await,
        None => ApiError::not_found("no such endpoint").into_response(),
    }
}

/// 414 / 431 JSON answers for oversized request heads (the API and the gateway).
pub async fn limit_request_head(req: Request, next: Next) -> Response {
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let header_bytes: usize =
        req.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    match head_problem(uri_len, header_bytes) {
        Some(problem) => problem.into_response(),
        None => next.run(req).await,
    }
}

/// How long a request waits for the backend's caches to be complete before a 503.
pub const SYNC_WAIT: Duration = Duration::from_secs(5);

/// Holds requests until the backend sees every runtime (right after a restart the Kubernetes
/// caches are still listing): a partial `/list` would make clients act on runtimes that seem
/// missing. After [`SYNC_WAIT`], a 503 with `Retry-After`.
async fn await_complete_reads(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let deadline = Instant::now() + state.sync_wait;
    loop {
        match state.backend.reads_complete() {
            Readiness::Ready => return next.run(req).await,
            Readiness::NotReady(reason) if Instant::now() >= deadline => {
                let mut response =
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", reason)
                        .into_response();
                response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
                return response;
            }
            Readiness::NotReady(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn require_api_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let presented = req.headers().get("x-api-key").map(|v| v.as_bytes());
    match presented {
        Some(key) if state.key_matches(key) => next.run(req).await,
        _ => ApiError::unauthorized().into_response(),
    }
}

/// Route templates of the API: the only values the `route` label takes besides `other`.
pub const ROUTES: [&str; 20] = [
    "/sandbox/{runtime_id}",
    "/sandbox/{runtime_id}/{*rest}",
    "/start",
    "/stop",
    "/pause",
    "/resume",
    "/list",
    "/runtime/{runtime_id}",
    "/sessions/batch",
    "/sessions/batch-conversations",
    "/sessions/{session_id}",
    "/registry_prefix",
    "/image_exists",
    "/build",
    "/build_status",
    "/health",
    "/livez",
    "/readyz",
    "/metrics",
    "/openapi.json",
];

/// The `route` label: a route template of this API, or `other` (unknown paths must not mint
/// label values: each new one would grow the metrics page forever).
pub fn route_label(matched: Option<&str>) -> &'static str {
    matched.and_then(|m| ROUTES.iter().find(|r| **r == m).copied()).unwrap_or("other")
}

/// The `method` label: a standard method, or `other` (HTTP allows any token as a method).
pub fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 7] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
        Method::OPTIONS,
    ];
    KNOWN.iter().find(|m| *m == method).map_or("other", Method::as_str)
}

/// Counts requests by method and route template, both from fixed sets.
async fn record_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = route_label(req.extensions().get::<MatchedPath>().map(MatchedPath::as_str));
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    let elapsed = started.elapsed().as_secs_f64();
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method: method.into(),
            route: route.into(),
            code: response.status().as_u16(),
        })
        .inc();
    state
        .metrics
        .http_duration
        .get_or_create(&RouteLabels { route: route.into() })
        .observe(elapsed);
    response
}
