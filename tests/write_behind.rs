//! Write-behind under the relaxed policies (`Options::write_behind`): when
//! buffered appends reach the disk, that readers see them at once, that a
//! full buffer holds appenders back, that a failed background write poisons
//! the handle, and that a power loss while the writer runs leaves a prefix.
//!
//! The byte-by-byte crash tests of buffered appends are in
//! `tests/crash_recovery.rs` (`crash_at_every_byte_buffered`); these tests
//! run the background thread itself, so they check outcomes, not exact
//! storage operations.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chainlog::format::segment::{self, MIN_SEGMENT_BYTES};
use chainlog::storage::sim::SimDisk;
use chainlog::storage::{DirLock, Storage, StorageFile};
use chainlog::verify::verify_dir;
use chainlog::{Durability, Error, Event, Log, Options, Timestamp, WriteBehind};

const DIR: &str = "/log";

fn event(i: u64) -> Event {
    let mut e = Event::new(
        Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + i as i64 * 1_000_000),
        "pcap.download",
        format!("user{}@acme.io", i % 7),
    );
    e.node = Some(format!("nyc-edge-{:02}", i % 5));
    e.context.insert("i".into(), i.into());
    e
}

fn options(durability: Durability, buffer_bytes: u32, max_delay: Duration) -> Options {
    Options {
        segment_bytes: MIN_SEGMENT_BYTES,
        durability,
        write_behind: Some(WriteBehind {
            buffer_bytes,
            max_delay,
        }),
        ..Options::default()
    }
}

const HOUR: Duration = Duration::from_secs(3600);

/// Waits up to 10 s for `done`.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Bytes of frames written to the first segment's file, as another process
/// would read them: up to the first all-zero frame header.
fn frames_on_disk(disk: &SimDisk) -> usize {
    let bytes = disk
        .read_file(&Path::new(DIR).join(segment::file_name(0)))
        .unwrap_or_default();
    let mut at = segment::HEADER_BYTES as usize;
    let mut n = 0;
    while let Ok(Some(frame)) = chainlog::format::frame::decode(&bytes[at..]) {
        at += frame.padded_len();
        n += 1;
    }
    n
}

#[test]
fn a_buffered_record_is_written_within_max_delay_without_a_sync() {
    let disk = SimDisk::new();
    let log = Log::create_in(
        Arc::new(disk.clone()),
        DIR,
        options(Durability::None, 1 << 20, Duration::from_millis(20)),
    )
    .unwrap();
    let syncs = disk.stats().syncs;
    let appended = Instant::now();
    log.append(&event(0)).unwrap();
    eventually("the record reaches the file", || frames_on_disk(&disk) == 1);
    assert!(
        appended.elapsed() >= Duration::from_millis(20),
        "written before max_delay: the buffer was not waiting for more"
    );
    assert_eq!(disk.stats().syncs, syncs, "write-behind must not sync");
    log.close().unwrap();
}

#[test]
fn a_full_buffer_is_written_before_max_delay() {
    let disk = SimDisk::new();
    let log = Log::create_in(
        Arc::new(disk.clone()),
        DIR,
        options(Durability::None, 4 << 10, HOUR),
    )
    .unwrap();
    let mut n = 0;
    // Small frames: a few dozen fill 4 KiB.
    while n < 200 {
        log.append(&event(n)).unwrap();
        n += 1;
    }
    eventually("a full buffer is written", || frames_on_disk(&disk) > 0);
    drop(log);
}

