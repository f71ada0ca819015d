//! Retention deletes whole old segments after recording a checkpoint in the
//! chain; what remains verifies, a legal hold blocks it, and a crash at any
//! step leaves a log that opens and verifies.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chainlog::format::segment::MIN_SEGMENT_BYTES;
use chainlog::retention::{RetentionPolicy, RetentionRecord, RETENTION_EVENT};
use chainlog::storage::sim::SimDisk;
use chainlog::storage::{DirLock, FsStorage, SetClock, Storage, StorageFile};
use chainlog::verify::{verify_dir, ProblemKind, Report};
use chainlog::{Durability, Error, Event, Log, Options, Timestamp};

const DAY: i64 = 86_400_000_000_000;
const START: i64 = 1_750_000_000_000_000_000;

fn options() -> Options {
    Options {
        segment_bytes: MIN_SEGMENT_BYTES,
        durability: Durability::None,
        ..Options::default()
    }
}

/// Events spread evenly over 200 days.
fn event(i: u64, n: u64) -> Event {
    let ts = START + i as i64 * (200 * DAY / n as i64);
    let mut e = Event::new(
        Timestamp::from_unix_nanos(ts),
        "config.changed",
        "ops@acme.io",
    );
    e.node = Some(format!("node-{}", i % 9));
    e.context.insert("i".into(), i.into());
    e.context.insert("diff".into(), "x".repeat(300).into());
    e
}

const N: u64 = 3000;

fn now() -> Timestamp {
    Timestamp::from_unix_nanos(START + 200 * DAY)
}

/// The engine clock a test drives: retention judges age by it.
trait Clock {
    fn set(&self, at: Timestamp);
}

impl Clock for SimDisk {
    fn set(&self, at: Timestamp) {
        self.advance_clock(at.unix_nanos() - self.now().unix_nanos());
    }
}

impl Clock for SetClock {
    fn set(&self, at: Timestamp) {
        SetClock::set(self, at);
    }
}

/// A log of `N` events over 200 days, each batch received when its last
/// event happened (so times of receipt spread as the event times do), with
/// the clock left at [`now`].
fn build(storage: Arc<dyn Storage>, dir: &Path, clock: &dyn Clock) -> Log {
    let log = Log::create_in(storage, dir, options()).unwrap();
    let events: Vec<Event> = (0..N).map(|i| event(i, N)).collect();
    for chunk in events.chunks(50) {
        clock.set(chunk[chunk.len() - 1].timestamp);
        log.append_batch(chunk).unwrap();
    }
    log.sync().unwrap();
    clock.set(now());
    log
}

fn retention_records(log: &Log) -> Vec<(u64, RetentionRecord)> {
    log.iter_from(0)
        .map(|r| r.unwrap())
        .filter(|r| r.event.event_type == RETENTION_EVENT)
        .map(|r| {
            (
                r.seq,
                serde_json::from_value(serde_json::Value::Object(r.event.context)).unwrap(),
            )
        })
        .collect()
}

fn assert_intact(report: &Report) {
    assert!(report.is_intact(), "{:#?}", report.problems);
}

