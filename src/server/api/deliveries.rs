//! Delivery routes (admin scope): list, show, put and remove a workspace's
//! SIEM destinations ([`crate::server::deliveries`]).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::event::{Event, Timestamp};
use crate::server::deliveries::config::{self, Destination, Kind};
use crate::server::deliveries::{
    lag, position, status_json, DeliveryError, EVENT_DELIVERY_CONFIGURED, EVENT_DELIVERY_REMOVED,
};
use crate::server::error::ApiError;
use crate::server::keys::Scope;

use super::*;

/// The body of a `PUT …/deliveries/{name}`.
const DESTINATION_REQUEST: JsonRequest = JsonRequest {
    max_bytes: 16 * 1024,
    error: "invalid_delivery",
    expected: "a destination (docs/SIEM.md)",
};

fn delivery_error(doing: &str, e: DeliveryError) -> ApiError {
    match e {
        DeliveryError::NotFound(name) => ApiError::not_found(
            "no_such_delivery",
            format!("this workspace has no destination named {name:?}"),
        ),
        e @ (DeliveryError::Invalid { .. }
        | DeliveryError::InDestination { .. }
        | DeliveryError::Exists(_)
        | DeliveryError::TooMany(_)
        | DeliveryError::Workspace(_)) => ApiError::bad_request("invalid_delivery", e.to_string()),
        DeliveryError::NotRecorded(e) => ApiError::from_log("recording the change", &e),
        e => ApiError::internal(doing, &e),
    }
}

/// The workspace's destinations with the status of each.
fn shown(state: &Shared, workspace: &str, list: &[Destination]) -> Vec<Value> {
    let statuses = state.deliveries.statuses(Some(workspace));
    let durable_end = state
        .workspaces
        .cached(workspace)
        .map(|log| log.durable_next_seq());
    let now = Timestamp::now();
    list.iter()
        .map(|d| {
            let status = statuses
                .iter()
                .find(|(_, running, _)| running == d)
                .map(|(_, _, s)| s);
            let lag = status.zip(durable_end).map(|(s, end)| lag(s, end, now));
            status_json(d, status, lag.as_ref())
        })
        .collect()
}

async fn load(state: &Shared, workspace: &str) -> Result<Vec<Destination>, ApiError> {
    let (dir, w) = (state.deliveries.data_dir.clone(), workspace.to_string());
    blocking(move || config::load(&dir, &w))
        .await?
        .map_err(|e| delivery_error("reading the deliveries", e))
}

pub(super) async fn list_deliveries(
    State(state): State<Shared>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let (w, _) = authorize_workspace(&state, &caller, Scope::Admin).await?;
    let list = load(&state, &w).await?;
    Ok(Json(json!({ "deliveries": shown(&state, &w, &list) })).into_response())
}

pub(super) async fn get_delivery(
    State(state): State<Shared>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let (w, _) = authorize_workspace(&state, &caller, Scope::Admin).await?;
    let name = path_segment(&caller, 5);
    let list = load(&state, &w).await?;
    let found: Vec<Destination> = list.into_iter().filter(|d| d.name == name).collect();
    match shown(&state, &w, &found).pop() {
        Some(one) => Ok(Json(one).into_response()),
        None => Err(delivery_error("", DeliveryError::NotFound(name))),
    }
}

/// Appends a `delivery.*` event for a change made over HTTP, before the
/// change is saved (as key changes are: record, then apply): a change the
/// log cannot record is not made.
fn record_change(state: &Shared, workspace: &str, event: &Event) -> Result<u64, DeliveryError> {
    match state.workspaces.open(workspace, false) {
        Ok(Some(log)) => log.append(event).map(|r| r.seq),
        Ok(None) => Err(crate::Error::NotFound(workspace.into())),
        Err(e) => Err(e),
    }
    .map_err(DeliveryError::NotRecorded)
}

