//! The index built on the write path: the `.idx` a seal writes is, byte for
//! byte, what `index::build_sealed` rebuilds from the segment, under every
//! durability policy, with and without write-behind, across reopens in the
//! middle of a segment (whose frames the index then takes from the open's
//! own reading of them, not from the file again);
//! and a query of the active segment finds what a scan finds.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chainlog::format::segment::{self, MIN_SEGMENT_BYTES};
use chainlog::index;
use chainlog::query::{Filter, Query};
use chainlog::storage::sim::SimDisk;
use chainlog::storage::FsStorage;
use chainlog::verify::verify_dir;
use chainlog::{Durability, Event, Log, Options, Timestamp, WriteBehind};
use proptest::prelude::Rng as _;
use proptest::test_runner::{RngAlgorithm, TestRng};

const BLOCK_BYTES: u32 = 1024;

/// A seeded generator (proptest's ChaCha), so that a failure repeats.
struct Rng(TestRng);

impl Rng {
    fn new(seed: u8) -> Self {
        Rng(TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]))
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0.next_u64() % n
    }
}

fn event(rng: &mut Rng) -> Event {
    // Timestamps go back and forth: blocks keep a min and a max.
    let ts = 1_700_000_000_000_000_000 + rng.below(1 << 40) as i64;
    let mut e = Event::new(
        Timestamp::from_unix_nanos(ts),
        ["pcap.download", "auth.login_failed", "node.added"][rng.below(3) as usize],
        format!("user{}@acme.io", rng.below(12)),
    );
    e.node = (rng.below(3) != 0).then(|| format!("nyc-edge-{:02}", rng.below(7)));
    e.context
        .insert("pad".into(), "x".repeat(rng.below(600) as usize).into());
    e
}

fn options(durability: Durability, write_behind: bool) -> Options {
    Options {
        segment_bytes: MIN_SEGMENT_BYTES,
        durability,
        index_block_bytes: BLOCK_BYTES,
        write_behind: write_behind.then(|| WriteBehind {
            buffer_bytes: 16 << 10,
            max_delay: Duration::from_millis(1),
        }),
        ..Options::default()
    }
}

/// Every sealed segment's `.idx` equals the index rebuilt from its frames.
fn assert_indexes_rebuild_equal(dir: &Path, what: &str) -> usize {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| segment::parse_file_name(e.unwrap().file_name().to_str()?))
        .collect();
    bases.sort_unstable();
    let mut compared = 0;
    for &base in &bases[..bases.len() - 1] {
        let (name, file) = segment::open_for_reading(&FsStorage, dir, base).unwrap();
        let header = segment::read_header(&*file, &name).unwrap();
        let trailer = segment::read_sealed_trailer(&*file, &name, header.segment_bytes).unwrap();
        let rebuilt = index::build_sealed(file, base, &trailer, BLOCK_BYTES).unwrap();
        let written = std::fs::read(dir.join(index::file_name(base)))
            .unwrap_or_else(|e| panic!("{what}: no index of segment {base}: {e}"));
        assert!(
            written == rebuilt,
            "{what}: the index of segment {base} differs from the one rebuilt"
        );
        compared += 1;
    }
    compared
}

/// A query for each actor gives what a scan of the log gives (the newest
/// segment's blocks come from the write path's index).
fn assert_queries_match_scan(log: &Log, what: &str) {
    let all: Vec<_> = log.iter_from(0).collect::<Result<_, _>>().unwrap();
    for u in 0..12 {
        let actor = format!("user{u}@acme.io");
        let query = Query {
            filter: Filter {
                actors: vec![actor.clone()],
                ..Filter::default()
            },
            ..Query::default()
        };
        let got: Vec<u64> = log.query(&query).unwrap().map(|m| m.unwrap().seq).collect();
        let want: Vec<u64> = all
            .iter()
            .filter(|r| r.event.actor == actor)
            .map(|r| r.seq)
            .collect();
        assert_eq!(got, want, "{what}: query for {actor}");
    }
}

