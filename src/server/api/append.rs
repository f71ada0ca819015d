//! Appending: request bodies into events, events into the commit queue, receipts back.

use std::fmt::Write as _;
use std::pin::Pin;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::{DeserializeSeed, Error as _, IgnoredAny, SeqAccess, Visitor};

use crate::event::{EncodeRecord, Event};
use crate::limits::MAX_BATCH_EVENTS;
use crate::log::Receipt;
use crate::server::commit::{CommitError, NotReplicated, Records};
use crate::server::error::ApiError;
use crate::server::idempotency;
use crate::server::ingest::{self, BodyKind};
use crate::server::keys::Scope;

use super::*;

pub(super) fn body_kind(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
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

pub(in crate::server) fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!(
            "the request body is over the limit of {limit} bytes; split it into several requests"
        ),
    )
}

/// Reads the whole body, refusing more than `limit` bytes.
pub(super) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
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

/// A small JSON request body: how large it may be, the error code of one
/// that does not parse, and what it should hold (for the error messages).
pub(super) struct JsonRequest {
    pub(super) max_bytes: usize,
    pub(super) error: &'static str,
    pub(super) expected: &'static str,
}

/// Reads a small JSON request body as a `T`: 415 unless it is sent as
/// JSON, 413 past `max_bytes`, 400 with the request's error code (saying
/// what was expected) when it does not parse.
pub(super) async fn read_json<T: serde::de::DeserializeOwned>(
    body: Body,
    headers: &HeaderMap,
    request: &JsonRequest,
) -> Result<T, ApiError> {
    let expected = request.expected;
    if body_kind(headers)? != BodyKind::Json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send application/json: {expected}"),
        ));
    }
    let bytes = read_body(body, headers, request.max_bytes).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let message = format!("expected {expected}: {}", json_message(&e));
        ApiError::bad_request(request.error, message)
    })
}

/// Deserializes a JSON array of events, stopping past `max`, and naming
/// the index of a bad event.
pub(super) struct EventArray<'a> {
    pub(super) max: usize,
    pub(super) too_many: &'a std::cell::Cell<bool>,
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
pub(super) fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&suffix) {
        Some(inner) if inner.contains(" at line ") => inner.to_string(),
        _ => text,
    }
}

pub(super) fn json_error(prefix: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let code = match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => "malformed_json",
        Category::Data => "invalid_event",
    };
    ApiError::bad_request(code, format!("{prefix}{}", json_message(e)))
}

pub(super) fn too_many_events(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_many_events",
        format!("a request holds at most {max} events; split the batch"),
    )
}

/// The body as text: JSON text is UTF-8 (RFC 8259). Checking the whole
/// body at once is cheaper than the parser checking every string of it
/// again.
pub(super) fn body_text(bytes: &[u8]) -> Result<&str, ApiError> {
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
pub(super) fn parse_events(text: &str, kind: BodyKind, max: usize) -> Result<Vec<Event>, ApiError> {
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
pub(super) fn encode_events<E: EncodeRecord>(
    events: &[E],
    appender: &str,
) -> Result<Records, ApiError> {
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

pub(super) fn receipts_json(receipts: &[Receipt]) -> String {
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

pub(in crate::server) fn json_response(status: StatusCode, body: String) -> Response {
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

/// The answer for appended events that were not acknowledged as
/// replicated (`serve --bucket`): 503, and a fenced workspace is let go.
fn not_replicated(state: &Shared, workspace: &str, why: &NotReplicated) -> ApiError {
    match why {
        NotReplicated::Timeout(cause) => {
            eprintln!("chainlog serve: {workspace}: {cause}");
            ApiError::unavailable(
                "not_replicated",
                "the events were appended on this node but the bucket did not acknowledge them in time, so they may be lost if this node fails; retry with the same Idempotency-Key",
            )
        }
        NotReplicated::Fenced(cause) => {
            eprintln!("chainlog serve: {workspace}: {cause}");
            #[cfg(feature = "s3")]
            crate::server::cluster::let_go(state, workspace);
            #[cfg(not(feature = "s3"))]
            let _ = state;
            ApiError::unavailable(
                "not_holder",
                "this node lost the workspace to another node and nothing it appended since counts; retry: the request will reach the new holder",
            )
        }
    }
}

pub(super) async fn post_events(
    State(state): State<Shared>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (w, key) = authorize_workspace(&state, &caller, Scope::Append).await?;
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
    let state = state.clone();
    let commit = async move {
        // Waiting for the sync holds no thread.
        let receipts = committer.commit(records).await.map_err(|e| match e {
            CommitError::Append(e) => ApiError::from_log("appending", &e),
            CommitError::Closed => ApiError::unavailable(
                "shutting_down",
                "the server is stopping and appends nothing more; try again once it is back",
            ),
            CommitError::Lost => ApiError::internal("appending", &e),
            CommitError::NotReplicated(why) => not_replicated(&state, &w, &why),
        })?;
        Ok(receipts_json(&receipts))
    };
    let answer = idempotency::finish(pending, commit).await?;
    Ok(json_response(StatusCode::CREATED, answer))
}
