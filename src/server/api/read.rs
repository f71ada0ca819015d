//! Reading: pages of events, one event, streamed exports, verification and checkpoints.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::event::Timestamp;
use crate::log::Log;
use crate::query::export::{ExportError, ExportFormat, ExportOptions, Exporter};
use crate::query::Query;
use crate::server::error::ApiError;
use crate::server::keys::Scope;
use crate::server::params::{self, Endpoint, Order};
use crate::server::reads::{record_read, record_read_blocking, ReadKind};
use crate::storage::FsStorage;
use crate::verify::{verify_dir_with, Report, VerifyOptions};

use super::*;

pub(in crate::server) fn query_pairs(uri: &Uri) -> Result<Vec<(String, String)>, ApiError> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|_| {
            ApiError::bad_request("invalid_parameter", "the query string cannot be decoded")
        })
}

pub(super) fn export_failed(e: ExportError) -> ApiError {
    match e {
        ExportError::Log(e) => ApiError::from_log("reading events", &e),
        ExportError::BadRecord { seq, .. } => {
            eprintln!("chainlog serve: {e}");
            ApiError::unavailable(
                "storage_error",
                format!("record {seq} cannot be read: the log may be damaged; run GET …/verify"),
            )
        }
        other => ApiError::internal("reading events", &other),
    }
}

/// One page of matches as `{"events": [...], "count": n, "next_cursor": …}`
/// (in event-time order also `"through"`: the seq the page was read below),
/// and its count.
pub(in crate::server) fn page(
    log: &Log,
    query: &Query,
    order: Order,
) -> Result<(String, u64), ApiError> {
    let failed = |e: crate::Error| ApiError::from_log("reading events", &e);
    let page_size = query.limit.unwrap_or(params::DEFAULT_PAGE_EVENTS);
    let (matches, cursor, through) = match order {
        Order::Seq => {
            let mut probe = query.clone();
            probe.limit = Some(page_size + 1);
            let mut matches = log
                .query(&probe)
                .map_err(failed)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(failed)?;
            let more = matches.len() as u64 > page_size;
            matches.truncate(page_size as usize);
            let cursor = matches.last().filter(|_| more).map(|m| m.seq.to_string());
            (matches, cursor, None)
        }
        Order::Time(cursor) => {
            let page = log.page_by_time(query, cursor).map_err(failed)?;
            let cursor = page.next_cursor.map(|c| format!("\"{c}\""));
            (page.matches, cursor, Some(page.through))
        }
    };
    let mut exporter = Exporter::new(
        Vec::with_capacity(4096),
        ExportOptions::new(ExportFormat::Json),
    )
    .map_err(|e| ApiError::internal("reading events", &e))?;
    for m in &matches {
        exporter.write(m).map_err(export_failed)?;
    }
    let count = exporter.rows();
    let rows = exporter
        .finish()
        .map_err(|e| ApiError::internal("reading events", &e))?;
    let rows = String::from_utf8(rows).map_err(|e| ApiError::internal("reading events", &e))?;
    let through = through.map_or(String::new(), |t| format!(",\"through\":{t}"));
    let body = format!(
        "{{\"events\":{},\"count\":{count},\"next_cursor\":{}{through}}}",
        rows.trim_end(),
        cursor.as_deref().unwrap_or("null"),
    );
    Ok((body, count))
}

pub(super) async fn get_events(
    State(state): State<Shared>,
    caller: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    let (w, key) = authorize_workspace(&state, &caller, Scope::Read).await?;
    let parsed = params::parse(&query_pairs(&uri)?, Endpoint::Events, Timestamp::now())?;
    let log = workspace_log(&state, &w, &key).await?;
    let permit = match state.query_slots.acquire(&w).await {
        Ok(permit) => permit,
        Err(busy) => return Ok(busy.into_response()),
    };
    let (body, rows) = blocking(move || {
        let _permit = permit;
        page(&log, &parsed.query, parsed.order)
    })
    .await??;
    let mut read = caller.read(&key, ReadKind::Query, rows, body.len());
    read.filters = uri.query().map(str::to_string);
    record_read(&state, Some(&w), read).await;
    Ok(json_response(StatusCode::OK, body))
}

/// The `{seq}` of `…/events/{seq}` and the paths under it.
pub(super) fn path_seq(caller: &Caller) -> Result<u64, ApiError> {
    path_segment(caller, 5)
        .parse()
        .map_err(|_| ApiError::bad_request("invalid_parameter", "the event's seq must be a number"))
}

pub(super) async fn get_event(
    State(state): State<Shared>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let (w, key) = authorize_workspace(&state, &caller, Scope::Read).await?;
    let seq = path_seq(&caller)?;
    let log = workspace_log(&state, &w, &key).await?;
    let query = Query {
        from_seq: Some(seq),
        limit: Some(1),
        ..Query::default()
    };
    let permit = match state.query_slots.acquire(&w).await {
        Ok(permit) => permit,
        Err(busy) => return Ok(busy.into_response()),
    };
    let (body, _) = blocking(move || {
        let _permit = permit;
        page(&log, &query, Order::Seq)
    })
    .await??;
    let parsed: Value =
        serde_json::from_str(&body).map_err(|e| ApiError::internal("reading an event", &e))?;
    match parsed["events"].get(0) {
        Some(row) if row["seq"].as_u64() == Some(seq) => {
            let body = json!({ "event": row }).to_string();
            let read = caller.read(&key, ReadKind::Query, 1, body.len());
            record_read(&state, Some(&w), read).await;
            Ok(json_response(StatusCode::OK, body))
        }
        _ => Err(ApiError::not_found(
            "event_not_found",
            format!("no event has seq {seq}"),
        )),
    }
}

