//! Merkle proofs at scale: building tiles at seal, proof generation, and
//! self-verifying bundles.
//!
//! `cargo bench --bench proofs` appends 10,000,000 events
//! (`CHAINLOG_BENCH_EVENTS` overrides) to a log of 64 MiB segments in a
//! temporary directory and prints:
//! - the cost of building tiles when segments seal: appending (and closing)
//!   2,000,000 events with the tiles built in the background against the
//!   same with tile building blocked (a regular file named `tile` in the log
//!   directory), best of three each; and the tile build alone
//!   (`Log::rebuild_tiles`) against the append;
//! - the tiles' size per million records;
//! - inclusion and consistency proofs: tiles read per proof (a fresh prover
//!   each) and time per proof;
//! - a bundle of 10,000 rows (contiguous, and spread over the whole log by an
//!   actor filter) written with `bundle::export` and checked with
//!   `bundle::check`, with peak memory.
//!
//! `CHAINLOG_BENCH_DIR` puts the logs in another directory (say, on a
//! tmpfs). Under `cargo test` (no `--bench` argument) it runs the same code on a
//! small log of 128 KiB segments, as a smoke test.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use chainlog::format::segment::MIN_SEGMENT_BYTES;
use chainlog::hash::checkpoint::NoteSigner;
use chainlog::query::bundle;
use chainlog::query::{Filter, Query};
use chainlog::{Durability, Event, Log, Options, Outcome, Timestamp};

const START_NS: i64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z
const BUNDLE_ROWS: u64 = 10_000;

const EVENT_TYPES: [&str; 6] = [
    "pcap.download",
    "auth.login",
    "auth.login_failed",
    "incident.opened",
    "node.added",
    "config.changed",
];

/// Event `i` of `n`: the needle actor every `n / 10,000`th event.
fn event(i: u64, n: u64) -> Event {
    let needle_every = (n / BUNDLE_ROWS).max(1);
    let actor = if i % needle_every == 0 {
        "needle@acme.io".to_string()
    } else {
        format!("svc-{}", i % 13)
    };
    let mut e = Event::new(
        Timestamp::from_unix_nanos(START_NS + i as i64 * 1_000_000),
        EVENT_TYPES[(i % 6) as usize],
        actor,
    );
    e.node = Some(format!("edge-{:02}", i % 40));
    e.resource = Some(format!("{:08x}", i.wrapping_mul(0x9e37_79b9)));
    e.source_ip = Some(
        format!("198.51.{}.{}", (i >> 8) % 256, i % 256)
            .parse()
            .expect("valid address"),
    );
    e.outcome = if i % 7 == 0 {
        Outcome::Failure
    } else {
        Outcome::Success
    };
    e.context
        .insert("request_id".into(), format!("{i:016x}").into());
    e.context.insert("bytes".into(), (i % 100_000).into());
    // Pads the record to 280 bytes on average (±15%), the size `chainlog
    // bench` uses: the tiles cost the same per record whatever its size.
    e.context
        .insert("detail".into(), "x".repeat(120 + (i % 84) as usize).into());
    e
}

/// The average encoded size of the first events.
fn average_record_bytes(n: u64) -> f64 {
    let sample = n.min(10_000);
    let mut total = 0;
    for i in 0..sample {
        let mut out = Vec::new();
        chainlog::event::encode_record(&event(i, n), &mut out).expect("encode");
        total += out.len();
    }
    total as f64 / sample as f64
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

/// CPU seconds this process has used, all threads (user + system), from
/// /proc/self/stat (clock ticks of 10 ms).
fn process_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command name: state is field 0, utime 11, stime 12.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds the calling thread has run, from /proc/thread-self/schedstat:
/// unlike wall time, it does not count time other processes took.
fn thread_cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |ns| ns / 1e9)
}

/// Appends `n` events to a new log in `dir` and closes it (which waits for
/// the sealed segments' indexes and tiles); returns the wall seconds and the
/// process's CPU seconds (all threads) taken.
fn append_all(dir: &Path, options: &Options, n: u64, block_tiles: bool) -> (f64, f64) {
    std::fs::create_dir_all(dir).expect("dir");
    if block_tiles {
        // A file where the tile directory would go: every tile build stops
        // at its first step, so the log runs as it did before tiles.
        std::fs::write(dir.join("tile"), b"").expect("blocker");
    }
    let started = Instant::now();
    let cpu = process_cpu_secs();
    let log = Log::create(dir, options.clone()).expect("create");
    // A batch goes into one segment: small segments take small batches.
    let batch_len = if options.segment_bytes < 1 << 20 {
        200
    } else {
        1000
    };
    let mut batch = Vec::with_capacity(batch_len);
    for i in 0..n {
        batch.push(event(i, n));
        if batch.len() == batch_len {
            log.append_batch(&batch).expect("append");
            batch.clear();
        }
    }
    log.append_batch(&batch).expect("append");
    log.close().expect("close");
    (started.elapsed().as_secs_f64(), process_cpu_secs() - cpu)
}

