//! Why a backend operation failed: a kind (which the HTTP layer maps to a status code, in
//! `api::error` and nowhere else), a message for the client, and the underlying error kept as the
//! source, so logs show the whole chain.

use std::error::Error;

/// What kind of failure: decides the HTTP status and the `error` code clients see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    Invalid,
    Conflict,
    Forbidden,
    Unavailable,
    Internal,
}

/// A backend failure. Its `Display` is the message for the client; the source is for logs.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn Error + Send + Sync + 'static>>,
}

impl BackendError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        BackendError { kind, message: message.into(), source: None }
    }

    /// Keeps `source` as the cause of this error.
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn Error + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// The one not-found error of a runtime id, shared by every backend.
    pub fn runtime_not_found(runtime_id: &str) -> Self {
        Self::not_found(format!("runtime {runtime_id} not found"))
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// The message and every cause below it, `: `-separated, for logs.
    pub fn chain(&self) -> String {
        let mut out = self.message.clone();
        let mut cause = self.source();
        while let Some(e) = cause {
            let text = e.to_string();
            // kube and reqwest often repeat their cause in their own message; say it once.
            if !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            cause = e.source();
        }
        out
    }
}

pub type BackendResult<T> = Result<T, BackendError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_for_clients_and_the_source_is_kept() {
        let io = std::io::Error::other("disk on fire");
        let e = BackendError::internal("could not save the runtime record").with_source(io);
        assert_eq!(e.to_string(), "could not save the runtime record");
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert_eq!(e.source().map(|s| s.to_string()).as_deref(), Some("disk on fire"));
        assert_eq!(e.chain(), "could not save the runtime record: disk on fire");
        let nf = BackendError::runtime_not_found("abc");
        assert_eq!(
            (nf.kind(), nf.to_string().as_str()),
            (ErrorKind::NotFound, "runtime abc not found")
        );
        assert!(nf.source().is_none());
    }
}
