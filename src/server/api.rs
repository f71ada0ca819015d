//! The routes and their handlers.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::de::{DeserializeSeed, Error as _, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::event::{EncodeRecord, Event, Timestamp};
use crate::limits::MAX_BATCH_EVENTS;
use crate::log::{Log, Receipt};
use crate::query::export::{ExportError, ExportFormat, ExportOptions, Exporter};
use crate::query::Query;
use crate::server::audit::{Failure, Target, EVENT_ACCESS_DENIED, EVENT_AUTH_FAILED};
use crate::server::commit::{CommitError, Records};
use crate::server::error::ApiError;
use crate::server::idempotency;
use crate::server::ingest;
use crate::server::keys::{ApiKey, ChangedBy, KeyAudit, KeyCheck, KeyError, KeyInfo, Scope, Via};
use crate::server::params::{self, Endpoint};
use crate::server::reads::{record_read, record_read_blocking, ReadKind};
use crate::server::refusals;
use crate::server::workspace::{validate_workspace_name, Open};
use crate::server::AppState;
use crate::storage::FsStorage;
use crate::verify::{verify_dir_with, Report, VerifyOptions};

/// The dashboard page: HTML, CSS and JS in one file.
const DASHBOARD_HTML: &str = include_str!("dashboard.html");
/// Largest body of a key management request.
const MAX_KEY_REQUEST_BYTES: usize = 4096;
/// Export chunks sent to the client at a time.
const EXPORT_CHUNK_BYTES: usize = 64 * 1024;
/// Chunks buffered between the export thread and the connection.
const EXPORT_QUEUE_CHUNKS: usize = 4;
/// Longest an export waits for a client that does not read.
const EXPORT_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest `POST …/events` body parsed and encoded on the async worker
/// itself (a few dozen events, microseconds of work): handing it to a
/// blocking thread and back costs two thread wake-ups, more than the work.
const INLINE_ENCODE_BYTES: usize = 8 * 1024;

type Shared = Arc<AppState>;

/// All routes, with the request timeout and common headers around them.
pub(crate) fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(dashboard).fallback(refusals::not_allowed("GET")))
        .route(
            "/healthz",
            get(healthz).fallback(refusals::not_allowed("GET")),
        )
        .route(
            "/v1/key",
            get(whoami).fallback(refusals::not_allowed("GET")),
        )
        .route(
            "/v1/server-log/events",
            get(super::server_log::events).fallback(refusals::not_allowed("GET")),
        )
        .route(
            "/v1/workspaces/{w}/events",
            get(get_events)
                .post(post_events)
                .fallback(refusals::events_not_editable("GET, POST")),
        )
        .route(
            "/v1/workspaces/{w}/events/{seq}",
            get(get_event).fallback(refusals::events_not_editable("GET")),
        )
        .route(
            "/v1/workspaces/{w}/export",
            get(export).fallback(refusals::not_allowed("GET")),
        )
        .route(
            "/v1/workspaces/{w}/verify",
            get(verify).fallback(refusals::not_allowed("GET")),
        )
        .route(
            "/v1/workspaces/{w}/checkpoint",
            get(checkpoint).fallback(refusals::not_allowed("GET")),
        )
        .route(
            "/v1/workspaces/{w}/keys",
            get(list_keys)
                .post(create_key)
                .fallback(refusals::not_allowed("GET, POST")),
        )
        .route(
            "/v1/workspaces/{w}/keys/{id}",
            delete(revoke_key).fallback(refusals::not_allowed("DELETE")),
        )
        .route(
            "/v1/workspaces/{w}/keys/{id}/rotate",
            post(rotate_key).fallback(refusals::not_allowed("POST")),
        )
        .fallback(refusals::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Request timeout and headers every answer carries.
async fn guard(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let limit = state.limits.request_timeout;
    let mut response = match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::unavailable(
            "timeout",
            format!(
                "the request took longer than {} s and was abandoned; an append that had started may still complete",
                limit.as_secs_f64()
            ),
        )
        .into_response(),
    };
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

// ---------------------------------------------------------------------------
// Who is asking

/// The presented credentials.
#[derive(Debug, Clone)]
enum Bearer {
    Missing,
    Malformed,
    Key(String),
}

/// The client: its address, the request line and its key.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(super) ip: IpAddr,
    pub(super) method: Method,
    pub(super) path: String,
    bearer: Bearer,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        let bearer = match parts.headers.get(header::AUTHORIZATION) {
            None => Bearer::Missing,
            Some(value) => match value.to_str().ok().and_then(|v| v.split_once(' ')) {
                Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => {
                    Bearer::Key(key.trim().to_string())
                }
                _ => Bearer::Malformed,
            },
        };
        Ok(Caller {
            ip,
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            bearer,
        })
    }
}

impl Caller {
    fn changed_by(&self, key: &ApiKey) -> ChangedBy {
        ChangedBy {
            actor: format!("apikey:{}", key.id),
            ip: Some(self.ip),
            via: Via::Http,
        }
    }
}

