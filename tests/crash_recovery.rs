//! Crash safety on the simulated disk: power loss at every byte of every
//! pending write, torn tails, mid-segment corruption, failing `fdatasync`,
//! a full disk, short reads, a vanished segment and concurrent appenders.
//!
//! The crash-at-every-byte tests kill the "process" after each storage
//! operation of the step under test (a [`Killable`] storage refuses every
//! operation from that point on, as a killed process would issue none), then
//! cut power at every byte of every write still pending, and check recovery
//! against a model of what was appended and what was acknowledged durable.
//! Each crash point starts from a fresh copy of a prepared log; crash points
//! known to give the same disk as one already checked are skipped, and the
//! verifier runs once per distinct resulting disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chainlog::event::encode_record;
use chainlog::format::frame::padded_len;
use chainlog::format::segment::{self, data_end_limit, HEADER_BYTES, MIN_SEGMENT_BYTES};
use chainlog::hash::chain::{ChainHash, LogId};
use chainlog::log::cut;
use chainlog::storage::sim::SimDisk;
use chainlog::storage::{DirLock, Storage, StorageFile};
use chainlog::verify::{verify_dir, ProblemKind, Report};
use chainlog::{Durability, Error, Event, Log, Options, Receipt, Record, Timestamp, WriteBehind};
use serde_json::Value;

const DIR: &str = "/log";

fn dir() -> &'static Path {
    Path::new(DIR)
}

/// Write-through: every append reaches the disk before it returns, as
/// these tests tear the writes of each step.
fn options(durability: Durability) -> Options {
    Options {
        segment_bytes: MIN_SEGMENT_BYTES,
        durability,
        write_behind: None,
        ..Options::default()
    }
}

/// Write-behind that never fires on its own: buffered frames are written
/// only by a sync, a seal, a read or a close, on the calling thread, so a
/// step's storage operations are the same from run to run.
fn buffered() -> Option<WriteBehind> {
    Some(WriteBehind {
        buffer_bytes: 64 << 20,
        max_delay: Duration::from_secs(3600),
    })
}

/// Bytes of frames one segment holds.
const CAPACITY: u64 = data_end_limit(MIN_SEGMENT_BYTES) - HEADER_BYTES;

/// A small event: every one encodes to 50 bytes (with the provenance prefix), a 104-byte frame, so
/// that tearing every byte of a few of them stays quick.
fn small_event(i: u64) -> Event {
    let mut e = Event::new(
        Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + i as i64 * 1_000_000),
        "a.b",
        format!("{:04}", i % 10_000),
    );
    e.outcome = if i % 2 == 0 {
        chainlog::Outcome::Success
    } else {
        chainlog::Outcome::Failure
    };
    e
}

fn record_bytes(e: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    chainlog::event::record::encode_provenance(
        chainlog::storage::sim::SIM_CLOCK_START,
        chainlog::event::Origin::Client,
        chainlog::log::DEFAULT_APPENDER,
        &mut out,
    )
    .unwrap();
    encode_record(e, &mut out).unwrap();
    out
}

fn frame_bytes(e: &Event) -> u64 {
    padded_len(record_bytes(e).len()) as u64
}

fn small_frame() -> u64 {
    frame_bytes(&small_event(0))
}

/// An event whose frame is exactly `frame` bytes (a multiple of 8).
fn filler_event(i: u64, frame: u64) -> Event {
    let mut e = Event::new(
        Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + i as i64 * 1_000_000),
        "pcap.download",
        "filler@acme.io",
    );
    e.context.insert("pad".into(), Value::String(String::new()));
    let base = record_bytes(&e).len() as u64;
    let pad = frame - 48 - base;
    e.context
        .insert("pad".into(), Value::String("p".repeat(pad as usize)));
    assert_eq!(frame_bytes(&e), frame);
    e
}

/// The chain hashes of `events` appended in order to the log `log_id`.
fn chain_hashes(log_id: &LogId, events: &[Event]) -> Vec<ChainHash> {
    let mut head = ChainHash::genesis(log_id);
    events
        .iter()
        .enumerate()
        .map(|(seq, e)| {
            head = head.next(seq as u64, &record_bytes(e));
            head
        })
        .collect()
}

/// Also checks that the engine never asked to zero over written bytes.
fn verify(disk: &SimDisk) -> Report {
    assert_eq!(disk.stats().zeroed_over_data, 0, "zeros asked over data");
    verify_dir(disk, dir(), &mut |_| {}).unwrap()
}

fn read_all(log: &Log) -> Vec<Record> {
    log.iter_from(0).collect::<Result<_, _>>().unwrap()
}

// ---------------------------------------------------------------------------
// Disk images: build a log once, restore copies of it cheaply.

/// The files of a log whose every write is durable, and what it holds.
struct Snapshot {
    files: Vec<(PathBuf, Vec<u8>)>,
    events: Vec<Event>,
    log_id: LogId,
}

impl Snapshot {
    /// Copies the segment files (derived index files are left out: they
    /// are written in the background, and rebuilt when missing).
    fn take(disk: &SimDisk, events: Vec<Event>, log_id: LogId) -> Snapshot {
        let mut names: Vec<String> = disk
            .list(dir())
            .unwrap()
            .into_iter()
            .filter(|n| segment::parse_file_name(n).is_some())
            .collect();
        names.sort();
        let files = names
            .into_iter()
            .map(|n| {
                let path = dir().join(n);
                let bytes = disk.read_file(&path).unwrap();
                (path, bytes)
            })
            .collect();
        Snapshot {
            files,
            events,
            log_id,
        }
    }

    /// A fresh disk holding exactly these files, all durable.
    fn restore(&self) -> SimDisk {
        let disk = SimDisk::new();
        for (path, bytes) in &self.files {
            let f = disk.create_new(path).unwrap();
            f.write_all_at(bytes, 0).unwrap();
            f.sync_data().unwrap();
        }
        disk.sync_dir(dir()).unwrap();
        disk
    }
}

/// Appends fillers until the active segment has `room` bytes left;
/// `used` tracks the bytes used in the active segment.
fn fill_to_room(log: &Log, events: &mut Vec<Event>, used: &mut u64, room: u64) {
    let mut remaining = CAPACITY - *used - room;
    while remaining > 0 {
        let chunk = if remaining <= 60_000 {
            remaining
        } else if remaining - 60_000 < 400 {
            remaining - 400
        } else {
            60_000
        };
        let e = filler_event(events.len() as u64, chunk);
        log.append(&e).unwrap();
        events.push(e);
        remaining -= chunk;
        *used += chunk;
    }
}

/// A durable log of one segment, or two (the first sealed), whose active
/// segment has `room` bytes left.
fn base_log(room: u64, segments: usize) -> Snapshot {
    let disk = SimDisk::new();
    let log = Log::create_in(Arc::new(disk.clone()), DIR, options(Durability::Always)).unwrap();
    let mut events = Vec::new();
    for s in 0..segments {
        let mut used = 0;
        for _ in 0..3 {
            let e = small_event(events.len() as u64);
            used += frame_bytes(&e);
            log.append(&e).unwrap();
            events.push(e);
        }
        fill_to_room(
            &log,
            &mut events,
            &mut used,
            if s + 1 == segments { room } else { 0 },
        );
    }
    assert_eq!(log.state().segments, segments);
    let log_id = log.log_id();
    drop(log);
    Snapshot::take(&disk, events, log_id)
}

// ---------------------------------------------------------------------------
// A storage that a test can "kill" after a number of operations.

#[derive(Debug, Default)]
struct Switch {
    /// Mutating operations still allowed; `u64::MAX` is unlimited.
    allowed: AtomicU64,
    /// Mutating operations performed.
    done: AtomicU64,
}

impl Switch {
    fn new() -> Arc<Switch> {
        Arc::new(Switch {
            allowed: AtomicU64::new(u64::MAX),
            done: AtomicU64::new(0),
        })
    }

