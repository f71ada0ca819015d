//! Group commit: one leader syncs for every appender waiting, the Batch flusher, failed syncs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::format::frame;
use crate::format::segment::{data_end_limit, HEADER_BYTES, TRAILER_BYTES};

use super::*;

/// A leader that panics (a bug, or a durable listener's) must not leave
/// `leading` set, or every later appender would park for ever. On unwind the
/// handle is poisoned (what the leader took may not have been written, and
/// nothing may be written after a hole), and every waiter, and a seal
/// waiting on the sync, wakes to see it. A thread already unwinding when it
/// leads (a `Log` dropped during a panic) is not this.
struct LeaderUnwind<'a> {
    inner: &'a Inner,
    was_panicking: bool,
}

impl<'a> LeaderUnwind<'a> {
    fn new(inner: &'a Inner) -> Self {
        LeaderUnwind {
            inner,
            was_panicking: std::thread::panicking(),
        }
    }
}

impl Drop for LeaderUnwind<'_> {
    fn drop(&mut self) {
        if self.was_panicking || !std::thread::panicking() {
            return;
        }
        let inner = self.inner;
        inner.set_poison("a group-commit leader panicked".to_string());
        {
            let mut sync = inner.sync.lock();
            sync.fsync_running = false;
            inner.leading.store(false, Ordering::Release);
        }
        inner.fsync_over.notify_all();
        for (_, thread) in inner.durable_waiters.lock().drain(..) {
            thread.unpark();
        }
    }
}

/// The longest an appender waits for a sync by yielding before it parks:
/// on a disk whose syncs take milliseconds, yielding would keep the cores
/// busy for nothing a park costs more than.
const MAX_YIELD: Duration = Duration::from_millis(1);

/// Counts an appender among those waiting for a sync while it waits.
struct WaitCount<'a>(&'a AtomicUsize);

impl<'a> WaitCount<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        WaitCount(count)
    }
}

impl Drop for WaitCount<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Inner {
    /// After a failed `fdatasync` nothing since the last good sync can be
    /// trusted to be on disk, even though reads may still return it (the
    /// kernel may have dropped the dirty pages). Zero that range and the
    /// trailer so a reopen recovers to the last truly durable record and
    /// never builds on a hole; then poison the handle.
    pub(super) fn after_failed_sync(&self, w: &Writer, error: &std::io::Error) {
        // No buffered frame may be written while (or after) this zeroes.
        let _slot = self.write_slot.lock();
        self.set_poison(format!("fdatasync of {} failed: {error}", w.active.name()));
        let a = &w.active;
        let durable_at = self.sync.lock().durable_at;
        let from = if durable_at.0 == a.header.base_seq {
            durable_at.1
        } else {
            HEADER_BYTES
        };
        // Zero from the end backwards, in pieces smaller than the smallest
        // frame: if a write fails part-way (a full disk), what is left is
        // valid frames, then at most a fragment of one frame, then zeros,
        // which the next open reads as a torn tail, never as a hole before
        // valid frames.
        const PIECE: u64 = 64;
        const _: () = assert!(PIECE < frame::padded_len(1) as u64 + 24);
        let zeros = [0u8; PIECE as usize];
        let mut end = a.write_at;
        while end > from {
            let start = end.saturating_sub(PIECE).max(from);
            if a.file
                .write_all_at(&zeros[..(end - start) as usize], start)
                .is_err()
            {
                break;
            }
            end = start;
        }
        let _ = a
            .file
            .write_all_at(&[0; TRAILER_BYTES], data_end_limit(a.header.segment_bytes));
    }

    /// Applies the durability policy after an append that took the log to
    /// `next` records. Under Batch, an append that leaves `max_bytes`
    /// unsynced syncs before it returns.
    pub(super) fn after_write(&self, next: u64, appended: &Appended) -> Result<()> {
        match self.options.durability {
            Durability::Always => self.sync_until(next),
            Durability::Batch { max_bytes, .. } => {
                let sync = self.sync.lock();
                if appended.bytes_written.saturating_sub(sync.synced_bytes) >= max_bytes {
                    drop(sync);
                    return self.sync_until(next);
                }
                drop(sync);
                // The flusher waits for the oldest unsynced record's
                // deadline: only the append that starts the wait moves it.
                if appended.started_unsynced {
                    self.flusher_wake.notify_one();
                }
                Ok(())
            }
            Durability::None => Ok(()),
        }
    }

