//! `chainlog init`, `cat` and `stats`, and reading the log directory.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chainlog::format::segment::{self, read_header, read_trailer};
use chainlog::storage::{FsStorage, Storage};
use chainlog::{ChainHash, Event, Log, Options, Timestamp};
use serde::Serialize;

use crate::error::CliError;
use crate::Global;

/// The segment files in `dir`, by base seq, oldest first.
pub fn segment_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, CliError> {
    let names = FsStorage.list(dir).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => CliError::Log(chainlog::Error::NotFound(dir.to_path_buf())),
        _ => CliError::io(format!("listing {}", dir.display()), e),
    })?;
    let mut segments: Vec<(u64, PathBuf)> = names
        .iter()
        .filter_map(|name| segment::parse_file_name(name).map(|base| (base, dir.join(name))))
        .collect();
    segments.sort_unstable();
    Ok(segments)
}

/// The segment size the newest segment was created with, if there is one.
pub fn newest_segment_bytes(dir: &Path) -> Result<Option<u64>, CliError> {
    Ok(Log::newest_segment_bytes(dir)?)
}

/// Opens the log without the writer lock, so it works beside an appender.
/// A corrupt newest segment is read up to the damage; stderr says where.
pub fn open_read_only(dir: &Path) -> Result<Log, CliError> {
    let log = crate::clock::open(dir, Options::for_reading())?;
    if let Some(d) = log.damage() {
        eprintln!(
            "chainlog: warning: {} is damaged at byte {} ({}); reading only the records before it (see `chainlog verify`, and `chainlog recover --cut-at {}`)",
            d.segment, d.offset, d.reason, d.offset
        );
    }
    Ok(log)
}