    /// Allows `n` more operations (all, if `None`), counting from zero.
    fn arm(&self, n: Option<u64>) {
        self.done.store(0, Ordering::SeqCst);
        self.allowed.store(n.unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    fn kill(&self) {
        self.allowed.store(0, Ordering::SeqCst);
    }

    fn tick(&self) -> io::Result<()> {
        let ok = self
            .allowed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                u64::MAX => Some(n),
                0 => None,
                n => Some(n - 1),
            })
            .is_ok();
        if ok {
            self.done.fetch_add(1, Ordering::SeqCst);
            Ok(())
        } else {
            Err(io::Error::other("killed"))
        }
    }
}

/// A [`SimDisk`] whose segment operations stop at the flip of a [`Switch`],
/// as a killed process stops issuing them. Index files are refused outright:
/// they are derived data written by a background thread, whose timing would
/// make the crash points differ from run to run.
#[derive(Debug, Clone)]
struct Killable {
    disk: SimDisk,
    switch: Arc<Switch>,
}

#[derive(Debug)]
struct KillableFile {
    file: Arc<dyn StorageFile>,
    switch: Arc<Switch>,
}

impl StorageFile for KillableFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.switch.tick()?;
        self.file.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.switch.tick()?;
        self.file.sync_data()
    }
    fn size(&self) -> io::Result<u64> {
        self.file.size()
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        self.switch.tick()?;
        self.file.allocate(len)
    }
}

fn is_segment_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(segment::SEGMENT_SUFFIX) || name.ends_with(segment::TEMP_SUFFIX)
}

fn refused() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "index files are off in this test",
    )
}

impl Killable {
    fn tick(&self, path: &Path) -> io::Result<()> {
        if is_segment_file(path) {
            self.switch.tick()
        } else {
            Err(refused())
        }
    }

    fn wrap(&self, file: Arc<dyn StorageFile>) -> Arc<dyn StorageFile> {
        Arc::new(KillableFile {
            file,
            switch: self.switch.clone(),
        })
    }
}

impl Storage for Killable {
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
        self.tick(path)?;
        Ok(self.wrap(self.disk.create_new(path)?))
    }
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn StorageFile>> {
        if !is_segment_file(path) {
            return Err(refused());
        }
        Ok(self.wrap(self.disk.open(path, write)?))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.tick(from)?;
        self.disk.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.tick(path)?;
        self.disk.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.switch.tick()?;
        self.disk.sync_dir(dir)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        self.disk.lock_dir(dir)
    }
}

// ---------------------------------------------------------------------------
// Crash at every byte.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Single,
    Batch3,
    Sync,
}

struct Case {
    name: &'static str,
    durability: Durability,
    /// Under the relaxed policies: write-through (`None`) or [`buffered`].
    write_behind: Option<WriteBehind>,
    base: &'static Snapshot,
    /// Events appended (unsynced under the relaxed policies) before the step.
    pre: Vec<Event>,
    step: Step,
    step_events: Vec<Event>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} under {:?}{}, step {:?}",
            self.name,
            self.durability,
            if self.write_behind.is_some() {
                " (buffered)"
            } else {
                ""
            },
            self.step
        )
    }
}

/// The segment files of disks already verified, so that the (costly)
/// verification runs once per distinct final disk: many crash points end
/// the same way once recovery has cut what was torn.
#[derive(Default)]
struct Verified {
    seen: std::collections::HashMap<u32, Vec<SegmentFiles>>,
}

/// Segment files by name, with their contents.
type SegmentFiles = Vec<(String, Vec<u8>)>;

impl Verified {
    /// Records the disk's segment files; false if they were seen before.
    fn insert(&mut self, disk: &SimDisk) -> bool {
        let mut names: Vec<String> = disk
            .list(dir())
            .unwrap()
            .into_iter()
            .filter(|n| segment::parse_file_name(n).is_some())
            .collect();
        names.sort();
        let files: SegmentFiles = names
            .into_iter()
            .map(|n| {
                let mut bytes = disk.read_file(&dir().join(&n)).unwrap();
                // The creation time (bytes 80..88) differs from run to run,
                // and with it the header CRC (124..128); the verifier does
                // not use the time, so compare the rest once the header is
                // known to be sound.
                let header: &[u8; HEADER_BYTES as usize] =
                    bytes[..HEADER_BYTES as usize].try_into().unwrap();
                segment::SegmentHeader::decode(header, &n).unwrap();
                bytes[80..88].fill(0);
                bytes[124..128].fill(0);
                (n, bytes)
            })
            .collect();
        let key = files.iter().fold(0, |crc, (name, bytes)| {
            crc32c::crc32c_append(crc32c::crc32c_append(crc, name.as_bytes()), bytes)
        });
        let same = self.seen.entry(key).or_default();
        if same.contains(&files) {
            return false;
        }
        same.push(files);
        true
    }
}

/// What one run of the step left behind.
struct Outcome {
    disk: SimDisk,
    result: Result<Vec<Receipt>, Error>,
    /// The log's own claim, after the step: records below this are durable.
    durable_claim: u64,
    /// Storage operations the step performed.
    ops: u64,
}

impl Case {
    fn new(
        name: &'static str,
        durability: Durability,
        base: &'static Snapshot,
        pre: usize,
        step: Step,
    ) -> Case {
        let n = base.events.len() as u64;
        let pre: Vec<Event> = (0..pre as u64).map(|i| small_event(n + i)).collect();
        let first = n + pre.len() as u64;
        let step_events = match step {
            Step::Single => vec![small_event(first)],
            Step::Batch3 => (first..first + 3).map(small_event).collect(),
            Step::Sync => Vec::new(),
        };
        Case {
            name,
            durability,
            write_behind: None,
            base,
            pre,
            step,
            step_events,
        }
    }

    /// The same case with writes buffered ([`buffered`]).
    fn buffered(mut self) -> Case {
        self.write_behind = buffered();
        self
    }

    fn options(&self) -> Options {
        Options {
            write_behind: self.write_behind,
            ..options(self.durability)
        }
    }

    fn all_events(&self) -> Vec<Event> {
        let mut all = self.base.events.clone();
        all.extend(self.pre.iter().cloned());
        all.extend(self.step_events.iter().cloned());
        all
    }

    /// Restores the base, opens it, appends `pre`, then runs the step with
    /// the storage killed after `kill` operations (never, if `None`).
    fn run(&self, kill: Option<u64>) -> Outcome {
        let disk = self.base.restore();
        let switch = Switch::new();
        let storage = Killable {
            disk: disk.clone(),
            switch: switch.clone(),
        };
        let log = Log::open_in(Arc::new(storage), DIR, self.options()).unwrap();
        for e in &self.pre {
            log.append(e).unwrap();
        }
        switch.arm(kill);
        let result = match self.step {
            Step::Single => log.append(&self.step_events[0]).map(|r| vec![r]),
            Step::Batch3 => log.append_batch(&self.step_events),
            Step::Sync => log.sync().map(|()| Vec::new()),
        };
        let ops = switch.done.load(Ordering::SeqCst);
        let durable_claim = log.state().durable_next_seq;
        // The process dies here: nothing it does from now on reaches the disk.
        switch.kill();
        drop(log);
        Outcome {
            disk,
            result,
            durable_claim,
            ops,
        }
    }

    /// Records that must survive a crash after `outcome`, by what the API
    /// promised (not by what the log claims).
    fn promised_durable(&self, outcome: &Outcome) -> u64 {
        let base = self.base.events.len() as u64;
        let pre = self.pre.len() as u64;
        let all = self.all_events().len() as u64;
        match (&outcome.result, self.durability) {
            (Ok(_), Durability::Always) => all,
            (Ok(_), _) if self.step == Step::Sync => all,
            (_, Durability::Always) => base + pre,
            _ => base,
        }
    }

