//! Replicated durability against Ceph's radosgw (`chainlog::cluster::
//! Replicated` and `Follower`): acknowledged records survive the writer and
//! its disk, a fenced writer's late pieces are never read, a bucket outage
//! costs a bounded wait and nothing acknowledged, and a follower keeps up
//! and refuses what the pieces do not give.
//!
//! Each test uses its own prefix in the bucket without Object Lock (see
//! docs/CLUSTER.md). Without Ceph the tests are skipped with a note, unless
//! `CHAINLOG_REQUIRE_CEPH` is set (as `scripts/test.sh` does).
#![cfg(feature = "s3")]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chainlog::archive::{Bucket, Conditional, Manifest};
use chainlog::cluster::replica::pieces::{parse_piece_file_name, piece_dir, piece_key};
use chainlog::cluster::{
    read_head, ClusterError, FollowOptions, Follower, LeaseOptions, Piece, Replicated,
    ReplicationOptions,
};
use chainlog::hash::checkpoint::NoteSigner;
use chainlog::storage::FsStorage;
use chainlog::{Event, Log, Options, Receipt, Timestamp};

#[path = "support/s3.rs"]
mod s3;
use s3::{library_credentials, TestS3};
#[path = "support/ceph.rs"]
mod ceph;
#[path = "support/tools.rs"]
mod tools;
use ceph::CephServer;

/// Small segments, so that the tests cross several seals.
const SEGMENT_BYTES: u64 = 128 << 10;

fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn bucket_on(server: &dyn TestS3, port: u16, prefix: &str) -> Arc<Bucket> {
    library_credentials();
    let target = server
        .target(prefix)
        .with_endpoint(Some(format!("http://127.0.0.1:{port}")));
    Arc::new(Bucket::connect(&target, true).unwrap())
}

/// The binary's Ceph, a fresh prefix `<name>-…` on it with a connection,
/// and a temporary directory; `None` without Ceph.
fn setup(name: &str) -> Option<(&'static CephServer, String, Arc<Bucket>, tempfile::TempDir)> {
    let server = CephServer::shared()?;
    let prefix = unique(name);
    let bucket = bucket_on(server, server.port(), &prefix);
    Some((server, prefix, bucket, tempfile::tempdir().unwrap()))
}

fn signer() -> NoteSigner {
    NoteSigner::from_seed("replica.test", [9; 32]).unwrap()
}

/// A clock `offset_ms` ahead of the machine's, or frozen where `frozen` says.
fn clock(offset_ms: Arc<AtomicU64>, frozen: Arc<AtomicU64>) -> chainlog::cluster::Clock {
    Arc::new(move || match frozen.load(Ordering::SeqCst) {
        0 => (chainlog::cluster::system_clock())() + offset_ms.load(Ordering::SeqCst),
        at => at,
    })
}

fn lease(ttl_ms: u64, offset_ms: u64) -> LeaseOptions {
    LeaseOptions {
        ttl_ms,
        skew_margin_ms: ttl_ms / 4,
        clock: clock(
            Arc::new(AtomicU64::new(offset_ms)),
            Arc::new(AtomicU64::new(0)),
        ),
    }
}

fn replication(ack_timeout: Duration) -> ReplicationOptions {
    ReplicationOptions {
        flush_interval: Duration::from_millis(20),
        ack_timeout,
        ..ReplicationOptions::default()
    }
}

fn log_options() -> Options {
    Options {
        segment_bytes: SEGMENT_BYTES,
        ..Options::default()
    }
}

/// The writer of node `node`, in `tmp/<node>`.
fn open(tmp: &Path, node: &str, bucket: &Arc<Bucket>, lease: LeaseOptions) -> Replicated {
    let replication = replication(Duration::from_secs(30));
    open_with(tmp, node, bucket, lease, log_options(), replication)
}

fn open_with(
    tmp: &Path,
    node: &str,
    bucket: &Arc<Bucket>,
    lease: LeaseOptions,
    log_options: Options,
    replication: ReplicationOptions,
) -> Replicated {
    let (dir, holder) = (tmp.join(node), format!("node-{node}"));
    Replicated::open(
        &dir,
        bucket.clone(),
        &holder,
        lease,
        signer(),
        log_options,
        replication,
    )
    .unwrap()
}