/// Runs `chainlog init`.
pub fn init(
    global: &Global,
    segment_bytes: u64,
    group: Option<&str>,
) -> Result<ExitCode, CliError> {
    let dir = global.dir()?;
    if let Some(name) = group {
        let gid = chainlog::storage::perms::group_id(name).ok_or_else(|| {
            CliError::Usage(format!(
                "--group {name:?}: no such group in /etc/group (give a name or a numeric gid)"
            ))
        })?;
        chainlog::storage::perms::share_with_group(dir, gid)
            .map_err(|e| CliError::io(format!("sharing {} with group {name}", dir.display()), e))?;
    }
    let log = crate::clock::create(
        dir,
        Options {
            segment_bytes,
            ..Options::default()
        },
    )?;
    let id = log.log_id();
    log.close()?;
    if !global.quiet {
        outln!(
            "created log {id} in {} (segments of {segment_bytes} bytes)",
            dir.display()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `chainlog migrate [DIR]`.
pub fn migrate(global: &Global, dir: Option<&Path>) -> Result<ExitCode, CliError> {
    let dir = match dir {
        Some(dir) => dir,
        None => global.dir()?,
    };
    // New segments keep the size the log was created with.
    let segment_bytes = newest_segment_bytes(dir)?.unwrap_or(Options::default().segment_bytes);
    let options = Options {
        segment_bytes,
        appender: chainlog::log::os_user_appender(),
        ..Options::default()
    };
    let migration = Log::migrate(dir, options)?;
    if !global.quiet {
        match migration.record {
            Some(r) => outln!(
                "migrated {} from format version {} to {}: record {} ({}) says so",
                dir.display(),
                migration.from_version,
                segment::FORMAT_VERSION,
                r.seq,
                chainlog::retention::MIGRATED_EVENT
            )?,
            None => outln!(
                "{} already has format version {}: nothing to do",
                dir.display(),
                migration.from_version
            )?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line of `chainlog cat`.
#[derive(Serialize)]
struct CatLine<'a> {
    seq: u64,
    hash: ChainHash,
    #[serde(flatten)]
    event: &'a Event,
}

/// Runs `chainlog cat`.
pub fn cat(global: &Global, from: u64, limit: Option<u64>) -> Result<ExitCode, CliError> {
    let log = open_read_only(global.dir()?)?;
    let mut out = BufWriter::new(io::stdout().lock());
    let records = log.iter_from(from);
    for record in records.take(limit.map_or(usize::MAX, |n| n.try_into().unwrap_or(usize::MAX))) {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                out.flush().map_err(CliError::output)?;
                return Err(e.into());
            }
        };
        let line = CatLine {
            seq: record.seq,
            hash: record.hash,
            event: &record.event,
        };
        serde_json::to_writer(&mut out, &line).map_err(|e| CliError::output(io::Error::from(e)))?;
        out.write_all(b"\n").map_err(CliError::output)?;
    }
    out.flush().map_err(CliError::output)?;
    Ok(ExitCode::SUCCESS)
}

/// What `chainlog stats` reports.
#[derive(Debug, Serialize)]
struct Stats {
    log_id: String,
    segments: usize,
    records: u64,
    bytes_on_disk: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    head: ChainHash,
    min_timestamp: Option<Timestamp>,
    max_timestamp: Option<Timestamp>,
}

/// The size of every file in the log directory and below it: segments,
/// indexes, Merkle tiles and all.
fn directory_bytes(dir: &Path) -> Result<u64, CliError> {
    let io = |e| CliError::io(format!("listing {}", dir.display()), e);
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).map_err(io)? {
            let entry = entry.map_err(io)?;
            let metadata = entry.metadata().map_err(io)?;
            if metadata.is_dir() {
                pending.push(entry.path());
            } else if metadata.is_file() {
                total += metadata.len();
            }
        }
    }
    Ok(total)
}

fn note_time(span: &mut Option<(Timestamp, Timestamp)>, min: Timestamp, max: Timestamp) {
    *span = Some(match *span {
        None => (min, max),
        Some((lo, hi)) => (lo.min(min), hi.max(max)),
    });
}

/// Runs `chainlog stats`. Sealed segments give their time span from their
/// trailer; the unsealed (newest) one is read record by record.
pub fn stats(global: &Global, json: bool) -> Result<ExitCode, CliError> {
    let dir = global.dir()?;
    let log = open_read_only(dir)?;
    let state = log.state();
    let segments: Vec<(u64, PathBuf)> = segment_files(dir)?
        .into_iter()
        .filter(|(base, _)| *base <= state.next_seq)
        .collect();
    let bytes_on_disk = directory_bytes(dir)?;
    let mut span = None;
    for (i, (base, path)) in segments.iter().enumerate() {
        let name = segment::file_name(*base);
        let file = FsStorage
            .open(path, false)
            .map_err(|e| CliError::io(format!("opening {}", path.display()), e))?;
        let header = read_header(&*file, &name)?;
        if let Some(trailer) = read_trailer(&*file, &name, header.segment_bytes)? {
            note_time(&mut span, trailer.min_timestamp, trailer.max_timestamp);
            continue;
        }
        let end = segments
            .get(i + 1)
            .map_or(state.next_seq, |(next, _)| *next);
        for record in log.iter_from(*base) {
            let record = record?;
            if record.seq >= end {
                break;
            }
            let ts = record.event.timestamp;
            note_time(&mut span, ts, ts);
        }
    }
    let records = state.next_seq - state.first_seq;
    let stats = Stats {
        log_id: state.log_id.to_string(),
        segments: segments.len(),
        records,
        bytes_on_disk,
        first_seq: (records > 0).then_some(state.first_seq),
        last_seq: state.next_seq.checked_sub(1).filter(|_| records > 0),
        head: state.head,
        min_timestamp: span.map(|s| s.0),
        max_timestamp: span.map(|s| s.1),
    };
    let text = if json {
        serde_json::to_string_pretty(&stats).map_err(|e| CliError::output(e.into()))?
    } else {
        human_stats(&stats, dir)
    };
    let mut out = io::stdout().lock();
    writeln!(out, "{text}").map_err(CliError::output)?;
    Ok(ExitCode::SUCCESS)
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn human_stats(s: &Stats, dir: &Path) -> String {
    let span = match (s.min_timestamp, s.max_timestamp) {
        (Some(lo), Some(hi)) => format!("{lo} .. {hi}"),
        _ => "-".to_string(),
    };
    [
        ("directory", dir.display().to_string()),
        ("log id", s.log_id.clone()),
        ("segments", s.segments.to_string()),
        ("records", s.records.to_string()),
        ("first seq", or_dash(s.first_seq)),
        ("last seq", or_dash(s.last_seq)),
        ("bytes on disk", s.bytes_on_disk.to_string()),
        ("head", s.head.to_string()),
        ("time span", span),
    ]
    .iter()
    .map(|(k, v)| format!("{k:<14}{v}"))
    .collect::<Vec<_>>()
    .join("\n")
}