    fn check_after_crash(
        &self,
        outcome: &Outcome,
        hashes: &[ChainHash],
        verified: &mut Verified,
        at: &str,
    ) {
        let all = self.all_events();
        let promised = self.promised_durable(outcome);
        if outcome.result.is_ok() {
            assert!(
                outcome.durable_claim >= promised,
                "{self:?} {at}: the log claims only {} durable records, {promised} were promised",
                outcome.durable_claim
            );
        }
        let must_have = promised.max(outcome.durable_claim) as usize;
        let disk = &outcome.disk;
        let log = Log::open_in(Arc::new(disk.clone()), DIR, self.options())
            .unwrap_or_else(|e| panic!("{self:?} {at}: open failed: {e}"));
        // Read the records the step may have touched; the chain check of
        // `verify_dir` below and the head check cover the ones before.
        let n = log.state().next_seq as usize;
        let from = (self.base.events.len() - 3) as u64;
        let records: Vec<Record> = log
            .iter_from(from)
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{self:?} {at}: read failed: {e}"));
        assert!(
            n >= must_have,
            "{self:?} {at}: {n} records after recovery, {must_have} were durable"
        );
        assert!(
            n <= all.len(),
            "{self:?} {at}: {n} records, only {} appended",
            all.len()
        );
        assert_eq!(records.len(), n - from as usize, "{self:?} {at}");
        for (j, r) in records.iter().enumerate() {
            let i = from as usize + j;
            assert_eq!(r.seq, i as u64, "{self:?} {at}: gap or reorder");
            assert_eq!(r.hash, hashes[i], "{self:?} {at}: hash of seq {i}");
            assert_eq!(r.event, all[i], "{self:?} {at}: event at seq {i}");
        }
        assert_eq!(log.state().head, hashes[n - 1], "{self:?} {at}");
        // Recovery left an intact log: the torn tail is gone (zeroed), not
        // just skipped.
        self.verify_once(disk, verified, n as u64, hashes[n - 1], at);

        // The chain continues from the recovered head.
        let extra = small_event(999_999);
        let receipt = log
            .append(&extra)
            .unwrap_or_else(|e| panic!("{self:?} {at}: append after recovery: {e}"));
        assert_eq!(receipt.seq, n as u64, "{self:?} {at}");
        assert_eq!(
            receipt.hash,
            hashes[n - 1].next(n as u64, &record_bytes(&extra)),
            "{self:?} {at}"
        );
        log.sync().unwrap();

        // What recovery accepted, and the record after it, are durable and
        // form an intact chain: a second crash loses nothing and leaves no
        // hole or stale bytes behind.
        disk.crash();
        drop(log);
        self.verify_once(disk, verified, n as u64 + 1, receipt.hash, at);
    }

    /// Verifies the disk (unless this very disk was verified already) and
    /// expects an intact log of `records` records ending in `head`.
    fn verify_once(
        &self,
        disk: &SimDisk,
        verified: &mut Verified,
        records: u64,
        head: ChainHash,
        at: &str,
    ) {
        if !verified.insert(disk) {
            return;
        }
        let report = verify(disk);
        assert!(
            report.is_intact() && report.torn_tail.is_none(),
            "{self:?} {at}: {:#?} {:?}",
            report.problems,
            report.torn_tail
        );
        assert_eq!(report.records, records, "{self:?} {at}");
        assert_eq!(report.head, Some(head), "{self:?} {at}");
    }

    /// Kills the step after every storage operation and crashes at every
    /// byte of every write still pending. Returns the crash points checked.
    ///
    /// Crash points that give the same disk as one already checked are
    /// skipped: those before the step (`kill == 0`) when `skip_before` (the
    /// caller checked them with another step from the same state), and, at
    /// each kill point, those that tear a write already pending at the
    /// previous one when nothing was synced in between.
    fn crash_everywhere(&self, skip_before: bool) -> usize {
        let hashes = chain_hashes(&self.base.log_id, &self.all_events());
        let full = self.run(None);
        assert!(full.result.is_ok(), "{self:?}: {:?}", full.result);
        let mut points = 0;
        let mut verified = Verified::default();
        let mut previous: Option<(Vec<usize>, (u64, u64))> = None;
        for kill in 0..=full.ops {
            let probe = self.run(Some(kill));
            let pending = probe.disk.pending_writes();
            let stats = probe.disk.stats();
            let synced = (stats.syncs, stats.dir_syncs);
            let start = match &previous {
                _ if kill == 0 && skip_before => pending.len() + 1,
                Some((p, s)) if *s == synced && pending.starts_with(p) => p.len(),
                _ => 0,
            };
            let mut probe = Some(probe);
            for i in start..=pending.len() {
                let len = pending.get(i).copied().unwrap_or(0);
                for b in 0..=len {
                    let outcome = probe.take().unwrap_or_else(|| self.run(Some(kill)));
                    assert_eq!(outcome.disk.pending_writes(), pending);
                    outcome.disk.crash_at(i, b);
                    let at = format!(
                        "(killed after {kill} ops, crash_at({i}, {b}), pending {pending:?})"
                    );
                    self.check_after_crash(&outcome, &hashes, &mut verified, &at);
                    points += 1;
                }
            }
            previous = Some((pending, synced));
        }
        points
    }
}

/// One segment with three small records and plenty of room.
fn roomy() -> &'static Snapshot {
    static S: OnceLock<Snapshot> = OnceLock::new();
    S.get_or_init(|| base_log(CAPACITY - 3 * small_frame(), 1))
}

/// One segment that, after two small appends, has room for one more small
/// frame plus 40 bytes: a single append fits (leaving less than a frame
/// header), three do not.
fn tight() -> &'static Snapshot {
    static S: OnceLock<Snapshot> = OnceLock::new();
    S.get_or_init(|| base_log(3 * small_frame() + 40, 1))
}

/// One segment that, after two small appends, has no room for another.
fn full() -> &'static Snapshot {
    static S: OnceLock<Snapshot> = OnceLock::new();
    S.get_or_init(|| base_log(3 * small_frame() - 8, 1))
}

/// [`full`] with a sealed segment before it.
fn full2() -> &'static Snapshot {
    static S: OnceLock<Snapshot> = OnceLock::new();
    S.get_or_init(|| base_log(3 * small_frame() - 8, 2))
}

/// [`tight`] with a sealed segment before it.
fn tight2() -> &'static Snapshot {
    static S: OnceLock<Snapshot> = OnceLock::new();
    S.get_or_init(|| base_log(3 * small_frame() + 40, 2))
}

/// Runs every case; `skip_before` skips the crash points before the step
/// (when another test already checks the same states).
fn crash_everywhere(cases: &[Case], skip_before: bool) {
    let mut points = 0;
    for (i, case) in cases.iter().enumerate() {
        // The state before the step is the same for the steps from one base.
        let same_base = i > 0 && std::ptr::eq(cases[i - 1].base, case.base);
        points += case.crash_everywhere(skip_before || same_base);
    }
    assert!(points > 300, "only {points} crash points");
}

fn all_cases(durability: Durability) -> Vec<Case> {
    vec![
        Case::new("roomy", durability, roomy(), 2, Step::Single),
        Case::new("roomy", durability, roomy(), 2, Step::Batch3),
        Case::new("roomy", durability, roomy(), 2, Step::Sync),
        // Seals the segment and starts the next one for one record.
        Case::new("full", durability, full(), 2, Step::Single),
        // Fills the segment to within 40 bytes of its data limit.
        Case::new("tight", durability, tight(), 2, Step::Single),
        // Seals the segment and starts the next one for the batch.
        Case::new("tight", durability, tight(), 2, Step::Batch3),
    ]
}

#[test]
fn crash_at_every_byte_always() {
    // Under Always the two appends before the step are durable.
    crash_everywhere(&all_cases(Durability::Always), false);
}

#[test]
fn crash_at_every_byte_batch() {
    // Two small frames stay unsynced; with the step's frame they reach
    // `max_bytes` and the step syncs. The states before the step, the torn
    // batches and the seal are the same as under None (tested there).
    let batch = Durability::Batch {
        max_delay: Duration::from_secs(3600),
        max_bytes: 3 * small_frame(),
    };
    let cases = [
        Case::new("roomy", batch, roomy(), 2, Step::Single),
        Case::new("full", batch, full(), 2, Step::Single),
    ];
    crash_everywhere(&cases, true);
}

#[test]
fn crash_at_every_byte_none() {
    crash_everywhere(&all_cases(Durability::None), false);
}