    /// Under Batch, after the write-behind thread wrote: once half of
    /// `max_bytes` is unsynced, the flusher syncs at once, off the
    /// appenders' path, so that an append seldom reaches `max_bytes` and
    /// has to sync itself.
    pub(super) fn request_batch_flush(&self) {
        let Durability::Batch { max_bytes, .. } = self.options.durability else {
            return;
        };
        let appended = self.writer.lock().bytes_written;
        let mut sync = self.sync.lock();
        if !sync.flush_requested && appended.saturating_sub(sync.synced_bytes) >= max_bytes / 2 {
            sync.flush_requested = true;
            self.flusher_wake.notify_one();
        }
    }

    /// Group commit: returns once records below `next` are durable. One
    /// caller at a time (the leader) writes the buffered frames and runs
    /// `fdatasync` for everything appended so far; the others wait for a
    /// sync that covers them: when many wait, first by yielding the CPU for
    /// up to two syncs' time; then parked, to be woken, all at once, by the
    /// sync that covers them.
    pub(super) fn sync_until(&self, next: u64) -> Result<()> {
        // Set once this appender starts waiting for another's sync.
        let mut counted = None;
        loop {
            if self.durable_next.load(Ordering::Acquire) >= next {
                return Ok(());
            }
            let sync = self.sync.lock();
            if sync.durable_next >= next {
                return Ok(());
            }
            if let Some(why) = &*self.poison.lock() {
                return Err(Error::Poisoned(why.clone()));
            }
            if !self.leading.load(Ordering::Acquire) {
                self.leading.store(true, Ordering::Release);
                drop(sync);
                drop(counted);
                return self.lead(next);
            }
            if counted.is_none() {
                // Waits by yielding first (once), then parked.
                counted = Some(WaitCount::enter(&self.waiting));
                drop(sync);
                if self.yield_until_durable(next) {
                    return Ok(());
                }
                continue;
            }
            // Registered under the sync lock while a leader syncs: the
            // leader looks at the waiters only after it stops syncing, so it
            // cannot miss this one.
            self.durable_waiters
                .lock()
                .push((next, std::thread::current()));
            drop(sync);
            // A spurious wake-up just checks again.
            std::thread::park();
        }
    }

    /// Syncs as the group-commit leader until records below `next` are
    /// durable, and then, while appenders wait on records appended during
    /// its sync, up to `LEADER_ROUNDS` syncs in all (the disk need not wait
    /// for a new leader to wake up, and no appender leads for long). Then it
    /// hands over to one waiting appender, if any.
    pub(super) fn lead(&self, next: u64) -> Result<()> {
        const LEADER_ROUNDS: u32 = 4;
        let _unwind = LeaderUnwind::new(self);
        let mut rounds = 0;
        let result = loop {
            if let Err(e) = self.sync_leader() {
                break Err(e);
            }
            rounds += 1;
            self.wake_durable();
            let durable = self.durable_next.load(Ordering::Acquire);
            let waiting = self.appended_next.load(Ordering::Acquire) > durable
                && !self.durable_waiters.lock().is_empty();
            if durable >= next && (rounds >= LEADER_ROUNDS || !waiting) {
                break Ok(());
            }
        };
        {
            let _sync = self.sync.lock();
            self.leading.store(false, Ordering::Release);
        }
        let mut waiters = self.durable_waiters.lock();
        if result.is_err() {
            // Every waiter must learn of the failure (the handle is poisoned).
            for (_, thread) in waiters.drain(..) {
                thread.unpark();
            }
        } else if !waiters.is_empty() {
            // The oldest waiter leads next.
            waiters.remove(0).1.unpark();
        }
        result
    }

    /// Waits, yielding the CPU, until a sync covers records below `next`:
    /// true once one does; false when no leader is syncing any more (the
    /// caller may have to lead), when fewer than `yield_from` appenders
    /// wait, or when the wait has lasted two syncs' time (the one under way
    /// and the one that takes these records; longer, the disk is slow now).
    /// The caller then parks. The leader wakes parked appenders one by one
    /// between two syncs (several microseconds each on two cores, most of a
    /// sync's time with thirty waiting), while a yielding one sees its sync
    /// as soon as it runs. Yielding keeps the cores busy, though, so only
    /// many waiters (four a core) do it: with few, the wake-ups are short
    /// and parking leaves the cores idle.
    fn yield_until_durable(&self, next: u64) -> bool {
        let sync_time = Duration::from_micros(self.last_sync_micros.load(Ordering::Relaxed));
        let deadline = Instant::now() + (2 * sync_time).min(MAX_YIELD);
        loop {
            if self.durable_next.load(Ordering::Acquire) >= next {
                return true;
            }
            if !self.leading.load(Ordering::Acquire)
                || Instant::now() >= deadline
                || self.waiting.load(Ordering::Relaxed) < self.yield_from
            {
                return false;
            }
            std::thread::yield_now();
        }
    }

