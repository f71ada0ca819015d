//! `chainlog retention` and `chainlog hold`: deleting whole old sealed
//! segments, and the legal hold that blocks it.
//!
//! Both write to the log (a `log.retention` record, or `log.hold_set` /
//! `log.hold_released`), so they take the writer lock; `hold status` and
//! `retention --dry-run` only read.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use chainlog::retention::{self, DeletedSegment, LegalHold, RetentionPolicy};
use chainlog::{Log, Options, Timestamp};
use clap::{Args, Subcommand};

use crate::error::CliError;
use crate::read::newest_segment_bytes;
use crate::Global;

/// Units `--max-age` takes, in seconds.
const AGE_UNITS: [(&str, u64); 6] = [
    ("y", 365 * 86_400),
    ("w", 7 * 86_400),
    ("d", 86_400),
    ("h", 3_600),
    ("m", 60),
    ("s", 1),
];

/// `chainlog retention`.
#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// Delete sealed segments whose newest event is older than this: a
    /// number and a unit, s, m, h, d, w or y (365 days): 30m, 12h, 90d, 2w,
    /// 1y. Default 90d when neither --max-age nor --max-bytes is given.
    #[arg(long, value_name = "DURATION", value_parser = parse_age)]
    max_age: Option<Duration>,
    /// Delete the oldest sealed segments while all segment files together
    /// exceed this size: bytes, or with a K/KiB, M/MiB or G/GiB suffix.
    #[arg(long, value_name = "BYTES", value_parser = crate::parse_size)]
    max_bytes: Option<u64>,
    /// List the segments that would be deleted and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Delete only segments archived in s3://BUCKET/PREFIX (by `chainlog
    /// archive`; endpoint and credentials from the AWS environment
    /// variables): due segments are deleted oldest first up to the first
    /// one without an exact archived copy; it and the due segments after it
    /// are kept and listed.
    #[cfg(feature = "s3")]
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    only_archived: Option<String>,
}