/// Decodes `%XX` escapes; invalid UTF-8 becomes U+FFFD (and so an invalid
/// workspace name).
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Path segment `index` of the request (`/v1/workspaces/{w}/…`: the
/// workspace is 3), percent-decoded. Taken from the raw path so that a
/// name that is not UTF-8 is refused (and audited) like any bad name.
pub(super) fn path_segment(caller: &Caller, index: usize) -> String {
    caller
        .path
        .split('/')
        .nth(index)
        .map(percent_decode)
        .unwrap_or_default()
}

/// The caller's key when it presented a valid one (no refusal recorded).
pub(super) fn presented_key(state: &Shared, caller: &Caller) -> Option<ApiKey> {
    match &caller.bearer {
        Bearer::Key(text) => match state.keys.check(text).0 {
            KeyCheck::Valid(key) => Some(key),
            KeyCheck::Invalid { .. } => None,
        },
        Bearer::Missing | Bearer::Malformed => None,
    }
}

/// Checks the caller's key for `workspace` (if any) and `needed` (if any).
/// Every refusal is recorded before it is answered.
pub(super) async fn authorize(
    state: &Shared,
    caller: &Caller,
    workspace: Option<&str>,
    needed: Option<Scope>,
) -> Result<ApiKey, ApiError> {
    let refuse = |event_type, key_id: Option<String>, reason, extra: Map<String, Value>| {
        caller.failure(event_type, key_id, reason, extra)
    };
    let mut extra = Map::new();
    if let Some(w) = workspace {
        extra.insert(
            "workspace".into(),
            w.chars().take(100).collect::<String>().into(),
        );
    }
    let text = match &caller.bearer {
        Bearer::Key(text) => text,
        Bearer::Missing => {
            record_failure(
                state,
                workspace,
                refuse(EVENT_AUTH_FAILED, None, "missing_key", extra),
            )
            .await;
            return Err(ApiError::unauthorized(
                "missing API key: send the header `Authorization: Bearer <key>`",
            ));
        }
        Bearer::Malformed => {
            record_failure(
                state,
                workspace,
                refuse(EVENT_AUTH_FAILED, None, "malformed_authorization", extra),
            )
            .await;
            return Err(ApiError::unauthorized(
                "the Authorization header must be `Bearer <key>`",
            ));
        }
    };
    let (check, reload_error) = state.keys.check(text);
    if let Some(e) = reload_error {
        eprintln!("chainlog serve: re-reading the key file: {e} (using the keys as last read)");
    }
    let key = match check {
        KeyCheck::Valid(key) => key,
        KeyCheck::Invalid { key_id, reason } => {
            record_failure(
                state,
                workspace,
                refuse(EVENT_AUTH_FAILED, key_id, reason, extra),
            )
            .await;
            return Err(ApiError::unauthorized(
                "invalid API key: it is malformed, unknown, revoked or its secret is wrong",
            ));
        }
    };
    let key_id = Some(key.id.clone());
    extra.insert("key_workspace".into(), key.workspace.clone().into());
    extra.insert("key_scope".into(), key.scope.as_str().into());
    if let Some(w) = workspace {
        if let Err(e) = validate_workspace_name(w) {
            record_failure(
                state,
                None,
                refuse(EVENT_ACCESS_DENIED, key_id, "invalid_workspace_name", extra),
            )
            .await;
            return Err(ApiError::bad_request("invalid_workspace", e.to_string()));
        }
        if key.workspace != w {
            record_failure(
                state,
                workspace,
                refuse(EVENT_ACCESS_DENIED, key_id, "other_workspace", extra),
            )
            .await;
            return Err(ApiError::forbidden(
                "this API key belongs to another workspace",
            ));
        }
    }
    if let Some(needed) = needed {
        if !key.scope.allows(needed) {
            extra.insert("required_scope".into(), needed.as_str().into());
            record_failure(
                state,
                workspace,
                refuse(EVENT_ACCESS_DENIED, key_id, "insufficient_scope", extra),
            )
            .await;
            return Err(ApiError::forbidden(format!(
                "this API key's scope `{}` does not allow this; it needs `{}` (or `admin`)",
                key.scope, needed
            )));
        }
    }
    Ok(key)
}

/// Records a refused request in the named workspace's log when that log
/// is open, or else in the server's, unless the limiter only counts it.
/// Only a valid key of the workspace itself (refused for its scope) opens
/// the workspace's log for it: any other refusal takes the same path
/// whether the workspace exists or not, so neither its cost (a thread and
/// files per workspace opened) nor its answer time tells.
pub(super) async fn record_failure(state: &Shared, workspace: Option<&str>, failure: Failure) {
    state.metrics.refusal(failure.event_type, failure.reason);
    let workspace = workspace
        .filter(|w| validate_workspace_name(w).is_ok())
        .map(str::to_string);
    let own_key =
        failure.extra.get("key_workspace").and_then(Value::as_str) == workspace.as_deref();
    let log = match &workspace {
        Some(w) if own_key => existing_log(state, w).await,
        Some(w) => state.workspaces.cached(w),
        None => None,
    };
    let target = match (&log, workspace) {
        (Some(_), Some(w)) => Target::Workspace(w),
        _ => Target::Server,
    };
    if !state.failures.admit(&failure, &target, Instant::now()) {
        return;
    }
    let state = state.clone();
    let appended = tokio::task::spawn_blocking(move || {
        let log = match log {
            Some(log) => log,
            None => state.workspaces.server_log()?,
        };
        log.append(&failure.to_event())
    })
    .await;
    match appended {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => eprintln!("chainlog serve: recording a refused request failed: {e}"),
        Err(e) => eprintln!("chainlog serve: recording a refused request failed: {e}"),
    }
}

/// Writes the summaries of failure windows that ended (all with `all`).
pub(crate) async fn write_summaries(state: &Shared, all: bool) {
    let now = Instant::now();
    let mut due = state.failures.take_due(now, all);
    due.extend(state.reads.take_due(now, all));
    if due.is_empty() {
        return;
    }
    let state = state.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for summary in due {
            let log = match &summary.target {
                // The workspace was open when the summary's first event was
                // counted (a refusal) or was read (a read): opening it again
                // tells no one whether it exists.
                Target::Workspace(w) => state
                    .workspaces
                    .cached(w)
                    .or_else(|| state.workspaces.open(w, false).ok().flatten()),
                Target::Server => None,
            };
            let log = match log {
                Some(log) => Ok(log),
                None => state.workspaces.server_log(),
            };
            if let Err(e) = log.and_then(|log| log.append(&summary.event)) {
                eprintln!("chainlog serve: recording a failure summary failed: {e}");
            }
        }
    })
    .await;
}

