//! The `model` target: an input-chosen sequence of operations on a log on
//! the simulated disk, checked after every step against a model that is
//! just the list of appended events and how many of them are durable.
//!
//! Up to 120 operations: append, append a batch, sync, power loss (losing every
//! unsynced write, or at an input-chosen byte of the pending writes), clean
//! reopen (with an input-chosen policy, writing appends through or
//! buffering them), read from a seq, and two faults:
//! the next `fdatasync` fails (EIO), or writes run out of space (ENOSPC)
//! after an input-chosen number of bytes.
//!
//! What the model demands:
//! - while the handle is healthy, it holds exactly the appended records,
//!   reads them back unchanged, and under `Durability::Always` every
//!   acknowledged record is durable;
//! - after a power loss or a reopen, the log holds a prefix of what was
//!   appended that is at least as long as what was durable. Durable means:
//!   acknowledged under `Always`, or appended before a successful sync or
//!   close, or below the handle's own `durable_next_seq` claim;
//! - with buffered appends, a failed write of the buffer surfaces at the
//!   next call that writes it (a read, a sync, a seal inside an append) or
//!   after it (an append on the poisoned handle); the buffered records were
//!   not durable, so recovery may lose them;
//! - a failed append may leave its records behind (a write cut short by a
//!   full disk can leave whole frames), at the seqs they were given; a
//!   later power loss may resurrect them in place of records appended
//!   after the failure but never synced. They are "ghosts": allowed,
//!   exactly as written, and nothing else is;
//! - the verifier finds the log intact after every power loss (a torn
//!   tail is not a problem) and after every recovery.

use chainlog::hash::chain::ChainHash;
use chainlog::storage::sim::SimDisk;
use chainlog::verify::verify_dir;
use chainlog::{Durability, Error, Event, Log, Record};

use super::common::{
    buffered_options, dir, empty_log_disk, event, options, record_bytes, storage, Input, LOG_ID,
};

/// Prints each step when `CHAINLOG_FUZZ_TRACE` is set (for replaying a
/// crash input: `CHAINLOG_FUZZ_TRACE=1 CHAINLOG_FUZZ_REPLAY=… cargo test
/// --test fuzz_regressions replay -- --nocapture`).
fn tracing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("CHAINLOG_FUZZ_TRACE").is_some())
}

macro_rules! trace {
    ($($arg:tt)*) => {
        if tracing() {
            eprintln!($($arg)*);
        }
    };
}

/// Largest context padding: a handful of records fill a segment.
const MAX_PAD: usize = 12_000;
/// Most operations per input.
const MAX_STEPS: usize = 120;
/// Most events in one batch.
const MAX_BATCH: u64 = 12;

/// A failed append's events, possibly on disk from seq `at` on.
struct Ghost {
    at: usize,
    events: Vec<Event>,
}

struct Model {
    /// What the handle has acknowledged (and, after a failed write that
    /// advanced the handle, what it wrote without acknowledging).
    events: Vec<Event>,
    hashes: Vec<ChainHash>,
    /// Records below this are durable.
    durable: usize,
    ghosts: Vec<Ghost>,
    /// An append or sync failed: the handle is poisoned (or, if the failure
    /// was in creating a segment, may go on), and what it holds is only
    /// bounded by the rules above until the next recovery.
    degraded: bool,
    durability: Durability,
    /// Appends go into the write buffer (written at a sync, seal, read or
    /// close) instead of straight to the disk.
    buffered: bool,
}

impl Model {
    fn head_before(&self, seq: usize) -> ChainHash {
        match seq.checked_sub(1) {
            Some(prev) => self.hashes[prev],
            None => ChainHash::genesis(&LOG_ID),
        }
    }

    fn push(&mut self, events: &[Event]) {
        for e in events {
            let seq = self.events.len();
            let hash = self.head_before(seq).next(seq as u64, &record_bytes(e));
            self.events.push(e.clone());
            self.hashes.push(hash);
        }
    }

