//! The write path: frames into the write buffer and onto the active segment.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::event;
use crate::event::record;
use crate::format::frame;
use crate::format::segment::{self, data_end_limit, HEADER_BYTES};
use crate::storage::StorageFile;
use crate::tiles::SegmentTree;

use super::*;

/// Where frames taken out of the write buffer go.
pub(super) struct TakenFrames {
    file: Arc<dyn StorageFile>,
    base: u64,
    at: u64,
    /// Where the segment's data area ends.
    limit: u64,
}

/// Moves the write buffer's frames into `slot` (empty), for one write.
pub(super) fn take_pending(w: &mut Writer, slot: &mut WriteSlot) -> Option<TakenFrames> {
    let slot = &mut slot.frames;
    debug_assert!(slot.is_empty());
    if w.pending.is_empty() {
        return None;
    }
    std::mem::swap(&mut w.pending, slot);
    let at = w.active.written_at;
    w.active.written_at += slot.len() as u64;
    Some(TakenFrames {
        file: w.active.file.clone(),
        base: w.active.header.base_seq,
        at,
        limit: data_end_limit(w.active.header.segment_bytes),
    })
}

/// Pushes the chain hashes of linked frames into the Merkle tree.
pub(super) fn push_hashes(tree: &mut SegmentTree, mut frames: &[u8]) {
    while !frames.is_empty() {
        tree.push(&frame::linked_hash(frames));
        frames = &frames[frame::built_len(frames)..];
    }
}

