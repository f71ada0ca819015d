//! `GET /v1/server-log/events`: the server's own log, for admin keys.
//!
//! The server's log holds what no workspace's log can: refusals that name
//! no existing workspace (`/v1/key` sign-ins with a bad key, unknown routes,
//! request heads too large or malformed) and the reads of this log. Admin
//! keys read it (of the workspaces in [`AuditPolicy::server_log_readers`]
//! when set), with the filters of `GET …/events`; each read is recorded in
//! it.
//!
//! [`AuditPolicy::server_log_readers`]: super::audit::AuditPolicy::server_log_readers

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde_json::Map;

use crate::event::Timestamp;
use crate::server::api::{self, Caller};
use crate::server::audit::EVENT_ACCESS_DENIED;
use crate::server::error::ApiError;
use crate::server::keys::Scope;
use crate::server::params::{self, Endpoint};
use crate::server::reads::{record_read, ReadKind};
use crate::server::AppState;

/// Pages through the server's log.
pub(super) async fn events(
    State(state): State<std::sync::Arc<AppState>>,
    caller: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    let key = api::authorize(&state, &caller, None, Some(Scope::Admin)).await?;
    if let Some(readers) = &state.limits.audit.server_log_readers {
        if !readers.contains(&key.workspace) {
            let mut extra = Map::new();
            extra.insert("key_workspace".into(), key.workspace.clone().into());
            let failure = caller.failure(
                EVENT_ACCESS_DENIED,
                Some(key.id.clone()),
                "not_a_server_log_reader",
                extra,
            );
            api::record_failure(&state, None, failure).await;
            return Err(ApiError::forbidden(
                "only the admin keys of the workspaces named by --server-log-readers read the server's log",
            ));
        }
    }
    let parsed = params::parse(&api::query_pairs(&uri)?, Endpoint::Events, Timestamp::now())?;
    let st = state.clone();
    let (body, rows) = api::blocking(move || {
        let log = st
            .workspaces
            .server_log()
            .map_err(|e| ApiError::from_log("opening the server's log", &e))?;
        api::page(&log, &parsed.query, parsed.order)
    })
    .await??;
    let mut read = caller.read(&key, ReadKind::Query, rows, body.len());
    read.filters = uri.query().map(str::to_string);
    record_read(&state, None, read).await;
    Ok(api::json_response(StatusCode::OK, body))
}
