//! The routes and their handlers.

mod append;
mod caller;
mod deliveries;
mod evidence;
mod keys;
mod pages;
mod read;
mod summary;
mod tail;
#[cfg(test)]
mod tests;

use self::{append::*, caller::*, keys::*, pages::*, read::*};
pub(super) use append::json_response;
pub(super) use append::too_large as too_large_answer;
pub(super) use caller::authorize;
pub(super) use caller::blocking;
pub(super) use caller::path_segment;
pub(super) use caller::presented_key;
pub(super) use caller::record_failure;
pub(crate) use caller::write_summaries;
pub(crate) use caller::write_summaries_every_second;
pub(crate) use caller::Caller;
pub(super) use read::page;
pub(super) use read::query_pairs;
pub(super) use read::ChunkStream;
pub(super) use tail::read_batch;
pub(super) use tail::tail_slots;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::Router;

use crate::server::error::ApiError;
use crate::server::refusals;
use crate::server::AppState;

/// The dashboard page: HTML, CSS and JS in one file.
const DASHBOARD_HTML: &str = include_str!("../dashboard.html");
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
        .route("/", get_only(dashboard))
        .route("/healthz", get_only(healthz))
        .route("/v1/key", get_only(whoami))
        .route("/v1/server-log/events", get_only(super::server_log::events))
        .route(
            "/v1/workspaces/{w}/events",
            get(get_events)
                .post(post_events)
                .fallback(refusals::events_not_editable("GET, POST")),
        )
        .route("/v1/workspaces/{w}/events/stream", get_only(tail::stream))
        .route(
            "/v1/workspaces/{w}/events/summary",
            get_only(summary::get_summary),
        )
        .route(
            "/v1/workspaces/{w}/events/{seq}/proof",
            get_only(summary::get_proof),
        )
        .route(
            "/v1/workspaces/{w}/events/{seq}",
            get(get_event).fallback(refusals::events_not_editable("GET")),
        )
        .route("/v1/workspaces/{w}/export", get_only(export))
        .route("/v1/workspaces/{w}/verify", get_only(verify))
        .route("/v1/workspaces/{w}/checkpoint", get_only(checkpoint))
        .route(
            "/v1/workspaces/{w}/checkpoint/witnessed",
            get_only(read::witnessed_checkpoint),
        )
        .route(
            "/v1/workspaces/{w}/evidence",
            get_only(evidence::evidence_pack),
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
            "/v1/workspaces/{w}/deliveries",
            get_only(deliveries::list_deliveries),
        )
        .route(
            "/v1/workspaces/{w}/deliveries/{name}",
            get(deliveries::get_delivery)
                .put(deliveries::put_delivery)
                .delete(deliveries::delete_delivery)
                .fallback(refusals::not_allowed("GET, PUT, DELETE")),
        )
        .route(
            "/v1/workspaces/{w}/keys/{id}/rotate",
            post(rotate_key).fallback(refusals::not_allowed("POST")),
        )
        .fallback(refusals::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// A route that answers GET with `handler`, and any other method with 405
/// naming GET.
fn get_only<H, T>(handler: H) -> MethodRouter<Shared>
where
    H: Handler<T, Shared>,
    T: 'static,
{
    get(handler).fallback(refusals::not_allowed("GET"))
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
