//! One function per endpoint: parse, call the backend, shape the answer.

use std::time::Instant;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::types::{
    ApiJson, ApiPath, Health, ImageExists, RegistryPrefix, RuntimeIdRequest, RuntimeList,
    StartRequest, batch_ids, list_query,
};
use crate::runtime::spec::{validate_runtime_id, validate_session_id};
use crate::runtime::{ErrorKind, ImageCheck, Readiness, Runtime};

type ApiResult<T> = Result<T, ApiError>;

/// Starts a runtime for the session, or answers with the one it has (resuming it if paused).
#[utoipa::path(post, path = "/start", tag = "runtimes", request_body = StartRequest,
    responses(
        (status = 200, description = "The session's runtime", body = Runtime),
        (status = 400, description = "Invalid request (the message names the field)", body = ErrorBody),
        (status = 401, description = "Missing or wrong X-API-Key", body = ErrorBody),
        (status = 403, description = "The backend's credentials lack a permission", body = ErrorBody),
        (status = 409, description = "Conflicting state", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 500, description = "Internal failure", body = ErrorBody),
        (status = 503, description = "The backend cannot be reached", body = ErrorBody),
    ))]
pub async fn start(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<StartRequest>,
) -> ApiResult<Json<Runtime>> {
    let spec = req.into_spec(&state.default_image)?;
    spec.validate_environment_size(state.backend.environment_limits())?;
    let started = Instant::now();
    let result = state.backend.start(spec).await;
    state.metrics.start_duration.observe(started.elapsed().as_secs_f64());
    state.metrics.operation("start", if result.is_ok() { "ok" } else { "error" });
    Ok(Json(result?))
}

/// Removes the runtime and everything it owns; answers with its last view, `stopped`.
#[utoipa::path(post, path = "/stop", tag = "runtimes", request_body = RuntimeIdRequest,
    responses(
        (status = 200, description = "The runtime", body = Runtime),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or wrong X-API-Key", body = ErrorBody),
        (status = 404, description = "No such runtime", body = ErrorBody),
        (status = 409, description = "Conflicting state (an unreadable record can only be stopped)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 500, description = "Internal failure", body = ErrorBody),
        (status = 503, description = "The backend cannot be reached, or its caches are not complete yet", body = ErrorBody),
    ))]
pub async fn stop(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RuntimeIdRequest>,
) -> ApiResult<Json<Runtime>> {
    let id = req.validated()?;
    let result = state.backend.stop(&id).await;
    state.metrics.operation("stop", outcome(&result));
    Ok(Json(result?))
}

/// Stops the runtime's compute, keeping what it needs to resume.
#[utoipa::path(post, path = "/pause", tag = "runtimes", request_body = RuntimeIdRequest,
    responses(
        (status = 200, description = "The runtime", body = Runtime),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or wrong X-API-Key", body = ErrorBody),
        (status = 404, description = "No such runtime", body = ErrorBody),
        (status = 409, description = "Conflicting state (an unreadable record can only be stopped)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 500, description = "Internal failure", body = ErrorBody),
        (status = 503, description = "The backend cannot be reached, or its caches are not complete yet", body = ErrorBody),
    ))]
pub async fn pause(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RuntimeIdRequest>,
) -> ApiResult<Json<Runtime>> {
    let id = req.validated()?;
    let result = state.backend.pause(&id, None).await;
    state.metrics.operation("pause", outcome(&result));
    Ok(Json(result?))
}

/// Brings a paused or failed runtime back with its URL and key.
#[utoipa::path(post, path = "/resume", tag = "runtimes", request_body = RuntimeIdRequest,
    responses(
        (status = 200, description = "The runtime", body = Runtime),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or wrong X-API-Key", body = ErrorBody),
        (status = 404, description = "No such runtime", body = ErrorBody),
        (status = 409, description = "Conflicting state (an unreadable record can only be stopped)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 500, description = "Internal failure", body = ErrorBody),
        (status = 503, description = "The backend cannot be reached, or its caches are not complete yet", body = ErrorBody),
    ))]
pub async fn resume(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RuntimeIdRequest>,
) -> ApiResult<Json<Runtime>> {
    let id = req.validated()?;
    let result = state.backend.resume(&id).await;
    state.metrics.operation("resume", outcome(&result));
    Ok(Json(result?))
}

