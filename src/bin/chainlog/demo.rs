//! `chainlog demo`: a log of realistic events, queried, exported and
//! verified; then a copy with one byte changed, and the verifier pointing at it.

use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use chainlog::format::frame::{padded_len, FRAME_HEADER_BYTES};
use chainlog::format::segment::{self, HEADER_BYTES, MIN_SEGMENT_BYTES};
use chainlog::query::export::{ExportError, ExportFormat, ExportOptions, Exporter};
use chainlog::query::{Filter, Query};
use chainlog::verify::ProblemKind;
use chainlog::{Event, Log, Options, Outcome};
use serde_json::json;

use crate::error::CliError;
use crate::query::{count_line, event_cells, query_table, table_lines};
use crate::read::segment_files;
use crate::report::{problem_line, summary};
use crate::verify::verify_with_progress;

/// The record the demo tampers with: a failed login, turned into a success.
const TAMPERED_SEQ: u64 = 4;
/// Offset of the outcome byte in the event body (after the i64 timestamp).
const OUTCOME_AT: usize = 8;

/// The demo's events, in the CLI's JSON input form.
fn demo_events() -> Result<Vec<Event>, CliError> {
    let v6 = "2001:db8:85a3::8a2e:370:7334";
    let events = json!([
        {"timestamp": "2026-03-09T08:00:00Z", "event": "node.added", "actor": "deploy-bot",
         "node": "nyc-edge-03", "ip": "10.20.0.5",
         "context": {"region": "us-east", "image": "edge-2026.03.1", "capacity_gbps": 40}},
        {"timestamp": "2026-03-09T08:14:07Z", "event": "auth.login", "actor": "alice@acme.io",
         "ip": "203.0.113.42", "context": {"method": "password+totp"}},
        {"timestamp": "2026-03-09T08:15:31Z", "event": "incident.opened", "actor": "alice@acme.io",
         "node": "nyc-edge-01", "resource": "INC-4821", "ip": "203.0.113.42",
         "context": {"severity": "high", "title": "packet loss on uplink xe-0/0/1",
                     "peak_pps": 1_840_000, "peak_loss_pct": 12.5}},
        {"timestamp": "2026-03-09T08:22:48Z", "event": "pcap.download", "actor": "alice@acme.io",
         "node": "nyc-edge-01", "resource": "a3f7c2b1", "ip": "203.0.113.42",
         "context": {"sha256": "83f8b0b56c68b3fc8e9e828fc949537eeed70063e4b76477affd9554f38768cd",
                     "bytes": 18_231_904, "filter": "tcp port 443"}},
        {"timestamp": "2026-03-09T08:31:02Z", "event": "auth.login_failed", "actor": "bob@acme.io",
         "ip": "198.51.100.77", "outcome": "failure",
         "context": {"reason": "bad_password", "attempt": 3}},
        {"timestamp": "2026-03-09T08:31:40Z", "event": "auth.login", "actor": "bob@acme.io",
         "ip": v6, "context": {"method": "sso"}},
        {"timestamp": "2026-03-09T08:40:00Z", "event": "maintenance.started", "actor": "bob@acme.io",
         "node": "fra-core-02", "resource": "MW-2291", "ip": v6,
         "context": {"planned_minutes": 45, "reason": "line card replacement"}},
        {"timestamp": "2026-03-09T08:52:13Z", "event": "config.changed", "actor": "bob@acme.io",
         "node": "fra-core-02", "ip": v6,
         "context": {"key": "bgp.hold_time_s", "old": 90, "new": 30}},
        {"timestamp": "2026-03-09T09:05:00Z", "event": "apikey.rotated", "actor": "deploy-bot",
         "resource": "key_7Hq2", "ip": "10.20.0.5",
         "context": {"old_key_id": "key_3Mx9", "new_key_id": "key_7Hq2",
                     "expires": "2026-06-07T00:00:00Z"}},
        {"timestamp": "2026-03-09T09:18:44Z", "event": "maintenance.ended", "actor": "system",
         "node": "fra-core-02", "resource": "MW-2291",
         "context": {"duration_minutes": 38, "checks_passed": true}},
        {"timestamp": "2026-03-09T09:30:09Z", "event": "pcap.download", "actor": "bob@acme.io",
         "node": "fra-core-02", "resource": "9c41e0d7", "ip": v6,
         "context": {"sha256": "fa677512c46589b19436f8bc71fea4da39d608d57c27e97194ae43055e10473c",
                     "bytes": 4_502_118, "filter": "host 192.0.2.10"}},
        {"timestamp": "2026-03-09T09:47:55Z", "event": "incident.resolved", "actor": "alice@acme.io",
         "node": "nyc-edge-01", "resource": "INC-4821", "ip": "203.0.113.42",
         "context": {"duration_minutes": 92, "root_cause": "flapping optic",
                     "peak_pps": 1_840_000, "peak_loss_pct": 12.5}},
        {"timestamp": "2026-03-09T10:02:30Z", "event": "node.removed", "actor": "deploy-bot",
         "node": "ams-edge-07", "ip": "10.20.0.5",
         "context": {"reason": "decommissioned", "drained": true}},
        {"timestamp": "2026-03-09T10:15:12Z", "event": "auth.login_failed", "actor": "alice@acme.io",
         "ip": "192.0.2.200", "outcome": "failure",
         "context": {"reason": "invalid_totp", "attempt": 1}},
        {"timestamp": "2026-03-09T10:20:00Z", "event": "apikey.rotated", "actor": "system",
         "resource": "key_Zp41",
         "context": {"reason": "scheduled 90-day rotation", "new_key_id": "key_Zp41"}},
        {"timestamp": "2026-03-09T10:26:31Z", "event": "config.changed", "actor": "alice@acme.io",
         "node": "nyc-edge-01", "ip": "203.0.113.42",
         "context": {"key": "capture.max_bytes", "old": 50_000_000, "new": 200_000_000}},
    ]);
    serde_json::from_value(events)
        .map_err(|e| CliError::Integrity(format!("demo: bad built-in event: {e}")))
}