#[test]
fn readers_see_buffered_records_at_once() {
    let disk = SimDisk::new();
    let log = Log::create_in(
        Arc::new(disk.clone()),
        DIR,
        options(Durability::None, 1 << 20, HOUR),
    )
    .unwrap();
    let receipts = log
        .append_batch(&(0..10).map(event).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(frames_on_disk(&disk), 0, "nothing should be written yet");
    let records: Vec<_> = log.iter_from(0).collect::<Result<_, _>>().unwrap();
    assert_eq!(records.len(), 10);
    for (r, want) in records.iter().zip(&receipts) {
        assert_eq!((r.seq, r.hash), (want.seq, want.hash));
    }
    // Reading wrote them out (and did not sync them).
    assert_eq!(frames_on_disk(&disk), 10);
    assert_eq!(log.state().durable_next_seq, 0);
    log.append(&event(10)).unwrap();
    let head = log.tree_head().unwrap();
    assert_eq!(head.size, 11);
    assert_eq!(head.head, Some(log.state().head));
    log.close().unwrap();
}

/// A simulated disk that holds writes of frames while its gate is closed
/// (other writes go on), and records the writeback hints of segment files.
#[derive(Debug, Clone, Default)]
struct Probe {
    disk: SimDisk,
    closed: Arc<AtomicBool>,
    writes_waiting: Arc<std::sync::atomic::AtomicU64>,
    /// (segment file, offset, length) of each `start_writeback`.
    writeback: Arc<parking_lot::Mutex<Vec<(String, u64, u64)>>>,
}

#[derive(Debug)]
struct ProbedFile {
    inner: Arc<dyn StorageFile>,
    /// The segment's final name, for a segment file.
    segment: Option<String>,
    probe: Probe,
}

impl StorageFile for ProbedFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        // Frames only: not the header, nor the link block at the end.
        if self.segment.is_some() && (segment::HEADER_BYTES..1 << 20).contains(&offset) {
            let probe = &self.probe;
            probe.writes_waiting.fetch_add(1, Ordering::SeqCst);
            while probe.closed.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            probe.writes_waiting.fetch_sub(1, Ordering::SeqCst);
        }
        self.inner.write_all_at(buf, offset)
    }
    fn start_writeback(&self, offset: u64, len: u64) {
        if let Some(name) = &self.segment {
            self.probe
                .writeback
                .lock()
                .push((name.clone(), offset, len));
        }
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        self.inner.allocate(len)
    }
}

impl Probe {
    fn wrap(&self, path: &Path, file: Arc<dyn StorageFile>) -> Arc<dyn StorageFile> {
        // Segments are created under a temporary name, then renamed.
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let segment = match name.strip_suffix(segment::TEMP_SUFFIX) {
            Some(digits) if digits.len() == 20 => Some(format!("{digits}.seg")),
            Some(_) => None,
            None => segment::parse_file_name(name).map(|_| name.to_string()),
        };
        Arc::new(ProbedFile {
            inner: file,
            segment,
            probe: self.clone(),
        })
    }
}