/// Buffers export output and sends it to the connection in chunks,
/// blocking (with a timeout) while the client is slow.
pub(super) struct ChannelWriter {
    pub(super) tx: mpsc::Sender<Result<Bytes, io::Error>>,
    pub(super) buf: Vec<u8>,
    pub(super) runtime: tokio::runtime::Handle,
    /// Bytes handed to the connection so far.
    pub(super) sent: u64,
}

impl ChannelWriter {
    pub(super) fn send(&mut self, chunk: Result<Bytes, io::Error>) -> io::Result<()> {
        let tx = self.tx.clone();
        let len = chunk.as_ref().map_or(0, |c| c.len() as u64);
        let sent = self.runtime.block_on(async move {
            tokio::time::timeout(EXPORT_STALL_TIMEOUT, tx.send(chunk)).await
        });
        match sent {
            Ok(Ok(())) => {
                self.sent += len;
                Ok(())
            }
            Ok(Err(_)) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the client went away",
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            )),
        }
    }

    pub(super) fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(EXPORT_CHUNK_BYTES + 4096),
        ));
        self.send(Ok(chunk))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= EXPORT_CHUNK_BYTES {
            self.send_buffered()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffered()
    }
}

/// A writer for a blocking thread and the body stream it feeds.
pub(super) fn body_channel() -> (ChannelWriter, ChunkStream) {
    let (tx, rx) = mpsc::channel(EXPORT_QUEUE_CHUNKS);
    let writer = ChannelWriter {
        tx,
        buf: Vec::with_capacity(EXPORT_CHUNK_BYTES + 4096),
        runtime: tokio::runtime::Handle::current(),
        sent: 0,
    };
    (writer, ChunkStream(rx))
}

/// A streamed download: `body`, of `content_type`, saved as `filename`.
pub(super) fn attachment(
    body: ChunkStream,
    content_type: &'static str,
    filename: &str,
) -> Response {
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

/// The receiving end, as the body's stream.
pub(in crate::server) struct ChunkStream(
    pub(in crate::server) mpsc::Receiver<Result<Bytes, io::Error>>,
);

impl futures_core::Stream for ChunkStream {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().0.poll_recv(cx)
    }
}

pub(super) async fn export(
    State(state): State<Shared>,
    caller: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    let (w, key) = authorize_workspace(&state, &caller, Scope::Read).await?;
    let parsed = params::parse(&query_pairs(&uri)?, Endpoint::Export, Timestamp::now())?;
    let format = parsed.format.unwrap_or(ExportFormat::Json);
    let log = workspace_log(&state, &w, &key).await?;
    let permit = match state.export_slots.try_acquire(&w) {
        Ok(permit) => permit,
        Err(busy) => return Ok(busy.into_response()),
    };
    let (mut writer, body) = body_channel();
    let query = parsed.query;
    let (st, workspace) = (state.clone(), w.clone());
    let mut read = caller.read(&key, ReadKind::Export, 0, 0);
    read.filters = uri.query().map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let mut rows = 0u64;
        let result = (|| -> Result<(), ExportError> {
            let mut exporter = Exporter::new(&mut writer, ExportOptions::new(format))?;
            let mut matches = log.query(&query)?;
            let written = matches.try_for_each_view(|seq, hash, view| {
                exporter.write_view(seq, &hash, view)?;
                rows = exporter.rows();
                Ok::<(), ExportError>(())
            });
            written?;
            exporter.finish()?;
            Ok(())
        })();
        // The export is recorded once it ends, however it ends.
        let ended = match &result {
            Ok(()) => "complete",
            Err(ExportError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => "client_gone",
            Err(ExportError::Io(e)) if e.kind() == io::ErrorKind::TimedOut => "client_stalled",
            Err(_) => "failed",
        };
        read.rows = rows;
        read.bytes = writer.sent;
        read.extra.insert("ended".into(), ended.into());
        read.extra
            .insert("format".into(), format!("{format:?}").to_lowercase().into());
        match result {
            Ok(()) => {}
            Err(ExportError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                eprintln!("chainlog serve: export cut short: {e}");
                // An error item ends the body early, so the client sees an
                // incomplete transfer, never a silently short export.
                let _ = writer.send(Err(io::Error::other("export failed")));
            }
        }
        // Recorded, and the slot free, before the client sees the body end:
        // its next export is then neither refused as one too many nor
        // missing from the log.
        record_read_blocking(&st, Some(&workspace), &read);
        drop(permit);
        drop(writer);
    });
    let (content_type, extension) = match format {
        ExportFormat::Csv => ("text/csv; charset=utf-8", "csv"),
        ExportFormat::Json => ("application/json", "json"),
        ExportFormat::JsonLines => ("application/x-ndjson", "jsonl"),
    };
    Ok(attachment(
        body,
        content_type,
        &format!("{w}-audit-log.{extension}"),
    ))
}

