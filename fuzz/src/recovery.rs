//! The `recovery` target: a valid log on the simulated disk, then damage
//! chosen by the input, then `Log::open_in`.
//!
//! The log has a few dozen records (some large, so it spans a few
//! [`MIN_SEGMENT_BYTES`] segments), appended under `Durability::Always`, so
//! all of them are durable. Then one of:
//!
//! - **garbage tail**: arbitrary bytes written (unsynced) after the last
//!   frame of the active segment, then a process crash (the written bytes
//!   stay) or a power loss part-way through those writes;
//! - **torn appends**: more records appended under `Durability::None`, then
//!   a power loss at an input-chosen byte of the pending writes;
//! - **tamper**: arbitrary bytes changed anywhere in the active segment, on
//!   disk (`SimDisk::tamper`).
//!
//! Recovery must then either open the log with exactly a prefix of what was
//! appended (never losing a durable record that lies before the damage,
//! never inventing one), or refuse with a corruption error, and only when a
//! valid frame follows the damage or the seq field at the damage holds
//! bytes of neither zero nor the expected seq (an overwritten record's
//! remains, not a torn write). The verifier must agree: intact after a
//! successful open of a torn log, not intact when open refused. Whatever
//! opens must take a new append that continues the chain.

use std::path::Path;

use chainlog::format::frame;
use chainlog::format::segment::{data_end_limit, Scanner, Step, HEADER_BYTES, MIN_SEGMENT_BYTES};
use chainlog::hash::chain::ChainHash;
use chainlog::storage::sim::SimDisk;
use chainlog::storage::Storage;
use chainlog::verify::{verify_dir, Report};
use chainlog::{Durability, Error, Event, Log, Record, Timestamp};

use super::common::{
    chain_hashes, dir, empty_log_disk, event, frame_bytes, newest_segment, options, record_bytes,
    storage, Input, LOG_ID,
};

/// Largest context padding: a few records fill a segment.
const MAX_PAD: usize = 40_000;

/// Where each valid frame of a segment ends, from its start, and where
/// the valid frames end.
fn frames(disk: &SimDisk, path: &Path) -> (Vec<u64>, u64) {
    let file = disk.open(path, false).expect("the segment exists");
    let mut scan = Scanner::new(
        file,
        "active",
        HEADER_BYTES,
        data_end_limit(MIN_SEGMENT_BYTES),
    );
    let mut placed = Vec::new();
    loop {
        match scan.next_step().expect("the simulated disk reads") {
            Step::Frame { offset, frame } => placed.push(offset + frame.padded_len() as u64),
            Step::End { offset } | Step::Bad { offset, .. } => return (placed, offset),
        }
    }
}

/// Is there a frame with a valid CRC and a seq of at least `min_seq` at any
/// aligned offset of `bytes[from..to]`? (What makes recovery refuse.)
fn valid_frame_in(bytes: &[u8], from: u64, to: u64, min_seq: u64) -> bool {
    (from..to).step_by(8).any(|at| {
        let at = at as usize;
        // A frame never starts with eight zero bytes (its length is not 0);
        // skipping them word by word keeps this quick.
        word(bytes, at) != 0
            && matches!(frame::decode(&bytes[at..to as usize]), Ok(Some(f)) if f.seq >= min_seq)
    })
}

/// Does the seq field of a frame at `at` hold a byte that is neither zero
/// nor the byte of `expected` (what no torn write of seq `expected` leaves)?
fn foreign_seq(bytes: &[u8], at: u64, expected: u64) -> bool {
    let field = word(bytes, at as usize + 8).to_le_bytes();
    field
        .iter()
        .zip(expected.to_le_bytes())
        .any(|(&got, want)| got != 0 && got != want)
}

fn word(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0; 8];
    let n = bytes.len().saturating_sub(at).min(8);
    w[..n].copy_from_slice(&bytes[at..at + n]);
    u64::from_le_bytes(w)
}