#[test]
fn age_retention_keeps_recent_segments_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(SetClock::new(Arc::new(FsStorage), now()));
    let log = build(clock.clone(), dir.path(), &*clock);
    let segments_before = log.state().segments;
    assert!(segments_before >= 10, "{segments_before} segments");
    let policy = RetentionPolicy::default(); // 90 days

    let planned = log.plan_retention(&policy).unwrap();
    let outcome = log.apply_retention(&policy).unwrap();
    assert_eq!(outcome.deleted, planned);
    assert!(!outcome.deleted.is_empty());
    let cutoff = Timestamp::from_unix_nanos(now().unix_nanos() - 90 * DAY);
    for seg in &outcome.deleted {
        // Judged by the time of receipt, which the record carries.
        let received = seg.max_received_at.expect("a version 2 segment");
        assert!(received < cutoff, "{seg:?} is not older than the cut-off");
        assert!(seg.max_timestamp <= received, "{seg:?}");
    }
    let first = log.state().first_seq;
    assert_eq!(first, outcome.deleted.last().unwrap().last_seq + 1);
    // The oldest kept segment holds an event newer than the cut-off.
    let oldest_kept = log.iter_from(first).next().unwrap().unwrap();
    assert_eq!(oldest_kept.seq, first);
    let deleted_records: u64 = outcome.deleted.iter().map(|d| d.record_count).sum();
    assert_eq!(deleted_records, first);
    assert!(
        (first as f64) > N as f64 * 0.45 && (first as f64) < N as f64 * 0.56,
        "about 110 of 200 days deleted, got {first}"
    );

    // The retention record is in the chain and says where the log starts.
    let records = retention_records(&log);
    assert_eq!(records.len(), 1);
    let (seq, rec) = &records[0];
    assert_eq!(*seq, outcome.record.unwrap().seq);
    assert_eq!(rec.first_retained_seq, first);
    assert_eq!(rec.deleted, outcome.deleted);
    assert_eq!(rec.cutoff, Some(cutoff));
    let r = log.iter_from(*seq).next().unwrap().unwrap();
    assert_eq!(
        (r.event.actor.as_str(), r.event.event_type.as_str()),
        ("system", "log.retention")
    );

    // Nothing due: a second run deletes nothing and records nothing.
    let again = log.apply_retention(&policy).unwrap();
    assert!(again.deleted.is_empty() && again.record.is_none());
    drop(log);
    let report = verify_dir(&chainlog::storage::FsStorage, dir.path(), &mut |_| {}).unwrap();
    assert_intact(&report);
    assert_eq!(report.first_seq, Some(first));

    // Removing a middle segment after retention is still tampering.
    let mut segs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    std::fs::remove_file(&segs[segs.len() / 2]).unwrap();
    let report = verify_dir(&chainlog::storage::FsStorage, dir.path(), &mut |_| {}).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::MissingRecords),
        "{:?}",
        report.problems
    );
    // And so is removing the oldest remaining one: no record accounts for it.
    let dir2 = tempfile::tempdir().unwrap();
    for s in &segs[1..] {
        if s.exists() {
            std::fs::copy(s, dir2.path().join(s.file_name().unwrap())).unwrap();
        }
    }
    let report = verify_dir(&chainlog::storage::FsStorage, dir2.path(), &mut |_| {}).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::MissingRecords && p.seq == Some(0)),
        "the unaccounted start is reported: {:?}",
        report.problems
    );
}

#[test]
fn size_retention_and_the_active_segment_is_never_deleted() {
    let disk = SimDisk::new();
    let log = build(Arc::new(disk.clone()), Path::new("/log"), &disk);
    let policy = RetentionPolicy {
        max_age: None,
        max_bytes: Some(1),
    };
    let before = log.state().segments;
    let outcome = log.apply_retention(&policy).unwrap();
    assert_eq!(log.state().segments, 1, "only the active segment is left");
    assert_eq!(outcome.deleted.len(), before - 1);
    // Appending and reading still work; the log verifies.
    log.append(&event(N, N)).unwrap();
    drop(log);
    assert_intact(&verify_dir(&disk, Path::new("/log"), &mut |_| {}).unwrap());
}

/// A filter (such as "archived") lets retention delete the due segments up
/// to the first it refuses; that one and the due ones after it are kept,
/// even those it would allow, so the retained log has no gap.
#[test]
fn a_filtered_run_deletes_the_allowed_prefix_and_keeps_the_rest() {
    let disk = SimDisk::new();
    let dir = Path::new("/log");
    let log = build(Arc::new(disk.clone()), dir, &disk);
    let policy = RetentionPolicy::default();
    let due = log.plan_retention(&policy).unwrap();
    assert!(due.len() >= 4, "{} due", due.len());
    let refused = due[2].base_seq;

    // An error from the filter: nothing is deleted or recorded.
    let before = log.state();
    let failed = log.apply_retention_filtered(&policy, |_| {
        Err::<std::collections::BTreeSet<u64>, _>(Error::InvalidOptions("archive down".into()))
    });
    assert!(
        matches!(failed, Err(Error::InvalidOptions(_))),
        "{failed:?}"
    );
    assert_eq!(log.state().segments, before.segments);
    assert!(retention_records(&log).is_empty());

    let outcome = log
        .apply_retention_filtered(&policy, |planned| {
            assert_eq!(planned, &due[..]);
            Ok::<_, Error>(
                planned
                    .iter()
                    .map(|s| s.base_seq)
                    .filter(|&b| b != refused)
                    .collect(),
            )
        })
        .unwrap();
    assert_eq!(outcome.deleted, due[..2]);
    assert_eq!(outcome.kept, due[2..]);
    assert_eq!(log.state().first_seq, refused);
    let records = retention_records(&log);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].1.deleted, outcome.deleted);
    assert_eq!(records[0].1.first_retained_seq, refused);

    // Allowed later, the kept segments go.
    let outcome = log.apply_retention(&policy).unwrap();
    assert_eq!(outcome.deleted, due[2..]);
    assert!(outcome.kept.is_empty());
    drop(log);
    assert_intact(&verify_dir(&disk, dir, &mut |_| {}).unwrap());
}