/// Writes ended windows' summaries every second, until aborted.
pub(crate) async fn write_summaries_every_second(state: Shared) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        write_summaries(&state, false).await;
    }
}

/// The workspace's log if the workspace exists (for its own keys only).
async fn existing_log(state: &Shared, workspace: &str) -> Option<Arc<Log>> {
    if let Some(log) = state.workspaces.cached(workspace) {
        return Some(log);
    }
    let (state, w) = (state.clone(), workspace.to_string());
    tokio::task::spawn_blocking(move || state.workspaces.open(&w, false))
        .await
        .ok()
        .and_then(|r| r.ok())
        .flatten()
}

/// The workspace's log for an authorized request; an admin key creates
/// the workspace on first use.
async fn workspace_log(
    state: &Shared,
    workspace: &str,
    key: &ApiKey,
) -> Result<Arc<Log>, ApiError> {
    Ok(open_workspace(state, workspace, key).await?.log)
}

/// The workspace's log and its commit queue, opened as by [`workspace_log`].
async fn open_workspace(state: &Shared, workspace: &str, key: &ApiKey) -> Result<Open, ApiError> {
    if let Some(open) = state.workspaces.cached_open(workspace) {
        return Ok(open);
    }
    let create = key.scope == Scope::Admin;
    let (st, w) = (state.clone(), workspace.to_string());
    match blocking(move || st.workspaces.open_workspace(&w, create)).await? {
        Ok(Some(open)) => Ok(open),
        Ok(None) => Err(ApiError::not_found(
            "workspace_not_found",
            format!("workspace {workspace:?} has no log yet; an admin key of the workspace creates it on first use"),
        )),
        Err(e) => Err(ApiError::from_log("opening the workspace", &e)),
    }
}

/// Runs `f` on a blocking thread.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal("a blocking task", &e))
}

// ---------------------------------------------------------------------------
// Plain pages

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The Content-Security-Policy of the dashboard: only its own inline
/// script and style (by hash), requests only to this origin.
fn dashboard_csp() -> &'static str {
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

async fn dashboard() -> Response {
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

async fn whoami(State(state): State<Shared>, caller: Caller) -> Result<Response, ApiError> {
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

// ---------------------------------------------------------------------------
// Appending

/// How a request body holds its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyKind {
    /// One JSON event object, or an array of them.
    Json,
    /// One event object per line.
    NdJson,
}

fn body_kind(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match media.as_deref() {
        Some("application/json") => Ok(BodyKind::Json),
        Some("application/x-ndjson") => Ok(BodyKind::NdJson),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Type {} is not accepted: send application/json (one event object, or an array of them) or application/x-ndjson (one event per line)",
                match other {
                    Some(m) => format!("{:?}", m.chars().take(100).collect::<String>()),
                    None => "(missing)".to_string(),
                }
            ),
        )),
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!(
            "the request body is over the limit of {limit} bytes; split it into several requests"
        ),
    )
}

/// Reads the whole body, refusing more than `limit` bytes.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Vec<u8>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let mut stream = body.into_data_stream();
    let mut out = Vec::with_capacity(declared.map_or(8192, |n| n as usize));
    loop {
        let next =
            std::future::poll_fn(|cx| futures_core::Stream::poll_next(Pin::new(&mut stream), cx))
                .await;
        match next {
            None => return Ok(out),
            Some(Ok(chunk)) => {
                if out.len() + chunk.len() > limit {
                    return Err(too_large(limit));
                }
                out.extend_from_slice(&chunk);
            }
            Some(Err(_)) => {
                return Err(ApiError::bad_request(
                    "unreadable_body",
                    "the request body could not be read (the connection broke or the encoding is wrong)",
                ))
            }
        }
    }
}

/// Deserializes a JSON array of events, stopping past `max`, and naming
/// the index of a bad event.
struct EventArray<'a> {
    max: usize,
    too_many: &'a std::cell::Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for EventArray<'_> {
    type Value = Vec<Event>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<Event>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EventArray<'_> {
    type Value = Vec<Event>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Event>, A::Error> {
        let mut events = Vec::with_capacity(seq.size_hint().unwrap_or(16).min(self.max));
        loop {
            if events.len() == self.max {
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    self.too_many.set(true);
                    return Err(A::Error::custom("too many events"));
                }
                return Ok(events);
            }
            match seq.next_element::<Event>() {
                Ok(Some(event)) => events.push(event),
                Ok(None) => return Ok(events),
                Err(e) => {
                    return Err(A::Error::custom(format_args!(
                        "event at index {}: {e}",
                        events.len()
                    )))
                }
            }
        }
    }
}

/// A serde_json error's message without the position it appends, when
/// the message already has one (the inner error's).
fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&suffix) {
        Some(inner) if inner.contains(" at line ") => inner.to_string(),
        _ => text,
    }
}

fn json_error(prefix: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let code = match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => "malformed_json",
        Category::Data => "invalid_event",
    };
    ApiError::bad_request(code, format!("{prefix}{}", json_message(e)))
}

fn too_many_events(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_many_events",
        format!("a request holds at most {max} events; split the batch"),
    )
}

