//! `GET …/events/stream`: a live tail of a workspace's log as Server-Sent
//! Events.
//!
//! Each matching record is one event: `id:` its seq, `data:` the row exactly
//! as `GET …/events` gives it. The stream starts at the `Last-Event-ID`
//! header plus one (a reconnecting `EventSource`), else at `cursor` (the
//! first seq to send), else at the log's end (only records made durable
//! after the request). A task per stream reads matches on a blocking
//! thread from its next seq up to the durable end, then sleeps until the
//! log reports new durable records ([`Log::on_durable`]) or
//! [`TAIL_RECHECK`] passes (an atomic load, not a read of the disk), so a
//! record reaches the stream within [`TAIL_RECHECK`] of being durable, in
//! practice within a few milliseconds.
//!
//! Rows wait for the connection in a buffer of [`TAIL_BUFFER_EVENTS`]
//! events (plus one kept for the final message). A client that leaves it
//! full for [`TAIL_STALL_TIMEOUT`] is too slow: the stream ends with
//! `event: error` (`slow_consumer`, and the seq to resume from), so memory
//! stays bounded. At shutdown the stream ends the same way
//! (`server_stopping`). A stream holds a workspace's tail slot while it
//! runs and is recorded as an `access.tail` read when it ends.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::event::Timestamp;
use crate::log::{DurableListener, Log};
use crate::query::export::{ExportFormat, ExportOptions, Exporter};
use crate::query::Query;
use crate::server::error::ApiError;
use crate::server::keys::Scope;
use crate::server::params::{self, Endpoint};
use crate::server::reads::{record_read, Read, ReadKind};
use crate::server::slots::{SlotLimits, SlotPermit, Slots};

use super::*;

/// Events buffered between a stream's task and its connection.
pub const TAIL_BUFFER_EVENTS: usize = 256;
/// Longest a stream waits for a client that leaves the buffer full.
pub const TAIL_STALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a stream sleeps before looking at the durable end again, were
/// a notification missed: the bound on the delay of a new record.
pub const TAIL_RECHECK: Duration = Duration::from_millis(100);
/// An idle stream sends a comment this often, so proxies keep it open.
pub const TAIL_KEEPALIVE: Duration = Duration::from_secs(15);
/// Matches read per blocking-thread visit.
const TAIL_BATCH_ROWS: u64 = 256;
/// Streams at once, server-wide and per workspace.
const TAIL_STREAMS: usize = 64;
const TAIL_STREAMS_PER_WORKSPACE: usize = 8;

/// The tail slots: a stream that finds none is refused (503, retry).
pub(in crate::server) fn tail_slots() -> Slots {
    Slots::new(
        "tail",
        SlotLimits {
            total: TAIL_STREAMS,
            per_workspace: TAIL_STREAMS_PER_WORKSPACE,
            queued_per_workspace: 0,
        },
        1,
    )
}

pub(super) async fn stream(
    State(state): State<Shared>,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let (w, key) = authorize_workspace(&state, &caller, Scope::Read).await?;
    let parsed = params::parse(&query_pairs(&uri)?, Endpoint::Tail, Timestamp::now())?;
    let last_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .and_then(|seq| seq.checked_add(1))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_parameter",
                        "`Last-Event-ID` must be the seq of the last event received",
                    )
                })?,
        ),
    };
    let log = workspace_log(&state, &w, &key).await?;
    let start = last_id
        .or(parsed.query.from_seq)
        .unwrap_or_else(|| log.durable_next_seq());
    let permit = match state.tail_slots.try_acquire(&w) {
        Ok(permit) => permit,
        Err(busy) => return Ok(busy.into_response()),
    };
    let (tx, rx) = mpsc::channel(TAIL_BUFFER_EVENTS + 1);
    let mut read = caller.read(&key, ReadKind::Tail, 0, 0);
    read.filters = uri.query().map(str::to_string);
    read.extra.insert("start_seq".into(), start.into());
    let mut query = parsed.query;
    query.limit = Some(TAIL_BATCH_ROWS);
    tokio::spawn(follow(Follow {
        state: state.clone(),
        workspace: w,
        log,
        query,
        next: start,
        tx,
        read,
        _permit: permit,
    }));
    let mut response = Body::from_stream(TailBody(rx)).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The connection ends with the stream (HTTP/1 only is served), so a
    // client cut off reconnects afresh.
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    // nginx would otherwise buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// One stream's state.
struct Follow {
    state: Shared,
    workspace: String,
    log: Arc<Log>,
    query: Query,
    /// The next seq to look at.
    next: u64,
    tx: mpsc::Sender<Bytes>,
    read: Read,
    _permit: SlotPermit,
}

/// Why a stream ended (the `ended` of its `access.tail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    ClientGone,
    SlowConsumer,
    Stopping,
    Failed,
}

impl Ended {
    fn as_str(self) -> &'static str {
        match self {
            Ended::ClientGone => "client_gone",
            Ended::SlowConsumer => "slow_consumer",
            Ended::Stopping => "server_stopping",
            Ended::Failed => "failed",
        }
    }
}