fn outcome<T>(result: &Result<T, crate::runtime::BackendError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) if e.kind() == ErrorKind::NotFound => "not_found",
        Err(_) => "error",
    }
}

/// Runtimes, oldest first: by default those holding compute (starting, running, error).
#[utoipa::path(get, path = "/list", tag = "runtimes",
    params(
        ("status" = Option<String>, Query, description = "`all`, or a comma list of starting, running, paused, stopped, error"),
        ("limit" = Option<u64>, Query, description = "Page size"),
        ("offset" = Option<u64>, Query, description = "Runtimes to skip"),
    ),
    responses(
        (status = 200, description = "One page of runtimes", body = RuntimeList),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "Missing or wrong X-API-Key", body = ErrorBody),
        (status = 500, description = "Internal failure", body = ErrorBody),
        (status = 503, description = "The backend's caches are not complete yet", body = ErrorBody),
    ))]
pub async fn list(State(state): State<AppState>, RawQuery(query): RawQuery) -> ApiResult<Response> {
    let query = list_query(query.as_deref())?;
    // Oldest first, so pagination is stable and V1's "pause the oldest" logic sees a clear order.
    let page = state.backend.list_page(&query.filter, query.offset, query.limit).await?;
    // The runtimes come serialised: the answer is their concatenation (a `RuntimeList`).
    let mut body = String::from("{\"runtimes\":");
    json_array(&mut body, &page.runtimes);
    body.push_str(",\"total\":");
    body.push_str(&page.total.to_string());
    body.push('}');
    Ok(json_response(body))
}

/// Appends `[a,b,...]` of values that are JSON already.
fn json_array(body: &mut String, items: &[std::sync::Arc<str>]) {
    body.reserve(items.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
    body.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(item);
    }
    body.push(']');
}

fn json_response(body: String) -> Response {
    ([(CONTENT_TYPE, "application/json")], body).into_response()
}

#[utoipa::path(get, path = "/runtime/{runtime_id}", tag = "runtimes",
    params(("runtime_id" = String, Path, description = "A runtime id")),
    responses(
        (status = 200, description = "The runtime", body = Runtime),
        (status = 400, description = "Invalid runtime id", body = ErrorBody),
        (status = 401, description = "Missing or wrong X-API-Key", body = ErrorBody),
        (status = 404, description = "No such runtime", body = ErrorBody),
        (status = 500, description = "Internal failure", body = ErrorBody),
        (status = 503, description = "The backend's caches are not complete yet", body = ErrorBody),
    ))]
pub async fn get_runtime(
    State(state): State<AppState>,
    ApiPath(runtime_id): ApiPath,
) -> ApiResult<Json<Runtime>> {
    validate_runtime_id(&runtime_id)?;
    state
        .backend
        .get(&runtime_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("runtime {runtime_id} not found")))
}

#[utoipa::path(get, path = "/sessions/{session_id}", tag = "runtimes",
    params(("session_id" = String, Path, description = "A session id (case-sensitive)")),
    responses(
        (status = 200, description = "The session's runtime", body = Runtime),
        (status = 400, description = "Invalid session id", body = ErrorBody),
        (status = 401, description = "Missing or wrong X-API-Key", body = ErrorBody),
        (status = 404, description = "The session has no runtime", body = ErrorBody),
        (status = 500, description = "Internal failure", body = ErrorBody),
        (status = 503, description = "The backend's caches are not complete yet", body = ErrorBody),
    ))]
pub async fn get_session(
    State(state): State<AppState>,
    ApiPath(session_id): ApiPath,
) -> ApiResult<Json<Runtime>> {
    validate_session_id(&session_id)?;
    state
        .backend
        .get_by_session(&session_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("session {session_id} has no runtime")))
}

/// A bare JSON array, as V1 expects; unknown ids are simply absent.
#[utoipa::path(get, path = "/sessions/batch", tag = "runtimes",
    params(("ids" = Option<String>, Query, description = "Session ids: repeated parameters and/or comma lists, at most 1000")),
    responses(
        (status = 200, description = "The runtimes of the known sessions, in request order", body = Vec<Runtime>),
        (status = 400, description = "Invalid or too many ids", body = ErrorBody),
        (status = 401, description = "Missing or wrong X-API-Key", body = ErrorBody),
        (status = 500, description = "Internal failure", body = ErrorBody),
        (status = 503, description = "The backend's caches are not complete yet", body = ErrorBody),
    ))]