fn dir_bytes(path: &Path) -> (u64, u64) {
    let mut files = 0;
    let mut bytes = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                let (f, b) = dir_bytes(&p);
                files += f;
                bytes += b;
            } else {
                files += 1;
                bytes += e.metadata().map_or(0, |m| m.len());
            }
        }
    }
    (files, bytes)
}

/// Microseconds to create one 8 KiB file under a temporary name and rename
/// it into place, as a tile is written.
fn file_create_us(dir: &Path) -> f64 {
    let probe = dir.join("probe");
    std::fs::create_dir_all(&probe).expect("probe dir");
    let data = vec![7u8; 8192];
    let count = 500;
    let started = Instant::now();
    for i in 0..count {
        let temp = probe.join(format!("{i}.tmp"));
        std::fs::write(&temp, &data).expect("write");
        std::fs::rename(&temp, probe.join(i.to_string())).expect("rename");
    }
    started.elapsed().as_secs_f64() * 1e6 / count as f64
}

/// Nanoseconds per RFC 6962 node hash.
fn node_hash_ns() -> f64 {
    let mut h = [1u8; 32];
    let count = 1_000_000;
    let started = Instant::now();
    for _ in 0..count {
        h = chainlog::hash::merkle::node_hash(&h, &h);
    }
    std::hint::black_box(h);
    started.elapsed().as_secs_f64() * 1e9 / count as f64
}