/// Matches from the query's `from_seq`, as (seq, row) pairs, and whether
/// the batch was cut at its limit.
pub(crate) fn read_batch(log: &Log, query: &Query) -> Result<(Vec<(u64, String)>, bool), String> {
    let mut rows = Vec::new();
    let limit = query.limit.unwrap_or(TAIL_BATCH_ROWS);
    for m in log.query(query).map_err(|e| e.to_string())? {
        let m = m.map_err(|e| e.to_string())?;
        let mut exporter = Exporter::new(Vec::new(), ExportOptions::new(ExportFormat::JsonLines))
            .map_err(|e| e.to_string())?;
        exporter.write(&m).map_err(|e| e.to_string())?;
        let row = exporter.finish().map_err(|e| e.to_string())?;
        let row = String::from_utf8(row).map_err(|e| e.to_string())?;
        rows.push((m.seq, row.trim_end().to_string()));
    }
    let full = rows.len() as u64 >= limit;
    Ok((rows, full))
}

/// Queues `message`, keeping the buffer's last slot for the final one;
/// waits up to [`TAIL_STALL_TIMEOUT`] for room.
async fn send(tx: &mpsc::Sender<Bytes>, message: Bytes) -> Result<(), Ended> {
    match tokio::time::timeout(TAIL_STALL_TIMEOUT, tx.reserve_many(2)).await {
        Ok(Ok(mut permits)) => {
            if let Some(permit) = permits.next() {
                permit.send(message);
            }
            Ok(())
        }
        Ok(Err(_)) => Err(Ended::ClientGone),
        Err(_) => Err(Ended::SlowConsumer),
    }
}

async fn follow(mut f: Follow) {
    let notify = Arc::new(Notify::new());
    let listener: Arc<DurableListener> = {
        let notify = notify.clone();
        Arc::new(move |_| notify.notify_one())
    };
    f.log.on_durable(&listener);
    let mut stop = f.state.stopping.subscribe();
    let (mut rows, mut bytes) = (0u64, 0u64);
    let mut last_sent = Instant::now();
    let ended = 'stream: loop {
        if *stop.borrow() {
            break Ended::Stopping;
        }
        let durable = f.log.durable_next_seq();
        if f.next < durable {
            let mut query = f.query.clone();
            query.from_seq = Some(f.next);
            let log = f.log.clone();
            let batch = tokio::task::spawn_blocking(move || read_batch(&log, &query)).await;
            let (batch, full) = match batch {
                Ok(Ok(batch)) => batch,
                Ok(Err(e)) => {
                    eprintln!("chainlog serve: live tail of {} failed: {e}", f.workspace);
                    break Ended::Failed;
                }
                Err(_) => break Ended::Failed,
            };
            for (seq, row) in batch {
                let message = format!("id: {seq}\ndata: {row}\n\n");
                let len = message.len() as u64;
                if let Err(ended) = send(&f.tx, Bytes::from(message)).await {
                    break 'stream ended;
                }
                rows += 1;
                bytes += len;
                last_sent = Instant::now();
                f.next = seq + 1;
            }
            if !full {
                // Records up to the durable end that did not match.
                f.next = f.next.max(durable);
            }
            continue;
        }
        let keepalive = last_sent + TAIL_KEEPALIVE;
        tokio::select! {
            () = notify.notified() => {}
            () = tokio::time::sleep(TAIL_RECHECK) => {}
            _ = stop.changed() => {}
            () = f.tx.closed() => break Ended::ClientGone,
        }
        if Instant::now() >= keepalive {
            let comment = Bytes::from_static(b": keep-alive\n\n");
            if let Err(ended) = send(&f.tx, comment).await {
                break ended;
            }
            bytes += 15;
            last_sent = Instant::now();
        }
    };
    drop(listener);
    let detail = match ended {
        Ended::SlowConsumer => Some(format!(
            "the client read too slowly: {TAIL_BUFFER_EVENTS} events waited for more than {} s; reconnect with Last-Event-ID (or cursor={}) to resume",
            TAIL_STALL_TIMEOUT.as_secs(),
            f.next
        )),
        Ended::Stopping => Some(format!(
            "the server is stopping; reconnect with Last-Event-ID (or cursor={}) to resume",
            f.next
        )),
        Ended::Failed => Some(format!(
            "the log could not be read; reconnect with cursor={} to retry, or run GET …/verify",
            f.next
        )),
        Ended::ClientGone => None,
    };
    if let Some(detail) = detail {
        let data = json!({
            "error": ended.as_str(),
            "detail": detail,
            "resume_from": f.next,
        });
        let message = format!("event: error\ndata: {data}\n\n");
        // The buffer's last slot was kept for this.
        if f.tx.try_send(Bytes::from(message.clone())).is_ok() {
            bytes += message.len() as u64;
        }
    }
    let mut read = f.read;
    read.rows = rows;
    read.bytes = bytes;
    read.extra.insert("ended".into(), ended.as_str().into());
    read.extra.insert("next_seq".into(), f.next.into());
    // Recorded before the body ends, so that at shutdown it is written
    // before the logs close.
    record_read(&f.state, Some(&f.workspace), read).await;
    drop(f.tx);
}

/// The connection's end of a stream's buffer.
struct TailBody(mpsc::Receiver<Bytes>);

impl futures_core::Stream for TailBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().0.poll_recv(cx).map(|m| m.map(Ok))
    }
}