fn event(tag: &str, i: usize) -> Event {
    let mut e = Event::new(Timestamp::now(), "node.added", "deploy-bot");
    e.context.insert("tag".into(), tag.into());
    e.context.insert("i".into(), i.into());
    e.context.insert("pad".into(), "x".repeat(200).into());
    e
}

/// `threads` appenders, each appending `rounds` batches of `batch` events
/// and waiting for each batch to be replicated; returns the receipts.
fn append_and_wait(
    w: &Replicated,
    tag: &str,
    threads: usize,
    rounds: usize,
    batch: usize,
) -> Vec<Receipt> {
    let receipts = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..threads {
            let receipts = &receipts;
            s.spawn(move || {
                for round in 0..rounds {
                    let events: Vec<Event> = (0..batch)
                        .map(|i| event(tag, (t * rounds + round) * batch + i))
                        .collect();
                    let got = w.log().append_batch(&events).unwrap();
                    w.wait_replicated(got[got.len() - 1].seq + 1).unwrap();
                    receipts.lock().unwrap().extend(got);
                }
            });
        }
    });
    let mut receipts = receipts.into_inner().unwrap();
    receipts.sort_by_key(|r| r.seq);
    receipts
}

/// Every receipt is in `log`, with its hash.
fn assert_has(log: &Log, receipts: &[Receipt]) {
    for r in receipts {
        let record = log.iter_from(r.seq).next().unwrap().unwrap();
        assert_eq!((record.seq, record.hash), (r.seq, r.hash));
    }
}

fn follower(bucket: &Arc<Bucket>, cache: &Path) -> Result<Follower, ClusterError> {
    Follower::open(
        cache,
        bucket.clone(),
        signer().verifier(),
        FollowOptions {
            poll_interval: Duration::from_millis(100),
            ..FollowOptions::default()
        },
    )
}