#[derive(Serialize)]
pub(super) struct VerifyAnswer<'a> {
    pub(super) intact: bool,
    #[serde(flatten)]
    pub(super) report: &'a Report,
}

pub(super) async fn verify(
    State(state): State<Shared>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let (w, key) = authorize_workspace(&state, &caller, Scope::Read).await?;
    // The verifier reads the segment files itself: it must report on a log
    // so damaged that it cannot be opened, so it does not open the log.
    let dir = state.workspaces.dir(&w);
    let probe = dir.clone();
    if !blocking(move || probe.is_dir()).await? {
        return Err(ApiError::not_found(
            "workspace_not_found",
            format!("workspace {w:?} has no log yet"),
        ));
    }
    let permit = match state.verify_slots.acquire(&w).await {
        Ok(permit) => permit,
        Err(busy) => return Ok(busy.into_response()),
    };
    let report = blocking(move || {
        let _permit = permit;
        let options = VerifyOptions {
            threads: std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(2),
            checkpoint: None,
        };
        verify_dir_with(&FsStorage, &dir, &options, &mut |_| {})
    })
    .await?
    .map_err(|e| ApiError::from_log("verifying", &e))?;
    let intact = report.is_intact();
    let body = serde_json::to_string(&VerifyAnswer {
        intact,
        report: &report,
    })
    .map_err(|e| ApiError::internal("verifying", &e))?;
    let mut read = caller.read(&key, ReadKind::Verify, 0, body.len());
    read.extra.insert("intact".into(), intact.into());
    record_read(&state, Some(&w), read).await;
    Ok(json_response(StatusCode::OK, body))
}

pub(super) async fn checkpoint(
    State(state): State<Shared>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let (w, key) = authorize_workspace(&state, &caller, Scope::Read).await?;
    if state.signer.is_none() {
        return Err(ApiError::not_found(
            "checkpoints_not_configured",
            "this server signs no checkpoints: start it with --checkpoint-key FILE (a secret key from `chainlog keygen`)",
        ));
    }
    // Signing verifies the whole log first (`Log::checkpoint`): it takes a
    // verification slot, so checkpoints cannot do what queued verifies may not.
    let permit = match state.verify_slots.acquire(&w).await {
        Ok(permit) => permit,
        Err(busy) => return Ok(busy.into_response()),
    };
    let log = workspace_log(&state, &w, &key).await?;
    let st = state.clone();
    let answer = blocking(move || -> Result<Value, ApiError> {
        let _permit = permit;
        let signer = st
            .signer
            .as_ref()
            .ok_or_else(|| ApiError::internal("signing", &"no signer"))?;
        let checkpoint = log
            .checkpoint(&st.checkpoint_origin)
            .map_err(|e| ApiError::from_log("signing a checkpoint", &e))?;
        let note = checkpoint
            .sign(signer)
            .map_err(|e| ApiError::internal("signing a checkpoint", &e))?;
        Ok(json!({
            "origin": checkpoint.origin,
            "size": checkpoint.size,
            "root": base64::engine::general_purpose::STANDARD.encode(checkpoint.root),
            "head": checkpoint.head,
            "key": signer.verifier().to_text(),
            "note": note,
        }))
    })
    .await??;
    let body = answer.to_string();
    let read = caller.read(&key, ReadKind::Checkpoint, 0, body.len());
    record_read(&state, Some(&w), read).await;
    Ok(json_response(StatusCode::OK, body))
}

/// `GET …/checkpoint/witnessed`: the newest checkpoint a quorum of the
/// server's witnesses cosigned (`chainlog serve --witness`), 404 when none.
pub(super) async fn witnessed_checkpoint(
    State(state): State<Shared>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let (w, key) = authorize_workspace(&state, &caller, Scope::Read).await?;
    let (data_dir, workspace) = (state.data_dir.clone(), w.clone());
    let note = blocking(move || {
        crate::server::witnessing::witnessed_checkpoint(&data_dir, &workspace)
            .map_err(|e| ApiError::internal("reading the witnessed checkpoint", &e))
    })
    .await??
    .ok_or_else(|| {
        ApiError::not_found(
            "no_witnessed_checkpoint",
            "no checkpoint of this workspace has been cosigned by the server's witnesses (chainlog serve --witness) yet",
        )
    })?;
    let mut lines = note.lines();
    let (origin, size, root) = (lines.next(), lines.next(), lines.next());
    let body = json!({
        "origin": origin.unwrap_or_default(),
        "size": size.and_then(|s| s.parse::<u64>().ok()).unwrap_or_default(),
        "root": root.unwrap_or_default(),
        "note": note,
    })
    .to_string();
    let read = caller.read(&key, ReadKind::Checkpoint, 0, body.len());
    record_read(&state, Some(&w), read).await;
    Ok(json_response(StatusCode::OK, body))
}
