//! Requests refused before any key is read, as events: 404 for a path with
//! no route, 405 for a method a route does not take, and the request heads
//! hyper refuses itself (431 too large, 400 malformed). Each is a
//! `request.refused` event under the refusal budgets of [`super::audit`]
//! (or, when the request carried a valid key, an `access.denied` security
//! event), in the log of the workspace its path names when that exists,
//! else in the server's log.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::State;
use serde_json::{Map, Value};

use crate::server::api::{path_segment, presented_key, record_failure, Caller};
use crate::server::audit::{Failure, EVENT_ACCESS_DENIED, EVENT_REQUEST_REFUSED};
use crate::server::conn::{HeadRefusal, OnHeadRefused};
use crate::server::error::ApiError;
use crate::server::AppState;

type Shared = Arc<AppState>;

impl Caller {
    /// A refusal of this request.
    pub(crate) fn failure(
        &self,
        event_type: &'static str,
        key_id: Option<String>,
        reason: &'static str,
        extra: Map<String, Value>,
    ) -> Failure {
        Failure {
            event_type,
            ip: self.ip,
            key_id,
            reason,
            method: self.method.to_string(),
            path: self.path.clone(),
            extra,
        }
    }
}

/// Records a request refused for its path or method (in the log of the
/// workspace its path names, if that exists), then answers `error`. With a
/// valid key it is a security event (a key probing routes, or trying to
/// change an event), recorded as `access.denied` with the key's id.
async fn refused(
    state: &Shared,
    caller: &Caller,
    reason: &'static str,
    error: ApiError,
) -> ApiError {
    let workspace = caller
        .path
        .starts_with("/v1/workspaces/")
        .then(|| path_segment(caller, 3));
    let mut extra = Map::new();
    extra.insert("status".into(), error.status.as_u16().into());
    let failure = match presented_key(state, caller) {
        Some(key) => {
            extra.insert("key_workspace".into(), key.workspace.clone().into());
            extra.insert("key_scope".into(), key.scope.as_str().into());
            caller.failure(EVENT_ACCESS_DENIED, Some(key.id), reason, extra)
        }
        None => caller.failure(EVENT_REQUEST_REFUSED, None, reason, extra),
    };
    record_failure(state, workspace.as_deref(), failure).await;
    error
}

pub(super) async fn not_found(State(state): State<Shared>, caller: Caller) -> ApiError {
    let error = ApiError::not_found(
        "not_found",
        format!(
            "no endpoint at {:?}; see the README's HTTP API section",
            caller.path.chars().take(200).collect::<String>()
        ),
    );
    refused(&state, &caller, "not_found", error).await
}

type Refusing = Pin<Box<dyn Future<Output = ApiError> + Send>>;

pub(super) fn not_allowed(
    allow: &'static str,
) -> impl Fn(State<Shared>, Caller) -> Refusing + Clone + Send + Sync + 'static {
    method_refused(allow, "")
}

pub(super) fn events_not_editable(
    allow: &'static str,
) -> impl Fn(State<Shared>, Caller) -> Refusing + Clone + Send + Sync + 'static {
    method_refused(
        allow,
        ": events are append-only and can never be modified or deleted",
    )
}

/// A handler refusing the method with 405, saying `why` (if anything) and
/// what is allowed.
fn method_refused(
    allow: &'static str,
    why: &'static str,
) -> impl Fn(State<Shared>, Caller) -> Refusing + Clone + Send + Sync + 'static {
    move |State(state): State<Shared>, caller: Caller| {
        Box::pin(async move {
            let error = ApiError::method_not_allowed(
                allow,
                format!("{} is not allowed{why} (allowed: {allow})", caller.method),
            );
            refused(&state, &caller, "method_not_allowed", error).await
        })
    }
}

/// Records the request heads hyper refused itself (431, 400) in the
/// server's log.
pub(crate) fn head_refusals(state: Shared) -> OnHeadRefused {
    Arc::new(move |peer: SocketAddr, why: HeadRefusal| {
        let (reason, status) = match why {
            HeadRefusal::TooLarge => ("header_too_large", 431),
            HeadRefusal::Malformed => ("malformed_request", 400),
        };
        let mut extra = Map::new();
        extra.insert("status".into(), status.into());
        let failure = Failure {
            event_type: EVENT_REQUEST_REFUSED,
            ip: peer.ip(),
            key_id: None,
            reason,
            method: String::new(),
            path: String::new(),
            extra,
        };
        let state = state.clone();
        tokio::spawn(async move { record_failure(&state, None, failure).await });
    })
}