pub(super) async fn put_delivery(
    State(state): State<Shared>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (w, key) = authorize_workspace(&state, &caller, Scope::Admin).await?;
    let name = path_segment(&caller, 5);
    let mut wanted: Destination = read_json(body, &headers, &DESTINATION_REQUEST).await?;
    if !wanted.name.is_empty() && wanted.name != name {
        return Err(ApiError::bad_request(
            "invalid_delivery",
            "`name` differs from the name in the path",
        ));
    }
    if !wanted.id.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_delivery",
            "`id` is assigned by the server",
        ));
    }
    config::validate_name(&name).map_err(|e| delivery_error("", e))?;
    wanted.name = name.clone();
    let actor = caller.changed_by(&key).actor;
    let ip = caller.ip;
    let st = state.clone();
    let ws = w.clone();
    let (created, generated, saved, seq) = blocking(move || {
        let dir = st.deliveries.data_dir.clone();
        config::change(&dir, &ws, |list| {
            let old = list.iter().position(|d| d.name == wanted.name);
            let mut generated = None;
            match old.map(|i| &list[i]) {
                Some(old) => {
                    // A changed destination keeps its id, so its position,
                    // and its secret or token unless a new one is given.
                    wanted.id = old.id.clone();
                    if wanted.kind == old.kind {
                        wanted.secret = wanted.secret.take().or(old.secret.clone());
                        wanted.token = wanted.token.take().or(old.token.clone());
                    }
                }
                None => wanted.id = config::new_id(),
            }
            if wanted.kind == Kind::Webhook && wanted.secret.is_none() {
                let secret = config::new_secret()?;
                generated = Some(secret.clone());
                wanted.secret = Some(secret);
            }
            wanted.validate()?;
            match old {
                Some(i) => list[i] = wanted.clone(),
                None => list.push(wanted.clone()),
            }
            config::check_all(list)?;
            let mut event = Event::new(Timestamp::now(), EVENT_DELIVERY_CONFIGURED, actor);
            event.source_ip = Some(ip);
            event.resource = Some(wanted.name.clone());
            event
                .context
                .insert("destination".into(), wanted.redacted());
            event.context.insert("created".into(), old.is_none().into());
            let seq = record_change(&st, &ws, &event)?;
            Ok((old.is_none(), generated, wanted, seq))
        })
    })
    .await?
    .map_err(|e| delivery_error("changing the deliveries", e))?;
    state.deliveries.poke();
    let mut answer = shown(&state, &w, std::slice::from_ref(&saved))
        .pop()
        .unwrap_or(Value::Null);
    if let Some(map) = answer.as_object_mut() {
        map.insert("event_seq".into(), json!(seq));
        if let Some(secret) = generated {
            map.insert("secret".into(), secret.into());
        }
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(answer)).into_response())
}

pub(super) async fn delete_delivery(
    State(state): State<Shared>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let (w, key) = authorize_workspace(&state, &caller, Scope::Admin).await?;
    let name = path_segment(&caller, 5);
    let actor = caller.changed_by(&key).actor;
    let ip = caller.ip;
    let (st, ws, n) = (state.clone(), w.clone(), name.clone());
    let seq = blocking(move || {
        let dir = st.deliveries.data_dir.clone();
        let seq = config::change(&dir, &ws, |list| {
            let i = list
                .iter()
                .position(|d| d.name == n)
                .ok_or_else(|| DeliveryError::NotFound(n.clone()))?;
            let removed = list.remove(i);
            let mut event = Event::new(Timestamp::now(), EVENT_DELIVERY_REMOVED, actor);
            event.source_ip = Some(ip);
            event.resource = Some(n.clone());
            event
                .context
                .insert("destination".into(), removed.redacted());
            record_change(&st, &ws, &event)
        })?;
        position::remove(&dir, &ws, &n)?;
        Ok::<_, DeliveryError>(seq)
    })
    .await?
    .map_err(|e| delivery_error("changing the deliveries", e))?;
    state.deliveries.poke();
    Ok(Json(json!({ "removed": name, "event_seq": seq })).into_response())
}
