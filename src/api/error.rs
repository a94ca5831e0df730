//! The one error shape of the API: `{"error": code, "message": text}` with a fitting status, and
//! the one place where a backend failure becomes an HTTP status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::runtime::{BackendError, ErrorKind, SpecError};

/// What every error response carries, whatever its status.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable, machine-readable code (`bad_request`, `not_found`, `unavailable`, ...).
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The whole cause chain, logged with server errors and never sent to clients.
    cause: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), cause: None }
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

/// Status and `error` code of each kind of backend failure.
pub fn status_of(kind: ErrorKind) -> (StatusCode, &'static str) {
    match kind {
        ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        ErrorKind::Invalid => (StatusCode::BAD_REQUEST, "bad_request"),
        ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
        ErrorKind::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
        ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            let cause = self.cause.as_deref().unwrap_or(&self.message);
            tracing::error!(code = self.code, message = %self.message, %cause, "request failed");
        }
        let body = ErrorBody { error: self.code.into(), message: self.message };
        (self.status, Json(body)).into_response()
    }
}

impl From<SpecError> for ApiError {
    fn from(e: SpecError) -> Self {
        ApiError::bad_request(e.0)
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        let (status, code) = status_of(e.kind());
        ApiError { cause: Some(e.chain()), ..ApiError::new(status, code, e.to_string()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backend_failure_has_its_status_and_keeps_its_message() {
        let cases = [
            (BackendError::runtime_not_found("r"), 404, "not_found"),
            (BackendError::invalid("bad class"), 400, "bad_request"),
            (BackendError::conflict("taken"), 409, "conflict"),
            (BackendError::forbidden("rbac"), 403, "forbidden"),
            (BackendError::unavailable("down"), 503, "unavailable"),
            (BackendError::internal("bug"), 500, "internal"),
        ];
        for (e, status, code) in cases {
            let message = e.to_string();
            let api = ApiError::from(e);
            assert_eq!((api.status.as_u16(), api.code, api.message), (status, code, message));
        }
    }

    #[test]
    fn the_cause_is_kept_for_logs_but_not_sent() {
        let e =
            BackendError::unavailable("listing pods").with_source(std::io::Error::other("refused"));
        let api = ApiError::from(e);
        assert_eq!(api.cause.as_deref(), Some("listing pods: refused"));
        assert_eq!(api.message, "listing pods");
    }
}