impl Storage for Probe {
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
        Ok(self.wrap(path, self.disk.create_new(path)?))
    }
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn StorageFile>> {
        Ok(self.wrap(path, self.disk.open(path, write)?))
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
fn a_full_buffer_holds_appenders_back_until_the_writer_catches_up() {
    let gate = Probe::default();
    gate.closed.store(true, Ordering::SeqCst);
    let disk = gate.disk.clone();
    let closed = gate.closed.clone();
    let waiting = gate.writes_waiting.clone();
    // Segments the test cannot fill: the buffer, not a roll, is what stops.
    let log = Arc::new(
        Log::create_in(
            Arc::new(gate),
            DIR,
            Options {
                segment_bytes: 16 << 20,
                ..options(Durability::None, 4 << 10, HOUR)
            },
        )
        .unwrap(),
    );
    let appender = {
        let log = log.clone();
        std::thread::spawn(move || {
            for i in 0..2_000 {
                log.append(&event(i)).unwrap();
            }
        })
    };
    // The writer takes the first full buffer and is stuck writing it; the
    // appender fills the next one to four times `buffer_bytes` and waits.
    eventually("the writer is stuck in a write", || {
        waiting.load(Ordering::SeqCst) == 1
    });
    std::thread::sleep(Duration::from_millis(100));
    let stuck_at = log.state().next_seq;
    assert!(stuck_at < 2_000, "the appender was not held back");
    // Of 80-odd-byte frames, 4 × 4 KiB hold a few hundred, plus the first buffer.
    assert!(
        stuck_at < 600,
        "{stuck_at} records appended past a full buffer"
    );
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(log.state().next_seq, stuck_at, "the appender went on");
    closed.store(false, Ordering::SeqCst);
    appender.join().unwrap();
    let log = Arc::into_inner(log).unwrap();
    log.close().unwrap();
    let report = verify_dir(&disk, Path::new(DIR), &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, 2_000);
}

#[test]
fn a_failed_background_write_poisons_the_handle_and_reopen_recovers_a_prefix() {
    let disk = SimDisk::new();
    let log = Log::create_in(
        Arc::new(disk.clone()),
        DIR,
        options(Durability::None, 1 << 20, Duration::from_millis(5)),
    )
    .unwrap();
    let receipts = log
        .append_batch(&(0..20).map(event).collect::<Vec<_>>())
        .unwrap();
    log.sync().unwrap();
    // Room for a few frames of the next buffer, not all of it.
    disk.set_write_budget(Some(300));
    log.append_batch(&(20..40).map(event).collect::<Vec<_>>())
        .unwrap();
    eventually("the background write fails", || {
        matches!(log.append(&event(40)), Err(Error::Poisoned(_)))
    });
    // Readers get the error for records that never reached the file.
    let read: Vec<_> = log.iter_from(0).collect();
    assert!(
        read.iter().any(|r| matches!(r, Err(Error::Poisoned(_)))),
        "a read past the failed write must fail"
    );
    drop(log);
    disk.set_write_budget(None);
    let log = Log::open_in(
        Arc::new(disk.clone()),
        DIR,
        options(Durability::None, 1 << 20, HOUR),
    )
    .unwrap();
    let records: Vec<_> = log.iter_from(0).collect::<Result<_, _>>().unwrap();
    assert!(records.len() >= 20, "synced records lost");
    assert!(
        records.len() < 40,
        "the failed write cannot have written all"
    );
    for (r, want) in records.iter().zip(&receipts) {
        assert_eq!((r.seq, r.hash), (want.seq, want.hash));
    }
    drop(log);
    let report = verify_dir(&disk, Path::new(DIR), &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
}

#[test]
fn power_loss_while_writing_behind_leaves_a_prefix_with_every_synced_record() {
    for round in 0..20u64 {
        let disk = SimDisk::new();
        let log = Arc::new(
            Log::create_in(
                Arc::new(disk.clone()),
                DIR,
                options(
                    Durability::Batch {
                        max_delay: Duration::from_millis(2),
                        max_bytes: 64 << 10,
                    },
                    4 << 10,
                    Duration::from_micros(200),
                ),
            )
            .unwrap(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let appender = {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut hashes = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let batch: Vec<Event> = (i..i + 1 + i % 7).map(event).collect();
                    match log.append_batch(&batch) {
                        Ok(r) => hashes.extend(r.into_iter().map(|r| r.hash)),
                        Err(_) => break,
                    }
                    i += batch.len() as u64;
                }
                hashes
            })
        };
        let reader = {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    // Reads must see a dense, intact prefix while appends go on.
                    for (next, r) in log.iter_from(0).take(5_000).enumerate() {
                        let Ok(r) = r else { return };
                        assert_eq!(r.seq, next as u64);
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(5 + round * 3));
        let durable = log.state().durable_next_seq;
        disk.crash();
        stop.store(true, Ordering::SeqCst);
        let hashes = appender.join().unwrap();
        reader.join().unwrap();
        drop(log);
        let log = Log::open_in(
            Arc::new(disk.clone()),
            DIR,
            options(Durability::Always, 4 << 10, HOUR),
        )
        .unwrap();
        let records: Vec<_> = log.iter_from(0).collect::<Result<_, _>>().unwrap();
        assert!(
            records.len() as u64 >= durable,
            "round {round}: {} records recovered, {durable} were durable",
            records.len()
        );
        for (r, want) in records.iter().zip(&hashes) {
            assert_eq!(r.hash, *want, "round {round}: seq {}", r.seq);
        }
        drop(log);
        let report = verify_dir(&disk, Path::new(DIR), &mut |_| {}).unwrap();
        assert!(report.is_intact(), "round {round}: {:?}", report.problems);
    }
}

#[test]
fn write_behind_options_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    for (buffer_bytes, max_delay) in [
        (1024, Duration::from_millis(1)),
        (128 << 20, Duration::from_millis(1)),
        (1 << 20, Duration::ZERO),
    ] {
        let err = Log::create(
            dir.path(),
            options(Durability::None, buffer_bytes, max_delay),
        )
        .unwrap_err();
        assert!(matches!(err, Error::InvalidOptions(_)), "{err}");
    }
}

#[test]
fn writeback_is_started_behind_the_writes_under_the_relaxed_policies_only() {
    for durability in [Durability::None, Durability::Always] {
        let probe = Probe::default();
        let log = Log::create_in(
            Arc::new(probe.clone()),
            DIR,
            Options {
                segment_bytes: 4 << 20,
                ..options(durability, 64 << 10, Duration::from_millis(1))
            },
        )
        .unwrap();
        // About 9 MiB: two sealed segments and part of a third.
        let batch: Vec<Event> = (0..1_000).map(event).collect();
        for _ in 0..90 {
            log.append_batch(&batch).unwrap();
        }
        log.close().unwrap();
        let hints = probe.writeback.lock().clone();
        if durability == Durability::Always {
            assert!(hints.is_empty(), "Always syncs every write: {hints:?}");
            continue;
        }
        let mut files: Vec<String> = hints.iter().map(|(f, ..)| f.clone()).collect();
        files.dedup();
        assert!(files.len() >= 3, "hints for {files:?}");
        for file in &files {
            let ranges: Vec<(u64, u64)> = hints
                .iter()
                .filter(|(f, ..)| f == file)
                .map(|&(_, at, len)| (at, len))
                .collect();
            // Contiguous from the first frame, each at least 256 KiB.
            let mut next = segment::HEADER_BYTES;
            for &(at, len) in &ranges {
                assert_eq!(at, next, "{file}: {ranges:?}");
                assert!(len >= 256 << 10, "{file}: {ranges:?}");
                next = at + len;
            }
            assert!(
                next > 3 << 20 || file == files.last().unwrap(),
                "{file}: {ranges:?}"
            );
        }
    }
}

#[test]
fn under_batch_half_of_max_bytes_written_behind_is_synced_by_the_flusher() {
    let disk = SimDisk::new();
    let log = Log::create_in(
        Arc::new(disk.clone()),
        DIR,
        options(
            Durability::Batch {
                max_delay: HOUR,
                max_bytes: 64 << 10,
            },
            4 << 10,
            HOUR,
        ),
    )
    .unwrap();
    // About 40 KiB of frames: over half of max_bytes, under all of it, so
    // no append syncs and the delay never ends; only the request can.
    let (mut n, mut bytes) = (0, 0);
    while bytes < 40 << 10 {
        log.append(&event(n)).unwrap();
        bytes += frame_bytes(&event(n));
        n += 1;
    }
    eventually("the flusher syncs half of max_bytes", || {
        log.state().durable_next_seq > 0
    });
    assert!(disk.stats().syncs > 0);
    drop(log);
}

/// Bytes of `e`'s frame.
fn frame_bytes(e: &Event) -> u64 {
    let mut record = Vec::new();
    chainlog::event::record::encode_provenance(
        chainlog::storage::sim::SIM_CLOCK_START,
        chainlog::event::Origin::Client,
        chainlog::log::DEFAULT_APPENDER,
        &mut record,
    )
    .unwrap();
    chainlog::event::encode_record(e, &mut record).unwrap();
    chainlog::format::frame::padded_len(record.len()) as u64
}