/// The relaxed policies with write-behind: the appends before the step and
/// the step's own stay in the write buffer until the step syncs or seals,
/// which then writes them all at once.
#[test]
fn crash_at_every_byte_buffered() {
    let batch = Durability::Batch {
        max_delay: Duration::from_secs(3600),
        max_bytes: 3 * small_frame(),
    };
    let mut cases: Vec<Case> = all_cases(Durability::None)
        .into_iter()
        .map(Case::buffered)
        .collect();
    cases.push(Case::new("roomy", batch, roomy(), 2, Step::Single).buffered());
    cases.push(Case::new("full", batch, full(), 2, Step::Single).buffered());
    crash_everywhere(&cases, false);
}

// ---------------------------------------------------------------------------
// Corruption in the middle of the active segment is refused.

/// A one-segment log of `n` small records on a fresh disk; returns the
/// receipts and the frame offsets.
fn small_log(n: u64, durability: Durability) -> (SimDisk, Vec<Receipt>, Vec<u64>) {
    let disk = SimDisk::new();
    let log = Log::create_in(Arc::new(disk.clone()), DIR, options(durability)).unwrap();
    let mut receipts = Vec::new();
    let mut offsets = Vec::new();
    let mut at = HEADER_BYTES;
    for i in 0..n {
        let e = small_event(i);
        offsets.push(at);
        at += frame_bytes(&e);
        receipts.push(log.append(&e).unwrap());
    }
    log.close().unwrap();
    (disk, receipts, offsets)
}

fn seg_path(base: u64) -> PathBuf {
    dir().join(segment::file_name(base))
}

fn assert_refused(disk: &SimDisk, bad_offset: u64, what: &str) {
    let path = seg_path(0);
    let before = disk.read_file(&path).unwrap();
    match Log::open_in(Arc::new(disk.clone()), DIR, options(Durability::Always)) {
        Err(Error::Corrupted {
            file,
            offset,
            reason,
        }) => {
            assert_eq!(file, segment::file_name(0), "{what}");
            assert_eq!(offset, bad_offset, "{what}");
            assert!(
                reason.contains(&format!("chainlog recover --cut-at {bad_offset}")),
                "{what}: {reason}"
            );
        }
        Err(e) => panic!("{what}: expected Corrupted, got {e}"),
        Ok(_) => panic!("{what}: a damaged segment was opened for writing"),
    }
    assert!(
        disk.read_file(&path).unwrap() == before,
        "{what}: open changed the file"
    );
    // A reader reads the valid prefix and says where it stops.
    let opts = Options {
        read_only: true,
        ..options(Durability::Always)
    };
    let log = Log::open_in(Arc::new(disk.clone()), DIR, opts).unwrap();
    let damage = log
        .damage()
        .unwrap_or_else(|| panic!("{what}: no damage noted"));
    assert_eq!(
        (damage.segment.as_str(), damage.offset),
        (segment::file_name(0).as_str(), bad_offset),
        "{what}"
    );
    let records = read_all(&log);
    assert!(
        records.iter().enumerate().all(|(i, r)| r.seq == i as u64),
        "{what}"
    );
    drop(log);
    assert!(
        disk.read_file(&path).unwrap() == before,
        "{what}: a read-only open changed the file"
    );
    // The verifier agrees on where.
    let report = verify(disk);
    let first = &report.problems[0];
    assert_eq!(first.kind, ProblemKind::FrameCorrupt, "{what}: {first:?}");
    assert_eq!(first.offset, bad_offset, "{what}: {first:?}");
}

#[test]
fn corruption_in_the_middle_is_refused() {
    let (disk, _, offsets) = small_log(10, Durability::Always);
    // One byte of the record of the third frame.
    disk.tamper(&seg_path(0), offsets[2] + 60, b"#").unwrap();
    assert_refused(&disk, offsets[2], "damaged byte");

    // A damaged length field.
    let (disk, _, offsets) = small_log(10, Durability::Always);
    disk.tamper(&seg_path(0), offsets[4] + 5, &[0x7f]).unwrap();
    assert_refused(&disk, offsets[4], "damaged length");

    // A zeroed frame: it looks like the end of the data, but frames follow.
    let (disk, _, offsets) = small_log(10, Durability::Always);
    let zeros = vec![0; (offsets[6] - offsets[5]) as usize];
    disk.tamper(&seg_path(0), offsets[5], &zeros).unwrap();
    assert_refused(&disk, offsets[5], "zeroed frame");

    // Only the frame header zeroed.
    let (disk, _, offsets) = small_log(10, Durability::Always);
    disk.tamper(&seg_path(0), offsets[1], &[0; 48]).unwrap();
    assert_refused(&disk, offsets[1], "zeroed frame header");
}

#[test]
fn corruption_in_the_middle_is_refused_even_with_a_torn_seal() {
    // A damaged trailer on the newest segment reads as a seal torn by a
    // crash; with a damaged frame before valid ones the open must still
    // refuse, and change nothing (not even the trailer).
    let (disk, _, offsets) = small_log(10, Durability::Always);
    let trailer_at = data_end_limit(MIN_SEGMENT_BYTES);
    disk.tamper(&seg_path(0), trailer_at, b"CHLOGEND\x01")
        .unwrap();
    disk.tamper(&seg_path(0), offsets[3] + 60, b"#").unwrap();
    let path = seg_path(0);
    let before = disk.read_file(&path).unwrap();
    let err = Log::open_in(Arc::new(disk.clone()), DIR, options(Durability::Always)).unwrap_err();
    assert!(
        matches!(err, Error::Corrupted { offset, .. } if offset == offsets[3]),
        "{err}"
    );
    assert!(
        disk.read_file(&path).unwrap() == before,
        "open changed the file"
    );
}

// ---------------------------------------------------------------------------
// A torn tail is cut.

fn assert_tail_cut(
    disk: &SimDisk,
    receipts: &[Receipt],
    garbage_at: u64,
    garbage_len: u64,
    what: &str,
) {
    let report = verify(disk);
    assert!(report.is_intact(), "{what}: {:#?}", report.problems);
    let torn = report
        .torn_tail
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: no torn tail reported"));
    assert_eq!(torn.segment, segment::file_name(0), "{what}");
    let log = Log::open_in(Arc::new(disk.clone()), DIR, options(Durability::Always)).unwrap();
    let records = read_all(&log);
    assert_eq!(records.len(), receipts.len(), "{what}");
    for (r, want) in records.iter().zip(receipts) {
        assert_eq!((r.seq, r.hash), (want.seq, want.hash), "{what}");
    }
    let image = disk.read_file(&seg_path(0)).unwrap();
    let range = garbage_at as usize..(garbage_at + garbage_len) as usize;
    assert!(
        image[range].iter().all(|&b| b == 0),
        "{what}: the torn tail was not zeroed"
    );
    let n = receipts.len() as u64;
    let r = log.append(&small_event(n)).unwrap();
    assert_eq!(r.seq, n, "{what}");
    assert_eq!(
        r.hash,
        receipts[receipts.len() - 1]
            .hash
            .next(n, &record_bytes(&small_event(n)))
    );
    drop(log);
    disk.crash();
    let log = Log::open_in(Arc::new(disk.clone()), DIR, options(Durability::Always)).unwrap();
    assert_eq!(read_all(&log).len() as u64, n + 1, "{what}");
    drop(log);
    let report = verify(disk);
    assert!(
        report.is_intact() && report.torn_tail.is_none(),
        "{what}: {report:#?}"
    );
}

