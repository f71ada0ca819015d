//! `chainlog append`: JSON Lines in, records (and receipts) out.
//! Owns the command's input handling; uses the library's public API only.
//!
//! Every line is parsed and fully validated (including the encoded size
//! limits) before any line of its batch is appended. From a FILE the whole
//! file is checked first, so a bad line anywhere appends nothing. From stdin
//! (a stream that may never end) lines are appended in batches as they
//! arrive; a bad line stops the command, and the lines before it in its
//! batch are appended, it and everything after it are not.
//!
//! A line is read as a borrowed [`EventRef`](chainlog::event::EventRef)
//! and encoded at once ([`lines`]); batches keep the encoded records, so
//! each event is parsed once. A FILE is checked on both cores, keeping its
//! records (within a memory budget), then appended ([`file`]); stdin is
//! parsed on one thread while the other appends ([`pipeline`]).

mod file;
mod lines;
mod pipeline;

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use chainlog::format::segment::{data_end_limit, HEADER_BYTES};
use chainlog::{Log, Options, Receipt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::CliError;
use crate::read::newest_segment_bytes;
use crate::{DurabilityArg, Global};
use lines::{BatchLimits, LineError, Records};

/// Most frame bytes appended in one call (also bounded by a segment's room).
const MAX_CHUNK_BYTES: u64 = 8 << 20;

/// Appends batches, printing receipts once each batch is durable.
struct Appender<'a> {
    log: &'a Log,
    /// The policy does not sync before `append_batch` returns.
    relaxed: bool,
    receipts: bool,
    limits: BatchLimits,
    progress: Progress,
    count: u64,
    first: Option<u64>,
    last: Option<Receipt>,
}

impl Appender<'_> {
    fn limits(&self) -> BatchLimits {
        self.limits
    }

    /// Appends `batch` as one `append_batch` call.
    fn append(&mut self, batch: &Records) -> Result<(), CliError> {
        if batch.is_empty() {
            return Ok(());
        }
        let records: Vec<lines::Encoded<'_>> = batch.iter().collect();
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
        self.progress.appended(receipts.len());
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

    /// The error for input that stopped at `stop`, in a part of the input
    /// that starts after `lines_before` lines.
    fn refused(&self, stop: LineError, whole_file_checked: bool, lines_before: u64) -> CliError {
        match stop {
            LineError::Bad { line, reason } => {
                self.bad_line(lines_before + line, reason, whole_file_checked)
            }
            LineError::Io(e) => read_error(e),
        }
    }
}

fn read_error(source: io::Error) -> CliError {
    CliError::io("reading the input", source)
}

/// The progress of a FILE on a terminal: bytes checked, then records
/// appended. Nothing when stderr is not a terminal or with `--quiet`.
struct Progress(Option<ProgressBar>);

impl Progress {
    fn new(show: bool) -> Self {
        Progress(show.then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        }))
    }

    fn restyle(&self, template: &str, len: u64) {
        if let Some(bar) = &self.0 {
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar.set_length(len);
            bar.set_position(0);
        }
    }

    fn start_checking(&self, bytes: u64) {
        self.restyle(
            "{spinner} checking: {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta} left)",
            bytes,
        );
    }

    /// A pipe's length is not known: bytes checked so far.
    fn start_checking_stream(&self) {
        self.restyle(
            "{spinner} checking: {binary_bytes} ({binary_bytes_per_sec})",
            0,
        );
    }

    /// `bytes` more of the input were checked (from either thread).
    fn checked(&self, bytes: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(bytes);
        }
    }

    /// `parsed_again`: part of the input was checked without keeping its
    /// records, so the count of records to append is not known.
    fn start_appending(&self, kept: u64, parsed_again: bool) {
        let template = if parsed_again {
            "{spinner} appending: {human_pos} records ({per_sec})"
        } else {
            "{spinner} appending: {human_pos}/{human_len} records ({per_sec}, {eta} left)"
        };
        self.restyle(template, kept);
    }

    fn appended(&self, records: usize) {
        if let Some(bar) = &self.0 {
            bar.inc(records as u64);
        }
    }
}

impl Progress {
    /// Clears the bar (before the summary line is printed).
    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
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
        limits: BatchLimits {
            prefix_bytes,
            max_chunk_bytes: (data_end_limit(segment_bytes) - HEADER_BYTES).min(MAX_CHUNK_BYTES),
        },
        progress: Progress::new(file.is_some() && !global.quiet && io::stderr().is_terminal()),
        count: 0,
        first: None,
        last: None,
    };
    match file {
        None => append_stream(&mut appender)?,
        Some(path) if path == Path::new("-") => append_stream(&mut appender)?,
        Some(path) => file::append_file(&mut appender, path)?,
    }
    appender.progress.finish();
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

/// stdin: append each batch as soon as it is checked. The lines before a
/// bad line are valid: they were appended.
fn append_stream(appender: &mut Appender<'_>) -> Result<(), CliError> {
    match pipeline::append_pipelined(appender, io::stdin(), 0, true)? {
        None => Ok(()),
        Some(stop) => Err(appender.refused(stop, false, 0)),
    }
}
