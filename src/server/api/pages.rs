//! Plain pages: health, the dashboard page and its CSP, who the key is.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::server::error::ApiError;
use crate::server::reads::{record_read, ReadKind};

use super::*;

pub(super) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The Content-Security-Policy of the dashboard: only its own inline
/// script and style (by hash), requests only to this origin.
pub(super) fn dashboard_csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let hash_of = |open: &str, close: &str| {
            let start = DASHBOARD_HTML.find(open).map(|i| i + open.len());
            let body = start.and_then(|s| {
                DASHBOARD_HTML[s..]
                    .find(close)
                    .map(|e| &DASHBOARD_HTML[s..s + e])
            });
            let digest = Sha256::digest(body.unwrap_or_default().as_bytes());
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        };
        format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hash_of("<script>", "</script>"),
            hash_of("<style>", "</style>")
        )
    })
}

pub(super) async fn dashboard() -> Response {
    let mut response = (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        DASHBOARD_HTML,
    )
        .into_response();
    let headers = response.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(dashboard_csp()) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

pub(super) async fn whoami(
    State(state): State<Shared>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let key = authorize(&state, &caller, None, None).await?;
    let body = json!({
        "id": key.id,
        "workspace": key.workspace,
        "scope": key.scope,
    })
    .to_string();
    let read = caller.read(&key, ReadKind::SignIn, 0, body.len());
    record_read(&state, Some(&key.workspace), read).await;
    Ok(json_response(StatusCode::OK, body))
}
