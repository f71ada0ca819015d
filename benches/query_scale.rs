//! Query and export at scale: a log of millions of synthetic events with a
//! realistic skew (a few busy actors, many rare ones) over 30 days.
//!
//! `cargo bench --bench query_scale` builds a 5,000,000-event log
//! (`CHAINLOG_BENCH_EVENTS` overrides) in a temporary directory and prints:
//! a full scan, a rare-actor query (bytes read as a share of the log and the
//! speed-up over the full scan), one-hour windows (bytes read against the
//! window's share of the log), and a full JSON Lines export against verify,
//! with peak memory. Under `cargo test` (no `--bench` argument) it runs the
//! same code on a small log, as a smoke test.

use std::io;
use std::time::Instant;

use chainlog::query::export::{ExportFormat, ExportOptions, Exporter};
use chainlog::query::{Filter, Query, QueryStats};
use chainlog::storage::FsStorage;
use chainlog::verify::{verify_dir_with, VerifyOptions};
use chainlog::{Durability, Event, Log, Options, Outcome, Timestamp};

const DAY_NS: i64 = 86_400_000_000_000;
const HOUR_NS: i64 = 3_600_000_000_000;
const START_NS: i64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z

/// A tiny deterministic generator (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

const EVENT_TYPES: [&str; 8] = [
    "pcap.download",
    "auth.login",
    "auth.login_failed",
    "incident.opened",
    "node.added",
    "config.changed",
    "apikey.rotated",
    "maintenance.started",
];

fn event(i: u64, n: u64, rng: &mut Rng) -> Event {
    // Time grows with i across 30 days, with up to 10 minutes of disorder.
    let base = START_NS + (i as i128 * 30 * DAY_NS as i128 / n as i128) as i64;
    let jitter = (rng.next() % 600) as i64 * 1_000_000_000;
    let r = rng.next();
    // 90% of events from 8 busy actors, 9.95% from 5,000 rare ones, and
    // 0.05% from the needle this benchmark looks for.
    let actor = match r % 10_000 {
        0..=4 => "needle@acme.io".to_string(),
        5..=999 => format!("user{}@acme.io", rng.next() % 5_000),
        _ => format!("svc-{}", r % 8),
    };
    let mut e = Event::new(
        Timestamp::from_unix_nanos(base - jitter),
        EVENT_TYPES[(r >> 20) as usize % EVENT_TYPES.len()],
        actor,
    );
    e.node = Some(format!("edge-{:02}", (r >> 30) % 40));
    e.resource = Some(format!("{:08x}", r >> 32));
    e.source_ip = Some(
        format!("198.51.{}.{}", (r >> 8) % 256, r % 256)
            .parse()
            .expect("valid address"),
    );
    e.outcome = if r % 7 == 0 {
        Outcome::Failure
    } else {
        Outcome::Success
    };
    e.context
        .insert("request_id".into(), format!("{:016x}", rng.next()).into());
    e.context.insert("bytes".into(), (r % 100_000).into());
    e
}