#[test]
fn legal_hold_blocks_retention_and_is_recorded() {
    let disk = SimDisk::new();
    let dir = Path::new("/log");
    let log = build(Arc::new(disk.clone()), dir, &disk);
    let set = log
        .set_hold("counsel@acme.io", "litigation 2026-114")
        .unwrap();
    assert!(log.hold().unwrap().is_some());
    assert!(matches!(
        log.set_hold("x@acme.io", "again"),
        Err(Error::HoldState(_))
    ));
    let before = log.state();
    match log.apply_retention(&RetentionPolicy::default()) {
        Err(Error::LegalHold { actor, reason, .. }) => {
            assert_eq!(
                (actor.as_str(), reason.as_str()),
                ("counsel@acme.io", "litigation 2026-114")
            )
        }
        other => panic!("expected a legal hold error, got {other:?}"),
    }
    assert_eq!(
        log.state().segments,
        before.segments,
        "nothing deleted under a hold"
    );
    // The hold survives a crash and a reopen.
    drop(log);
    disk.crash();
    let log = Log::open_in(Arc::new(disk.clone()), dir, options()).unwrap();
    assert!(log.apply_retention(&RetentionPolicy::default()).is_err());
    let released = log.release_hold("counsel@acme.io", "case closed").unwrap();
    assert!(log.hold().unwrap().is_none());
    let outcome = log.apply_retention(&RetentionPolicy::default()).unwrap();
    assert!(!outcome.deleted.is_empty());
    let events: Vec<(u64, String, String)> = log
        .iter_from(set.seq)
        .map(|r| r.unwrap())
        .filter(|r| r.event.event_type.starts_with("log."))
        .map(|r| (r.seq, r.event.event_type, r.event.actor))
        .collect();
    assert_eq!(
        events,
        vec![
            (set.seq, "log.hold_set".into(), "counsel@acme.io".into()),
            (
                released.seq,
                "log.hold_released".into(),
                "counsel@acme.io".into()
            ),
            (
                outcome.record.unwrap().seq,
                "log.retention".into(),
                "system".into()
            ),
        ]
    );
    drop(log);
    assert_intact(&verify_dir(&disk, dir, &mut |_| {}).unwrap());
}

#[test]
fn retention_inside_a_hold_is_reported_by_the_verifier() {
    let disk = SimDisk::new();
    let dir = Path::new("/log");
    let log = build(Arc::new(disk.clone()), dir, &disk);
    log.set_hold("counsel@acme.io", "audit").unwrap();
    // Someone deletes the hold file behind the log's back, then runs retention.
    disk.remove(&dir.join(chainlog::retention::HOLD_FILE_NAME))
        .unwrap();
    log.apply_retention(&RetentionPolicy::default()).unwrap();
    drop(log);
    let report = verify_dir(&disk, dir, &mut |_| {}).unwrap();
    let during: Vec<_> = report
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::RetentionDuringHold)
        .collect();
    assert_eq!(during.len(), 1, "{:?}", report.problems);
    // The retention record's own seq and frame, not byte 0.
    let retention = retention_records_on(&disk, dir);
    assert_eq!(during[0].seq, Some(retention.0));
    assert_eq!(during[0].offset, retention.1);
}

/// The seq and frame offset of the (only) retention record, read from the segments.
fn retention_records_on(disk: &SimDisk, dir: &Path) -> (u64, u64) {
    let mut names = disk.list(dir).unwrap();
    names.sort();
    for name in names.iter().filter(|n| n.ends_with(".seg")) {
        let image = disk.read_file(&dir.join(name)).unwrap();
        let mut at = 128usize;
        while let Ok(Some(f)) = chainlog::format::frame::decode(&image[at..]) {
            let view = chainlog::event::record::decode_record(2, f.record).unwrap();
            if view.event_type == RETENTION_EVENT {
                return (f.seq, at as u64);
            }
            at += f.padded_len();
        }
    }
    panic!("no retention record");
}

