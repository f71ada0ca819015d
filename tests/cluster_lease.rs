//! The cluster's foundation against real S3 servers: the writer's lease,
//! the fenced head and the conditional-write probe (`chainlog::cluster`).
//!
//! The guarantees are tested on Ceph's radosgw (Debian's packages, started
//! by `scripts/ceph-server.sh`, one per test binary), which evaluates
//! conditional writes atomically. The same lease race is run against
//! s3s-fs, which checks and then writes, and its double winners are printed
//! (the figure in docs/CLUSTER.md), not asserted.
//!
//! Without Ceph the Ceph tests are skipped with a note, unless
//! `CHAINLOG_REQUIRE_CEPH` is set (as `scripts/test.sh` does), when they
//! fail; likewise s3s-fs with `CHAINLOG_REQUIRE_S3`.
#![cfg(feature = "s3")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use chainlog::archive::{ArchiveTarget, Bucket};
use chainlog::cluster::{
    check_head, head_of_log, probe_conditional_writes, publish_head, read_head, read_lease,
    ClusterError, Head, Lease, LeaseOptions, ProbeCheck, PublishedHead,
};
use chainlog::hash::checkpoint::{Checkpoint, NoteSigner};
use chainlog::{Event, Log, Options, Timestamp};

#[path = "support/s3.rs"]
mod s3;
use s3::{library_credentials, S3Server, TestS3};
#[path = "support/ceph.rs"]
mod ceph;
#[path = "support/proxy.rs"]
mod proxy;
#[path = "support/tools.rs"]
mod tools;
use ceph::CephServer;
use proxy::Proxy;

const TTL_MS: u64 = 10_000;
const SKEW_MS: u64 = 1_000;

fn bucket(server: &dyn TestS3, prefix: &str) -> Arc<Bucket> {
    library_credentials();
    Arc::new(Bucket::connect(&server.target(prefix), true).unwrap())
}

fn now_ms() -> u64 {
    (chainlog::cluster::system_clock())()
}

/// A clock the test sets by hand (ms since the Unix epoch).
fn clock_at(ms: &Arc<AtomicU64>) -> LeaseOptions {
    let ms = ms.clone();
    LeaseOptions {
        ttl_ms: TTL_MS,
        skew_margin_ms: SKEW_MS,
        clock: Arc::new(move || ms.load(Ordering::SeqCst)),
    }
}

/// One round of the race under `prefix`: `contenders` threads, each with
/// its own connection, create the lease at once; then, with every clock
/// past its expiry, all take it over at once. Returns how many won each
/// race (the epochs they won).
fn race_round(server: &dyn TestS3, prefix: &str, contenders: usize) -> (Vec<u64>, Vec<u64>) {
    let start = now_ms();
    let clock = Arc::new(AtomicU64::new(start));
    let buckets: Vec<Arc<Bucket>> = (0..contenders).map(|_| bucket(server, prefix)).collect();
    let barrier = Arc::new(Barrier::new(contenders));
    let race = |phase: &str| -> Vec<u64> {
        let threads: Vec<_> = buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let (b, barrier, options) = (b.clone(), barrier.clone(), clock_at(&clock));
                let holder = format!("{phase}-node-{i}");
                std::thread::spawn(move || {
                    barrier.wait();
                    match Lease::acquire(b, &holder, options) {
                        Ok(lease) => Some(lease.epoch()),
                        Err(ClusterError::HeldBy { .. }) => None,
                        Err(e) => panic!("{holder}: {e}"),
                    }
                })
            })
            .collect();
        threads
            .into_iter()
            .filter_map(|t| t.join().unwrap())
            .collect()
    };
    let created = race("create");
    clock.store(start + TTL_MS + SKEW_MS, Ordering::SeqCst);
    let taken = race("takeover");
    (created, taken)
}

#[test]
fn four_writers_race_for_one_lease_and_exactly_one_wins_each_round_on_ceph() {
    let Some(server) = CephServer::shared() else {
        return;
    };
    for round in 0..50 {
        let (created, taken) = race_round(server, &format!("race/{round}"), 4);
        assert_eq!(created, vec![1], "round {round}: create winners");
        assert_eq!(taken, vec![2], "round {round}: takeover winners");
    }
}

/// The figure for docs/CLUSTER.md: s3s-fs checks the condition, then
/// writes, so concurrent conditional PUTs can all win.
#[test]
fn the_same_race_on_s3s_fs_is_counted_not_trusted() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let rounds = 50;
    let (mut double_creates, mut double_takeovers) = (0, 0);
    for round in 0..rounds {
        let (created, taken) = race_round(&server, &format!("race/{round}"), 4);
        assert!(
            !created.is_empty() && !taken.is_empty(),
            "round {round}: nobody won"
        );
        double_creates += usize::from(created.len() > 1);
        double_takeovers += usize::from(taken.len() > 1);
    }
    eprintln!(
        "s3s-fs, 4 concurrent writers: {double_creates} of {rounds} create races and \
         {double_takeovers} of {rounds} takeover races had more than one winner"
    );
}