    /// Is `records` something a crash may leave: a durable-or-longer prefix
    /// of the appended records, possibly continued by a ghost? On success
    /// the model becomes that log, all durable.
    fn accept_recovered(&mut self, records: &[Record]) {
        let k = records.len();
        assert!(
            k >= self.durable,
            "recovery lost durable records: {k} recovered, {} durable",
            self.durable
        );
        // Agreement with the appended records, up to where they diverge.
        let agree = records
            .iter()
            .zip(self.events.iter().zip(&self.hashes))
            .take_while(|(r, (e, h))| r.hash == **h && r.event == **e)
            .count();
        let fits = if agree == k {
            true
        } else {
            self.ghosts.iter().any(|g| {
                if g.at > agree || g.at > k {
                    return false;
                }
                let mut head = self.head_before(g.at);
                records[g.at..].len() <= g.events.len()
                    && records[g.at..].iter().zip(&g.events).all(|(r, e)| {
                        head = head.next(r.seq, &record_bytes(e));
                        r.hash == head && r.event == *e
                    })
            })
        };
        assert!(
            fits,
            "recovered records diverge from the appended ones at seq {agree} ({k} recovered, {} appended, {} durable)",
            self.events.len(),
            self.durable
        );
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.seq, i as u64, "recovered seqs are dense from 0");
        }
        self.events = records.iter().map(|r| r.event.clone()).collect();
        self.hashes = records.iter().map(|r| r.hash).collect();
        self.durable = k;
        self.ghosts.clear();
        self.degraded = false;
    }
}

/// The policy, and whether appends are buffered (ignored under Always).
fn durability(input: &mut Input<'_>) -> (Durability, bool) {
    let choice = input.u8() % 6;
    let durability = match choice % 3 {
        0 => Durability::Always,
        1 => Durability::None,
        // A delay no fuzz run reaches: only the byte bound syncs, at a point
        // the input decides, not the clock.
        _ => Durability::Batch {
            max_delay: std::time::Duration::from_secs(3600),
            max_bytes: 1 + u64::from(input.u16()) * 4,
        },
    };
    (durability, choice >= 3)
}

fn open(disk: &SimDisk, model: &Model) -> Log {
    let options = if model.buffered {
        buffered_options(model.durability)
    } else {
        options(model.durability)
    };
    Log::open_in(storage(disk), dir(), options)
        .unwrap_or_else(|e| panic!("opening the log failed: {e}"))
}

/// A relaxed policy with buffered appends: a write failure can surface at
/// any later call.
fn failures_surface_late(model: &Model) -> bool {
    model.buffered && model.durability != Durability::Always
}

fn assert_intact(disk: &SimDisk, when: &str) {
    let report = verify_dir(disk, dir(), &mut |_| {}).expect("the verifier reads a simulated disk");
    assert!(report.is_intact(), "{when}: {:?}", report.problems);
}

/// Checks a healthy handle against the model.
fn check_state(log: &Log, model: &Model) {
    if model.degraded {
        return;
    }
    let state = log.state();
    assert_eq!(state.next_seq, model.events.len() as u64, "next_seq");
    assert_eq!(
        state.head,
        model.head_before(model.events.len()),
        "head hash"
    );
    assert!(
        state.durable_next_seq >= model.durable as u64,
        "the handle claims fewer durable records ({}) than it has made durable ({})",
        state.durable_next_seq,
        model.durable
    );
    if model.durability == Durability::Always {
        assert_eq!(
            state.durable_next_seq, state.next_seq,
            "Always: an acknowledged record is durable"
        );
    }
}