/// Writes `events` as engine records (origin 1) after the last frame of
/// the newest segment in `dir`, chained from `head`, as a writer with the
/// disk could: the verifier must judge them by their content.
fn append_engine_records(
    disk: &SimDisk,
    dir: &Path,
    next_seq: u64,
    head: chainlog::ChainHash,
    events: &[Event],
) {
    use chainlog::event::record::{encode_provenance, Origin};
    use chainlog::format::{frame, segment};
    let newest = disk
        .list(dir)
        .unwrap()
        .iter()
        .filter_map(|n| segment::parse_file_name(n))
        .max()
        .unwrap();
    let path = dir.join(segment::file_name(newest));
    let file = disk.open(&path, true).unwrap();
    let mut bytes = vec![0; file.size().unwrap() as usize];
    chainlog::storage::read_exact_at(&*file, &mut bytes, 0).unwrap();
    let mut at = segment::HEADER_BYTES as usize;
    while let Ok(Some(f)) = frame::decode(&bytes[at..]) {
        at += f.padded_len();
    }
    let (mut seq, mut head) = (next_seq, head);
    for e in events {
        // A client type of the same length, then the reserved name.
        let mut client = e.clone();
        client.event_type = e.event_type.replacen("log.", "lxg.", 1);
        let mut out = Vec::new();
        let start = frame::begin(&mut out);
        encode_provenance(now(), Origin::Engine, "chainlog", &mut out).unwrap();
        let body = out.len();
        chainlog::event::encode_record(&client, &mut out).unwrap();
        let type_at = body + 8 + 1 + 1 + 2;
        assert_eq!(&out[type_at..type_at + 4], b"lxg.");
        out[type_at + 1] = b'o';
        frame::finish(&mut out, start);
        head = frame::link(&mut out, seq, &head);
        file.write_all_at(&out, at as u64).unwrap();
        at += out.len();
        seq += 1;
    }
    file.sync_data().unwrap();
}

#[test]
fn a_retention_record_that_does_not_parse_is_an_invalid_engine_record_with_the_parser_error() {
    let disk = SimDisk::new();
    let dir = Path::new("/log");
    let log = build(Arc::new(disk.clone()), dir, &disk);
    // ASCII contexts take the verifier's fast record check, non-ASCII ones
    // the full decode; both report serde's message for the text.
    let contexts = [
        r#"{"first_retained_seq":"x"}"#,
        r#"{"first_retained_seq":1,"deleted":[]}"#,
        r#"{"politique":"é"}"#,
    ];
    let mut forged = Vec::new();
    for context in contexts {
        let mut e = Event::new(now(), RETENTION_EVENT, "system");
        e.context = serde_json::from_str(context).unwrap();
        // No append path takes a client's `log.*` record ...
        assert!(matches!(
            log.append(&e),
            Err(Error::InvalidEvent(
                chainlog::event::EventError::ReservedEventType(_)
            ))
        ));
        forged.push(e);
    }
    // ... so they are written as the engine would, behind the log's back.
    let state = log.state();
    drop(log);
    append_engine_records(&disk, dir, state.next_seq, state.head, &forged);
    let report = verify_dir(&disk, dir, &mut |_| {}).unwrap();
    let details: Vec<&str> = report
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::EngineRecordInvalid)
        .map(|p| p.detail.as_str())
        .collect();
    // Each at its own frame, not at byte 0.
    assert!(
        report.problems.iter().all(|p| p.offset >= 128),
        "{:#?}",
        report.problems
    );
    let expected: Vec<String> = contexts
        .iter()
        .map(|c| {
            let e = serde_json::from_str::<RetentionRecord>(c).unwrap_err();
            format!("log.retention record with a malformed context: {e}")
        })
        .collect();
    assert_eq!(details, expected, "{:#?}", report.problems);
}