#[test]
fn torn_tail_is_cut() {
    let frame = small_frame();
    // The first half of a real frame.
    let (disk, receipts, offsets) = small_log(6, Durability::Always);
    let end = offsets[5] + frame;
    let image = disk.read_file(&seg_path(0)).unwrap();
    let mut half = image[offsets[5] as usize..(offsets[5] + frame / 2) as usize].to_vec();
    half[8..16].copy_from_slice(&6u64.to_le_bytes()); // what the write of seq 6 began
    disk.tamper(&seg_path(0), end, &half).unwrap();
    assert_tail_cut(&disk, &receipts, end, frame / 2, "half a frame");

    // A whole frame with a bad CRC.
    let (disk, receipts, offsets) = small_log(6, Durability::Always);
    let end = offsets[5] + frame;
    let mut copy =
        disk.read_file(&seg_path(0)).unwrap()[offsets[5] as usize..end as usize].to_vec();
    copy[8] = 6; // seq 6, the CRC no longer matches
    disk.tamper(&seg_path(0), end, &copy).unwrap();
    assert_tail_cut(&disk, &receipts, end, frame, "frame with a bad CRC");

    // Random garbage, and a stray byte far after the data.
    let (disk, receipts, offsets) = small_log(6, Durability::Always);
    let end = offsets[5] + frame;
    // (A seq field of neither zeros nor seq 6 would be an overwritten
    // record's remains, not a crash: see tests/damage.rs.)
    let mut garbage: Vec<u8> = (0..300u32).map(|i| (i * 7919 % 251) as u8 | 1).collect();
    garbage[8..16].copy_from_slice(&6u64.to_le_bytes());
    disk.tamper(&seg_path(0), end, &garbage).unwrap();
    disk.tamper(&seg_path(0), end + 5000, &[0xee]).unwrap();
    assert_tail_cut(&disk, &receipts, end, 5001, "garbage");

    // A stray byte in the last 40 bytes before the data limit, where no
    // frame header fits.
    let (disk, receipts, _) = small_log(6, Durability::Always);
    let limit = data_end_limit(MIN_SEGMENT_BYTES);
    disk.tamper(&seg_path(0), limit - 3, &[0x5a]).unwrap();
    assert_tail_cut(
        &disk,
        &receipts,
        limit - 40,
        40,
        "stray byte just before the data limit",
    );
}

#[test]
fn torn_tail_of_an_unsynced_write_is_cut() {
    // The same through the engine: an unsynced batch torn by power loss.
    let (disk, receipts, _) = small_log(4, Durability::None);
    let log = Log::open_in(Arc::new(disk.clone()), DIR, options(Durability::None)).unwrap();
    let batch: Vec<Event> = (4..9).map(small_event).collect();
    log.append_batch(&batch).unwrap();
    assert_eq!(disk.pending_writes().len(), 1);
    let torn = small_frame() as usize * 2 + 30;
    disk.crash_at(0, torn);
    drop(log);
    let log = Log::open_in(Arc::new(disk.clone()), DIR, options(Durability::None)).unwrap();
    let records = read_all(&log);
    assert_eq!(
        records.len(),
        4 + 2,
        "two whole frames of the batch survive"
    );
    assert_eq!(records[3].hash, receipts[3].hash);
    let r = log.append(&small_event(6)).unwrap();
    assert_eq!(r.seq, 6);
    log.close().unwrap();
    assert!(verify(&disk).is_intact());
}

// ---------------------------------------------------------------------------
// Failing fdatasync.

#[test]
fn failed_sync_poisons_and_reopen_recovers_to_the_last_durable_record() {
    let (disk, mut receipts, _) = small_log(5, Durability::Always);
    let log = Log::open_in(Arc::new(disk.clone()), DIR, options(Durability::Always)).unwrap();
    disk.fail_next_syncs(1);
    let err = log.append(&small_event(5)).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    let err = log.append(&small_event(5)).unwrap_err();
    assert!(matches!(err, Error::Poisoned(_)), "{err}");
    let err = log
        .append_batch(&[small_event(5), small_event(6)])
        .unwrap_err();
    assert!(matches!(err, Error::Poisoned(_)), "{err}");
    // Readers never saw the failed record.
    assert_eq!(read_all(&log).len(), 5);
    drop(log);

    // Reopen without a crash: the page cache may still hold the failed
    // record, but it is not durable and must not come back.
    let log = Log::open_in(Arc::new(disk.clone()), DIR, options(Durability::Always)).unwrap();
    let records = read_all(&log);
    assert_eq!(records.len(), 5, "the record whose sync failed came back");
    assert_eq!(log.state().head, receipts[4].hash);
    for i in 5..8 {
        receipts.push(log.append(&small_event(100 + i)).unwrap());
    }
    assert_eq!(receipts[5].seq, 5);
    drop(log);
    disk.crash();
    let log = Log::open_in(Arc::new(disk.clone()), DIR, options(Durability::Always)).unwrap();
    let records = read_all(&log);
    assert_eq!(
        records.len(),
        receipts.len(),
        "an acknowledged record was lost"
    );
    for (r, want) in records.iter().zip(&receipts) {
        assert_eq!((r.seq, r.hash), (want.seq, want.hash));
    }
    drop(log);
    let report = verify(&disk);
    assert!(report.is_intact(), "{:#?}", report.problems);
}

#[test]
fn failed_sync_during_seal_poisons_and_recovers() {
    for durability in [Durability::Always, Durability::None] {
        let base = full2();
        let disk = base.restore();
        let log = Log::open_in(Arc::new(disk.clone()), DIR, options(durability)).unwrap();
        let n = base.events.len() as u64;
        let mut events = base.events.clone();
        // Two unsynced appends under None; the seal's sync is the one to fail.
        for i in 0..2 {
            let e = small_event(n + i);
            log.append(&e).unwrap();
            events.push(e);
        }
        let durable = log.state().durable_next_seq;
        disk.fail_next_syncs(1);
        let err = log.append(&small_event(n + 2)).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{durability:?}: {err}");
        assert!(matches!(
            log.append(&small_event(n + 2)).unwrap_err(),
            Error::Poisoned(_)
        ));
        assert_eq!(
            log.state().segments,
            2,
            "{durability:?}: no segment was added"
        );
        drop(log);

        let log = Log::open_in(Arc::new(disk.clone()), DIR, options(durability)).unwrap();
        let records = read_all(&log);
        // Under None the two records whose sync failed are not durable:
        // recovery goes back to the last durable record.
        assert_eq!(records.len() as u64, durable, "{durability:?}");
        let hashes = chain_hashes(&base.log_id, &events);
        assert_eq!(log.state().head, hashes[durable as usize - 1]);
        let mut acked = durable;
        for i in 0..3 {
            let r = log.append(&small_event(500 + i)).unwrap();
            assert_eq!(r.seq, acked);
            acked += 1;
        }
        log.sync().unwrap();
        drop(log);
        disk.crash();
        let log = Log::open_in(Arc::new(disk.clone()), DIR, options(durability)).unwrap();
        assert_eq!(read_all(&log).len() as u64, acked, "{durability:?}");
        drop(log);
        let report = verify(&disk);
        assert!(report.is_intact(), "{durability:?}: {:#?}", report.problems);
        assert_eq!(report.segments, 3, "{durability:?}");
    }
}

/// A [`SimDisk`] whose first `sync_data` after [`Gate::arm`] blocks (after
/// doing its work) until released, and whose next one reports when it has
/// returned: a way to put a seal between a failing sync and its handling.
#[derive(Debug, Clone)]
struct Gated {
    disk: SimDisk,
    gate: Arc<Gate>,
}

#[derive(Debug, Default)]
struct Gate {
    /// 0: off; 1: the next sync blocks; 2: the next sync reports; 3: done.
    state: std::sync::Mutex<u8>,
    changed: std::sync::Condvar,
    blocked: std::sync::atomic::AtomicBool,
    released: std::sync::atomic::AtomicBool,
    second_done: std::sync::atomic::AtomicBool,
    /// The next sync panics (a bug's stand-in).
    panic_next: std::sync::atomic::AtomicBool,
    /// How long each sync takes at least (a real disk's), none if zero.
    sync_delay: Duration,
}

impl Gate {
    fn arm(&self) {
        *self.state.lock().unwrap() = 1;
    }

    fn wait_for(&self, flag: &std::sync::atomic::AtomicBool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut state = self.state.lock().unwrap();
        while !flag.load(Ordering::SeqCst) {
            assert!(std::time::Instant::now() < deadline, "gate timed out");
            state = self
                .changed
                .wait_timeout(state, Duration::from_millis(10))
                .unwrap()
                .0;
        }
    }

    fn release(&self) {
        let _state = self.state.lock().unwrap();
        self.released.store(true, Ordering::SeqCst);
        self.changed.notify_all();
    }