impl Inner {
    pub(super) fn check_poison(&self) -> Result<()> {
        if self.options.read_only {
            return Err(Error::ReadOnly);
        }
        match &*self.poison.lock() {
            Some(why) => Err(Error::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    pub(super) fn set_poison(&self, why: String) {
        let mut p = self.poison.lock();
        if p.is_none() {
            *p = Some(why);
        }
    }

    /// Assigns seqs and hashes, rolls if the batch does not fit, and
    /// appends the batch: into the write buffer, or (write-through, or a
    /// large batch) with one write after what is buffered. Returns the
    /// receipts and what the caller must do next.
    pub(super) fn write_batch(
        &self,
        frames: &mut [u8],
        count: usize,
    ) -> Result<(Vec<Receipt>, Appended)> {
        let mut w = self.writer.lock();
        self.check_poison()?;
        let len = frames.len() as u64;
        let limit = data_end_limit(w.active.header.segment_bytes);
        if w.active.sealed || w.active.write_at + len > limit {
            if w.active.count == 0 {
                // An empty segment (made with a smaller segment size) that
                // cannot take the batch; a new one would have the same name.
                return Err(Error::BatchTooLarge {
                    len,
                    max: limit - HEADER_BYTES,
                    unit: "bytes (one segment)",
                });
            }
            self.roll(&mut w)?;
        }
        if w.active.header.version != segment::FORMAT_VERSION {
            // Open refuses an older newest segment, and rolls write the
            // current version; this is a guard, not a path.
            return Err(Error::MigrationNeeded {
                dir: self.dir.clone(),
                version: w.active.header.version,
            });
        }
        // The engine's clock, never going back along the chain.
        let received_at = self.storage.now().max(w.last_received_at);
        let mut receipts = Vec::with_capacity(count);
        let mut head = w.head;
        let mut at = 0;
        for i in 0..count {
            let seq = w.next_seq + i as u64;
            let frame_len = frame::built_len(&frames[at..]);
            let record = frame::built_record_mut(&mut frames[at..]);
            record[record::RECEIVED_AT_OFFSET..record::RECEIVED_AT_OFFSET + 8]
                .copy_from_slice(&received_at.unix_nanos().to_le_bytes());
            head = frame::link(&mut frames[at..at + frame_len], seq, &head);
            receipts.push(Receipt { seq, hash: head });
            at += frame_len;
        }
        let write_behind = self.write_behind();
        let buffered_before = w.pending.len();
        let buffer = match self.options.durability {
            Durability::Always => frames.len() < DIRECT_WRITE_BYTES,
            _ => write_behind.is_some() && frames.len() < DIRECT_WRITE_BYTES,
        };
        if buffer {
            w.pending.extend_from_slice(frames);
        } else {
            self.write_direct(&mut w, frames)?;
        }
        let mut at = 0;
        for _ in 0..count {
            let record = frame::built_record(&frames[at..]);
            w.active
                .note_timestamp(event::record_timestamp(segment::FORMAT_VERSION, record));
            at += frame::built_len(&frames[at..]);
        }
        w.active.last_received_at = received_at;
        w.last_received_at = received_at;
        w.active.write_at += len;
        w.next_seq += count as u64;
        self.appended_next.store(w.next_seq, Ordering::Release);
        w.head = head;
        w.bytes_written += len;
        let started_unsynced = {
            let mut sync = self.sync.lock();
            let started = sync.unsynced_since.is_none();
            sync.unsynced_since.get_or_insert_with(Instant::now);
            started
        };
        if self.options.durability != Durability::Always {
            self.publish(&w);
        }
        let mut appended = Appended {
            bytes_written: w.bytes_written,
            started_unsynced,
            ..Appended::default()
        };
        if let Some(wb) = write_behind.filter(|_| buffer) {
            let threshold = wb.buffer_bytes as usize;
            appended.started_buffer = buffered_before == 0;
            appended.filled_buffer = buffered_before < threshold && w.pending.len() >= threshold;
            if w.pending.len() >= wb.full_bytes() {
                // The writer is behind: wait until it takes the buffer.
                while w.pending.len() >= wb.full_bytes() && self.poison.lock().is_none() {
                    self.wake_write_behind(false, true);
                    self.pending_taken
                        .wait_for(&mut w, Duration::from_millis(10));
                }
                // The write failed: these records will not be written.
                self.check_poison()?;
            }
        }
        Ok((receipts, appended))
    }

    /// Writes the buffered frames, then `frames`, holding the writer lock:
    /// write-through appends and batches too large to copy. A failed write of
    /// `frames` changes nothing once its range is zeroed (the writer state is
    /// updated only after it); a failed write of buffered frames, which were
    /// acknowledged, poisons the handle.
    pub(super) fn write_direct(&self, w: &mut Writer, frames: &[u8]) -> Result<()> {
        let mut slot = self.write_slot.lock();
        if let Some(taken) = take_pending(w, &mut slot) {
            self.write_taken(&mut slot, taken)?;
        }
        let at = w.active.written_at;
        let limit = data_end_limit(w.active.header.segment_bytes);
        self.zero_ahead(
            &mut slot.zero_ahead,
            &*w.active.file,
            at + frames.len() as u64,
            limit,
        );
        if let Err(e) = w.active.file.write_all_at(frames, at) {
            let name = w.active.name();
            self.after_failed_write(&w.active, at, frames.len() as u64, &e);
            return Err(Error::io(self.dir.join(name), e));
        }
        w.active.written_at += frames.len() as u64;
        push_hashes(&mut slot.tree, frames);
        slot.feed.frames(&self.index, &w.active.file, at, frames);
        self.start_writeback(&mut slot, &*w.active.file, w.active.written_at);
        self.note_written(w.active.header.base_seq, w.active.written_at);
        Ok(())
    }

    /// Writes what is in the write buffer, holding the writer lock (a seal
    /// does this before its trailer).
    pub(super) fn write_pending(&self, w: &mut Writer) -> Result<()> {
        let mut slot = self.write_slot.lock();
        match take_pending(w, &mut slot) {
            Some(taken) => self.write_taken(&mut slot, taken),
            None => self.check_poison(),
        }
    }

    /// Takes the write buffer and writes it after releasing the writer lock,
    /// so that appends go on meanwhile. Returns once everything buffered
    /// when it was called is written (an earlier write still under way is
    /// waited for).
    pub(super) fn write_pending_released(
        &self,
        mut w: parking_lot::MutexGuard<'_, Writer>,
    ) -> Result<()> {
        let mut slot = self.write_slot.lock();
        let taken = take_pending(&mut w, &mut slot);
        if taken.is_some() {
            self.pending_taken.notify_all();
        }
        drop(w);
        match taken {
            Some(taken) => self.write_taken(&mut slot, taken),
            None => self.check_poison(),
        }
    }

    /// Writes frames taken out of the write buffer. A failure poisons the
    /// handle: the frames were acknowledged, and no later frame may be
    /// written after a hole.
    pub(super) fn write_taken(&self, slot: &mut WriteSlot, taken: TakenFrames) -> Result<()> {
        let frames = &mut slot.frames;
        let len = frames.len() as u64;
        let result = match self.check_poison() {
            Ok(()) => {
                let end = taken.at + len;
                self.zero_ahead(&mut slot.zero_ahead, &*taken.file, end, taken.limit);
                taken.file.write_all_at(frames, taken.at)
            }
            Err(e) => {
                frames.clear();
                return Err(e);
            }
        };
        if result.is_ok() {
            push_hashes(&mut slot.tree, frames);
            slot.feed.frames(&self.index, &taken.file, taken.at, frames);
        }
        frames.clear();
        // The two buffers trade places at every take; one that a burst
        // grew far past what the buffer holds in steady state gives the
        // memory back, and only then (regrowing it touches fresh pages).
        let steady = self.steady_buffer_bytes();
        if frames.capacity() > 2 * steady {
            frames.shrink_to(steady);
        }
        let name = segment::file_name(taken.base);
        match result {
            Ok(()) => {
                self.start_writeback(slot, &*taken.file, taken.at + len);
                self.note_written(taken.base, taken.at + len);
                Ok(())
            }
            Err(e) => {
                let zeros = vec![0; len as usize];
                let _ = taken.file.write_all_at(&zeros, taken.at);
                self.set_poison(format!("write to {name} failed: {e}"));
                self.pending_taken.notify_all();
                Err(Error::io(self.dir.join(name), e))
            }
        }
    }

    /// Under the relaxed policies, starts writeback of what is written up to
    /// `end` once enough has gathered: the seal's `fdatasync` (on the
    /// appenders' path) then finds the segment almost clean. Under `Always`
    /// every write is synced at once anyway.
    pub(super) fn start_writeback(&self, slot: &mut WriteSlot, file: &dyn StorageFile, end: u64) {
        const WRITEBACK_BYTES: u64 = 256 << 10;
        if self.options.durability != Durability::Always
            && end >= slot.writeback_at + WRITEBACK_BYTES
        {
            file.start_writeback(slot.writeback_at, end - slot.writeback_at);
            slot.writeback_at = end;
        }
    }

    /// Under `Always`, zeros the range just past frames about to be written
    /// up to `end` (see `zero_ahead.rs`); the relaxed policies sync large
    /// ranges seldom and gain nothing from it.
    fn zero_ahead(&self, zero: &mut ZeroAhead, file: &dyn StorageFile, end: u64, limit: u64) {
        if self.options.durability != Durability::Always {
            return;
        }
        if let Some((at, len)) = zero.before_write(end, limit) {
            file.zero_ahead(at, len);
        }
    }

    /// Readers may now read the active segment `base` up to `end`.
    pub(super) fn note_written(&self, base: u64, end: u64) {
        let mut view = self.view.write();
        if view.active_base == base && end > view.written_end {
            view.written_end = end;
        }
    }

    /// Before a read: writes buffered frames that readers can see.
    pub(super) fn write_visible(&self) -> Result<()> {
        {
            let view = self.view.read();
            if view.written_end >= view.active_end {
                return Ok(());
            }
        }
        self.write_pending_released(self.writer.lock())
    }

    /// A failed write may have left part of the batch on disk: zero that
    /// range so nothing partial is ever read back. If even that fails, the
    /// state of the file is unknown and the handle is poisoned.
    pub(super) fn after_failed_write(
        &self,
        active: &Active,
        at: u64,
        len: u64,
        error: &std::io::Error,
    ) {
        let zeros = vec![0; len as usize];
        if active.file.write_all_at(&zeros, at).is_err() {
            self.set_poison(format!("write to {} failed: {error}", active.name()));
        }
    }

    /// Makes records appended so far visible to readers.
    pub(super) fn publish(&self, w: &Writer) {
        let mut view = self.view.write();
        if w.next_seq >= view.next_seq {
            if view.active_base != w.active.header.base_seq {
                // A segment just created: nothing in it is written yet.
                view.written_end = HEADER_BYTES;
            }
            view.next_seq = w.next_seq;
            view.head = w.head;
            view.active_base = w.active.header.base_seq;
            view.active_end = w.active.write_at;
        }
    }
}