#[test]
fn automatic_retention_after_a_roll() {
    let disk = SimDisk::new();
    let dir = Path::new("/log");
    let opts = Options {
        retention: Some(RetentionPolicy {
            max_age: Some(Duration::from_secs(30 * 86_400)),
            max_bytes: None,
        }),
        ..options()
    };
    // Each event is received when it happened, over 200 days: by the
    // time the log rolls late on, its early segments are past 30 days.
    let log = Log::create_in(Arc::new(disk.clone()), dir, opts).unwrap();
    for i in 0..N {
        let e = event(i, N);
        disk.set(e.timestamp);
        log.append(&e).unwrap();
    }
    assert!(
        log.last_maintenance_error().is_none(),
        "{:?}",
        log.last_maintenance_error()
    );
    // Rolls deleted the segments received over 30 days before. Each
    // retention record is received "now", so the segment holding it stops
    // later runs (oldest first) until it ages out in turn, as the clock
    // moves on: each run starts the log later, and the last says where.
    let state = log.state();
    assert!(
        state.first_seq > 0,
        "old segments were deleted as the log rolled"
    );
    let records = retention_records(&log);
    let starts: Vec<u64> = records.iter().map(|(_, r)| r.first_retained_seq).collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "{starts:?}");
    assert_eq!(starts.last(), Some(&state.first_seq));
    drop(log);
    assert_intact(&verify_dir(&disk, dir, &mut |_| {}).unwrap());
}

/// Storage that crashes the simulated disk after a given number of
/// mutating operations, then fails every operation: a power cut at that step.
#[derive(Debug)]
struct CrashAfter {
    disk: SimDisk,
    remaining: Arc<AtomicUsize>,
}

impl CrashAfter {
    fn tick(&self) -> io::Result<()> {
        let left = self.remaining.load(Ordering::SeqCst);
        if left == 0 {
            return Err(io::Error::other("power cut"));
        }
        if self.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.disk.crash();
            return Err(io::Error::other("power cut"));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct CrashFile {
    inner: Arc<dyn StorageFile>,
    remaining: Arc<AtomicUsize>,
    disk: SimDisk,
}

impl CrashFile {
    fn tick(&self) -> io::Result<()> {
        CrashAfter {
            disk: self.disk.clone(),
            remaining: self.remaining.clone(),
        }
        .tick()
    }
}

impl StorageFile for CrashFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.tick()?;
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.tick()?;
        self.inner.sync_data()
    }
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        self.tick()?;
        self.inner.allocate(len)
    }
}

impl CrashAfter {
    fn wrap(&self, f: Arc<dyn StorageFile>) -> Arc<dyn StorageFile> {
        Arc::new(CrashFile {
            inner: f,
            remaining: self.remaining.clone(),
            disk: self.disk.clone(),
        })
    }
}

impl Storage for CrashAfter {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.disk.create_dir_all(dir)
    }
    fn now(&self) -> chainlog::Timestamp {
        self.disk.now()
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.disk.list(dir)
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        self.tick()?;
        Ok(self.wrap(self.disk.create_new(path)?))
    }
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn StorageFile>> {
        Ok(self.wrap(self.disk.open(path, write)?))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.tick()?;
        self.disk.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.tick()?;
        self.disk.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.tick()?;
        self.disk.sync_dir(dir)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        self.disk.lock_dir(dir)
    }
}

#[test]
fn a_crash_at_every_step_of_a_retention_run_leaves_a_verifiable_log() {
    let dir = Path::new("/log");
    let policy = RetentionPolicy::default();
    let mut step = 0;
    let mut completed = false;
    while !completed {
        let disk = SimDisk::new();
        let steps = Arc::new(AtomicUsize::new(usize::MAX));
        let storage = Arc::new(CrashAfter {
            disk: disk.clone(),
            remaining: steps.clone(),
        });
        let log = build(storage, dir, &disk);
        let durable: Vec<_> = log.iter_from(0).map(|r| r.unwrap()).collect();
        steps.store(step + 1, Ordering::SeqCst);
        completed = log.apply_retention(&policy).is_ok();
        drop(log);
        if !completed {
            disk.crash();
        }
        // After the power cut (or the completed run), the log opens and verifies.
        let reopened = Log::open_in(Arc::new(disk.clone()), dir, options())
            .unwrap_or_else(|e| panic!("step {step}: open failed: {e}"));
        let first = reopened.state().first_seq;
        let kept: Vec<_> = reopened.iter_from(first).map(|r| r.unwrap()).collect();
        // Every durable record not deleted is still there, unchanged.
        for r in &durable[first as usize..] {
            assert_eq!(&kept[(r.seq - first) as usize], r, "step {step}");
        }
        assert!(kept.len() as u64 >= N - first, "step {step}");
        reopened.append(&event(N, N)).unwrap();
        drop(reopened);
        let report = verify_dir(&disk, dir, &mut |_| {}).unwrap();
        assert!(report.is_intact(), "step {step}: {:#?}", report.problems);
        step += 1;
        assert!(step < 200, "retention never completed");
    }
    assert!(step > 5, "the run has several steps ({step})");
}