    fn around_sync(&self, sync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        if self.panic_next.swap(false, Ordering::SeqCst) {
            panic!("a sync panics (injected)");
        }
        std::thread::sleep(self.sync_delay);
        let step = {
            let mut state = self.state.lock().unwrap();
            let step = *state;
            if step == 1 || step == 2 {
                *state += 1;
            }
            step
        };
        let result = sync();
        let flag = match step {
            1 => &self.blocked,
            2 => &self.second_done,
            _ => return result,
        };
        let mut state = self.state.lock().unwrap();
        flag.store(true, Ordering::SeqCst);
        self.changed.notify_all();
        if step == 1 {
            while !self.released.load(Ordering::SeqCst) {
                state = self.changed.wait(state).unwrap();
            }
        }
        result
    }
}

#[derive(Debug)]
struct GatedFile {
    file: Arc<dyn StorageFile>,
    gate: Arc<Gate>,
}

impl StorageFile for GatedFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.gate.around_sync(|| self.file.sync_data())
    }
    fn size(&self) -> io::Result<u64> {
        self.file.size()
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        self.file.allocate(len)
    }
}

impl Storage for Gated {
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
        if !is_segment_file(path) {
            return Err(refused());
        }
        let file = self.disk.create_new(path)?;
        Ok(Arc::new(GatedFile {
            file,
            gate: self.gate.clone(),
        }))
    }
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = self.disk.open(path, write)?;
        Ok(Arc::new(GatedFile {
            file,
            gate: self.gate.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.disk.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.disk.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.disk.sync_dir(dir)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        self.disk.lock_dir(dir)
    }
}

#[test]
fn failed_sync_racing_a_seal_never_builds_on_a_hole() {
    // One appender's fdatasync fails (the kernel drops its record's dirty
    // pages). Before that appender has handled the failure, another one
    // seals the segment for a record that does not fit: the seal's own
    // fdatasync succeeds, as a second fsync after a failed one does. The
    // seal must not then declare the lost record durable and build the next
    // segment on top of it.
    let base = full2();
    let disk = base.restore();
    let gate = Arc::new(Gate::default());
    let storage = Gated {
        disk: disk.clone(),
        gate: gate.clone(),
    };
    let log = Arc::new(Log::open_in(Arc::new(storage), DIR, options(Durability::Always)).unwrap());
    let n = base.events.len() as u64;
    log.append(&small_event(n)).unwrap();
    let durable = log.state().durable_next_seq;
    assert_eq!(durable, n + 1);

    gate.arm();
    disk.fail_next_syncs(1);
    let first = {
        let log = log.clone();
        std::thread::spawn(move || log.append(&small_event(n + 1)))
    };
    gate.wait_for(&gate.blocked);
    // The segment is full: this append seals it and starts the next one.
    let second = {
        let log = log.clone();
        std::thread::spawn(move || log.append(&small_event(n + 2)))
    };
    gate.wait_for(&gate.second_done);
    gate.release();
    let first = first.join().unwrap();
    let second = second.join().unwrap();
    assert!(first.is_err(), "the append whose sync failed succeeded");
    assert!(
        second.is_err(),
        "an append after a failed sync succeeded: {second:?}"
    );
    let claimed = log.state().durable_next_seq;
    drop(log);

    disk.crash();
    let log = Log::open_in(Arc::new(disk.clone()), DIR, options(Durability::Always)).unwrap();
    let records: Vec<Record> = log
        .iter_from(n - 1)
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("the log has a hole after the crash: {e}"));
    let next = log.state().next_seq;
    assert!(
        next >= claimed,
        "{next} records, {claimed} were claimed durable"
    );
    assert_eq!(records.len() as u64, next - (n - 1));
    let all = chain_hashes(&base.log_id, &{
        let mut all = base.events.clone();
        all.extend((n..n + 3).map(small_event));
        all
    });
    for r in &records {
        assert_eq!(r.hash, all[r.seq as usize], "seq {}", r.seq);
    }
    log.append(&small_event(n + 10)).unwrap();
    drop(log);
    let report = verify(&disk);
    assert!(report.is_intact(), "{:#?}", report.problems);
}

#[test]
fn sealed_newest_segment_missing_frames_is_refused_until_cut() {
    // A trailer on disk without the last frame it describes, and no
    // segment after it: the newest segment says it is sealed, but its
    // frames end earlier.
    let base = full2();
    let disk = base.restore();
    let log = Log::open_in(Arc::new(disk.clone()), DIR, options(Durability::Always)).unwrap();
    let n = base.events.len() as u64;
    let mut receipts = Vec::new();
    for i in 0..3 {
        receipts.push(log.append(&small_event(n + i)).unwrap());
    }
    assert_eq!(log.state().segments, 3, "the third append rolled");
    drop(log);
    let newest = seg_path(n + 2);
    disk.remove(&newest).unwrap();
    disk.sync_dir(dir()).unwrap();
    // The last frame of the sealed segment never reached the disk.
    let sealed = base.files[1].0.clone();
    let image = disk.read_file(&sealed).unwrap();
    let end = {
        let trailer: &[u8; segment::TRAILER_BYTES] = image
            [data_end_limit(MIN_SEGMENT_BYTES) as usize..][..segment::TRAILER_BYTES]
            .try_into()
            .unwrap();
        segment::SegmentTrailer::decode(trailer, "x", 0)
            .unwrap()
            .unwrap()
            .data_end
    };
    disk.tamper(
        &sealed,
        end - small_frame(),
        &vec![0; small_frame() as usize],
    )
    .unwrap();

    // The engine syncs the frames before it writes a seal, so a whole seal
    // ahead of its frames is no crash: verify and recovery agree it is
    // corruption, and the open changes nothing.
    let before = disk.read_file(&sealed).unwrap();
    let report = verify(&disk);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::TrailerMismatch),
        "{report:#?}"
    );
    let frames_end = end - small_frame();
    match Log::open_in(Arc::new(disk.clone()), DIR, options(Durability::Always)) {
        Err(Error::Corrupted { reason, .. }) => assert!(
            reason.contains(&format!("--cut-at {frames_end}")),
            "{reason}"
        ),
        Err(e) => panic!("expected Corrupted, got {e}"),
        Ok(_) => panic!("a seal ahead of its frames was cut without the operator"),
    }
    assert!(
        disk.read_file(&sealed).unwrap() == before,
        "open changed the file"
    );

    // The operator's recorded cut at the end of the frames gets it going:
    // the record whose frame is gone is gone, and the cut record takes its seq.
    let plan = cut::plan_cut(&disk, dir(), frames_end).unwrap();
    assert!(plan.trailer && plan.dropped.is_empty() && plan.cut_bytes() == 0);
    let done = cut::apply_cut(&disk, dir(), &plan).unwrap();
    assert_eq!(done.seq, n + 1);
    let log = Log::open_in(Arc::new(disk.clone()), DIR, options(Durability::Always)).unwrap();
    assert_eq!(log.state().next_seq, n + 2);
    assert_eq!(log.state().head, done.hash);
    log.append(&small_event(n + 7)).unwrap(); // rolls
    drop(log);
    disk.crash();
    let report = verify(&disk);
    assert!(report.is_intact(), "{:#?}", report.problems);
    assert_eq!(report.records, n + 3);
}

// ---------------------------------------------------------------------------
// ENOSPC.