/// A tiny deterministic generator (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: u64 = std::env::var("CHAINLOG_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 10_000_000 } else { 30_000 });
    let options = Options {
        durability: Durability::None,
        segment_bytes: if full { 64 << 20 } else { MIN_SEGMENT_BYTES },
        ..Options::default()
    };
    // CHAINLOG_BENCH_DIR puts the logs on another file system (say, a tmpfs).
    let work = match std::env::var_os("CHAINLOG_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("temp dir");
    let files_us = file_create_us(work.path());
    println!(
        "events           {:.0} bytes per encoded record on average",
        average_record_bytes(n)
    );
    println!(
        "machine          creating an 8 KiB file (temporary name, write, rename) takes {files_us:.0} us here; SHA-256 of a 65-byte node {:.0} ns",
        node_hash_ns()
    );

    // 1. Tile building at seal: the same appends with and without it.
    let k = if full { 2_000_000.min(n) } else { n };
    let (mut with_tiles, mut without) = ((f64::MAX, f64::MAX), (f64::MAX, f64::MAX));
    let best = |a: (f64, f64), b: (f64, f64)| (a.0.min(b.0), a.1.min(b.1));
    for round in 0..3 {
        let a = work.path().join(format!("blocked{round}"));
        without = best(without, append_all(&a, &options, k, true));
        let b = work.path().join(format!("tiles{round}"));
        with_tiles = best(with_tiles, append_all(&b, &options, k, false));
    }
    // (Nothing is deleted until the end: on ext4, creating files right after
    // deleting many is several times slower, which would skew what follows.)
    // The tile build alone, on the log that has none.
    let bare = work.path().join("blocked2");
    std::fs::remove_file(bare.join("tile")).expect("unblock");
    let log = Log::open(&bare, options.clone()).expect("open");
    let started = Instant::now();
    let cpu = thread_cpu_secs();
    let rebuilt = log.rebuild_tiles().expect("rebuild tiles");
    let build_secs = started.elapsed().as_secs_f64();
    let build_cpu = thread_cpu_secs() - cpu;
    drop(log);
    println!(
        "tiles at seal    {k} events, best of 3: append+close {:.3} s wall, {:.2} s CPU without tiles; {:.3} s wall, {:.2} s CPU with them built in the background: {:+.1}% wall, {:+.1}% CPU",
        without.0,
        without.1,
        with_tiles.0,
        with_tiles.1,
        100.0 * (with_tiles.0 / without.0 - 1.0),
        100.0 * (with_tiles.1 / without.1 - 1.0)
    );
    println!(
        "tile build alone {build_secs:.3} s wall, {build_cpu:.3} s CPU for {} records ({} tiles) = {:.1}% of the append's CPU ({:.0} ns of CPU per record)",
        rebuilt.records,
        rebuilt.tiles_written,
        100.0 * build_cpu / without.1,
        build_cpu * 1e9 / rebuilt.records.max(1) as f64
    );

    // 2. The big log.
    let dir = work.path().join("log");
    let (append_secs, _) = append_all(&dir, &options, n, false);
    let (segment_files, _) = {
        let segs = std::fs::read_dir(&dir)
            .expect("list")
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
            .count();
        (segs, 0)
    };
    let (tile_files, tile_bytes) = dir_bytes(&dir.join("tile"));
    println!(
        "log              {n} events in {segment_files} segments, appended in {append_secs:.1} s; tiles: {tile_files} files, {:.1} MiB ({:.1} MiB per million records)",
        tile_bytes as f64 / 1048576.0,
        tile_bytes as f64 / 1048576.0 / (n as f64 / 1e6)
    );

    let log = Log::open(
        &dir,
        Options {
            read_only: true,
            ..options.clone()
        },
    )
    .expect("open");
    let started = Instant::now();
    let mut prover = log.prover().expect("prover");
    let prover_secs = started.elapsed().as_secs_f64();
    let head = prover.tree_head();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Tiles read by one proof: a fresh prover each time.
    let mut most_tiles = 0;
    for _ in 0..5 {
        let mut fresh = log.prover().expect("prover");
        let seq = rng.below(n);
        let size = seq + 1 + rng.below(n - seq);
        let root = {
            let mut p = log.prover().expect("prover");
            chainlog::hash::proof::tree_root(&mut p, size).expect("root")
        };
        fresh.inclusion(seq, size, &root).expect("inclusion");
        let stats = fresh.stats();
        most_tiles = most_tiles.max(stats.tiles_read);
        assert_eq!(stats.tiles_rebuilt, 0);
    }
    let proofs = if full { 10_000 } else { 1_000 };
    let started = Instant::now();
    for _ in 0..proofs {
        let seq = rng.below(n);
        let p = prover
            .inclusion(seq, head.size, &head.root)
            .expect("inclusion");
        assert!(p.verify());
    }
    let inclusion_us = started.elapsed().as_secs_f64() * 1e6 / proofs as f64;
    let started = Instant::now();
    let consistency_proofs = proofs / 10;
    for _ in 0..consistency_proofs {
        let old = 1 + rng.below(n - 1);
        let old_root = chainlog::hash::proof::tree_root(&mut prover, old).expect("root");
        let p = prover
            .consistency(old, &old_root, head.size, &head.root)
            .expect("consistency");
        assert!(p.verify());
    }
    let consistency_us = started.elapsed().as_secs_f64() * 1e6 / consistency_proofs as f64;
    println!(
        "proofs           prover ready in {:.0} ms (reads the active segment); at most {most_tiles} tiles read per inclusion proof; {inclusion_us:.1} us per inclusion proof, {consistency_us:.1} us per consistency proof (root of the old tree included), {proofs} random seqs",
        prover_secs * 1e3
    );
    drop(prover);

    // 3. Bundles of 10,000 rows.
    let signer = NoteSigner::from_seed("bench.example", [9; 32]).expect("key");
    let note = log
        .checkpoint("chainlog")
        .expect("checkpoint")
        .sign(&signer)
        .expect("sign");
    let rows = BUNDLE_ROWS.min(n / 2);
    let contiguous = Query {
        from_seq: Some(n / 2),
        limit: Some(rows),
        ..Query::default()
    };
    let spread = Query {
        filter: Filter {
            actors: vec!["needle@acme.io".into()],
            ..Filter::default()
        },
        limit: Some(rows),
        ..Query::default()
    };
    for (name, query) in [("contiguous", contiguous), ("spread", spread)] {
        let path = work.path().join(format!("{name}.bundle.json"));
        peak_rss_reset();
        let started = Instant::now();
        let cpu = thread_cpu_secs();
        let out = BufWriter::new(File::create(&path).expect("create"));
        let summary = bundle::export(&log, &query, &note, out, &mut |_| {}).expect("export");
        let export_secs = started.elapsed().as_secs_f64();
        let export_cpu = thread_cpu_secs() - cpu;
        let export_peak = peak_rss_mib();
        let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        peak_rss_reset();
        let started = Instant::now();
        let cpu = thread_cpu_secs();
        let report =
            bundle::check(File::open(&path).expect("open"), &signer.verifier()).expect("check");
        let check_secs = started.elapsed().as_secs_f64();
        let check_cpu = thread_cpu_secs() - cpu;
        assert!(report.is_intact());
        assert_eq!(report.rows, summary.rows);
        println!(
            "bundle {name:<10} {} rows ({:.1} MiB) written in {export_secs:.3} s ({export_cpu:.3} s CPU; {} tiles read, peak RSS {export_peak:.0} MiB), checked offline in {check_secs:.3} s ({check_cpu:.3} s CPU, peak RSS {:.0} MiB)",
            summary.rows,
            bytes as f64 / 1048576.0,
            summary.proofs.tiles_read,
            peak_rss_mib()
        );
        if full {
            assert!(summary.rows == rows, "{name}: {} rows", summary.rows);
        }
    }
    std::io::stdout().flush().expect("flush");
}