fn append(log: &Log, model: &mut Model, events: Vec<Event>) {
    let before = log.state();
    let result = log.append_batch(&events);
    trace!("  -> {:?}", result.as_ref().map(|r| r.len()));
    match result {
        Ok(receipts) => {
            assert_eq!(receipts.len(), events.len());
            let first = model.events.len();
            model.push(&events);
            for (i, r) in receipts.iter().enumerate() {
                assert_eq!(r.seq, (first + i) as u64, "receipt seq");
                assert_eq!(r.hash, model.hashes[first + i], "receipt hash");
            }
            if model.durability == Durability::Always {
                model.durable = model.events.len();
            }
        }
        Err(Error::BatchTooLarge { .. }) => {
            let after = log.state();
            assert_eq!(
                (after.next_seq, after.head),
                (before.next_seq, before.head),
                "a rejected batch changed the log"
            );
        }
        Err(Error::Poisoned(_)) if failures_surface_late(model) => model.degraded = true,
        Err(Error::Poisoned(_)) => {
            assert!(model.degraded, "a healthy handle claims to be poisoned")
        }
        Err(Error::Io { .. }) => {
            // A fault fired. The batch may be on disk in part (whole frames
            // of it, at the seqs it was given), or not at all.
            model.ghosts.push(Ghost {
                at: model.events.len(),
                events,
            });
            model.degraded = true;
        }
        Err(e) => panic!("append failed with {e:?}"),
    }
}

fn read(log: &Log, model: &mut Model, from: u64) {
    let records: Vec<Result<Record, Error>> = log.iter_from(from).take(32).collect();
    if model.degraded {
        return;
    }
    if failures_surface_late(model)
        && records
            .iter()
            .any(|r| matches!(r, Err(Error::Io { .. } | Error::Poisoned(_))))
    {
        // Writing the buffer before the read failed.
        model.degraded = true;
        return;
    }
    let from = from as usize;
    let expected = model.events.len().saturating_sub(from).min(32);
    assert_eq!(records.len(), expected, "records read from seq {from}");
    for (i, r) in records.into_iter().enumerate() {
        let r = r.unwrap_or_else(|e| panic!("reading seq {}: {e}", from + i));
        assert_eq!(r.seq, (from + i) as u64);
        assert_eq!(r.hash, model.hashes[from + i], "hash read at seq {}", r.seq);
        assert_eq!(
            r.event,
            model.events[from + i],
            "event read at seq {}",
            r.seq
        );
    }
}