/// A log with `records` events, and its signed checkpoints.
struct Writer {
    _dir: tempfile::TempDir,
    log: Log,
    signer: NoteSigner,
}

impl Writer {
    fn new() -> Writer {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::create(dir.path(), Options::default()).unwrap();
        Writer {
            _dir: dir,
            log,
            signer: NoteSigner::from_seed("cluster.test", [5; 32]).unwrap(),
        }
    }

    fn append(&self, records: usize) {
        let events: Vec<Event> = (0..records)
            .map(|i| {
                let mut e = Event::new(Timestamp::now(), "node.added", "deploy-bot");
                e.context.insert("i".into(), i.into());
                e
            })
            .collect();
        self.log.append_batch(&events).unwrap();
    }

    /// The head of the log now, for `epoch`, proven from `previous`.
    fn head(&self, epoch: u64, previous: Option<&Head>) -> Head {
        head_of_log(&self.log, &self.signer, "chainlog", epoch, previous).unwrap()
    }
}

#[test]
fn an_expired_lease_is_taken_over_and_the_old_holder_is_fenced() {
    let Some(server) = CephServer::shared() else {
        return;
    };
    let writer = Writer::new();
    let verifier = writer.signer.verifier();
    let clock_a = Arc::new(AtomicU64::new(now_ms()));
    let clock_b = Arc::new(AtomicU64::new(clock_a.load(Ordering::SeqCst)));
    let mut lease_a =
        Lease::acquire(bucket(server, "fence"), "node-a", clock_at(&clock_a)).unwrap();
    assert_eq!(lease_a.epoch(), 1);

    // Epoch 1 publishes two heads.
    writer.append(100);
    let h1 = publish_head(&lease_a, None, writer.head(1, None)).unwrap();
    writer.append(50);
    let h2 = publish_head(&lease_a, Some(&h1), writer.head(1, Some(&h1.head))).unwrap();
    lease_a.renew().unwrap();

    // node-b waits while the lease runs (and its margin)...
    let b = bucket(server, "fence");
    let held = Lease::acquire(b.clone(), "node-b", clock_at(&clock_b));
    assert!(
        matches!(&held, Err(ClusterError::HeldBy { holder, epoch: 1, .. }) if holder == "node-a"),
        "{held:?}"
    );
    let expires = lease_a.record().expires_at_ms;
    clock_b.store(expires + SKEW_MS - 1, Ordering::SeqCst);
    assert!(matches!(
        Lease::acquire(b.clone(), "node-b", clock_at(&clock_b)),
        Err(ClusterError::HeldBy { .. })
    ));
    // ... and takes it over once it expired, at epoch 2.
    clock_b.store(expires + SKEW_MS, Ordering::SeqCst);
    let lease_b = Lease::acquire(b, "node-b", clock_at(&clock_b)).unwrap();
    assert_eq!(lease_b.epoch(), 2);
    let (record, _) = read_lease(lease_b.bucket()).unwrap().unwrap();
    assert_eq!((record.holder.as_str(), record.epoch), ("node-b", 2));

    // The new holder republishes the head under its epoch first.
    let current = read_head(lease_b.bucket()).unwrap().unwrap();
    assert_eq!(current, h2);
    let h3 = publish_head(
        &lease_b,
        Some(&current),
        writer.head(2, Some(&current.head)),
    )
    .unwrap();

    // node-a, whose clock says its lease still runs, cannot move the head:
    // neither from the head it knew nor from the one there now.
    lease_a.check_valid().unwrap();
    writer.append(30);
    for known in [&h2, &h3] {
        let stale = publish_head(&lease_a, Some(known), writer.head(1, Some(&known.head)));
        assert!(
            matches!(
                stale,
                Err(ClusterError::StaleEpoch {
                    epoch: 1,
                    head_epoch: 2,
                    ..
                })
            ),
            "{stale:?}"
        );
    }
    // Its renew is refused: the lease is lost, for good.
    let renew = lease_a.renew();
    assert!(
        matches!(&renew, Err(ClusterError::LeaseLost { epoch: 1, now, .. }) if now.contains("node-b")),
        "{renew:?}"
    );
    assert!(matches!(
        lease_a.check_valid(),
        Err(ClusterError::LeaseLost { .. })
    ));
    assert!(matches!(
        lease_a.renew(),
        Err(ClusterError::LeaseLost { .. })
    ));
    assert_eq!(read_head(lease_b.bucket()).unwrap().unwrap(), h3);

    // Epoch 2 goes on; a reader following every head accepts each, and the
    // whole history is one tree.
    let h4 = publish_head(&lease_b, Some(&h3), writer.head(2, Some(&h3.head))).unwrap();
    let heads: Vec<&PublishedHead> = vec![&h1, &h2, &h3, &h4];
    let mut trusted: Option<&Head> = None;
    for published in &heads {
        check_head(&published.head, &verifier, trusted).unwrap();
        trusted = Some(&published.head);
    }
    assert_eq!(
        heads
            .iter()
            .map(|h| (h.head.epoch, h.head.size))
            .collect::<Vec<_>>(),
        vec![(1, 100), (1, 150), (2, 150), (2, 180)]
    );
    let first = Checkpoint::open(&h1.head.checkpoint, &verifier).unwrap();
    let last = Checkpoint::open(&h4.head.checkpoint, &verifier).unwrap();
    assert!(writer
        .log
        .prove_consistency(&first, Some(&last))
        .unwrap()
        .verify());
    // A head skipped by a reader: the proof it carries is from another size.
    assert!(check_head(&h4.head, &verifier, Some(&h1.head)).is_err());

    // Released, the lease is taken at once, at the next epoch.
    lease_b.release().unwrap();
    let lease_c = Lease::acquire(bucket(server, "fence"), "node-c", clock_at(&clock_b)).unwrap();
    assert_eq!(lease_c.epoch(), 3);
}

