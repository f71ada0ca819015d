//! Key management routes: list, create, revoke and rotate a workspace's API keys.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::event::Event;
use crate::log::Receipt;
use crate::server::error::ApiError;
use crate::server::keys::{ChangedBy, KeyAudit, KeyError, KeyInfo, KeyStore, Scope};
use crate::server::reads::{record_read, ReadKind};

use super::*;

/// The body of a `POST …/keys`.
const CREATE_KEY_REQUEST: JsonRequest = JsonRequest {
    max_bytes: 4096,
    error: "invalid_request",
    expected: "{\"scope\": \"append\" | \"read\" | \"admin\"}",
};

/// Records key changes made over HTTP in the workspace's log.
pub(super) struct ServerKeyAudit(Shared);

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
pub(super) struct CreateKeyRequest {
    pub(super) scope: Scope,
}

pub(super) fn issued_json(issued: &crate::server::keys::IssuedKey) -> Value {
    json!({
        "key": issued.text,
        "id": issued.key.id,
        "workspace": issued.key.workspace,
        "scope": issued.key.scope,
        "event_seq": issued.receipt.map(|r| r.seq),
    })
}

pub(super) async fn list_keys(
    State(state): State<Shared>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let (w, key) = authorize_workspace(&state, &caller, Scope::Admin).await?;
    let (st, ws) = (state.clone(), w.clone());
    let keys: Vec<KeyInfo> = blocking(move || st.keys.list(Some(&ws)))
        .await?
        .map_err(|e| ApiError::from_keys("listing keys", &e))?;
    let body = json!({ "keys": keys }).to_string();
    let read = caller.read(&key, ReadKind::KeyList, keys.len() as u64, body.len());
    record_read(&state, Some(&w), read).await;
    Ok(json_response(StatusCode::OK, body))
}

pub(super) async fn create_key(
    State(state): State<Shared>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (w, key) = authorize_workspace(&state, &caller, Scope::Admin).await?;
    let request: CreateKeyRequest = read_json(body, &headers, &CREATE_KEY_REQUEST).await?;
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

pub(super) async fn rotate_key(
    State(state): State<Shared>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let issued = change_named_key(
        &state,
        &caller,
        "rotating a key",
        |keys, id, w, by, audit| keys.rotate(id, Some(w), by, audit),
    )
    .await?;
    Ok(Json(issued_json(&issued)).into_response())
}

pub(super) async fn revoke_key(
    State(state): State<Shared>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let revoked = change_named_key(
        &state,
        &caller,
        "revoking a key",
        |keys, id, w, by, audit| keys.revoke(id, Some(w), by, audit),
    )
    .await?;
    Ok(Json(json!({
        "id": revoked.key.id,
        "revoked_at": revoked.key.revoked_at,
        "event_seq": revoked.receipt.map(|r| r.seq),
    }))
    .into_response())
}

/// For an admin key of the path's workspace, runs `change` on the key the
/// path names (`…/keys/{id}…`), on a blocking thread.
async fn change_named_key<T: Send + 'static>(
    state: &Shared,
    caller: &Caller,
    doing: &'static str,
    change: impl FnOnce(&KeyStore, &str, &str, &ChangedBy, &ServerKeyAudit) -> Result<T, KeyError>
        + Send
        + 'static,
) -> Result<T, ApiError> {
    let w = path_segment(caller, 3);
    let key = authorize(state, caller, Some(&w), Some(Scope::Admin)).await?;
    let id = path_segment(caller, 5);
    let by = caller.changed_by(&key);
    let st = state.clone();
    blocking(move || change(&st.keys, &id, &w, &by, &ServerKeyAudit(st.clone())))
        .await?
        .map_err(|e| ApiError::from_keys(doing, &e))
}
