//! Issue 13: JSON ingest and CSV export, the library paths against the
//! alternatives, end to end. Figures and the decision: docs/PERFORMANCE.md,
//! "Hand-written JSON and CSV vs libraries".
//!
//! - CLI-like: JSON Lines text in memory, batches of 4,096 appended with
//!   `Durability::None` into a fresh log in a temporary directory.
//!   `owned` is what `chainlog append` did before: each line into an owned
//!   `Event`, encoded once to validate, appended as `Event`s (encoded
//!   again). `serde` is what it does now (`src/bin/chainlog/append.rs`):
//!   each line read by `EventRef::from_json`, encoded once into the batch's
//!   buffer, the encoded records appended. `simd` is the same with
//!   simd-json driving `EventRef`'s `Deserialize` (the line copied into a
//!   mutable buffer first, counted in the time: simd-json rewrites its input).
//! - server-like: a JSON array body of 1,000 events parsed and encoded
//!   into one buffer (what the server queues for its commit thread), then
//!   the same with each body's records appended, as the commit thread does.
//!   `owned` is `Vec<Event>`; `serde` is `Vec<EventRef>`, as
//!   `server/ingest.rs` reads a body now; `simd` as above.
//! - CSV: rows decoded from records and written by the `Exporter` (the
//!   `csv` crate underneath, formula guard on), into memory.
//!
//! The machine is shared: every measurement is repeated ROUNDS times with
//! the variants interleaved, and the median and min..max are printed.
//!
//! `cargo bench --bench ingest_json` (env: EVENTS, ROUNDS, BODY_REPS,
//! DATA=synthetic|cloudtrail). Without `--bench` (as under
//! `cargo test --benches`) it runs a tiny smoke pass.

#[path = "support/bench_log.rs"]
mod bench_log;

#[path = "../src/bin/chainlog/bench/events.rs"]
#[allow(dead_code)]
mod events;

use std::io::Write;
use std::time::Instant;

use chainlog::event::record::RECORD_V1;
use chainlog::event::{decode_record, encode_record, EventError, EventRef};
use chainlog::query::export::{ExportFormat, ExportOptions, Exporter};
use chainlog::{ChainHash, EncodeRecord, Event, Log, Timestamp};
use serde_json::Value;

const BATCH: usize = 4096;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The events as JSON Lines, one compact object per line.
fn jsonl(events: &[Event]) -> String {
    let mut text = String::new();
    for e in events {
        text.push_str(&serde_json::to_string(e).unwrap());
        text.push('\n');
    }
    text
}

/// CloudTrail records from /work/shared/data, mapped as its README says.
fn cloudtrail() -> Vec<Event> {
    let dir = std::path::Path::new("/work/shared/data/cloudtrail-invictus");
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let v: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        for r in v["Records"].as_array().unwrap() {
            let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
            let ts = Timestamp::parse_rfc3339(&s("eventTime")).unwrap();
            let source = s("eventSource");
            let service = source.split('.').next().unwrap_or("aws").to_lowercase();
            let name: String = s("eventName")
                .chars()
                .flat_map(|c| c.to_lowercase())
                .collect();
            let actor = r["userIdentity"]["arn"]
                .as_str()
                .or(r["userIdentity"]["invokedBy"].as_str())
                .unwrap_or("unknown")
                .to_string();
            let mut e = Event::new(ts, format!("{service}.{name}"), actor);
            e.node = Some(s("awsRegion")).filter(|n| !n.is_empty());
            e.source_ip = s("sourceIPAddress").parse().ok();
            e.context = r.as_object().unwrap().clone();
            if e.validate().is_ok() && encode_record(&e, &mut Vec::new()).is_ok() {
                out.push(e);
            }
        }
    }
    out
}

