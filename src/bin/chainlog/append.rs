//! `chainlog append`: JSON Lines in, records (and receipts) out.
//!
//! Every line is parsed and fully validated (including the encoded size
//! limits) before any line of its batch is appended. From a FILE the whole
//! file is checked first, so a bad line anywhere appends nothing. From stdin
//! (a stream that may never end) lines are appended in batches as they
//! arrive; a bad line stops the command, and the lines before it in its
//! batch are appended, it and everything after it are not.
//!
//! Parsing and appending overlap: one thread reads, checks and encodes
//! lines into batches, the calling thread appends them, with at most
//! [`BATCHES_IN_FLIGHT`] checked batches waiting (memory stays flat). A
//! FILE's first pass (checking only) runs its two halves on two threads.
//!
//! A line is read as a borrowed [`EventRef`] (serde_json, strings borrowed
//! from the line, the context written to its stored form as it is read)
//! and encoded at once; the batch keeps the encoded records, so each event
//! is parsed and encoded once. What `EventRef` leaves to the owned path, and
//! every refused line, is read as an [`Event`], which gives the same bytes
//! and serde_json's own error messages.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender};

use chainlog::event::input::check_numbers;
use chainlog::event::{encode_record, EventError, EventRef};
use chainlog::format::frame::padded_len;
use chainlog::format::segment::{data_end_limit, HEADER_BYTES};
use chainlog::limits::MAX_INPUT_LINE_BYTES;
use chainlog::{EncodeRecord, Event, Log, Options, Receipt};

use crate::error::CliError;
use crate::read::newest_segment_bytes;
use crate::{DurabilityArg, Global};

/// Most events appended in one `append_batch` call.
const MAX_CHUNK_EVENTS: usize = 4096;
/// Most frame bytes appended in one call (also bounded by a segment's room).
const MAX_CHUNK_BYTES: u64 = 8 << 20;
/// Input buffer size; a stream batch is at most what one read returned.
const INPUT_BUFFER_BYTES: usize = 1 << 20;
/// Checked batches the parsing thread may be ahead of the appending one.
const BATCHES_IN_FLIGHT: usize = 2;
/// Files smaller than this are checked on one thread (a thread costs more
/// than it saves).
const PARALLEL_CHECK_MIN_BYTES: u64 = 1 << 20;

/// Encoded (so validated) records, back to back.
#[derive(Default)]
struct Records {
    bytes: Vec<u8>,
    /// Where each record ends in `bytes`.
    ends: Vec<usize>,
    /// Bytes their frames (with the provenance prefix) take in a segment.
    frame_bytes: u64,
}

impl Records {
    /// Adds a record whose frame (with its provenance prefix) takes
    /// `frame_bytes` in a segment.
    fn push(&mut self, record: &[u8], frame_bytes: u64) {
        self.bytes.extend_from_slice(record);
        self.ends.push(self.bytes.len());
        self.frame_bytes += frame_bytes;
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.frame_bytes = 0;
    }

    fn iter(&self) -> impl Iterator<Item = Encoded<'_>> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| Encoded(&self.bytes[start..end]))
    }
}

/// A record [`parse_event`] encoded: appending it copies its bytes.
struct Encoded<'a>(&'a [u8]);

impl EncodeRecord for Encoded<'_> {
    fn encode_record(&self, out: &mut Vec<u8>) -> Result<(), EventError> {
        out.extend_from_slice(self.0);
        Ok(())
    }
}

/// Why reading the next event stopped.
enum LineError {
    Bad { line: u64, reason: String },
    Io(io::Error),
}

/// JSON Lines reader with a per-line size limit.
struct EventLines<R> {
    reader: BufReader<R>,
    line: u64,
    buf: Vec<u8>,
    scratch: Vec<u8>,
}