fn peak_rss_reset() {
    // Linux: writing 5 resets the peak resident set size (VmHWM).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn run(log: &Log, q: &Query) -> (u64, QueryStats, f64) {
    let started = Instant::now();
    let mut it = log.query(q).expect("query starts");
    let mut n = 0;
    for m in it.by_ref() {
        m.expect("query reads");
        n += 1;
    }
    (n, it.stats(), started.elapsed().as_secs_f64())
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: u64 = std::env::var("CHAINLOG_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 5_000_000 } else { 20_000 });
    let dir = tempfile::tempdir().expect("temp dir");
    let options = Options {
        durability: Durability::None,
        ..Options::default()
    };
    let started = Instant::now();
    let log = Log::create(dir.path(), options.clone()).expect("create");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut batch = Vec::with_capacity(1000);
    for i in 0..n {
        batch.push(event(i, n, &mut rng));
        if batch.len() == 1000 {
            log.append_batch(&batch).expect("append");
            batch.clear();
        }
    }
    log.append_batch(&batch).expect("append");
    drop(log); // syncs, and waits for the sealed segments' indexes
    let build_secs = started.elapsed().as_secs_f64();
    let log_bytes: u64 = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum();
    println!(
        "query_scale: {n} events, {:.1} MiB of segments, built in {build_secs:.1} s",
        log_bytes as f64 / 1048576.0
    );

    let log = Log::open(
        dir.path(),
        Options {
            read_only: true,
            ..options
        },
    )
    .expect("open");
    // A filter with no index (resource) reads every block: the full scan.
    let scan = Query {
        filter: Filter {
            resources: vec!["no-such-resource".into()],
            ..Filter::default()
        },
        ..Query::default()
    };
    let (_, scan_stats, scan_secs) = run(&log, &scan);
    let rare = Query {
        filter: Filter {
            actors: vec!["needle@acme.io".into()],
            ..Filter::default()
        },
        ..Query::default()
    };
    let (rare_n, rare_stats, rare_secs) = run(&log, &rare);
    let read = |s: &QueryStats| s.data_bytes_read + s.index_bytes_read;
    println!(
        "full scan        {:>8.3} s  read {:>6.2}% of the log",
        scan_secs,
        100.0 * read(&scan_stats) as f64 / log_bytes as f64
    );
    println!(
        "rare actor       {:>8.3} s  {rare_n} matches ({:.3}% of events), read {:.2}% of the log, {:.1}x faster than the full scan",
        rare_secs,
        100.0 * rare_n as f64 / n as f64,
        100.0 * read(&rare_stats) as f64 / log_bytes as f64,
        scan_secs / rare_secs
    );
    for day in [3i64, 15, 27] {
        let since = START_NS + day * DAY_NS;
        let window = Query {
            filter: Filter {
                since: Some(Timestamp::from_unix_nanos(since)),
                until: Some(Timestamp::from_unix_nanos(since + HOUR_NS)),
                ..Filter::default()
            },
            ..Query::default()
        };
        let (hits, stats, secs) = run(&log, &window);
        println!(
            "one-hour window  {:>8.3} s  {hits} matches, window is {:.3}% of the log, read {:.3}% ({} of {} segments skipped)",
            secs,
            100.0 / (30.0 * 24.0),
            100.0 * read(&stats) as f64 / log_bytes as f64,
            stats.segments_skipped,
            stats.segments_skipped + stats.segments_indexed
        );
    }

    peak_rss_reset();
    let started = Instant::now();
    let mut exporter =
        Exporter::new(io::sink(), ExportOptions::new(ExportFormat::JsonLines)).expect("sink");
    let mut all = log.query(&Query::default()).expect("export query");
    all.try_for_each_view(|seq, hash, view| exporter.write_view(seq, &hash, view))
        .expect("export");
    let rows = exporter.rows();
    exporter.finish().expect("finish");
    let export_secs = started.elapsed().as_secs_f64();
    let export_peak = peak_rss_mib();
    for threads in [1, 2] {
        peak_rss_reset();
        let started = Instant::now();
        let options = VerifyOptions {
            threads,
            checkpoint: None,
        };
        let report =
            verify_dir_with(&FsStorage, dir.path(), &options, &mut |_| {}).expect("verify");
        assert!(report.is_intact());
        let verify_secs = started.elapsed().as_secs_f64();
        println!(
            "verify {threads} thread{} {:>8.3} s  {:.0} MB/s, peak RSS {:.1} MiB",
            if threads == 1 { " " } else { "s" },
            verify_secs,
            log_bytes as f64 / verify_secs / 1e6,
            peak_rss_mib()
        );
        println!(
            "export jsonl     {:>8.3} s  {rows} rows, {:.0} MB/s of log, {:.2}x the speed of verify on {threads} thread{}, peak RSS {:.1} MiB",
            export_secs,
            log_bytes as f64 / export_secs / 1e6,
            verify_secs / export_secs,
            if threads == 1 { "" } else { "s" },
            export_peak
        );
    }
}