/// The body as text: JSON text is UTF-8 (RFC 8259). Checking the whole
/// body at once is cheaper than the parser checking every string of it
/// again.
fn body_text(bytes: &[u8]) -> Result<&str, ApiError> {
    std::str::from_utf8(bytes).map_err(|e| {
        ApiError::bad_request(
            "malformed_json",
            format!(
                "the body is not UTF-8 (invalid bytes at byte {})",
                e.valid_up_to()
            ),
        )
    })
}

/// Parses a request body into owned events: the path that gives every
/// answer about a body the borrowed path (`ingest`) declines.
fn parse_events(text: &str, kind: BodyKind, max: usize) -> Result<Vec<Event>, ApiError> {
    match kind {
        BodyKind::Json => {
            let first = text.bytes().find(|b| !b.is_ascii_whitespace());
            match first {
                Some(b'{') => serde_json::from_str::<Event>(text)
                    .map(|e| vec![e])
                    .map_err(|e| json_error("", &e)),
                Some(b'[') => {
                    let too_many = std::cell::Cell::new(false);
                    let mut de = serde_json::Deserializer::from_str(text);
                    let parsed = EventArray {
                        max,
                        too_many: &too_many,
                    }
                    .deserialize(&mut de)
                    .and_then(|events| de.end().map(|()| events));
                    parsed.map_err(|e| {
                        if too_many.get() {
                            return too_many_events(max);
                        }
                        // Name a syntax error by its own position, not as
                        // a bad event.
                        match serde_json::from_str::<IgnoredAny>(text) {
                            Err(syntax) => json_error("", &syntax),
                            Ok(_) => ApiError::bad_request("invalid_event", json_message(&e)),
                        }
                    })
                }
                _ => Err(ApiError::bad_request(
                    "malformed_json",
                    "expected a JSON object (one event) or an array of events",
                )),
            }
        }
        BodyKind::NdJson => {
            let mut events = Vec::new();
            for (i, line) in text.split('\n').enumerate() {
                let line = line.strip_suffix('\r').unwrap_or(line);
                if line.bytes().all(|b| b.is_ascii_whitespace()) {
                    continue;
                }
                if events.len() == max {
                    return Err(too_many_events(max));
                }
                let event = serde_json::from_str::<Event>(line)
                    .map_err(|e| json_error(&format!("line {}: ", i + 1), &e))?;
                events.push(event);
            }
            Ok(events)
        }
    }
}

/// Validates and encodes a request's events for the commit queue, with the
/// answers the library's own checks would give: the first invalid event
/// refuses the request, and nothing of it is queued.
/// `appender` (the API key's id) is recorded as who appended them.
fn encode_events<E: EncodeRecord>(events: &[E], appender: &str) -> Result<Records, ApiError> {
    if events.is_empty() {
        return Err(ApiError::bad_request(
            "no_events",
            "the request holds no events",
        ));
    }
    // The library counts before it validates.
    if events.len() > MAX_BATCH_EVENTS {
        let e = crate::Error::BatchTooLarge {
            len: events.len() as u64,
            max: MAX_BATCH_EVENTS as u64,
            unit: "events",
        };
        return Err(ApiError::from_log("appending", &e));
    }
    let mut records = Records::with_capacity(events.len(), appender.to_string());
    for (i, event) in events.iter().enumerate() {
        records.push(event).map_err(|why| {
            ApiError::bad_request(
                "invalid_event",
                format!("event at index {i}: {why}; nothing was appended"),
            )
        })?;
    }
    Ok(records)
}

fn receipts_json(receipts: &[Receipt]) -> String {
    let mut out = String::with_capacity(32 + receipts.len() * 90);
    out.push_str("{\"receipts\":[");
    for (i, r) in receipts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"seq\":{},\"hash\":\"{}\"}}", r.seq, r.hash);
    }
    out.push_str("]}");
    out
}

pub(super) fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn post_events(
    State(state): State<Shared>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let w = path_segment(&caller, 3);
    let key = authorize(&state, &caller, Some(&w), Some(Scope::Append)).await?;
    let kind = body_kind(&headers)?;
    let idempotency_key = idempotency::key_of(&headers)?;
    let bytes = read_body(body, &headers, state.limits.max_body_bytes).await?;
    let pending = match idempotency::start(
        &state.idempotency,
        idempotency_key,
        &w,
        &key.id,
        kind,
        &bytes,
    )? {
        idempotency::Start::Run(pending) => pending,
        idempotency::Start::Replay(answer) => return Ok(idempotency::replay(answer)),
    };
    let committer = open_workspace(&state, &w, &key).await?.committer;
    let max_events = state.limits.max_events_per_request;
    let small = bytes.len() <= INLINE_ENCODE_BYTES;
    let appender = key.id.clone();
    let encode = move || {
        let text = body_text(&bytes)?;
        // The usual bodies are read as borrowed events; the owned path
        // reads the rest and answers every malformed body.
        let records = match ingest::borrowed_events(text, kind, max_events) {
            Some(events) => encode_events(&events, &appender),
            None => encode_events(&parse_events(text, kind, max_events)?, &appender),
        }?;
        ingest::check_numbers(text, kind)?;
        Ok::<_, ApiError>(records)
    };
    // Parsing a large body takes milliseconds: do it off the async workers,
    // so other connections are not held up, and in parallel across cores.
    // A small one takes microseconds, less than the thread hand-offs.
    let records = if small {
        encode()?
    } else {
        blocking(encode).await??
    };
    let commit = async move {
        // Waiting for the sync holds no thread.
        let receipts = committer.commit(records).await.map_err(|e| match e {
            CommitError::Append(e) => ApiError::from_log("appending", &e),
            CommitError::Closed => ApiError::unavailable(
                "shutting_down",
                "the server is stopping and appends nothing more; try again once it is back",
            ),
            CommitError::Lost => ApiError::internal("appending", &e),
        })?;
        Ok(receipts_json(&receipts))
    };
    let answer = idempotency::finish(pending, commit).await?;
    Ok(json_response(StatusCode::CREATED, answer))
}

