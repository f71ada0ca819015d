//! The API's error answers: JSON `{"error": "<code>", "detail": "<sentence>"}`.
//!
//! A detail says what was wrong with the request and what to do; it never
//! carries a path, a Rust error's debug form or other internals. Failures
//! inside the server are written to its standard error in full and answered
//! with a general sentence.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::Error;
use crate::server::keys::KeyError;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A short snake_case code (`unauthorized`, `invalid_event`, …).
    pub error: &'static str,
    /// A sentence for people.
    pub detail: String,
    /// `Allow` header, for 405.
    allow: Option<&'static str>,
}

impl ApiError {
    /// An error answer with this status, code and detail.
    pub fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            detail: detail.into(),
            allow: None,
        }
    }

    /// 400 with this code.
    pub fn bad_request(error: &'static str, detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, error, detail)
    }

    /// 401: no valid key.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 403: a valid key that may not do this.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 404 with this code.
    pub fn not_found(error: &'static str, detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, error, detail)
    }

    /// 405, with the methods the route has.
    pub fn method_not_allowed(allow: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            allow: Some(allow),
            ..ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", detail)
        }
    }

    /// 503: try again later.
    pub fn unavailable(error: &'static str, detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error, detail)
    }

    /// 500, after writing the real cause to standard error.
    pub fn internal(what: &str, cause: &dyn std::fmt::Display) -> Self {
        eprintln!("chainlog serve: {what}: {cause}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            format!("{what} failed inside the server; its operator can find the cause in the server's output"),
        )
    }

    /// The answer for a library error met while serving `what`.
    pub fn from_log(what: &str, e: &Error) -> Self {
        match e {
            Error::InvalidEvent(e) => ApiError::bad_request("invalid_event", e.to_string()),
            Error::BatchTooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "batch_too_large",
                e.to_string(),
            ),
            Error::Locked(_) => {
                eprintln!("chainlog serve: {what}: {e}");
                ApiError::unavailable(
                    "workspace_busy",
                    "the workspace's log is held by another process; try again later",
                )
            }
            Error::NotFound(_) => {
                ApiError::not_found("workspace_not_found", "the workspace has no log")
            }
            Error::SeqOutOfRange { seq, first, next } => ApiError::bad_request(
                "bad_cursor",
                format!("seq {seq} is not in the log (retained range {first}..{next})"),
            ),
            Error::Poisoned(_)
            | Error::Io { .. }
            | Error::Corrupted { .. }
            | Error::ChecksumMismatch { .. }
            | Error::UnsupportedVersion { .. } => {
                eprintln!("chainlog serve: {what}: {e}");
                ApiError::unavailable(
                    "storage_error",
                    format!("{what} failed: the workspace's log could not be read or written; its operator can find the cause in the server's output"),
                )
            }
            other => ApiError::internal(what, other),
        }
    }

    /// The answer for a key store error met while serving `what`.
    pub fn from_keys(what: &str, e: &KeyError) -> Self {
        match e {
            KeyError::BadScope(_) | KeyError::BadActor(_) | KeyError::BadWorkspace(_) => {
                ApiError::bad_request("invalid_request", e.to_string())
            }
            KeyError::NotFound(_) => ApiError::not_found("key_not_found", e.to_string()),
            KeyError::LocalOnly => ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_keys_local_only",
                e.to_string(),
            ),
            KeyError::Revoked(_) => {
                ApiError::new(StatusCode::CONFLICT, "key_revoked", e.to_string())
            }
            _ => {
                eprintln!("chainlog serve: {what}: {e}");
                ApiError::unavailable(
                    "key_store_error",
                    format!("{what} failed: the key store could not be read or written; its operator can find the cause in the server's output"),
                )
            }
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.error,
            self.detail
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.error, "detail": self.detail });
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}