/// After a power loss (the handle is dead): the verifier, then recovery.
fn recover(disk: &SimDisk, log: Log, model: &mut Model, input: &mut Input<'_>) -> Log {
    drop(log);
    assert_intact(disk, "after a power loss");
    (model.durability, model.buffered) = durability(input);
    trace!(
        "recover under {:?}, buffered {}",
        model.durability,
        model.buffered
    );
    let log = open(disk, model);
    let records: Vec<Record> = log
        .iter_from(0)
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("reading after recovery: {e}"));
    model.accept_recovered(&records);
    check_state(&log, model);
    assert_intact(disk, "after recovery");
    log
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let disk = empty_log_disk();
    let (policy, buffered) = durability(&mut input);
    let mut model = Model {
        events: Vec::new(),
        hashes: Vec::new(),
        durable: 0,
        ghosts: Vec::new(),
        degraded: false,
        durability: policy,
        buffered,
    };
    trace!(
        "open under {:?}, buffered {}",
        model.durability,
        model.buffered
    );
    let mut log = open(&disk, &model);
    let mut steps = 0;
    while !input.is_empty() && steps < MAX_STEPS {
        steps += 1;
        match input.u8() % 10 {
            0..=2 => {
                let e = event(&mut input, model.events.len() as u64, MAX_PAD);
                trace!(
                    "append 1 at seq {} ({} frame bytes)",
                    model.events.len(),
                    super::common::frame_bytes(&e)
                );
                append(&log, &mut model, vec![e]);
            }
            3 => {
                let n = 1 + input.below(MAX_BATCH);
                let first = model.events.len() as u64;
                let events: Vec<Event> = (0..n)
                    .map(|i| event(&mut input, first + i, MAX_PAD))
                    .collect();
                trace!(
                    "append {n} at seq {first} ({} frame bytes)",
                    events.iter().map(super::common::frame_bytes).sum::<u64>()
                );
                append(&log, &mut model, events);
            }
            4 => {
                trace!("sync");
                match log.sync() {
                    // Everything the handle wrote is durable, which includes
                    // everything it acknowledged.
                    Ok(()) => model.durable = model.events.len(),
                    Err(Error::Io { .. }) => model.degraded = true,
                    Err(Error::Poisoned(_)) if failures_surface_late(&model) => {
                        model.degraded = true
                    }
                    Err(Error::Poisoned(_)) => {
                        assert!(model.degraded, "a healthy handle claims to be poisoned")
                    }
                    Err(e) => panic!("sync failed with {e:?}"),
                }
            }
            5 => {
                disk.fail_next_syncs(0);
                disk.set_write_budget(None);
                // The handle's own claim must survive the power loss too.
                let claim = log.state().durable_next_seq as usize;
                model.durable = model.durable.max(claim.min(model.events.len()));
                if input.u8() % 2 == 0 {
                    trace!("power loss, pending writes {:?}", disk.pending_writes());
                    disk.crash();
                } else {
                    let pending = disk.pending_writes();
                    let w = input.below(pending.len() as u64 + 1) as usize;
                    let b = input.below(pending.get(w).map_or(0, |&l| l as u64) + 1) as usize;
                    trace!("power loss at write {w} byte {b} of pending writes {pending:?}");
                    disk.crash_at(w, b);
                }
                log = recover(&disk, log, &mut model, &mut input);
            }
            6 => {
                trace!("close and reopen");
                disk.fail_next_syncs(0);
                disk.set_write_budget(None);
                let degraded = model.degraded;
                log.close().unwrap_or_else(|e| panic!("close failed: {e}"));
                if !degraded {
                    model.durable = model.events.len();
                }
                (model.durability, model.buffered) = durability(&mut input);
                log = open(&disk, &model);
                let records: Vec<Record> = log
                    .iter_from(0)
                    .collect::<Result<_, _>>()
                    .unwrap_or_else(|e| panic!("reading after reopen: {e}"));
                if !degraded {
                    assert_eq!(
                        records.len(),
                        model.events.len(),
                        "a clean reopen lost records"
                    );
                }
                model.accept_recovered(&records);
                assert_intact(&disk, "after a reopen");
            }
            7 => {
                let from = input.below(model.events.len() as u64 + 2);
                trace!("read from seq {from}");
                read(&log, &mut model, from);
            }
            // One fault at a time. A failed fdatasync followed by a full disk
            // that also stops the cleanup after it is outside what a single
            // boot can repair: the kernel has dropped the unsynced pages but
            // still serves them, a reopen in the same boot accepts them, and a
            // later power loss leaves a hole (docs/RELIABILITY.md, "A failed
            // fdatasync"). That the log still opens is tested in
            // `failed_sync_then_a_failed_zeroing_leaves_a_log_that_opens`.
            8 => {
                trace!("the next fdatasync fails");
                disk.set_write_budget(None);
                disk.fail_next_syncs(1)
            }
            _ => {
                let budget = input.below(200_000);
                trace!("ENOSPC after {budget} more bytes");
                disk.fail_next_syncs(0);
                disk.set_write_budget(Some(budget))
            }
        }
        check_state(&log, &model);
    }
    disk.fail_next_syncs(0);
    disk.set_write_budget(None);
    let degraded = model.degraded;
    log.close()
        .unwrap_or_else(|e| panic!("the final close failed: {e}"));
    if !degraded {
        model.durable = model.events.len();
    }
    model.durability = Durability::Always;
    let log = open(&disk, &model);
    let records: Vec<Record> = log
        .iter_from(0)
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("reading at the end: {e}"));
    model.accept_recovered(&records);
    drop(log);
    assert_intact(&disk, "at the end");
}