// ---------------------------------------------------------------------------
// Reading

pub(super) fn query_pairs(uri: &Uri) -> Result<Vec<(String, String)>, ApiError> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|_| {
            ApiError::bad_request("invalid_parameter", "the query string cannot be decoded")
        })
}

fn export_failed(e: ExportError) -> ApiError {
    match e {
        ExportError::Log(e) => ApiError::from_log("reading events", &e),
        ExportError::BadRecord { seq, .. } => {
            eprintln!("chainlog serve: {e}");
            ApiError::unavailable(
                "storage_error",
                format!("record {seq} cannot be read: the log may be damaged; run GET …/verify"),
            )
        }
        other => ApiError::internal("reading events", &other),
    }
}

/// One page of matches as `{"events": [...], "count": n, "next_cursor": seq|null}`,
/// and its count.
pub(super) fn page(log: &Log, query: &Query) -> Result<(String, u64), ApiError> {
    let page_size = query.limit.unwrap_or(params::DEFAULT_PAGE_EVENTS);
    let mut probe = query.clone();
    probe.limit = Some(page_size + 1);
    let mut exporter = Exporter::new(
        Vec::with_capacity(4096),
        ExportOptions::new(ExportFormat::Json),
    )
    .map_err(|e| ApiError::internal("reading events", &e))?;
    let mut last = None;
    let mut more = false;
    let matches = log
        .query(&probe)
        .map_err(|e| ApiError::from_log("reading events", &e))?;
    for m in matches {
        let m = m.map_err(|e| ApiError::from_log("reading events", &e))?;
        if exporter.rows() == page_size {
            more = true;
            break;
        }
        exporter.write(&m).map_err(export_failed)?;
        last = Some(m.seq);
    }
    let count = exporter.rows();
    let rows = exporter
        .finish()
        .map_err(|e| ApiError::internal("reading events", &e))?;
    let rows = String::from_utf8(rows).map_err(|e| ApiError::internal("reading events", &e))?;
    let cursor = match (more, last) {
        (true, Some(seq)) => seq.to_string(),
        _ => "null".to_string(),
    };
    let body = format!(
        "{{\"events\":{},\"count\":{count},\"next_cursor\":{cursor}}}",
        rows.trim_end()
    );
    Ok((body, count))
}

async fn get_events(
    State(state): State<Shared>,
    caller: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    let w = path_segment(&caller, 3);
    let key = authorize(&state, &caller, Some(&w), Some(Scope::Read)).await?;
    let parsed = params::parse(&query_pairs(&uri)?, Endpoint::Events, Timestamp::now())?;
    let log = workspace_log(&state, &w, &key).await?;
    let permit = match state.query_slots.acquire(&w).await {
        Ok(permit) => permit,
        Err(busy) => return Ok(busy.into_response()),
    };
    let (body, rows) = blocking(move || {
        let _permit = permit;
        page(&log, &parsed.query)
    })
    .await??;
    let mut read = caller.read(&key, ReadKind::Query, rows, body.len());
    read.filters = uri.query().map(str::to_string);
    record_read(&state, Some(&w), read).await;
    Ok(json_response(StatusCode::OK, body))
}

async fn get_event(State(state): State<Shared>, caller: Caller) -> Result<Response, ApiError> {
    let w = path_segment(&caller, 3);
    let key = authorize(&state, &caller, Some(&w), Some(Scope::Read)).await?;
    let seq_text = path_segment(&caller, 5);
    let seq: u64 = seq_text.parse().map_err(|_| {
        ApiError::bad_request("invalid_parameter", "the event's seq must be a number")
    })?;
    let log = workspace_log(&state, &w, &key).await?;
    let query = Query {
        from_seq: Some(seq),
        limit: Some(1),
        ..Query::default()
    };
    let permit = match state.query_slots.acquire(&w).await {
        Ok(permit) => permit,
        Err(busy) => return Ok(busy.into_response()),
    };
    let (body, _) = blocking(move || {
        let _permit = permit;
        page(&log, &query)
    })
    .await??;
    let parsed: Value =
        serde_json::from_str(&body).map_err(|e| ApiError::internal("reading an event", &e))?;
    match parsed["events"].get(0) {
        Some(row) if row["seq"].as_u64() == Some(seq) => {
            let body = json!({ "event": row }).to_string();
            let read = caller.read(&key, ReadKind::Query, 1, body.len());
            record_read(&state, Some(&w), read).await;
            Ok(json_response(StatusCode::OK, body))
        }
        _ => Err(ApiError::not_found(
            "event_not_found",
            format!("no event has seq {seq}"),
        )),
    }
}

/// Buffers export output and sends it to the connection in chunks,
/// blocking (with a timeout) while the client is slow.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    buf: Vec<u8>,
    runtime: tokio::runtime::Handle,
    /// Bytes handed to the connection so far.
    sent: u64,
}

impl ChannelWriter {
    fn send(&mut self, chunk: Result<Bytes, io::Error>) -> io::Result<()> {
        let tx = self.tx.clone();
        let len = chunk.as_ref().map_or(0, |c| c.len() as u64);
        let sent = self.runtime.block_on(async move {
            tokio::time::timeout(EXPORT_STALL_TIMEOUT, tx.send(chunk)).await
        });
        match sent {
            Ok(Ok(())) => {
                self.sent += len;
                Ok(())
            }
            Ok(Err(_)) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the client went away",
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            )),
        }
    }

    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(EXPORT_CHUNK_BYTES + 4096),
        ));
        self.send(Ok(chunk))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= EXPORT_CHUNK_BYTES {
            self.send_buffered()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffered()
    }
}

