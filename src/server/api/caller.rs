//! Who is asking: the caller, its key, and refusals recorded before they are answered.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, Method};
use serde_json::{Map, Value};

use crate::log::Log;
use crate::server::audit::{Failure, Target, EVENT_ACCESS_DENIED, EVENT_AUTH_FAILED};
use crate::server::error::ApiError;
use crate::server::keys::{ApiKey, ChangedBy, KeyCheck, Scope, Via};
use crate::server::workspace::{validate_workspace_name, Open};

use super::*;

/// The presented credentials.
#[derive(Debug, Clone)]
pub(super) enum Bearer {
    Missing,
    Malformed,
    Key(String),
}

/// The client: its address, the request line and its key.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(in crate::server) ip: IpAddr,
    pub(in crate::server) method: Method,
    pub(in crate::server) path: String,
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
    pub(super) fn changed_by(&self, key: &ApiKey) -> ChangedBy {
        ChangedBy {
            actor: format!("apikey:{}", key.id),
            ip: Some(self.ip),
            via: Via::Http,
        }
    }
}

/// Decodes `%XX` escapes; invalid UTF-8 becomes U+FFFD (and so an invalid
/// workspace name).
pub(super) fn percent_decode(raw: &str) -> String {
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
pub(in crate::server) fn path_segment(caller: &Caller, index: usize) -> String {
    caller
        .path
        .split('/')
        .nth(index)
        .map(percent_decode)
        .unwrap_or_default()
}

/// The caller's key when it presented a valid one (no refusal recorded).
pub(in crate::server) fn presented_key(state: &Shared, caller: &Caller) -> Option<ApiKey> {
    match &caller.bearer {
        Bearer::Key(text) => match state.keys.check(text).0 {
            KeyCheck::Valid(key) => Some(key),
            KeyCheck::Invalid { .. } => None,
        },
        Bearer::Missing | Bearer::Malformed => None,
    }
}

/// The workspace a `/v1/workspaces/{w}/…` request names, and the caller's
/// key once [`authorize`] found it good for that workspace and `needed`.
pub(in crate::server) async fn authorize_workspace(
    state: &Shared,
    caller: &Caller,
    needed: Scope,
) -> Result<(String, ApiKey), ApiError> {
    let w = path_segment(caller, 3);
    let key = authorize(state, caller, Some(&w), Some(needed)).await?;
    Ok((w, key))
}

/// Checks the caller's key for `workspace` (if any) and `needed` (if any).
/// Every refusal is recorded before it is answered.
pub(in crate::server) async fn authorize(
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
pub(in crate::server) async fn record_failure(
    state: &Shared,
    workspace: Option<&str>,
    failure: Failure,
) {
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
pub(super) async fn existing_log(state: &Shared, workspace: &str) -> Option<Arc<Log>> {
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
pub(super) async fn workspace_log(
    state: &Shared,
    workspace: &str,
    key: &ApiKey,
) -> Result<Arc<Log>, ApiError> {
    Ok(open_workspace(state, workspace, key).await?.log)
}

/// The workspace's log and its commit queue, opened as by [`workspace_log`].
pub(super) async fn open_workspace(
    state: &Shared,
    workspace: &str,
    key: &ApiKey,
) -> Result<Open, ApiError> {
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
pub(in crate::server) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal("a blocking task", &e))
}