fn verify_intact(dir: &Path) {
    let report = chainlog::verify::verify_dir(&FsStorage, dir, &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{report:?}");
}

#[test]
fn acknowledged_records_survive_the_writer_and_its_disk() {
    let Some((_, _, bucket, tmp)) = setup("survive") else {
        return;
    };
    let a = open(tmp.path(), "a", &bucket, lease(3_000, 0));
    assert_eq!(a.epoch(), 1);
    let receipts = append_and_wait(&a, "a", 4, 50, 5);
    assert_eq!(receipts.len(), 1000);
    let log_id = a.log().log_id();
    let segments = a.log().state().segments;
    assert!(
        segments >= 3,
        "only {segments} segments: no seal was crossed"
    );
    // The sealed segments are archived as whole objects, in the background.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !bucket
        .list("")
        .unwrap()
        .iter()
        .any(|(name, _)| name.ends_with(".seg"))
    {
        assert!(Instant::now() < deadline, "no segment was archived");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Their pieces are deleted once the manifest names them: the takeover
    // below must rebuild segment 0 from the archive.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !bucket.list(&piece_dir(0)).unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the archived segment's pieces stay"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A crash: no last upload, no release; the disk is lost too.
    drop(a);
    std::fs::remove_dir_all(tmp.path().join("a")).unwrap();

    // Another node, its clock past the lease's expiry, takes over.
    let b = open(tmp.path(), "b", &bucket, lease(3_000, 10_000));
    assert_eq!(b.epoch(), 2);
    assert_eq!(b.log().log_id(), log_id);
    assert_eq!(b.log().state().next_seq, 1000);
    assert_has(b.log(), &receipts);
    verify_intact(&tmp.path().join("b"));
    let more = append_and_wait(&b, "b", 2, 10, 5);
    assert_eq!(more.first().map(|r| r.seq), Some(1000));

    // A follower rebuilds the same log from the bucket, and it verifies.
    let f = follower(&bucket, &tmp.path().join("cache")).unwrap();
    let (log, head) = f.log().unwrap();
    assert_eq!(head.unwrap().size, 1100);
    assert_eq!(log.log_id(), log_id);
    assert_has(&log, &receipts);
    assert_has(&log, &more);
    verify_intact(log.dir());
    b.close().unwrap();

    // A restart of the same holder rebuilds too; its old directory is a
    // cache moved aside.
    let c = open(tmp.path(), "b", &bucket, lease(3_000, 10_000));
    assert_eq!(c.epoch(), 3);
    assert_eq!(c.log().state().next_seq, 1100);
    assert!(tmp.path().join("b.stale-3").is_dir());
    c.close().unwrap();
}

#[test]
fn a_fenced_writer_cannot_make_readers_accept_its_late_pieces() {
    let Some((_, _, bucket, tmp)) = setup("fence") else {
        return;
    };
    // A's clock will stop: by it, its lease never runs out. A long TTL keeps
    // A from renewing (and learning of the takeover) before it uploads.
    let frozen = Arc::new(AtomicU64::new(0));
    let a_lease = LeaseOptions {
        ttl_ms: 60_000,
        skew_margin_ms: 5_000,
        clock: clock(Arc::new(AtomicU64::new(0)), frozen.clone()),
    };
    let a = open(tmp.path(), "a", &bucket, a_lease);
    let before = append_and_wait(&a, "a", 2, 20, 5);
    frozen.store((chainlog::cluster::system_clock())(), Ordering::SeqCst);

    let b = open(tmp.path(), "b", &bucket, lease(60_000, 120_000));
    assert_eq!(b.epoch(), 2);
    let taken_at = b.log().state().next_seq;
    assert_eq!(taken_at, 200);

    // A appends on: its pieces are written, its head is refused, and every
    // wait from then on fails with LeaseLost.
    let late = a.log().append(&event("late", 0)).unwrap();
    let waited = a.wait_replicated(late.seq + 1);
    assert!(
        matches!(waited, Err(ClusterError::LeaseLost { .. })),
        "{waited:?}"
    );
    assert!(a.fenced().is_some());
    let again = a.log().append(&event("late", 1)).unwrap();
    assert!(matches!(
        a.wait_replicated(again.seq + 1),
        Err(ClusterError::LeaseLost { .. })
    ));
    let late_pieces: Vec<(u64, u64, u64)> = piece_names(&bucket)
        .into_iter()
        .filter(|&(_, first, epoch)| epoch == 1 && first >= taken_at)
        .collect();
    assert!(!late_pieces.is_empty(), "A wrote no late piece");

    // B writes other records at the same seqs.
    let after = append_and_wait(&b, "b", 2, 4, 5);
    assert_eq!(after.first().map(|r| r.seq), Some(taken_at));
    let head = read_head(&bucket).unwrap().unwrap().head;
    assert_eq!((head.epoch, head.size), (2, 240));

    // A follower and a rebuild read B's records, never A's.
    let f = follower(&bucket, &tmp.path().join("cache")).unwrap();
    let (log, seen) = f.log().unwrap();
    assert_eq!(seen.unwrap().root, head.root);
    assert_has(&log, &before);
    assert_has(&log, &after);
    assert_ne!(
        log.iter_from(late.seq).next().unwrap().unwrap().hash,
        late.hash
    );
    drop(b);
    let c = open(tmp.path(), "c", &bucket, lease(3_000, 200_000));
    assert_eq!(c.log().state().next_seq, 240);
    assert_has(c.log(), &after);
    assert!(c.head().is_some_and(|h| h.root == head.root));
    c.close().unwrap();
    drop(a);
}

/// `(segment base, first_seq, epoch)` of every piece in the bucket: the
/// folders listed are `tail/0`, the one after each archived segment, and
/// one per piece's first seq (where the next segment may start).
fn piece_names(bucket: &Bucket) -> Vec<(u64, u64, u64)> {
    let mut listed = std::collections::BTreeSet::new();
    let mut todo = vec![0];
    if let Some(manifest) = newest_manifest(bucket) {
        todo.extend(manifest.segments.iter().map(|s| s.last_seq + 1));
    }
    let mut names = Vec::new();
    while let Some(base) = todo.pop() {
        if !listed.insert(base) {
            continue;
        }
        for (name, _) in bucket.list(&piece_dir(base)).unwrap() {
            if let Some((first, epoch)) = parse_piece_file_name(&name) {
                names.push((base, first, epoch));
                todo.push(first);
            }
        }
    }
    names.sort_unstable();
    names
}

/// The newest archive manifest under the bucket's prefix.
fn newest_manifest(bucket: &Bucket) -> Option<Manifest> {
    let newest = bucket
        .list("manifest")
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .max()?;
    let key = format!("manifest/{newest}");
    Some(Manifest::parse(&bucket.get(&key).unwrap(), &key).unwrap())
}

/// Waits until the newest manifest names every sealed segment of `log`.
fn wait_archived(bucket: &Bucket, log: &Log) {
    let sealed = log.state().segments - 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    while newest_manifest(bucket).map_or(0, |m| m.segments.len()) < sealed {
        assert!(
            Instant::now() < deadline,
            "{sealed} sealed segments are not all archived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The bytes (files' lengths) under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                dir_bytes(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

#[test]
fn a_follower_keeps_its_cache_bounded_and_reads_evicted_segments_from_the_bucket() {
    let Some((_, _, bucket, tmp)) = setup("cluster_replica/cache") else {
        return;
    };
    let w = open(tmp.path(), "w", &bucket, lease(30_000, 0));
    let mut receipts = append_and_wait(&w, "cache", 4, 50, 5);
    let segments = w.log().state().segments;
    assert!(segments >= 3, "only {segments} segments");
    wait_archived(&bucket, w.log());

    // A cache of one segment: the bound promises at most that after a
    // poll, plus the newest segment and those not archived (none here).
    let cache_bytes = SEGMENT_BYTES;
    let cache = tmp.path().join("cache");
    let f = Follower::open(
        &cache,
        bucket.clone(),
        signer().verifier(),
        FollowOptions {
            poll_interval: Duration::from_millis(100),
            cache_bytes,
        },
    )
    .unwrap();
    let check = |f: &Follower, receipts: &[Receipt]| {
        let (log, head) = f.log().unwrap();
        assert_eq!(head.unwrap().size, receipts.len() as u64);
        let held = dir_bytes(&cache);
        assert!(
            held <= cache_bytes + SEGMENT_BYTES,
            "the cache holds {held} bytes, the bound is {cache_bytes} plus a segment"
        );
        let local = std::fs::read_dir(log.dir()).unwrap().count();
        eprintln!(
            "cache: {held} bytes in {local} files for {} segments ({} evicted), bound {cache_bytes}",
            log.state().segments,
            f.evicted_segments()
        );
        assert!(local < log.state().segments, "nothing was evicted");
        // Every record reads, the evicted ones from the bucket.
        assert_has(&log, receipts);
        let storage = f.storage().unwrap();
        let report = chainlog::verify::verify_dir(&*storage, log.dir(), &mut |_| {}).unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records, receipts.len() as u64);
    };
    assert!(
        f.evicted_segments() >= segments as u64 - 2,
        "{}",
        f.evicted_segments()
    );
    check(&f, &receipts);

    // The log grows: the follower follows, and evicts what the writer
    // archives meanwhile.
    let evicted = f.evicted_segments();
    receipts.extend(append_and_wait(&w, "more", 2, 50, 5));
    let grown = w.log().state().segments;
    assert!(grown > segments, "no new seal");
    wait_archived(&bucket, w.log());
    let deadline = Instant::now() + Duration::from_secs(30);
    while f.evicted_segments() <= evicted
        || f.log().unwrap().0.state().next_seq < receipts.len() as u64
        || dir_bytes(&cache) > cache_bytes + SEGMENT_BYTES
    {
        assert!(
            Instant::now() < deadline,
            "the follower evicted {} segments, {:?}",
            f.evicted_segments(),
            f.problem()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    check(&f, &receipts);
    w.close().unwrap();
}

#[test]
fn a_bucket_outage_costs_a_bounded_wait_and_nothing_acknowledged() {
    let Some((server, prefix, direct, tmp)) = setup("outage") else {
        return;
    };
    let proxy = SwitchProxy::start(server.port());
    let bucket = bucket_on(server, proxy.port, &prefix);
    let ack_timeout = Duration::from_secs(3);
    let options = replication(ack_timeout);
    let w = open_with(
        tmp.path(),
        "w",
        &bucket,
        lease(120_000, 0),
        log_options(),
        options,
    );
    let before = append_and_wait(&w, "before", 4, 10, 5);

    proxy.set_up(false);
    let during = w.log().append(&event("during", 0)).unwrap();
    let started = Instant::now();
    let waited = w.wait_replicated(during.seq + 1);
    let elapsed = started.elapsed();
    assert!(
        matches!(waited, Err(ClusterError::ReplicationTimeout { .. })),
        "{waited:?}"
    );
    eprintln!("outage: the wait failed after {elapsed:?} (ack_timeout {ack_timeout:?})");
    assert!(elapsed >= ack_timeout && elapsed < ack_timeout + Duration::from_secs(2));

    proxy.set_up(true);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    loop {
        match w.wait_replicated(during.seq + 1) {
            Ok(()) => break,
            Err(ClusterError::ReplicationTimeout { .. }) if Instant::now() < deadline => {}
            Err(e) => panic!("{e}"),
        }
    }
    eprintln!(
        "outage: replicated again {:?} after the bucket returned",
        started.elapsed()
    );
    let after = append_and_wait(&w, "after", 2, 4, 5);
    w.close().unwrap();

    let f = follower(&direct, &tmp.path().join("cache")).unwrap();
    let (log, _) = f.log().unwrap();
    assert_has(&log, &before);
    assert_has(&log, &[during]);
    assert_has(&log, &after);
}

#[test]
fn a_follower_keeps_up_and_refuses_what_the_pieces_do_not_give() {
    let Some((_, _, bucket, tmp)) = setup("follow") else {
        return;
    };
    let w = open(tmp.path(), "w", &bucket, lease(30_000, 0));
    // Before the first record the workspace is empty.
    let f = follower(&bucket, &tmp.path().join("cache")).unwrap();
    assert!(matches!(f.log(), Err(ClusterError::Empty { .. })));
    let mut lags = Vec::new();
    for round in 0..5 {
        let r = w.log().append(&event("follow", round)).unwrap();
        let appended = Instant::now();
        w.wait_replicated(r.seq + 1).unwrap();
        let deadline = appended + Duration::from_secs(10);
        loop {
            if let Ok((log, _)) = f.log() {
                if log.state().next_seq > r.seq {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the follower did not see seq {}",
                r.seq
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        lags.push(appended.elapsed());
    }
    eprintln!("follower: append to visible at the follower: {lags:?} (flush 20 ms, poll 100 ms)");
    assert!(f.lag() < Duration::from_secs(5));
    append_and_wait(&w, "more", 2, 10, 20);
    let head = w.head().unwrap();
    w.close().unwrap();

    // Replace the newest piece with frames with one whose frames were
    // changed (its own CRC made good): a follower starting now refuses the
    // head.
    let (key, found, mut piece) = piece_names(&bucket)
        .into_iter()
        .rev()
        .filter(|&(_, _, e)| e == head.epoch)
        .find_map(|(base, first, epoch)| {
            let key = piece_key(base, first, epoch);
            let found = bucket.get_versioned(&key).unwrap().unwrap();
            let piece = Piece::decode(&found.bytes).unwrap();
            piece
                .ranges
                .iter()
                .any(|r| r.offset >= 128 && r.bytes.len() > 64 && r.offset < SEGMENT_BYTES - 4096)
                .then_some((key, found, piece))
        })
        .unwrap();
    let frames = piece
        .ranges
        .iter_mut()
        .find(|r| r.offset >= 128 && r.bytes.len() > 64 && r.offset < SEGMENT_BYTES - 4096)
        .unwrap();
    frames.bytes[60] ^= 1;
    assert!(matches!(
        bucket
            .put_swap(&key, piece.encode(), &found.version)
            .unwrap(),
        Conditional::Written(_)
    ));
    let refused = follower(&bucket, &tmp.path().join("cache2"));
    assert!(
        matches!(refused, Err(ClusterError::HeadMismatch { .. })),
        "{refused:?}"
    );

    // An edited head (another root) fails its signature.
    let found = bucket.get_versioned("head.json").unwrap().unwrap();
    let text = String::from_utf8(found.bytes).unwrap();
    let edited = text.replace(&head.root.to_string(), &"0".repeat(64));
    assert_ne!(edited, text);
    bucket
        .put_swap("head.json", edited.into_bytes(), &found.version)
        .unwrap();
    let refused = follower(&bucket, &tmp.path().join("cache3"));
    assert!(
        matches!(refused, Err(ClusterError::BadHead(_))),
        "{refused:?}"
    );
    // The running follower keeps the last head it checked, and says why.
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.problem().is_none() {
        assert!(
            Instant::now() < deadline,
            "the follower took the edited head"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (log, kept) = f.log().unwrap();
    assert_eq!(kept.unwrap().root, head.root);
    assert_eq!(log.state().next_seq, head.size);
}

/// A TCP proxy to radosgw that can be switched off: then it closes every
/// connection it carries and every new one at once.
struct SwitchProxy {
    port: u16,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl SwitchProxy {
    fn start(upstream: u16) -> SwitchProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (up2, open2) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                if !up2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream)) else {
                    continue;
                };
                {
                    let mut open = open2.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        SwitchProxy { port, up, open }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            for stream in self.open.lock().unwrap().drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// Figures, not assertions: `cargo test --release --test cluster_replica
/// -- --ignored --nocapture figures`. 64 threads each append batches and
/// wait for each to be replicated: single events at the default flush
/// interval (250 ms), batches of 200 (an HTTP client's batch), and single
/// events at a 20 ms interval.
#[test]
#[ignore = "figures for docs/CLUSTER.md: run with --release --ignored --nocapture figures"]
fn figures() {
    for (flush_ms, batch) in [(250, 1), (250, 200), (20, 1)] {
        let Some((_, _, bucket, tmp)) = setup("figures") else {
            return;
        };
        let options = ReplicationOptions {
            flush_interval: Duration::from_millis(flush_ms),
            ..ReplicationOptions::default()
        };
        let w = open_with(
            tmp.path(),
            "w",
            &bucket,
            lease(30_000, 0),
            Options::default(),
            options,
        );
        figure(&w, flush_ms, batch);
        w.close().unwrap();
    }
}

fn figure(w: &Replicated, flush_ms: u64, batch: usize) {
    let threads = 64;
    let run = Duration::from_secs(6);
    let waits = Mutex::new(Vec::new());
    let puts_before = w.puts();
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let waits = &waits;
            s.spawn(move || {
                let mut mine = Vec::new();
                let mut i = 0;
                while started.elapsed() < run {
                    let events: Vec<Event> = (0..batch)
                        .map(|j| event("fig", (t * 1_000_000 + i) * batch + j))
                        .collect();
                    let got = w.log().append_batch(&events).unwrap();
                    let at = Instant::now();
                    w.wait_replicated(got[got.len() - 1].seq + 1).unwrap();
                    mine.push(at.elapsed());
                    i += 1;
                }
                waits.lock().unwrap().extend(mine);
            });
        }
    });
    let elapsed = started.elapsed();
    let mut waits = waits.into_inner().unwrap();
    waits.sort();
    let n = waits.len();
    let puts = w.puts() - puts_before;
    eprintln!(
        "figures: flush {flush_ms} ms, {threads} threads, batches of {batch}: {} events in {elapsed:.1?}, {:.0} events/s; wait_replicated p50 {:?}, p99 {:?}, max {:?}; {puts} PUTs, {:.1}/s",
        n * batch,
        (n * batch) as f64 / elapsed.as_secs_f64(),
        waits[n / 2],
        waits[n * 99 / 100],
        waits[n - 1],
        puts as f64 / elapsed.as_secs_f64(),
    );
}