/// The receiving end, as the body's stream.
struct ChunkStream(mpsc::Receiver<Result<Bytes, io::Error>>);

impl futures_core::Stream for ChunkStream {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().0.poll_recv(cx)
    }
}

async fn export(
    State(state): State<Shared>,
    caller: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    let w = path_segment(&caller, 3);
    let key = authorize(&state, &caller, Some(&w), Some(Scope::Read)).await?;
    let parsed = params::parse(&query_pairs(&uri)?, Endpoint::Export, Timestamp::now())?;
    let format = parsed.format.unwrap_or(ExportFormat::Json);
    let log = workspace_log(&state, &w, &key).await?;
    let permit = match state.export_slots.try_acquire(&w) {
        Ok(permit) => permit,
        Err(busy) => return Ok(busy.into_response()),
    };
    let (tx, rx) = mpsc::channel(EXPORT_QUEUE_CHUNKS);
    let runtime = tokio::runtime::Handle::current();
    let query = parsed.query;
    let (st, workspace) = (state.clone(), w.clone());
    let mut read = caller.read(&key, ReadKind::Export, 0, 0);
    read.filters = uri.query().map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut writer = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(EXPORT_CHUNK_BYTES + 4096),
            runtime,
            sent: 0,
        };
        let mut rows = 0u64;
        let result = (|| -> Result<(), ExportError> {
            let mut exporter = Exporter::new(&mut writer, ExportOptions::new(format))?;
            let mut matches = log.query(&query)?;
            let written = matches.try_for_each_view(|seq, hash, view| {
                exporter.write_view(seq, &hash, view)?;
                rows = exporter.rows();
                Ok::<(), ExportError>(())
            });
            written?;
            exporter.finish()?;
            Ok(())
        })();
        // The export is recorded once it ends, however it ends.
        let ended = match &result {
            Ok(()) => "complete",
            Err(ExportError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => "client_gone",
            Err(ExportError::Io(e)) if e.kind() == io::ErrorKind::TimedOut => "client_stalled",
            Err(_) => "failed",
        };
        read.rows = rows;
        read.bytes = writer.sent;
        read.extra.insert("ended".into(), ended.into());
        read.extra
            .insert("format".into(), format!("{format:?}").to_lowercase().into());
        match result {
            Ok(()) => {}
            Err(ExportError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                eprintln!("chainlog serve: export cut short: {e}");
                // An error item ends the body early, so the client sees an
                // incomplete transfer, never a silently short export.
                let _ = writer.send(Err(io::Error::other("export failed")));
            }
        }
        drop(writer);
        record_read_blocking(&st, Some(&workspace), &read);
    });
    let (content_type, extension) = match format {
        ExportFormat::Csv => ("text/csv; charset=utf-8", "csv"),
        ExportFormat::Json => ("application/json", "json"),
        ExportFormat::JsonLines => ("application/x-ndjson", "jsonl"),
    };
    let disposition = format!("attachment; filename=\"{w}-audit-log.{extension}\"");
    let mut response = Body::from_stream(ChunkStream(rx)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

#[derive(Serialize)]
struct VerifyAnswer<'a> {
    intact: bool,
    #[serde(flatten)]
    report: &'a Report,
}

async fn verify(State(state): State<Shared>, caller: Caller) -> Result<Response, ApiError> {
    let w = path_segment(&caller, 3);
    let key = authorize(&state, &caller, Some(&w), Some(Scope::Read)).await?;
    // The verifier reads the segment files itself: it must report on a log
    // so damaged that it cannot be opened, so it does not open the log.
    let dir = state.workspaces.dir(&w);
    let probe = dir.clone();
    if !blocking(move || probe.is_dir()).await? {
        return Err(ApiError::not_found(
            "workspace_not_found",
            format!("workspace {w:?} has no log yet"),
        ));
    }
    let permit = match state.verify_slots.acquire(&w).await {
        Ok(permit) => permit,
        Err(busy) => return Ok(busy.into_response()),
    };
    let report = blocking(move || {
        let _permit = permit;
        let options = VerifyOptions {
            threads: std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(2),
            checkpoint: None,
        };
        verify_dir_with(&FsStorage, &dir, &options, &mut |_| {})
    })
    .await?
    .map_err(|e| ApiError::from_log("verifying", &e))?;
    let intact = report.is_intact();
    let body = serde_json::to_string(&VerifyAnswer {
        intact,
        report: &report,
    })
    .map_err(|e| ApiError::internal("verifying", &e))?;
    let mut read = caller.read(&key, ReadKind::Verify, 0, body.len());
    read.extra.insert("intact".into(), intact.into());
    record_read(&state, Some(&w), read).await;
    Ok(json_response(StatusCode::OK, body))
}

async fn checkpoint(State(state): State<Shared>, caller: Caller) -> Result<Response, ApiError> {
    let w = path_segment(&caller, 3);
    let key = authorize(&state, &caller, Some(&w), Some(Scope::Read)).await?;
    if state.signer.is_none() {
        return Err(ApiError::not_found(
            "checkpoints_not_configured",
            "this server signs no checkpoints: start it with --checkpoint-key FILE (a secret key from `chainlog keygen`)",
        ));
    }
    let log = workspace_log(&state, &w, &key).await?;
    let st = state.clone();
    let answer = blocking(move || -> Result<Value, ApiError> {
        let signer = st
            .signer
            .as_ref()
            .ok_or_else(|| ApiError::internal("signing", &"no signer"))?;
        let checkpoint = log
            .checkpoint(&st.checkpoint_origin)
            .map_err(|e| ApiError::from_log("signing a checkpoint", &e))?;
        let note = checkpoint
            .sign(signer)
            .map_err(|e| ApiError::internal("signing a checkpoint", &e))?;
        Ok(json!({
            "origin": checkpoint.origin,
            "size": checkpoint.size,
            "root": base64::engine::general_purpose::STANDARD.encode(checkpoint.root),
            "head": checkpoint.head,
            "key": signer.verifier().to_text(),
            "note": note,
        }))
    })
    .await??;
    let body = answer.to_string();
    let read = caller.read(&key, ReadKind::Checkpoint, 0, body.len());
    record_read(&state, Some(&w), read).await;
    Ok(json_response(StatusCode::OK, body))
}

