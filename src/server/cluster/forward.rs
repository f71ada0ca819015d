//! Forwarding a request to the node that holds its workspace: the request
//! is proxied (method, path, query, headers with `Authorization` and
//! `Idempotency-Key`, body) and the holder's answer sent back as it is,
//! streamed. Not a 307: HTTP clients drop `Authorization` when a redirect
//! changes host or port, so the API key would be lost.
//!
//! One hop at most: the forwarded request carries [`FORWARDED_HEADER`]
//! (this node's id), and a node that receives one never forwards it again.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use tokio::sync::mpsc;

use crate::server::api::ChunkStream;

/// Marks a forwarded request; its value is the forwarding node's id.
pub const FORWARDED_HEADER: &str = "x-chainlog-forwarded";
/// Answer chunks buffered between the holder and the client.
const QUEUED_CHUNKS: usize = 4;
/// Answers up to this long are read whole and passed on with their length.
const WHOLE_ANSWER_BYTES: u64 = 1 << 20;

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The request body was larger than the server accepts.
    #[error("the request body is over the limit of {0} bytes")]
    BodyTooLarge(usize),
    /// The holder could not be reached, or broke off.
    #[error("the holder {url} could not be reached: {source}")]
    Unreachable {
        /// The holder's address.
        url: String,
        /// The client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The holder did not start answering in time.
    #[error("the holder {url} did not answer within {timeout:?}")]
    Timeout {
        /// The holder's address.
        url: String,
        /// The time allowed.
        timeout: Duration,
    },
}

/// Headers that belong to one connection, not to the request (RFC 9110
/// 7.6.1), and those the client recomputes.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if !hop_by_hop(name) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// Sends `request` to the node at `base` (`http://HOST:PORT`), marked as
/// forwarded by `me`, and returns its answer, whose body streams on.
/// `max_body_bytes` bounds the request body read here; `timeout`, the time
/// until the holder's answer starts.
pub async fn forward(
    client: &reqwest::Client,
    base: &str,
    me: &str,
    request: Request,
    max_body_bytes: usize,
    timeout: Duration,
) -> Result<Response, ForwardError> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, max_body_bytes)
        .await
        .map_err(|_| ForwardError::BodyTooLarge(max_body_bytes))?;
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let url = format!("{base}{path}");
    let mut headers = end_to_end(&parts.headers);
    if let Ok(value) = HeaderValue::from_str(me) {
        headers.insert(FORWARDED_HEADER, value);
    }
    let sent = client
        .request(parts.method, &url)
        .headers(headers)
        .body(body)
        .send();
    let answer = match tokio::time::timeout(timeout, sent).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(source)) => return Err(ForwardError::Unreachable { url, source }),
        Err(_) => return Err(ForwardError::Timeout { url, timeout }),
    };
    let mut response = Response::builder().status(answer.status());
    if let Some(headers) = response.headers_mut() {
        *headers = end_to_end(answer.headers());
    }
    // An answer of known, small length (every answer but exports and
    // tails) is passed on whole, with its length.
    if answer
        .content_length()
        .is_some_and(|n| n <= WHOLE_ANSWER_BYTES)
    {
        let body = answer
            .bytes()
            .await
            .map_err(|source| ForwardError::Unreachable {
                url: url.clone(),
                source,
            })?;
        return Ok(response.body(Body::from(body)).unwrap_or_default());
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(QUEUED_CHUNKS);
    tokio::spawn(relay(answer, tx));
    Ok(response
        .body(Body::from_stream(ChunkStream(rx)))
        .unwrap_or_default())
}

/// Copies the holder's answer body to the client's, until either ends.
async fn relay(mut answer: reqwest::Response, tx: mpsc::Sender<Result<Bytes, std::io::Error>>) {
    loop {
        let chunk = match answer.chunk().await {
            Ok(Some(chunk)) => Ok(chunk),
            Ok(None) => return,
            Err(e) => Err(std::io::Error::other(e)),
        };
        let failed = chunk.is_err();
        if tx.send(chunk).await.is_err() || failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_headers_are_dropped_and_the_key_kept() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer k"),
            ("idempotency-key", "abc"),
            ("content-type", "application/json"),
            ("connection", "keep-alive"),
            ("host", "node-a:8080"),
            ("transfer-encoding", "chunked"),
            ("content-length", "12"),
        ] {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let kept = end_to_end(&headers);
        let names: Vec<&str> = kept.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["authorization", "idempotency-key", "content-type"]);
    }
}
