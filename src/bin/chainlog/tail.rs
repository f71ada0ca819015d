//! `chainlog tail [-f]`: the newest matching records as JSON Lines, then,
//! with `-f`, each new one as another process appends it.
//!
//! The log is opened read-only, beside whatever process writes it. A
//! read-only handle sees the log as it was when opened, so following means
//! looking again: every [`POLL_INTERVAL`] the segment files' names and
//! modification times are compared with the last look (a directory read
//! and a `stat` per segment, no record is read), and only when they
//! changed, or at the latest every [`REOPEN_INTERVAL`] (a write within
//! the same timestamp tick as the last look would not change them), is the
//! log opened again and read from the first seq not yet looked at. A new
//! record is printed within about [`POLL_INTERVAL`] of being written.

use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use chainlog::query::export::{ExportFormat, ExportOptions, Exporter};
use chainlog::query::{Match, Query};
use chainlog::{Log, Options, Timestamp};
use clap::Args;

use crate::error::CliError;
use crate::query::FilterArgs;
use crate::Global;

/// Records printed when neither `--limit` nor a start seq is given.
pub const DEFAULT_TAIL_RECORDS: u64 = 10;
/// How often `-f` looks for new records.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Longest `-f` goes without reopening the log, changed files or not.
pub const REOPEN_INTERVAL: Duration = Duration::from_secs(2);

/// `chainlog tail`'s arguments.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Keep printing matching records as they are appended (by another
    /// process), looking every 200 ms, until interrupted (Ctrl-C).
    #[arg(long, short)]
    follow: bool,
    /// Which records, and how many: `--limit N` prints the newest N
    /// matches (default 10); `--from-seq`/`--after` instead print every
    /// match from there on. `--reverse` does not apply.
    #[command(flatten)]
    filter: FilterArgs,
}

/// What the segment files look like: (name, modification time) of each.
type Stamp = Vec<(String, Option<SystemTime>)>;

fn stamp(dir: &Path) -> Stamp {
    let mut seen = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if chainlog::format::segment::parse_file_name(&name).is_some() {
                let modified = entry.metadata().ok().and_then(|m| m.modified().ok());
                seen.push((name, modified));
            }
        }
    }
    seen.sort();
    seen
}

/// Writes `matches` as JSON Lines and flushes, so a follower's reader sees
/// each batch at once.
fn print(out: &mut BufWriter<io::StdoutLock<'_>>, matches: &[Match]) -> Result<(), CliError> {
    let mut exporter = Exporter::new(&mut *out, ExportOptions::new(ExportFormat::JsonLines))
        .map_err(CliError::output)?;
    for m in matches {
        exporter
            .write(m)
            .map_err(|e| CliError::Usage(e.to_string()))?;
    }
    exporter.finish().map_err(CliError::output)?;
    out.flush().map_err(CliError::output)
}

/// Prints every match of `query`'s filter from seq `from` on, streaming;
/// returns the seq to look at next.
fn print_from(
    out: &mut BufWriter<io::StdoutLock<'_>>,
    log: &Log,
    query: &Query,
    from: u64,
) -> Result<u64, CliError> {
    // A read-only handle does not grow: every record below this is read.
    let next = log.state().next_seq;
    let q = Query {
        filter: query.filter.clone(),
        from_seq: Some(from),
        after: None,
        reverse: false,
        limit: None,
    };
    let mut exporter = Exporter::new(&mut *out, ExportOptions::new(ExportFormat::JsonLines))
        .map_err(CliError::output)?;
    for m in log.query(&q)? {
        exporter
            .write(&m?)
            .map_err(|e| CliError::Usage(e.to_string()))?;
    }
    exporter.finish().map_err(CliError::output)?;
    out.flush().map_err(CliError::output)?;
    Ok(next)
}

/// Runs `chainlog tail`.
pub fn run(global: &Global, args: TailArgs) -> Result<ExitCode, CliError> {
    let query = args.filter.to_query(Timestamp::now())?;
    if query.reverse {
        return Err(CliError::Usage(
            "--reverse does not apply to tail: it prints oldest first".into(),
        ));
    }
    let start = match (query.from_seq, query.after) {
        (_, Some(after)) => Some(after.saturating_add(1)),
        (from, None) => from,
    };
    if start.is_some() && query.limit.is_some() {
        return Err(CliError::Usage(
            "--limit picks the newest N matches; with --from-seq or --after, tail prints every match from there".into(),
        ));
    }
    let dir = global.dir()?;
    let mut out = BufWriter::new(io::stdout().lock());
    let mut last_stamp = stamp(dir);
    let log = crate::read::open_read_only(dir)?;
    let mut next = match start {
        Some(from) => print_from(&mut out, &log, &query, from)?,
        None => {
            // The newest N, read newest first, printed oldest first.
            let newest = Query {
                reverse: true,
                limit: Some(query.limit.unwrap_or(DEFAULT_TAIL_RECORDS)),
                ..query.clone()
            };
            let mut found = log.query(&newest)?.collect::<Result<Vec<_>, _>>()?;
            found.reverse();
            print(&mut out, &found)?;
            log.state().next_seq
        }
    };
    drop(log);
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut opened = Instant::now();
    loop {
        std::thread::sleep(POLL_INTERVAL);
        let now_stamp = stamp(dir);
        if now_stamp == last_stamp && opened.elapsed() < REOPEN_INTERVAL {
            continue;
        }
        last_stamp = now_stamp;
        opened = Instant::now();
        let log = crate::clock::open(dir, Options::for_reading())?;
        next = print_from(&mut out, &log, &query, next)?;
    }
}