/// The first and last byte offsets where `a` and `b` (of equal length)
/// differ.
fn changed_range(a: &[u8], b: &[u8]) -> Option<(u64, u64)> {
    const CHUNK: usize = 4096;
    let first_chunk = a
        .chunks(CHUNK)
        .zip(b.chunks(CHUNK))
        .position(|(x, y)| x != y)?;
    let last_chunk = a
        .chunks(CHUNK)
        .zip(b.chunks(CHUNK))
        .rposition(|(x, y)| x != y)?;
    let in_chunk = |c: usize| c * CHUNK..((c + 1) * CHUNK).min(a.len());
    let first = in_chunk(first_chunk).find(|&i| a[i] != b[i])?;
    let last = in_chunk(last_chunk).rev().find(|&i| a[i] != b[i])?;
    Some((first as u64, last as u64))
}

fn verify(disk: &SimDisk) -> Report {
    verify_dir(disk, dir(), &mut |_| {}).expect("the verifier reads a simulated disk")
}

fn read_all(log: &Log) -> Vec<Record> {
    log.iter_from(0)
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("reading an opened log failed: {e}"))
}

/// The log as appended: events with their chain hashes.
struct Appended {
    events: Vec<Event>,
    hashes: Vec<ChainHash>,
}

impl Appended {
    /// Whether `records` are exactly the first `records.len()` appended.
    fn is_prefix(&self, records: &[Record]) -> bool {
        records.len() <= self.events.len()
            && records.iter().enumerate().all(|(i, r)| {
                r.seq == i as u64 && r.hash == self.hashes[i] && r.event == self.events[i]
            })
    }
}

