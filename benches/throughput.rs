//! Criterion benchmarks of the engine's hot paths, on the synthetic events
//! `chainlog bench` uses (about 280-byte records).
//!
//! `cargo bench --bench throughput` takes a few minutes. `cargo test
//! --benches` runs each benchmark once, so the fixtures stay small (a few
//! MB). For the figures against this machine's limits, run `chainlog bench`.
#![expect(
    missing_docs,
    reason = "criterion_group! defines an undocumented pub fn"
)]

use std::hint::black_box;
use std::io;
use std::path::Path;
use std::time::Duration;

use chainlog::event::encode_record;
use chainlog::query::export::{ExportFormat, ExportOptions, Exporter};
use chainlog::query::{Filter, Query};
use chainlog::storage::FsStorage;
use chainlog::verify::{verify_dir_with, VerifyOptions};
use chainlog::{ChainHash, Durability, Event, Log, LogId, Options};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

#[path = "support/bench_log.rs"]
mod bench_log;

#[path = "../src/bin/chainlog/bench/events.rs"]
mod events;

use events::{encode_all, rare_actor, EventGen};

const EVENT_BYTES: usize = 280;
const BATCH: usize = 256;
/// Events in the prebuilt log for verify, query and export (about 7 MB).
const LOG_EVENTS: usize = 20_000;
/// Small segments, so the prebuilt log has several.
const LOG_SEGMENT_BYTES: u64 = 1 << 20;

fn pool(n: usize) -> Vec<Event> {
    EventGen::new(7, EVENT_BYTES).take(n).collect()
}

/// Modest samples: the whole run takes a few minutes.
fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

fn encode_and_hash(c: &mut Criterion) {
    let events = pool(BATCH);
    let records = encode_all(&events);
    let bytes: usize = records.iter().map(Vec::len).sum();
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("encode_record x256", |b| {
        let mut out = Vec::with_capacity(bytes + 1024);
        b.iter(|| {
            out.clear();
            for e in &events {
                encode_record(e, &mut out).unwrap();
            }
            black_box(out.len())
        })
    });
    group.bench_function("chain hash x256", |b| {
        let genesis = ChainHash::genesis(&LogId([7; 16]));
        b.iter(|| {
            let mut head = genesis;
            for (seq, r) in records.iter().enumerate() {
                head = head.next(seq as u64, r);
            }
            black_box(head)
        })
    });
    group.finish();
}

fn append(c: &mut Criterion) {
    let events = pool(BATCH * 16);
    let mut group = c.benchmark_group("append none");
    group.throughput(Throughput::Elements(BATCH as u64));
    for batched in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let log = bench_log::unsynced(dir.path());
        let mut k = 0;
        let name = if batched {
            "append_batch of 256"
        } else {
            "256 x append"
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                let chunk = &events[(k % 16) * BATCH..][..BATCH];
                k += 1;
                if batched {
                    black_box(log.append_batch(chunk).unwrap());
                } else {
                    for e in chunk {
                        black_box(log.append(e).unwrap());
                    }
                }
            })
        });
        log.close().unwrap();
    }
    group.finish();
}

/// The prebuilt log, and how many records the rare actor has in it.
fn build_log(dir: &Path) -> (u64, u64) {
    let log = Log::create(
        dir,
        Options {
            durability: Durability::None,
            segment_bytes: LOG_SEGMENT_BYTES,
            ..Options::default()
        },
    )
    .unwrap();
    let wanted = rare_actor(events::RARE_ACTORS / 2);
    let mut rare = 0;
    let mut gen = EventGen::new(11, EVENT_BYTES);
    for _ in 0..LOG_EVENTS / BATCH {
        let mut chunk: Vec<Event> = (&mut gen).take(BATCH).collect();
        // Make the rare actor appear a few times.
        if rare < 8 {
            chunk[0].actor = wanted.clone();
            rare += 1;
        }
        log.append_batch(&chunk).unwrap();
    }
    let records = log.state().next_seq;
    log.close().unwrap();
    (records, rare)
}

fn read_paths(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (records, rare) = build_log(dir.path());
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Elements(records));
    for threads in [
        1,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    ] {
        let name = format!(
            "verify, {threads} thread{}",
            if threads == 1 { "" } else { "s" }
        );
        group.bench_function(name, |b| {
            let options = VerifyOptions {
                threads,
                ..VerifyOptions::default()
            };
            b.iter(|| {
                let report = verify_dir_with(&FsStorage, dir.path(), &options, &mut |_| {});
                let report = report.unwrap();
                assert!(report.is_intact());
                black_box(report.records)
            })
        });
    }
    let log = Log::open(dir.path(), Options::for_reading()).unwrap();
    group.bench_function("export jsonl to a sink", |b| {
        b.iter_batched(
            || Exporter::new(io::sink(), ExportOptions::new(ExportFormat::JsonLines)).unwrap(),
            |mut exporter| {
                // The path `chainlog export` takes: records decoded in place.
                log.query(&Query::default())
                    .unwrap()
                    .try_for_each_view(|seq, hash, view| {
                        exporter.write_view(seq, &hash, view).unwrap();
                        Ok::<(), chainlog::Error>(())
                    })
                    .unwrap();
                assert_eq!(exporter.rows(), records);
                exporter.finish().unwrap()
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
    let mut group = c.benchmark_group("query");
    let query = Query {
        filter: Filter {
            actors: vec![rare_actor(events::RARE_ACTORS / 2)],
            ..Filter::default()
        },
        ..Query::default()
    };
    group.bench_function("query one rare actor", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for m in log.query(&query).unwrap() {
                black_box(m.unwrap());
                n += 1;
            }
            assert!(n >= rare);
            n
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = encode_and_hash, append, read_paths
}
criterion_main!(benches);