fn the_events(n: usize) -> Vec<Event> {
    match std::env::var("DATA").as_deref() {
        Ok("cloudtrail") => {
            let base = cloudtrail();
            base.iter().cycle().take(n).cloned().collect()
        }
        _ => {
            let mut gen = events::EventGen::new(13, 256);
            (0..n).map(|_| gen.next_event()).collect()
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Reader {
    Owned,
    Serde,
    Simd,
}

const READERS: [Reader; 3] = [Reader::Owned, Reader::Serde, Reader::Simd];

/// Validates as `chainlog append` did (one encode per event), then appends.
fn validate_and_append<E: EncodeRecord>(log: &Log, batch: &[E], scratch: &mut Vec<u8>) {
    for e in batch {
        scratch.clear();
        e.encode_record(scratch).unwrap();
    }
    log.append_batch(batch).unwrap();
}

/// Encoded records back to back, as `chainlog append` batches them now.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Batch {
    fn push(&mut self, event: &impl EncodeRecord) {
        event.encode_record(&mut self.bytes).unwrap();
        self.ends.push(self.bytes.len());
    }

    /// Appends the batch and empties it.
    fn append(&mut self, log: &Log) {
        let mut from = 0;
        let records: Vec<Encoded<'_>> = self
            .ends
            .iter()
            .map(|&end| {
                let r = Encoded(&self.bytes[from..end]);
                from = end;
                r
            })
            .collect();
        log.append_batch(&records).unwrap();
        self.bytes.clear();
        self.ends.clear();
    }
}

/// CLI-like ingest of `text` into a fresh log; returns seconds.
fn cli(reader: Reader, text: &str) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let log = bench_log::unsynced(dir.path());
    let mut scratch = Vec::new();
    let start = Instant::now();
    match reader {
        Reader::Owned => {
            let mut batch = Vec::with_capacity(BATCH);
            for line in text.lines() {
                batch.push(serde_json::from_str::<Event>(line).unwrap());
                if batch.len() == BATCH {
                    validate_and_append(&log, &batch, &mut scratch);
                    batch.clear();
                }
            }
            validate_and_append(&log, &batch, &mut scratch);
        }
        Reader::Serde => {
            let mut batch = Batch::default();
            for line in text.lines() {
                batch.push(&EventRef::from_json(line).unwrap());
                if batch.ends.len() == BATCH {
                    batch.append(&log);
                }
            }
            batch.append(&log);
        }
        Reader::Simd => {
            let mut batch = Batch::default();
            let mut buf = Vec::new();
            for line in text.lines() {
                // simd-json rewrites its input: the line into a mutable
                // buffer, as the CLI's line buffer would be.
                buf.clear();
                buf.extend_from_slice(line.as_bytes());
                batch.push(&simd_json::serde::from_slice::<EventRef<'_>>(&mut buf).unwrap());
                if batch.ends.len() == BATCH {
                    batch.append(&log);
                }
            }
            batch.append(&log);
        }
    }
    log.sync().unwrap();
    let secs = start.elapsed().as_secs_f64();
    drop(log);
    secs
}

/// Server-like: a JSON array body of events parsed and encoded.
fn server_body(reader: Reader, body: &str, out: &mut Vec<u8>, ends: &mut Vec<usize>) {
    out.clear();
    ends.clear();
    match reader {
        Reader::Owned => {
            for e in serde_json::from_str::<Vec<Event>>(body).unwrap() {
                encode_record(&e, out).unwrap();
                ends.push(out.len());
            }
        }
        Reader::Serde => {
            for e in serde_json::from_str::<Vec<EventRef<'_>>>(body).unwrap() {
                e.encode_record(out).unwrap();
                ends.push(out.len());
            }
        }
        Reader::Simd => {
            let mut buf = body.as_bytes().to_vec();
            for e in simd_json::serde::from_slice::<Vec<EventRef<'_>>>(&mut buf).unwrap() {
                e.encode_record(out).unwrap();
                ends.push(out.len());
            }
        }
    }
}

/// A record already encoded, as the server's commit thread and
/// `chainlog append` append it.
struct Encoded<'a>(&'a [u8]);

impl EncodeRecord for Encoded<'_> {
    fn encode_record(&self, out: &mut Vec<u8>) -> Result<(), EventError> {
        out.extend_from_slice(self.0);
        Ok(())
    }
}

/// `reps` bodies parsed and encoded; with `append`, each body's records
/// are then appended (Durability::None) as the commit thread does.
fn server(reader: Reader, body: &str, reps: usize, append: bool) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let log = bench_log::unsynced(dir.path());
    let (mut out, mut ends) = (Vec::new(), Vec::new());
    let start = Instant::now();
    for _ in 0..reps {
        server_body(reader, body, &mut out, &mut ends);
        if append {
            let mut from = 0;
            let records: Vec<Encoded<'_>> = ends
                .iter()
                .map(|&end| {
                    let r = Encoded(&out[from..end]);
                    from = end;
                    r
                })
                .collect();
            log.append_batch(&records).unwrap();
        }
        std::hint::black_box(&out);
    }
    log.sync().unwrap();
    start.elapsed().as_secs_f64()
}

