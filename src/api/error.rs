//! The one error shape of the API: `{"error": code, "message": text}` with a fitting status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::runtime::{BackendError, SpecError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or invalid X-API-Key header")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        (self.status, Json(json!({ "error": self.code, "message": self.message }))).into_response()
    }
}

impl From<SpecError> for ApiError {
    fn from(e: SpecError) -> Self {
        ApiError::bad_request(e.0)
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        let (status, code) = match &e {
            BackendError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            BackendError::Invalid(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            BackendError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            BackendError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            BackendError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            BackendError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}