pub async fn sessions_batch(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let ids = batch_ids(query.as_deref())?;
    let found = state.backend.sessions_page(&ids).await?;
    let mut body = String::new();
    json_array(&mut body, &found);
    Ok(json_response(body))
}

#[utoipa::path(get, path = "/registry_prefix", tag = "images",
    responses(
        (status = 200, description = "Where runtime images are pushed", body = RegistryPrefix),
        (status = 401, description = "Missing or wrong X-API-Key", body = ErrorBody),
    ))]
pub async fn registry_prefix(State(state): State<AppState>) -> Json<RegistryPrefix> {
    Json(RegistryPrefix { registry_prefix: state.registry_prefix.to_string() })
}

#[utoipa::path(get, path = "/image_exists", tag = "images",
    params(("image" = String, Query, description = "An image reference")),
    responses(
        (status = 200, description = "Whether the image exists", body = ImageExists),
        (status = 400, description = "Missing or invalid image reference", body = ErrorBody),
        (status = 401, description = "Missing or wrong X-API-Key", body = ErrorBody),
        (status = 500, description = "Internal failure", body = ErrorBody),
        (status = 503, description = "The registry cannot tell", body = ErrorBody),
    ))]
pub async fn image_exists(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let image = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "image")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("query parameter image is required"))?;
    crate::runtime::spec::validate_image(&image)?;
    let response = match state.backend.image_exists(&image).await? {
        ImageCheck::Exists => Json(ImageExists { exists: true, image }).into_response(),
        ImageCheck::Missing => Json(ImageExists { exists: false, image }).into_response(),
        ImageCheck::Unknown(reason) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unknown",
            format!("cannot tell whether {image} exists: {reason}"),
        )
        .into_response(),
    };
    Ok(response)
}

/// Image builds are not supported: always 501.
#[utoipa::path(post, path = "/build", tag = "images",
    responses(
        (status = 401, description = "Missing or wrong X-API-Key", body = ErrorBody),
        (status = 501, description = "Builds are not supported", body = ErrorBody),
    ))]
pub async fn build() -> ApiError {
    not_implemented()
}

/// Image builds are not supported: always 501.
#[utoipa::path(get, path = "/build_status", tag = "images",
    responses(
        (status = 401, description = "Missing or wrong X-API-Key", body = ErrorBody),
        (status = 501, description = "Builds are not supported", body = ErrorBody),
    ))]
pub async fn build_status() -> ApiError {
    not_implemented()
}

fn not_implemented() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "not_implemented",
        "image builds are not supported by this runtime service; push images to the registry instead",
    )
}

#[utoipa::path(get, path = "/health", tag = "health", security(()),
    responses((status = 200, description = "The process serves requests", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health::ok())
}

#[utoipa::path(get, path = "/livez", tag = "health", security(()),
    responses((status = 200, description = "The process serves requests", body = Health)))]
pub async fn livez() -> Json<Health> {
    Json(Health::ok())
}

#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses(
        (status = 200, description = "The backend can serve requests", body = Health),
        (status = 503, description = "Not ready (caches syncing, API server unreachable)", body = ErrorBody),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.backend.readiness() {
        Readiness::Ready => Json(Health::ok()).into_response(),
        Readiness::NotReady(reason) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", reason).into_response()
        }
    }
}

#[utoipa::path(get, path = "/metrics", tag = "health", security(()),
    responses((status = 200, description = "Prometheus metrics",
        content_type = "application/openmetrics-text", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Ok(counts) = state.backend.status_counts().await {
        state.metrics.set_runtime_counts(|s| {
            counts.iter().find(|(status, _)| *status == s).map_or(0, |(_, n)| *n)
        });
    }
    for (kind, size) in state.backend.cache_sizes() {
        state
            .metrics
            .cache_objects
            .get_or_create(&crate::telemetry::KindLabels { kind: kind.into() })
            .set(size as i64);
    }
    (
        [(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
        .into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}