impl<R: Read> EventLines<R> {
    fn new(input: R) -> Self {
        EventLines {
            reader: BufReader::with_capacity(INPUT_BUFFER_BYTES, input),
            line: 0,
            buf: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// True when more input is already buffered (reading it will not block).
    fn input_buffered(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    /// The next event's record bytes, skipping blank lines; `None` at the
    /// end of the input.
    fn next_event(&mut self) -> Result<Option<&[u8]>, LineError> {
        loop {
            self.buf.clear();
            // Room for the longest line plus "\r\n": anything longer is rejected
            // without reading the rest of it into memory.
            let cap = MAX_INPUT_LINE_BYTES as u64 + 2;
            let n = (&mut self.reader)
                .take(cap)
                .read_until(b'\n', &mut self.buf)
                .map_err(LineError::Io)?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            let ended = self.buf.last() == Some(&b'\n');
            if ended {
                self.buf.pop();
                if self.buf.last() == Some(&b'\r') {
                    self.buf.pop();
                }
            }
            if self.buf.len() > MAX_INPUT_LINE_BYTES || (!ended && n as u64 == cap) {
                return Err(self.bad(format!(
                    "line is longer than the limit of {MAX_INPUT_LINE_BYTES} bytes"
                )));
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.scratch.clear();
            return match parse_event(&self.buf, &mut self.scratch) {
                Ok(()) => Ok(Some(&self.scratch)),
                Err(reason) => Err(self.bad(reason)),
            };
        }
    }

    fn bad(&self, reason: String) -> LineError {
        LineError::Bad {
            line: self.line,
            reason,
        }
    }
}

/// Parses one line and appends its record bytes to `out`, checked exactly
/// as `append_batch` would check the event.
fn parse_event(line: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let start = out.len();
    let borrowed = std::str::from_utf8(line).ok().and_then(EventRef::from_json);
    let encoded = match borrowed {
        Some(event) => event.encode_record(out),
        None => {
            let event: Event = serde_json::from_slice(line).map_err(|e| json_reason(&e))?;
            encode_record(&event, out)
        }
    };
    encoded.map_err(|e| e.to_string())?;
    // serde_json took it, so its numbers can be checked as JSON tokens.
    check_numbers(line).map_err(|e| {
        out.truncate(start);
        e.to_string()
    })
}

/// serde_json's message without its "at line 1 column N" (the input line
/// number is reported instead; the column is kept).
fn json_reason(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    match msg.strip_suffix(&position) {
        Some(head) => format!("{head} (column {})", e.column()),
        None => msg,
    }
}

/// Appends batches, printing receipts once each batch is durable.
struct Appender<'a> {
    log: &'a Log,
    /// The policy does not sync before `append_batch` returns.
    relaxed: bool,
    receipts: bool,
    max_chunk_bytes: u64,
    /// Bytes of the provenance prefix each record gets.
    prefix_bytes: usize,
    pending: Records,
    count: u64,
    first: Option<u64>,
    last: Option<Receipt>,
}

impl Appender<'_> {
    fn limits(&self) -> BatchLimits {
        BatchLimits {
            prefix_bytes: self.prefix_bytes,
            max_chunk_bytes: self.max_chunk_bytes,
        }
    }

    fn push(&mut self, record: &[u8]) -> Result<(), CliError> {
        let frame_bytes = self.limits().frame_bytes(record);
        if self.limits().is_full(&self.pending, frame_bytes) {
            self.flush()?;
        }
        self.pending.push(record, frame_bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), CliError> {
        let pending = std::mem::take(&mut self.pending);
        let appended = self.append(&pending);
        self.pending = pending;
        self.pending.clear();
        appended
    }

    /// Appends `batch` as one `append_batch` call.
    fn append(&mut self, batch: &Records) -> Result<(), CliError> {
        if batch.is_empty() {
            return Ok(());
        }
        let records: Vec<Encoded<'_>> = batch.iter().collect();
        let receipts = self
            .log
            .append_batch(&records)
            .map_err(|e| self.failed(e))?;
        let (Some(first), Some(last)) = (receipts.first(), receipts.last()) else {
            return Ok(());
        };
        self.first.get_or_insert(first.seq);
        self.last = Some(*last);
        self.count += receipts.len() as u64;
        if self.receipts {
            // Print only what a crash could no longer take back.
            if self.relaxed {
                self.log
                    .wait_durable(last.seq)
                    .map_err(|e| self.failed(e))?;
            }
            let mut out = io::stdout().lock();
            for r in &receipts {
                let line = serde_json::to_string(r)
                    .map_err(|e| CliError::io("encoding a receipt", e.into()))?;
                writeln!(out, "{line}").map_err(|e| CliError::io("writing receipts", e))?;
            }
            out.flush()
                .map_err(|e| CliError::io("writing receipts", e))?;
        }
        Ok(())
    }

    /// What has been appended so far, for an error message.
    fn appended(&self) -> String {
        match (self.first, self.last) {
            (Some(first), Some(last)) if self.count > 0 => format!(
                "{} record{} before it were appended (seq {first}..={})",
                self.count,
                if self.count == 1 { "" } else { "s" },
                last.seq
            ),
            _ => "nothing was appended".to_string(),
        }
    }

    fn failed(&self, error: chainlog::Error) -> CliError {
        if self.count == 0 {
            CliError::Log(error)
        } else {
            CliError::AfterAppending {
                error,
                appended: self.appended(),
            }
        }
    }

    fn bad_line(&self, line: u64, reason: String, whole_file_checked: bool) -> CliError {
        let appended = if self.count == 0 && whole_file_checked {
            "nothing was appended (the whole file is checked first)".to_string()
        } else if self.count == 0 {
            "nothing was appended".to_string()
        } else {
            format!("{}; it and the lines after it were not", self.appended())
        };
        CliError::Input {
            line,
            reason,
            appended,
        }
    }
}

fn read_error(source: io::Error) -> CliError {
    CliError::io("reading the input", source)
}

/// Runs `chainlog append`.
pub fn run(
    global: &Global,
    durability: DurabilityArg,
    receipts: bool,
    appender: Option<String>,
    file: Option<&Path>,
) -> Result<std::process::ExitCode, CliError> {
    let dir = global.dir()?;
    let appender = appender.unwrap_or_else(chainlog::log::os_user_appender);
    chainlog::event::record::check_appender(&appender)
        .map_err(|e| CliError::Usage(format!("--appender: {e}")))?;
    let prefix_bytes = chainlog::event::record::provenance_len(&appender);
    // Options::segment_bytes applies to segments created from now on: keep
    // the size the log was created with.
    let segment_bytes = newest_segment_bytes(dir)?.unwrap_or(Options::default().segment_bytes);
    let log = crate::clock::open(
        dir,
        Options {
            segment_bytes,
            durability: durability.policy(),
            appender,
            ..Options::default()
        },
    )?;
    let mut appender = Appender {
        log: &log,
        relaxed: durability != DurabilityArg::Always,
        receipts,
        max_chunk_bytes: (data_end_limit(segment_bytes) - HEADER_BYTES).min(MAX_CHUNK_BYTES),
        prefix_bytes,
        pending: Records::default(),
        count: 0,
        first: None,
        last: None,
    };
    match file {
        None => append_stream(&mut appender, io::stdin())?,
        Some(path) if path == Path::new("-") => append_stream(&mut appender, io::stdin())?,
        Some(path) => append_file(&mut appender, path)?,
    }
    let (count, first, last) = (appender.count, appender.first, appender.last);
    let head = log.state().head;
    log.close().map_err(|error| {
        if count == 0 {
            CliError::Log(error)
        } else {
            CliError::AfterAppending {
                error,
                appended: format!("{count} records were written but may not be durable"),
            }
        }
    })?;
    if !global.quiet && !receipts {
        let plural = if count == 1 { "" } else { "s" };
        match (first, last) {
            (Some(first), Some(last)) => outln!(
                "appended {count} record{plural} (seq {first}..={}), head {head}",
                last.seq
            )?,
            _ => outln!("appended 0 records, head {head}")?,
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// How large one `append_batch` call may be.
#[derive(Clone, Copy)]
struct BatchLimits {
    /// Bytes of the provenance prefix each record gets.
    prefix_bytes: usize,
    max_chunk_bytes: u64,
}

impl BatchLimits {
    /// Bytes `record`'s frame takes in a segment.
    fn frame_bytes(self, record: &[u8]) -> u64 {
        padded_len(self.prefix_bytes + record.len()) as u64
    }

    /// True when a record of `frame_bytes` does not fit in `batch`.
    fn is_full(self, batch: &Records, frame_bytes: u64) -> bool {
        !batch.is_empty()
            && (batch.len() >= MAX_CHUNK_EVENTS
                || batch.frame_bytes + frame_bytes > self.max_chunk_bytes)
    }
}

/// What the parsing thread hands the appending one.
enum Piece {
    /// Checked records, appended as one batch.
    Batch(Records),
    /// The input ended: cleanly, or at a bad line or a read error (every
    /// line before it was handed over first).
    End(Option<LineError>),
}

/// Reads, checks and encodes `input` into batches on a thread of its own
/// while this one appends them. With `stream`, a batch is also handed over
/// whenever no more input is buffered (the next read may wait for the
/// producer). Returns why the input stopped early, once everything before
/// that point is appended.
fn append_pipelined<R: Read + Send>(
    appender: &mut Appender<'_>,
    input: R,
    stream: bool,
) -> Result<Option<LineError>, CliError> {
    let limits = appender.limits();
    std::thread::scope(|scope| {
        let (batches, checked) = mpsc::sync_channel(BATCHES_IN_FLIGHT);
        let (give_back, spare) = mpsc::channel();
        scope.spawn(move || parse_batches(input, limits, stream, &batches, &spare));
        // Returning early drops `checked`, which stops the parsing thread.
        for piece in checked.iter() {
            match piece {
                Piece::Batch(mut batch) => {
                    appender.append(&batch)?;
                    batch.clear();
                    // The parser may have finished: then the buffer is dropped.
                    let _ = give_back.send(batch);
                }
                Piece::End(stop) => return Ok(stop),
            }
        }
        // The parser hung up without `End`: it panicked, and the scope
        // passes the panic on.
        Ok(None)
    })
}

/// The parsing thread of [`append_pipelined`]. Stops quietly when the
/// appending side has hung up (it failed and reports why).
fn parse_batches<R: Read>(
    input: R,
    limits: BatchLimits,
    stream: bool,
    batches: &SyncSender<Piece>,
    spare: &Receiver<Records>,
) {
    let mut lines = EventLines::new(input);
    let mut batch = Records::default();
    let stop = loop {
        match lines.next_event() {
            Ok(Some(record)) => {
                let frame_bytes = limits.frame_bytes(record);
                if limits.is_full(&batch, frame_bytes) {
                    let next = spare.try_recv().unwrap_or_default();
                    let full = std::mem::replace(&mut batch, next);
                    if batches.send(Piece::Batch(full)).is_err() {
                        return;
                    }
                }
                batch.push(record, frame_bytes);
                if stream && !lines.input_buffered() {
                    let next = spare.try_recv().unwrap_or_default();
                    let ready = std::mem::replace(&mut batch, next);
                    if batches.send(Piece::Batch(ready)).is_err() {
                        return;
                    }
                }
            }
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    if !batch.is_empty() && batches.send(Piece::Batch(batch)).is_err() {
        return;
    }
    // Nobody to tell if the appending side has gone.
    let _ = batches.send(Piece::End(stop));
}

/// stdin: append each batch as soon as it is checked.
fn append_stream(appender: &mut Appender<'_>, input: impl Read + Send) -> Result<(), CliError> {
    match append_pipelined(appender, input, true)? {
        None => Ok(()),
        // The lines before the bad one are valid: they were appended.
        Some(LineError::Bad { line, reason }) => Err(appender.bad_line(line, reason, false)),
        Some(LineError::Io(e)) => Err(read_error(e)),
    }
}

/// A FILE: check all of it, then append it.
fn append_file(appender: &mut Appender<'_>, path: &Path) -> Result<(), CliError> {
    let open = |path: &Path| {
        File::open(path).map_err(|e| CliError::io(format!("opening {}", path.display()), e))
    };
    let mut file = open(path)?;
    let metadata = file
        .metadata()
        .map_err(|e| CliError::io(format!("reading {}", path.display()), e))?;
    if !metadata.is_file() {
        return append_unseekable(appender, file);
    }
    match check_file(&file, metadata.len()) {
        Ok(()) => {}
        Err(LineError::Bad { line, reason }) => return Err(appender.bad_line(line, reason, true)),
        Err(LineError::Io(e)) => return Err(read_error(e)),
    }
    // Second pass over the checked file. Were it changed in between, a bad
    // line stops here and the message says what was appended.
    file.rewind().map_err(read_error)?;
    match append_pipelined(appender, file, false)? {
        None => Ok(()),
        Some(LineError::Bad { line, reason }) => Err(appender.bad_line(
            line,
            format!("{reason} (the file changed while being appended)"),
            false,
        )),
        Some(LineError::Io(e)) => Err(read_error(e)),
    }
}

/// A pipe or device cannot be read twice: keep its events in memory
/// (their frame sizes are counted when `appender` takes them).
fn append_unseekable(appender: &mut Appender<'_>, file: File) -> Result<(), CliError> {
    let mut kept = Records::default();
    let mut lines = EventLines::new(file);
    loop {
        match lines.next_event() {
            Ok(Some(record)) => kept.push(record, 0),
            Ok(None) => break,
            Err(LineError::Bad { line, reason }) => {
                return Err(appender.bad_line(line, reason, true))
            }
            Err(LineError::Io(e)) => return Err(read_error(e)),
        }
    }
    for record in kept.iter() {
        appender.push(record.0)?;
    }
    appender.flush()
}

/// Checks every line of a regular file of `len` bytes, its two halves on
/// two threads. The error is the first bad line's, numbered from the start
/// of the file.
fn check_file(file: &File, len: u64) -> Result<(), LineError> {
    let split = split_point(file, len).map_err(LineError::Io)?;
    let (first, second) = std::thread::scope(|scope| {
        // The second half reads to the end, wherever that now is.
        let second = scope.spawn(|| check_range(file, split, u64::MAX));
        let first = check_range(file, 0, split);
        (first, second.join())
    });
    let first_lines = first?;
    match second {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(LineError::Bad { line, reason })) => Err(LineError::Bad {
            line: first_lines + line,
            reason,
        }),
        Ok(Err(e)) => Err(e),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Checks the lines in `start..end` of `file`; how many lines there were.
fn check_range(file: &File, start: u64, end: u64) -> Result<u64, LineError> {
    let mut lines = EventLines::new(FileRange {
        file,
        pos: start,
        end,
    });
    while lines.next_event()?.is_some() {}
    Ok(lines.line)
}

/// Where the line after the middle of the file starts (so both halves are
/// whole lines), or `len` for a small file or when no line ends within the
/// longest line allowed (that line is then refused by the first half).
fn split_point(file: &File, len: u64) -> io::Result<u64> {
    if len < PARALLEL_CHECK_MIN_BYTES {
        return Ok(len);
    }
    let mut pos = len / 2;
    let limit = len.min(pos + MAX_INPUT_LINE_BYTES as u64 + 2);
    let mut buf = vec![0; 64 << 10];
    while pos < limit {
        let n = file.read_at(&mut buf, pos)?;
        if n == 0 {
            break;
        }
        if let Some(i) = buf[..n].iter().position(|&b| b == b'\n') {
            return Ok(pos + i as u64 + 1);
        }
        pos += n as u64;
    }
    Ok(len)
}

/// A byte range of a file, read with `pread` (no shared cursor, so two
/// threads can read one file).
struct FileRange<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for FileRange<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = (self.end - self.pos).min(buf.len() as u64) as usize;
        if room == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..room], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    /// What the owned path stores for `line`, or its error message.
    fn owned(line: &str) -> Result<Vec<u8>, String> {
        let event: Event = serde_json::from_str(line).map_err(|e| json_reason(&e))?;
        let mut out = Vec::new();
        encode_record(&event, &mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }

    fn parsed(line: &str) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        parse_event(line.as_bytes(), &mut out).map(|()| out)
    }

    #[test]
    fn lines_store_what_the_owned_event_stores() {
        for line in [
            r#"{"timestamp":"2026-03-09T09:52:14Z","event":"pcap.download","actor":"alice@acme.io","ip":"203.0.113.42","context":{"bytes":18231,"f":1E+2,"s":"caf\u00e9\/x"}}"#,
            // Left to the owned path: a repeated context key.
            r#"{"timestamp":"2026-03-09T09:52:14Z","event":"a.b","actor":"x","context":{"a":1,"b":2,"a":3}}"#,
            // Refused by serde_json, and refused by validation.
            r#"{"timestamp":"2026-03-09T09:52:14Z","event":"a.b","actor":"x","colour":"red"}"#,
            r#"{"timestamp":"2026-03-09T09:52:14Z","event":"Pcap.download","actor":"x"}"#,
            r#"{"event":"a.b","actor":"#,
        ] {
            assert_eq!(parsed(line), owned(line), "{line}");
        }
        let dup = parsed(r#"{"timestamp":"2026-03-09T09:52:14Z","event":"a.b","actor":"x","context":{"a":1,"b":2,"a":3}}"#).unwrap();
        assert!(dup.ends_with(br#"{"a":3,"b":2}"#));
    }

    #[test]
    fn a_line_that_is_not_utf8_gets_serde_jsons_message() {
        let line = b"{\"event\":\"a.b\",\"actor\":\"\xff\"}";
        let mut out = Vec::new();
        let reason = parse_event(line, &mut out).unwrap_err();
        assert!(reason.contains("invalid unicode code point"), "{reason}");
        assert!(out.is_empty());
    }

    #[test]
    fn records_are_split_where_they_were_pushed() {
        let mut records = Records::default();
        records.push(b"abc", 40);
        records.push(b"", 32);
        records.push(b"de", 48);
        let parts: Vec<&[u8]> = records.iter().map(|r| r.0).collect();
        assert_eq!(parts, [&b"abc"[..], b"", b"de"]);
        assert_eq!(records.frame_bytes, 40 + 32 + 48);
        records.clear();
        assert!(records.is_empty() && records.frame_bytes == 0);
    }
}
