//! The demo's last step: an evidence pack of the 2,900 AWS CloudTrail
//! events the repository ships as a test fixture, checked as an auditor
//! would. Without the fixture (an installed binary), the pack covers the
//! demo's own log.

use std::fs;
use std::path::{Path, PathBuf};

use chainlog::evidence::{self, EvidenceOptions};
use chainlog::hash::checkpoint::NoteSigner;
use chainlog::{Event, Log, Options, Outcome, Timestamp};
use serde_json::Value;

use crate::error::CliError;
use crate::evidence::write_pack;

/// Where the CloudTrail fixture is: `CHAINLOG_DEMO_CLOUDTRAIL`, else the
/// source tree this binary was built from.
fn cloudtrail_dir() -> PathBuf {
    std::env::var_os("CHAINLOG_DEMO_CLOUDTRAIL").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cloudtrail"),
        PathBuf::from,
    )
}

/// A CloudTrail record as an event: `<service>.<action>` (`s3.get_object`),
/// the identity's ARN, the region as node, the caller's address, a failure
/// when it has an `errorCode`, and the whole record as context.
fn cloudtrail_event(record: &Value) -> Option<Event> {
    let text = |key: &str| record.get(key).and_then(Value::as_str);
    let service = text("eventSource")?.trim_end_matches(".amazonaws.com");
    let mut action = String::new();
    for (i, c) in text("eventName")?.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 && !action.ends_with('_') {
            action.push('_');
        }
        action.extend(c.to_lowercase());
    }
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let identity = record.get("userIdentity")?;
    let actor = ["arn", "invokedBy", "type"]
        .iter()
        .find_map(|k| identity.get(*k).and_then(Value::as_str))?;
    let time = Timestamp::parse_rfc3339(text("eventTime")?).ok()?;
    let mut event = Event::new(
        time,
        format!("{}.{}", clean(service), clean(&action)),
        actor,
    );
    event.node = text("awsRegion").map(str::to_string);
    event.source_ip = text("sourceIPAddress").and_then(|ip| ip.parse().ok());
    if record.get("errorCode").is_some() {
        event.outcome = Outcome::Failure;
    }
    event.context = record.as_object()?.clone();
    Some(event)
}

/// The fixture's events, files in name order; `None` when it is not there.
fn cloudtrail_events() -> Option<Vec<Event>> {
    let mut files: Vec<PathBuf> = fs::read_dir(cloudtrail_dir())
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut events = Vec::new();
    for file in files {
        let doc: Value = serde_json::from_slice(&fs::read(file).ok()?).ok()?;
        for record in doc.get("Records")?.as_array()? {
            events.push(cloudtrail_event(record)?);
        }
    }
    (!events.is_empty()).then_some(events)
}

/// Builds and checks the pack; `demo_log` is used when the fixture is missing.
pub fn step(workspace: &Path, demo_log: &Path, step: u32) -> Result<(), CliError> {
    let mut period = (Timestamp::from_unix_nanos(0), Timestamp::now());
    let (log_dir, what) = match cloudtrail_events() {
        Some(events) => {
            // The period the fixture covers, to the day (UTC).
            let day = 86_400 * 1_000_000_000_i64;
            let times = events.iter().map(|e| e.timestamp.unix_nanos());
            let (first, last) = (times.clone().min().unwrap_or(0), times.max().unwrap_or(0));
            period = (
                Timestamp::from_unix_nanos(first.div_euclid(day) * day),
                Timestamp::from_unix_nanos((last.div_euclid(day) + 1) * day),
            );
            let dir = workspace.join("cloudtrail");
            let options = Options {
                segment_bytes: 4 << 20,
                // One sync when it closes: a demo need not wait for each batch.
                durability: chainlog::Durability::None,
                ..Options::default()
            };
            let log = Log::create(&dir, options)?;
            for batch in events.chunks(500) {
                log.append_batch(batch)?;
            }
            let n = events.len();
            log.close()?;
            (dir, format!("the {n} AWS CloudTrail events (tests/fixtures/cloudtrail)"))
        }
        None => (
            demo_log.to_path_buf(),
            "the demo's log (the CloudTrail fixture was not found; set CHAINLOG_DEMO_CLOUDTRAIL=DIR)".to_string(),
        ),
    };
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed)
        .map_err(|e| CliError::io("reading the system's random number generator", e.into()))?;
    let signer = NoteSigner::from_seed("chainlog-demo", seed)
        .map_err(|e| CliError::Usage(format!("demo key: {e}")))?;
    let public = workspace.join("demo.pub");
    fs::write(&public, format!("{}\n", signer.verifier().to_text()))
        .map_err(|e| CliError::io(format!("writing {}", public.display()), e))?;
    let log = Log::open(&log_dir, Options::for_reading())?;
    let options = EvidenceOptions {
        generated_by: "chainlog demo".into(),
        sample: 16,
        ..EvidenceOptions::new(period.0, period.1)
    };
    let pack = workspace.join("evidence.zip");
    // No PDF: rendering one starts a browser, which would slow the demo.
    let summary = write_pack(&log, &signer, &options, &pack, false, true)?;
    drop(log);
    outln!("{step}. Built an evidence pack for auditors of {what}:")?;
    outln!(
        "   {}: report.html, the events, signed checkpoints, proofs, an access summary,",
        pack.display()
    )?;
    outln!(
        "   and a manifest of them all signed with {}.",
        public.display()
    )?;
    let report = evidence::check(&pack, Some(&signer.verifier())).map_err(|e| {
        CliError::Integrity(format!("demo: the fresh pack does not check out: {e}"))
    })?;
    outln!(
        "   Checked it as an auditor would: intact, {} rows (seq {} to {}), {} failures, {} sampled proofs.",
        report.rows,
        report.first_seq,
        report.end_seq.saturating_sub(1),
        summary.failures,
        report.sample
    )?;
    Ok(())
}