    /// Wakes the appenders whose records are now durable.
    pub(super) fn wake_durable(&self) {
        let durable = self.durable_next.load(Ordering::Acquire);
        let mut woken = Vec::new();
        self.durable_waiters.lock().retain(|(next, thread)| {
            let covered = *next <= durable;
            if covered {
                woken.push(thread.clone());
            }
            !covered
        });
        for thread in woken {
            thread.unpark();
        }
        // Usually empty: one uncontended lock per sync.
        let listeners: Vec<_> = {
            let mut listeners = self.durable_listeners.lock();
            listeners.retain(|l| l.strong_count() > 0);
            listeners.iter().filter_map(|l| l.upgrade()).collect()
        };
        for listener in listeners {
            listener(durable);
        }
    }

    /// Writes the buffered frames, then one `fdatasync` of the active
    /// segment, covering everything appended before it started (earlier
    /// segments were synced when sealed).
    pub(super) fn sync_leader(&self) -> Result<()> {
        let started = Instant::now();
        let mut w = self.writer.lock();
        // Until this sync's result is known, a seal must not trust its own
        // sync of the same file (see `seal`).
        self.sync.lock().fsync_running = true;
        let mut slot = self.write_slot.lock();
        let taken = take_pending(&mut w, &mut slot);
        let a = &w.active;
        let at = (a.header.base_seq, a.write_at);
        let (file, name, target, head, bytes) = (
            a.file.clone(),
            a.name(),
            w.next_seq,
            w.head,
            w.bytes_written,
        );
        drop(w);
        let written = match taken {
            Some(taken) => self.write_taken(&mut slot, taken),
            None => self.check_poison(),
        };
        drop(slot);
        if let Err(e) = written {
            self.sync.lock().fsync_running = false;
            self.fsync_over.notify_all();
            return Err(e);
        }
        let result = file.sync_data();
        self.last_sync_micros
            .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        {
            let mut sync = self.sync.lock();
            sync.fsync_running = false;
            if let Err(e) = &result {
                // Poisoned before a seal waiting on this sync looks.
                self.set_poison(format!("fdatasync of {name} failed: {e}"));
            }
        }
        self.fsync_over.notify_all();
        if let Err(e) = result {
            let w = self.writer.lock();
            self.after_failed_sync(&w, &e);
            return Err(Error::io(self.dir.join(name), e));
        }
        // Under Always records become readable once durable: before an
        // appender can see `durable_next` cover its record and return.
        if self.options.durability == Durability::Always {
            let mut view = self.view.write();
            if target > view.next_seq {
                view.next_seq = target;
                view.head = head;
                view.active_base = at.0;
                view.active_end = at.1;
            }
        }
        let mut sync = self.sync.lock();
        if target > sync.durable_next {
            sync.durable_next = target;
            self.durable_next.store(target, Ordering::Release);
            sync.durable_at = at;
            sync.synced_bytes = bytes;
        }
        // Records appended since the snapshot were appended after `started`.
        let appended = self.appended_next.load(Ordering::Acquire);
        sync.unsynced_since = (appended > sync.durable_next).then_some(started);
        Ok(())
    }

    /// The Batch policy's background syncer: syncs once the oldest unsynced
    /// record has waited `max_delay`, or when asked to.
    pub(super) fn run_flusher(&self, max_delay: Duration) {
        let mut sync = self.sync.lock();
        while !self.closing.load(Ordering::SeqCst) {
            let deadline = match sync.flush_requested {
                true => Some(Instant::now()),
                false => sync.unsynced_since.map(|t| t + max_delay),
            };
            match deadline {
                None => {
                    self.flusher_wake.wait_for(&mut sync, max_delay);
                }
                Some(deadline) if Instant::now() < deadline => {
                    self.flusher_wake.wait_until(&mut sync, deadline);
                }
                Some(_) => {
                    sync.flush_requested = false;
                    drop(sync);
                    let next = self.writer.lock().next_seq;
                    // A failure poisons the log; appenders see it.
                    let _ = self.sync_until(next);
                    sync = self.sync.lock();
                    if self.poison.lock().is_some() {
                        return;
                    }
                }
            }
        }
    }
}