#[test]
fn disk_full_mid_batch() {
    let (disk, receipts, _) = small_log(5, Durability::Always);
    let log = Log::open_in(Arc::new(disk.clone()), DIR, options(Durability::Always)).unwrap();
    let batch: Vec<Event> = (5..15).map(small_event).collect();
    // Room for three frames and part of the fourth.
    disk.set_write_budget(Some(small_frame() * 3 + 20));
    let err = log.append_batch(&batch).unwrap_err();
    match &err {
        Error::Io { source, .. } => assert_eq!(source.raw_os_error(), Some(28), "{err}"),
        other => panic!("expected an I/O error, got {other}"),
    }
    // Readers see nothing of the failed batch.
    assert_eq!(read_all(&log).len(), 5);
    assert_eq!(log.state().next_seq, 5);

    disk.set_write_budget(None);
    // The partial write could not be undone (the disk was still full), so
    // the handle refuses writes until reopened.
    let err = log.append(&small_event(5)).unwrap_err();
    assert!(matches!(err, Error::Poisoned(_)), "{err}");
    drop(log);

    let log = Log::open_in(Arc::new(disk.clone()), DIR, options(Durability::Always)).unwrap();
    let records = read_all(&log);
    // No torn record: what is there is a prefix of what was appended, and
    // the acknowledged records are all there. The three whole frames that
    // reached the file before it filled may survive (the engine could not
    // zero them: the disk was still full), as after a crash mid-batch; the
    // torn fourth never does.
    let mut all: Vec<Event> = (0..5).map(small_event).collect();
    all.extend(batch.iter().cloned());
    assert!(
        records.len() == 5 || records.len() == 8,
        "{}",
        records.len()
    );
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as u64);
        assert_eq!(r.event, all[i]);
    }
    assert_eq!(records[4].hash, receipts[4].hash);
    let n = records.len() as u64;
    let r = log.append(&small_event(50)).unwrap();
    assert_eq!(r.seq, n);
    drop(log);
    disk.crash();
    let log = Log::open_in(Arc::new(disk.clone()), DIR, options(Durability::Always)).unwrap();
    assert_eq!(read_all(&log).len() as u64, n + 1);
    drop(log);
    let report = verify(&disk);
    assert!(
        report.is_intact() && report.torn_tail.is_none(),
        "{report:#?}"
    );
}

#[test]
fn disk_full_while_rolling() {
    // The next append needs a seal and a new segment, and the disk cannot
    // take them: the trailer does not fit (0), is torn (50), or the trailer
    // fits and the new segment's header does not (96 + 60).
    for (budget, poisoned) in [(0, true), (50, true), (96 + 60, false)] {
        let base = full2();
        let disk = base.restore();
        let log = Log::open_in(Arc::new(disk.clone()), DIR, options(Durability::Always)).unwrap();
        let n = base.events.len() as u64;
        log.append(&small_event(n)).unwrap();
        log.append(&small_event(n + 1)).unwrap();
        disk.set_write_budget(Some(budget));
        let err = log.append(&small_event(n + 2)).unwrap_err();
        assert!(
            matches!(&err, Error::Io { source, .. } if source.raw_os_error() == Some(28)),
            "budget {budget}: {err}"
        );
        disk.set_write_budget(None);
        assert_eq!(log.state().next_seq, n + 2, "budget {budget}");
        assert_eq!(read_all(&log).len() as u64, n + 2, "budget {budget}");
        // A failed seal leaves the state of the segment unknown: the handle
        // is poisoned. A failed segment creation changes nothing in the log:
        // the next append simply tries again.
        match log.append(&small_event(n + 2)) {
            Ok(r) => {
                assert!(!poisoned, "budget {budget}: expected a poisoned handle");
                assert_eq!(r.seq, n + 2);
            }
            Err(Error::Poisoned(_)) => assert!(poisoned, "budget {budget}: poisoned"),
            Err(e) => panic!("budget {budget}: unexpected {e}"),
        }
        drop(log);
        let log = Log::open_in(Arc::new(disk.clone()), DIR, options(Durability::Always)).unwrap();
        let next = log.state().next_seq;
        assert_eq!(
            next,
            if poisoned { n + 2 } else { n + 3 },
            "budget {budget}"
        );
        log.append(&small_event(n + 3)).unwrap();
        drop(log);
        disk.crash();
        let report = verify(&disk);
        assert!(
            report.is_intact(),
            "budget {budget}: {:#?}",
            report.problems
        );
        assert_eq!(report.records, next + 1, "budget {budget}");
        assert_eq!(report.segments, 3, "budget {budget}");
    }
}

// ---------------------------------------------------------------------------
// Short reads.

#[test]
fn short_reads_give_the_same_results() {
    let base = tight2();
    let disk = base.restore();
    // Leave a torn tail for recovery to find through short reads too.
    let log = Log::open_in(Arc::new(disk.clone()), DIR, options(Durability::None)).unwrap();
    let n = base.events.len() as u64;
    log.append_batch(&[small_event(n), small_event(n + 1)])
        .unwrap();
    disk.crash_at(0, small_frame() as usize + 9);
    drop(log);

    let expected_report = verify(&disk);
    disk.set_short_reads(true);
    let report = verify(&disk);
    assert_eq!(report, expected_report);
    assert!(report.torn_tail.is_some());
    let log = Log::open_in(Arc::new(disk.clone()), DIR, options(Durability::Always)).unwrap();
    let records = read_all(&log);
    assert_eq!(records.len() as u64, n + 1);
    let hashes = chain_hashes(&base.log_id, &base.events);
    for (r, h) in records.iter().zip(&hashes) {
        assert_eq!(r.hash, *h);
    }
    let from_middle: Vec<u64> = log.iter_from(n - 2).map(|r| r.unwrap().seq).collect();
    assert_eq!(from_middle, vec![n - 2, n - 1, n]);
    log.append(&small_event(n + 1)).unwrap();
    drop(log);
    let report = verify(&disk);
    assert!(
        report.is_intact() && report.torn_tail.is_none(),
        "{report:#?}"
    );
    disk.set_short_reads(false);
    assert_eq!(verify(&disk), report);
}

// ---------------------------------------------------------------------------
// A segment that disappears.

/// Runs `f` on another thread and fails the test if it takes too long
/// (a reader looping forever would otherwise hang the suite).
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what}: did not finish (a reader loops?)"))
}

#[test]
fn vanished_segment_is_reported_and_reads_fail_cleanly() {
    // Three segments; remove the middle one.
    let disk = SimDisk::new();
    let log = Log::create_in(Arc::new(disk.clone()), DIR, options(Durability::Always)).unwrap();
    let mut events = Vec::new();
    let mut used = 0;
    for _ in 0..3 {
        let e = small_event(events.len() as u64);
        used += frame_bytes(&e);
        log.append(&e).unwrap();
        events.push(e);
    }
    fill_to_room(&log, &mut events, &mut used, 0);
    let second_base = events.len() as u64;
    used = 0;
    for _ in 0..3 {
        let e = small_event(events.len() as u64);
        used += frame_bytes(&e);
        log.append(&e).unwrap();
        events.push(e);
    }
    fill_to_room(&log, &mut events, &mut used, 0);
    let third_base = events.len() as u64;
    for _ in 0..3 {
        let e = small_event(events.len() as u64);
        log.append(&e).unwrap();
        events.push(e);
    }
    assert_eq!(log.state().segments, 3);

    // Removed while the log is open.
    disk.remove(&seg_path(second_base)).unwrap();
    let report = verify(&disk);
    let missing = report
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::MissingRecords)
        .unwrap_or_else(|| panic!("{:#?}", report.problems));
    assert_eq!(missing.seq, Some(second_base));
    assert_eq!(missing.segment, segment::file_name(third_base));
    let link = report
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::LinkMismatch)
        .unwrap_or_else(|| panic!("{:#?}", report.problems));
    assert_eq!(link.seq, Some(third_base));
    let err = log.iter_from(second_base + 1).find_map(Result::err);
    assert!(err.is_some(), "reading a removed segment did not fail");
    assert!(log.iter_from(0).any(|r| r.is_err()));
    // Records on either side are still readable.
    assert_eq!(
        log.iter_from(third_base).next().unwrap().unwrap().seq,
        third_base
    );
    drop(log);

    // Removed before the log is opened.
    let log =
        Arc::new(Log::open_in(Arc::new(disk.clone()), DIR, options(Durability::Always)).unwrap());
    for from in [0, second_base, second_base + 1] {
        let log = log.clone();
        let (records, err) = within("iter_from over a removed segment", move || {
            let mut records = 0u64;
            let mut err = None;
            for r in log.iter_from(from) {
                match r {
                    Ok(_) => records += 1,
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
            (records, err)
        });
        let err = err.unwrap_or_else(|| panic!("from {from}: no error after {records} records"));
        assert!(
            err.is_corruption() || matches!(err, Error::Io { .. }),
            "{err}"
        );
        assert_eq!(records, second_base.saturating_sub(from), "from {from}");
    }
    assert_eq!(log.iter_from(third_base).count() as u64, 3);
}

// ---------------------------------------------------------------------------
// Concurrent appenders.

#[test]
fn concurrent_appenders_lose_nothing_on_power_loss() {
    let disk = SimDisk::new();
    let log =
        Arc::new(Log::create_in(Arc::new(disk.clone()), DIR, options(Durability::Always)).unwrap());
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for i in 0..250u64 {
                    let id = t * 1000 + i;
                    let r = if i % 10 == 9 {
                        log.append_batch(&[small_event(id), small_event(id + 500)])
                            .unwrap()
                    } else {
                        vec![log.append(&small_event(id)).unwrap()]
                    };
                    got.extend(r);
                }
                got
            })
        })
        .collect();
    let mut receipts: Vec<Receipt> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    // Power loss while the log is still open: nothing unsynced survives.
    disk.crash();
    drop(log);
    receipts.sort_by_key(|r| r.seq);
    assert_eq!(
        receipts.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (0..receipts.len() as u64).collect::<Vec<_>>()
    );
    let log = Log::open_in(Arc::new(disk.clone()), DIR, options(Durability::Always)).unwrap();
    assert!(log.state().segments >= 2, "the test should cross a segment");
    let records = read_all(&log);
    assert_eq!(records.len(), receipts.len());
    for (r, want) in records.iter().zip(&receipts) {
        assert_eq!((r.seq, r.hash), (want.seq, want.hash));
    }
    drop(log);
    let report = verify(&disk);
    assert!(report.is_intact(), "{:#?}", report.problems);
}

