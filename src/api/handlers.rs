//! One function per endpoint: parse, call the backend, shape the answer.

use std::time::Instant;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::types::{ApiJson, ApiPath, RuntimeIdRequest, StartRequest, batch_ids, list_query};
use crate::runtime::spec::{validate_runtime_id, validate_session_id};
use crate::runtime::{ErrorKind, ImageCheck, ListFilter, Readiness, Runtime};

type ApiResult<T> = Result<T, ApiError>;

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

pub async fn stop(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RuntimeIdRequest>,
) -> ApiResult<Json<Runtime>> {
    let id = req.validated()?;
    let result = state.backend.stop(&id).await;
    state.metrics.operation("stop", outcome(&result));
    Ok(Json(result?))
}

pub async fn pause(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RuntimeIdRequest>,
) -> ApiResult<Json<Runtime>> {
    let id = req.validated()?;
    let result = state.backend.pause(&id, None).await;
    state.metrics.operation("pause", outcome(&result));
    Ok(Json(result?))
}

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

pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let query = list_query(query.as_deref())?;
    let mut runtimes = state.backend.list(&query.filter).await?;
    // Oldest first, so pagination is stable and V1's "pause the oldest" logic sees a clear order.
    runtimes.sort_by(|a, b| {
        a.created_at.cmp(&b.created_at).then_with(|| a.runtime_id.cmp(&b.runtime_id))
    });
    let total = runtimes.len();
    let page: Vec<Runtime> =
        runtimes.into_iter().skip(query.offset).take(query.limit.unwrap_or(usize::MAX)).collect();
    Ok(Json(json!({ "runtimes": page, "total": total })))
}

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
pub async fn sessions_batch(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<Runtime>>> {
    let ids = batch_ids(query.as_deref())?;
    let mut found = Vec::with_capacity(ids.len());
    for id in &ids {
        if let Some(runtime) = state.backend.get_by_session(id).await? {
            found.push(runtime);
        }
    }
    Ok(Json(found))
}

pub async fn registry_prefix(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "registry_prefix": &*state.registry_prefix }))
}

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
        ImageCheck::Exists => Json(json!({ "exists": true, "image": image })).into_response(),
        ImageCheck::Missing => Json(json!({ "exists": false, "image": image })).into_response(),
        ImageCheck::Unknown(reason) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unknown",
            format!("cannot tell whether {image} exists: {reason}"),
        )
        .into_response(),
    };
    Ok(response)
}

pub async fn build() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "not_implemented",
        "image builds are not supported by this runtime service; push images to the registry instead",
    )
}

pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.backend.readiness() {
        Readiness::Ready => Json(json!({ "status": "ok" })).into_response(),
        Readiness::NotReady(reason) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", reason).into_response()
        }
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Ok(all) = state.backend.list(&ListFilter::All).await {
        state.metrics.set_runtime_counts(|s| all.iter().filter(|r| r.status == s).count());
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