fn append_some(log: &Log, input: &mut Input<'_>, appended: &mut Vec<Event>, count: usize) {
    let target = appended.len() + count;
    while appended.len() < target {
        let batch = (1 + usize::from(input.u8() % 4)).min(target - appended.len());
        let events: Vec<Event> = (0..batch)
            .map(|i| event(input, (appended.len() + i) as u64, MAX_PAD))
            .collect();
        // A batch goes into one segment: one that would not fit any is
        // appended event by event.
        let bytes: u64 = events.iter().map(frame_bytes).sum();
        let batches = if bytes > data_end_limit(MIN_SEGMENT_BYTES) - HEADER_BYTES {
            events.chunks(1).collect::<Vec<_>>()
        } else {
            vec![&events[..]]
        };
        for batch in batches {
            let receipts = log.append_batch(batch).expect("appending to a healthy log");
            for (i, r) in receipts.iter().enumerate() {
                assert_eq!(r.seq, (appended.len() + i) as u64, "receipt seq");
            }
            appended.extend_from_slice(batch);
        }
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let disk = empty_log_disk();
    let log = Log::open_in(storage(&disk), dir(), options(Durability::Always))
        .expect("opening a new log");
    let mut events = Vec::new();
    let n = 1 + usize::from(input.u8() % 40);
    append_some(&log, &mut input, &mut events, n);
    let state = log.state();
    assert_eq!(
        state.durable_next_seq, n as u64,
        "Always: every acknowledged record is durable"
    );
    drop(log);

    match input.u8() % 3 {
        0 => garbage_tail(&disk, &mut input, events),
        1 => torn_appends(&disk, &mut input, events),
        _ => tamper(&disk, &mut input, events),
    }
}

/// Reopens after damage. On success: the handle's state agrees with what
/// it reads, and a new append continues the chain from the recovered head.
/// Returns the records read (before that append), or the refusal.
fn reopen(disk: &SimDisk) -> Result<Vec<Record>, Error> {
    let log = Log::open_in(storage(disk), dir(), options(Durability::Always))?;
    let records = read_all(&log);
    let state = log.state();
    assert_eq!(state.next_seq, records.len() as u64, "next_seq after open");
    assert_eq!(
        state.durable_next_seq, state.next_seq,
        "an opened log is durable"
    );
    let head = records
        .last()
        .map_or(ChainHash::genesis(&LOG_ID), |r| r.hash);
    assert_eq!(state.head, head, "head after open");
    let e = Event::new(Timestamp::from_unix_nanos(7), "fuzz.after_recovery", "fuzz");
    let receipt = log.append(&e).expect("appending after recovery");
    assert_eq!(
        receipt.seq, state.next_seq,
        "the append after recovery has the next seq"
    );
    assert_eq!(
        receipt.hash,
        head.next(receipt.seq, &record_bytes(&e)),
        "the append after recovery chains from the head"
    );
    log.close().expect("closing");
    Ok(records)
}

fn appended(events: Vec<Event>) -> Appended {
    let hashes = chain_hashes(&events);
    Appended { events, hashes }
}

/// A power loss part-way through the pending writes, at input-chosen
/// bytes.
fn power_loss(disk: &SimDisk, input: &mut Input<'_>) {
    let pending = disk.pending_writes();
    let w = input.below(pending.len() as u64 + 1) as usize;
    let b = input.below(pending.get(w).map_or(0, |&l| l as u64) + 1) as usize;
    disk.crash_at(w, b);
}

fn garbage_tail(disk: &SimDisk, input: &mut Input<'_>, events: Vec<Event>) {
    let n = events.len() as u64;
    let appended = appended(events);
    let (_, path) = newest_segment(disk).expect("a log has a segment");
    let (_, end) = frames(disk, &path);
    let limit = data_end_limit(MIN_SEGMENT_BYTES);
    let garbage = input.bytes(4096);
    let garbage = &garbage[..garbage.len().min((limit - end) as usize)];
    let file = disk.open(&path, true).expect("the active segment opens");
    // In up to three writes, as a writer would issue them.
    let cut1 = input.below(garbage.len() as u64 + 1) as usize;
    let cut2 = cut1 + input.below((garbage.len() - cut1) as u64 + 1) as usize;
    for (from, to) in [(0, cut1), (cut1, cut2), (cut2, garbage.len())] {
        if to > from {
            file.write_all_at(&garbage[from..to], end + from as u64)
                .expect("writing to the simulated disk");
        }
    }
    drop(file);
    // A process crash keeps the written bytes; a power loss a prefix of them.
    if input.u8() % 2 == 1 {
        power_loss(disk, input);
    }
    let image = disk.read_file(&path).expect("the segment survives");
    // Recovery refuses exactly when a valid frame with a seq it could be
    // cutting off lies past the end of the data, or the debris cannot be a
    // torn write of the next record.
    let tail_has_frame = valid_frame_in(&image, end, limit, n);
    let seq_ok = !foreign_seq(&image, end, n);
    let before = verify(disk);
    match reopen(disk) {
        Ok(records) => {
            assert!(
                records.len() as u64 >= n && appended.is_prefix(&records[..n as usize]),
                "recovery lost or changed durable records ({} read, {n} durable)",
                records.len()
            );
            if records.len() as u64 == n {
                assert!(
                    !tail_has_frame,
                    "a valid frame after the torn tail was cut off"
                );
                assert!(seq_ok, "recovery cut the remains of another record");
                assert!(
                    before.is_intact(),
                    "a torn tail is not a problem: {:?}",
                    before.problems
                );
                let after = verify(disk);
                assert!(
                    after.is_intact() && after.torn_tail.is_none(),
                    "after recovery: {after:?}"
                );
            } else {
                // The garbage began with a frame valid enough for recovery
                // (CRC and seq; hashes are the verifier's job): it is there.
                assert!(tail_has_frame, "records appeared from nowhere");
            }
        }
        Err(e) => {
            assert!(e.is_corruption(), "open failed with {e:?}");
            assert!(
                tail_has_frame || !seq_ok,
                "open refused a log with only a torn tail: {e}"
            );
            assert!(!before.is_intact(), "open refused, verify says intact");
            assert_eq!(
                disk.read_file(&path).as_deref(),
                Some(&image[..]),
                "a refused open changed the segment"
            );
        }
    }
}

fn torn_appends(disk: &SimDisk, input: &mut Input<'_>, mut events: Vec<Event>) {
    let log = Log::open_in(storage(disk), dir(), options(Durability::None))
        .expect("reopening a healthy log");
    let more = 1 + usize::from(input.u8() % 20);
    append_some(&log, input, &mut events, more);
    let total = events.len() as u64;
    let claimed = log.state().durable_next_seq;
    power_loss(disk, input);
    drop(log);
    let appended = appended(events);
    let before = verify(disk);
    assert!(
        before.is_intact(),
        "a power loss left a damaged log: {:?}",
        before.problems
    );
    let records =
        reopen(disk).unwrap_or_else(|e| panic!("recovery after a power loss failed: {e}"));
    let k = records.len() as u64;
    assert!(
        claimed <= k && k <= total,
        "{k} records after a power loss; {claimed} were durable, {total} appended"
    );
    assert!(
        appended.is_prefix(&records),
        "records read back differ from those appended"
    );
    let after = verify(disk);
    assert!(
        after.is_intact() && after.torn_tail.is_none(),
        "after recovery: {after:?}"
    );
}

/// At most this many bytes are changed: too few to forge a frame's CRC,
/// stored hash and record at once (which would be a rewrite by someone who
/// can write the disk, which only a signed checkpoint detects).
const MAX_TAMPER_BYTES: usize = 32;

fn tamper(disk: &SimDisk, input: &mut Input<'_>, events: Vec<Event>) {
    let n = events.len();
    let appended = appended(events);
    let (base, path) = newest_segment(disk).expect("a log has a segment");
    let (placed, end) = frames(disk, &path);
    let original = disk.read_file(&path).expect("the segment exists");
    let at = if input.u8() % 4 == 0 {
        input.below(MIN_SEGMENT_BYTES)
    } else {
        input.below(end + 256)
    };
    let mut bytes = input.bytes(MAX_TAMPER_BYTES).to_vec();
    if bytes.is_empty() {
        bytes.push(!original[at as usize]);
    }
    let len = bytes.len().min((MIN_SEGMENT_BYTES - at) as usize);
    disk.tamper(&path, at, &bytes[..len])
        .expect("the segment exists");
    let image = disk.read_file(&path).expect("the segment exists");
    let Some((first, last)) = changed_range(&original, &image) else {
        // Nothing changed: recovery sees the log as it was.
        let records = reopen(disk).expect("an undamaged log opens");
        assert!(appended.is_prefix(&records) && records.len() == n);
        return;
    };
    // Records wholly before the damage are beyond doubt.
    let safe = base + placed.iter().filter(|&&end| end <= first).count() as u64;
    let in_tail = first >= end && last < data_end_limit(MIN_SEGMENT_BYTES);
    let before = verify(disk);
    match reopen(disk) {
        Ok(records) => {
            if appended.is_prefix(&records) {
                assert!(
                    records.len() as u64 >= safe,
                    "recovery dropped records before the damage at byte {first}"
                );
                if in_tail {
                    assert_eq!(records.len(), n, "damage after the data cost records");
                }
            } else {
                assert!(
                    !before.is_intact(),
                    "recovery read back changed records and the verifier saw nothing"
                );
            }
        }
        Err(e) => {
            assert!(
                e.is_corruption() || matches!(e, Error::UnsupportedVersion { .. }),
                "open failed with {e:?}"
            );
            assert!(!before.is_intact(), "open refused, verify says intact: {e}");
            assert!(
                !in_tail
                    || valid_frame_in(&image, end, data_end_limit(MIN_SEGMENT_BYTES), n as u64)
                    || foreign_seq(&image, end, n as u64),
                "open refused a log whose only damage is after the data: {e}"
            );
            assert_eq!(
                disk.read_file(&path).as_deref(),
                Some(&image[..]),
                "a refused open changed the segment"
            );
        }
    }
}