// ---------------------------------------------------------------------------
// Keys

/// Records key changes made over HTTP in the workspace's log.
struct ServerKeyAudit(Shared);

impl KeyAudit for ServerKeyAudit {
    fn record(
        &self,
        workspace: &str,
        create: bool,
        event: &Event,
    ) -> Result<Option<Receipt>, KeyError> {
        let audit_err = |reason: String| KeyError::Audit {
            workspace: workspace.to_string(),
            reason,
        };
        let log = self
            .0
            .workspaces
            .open(workspace, create)
            .map_err(|e| audit_err(e.to_string()))?
            .ok_or_else(|| audit_err("the workspace has no log".into()))?;
        log.append(event)
            .map(Some)
            .map_err(|e| audit_err(e.to_string()))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKeyRequest {
    scope: Scope,
}

fn issued_json(issued: &crate::server::keys::IssuedKey) -> Value {
    json!({
        "key": issued.text,
        "id": issued.key.id,
        "workspace": issued.key.workspace,
        "scope": issued.key.scope,
        "event_seq": issued.receipt.map(|r| r.seq),
    })
}

async fn list_keys(State(state): State<Shared>, caller: Caller) -> Result<Response, ApiError> {
    let w = path_segment(&caller, 3);
    let key = authorize(&state, &caller, Some(&w), Some(Scope::Admin)).await?;
    let (st, ws) = (state.clone(), w.clone());
    let keys: Vec<KeyInfo> = blocking(move || st.keys.list(Some(&ws)))
        .await?
        .map_err(|e| ApiError::from_keys("listing keys", &e))?;
    let body = json!({ "keys": keys }).to_string();
    let read = caller.read(&key, ReadKind::KeyList, keys.len() as u64, body.len());
    record_read(&state, Some(&w), read).await;
    Ok(json_response(StatusCode::OK, body))
}

async fn create_key(
    State(state): State<Shared>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let w = path_segment(&caller, 3);
    let key = authorize(&state, &caller, Some(&w), Some(Scope::Admin)).await?;
    if body_kind(&headers)? != BodyKind::Json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/json: {\"scope\": \"append\" | \"read\" | \"admin\"}",
        ));
    }
    let bytes = read_body(body, &headers, MAX_KEY_REQUEST_BYTES).await?;
    let request: CreateKeyRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid_request",
            format!(
                "expected {{\"scope\": \"append\" | \"read\" | \"admin\"}}: {}",
                json_message(&e)
            ),
        )
    })?;
    let by = caller.changed_by(&key);
    let st = state.clone();
    let issued = blocking(move || {
        st.keys
            .create(&w, request.scope, &by, &ServerKeyAudit(st.clone()))
    })
    .await?
    .map_err(|e| ApiError::from_keys("creating a key", &e))?;
    Ok((StatusCode::CREATED, Json(issued_json(&issued))).into_response())
}

async fn rotate_key(State(state): State<Shared>, caller: Caller) -> Result<Response, ApiError> {
    let w = path_segment(&caller, 3);
    let key = authorize(&state, &caller, Some(&w), Some(Scope::Admin)).await?;
    let id = path_segment(&caller, 5);
    let by = caller.changed_by(&key);
    let st = state.clone();
    let issued = blocking(move || {
        st.keys
            .rotate(&id, Some(&w), &by, &ServerKeyAudit(st.clone()))
    })
    .await?
    .map_err(|e| ApiError::from_keys("rotating a key", &e))?;
    Ok(Json(issued_json(&issued)).into_response())
}

