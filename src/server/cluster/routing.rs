//! The cluster's middleware: every `/v1/workspaces/{w}/…` request on a
//! writer node is served here, taken here, or forwarded to the holder; on a
//! read-only replica, every request that is not a GET or HEAD is refused.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::forward::{forward, ForwardError, FORWARDED_HEADER};
use super::{Cluster, Route};
use crate::cluster::ClusterError;
use crate::server::error::ApiError;
use crate::server::workspace::validate_workspace_name;
use crate::server::AppState;

type Shared = Arc<AppState>;

/// The workspace a `/v1/workspaces/{w}/…` path names (undecoded: a name
/// needing percent-decoding is invalid anyway).
fn workspace_in(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/workspaces/")?;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// 503 answers carry `Retry-After: 1` when they carry none: a client
/// retries, and reaches the holder once the lease settled.
fn retry_soon(mut response: Response) -> Response {
    if response.status() == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .entry(header::RETRY_AFTER)
            .or_insert(HeaderValue::from_static("1"));
    }
    response
}

fn not_holder(detail: String) -> Response {
    retry_soon(ApiError::unavailable("not_holder", detail).into_response())
}

fn bucket_unavailable(what: &str, e: &ClusterError) -> Response {
    eprintln!("chainlog serve: {what}: {e}");
    retry_soon(
        ApiError::unavailable(
            "bucket_unavailable",
            format!("{what} needs the bucket, which did not answer; try again shortly"),
        )
        .into_response(),
    )
}

/// The middleware.
pub(crate) async fn route(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let Some(cluster) = state.workspaces.cluster().cloned() else {
        return next.run(request).await;
    };
    if cluster.is_read_only() {
        if matches!(*request.method(), Method::GET | Method::HEAD) {
            return next.run(request).await;
        }
        return ApiError::method_not_allowed(
            "GET, HEAD",
            format!(
                "this server is a read-only replica of {}: send appends and changes to a writer node (chainlog serve --bucket)",
                cluster.target()
            ),
        )
        .into_response();
    }
    let Some(w) = workspace_in(request.uri().path()).map(str::to_string) else {
        return next.run(request).await;
    };
    if validate_workspace_name(&w).is_err() || state.workspaces.cached_open(&w).is_some() {
        return retry_soon(next.run(request).await);
    }
    let forwarded = request.headers().contains_key(FORWARDED_HEADER);
    let (c, name) = (cluster.clone(), w.clone());
    let route = match tokio::task::spawn_blocking(move || c.route(&name)).await {
        Ok(Ok(route)) => route,
        Ok(Err(e)) => return bucket_unavailable("finding the workspace's holder", &e),
        Err(e) => return ApiError::internal("routing", &e).into_response(),
    };
    match route {
        Route::Forward { node, held: true, .. } if forwarded => not_holder(format!(
            "this node does not hold the workspace (node {node:?} does) and does not forward a forwarded request"
        )),
        Route::Forward { node, url, held } if !forwarded => {
            if url.is_empty() {
                return not_holder(format!(
                    "the workspace is held by node {node:?}, whose address is not known; try again shortly"
                ));
            }
            proxy(&state, &cluster, &w, &node, &url, request, held).await
        }
        // Here, or forwarded here by a node that prefers this one.
        _ => take_then_serve(&state, &cluster, &w, request, next, forwarded).await,
    }
}

/// Takes the workspace over when it exists (a new one is created by the
/// handler, for an admin key), then serves the request here.
async fn take_then_serve(
    state: &Shared,
    cluster: &Arc<Cluster>,
    w: &str,
    request: Request,
    next: Next,
    forwarded: bool,
) -> Response {
    let (st, name) = (state.clone(), w.to_string());
    match tokio::task::spawn_blocking(move || st.workspaces.take(&name)).await {
        Ok(Ok(_)) => retry_soon(next.run(request).await),
        Ok(Err(ClusterError::HeldBy { holder, .. })) => {
            // Another node took it between the look at its lease and the
            // take: forward there (unless forwarded already).
            cluster.forget_route(w);
            let me = cluster.node_id().unwrap_or_default();
            if forwarded || holder == me {
                return not_holder(format!(
                    "node {holder:?} took the workspace a moment ago; try again"
                ));
            }
            let (c, node) = (cluster.clone(), holder.clone());
            let url = tokio::task::spawn_blocking(move || match c.nodes() {
                Some(nodes) => nodes.advertise_of(&node),
                None => Ok(None),
            })
            .await;
            match url {
                Ok(Ok(Some(url))) => proxy(state, cluster, w, &holder, &url, request, true).await,
                _ => not_holder(format!(
                    "node {holder:?} took the workspace a moment ago; try again"
                )),
            }
        }
        Ok(Err(e)) => bucket_unavailable("taking the workspace over", &e),
        Err(e) => ApiError::internal("taking the workspace over", &e).into_response(),
    }
}

/// Forwards the request to `node` at `url`.
async fn proxy(
    state: &Shared,
    cluster: &Cluster,
    w: &str,
    node: &str,
    url: &str,
    request: Request,
    held: bool,
) -> Response {
    let me = cluster.node_id().unwrap_or_default();
    let limits = &state.limits;
    match forward(
        &cluster.http,
        url,
        me,
        request,
        limits.max_body_bytes,
        limits.request_timeout,
    )
    .await
    {
        Ok(response) => {
            if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                cluster.forget_route(w);
            }
            response
        }
        Err(ForwardError::BodyTooLarge(limit)) => {
            crate::server::api::too_large_answer(limit).into_response()
        }
        Err(e) => {
            cluster.forget_route(w);
            cluster.report_forward_failure(&format_args!("forwarding a request for {w}: {e}"));
            let whose = if held { "holds" } else { "should take" };
            not_holder(format!(
                "node {node:?}, which {whose} the workspace, could not be reached; try again shortly (a dead holder's workspaces move once its lease runs out)"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_of_a_path() {
        assert_eq!(workspace_in("/v1/workspaces/acme/events"), Some("acme"));
        assert_eq!(workspace_in("/v1/workspaces/acme"), Some("acme"));
        assert_eq!(workspace_in("/v1/key"), None);
        assert_eq!(workspace_in("/healthz"), None);
    }
}