fn print_table(rows: &[[String; 6]]) -> Result<(), CliError> {
    let header = [
        "Timestamp (UTC)",
        "Event",
        "Actor",
        "Node / Resource",
        "IP",
        "Outcome",
    ];
    for line in table_lines(header, rows) {
        outln!("{line}")?;
    }
    Ok(())
}

/// One demo query: what it asks, as flags and as a filter.
struct DemoQuery {
    flags: &'static str,
    filter: Filter,
    /// The same question asked of the input events directly.
    wanted: fn(&Event) -> bool,
}

/// Step 2: two questions an auditor asks, answered with the query engine and
/// printed as `chainlog query` prints them; each answer is checked against
/// the input events.
fn query_steps(log: &Log, events: &[Event]) -> Result<(), CliError> {
    let bad = |text: &str| CliError::Integrity(format!("demo: bad built-in filter {text}"));
    let queries = [
        DemoQuery {
            flags: "--event 'auth.*' --outcome failure",
            filter: Filter {
                event_types: vec!["auth.*".parse().map_err(|_| bad("auth.*"))?],
                outcomes: vec![Outcome::Failure],
                ..Filter::default()
            },
            wanted: |e| e.event_type.starts_with("auth.") && e.outcome == Outcome::Failure,
        },
        DemoQuery {
            flags: "--event pcap.download --actor alice@acme.io",
            filter: Filter {
                event_types: vec!["pcap.download".parse().map_err(|_| bad("pcap.download"))?],
                actors: vec!["alice@acme.io".into()],
                ..Filter::default()
            },
            wanted: |e| e.event_type == "pcap.download" && e.actor == "alice@acme.io",
        },
    ];
    outln!("2. Queried it, as `chainlog query` does (the indexes pick the blocks to read):")?;
    for q in queries {
        outln!()?;
        outln!("   chainlog query {}", q.flags)?;
        let (lines, _) = query_table(
            log,
            Query {
                filter: q.filter,
                ..Query::default()
            },
        )?;
        for line in &lines {
            outln!("{line}")?;
        }
        let expected = events.iter().filter(|e| (q.wanted)(e)).count() as u64;
        if lines.last().map(|l| l.trim_start()) != Some(count_line(expected, None).as_str()) {
            return Err(CliError::Integrity(format!(
                "demo: `query {}` did not find the {expected} events it should",
                q.flags
            )));
        }
    }
    outln!()?;
    Ok(())
}

