//! Append, reopen, read back and verify through the public API.

use std::sync::Arc;

use chainlog::storage::sim::SimDisk;
use chainlog::verify::verify_dir;
use chainlog::{Durability, Event, Log, Options, Outcome, Timestamp};

fn event(i: u64) -> Event {
    let mut e = Event::new(
        Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + i as i64 * 1_000_000_000),
        if i % 3 == 0 {
            "auth.login_failed"
        } else {
            "pcap.download"
        },
        format!("user{}@acme.io", i % 7),
    );
    e.node = Some(format!("nyc-edge-{:02}", i % 5));
    e.source_ip = Some(format!("203.0.113.{}", i % 250).parse().unwrap());
    e.outcome = if i % 3 == 0 {
        Outcome::Failure
    } else {
        Outcome::Success
    };
    e.context.insert("i".into(), i.into());
    e
}

fn small(durability: Durability) -> Options {
    Options {
        segment_bytes: chainlog::format::segment::MIN_SEGMENT_BYTES,
        durability,
        ..Options::default()
    }
}

#[test]
fn append_reopen_read_verify_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::create(dir.path(), small(Durability::None)).unwrap();
    let mut receipts = Vec::new();
    for i in 0..1500 {
        receipts.push(log.append(&event(i)).unwrap());
    }
    let batch: Vec<Event> = (1500..2000).map(event).collect();
    receipts.extend(log.append_batch(&batch).unwrap());
    assert_eq!(
        receipts.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (0..2000).collect::<Vec<_>>()
    );
    let state = log.state();
    assert!(
        state.segments >= 2,
        "expected several segments, got {}",
        state.segments
    );
    drop(log);

    let log = Log::open(dir.path(), small(Durability::Always)).unwrap();
    assert_eq!(log.state().next_seq, 2000);
    assert_eq!(log.state().head, receipts[1999].hash);
    let records: Vec<_> = log.iter_from(0).collect::<Result<_, _>>().unwrap();
    assert_eq!(records.len(), 2000);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as u64);
        assert_eq!(r.hash, receipts[i].hash);
        assert_eq!(r.event, event(i as u64));
    }
    let from_middle: Vec<_> = log.iter_from(1234).map(|r| r.unwrap().seq).collect();
    assert_eq!(from_middle, (1234..2000).collect::<Vec<_>>());
    let more = log.append(&event(2000)).unwrap();
    assert_eq!(more.seq, 2000);
    drop(log);

    let report = verify_dir(&chainlog::storage::FsStorage, dir.path(), &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{:#?}", report.problems);
    assert_eq!(report.records, 2001);
    assert_eq!(report.head, Some(more.hash));
}

#[test]
fn readers_see_records_appended_while_iterating() {
    let disk = SimDisk::new();
    let log = Log::create_in(Arc::new(disk), "/log", small(Durability::Always)).unwrap();
    log.append(&event(0)).unwrap();
    let mut reader = log.iter_from(0);
    assert_eq!(reader.next().unwrap().unwrap().seq, 0);
    assert!(reader.next().is_none());
    for i in 1..800 {
        log.append(&event(i)).unwrap();
    }
    let rest: Vec<u64> = reader.map(|r| r.unwrap().seq).collect();
    assert_eq!(rest, (1..800).collect::<Vec<_>>());
}

#[test]
fn concurrent_writers_and_reader() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::create(dir.path(), small(Durability::Always)).unwrap());
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..200)
                    .map(|i| log.append(&event(t * 1000 + i)).unwrap().seq)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut seen = 0u64;
            for _ in 0..50 {
                for r in log.iter_from(seen) {
                    assert_eq!(r.unwrap().seq, seen);
                    seen += 1;
                }
            }
            seen
        })
    };
    let mut all: Vec<u64> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    reader.join().unwrap();
    all.sort_unstable();
    assert_eq!(all, (0..800).collect::<Vec<_>>());
    drop(log);
    let report = verify_dir(&chainlog::storage::FsStorage, dir.path(), &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{:#?}", report.problems);
}

#[test]
fn durable_listeners_hear_each_sync_until_dropped() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let log = Log::create(dir.path(), Options::default()).unwrap();
    assert_eq!(log.durable_next_seq(), 0);
    let heard = Arc::new(AtomicU64::new(0));
    let listener: Arc<chainlog::log::DurableListener> = {
        let heard = heard.clone();
        Arc::new(move |next| heard.store(next, Ordering::SeqCst))
    };
    log.on_durable(&listener);
    let ev = Event::new(Timestamp::now(), "node.added", "ops");
    log.append(&ev).unwrap();
    log.append(&ev).unwrap();
    // Under Always, an append returns once durable, after the listener ran.
    assert_eq!(heard.load(Ordering::SeqCst), 2);
    assert_eq!(log.durable_next_seq(), 2);
    drop(listener);
    log.append(&ev).unwrap();
    assert_eq!(
        heard.load(Ordering::SeqCst),
        2,
        "a dropped listener is not called"
    );
    assert_eq!(log.durable_next_seq(), 3);
    log.close().unwrap();
}