/// `chainlog hold`.
#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Set a legal hold: retention deletes nothing until it is released.
    Set(HoldChange),
    /// Release the legal hold.
    Release(HoldChange),
    /// Show whether a legal hold is set, by whom, when and why.
    Status {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Who sets or releases a hold, and why; both are recorded in the chain.
#[derive(Debug, Args)]
pub struct HoldChange {
    /// Who: a person or service, recorded as the event's actor.
    #[arg(long, value_name = "ACTOR")]
    actor: String,
    /// Why: recorded in the event's context.
    #[arg(long, value_name = "REASON")]
    reason: String,
}

/// Parses `90d`, `12h`, `30m`, `2w`, `1y` (365 days), `45s`.
fn parse_age(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!("{text:?} is not a duration: use a number and a unit, e.g. 30m, 12h, 90d, 2w, 1y")
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let (_, unit_secs) = AGE_UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .ok_or_else(bad)?;
    let secs = n
        .checked_mul(*unit_secs)
        .filter(|s| i64::try_from(*s).is_ok_and(|s| s.checked_mul(1_000_000_000).is_some()))
        .ok_or_else(|| format!("{text:?} is too long"))?;
    Ok(Duration::from_secs(secs))
}

/// A duration in the largest unit that divides it: `90d`, `2w`, `36h`.
fn format_age(age: Duration) -> String {
    let secs = age.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    AGE_UNITS
        .iter()
        .find(|(_, unit)| secs % unit == 0)
        .map_or_else(
            || format!("{secs}s"),
            |(name, unit)| format!("{}{name}", secs / unit),
        )
}

fn plural(n: u64, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// One line per segment: file, seq range, records, event time span, bytes,
/// and (version 2) when its last record was received.
fn segment_line(seg: &DeletedSegment) -> String {
    let received = seg
        .max_received_at
        .map_or_else(String::new, |t| format!("  last received {t}"));
    format!(
        "  {}  seq {}..={}  {}  {} .. {}  {} bytes{received}",
        seg.file,
        seg.base_seq,
        seg.last_seq,
        plural(seg.record_count, "record"),
        seg.min_timestamp,
        seg.max_timestamp,
        seg.bytes
    )
}

/// "3 segments (seq 0..=1199, 1200 records, 393216 bytes)".
fn segments_summary(segments: &[DeletedSegment]) -> String {
    let records: u64 = segments.iter().map(|s| s.record_count).sum();
    let bytes: u64 = segments.iter().map(|s| s.bytes).sum();
    let range = match (segments.first(), segments.last()) {
        (Some(first), Some(last)) => format!("seq {}..={}, ", first.base_seq, last.last_seq),
        _ => String::new(),
    };
    format!(
        "{} ({range}{}, {bytes} bytes)",
        plural(segments.len() as u64, "segment"),
        plural(records, "record")
    )
}

/// The policy in words: "max age 90d (received before T), max bytes 1048576".
fn policy_summary(policy: &RetentionPolicy, now: Timestamp) -> String {
    let mut parts = Vec::new();
    if let (Some(age), Some(cutoff)) = (policy.max_age, retention::cutoff(policy, now)) {
        parts.push(format!(
            "max age {} (last record received before {cutoff})",
            format_age(age)
        ));
    }
    if let Some(max) = policy.max_bytes {
        parts.push(format!("max bytes {max}"));
    }
    parts.join(", ")
}

fn hold_text(hold: &LegalHold) -> String {
    format!("set by {} at {}: {}", hold.actor, hold.since, hold.reason)
}

/// Opens the log for writing, keeping the newest segment's size for any
/// segment a record written here creates.
fn open_for_writing(dir: &Path) -> Result<Log, CliError> {
    let segment_bytes = newest_segment_bytes(dir)?.unwrap_or(Options::default().segment_bytes);
    crate::clock::open(
        dir,
        Options {
            segment_bytes,
            ..Options::default()
        },
    )
}

fn open_read_only(dir: &Path) -> Result<Log, CliError> {
    crate::read::open_read_only(dir)
}

/// Runs `chainlog retention`.
pub fn run(global: &Global, args: RetentionArgs) -> Result<ExitCode, CliError> {
    let dir = global.dir()?;
    let policy = match (args.max_age, args.max_bytes) {
        (None, None) => RetentionPolicy::default(),
        (max_age, max_bytes) => RetentionPolicy { max_age, max_bytes },
    };
    #[cfg(feature = "s3")]
    let only_archived = args.only_archived.as_deref();
    #[cfg(not(feature = "s3"))]
    let only_archived: Option<&str> = None;
    if args.dry_run {
        return dry_run(global, dir, &policy, only_archived);
    }
    let log = open_for_writing(dir)?;
    // Age is judged by the engine's clock, as the run itself reads it.
    let now = log.engine_now();
    #[cfg(feature = "s3")]
    let applied = match only_archived {
        Some(url) => crate::archive::apply_retention_archived(&log, url, &policy),
        None => log.apply_retention(&policy).map_err(CliError::from),
    };
    #[cfg(not(feature = "s3"))]
    let applied = log.apply_retention(&policy).map_err(CliError::from);
    let outcome = match applied {
        Ok(outcome) => outcome,
        Err(CliError::Log(chainlog::Error::LegalHold {
            actor,
            reason,
            since,
        })) => {
            return Err(CliError::Usage(format!(
                "retention blocked by a legal hold set by {actor} at {since}: {reason}; nothing was deleted (release it with `chainlog hold release`)"
            )))
        }
        Err(e) => return Err(e),
    };
    log.close()?;
    match &outcome.record {
        None if !global.quiet => {
            let what = if outcome.kept.is_empty() {
                "nothing to delete"
            } else {
                "deleted nothing"
            };
            outln!("{what} under {}", policy_summary(&policy, now))?;
        }
        None => {}
        Some(record) => {
            if !global.quiet {
                outln!(
                    "deleted {} under {}:",
                    segments_summary(&outcome.deleted),
                    policy_summary(&policy, now)
                )?;
            }
            for seg in &outcome.deleted {
                outln!("{}", segment_line(seg))?;
            }
            outln!("retention record: seq {}, hash {}", record.seq, record.hash)?;
        }
    }
    if let Some(url) = only_archived {
        print_kept(url, &outcome.kept, "kept")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The due segments kept because the first of them is not archived.
fn print_kept(url: &str, kept: &[DeletedSegment], verb: &str) -> Result<(), CliError> {
    let Some(first) = kept.first() else {
        return Ok(());
    };
    outln!(
        "{verb} {} due for deletion: {} is not archived in {url} yet, and deletion stops there (run `chainlog archive --to {url}` first):",
        segments_summary(kept),
        first.file
    )?;
    for seg in kept {
        outln!("{}", segment_line(seg))?;
    }
    Ok(())
}

fn dry_run(
    global: &Global,
    dir: &Path,
    policy: &RetentionPolicy,
    only_archived: Option<&str>,
) -> Result<ExitCode, CliError> {
    let log = open_read_only(dir)?;
    let now = log.engine_now();
    let planned = log.plan_retention(policy)?;
    let (planned, kept) = match only_archived {
        #[cfg(feature = "s3")]
        Some(url) if !planned.is_empty() => {
            let count = crate::archive::archived_prefix(dir, url, &planned)?;
            let (deleted, kept) = planned.split_at(count);
            (deleted.to_vec(), kept.to_vec())
        }
        _ => (planned, Vec::new()),
    };
    let hold = log.hold()?;
    if !global.quiet {
        if planned.is_empty() {
            outln!(
                "dry run: nothing to delete under {}",
                policy_summary(policy, now)
            )?;
        } else {
            outln!(
                "dry run: would delete {} under {}:",
                segments_summary(&planned),
                policy_summary(policy, now)
            )?;
        }
    }
    for seg in &planned {
        outln!("{}", segment_line(seg))?;
    }
    if let Some(url) = only_archived {
        print_kept(url, &kept, "dry run: would keep")?;
    }
    if let Some(hold) = hold {
        if !global.quiet {
            outln!(
                "note: a legal hold is {}; a real run would be refused",
                hold_text(&hold)
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `chainlog hold`.
pub fn hold(global: &Global, command: HoldCommand) -> Result<ExitCode, CliError> {
    let dir = global.dir()?;
    match command {
        HoldCommand::Set(change) => {
            let log = open_for_writing(dir)?;
            let receipt = match log.set_hold(&change.actor, &change.reason) {
                Ok(receipt) => receipt,
                Err(e @ chainlog::Error::HoldState(_)) => {
                    let current = log.hold().ok().flatten();
                    let detail =
                        current.map_or_else(String::new, |h| format!(" ({})", hold_text(&h)));
                    return Err(CliError::Usage(format!("{e}{detail}")));
                }
                Err(e) => return Err(e.into()),
            };
            log.close()?;
            outln!(
                "legal hold set by {}: seq {}, hash {}",
                change.actor,
                receipt.seq,
                receipt.hash
            )?;
        }
        HoldCommand::Release(change) => {
            let log = open_for_writing(dir)?;
            let receipt = match log.release_hold(&change.actor, &change.reason) {
                Ok(receipt) => receipt,
                Err(e @ chainlog::Error::HoldState(_)) => {
                    return Err(CliError::Usage(e.to_string()))
                }
                Err(e) => return Err(e.into()),
            };
            log.close()?;
            outln!(
                "legal hold released by {}: seq {}, hash {}",
                change.actor,
                receipt.seq,
                receipt.hash
            )?;
        }
        HoldCommand::Status { json } => {
            let log = open_read_only(dir)?;
            let hold = log.hold()?;
            if json {
                let value = match &hold {
                    Some(h) => serde_json::json!({
                        "held": true,
                        "actor": h.actor,
                        "reason": h.reason,
                        "since": h.since,
                    }),
                    None => serde_json::json!({ "held": false }),
                };
                outln!("{value}")?;
            } else {
                match &hold {
                    Some(h) => outln!("legal hold {}", hold_text(h))?,
                    None => outln!("no legal hold")?,
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