#[test]
fn a_failed_sync_wakes_every_waiting_appender() {
    // Sixteen appenders under Always, most of them parked waiting for a
    // sync; one fdatasync fails.
    failed_sync_reaches_every_appender(16, Duration::ZERO);
}

#[test]
fn a_failed_sync_reaches_every_appender_waiting_by_yielding() {
    // Enough appenders that those waiting yield (four a core wait) and
    // syncs slow enough that they yield for a while.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    failed_sync_reaches_every_appender(4 * cores + 8, Duration::from_micros(300));
}

#[test]
fn an_appender_reads_its_record_as_soon_as_append_returns() {
    // Under Always a record becomes readable when it is durable; an appender
    // that waited by yielding returns the moment the sync is published and
    // must find its record readable then, as a woken one does.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let storage = Gated {
        disk: SimDisk::new(),
        gate: Arc::new(Gate {
            sync_delay: Duration::from_micros(300),
            ..Gate::default()
        }),
    };
    let log =
        Arc::new(Log::create_in(Arc::new(storage), DIR, options(Durability::Always)).unwrap());
    let threads: Vec<_> = (0..4 * cores + 8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..400u64 {
                    let receipt = log.append(&small_event(t * 1000 + i)).unwrap();
                    let read = log.iter_from(receipt.seq).next();
                    match read {
                        Some(Ok(record)) => assert_eq!(record.hash, receipt.hash),
                        other => panic!("seq {} unread after its receipt: {other:?}", receipt.seq),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// `appenders` threads append under Always, syncs taking `sync_delay`; one
/// fdatasync fails. Every appender must return (none may wait for a wake-up
/// that never comes), those after the failure with an error, and every
/// acknowledged record must survive a power loss.
fn failed_sync_reaches_every_appender(appenders: u64, sync_delay: Duration) {
    for round in 0..10u64 {
        let disk = SimDisk::new();
        let storage = Gated {
            disk: disk.clone(),
            gate: Arc::new(Gate {
                sync_delay,
                ..Gate::default()
            }),
        };
        let log =
            Arc::new(Log::create_in(Arc::new(storage), DIR, options(Durability::Always)).unwrap());
        let start = Arc::new(std::sync::Barrier::new(appenders as usize + 1));
        let threads: Vec<_> = (0..appenders)
            .map(|t| {
                let (log, start) = (log.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    // Until the failure stops them (the cap only guards
                    // against a failure that never arrives).
                    let mut acked = Vec::new();
                    for i in 0..100_000u64 {
                        match log.append(&small_event(t * 100_000 + i)) {
                            Ok(r) => acked.push(r),
                            Err(Error::Io { .. } | Error::Poisoned(_)) => return acked,
                            Err(e) => panic!("unexpected {e}"),
                        }
                    }
                    panic!("the failed sync never reached appender {t}");
                })
            })
            .collect();
        start.wait();
        std::thread::sleep(Duration::from_millis(round));
        disk.fail_next_syncs(1);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let acked: Vec<Receipt> = threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect();
            let _ = tx.send(acked);
        });
        let mut acked = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("round {round}: appenders still waiting a minute later"));
        assert!(
            matches!(log.append(&small_event(999_999)), Err(Error::Poisoned(_))),
            "round {round}: the failed sync did not poison the handle"
        );
        disk.crash();
        drop(log);
        acked.sort_by_key(|r| r.seq);
        let log = Log::open_in(Arc::new(disk.clone()), DIR, options(Durability::Always)).unwrap();
        let records = read_all(&log);
        assert!(
            records.len() >= acked.len(),
            "round {round}: acknowledged records lost"
        );
        for r in &acked {
            assert_eq!(
                records[r.seq as usize].hash, r.hash,
                "round {round}: seq {}",
                r.seq
            );
        }
    }
}

/// Under `Always` the engine writes zeros just past its frames, so that a
/// group commit's small sync has no preallocated extents to mark written;
/// `verify` checks that no range the simulated disk was asked to zero held
/// data. The relaxed policies zero nothing. Appenders on four threads,
/// across a roll: every record reads back and the log verifies.
#[test]
fn zeros_go_ahead_of_the_frames_under_always_and_never_over_them() {
    for (durability, zeroes) in [(Durability::Always, true), (Durability::None, false)] {
        let disk = SimDisk::new();
        let log = Log::create_in(Arc::new(disk.clone()), DIR, options(durability)).unwrap();
        let per_thread = CAPACITY / small_frame() / 2 + 1;
        std::thread::scope(|s| {
            for t in 0..4 {
                let log = &log;
                s.spawn(move || {
                    for i in 0..per_thread {
                        log.append(&small_event(t * per_thread + i)).unwrap();
                    }
                });
            }
        });
        assert!(log.state().segments >= 2, "{durability:?}: no roll");
        assert_eq!(read_all(&log).len() as u64, 4 * per_thread);
        log.close().unwrap();
        let zeroed = disk.stats().zeroed_ahead;
        assert_eq!(
            zeroed > 0,
            zeroes,
            "{durability:?}: {zeroed} bytes zeroed ahead"
        );
        let report = verify(&disk);
        assert!(report.is_intact(), "{durability:?}: {:#?}", report.problems);
    }
}

/// A group-commit leader that panics (here in its `fdatasync`) must not leave
/// the other appenders parked for ever: the panic reaches that appender's
/// caller, the handle is poisoned, and every other appender returns.
#[test]
fn a_panicking_leader_poisons_the_handle_and_wakes_every_appender() {
    let gate = Arc::new(Gate::default());
    let storage = Arc::new(Gated {
        disk: SimDisk::new(),
        gate: gate.clone(),
    });
    // One segment: the panic is the leader's, never a seal's.
    let options = Options {
        segment_bytes: 64 << 20,
        ..options(Durability::Always)
    };
    let log = Arc::new(Log::create_in(storage, DIR, options).unwrap());
    let start = Arc::new(std::sync::Barrier::new(9));
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let (log, start) = (log.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for i in 0..100_000u64 {
                    match log.append(&small_event(t * 100_000 + i)) {
                        Ok(_) => {}
                        Err(Error::Poisoned(_)) => return,
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
                panic!("appender {t} never saw the poisoned handle");
            })
        })
        .collect();
    start.wait();
    std::thread::sleep(Duration::from_millis(5));
    gate.panic_next.store(true, Ordering::SeqCst);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let panicked: Vec<bool> = threads.into_iter().map(|t| t.join().is_err()).collect();
        let _ = tx.send(panicked);
    });
    let panicked = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("appenders still waiting a minute after the leader panicked");
    assert_eq!(
        panicked.iter().filter(|&&p| p).count(),
        1,
        "only the leader's caller sees the panic: {panicked:?}"
    );
    assert!(matches!(
        log.append(&small_event(999_999)),
        Err(Error::Poisoned(_))
    ));
}