/// Step 3: the whole log exported to CSV and JSON files in the workspace.
fn export_step(log: &Log, workspace: &Path, expected_rows: u64) -> Result<(), CliError> {
    outln!(
        "3. Exported the whole log, as `chainlog export --format csv|json --output FILE` does:"
    )?;
    let mut csv_path = PathBuf::new();
    for (name, format) in [
        ("export.csv", ExportFormat::Csv),
        ("export.json", ExportFormat::Json),
    ] {
        let path = workspace.join(name);
        let io_err = |e| CliError::io(format!("writing {}", path.display()), e);
        let file = fs::File::create(&path).map_err(io_err)?;
        let mut exporter =
            Exporter::new(BufWriter::new(file), ExportOptions::new(format)).map_err(io_err)?;
        for m in log.query(&Query::default())? {
            exporter.write(&m?).map_err(|e| match e {
                ExportError::Io(e) => io_err(e),
                other => CliError::Integrity(format!("demo: {other}")),
            })?;
        }
        let rows = exporter.rows();
        exporter.finish().map_err(io_err)?;
        if rows != expected_rows {
            return Err(CliError::Integrity(format!(
                "demo: exported {rows} rows to {}, expected {expected_rows}",
                path.display()
            )));
        }
        outln!("   {}: {rows} rows", path.display())?;
        if format == ExportFormat::Csv {
            csv_path = path;
        }
    }
    let csv = fs::read_to_string(&csv_path)
        .map_err(|e| CliError::io(format!("reading {}", csv_path.display()), e))?;
    outln!("   The first two lines of the CSV (every row carries its seq and chain hash):")?;
    for line in csv.split("\r\n").take(2) {
        outln!("     {line}")?;
    }
    outln!()?;
    Ok(())
}

/// A new directory under the system temp dir.
fn fresh_temp_dir() -> Result<PathBuf, CliError> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("chainlog-demo-{}-{nanos}", std::process::id()));
    fs::create_dir(&dir).map_err(|e| CliError::io(format!("creating {}", dir.display()), e))?;
    Ok(dir)
}

fn copy_segments(from: &Path, to: &Path) -> Result<(), CliError> {
    fs::create_dir(to).map_err(|e| CliError::io(format!("creating {}", to.display()), e))?;
    for (_, path) in segment_files(from)? {
        let Some(name) = path.file_name() else {
            continue;
        };
        fs::copy(&path, to.join(name))
            .map_err(|e| CliError::io(format!("copying {}", path.display()), e))?;
    }
    Ok(())
}