fn exporter(records: &[Vec<u8>], hash: &ChainHash) -> Vec<u8> {
    let mut ex = Exporter::new(Vec::new(), ExportOptions::new(ExportFormat::Csv)).unwrap();
    for (seq, r) in records.iter().enumerate() {
        let view = decode_record(RECORD_V1, r).unwrap();
        ex.write_view(seq as u64, hash, &view).unwrap();
    }
    ex.finish().unwrap()
}

fn summary(label: &str, unit: &str, count: usize, secs: &mut [f64]) -> f64 {
    secs.sort_by(f64::total_cmp);
    let rate = |s: f64| count as f64 / s;
    let median = rate(secs[secs.len() / 2]);
    println!(
        "{label:<28} median {median:>12.0} {unit}/s   (min {:>10.0}, max {:>10.0}, {} runs)",
        rate(secs[secs.len() - 1]),
        rate(secs[0]),
        secs.len()
    );
    median
}

fn main() {
    // `cargo test --benches` runs this without `--bench`: a smoke pass.
    let bench = std::env::args().any(|a| a == "--bench");
    let n = env("EVENTS", if bench { 1_000_000 } else { 2_000 });
    let rounds = env("ROUNDS", if bench { 5 } else { 1 });
    let events = the_events(n);
    let text = jsonl(&events);
    println!(
        "{} events, {:.0} MB of JSON Lines ({:.0} bytes/event), {rounds} rounds",
        n,
        text.len() as f64 / 1e6,
        text.len() as f64 / n as f64
    );

    // Every reader must produce the stored bytes the owned path does.
    for line in text.lines().take(20_000) {
        let mut expected = Vec::new();
        encode_record(&serde_json::from_str::<Event>(line).unwrap(), &mut expected).unwrap();
        let mut got = Vec::new();
        EventRef::from_json(line)
            .unwrap()
            .encode_record(&mut got)
            .unwrap();
        assert_eq!(got, expected, "serde: {line}");
        got.clear();
        let mut buf = line.as_bytes().to_vec();
        simd_json::serde::from_slice::<EventRef<'_>>(&mut buf)
            .unwrap()
            .encode_record(&mut got)
            .unwrap();
        if got != expected {
            println!("note: simd-json stores different bytes for {line}");
        }
    }

    let body = format!(
        "[{}]",
        text.lines().take(1000).collect::<Vec<_>>().join(",")
    );
    let body_events = text.lines().take(1000).count();
    let body_reps = env("BODY_REPS", if bench { 200 } else { 2 });
    let mut cli_secs: Vec<Vec<f64>> = vec![Vec::new(); READERS.len()];
    let mut server_secs: Vec<Vec<f64>> = vec![Vec::new(); READERS.len()];
    let mut server_append_secs: Vec<Vec<f64>> = vec![Vec::new(); READERS.len()];
    for round in 0..rounds {
        // Interleaved, with the order rotated each round.
        for k in 0..READERS.len() {
            let i = (k + round) % READERS.len();
            server_secs[i].push(server(READERS[i], &body, body_reps, false));
            server_append_secs[i].push(server(READERS[i], &body, body_reps, true));
            cli_secs[i].push(cli(READERS[i], &text));
        }
    }
    println!("CLI-like: parse + validate + append (Durability::None), {n} events");
    for (i, r) in READERS.iter().enumerate() {
        summary(&format!("  {r:?}"), "events", n, &mut cli_secs[i]);
    }
    println!("server-like: array body of 1,000 events, parse + encode, x{body_reps}");
    for (i, r) in READERS.iter().enumerate() {
        summary(
            &format!("  {r:?}"),
            "events",
            body_events * body_reps,
            &mut server_secs[i],
        );
    }

    println!(
        "server-like with the commit: parse + encode + append (Durability::None), x{body_reps}"
    );
    for (i, r) in READERS.iter().enumerate() {
        summary(
            &format!("  {r:?}"),
            "events",
            body_events * body_reps,
            &mut server_append_secs[i],
        );
    }

    // CSV: the same rows both ways.
    let rows = n.min(200_000);
    let records: Vec<Vec<u8>> = events[..rows]
        .iter()
        .map(|e| {
            let mut r = Vec::new();
            encode_record(e, &mut r).unwrap();
            r
        })
        .collect();
    let hash = ChainHash::default();
    let mut csv_secs = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        let out = exporter(&records, &hash);
        std::hint::black_box(out);
        csv_secs.push(start.elapsed().as_secs_f64());
    }
    println!("CSV export of {rows} rows (decode + check context + write), into memory");
    summary("  Exporter (csv crate)", "rows", rows, &mut csv_secs);
    let _ = std::io::stdout().flush();
}