#[test]
fn a_lease_and_a_head_are_refused_while_another_holds_them() {
    let Some(server) = CephServer::shared() else {
        return;
    };
    let clock = Arc::new(AtomicU64::new(now_ms()));
    let mut lease = Lease::acquire(bucket(server, "held"), "node-a", clock_at(&clock)).unwrap();
    // The holder's own clock past expiry minus the margin: it may not write.
    clock.store(lease.record().expires_at_ms - SKEW_MS, Ordering::SeqCst);
    let writer = Writer::new();
    writer.append(10);
    assert!(matches!(
        publish_head(&lease, None, writer.head(1, None)),
        Err(ClusterError::LeaseExpired { epoch: 1, .. })
    ));
    // Nobody took it over: a renew brings it back.
    lease.renew().unwrap();
    let h1 = publish_head(&lease, None, writer.head(1, None)).unwrap();
    // A head for another epoch, and a head that does not extend the last, are refused.
    assert!(matches!(
        publish_head(&lease, Some(&h1), writer.head(2, None)),
        Err(ClusterError::Invalid { .. })
    ));
    let other = Writer::new();
    other.append(20);
    assert!(matches!(
        publish_head(&lease, Some(&h1), other.head(1, None)),
        Err(ClusterError::BadHead(_))
    ));
    // A second create of a first head is refused (the head moved).
    writer.append(5);
    assert!(matches!(
        publish_head(&lease, None, writer.head(1, None)),
        Err(ClusterError::HeadMoved {
            size: 10,
            head_epoch: 1,
            ..
        })
    ));
    // A restarted node-a takes its own lease again, at the next epoch.
    let again = Lease::acquire(bucket(server, "held"), "node-a", clock_at(&clock)).unwrap();
    assert_eq!(again.epoch(), 2);
    assert!(matches!(lease.renew(), Err(ClusterError::LeaseLost { .. })));
}

#[test]
fn the_probe_passes_on_ceph_and_fails_where_conditions_are_ignored() {
    let Some(server) = CephServer::shared() else {
        return;
    };
    probe_conditional_writes(&bucket(server, "probe")).unwrap();
    assert!(server.objects("probe").is_empty(), "the probe key was left");

    // Servers that let a second create through, so the probe fails:
    // - Ceph 16 on a bucket with Object Lock (so, versioned), which ignores
    //   If-None-Match (and refuses every If-Match);
    // - Ceph behind a proxy that drops If-Match, If-None-Match and the
    //   signature, on a bucket anyone may write.
    let proxy = Proxy::stripping(server.port()).port;
    let ignoring = [
        (ceph::LOCKED_BUCKET, server.endpoint()),
        (ceph::OPEN_BUCKET, format!("http://127.0.0.1:{proxy}")),
    ];
    library_credentials();
    for (bucket, endpoint) in ignoring {
        let target = ArchiveTarget::parse(&format!("s3://{bucket}/probe"))
            .unwrap()
            .with_endpoint(Some(endpoint));
        let probed = probe_conditional_writes(&Bucket::connect(&target, true).unwrap());
        assert!(
            matches!(
                &probed,
                Err(ClusterError::NotEnforced {
                    check: ProbeCheck::SecondCreateWritten,
                    ..
                })
            ),
            "{bucket}: {probed:?}"
        );
    }
}

/// A sequential probe cannot see s3s-fs's check-then-write: it passes.
#[test]
fn the_probe_passes_on_s3s_fs() {
    let Some(server) = S3Server::start() else {
        return;
    };
    probe_conditional_writes(&bucket(&server, "probe")).unwrap();
    assert!(server.objects("probe").is_empty());
}