/// Where the tampering happened.
struct Tampered {
    segment: String,
    frame_offset: u64,
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Flips the outcome byte of record `seq` in the log copy in `dir` and
/// recomputes the frame's CRC-32C, as a forger would: the frame is
/// well-formed, only the hash chain can tell.
fn tamper(dir: &Path, seq: u64) -> Result<Tampered, CliError> {
    let not_found = || CliError::Integrity(format!("demo: record {seq} not found in the copy"));
    let (base, path) = segment_files(dir)?
        .into_iter()
        .rfind(|(base, _)| *base <= seq)
        .ok_or_else(not_found)?;
    let mut bytes =
        fs::read(&path).map_err(|e| CliError::io(format!("reading {}", path.display()), e))?;
    // Frame: crc u32, len u32, seq u64, hash [32], record, padding to 8.
    let mut at = HEADER_BYTES as usize;
    let (frame, len) = loop {
        let len = le_u32(&bytes, at + 4).ok_or_else(not_found)? as usize;
        let frame_seq = le_u64(&bytes, at + 8).ok_or_else(not_found)?;
        if len == 0 {
            return Err(not_found());
        }
        if frame_seq == seq {
            break (at, len);
        }
        at += padded_len(len);
    };
    // A version 2 record starts with received_at (8), origin (1) and the
    // u16-prefixed appender; the event body follows.
    let record = frame + FRAME_HEADER_BYTES;
    let appender_len = bytes
        .get(record + 9..record + 11)
        .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
        .ok_or_else(not_found)?;
    let outcome = record + 8 + 1 + 2 + appender_len + OUTCOME_AT;
    match bytes.get_mut(outcome) {
        Some(b) if *b == 1 => *b ^= 1, // failure -> success
        _ => {
            return Err(CliError::Integrity(format!(
                "demo: record {seq} is not a failure"
            )))
        }
    }
    let crc = crc32c::crc32c(&bytes[frame + 4..frame + FRAME_HEADER_BYTES + len]);
    bytes[frame..frame + 4].copy_from_slice(&crc.to_le_bytes());
    fs::write(&path, &bytes).map_err(|e| CliError::io(format!("writing {}", path.display()), e))?;
    Ok(Tampered {
        segment: segment::file_name(base),
        frame_offset: frame as u64,
    })
}

/// Runs `chainlog demo` in `workspace` (a fresh temporary directory if none).
pub fn run(workspace: Option<PathBuf>) -> Result<ExitCode, CliError> {
    let workspace = match workspace {
        Some(dir) => {
            fs::create_dir_all(&dir)
                .map_err(|e| CliError::io(format!("creating {}", dir.display()), e))?;
            dir
        }
        None => fresh_temp_dir()?,
    };
    let log_dir = workspace.join("log");
    let copy_dir = workspace.join("tampered");
    let events = demo_events()?;

    outln!("chainlog demo, in {}", workspace.display())?;
    outln!()?;
    let log = Log::create(
        &log_dir,
        Options {
            segment_bytes: MIN_SEGMENT_BYTES,
            ..Options::default()
        },
    )?;
    let receipts = log.append_batch(&events)?;
    let log_id = log.log_id();
    log.close()?;
    outln!(
        "1. Created log {log_id} in {} and appended {} events (seq 0..={}):",
        log_dir.display(),
        receipts.len(),
        receipts.len().saturating_sub(1)
    )?;
    outln!()?;
    print_table(&events.iter().map(event_cells).collect::<Vec<_>>())?;
    outln!()?;

    let log = Log::open(&log_dir, Options::for_reading())?;
    query_steps(&log, &events)?;
    export_step(&log, &workspace, events.len() as u64)?;
    drop(log);

    let report = verify_with_progress(&log_dir, false)?;
    outln!("4. Verified the log:")?;
    for line in summary(&report) {
        outln!("   {line}")?;
    }
    let head = receipts.last().map(|r| r.hash);
    if !report.is_intact() || report.head != head {
        return Err(CliError::Integrity(
            "demo: the fresh log did not verify as intact".into(),
        ));
    }
    outln!()?;

    copy_segments(&log_dir, &copy_dir)?;
    let tampered = tamper(&copy_dir, TAMPERED_SEQ)?;
    let original = events
        .get(TAMPERED_SEQ as usize)
        .map(event_cells)
        .unwrap_or_default();
    outln!(
        "5. Copied the log to {} and, in the copy, flipped one byte of seq {TAMPERED_SEQ}",
        copy_dir.display()
    )?;
    outln!(
        "   ({} by {} from {}, the 5th row of the first table):",
        original[1],
        original[2],
        original[4]
    )?;
    outln!("   its outcome byte now says success instead of failure. The frame's CRC-32C")?;
    outln!("   was recomputed, so the frame is well-formed: deliberate tampering, not a")?;
    outln!("   torn write. A plain reader of the copy now sees:")?;
    let copy = Log::open(&copy_dir, Options::for_reading())?;
    if let Some(record) = copy.iter_from(TAMPERED_SEQ).next() {
        let row = event_cells(&record?.event);
        outln!("   {}", row.join("  "))?;
    }
    drop(copy);
    outln!()?;

    let report = verify_with_progress(&copy_dir, false)?;
    if report.is_intact() {
        outln!("6. Verified the tampered copy: no problem found")?;
    } else {
        outln!("6. Verified the tampered copy: TAMPERING DETECTED")?;
    }
    for line in summary(&report) {
        outln!("   {line}")?;
    }
    let expected = report.problems.len() == 1
        && report.problems.iter().all(|p| {
            p.kind == ProblemKind::HashMismatch
                && p.seq == Some(TAMPERED_SEQ)
                && p.segment == tampered.segment
                && p.offset == tampered.frame_offset
        });
    if !expected {
        let found: Vec<String> = report.problems.iter().map(problem_line).collect();
        return Err(CliError::Integrity(format!(
            "demo: expected exactly one hash_mismatch at seq {TAMPERED_SEQ} in {} at byte {}, found: {}",
            tampered.segment,
            tampered.frame_offset,
            found.join("; ")
        )));
    }
    outln!(
        "   The verifier points at the damaged record: seq {TAMPERED_SEQ}, {} byte {}.",
        tampered.segment,
        tampered.frame_offset
    )?;
    outln!()?;
    crate::demo_evidence::step(&workspace, &log_dir, 7)?;
    outln!()?;
    outln!("Try it yourself:")?;
    let exe = std::env::current_exe()
        .map_or_else(|_| "chainlog".to_string(), |p| p.display().to_string());
    outln!("  {exe} --dir {} cat", log_dir.display())?;
    outln!("  {exe} --dir {} stats", log_dir.display())?;
    outln!(
        "  {exe} --dir {} query --event 'auth.*' --outcome failure",
        log_dir.display()
    )?;
    outln!(
        "  {exe} --dir {} export --format csv --output audit.csv",
        log_dir.display()
    )?;
    outln!("  {exe} --dir {} verify", copy_dir.display())?;
    outln!(
        "  {exe} check-evidence {} --key {}",
        workspace.join("evidence.zip").display(),
        workspace.join("demo.pub").display()
    )?;
    Ok(ExitCode::SUCCESS)
}