async fn revoke_key(State(state): State<Shared>, caller: Caller) -> Result<Response, ApiError> {
    let w = path_segment(&caller, 3);
    let key = authorize(&state, &caller, Some(&w), Some(Scope::Admin)).await?;
    let id = path_segment(&caller, 5);
    let by = caller.changed_by(&key);
    let st = state.clone();
    let revoked = blocking(move || {
        st.keys
            .revoke(&id, Some(&w), &by, &ServerKeyAudit(st.clone()))
    })
    .await?
    .map_err(|e| ApiError::from_keys("revoking a key", &e))?;
    Ok(Json(json!({
        "id": revoked.key.id,
        "revoked_at": revoked.key.revoked_at,
        "event_seq": revoked.receipt.map(|r| r.seq),
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::json::cases::{any_event, encoded, EventCase};
    use proptest::prelude::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("%2e%2e"), "..");
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("acme"), "acme");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }

    #[test]
    fn body_errors_name_the_event() {
        let max = 3;
        let bad_field = r#"[{"event":"a.b","actor":"x"},{"event":"a.b"}]"#;
        let e = parse_events(bad_field, BodyKind::Json, max).unwrap_err();
        assert_eq!(e.error, "invalid_event");
        assert!(
            e.detail
                .starts_with("event at index 1: missing field `actor`"),
            "{}",
            e.detail
        );
        assert_eq!(e.detail.matches(" at line ").count(), 1, "{}", e.detail);

        let e = parse_events(r#"[{"event":"a.b","actor":"x"},"#, BodyKind::Json, max).unwrap_err();
        assert_eq!(e.error, "malformed_json");

        let e =
            parse_events(r#"[{"event":"a.b","actor":"x"}] x"#, BodyKind::Json, max).unwrap_err();
        assert_eq!(e.error, "malformed_json");

        let four = r#"[{"event":"a.b","actor":"x"},{"event":"a.b","actor":"x"},{"event":"a.b","actor":"x"},{"event":"a.b","actor":"x"}]"#;
        assert_eq!(
            parse_events(four, BodyKind::Json, max).unwrap_err().error,
            "too_many_events"
        );
        assert_eq!(parse_events(four, BodyKind::Json, 4).unwrap().len(), 4);

        let nd = "{\"event\":\"a.b\",\"actor\":\"x\"}\r\n\n{\"event\":\"a.b\",\"actor\":\"x\",\"bogus\":1}\n";
        let e = parse_events(nd, BodyKind::NdJson, max).unwrap_err();
        assert!(
            e.detail.starts_with("line 3: unknown field `bogus`"),
            "{}",
            e.detail
        );

        let e = parse_events("42", BodyKind::Json, max).unwrap_err();
        assert_eq!(e.error, "malformed_json");
    }

    /// A body of `cases` as `kind` holds them, separators drawn from `seed`.
    fn body_of(cases: &[EventCase], kind: BodyKind, seed: u64) -> String {
        let pick = |i: usize, choices: &[&'static str]| {
            choices[(seed >> (i % 60)) as usize % choices.len()]
        };
        match kind {
            BodyKind::Json if cases.len() == 1 && seed % 2 == 0 => cases[0].text.clone(),
            BodyKind::Json => {
                let items: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
                format!(
                    "{}[{}]{}",
                    pick(0, &["", " ", "\n"]),
                    items.join(pick(1, &[",", " , ", ",\r\n"])),
                    pick(2, &["", "\n", " "])
                )
            }
            // A line holds one event: no newlines inside.
            BodyKind::NdJson => cases
                .iter()
                .enumerate()
                .map(|(i, c)| c.text.replace('\n', " ") + pick(i, &["\n", "\r\n", "\n\n", "\n \n"]))
                .collect(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// The borrowed path takes a body exactly when the owned path
        /// parses it (and nothing in it is declined), and then appends the
        /// same records or fails on the same event with the same error.
        #[test]
        fn the_borrowed_path_appends_what_the_owned_path_does(
            cases in prop::collection::vec(any_event(), 0..6),
            ndjson in any::<bool>(),
            max in 0usize..8,
            seed in any::<u64>(),
        ) {
            let kind = if ndjson { BodyKind::NdJson } else { BodyKind::Json };
            let body = body_of(&cases, kind, seed);
            let before = Timestamp::now();
            let owned = parse_events(&body, kind, max);
            let borrowed = ingest::borrowed_events(&body, kind, max);
            let after = Timestamp::now();
            match borrowed {
                Some(mut borrowed) => {
                    let owned = owned.unwrap_or_else(|e| panic!("owned path refused ({e}) {body:?}"));
                    prop_assert_eq!(borrowed.len(), owned.len());
                    let now = before..=after;
                    for (b, o) in borrowed.iter_mut().zip(&owned) {
                        if now.contains(&b.timestamp) && now.contains(&o.timestamp) {
                            b.timestamp = o.timestamp;
                        }
                        prop_assert_eq!(
                            encoded(|out| b.encode_record(out)),
                            encoded(|out| o.encode_record(out)),
                            "{:?}", body
                        );
                    }
                    prop_assert_eq!(encode_events(&borrowed, "k"), encode_events(&owned, "k"));
                }
                None => prop_assert!(
                    owned.is_err() || cases.iter().any(|c| !c.takeable),
                    "declined a body the owned path takes: {:?}", body
                ),
            }
        }
    }

    #[test]
    fn the_usual_bodies_go_the_borrowed_way() {
        let event = r#"{"event":"pcap.download","actor":"client-1@acme.io","node":"nyc-edge-01","resource":"a3f7c2b1","ip":"203.0.113.42","context":{"bytes":18231,"i":7}}"#;
        let array = format!("[{}]", vec![event; 1000].join(","));
        let taken =
            |body: &str, kind, max| ingest::borrowed_events(body, kind, max).map(|e| e.len());
        assert_eq!(taken(&array, BodyKind::Json, 1000), Some(1000));
        assert_eq!(taken(event, BodyKind::Json, 1), Some(1));
        assert_eq!(
            taken(&format!(" \n{event}\r\n"), BodyKind::Json, 1),
            Some(1)
        );
        assert_eq!(taken(" [ ] ", BodyKind::Json, 1), Some(0));
        let lines = format!("{event}\r\n\n  \n{event}\n{event}");
        assert_eq!(taken(&lines, BodyKind::NdJson, 3), Some(3));
        assert_eq!(taken("", BodyKind::NdJson, 3), Some(0));
        // Over the limit, or anything amiss: the owned path answers.
        assert_eq!(taken(&array, BodyKind::Json, 999), None);
        assert_eq!(taken(&lines, BodyKind::NdJson, 2), None);
        for bad in [
            format!("[{event},]"),
            format!("[{event}] x"),
            format!("[{event}"),
            format!("[{event},1]"),
            format!("[,{event}]"),
            format!("{event} {event}"),
            "[".to_string(),
            "42".to_string(),
        ] {
            assert_eq!(taken(&bad, BodyKind::Json, 10), None, "{bad}");
            assert!(parse_events(&bad, BodyKind::Json, 10).is_err(), "{bad}");
        }
    }
}