fn run(durability: Durability, write_behind: bool, seed: u8) {
    let what = format!("{durability:?}, write-behind {write_behind}, seed {seed}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut rng = Rng::new(seed);
    let mut log = Log::create(dir, options(durability, write_behind)).unwrap();
    let mut appended = 0;
    for round in 0..240 {
        let most = if rng.below(8) == 0 { 60 } else { 4 };
        let n = 1 + rng.below(most);
        let events: Vec<Event> = (0..n).map(|_| event(&mut rng)).collect();
        log.append_batch(&events).unwrap();
        appended += n;
        match round % 60 {
            // Reopen in the middle of a segment: its frames so far are
            // indexed from the file, the next ones from the write path.
            29 => {
                log.close().unwrap();
                log = Log::open(dir, options(durability, write_behind)).unwrap();
            }
            // A query of the active segment, between appends.
            45 => assert_queries_match_scan(&log, &what),
            _ => {}
        }
    }
    assert_queries_match_scan(&log, &what);
    assert_eq!(log.state().next_seq, appended);
    log.close().unwrap();
    let sealed = assert_indexes_rebuild_equal(dir, &what);
    assert!(sealed >= 3, "{what}: only {sealed} sealed segments");
    let report = verify_dir(&FsStorage, dir, &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{what}: {:#?}", report.problems);
}

/// [`run`] with write-behind (seed `seed`) and without (seed `seed + 1`).
fn run_both(durability: Durability, seed: u8) {
    run(durability, true, seed);
    run(durability, false, seed + 1);
}

#[test]
fn seals_write_the_rebuilt_index_under_always() {
    run_both(Durability::Always, 1);
}

#[test]
fn seals_write_the_rebuilt_index_under_batch() {
    let batch = Durability::Batch {
        max_delay: Duration::from_millis(2),
        max_bytes: 64 << 10,
    };
    run_both(batch, 3);
}

#[test]
fn seals_write_the_rebuilt_index_under_none() {
    run_both(Durability::None, 5);
}

/// Sealing reads nothing back: the indexes come from the frames written
/// (the test above would pass through the seal's fallback too, which
/// rebuilds an index from the file).
#[test]
fn seals_do_not_read_the_segment_back() {
    let disk = SimDisk::new();
    let mut rng = Rng::new(7);
    let log = Log::create_in(
        Arc::new(disk.clone()),
        "/log",
        options(Durability::None, false),
    )
    .unwrap();
    while log.state().segments < 5 {
        let events: Vec<Event> = (0..8).map(|_| event(&mut rng)).collect();
        log.append_batch(&events).unwrap();
    }
    log.close().unwrap();
    let read = disk.stats().bytes_read;
    // Four sealed segments of 128 KiB: a re-read of any one is more.
    assert!(
        read < MIN_SEGMENT_BYTES / 2,
        "{read} bytes read back while appending and sealing"
    );
}

#[test]
fn an_open_indexes_the_newest_segment_as_it_recovers_it() {
    let disk = SimDisk::new();
    let storage = Arc::new(disk.clone());
    let mut rng = Rng::new(9);
    let log = Log::create_in(storage.clone(), "/log", options(Durability::None, false)).unwrap();
    while disk.stats().bytes_written < MIN_SEGMENT_BYTES / 2 {
        let events: Vec<Event> = (0..8).map(|_| event(&mut rng)).collect();
        log.append_batch(&events).unwrap();
    }
    assert_eq!(log.state().segments, 1);
    log.close().unwrap();
    let reads = |work: &dyn Fn(&Log)| {
        let before = disk.stats().bytes_read;
        let log = Log::open_in(storage.clone(), "/log", options(Durability::None, false)).unwrap();
        work(&log);
        log.close().unwrap();
        disk.stats().bytes_read - before
    };
    let open_only = reads(&|_| {});
    // An append and a query need the newest segment's index: it was built
    // by the open's own reading, so neither reads its frames again (the
    // query matches nothing: it reads no block of records).
    let with_index = reads(&|log| {
        log.append(&event(&mut Rng::new(10))).unwrap();
        let query = Query {
            filter: Filter {
                actors: vec!["nobody@acme.io".into()],
                ..Filter::default()
            },
            ..Query::default()
        };
        assert_eq!(log.query(&query).unwrap().count(), 0);
    });
    assert!(
        with_index < open_only + MIN_SEGMENT_BYTES / 8,
        "an open read {open_only} bytes; with an append and a query {with_index}"
    );
}
