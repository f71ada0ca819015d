//! Rolling to a new segment: sealing the full one and indexing it in the background.

use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::event::Timestamp;
use crate::format::segment::{self, data_end_limit, SegmentHeader, SegmentTrailer, HEADER_BYTES};
use crate::index::{self, IndexBuilder};
use crate::tiles::SegmentTree;

use super::write_index::{IndexWork, SealedSegment};

use super::*;

impl Inner {
    /// Seals the active segment (if not yet) and starts the next one.
    pub(super) fn roll(&self, w: &mut Writer) -> Result<()> {
        if !w.active.sealed {
            self.seal(w)?;
            let sealed = SealedSegment {
                file: w.active.file.clone(),
                base: w.active.header.base_seq,
                data_end: w.active.write_at,
                count: w.active.count,
            };
            // Sent after the segment's last frames: the indexer thread
            // hands on the index it built from them.
            let mut slot = self.write_slot.lock();
            let tree = slot.tree.take_hashes();
            let next_base = w.next_seq;
            let work = IndexWork::Sealed {
                sealed,
                tree,
                next_base,
            };
            if let Some(IndexWork::Sealed { sealed, tree, .. }) = slot.feed.send(&self.index, work)
            {
                // No indexer thread took it: from here, with what it left.
                let index = self.index.take(next_base, self.options.index_block_bytes);
                self.index_in_background(sealed, tree, index);
            }
            drop(slot);
        }
        let header = SegmentHeader {
            version: segment::FORMAT_VERSION,
            log_id: self.log_id,
            base_seq: w.next_seq,
            prev_hash: w.head,
            segment_bytes: self.options.segment_bytes,
            created_at: Timestamp::now(),
        };
        // The seal wrote every frame, and nothing is taken for writing
        // without the writer lock: the tree holds the whole segment.
        let mut slot = self.write_slot.lock();
        let start_frontier = slot.tree.frontier().clone();
        // A failed create leaves at most a temporary file, removed on the
        // next attempt or open: the log itself is unchanged.
        let file = segment::create(&*self.storage, &self.dir, &header, &start_frontier)?;
        slot.tree = SegmentTree::new(start_frontier);
        slot.writeback_at = HEADER_BYTES;
        slot.zero_ahead = ZeroAhead::new(HEADER_BYTES);
        drop(slot);
        w.active = Active::new(file, header);
        self.view.write().segments.push(header.base_seq);
        self.publish(w);
        Ok(())
    }

    /// Writes the index file and the Merkle tiles of a segment just sealed,
    /// off the append path, after those of the previous seal (whose partial
    /// tiles this one's continue). A failure only costs a rebuild when the
    /// segment is first queried or proved.
    pub(super) fn index_in_background(
        &self,
        sealed: SealedSegment,
        tree: SegmentTree,
        index: Option<IndexBuilder>,
    ) {
        let (storage, dir) = (self.storage.clone(), self.dir.clone());
        let SealedSegment {
            file,
            base,
            data_end,
            count,
        } = sealed;
        let block_bytes = self.options.index_block_bytes;
        let mut indexers = self.indexers.lock();
        indexers.retain(|h| !h.is_finished());
        let previous = indexers.pop();
        indexers.push(std::thread::spawn(move || {
            // The indexer thread built it from the frames the open read and
            // those written since (any it lacks are added from the file).
            let mut builder = index
                .filter(|b| b.base_seq() == base && b.end() <= data_end)
                .unwrap_or_else(|| IndexBuilder::new(base, block_bytes));
            let built = match builder.end() < data_end {
                true => builder.extend_from(file, &segment::file_name(base), data_end),
                false => Ok(()),
            };
            if built.is_ok() && builder.records() == count && builder.end() == data_end {
                let _ = index::write_file(&*storage, &dir, base, &builder.encode());
            }
            if let Some(previous) = previous {
                let _ = previous.join();
            }
            // The Merkle tree's tiles: derived too, rebuilt when missing.
            let _ = crate::tiles::build_sealed(storage, dir, &tree, block_bytes);
        }));
    }

    /// Writes the buffered frames, syncs, then writes the trailer and syncs:
    /// the segment is complete and durable.
    pub(super) fn seal(&self, w: &mut Writer) -> Result<()> {
        self.write_pending(w)?;
        let a = &w.active;
        debug_assert!(a.count > 0, "an empty segment is never sealed");
        let trailer = SegmentTrailer {
            record_count: a.count,
            last_seq: w.next_seq - 1,
            last_hash: w.head,
            min_timestamp: a.min_ts,
            max_timestamp: a.max_ts,
            data_end: a.write_at,
            last_received_at: a.last_received_at,
        };
        let at = data_end_limit(a.header.segment_bytes);
        let name = self.dir.join(a.name());
        // The frames are made durable before the trailer is written, so a
        // trailer on disk always has its frames there: a crash can tear the
        // seal, never put a whole one ahead of its frames (which recovery
        // could not tell from tampering).
        if let Err(e) = a.file.sync_data() {
            self.after_failed_sync(w, &e);
            return Err(Error::io(name, e));
        }
        // A group-commit leader may be in, or just out of, an `fdatasync` of
        // this file that failed: the kernel then drops the dirty pages, and
        // this later `fdatasync` succeeds without them. Trust it only once
        // that sync is over and did not fail (a failure poisons first).
        drop(self.frames_synced_or_poisoned(w)?);
        let result = a
            .file
            .write_all_at(&trailer.encode(), at)
            .and_then(|()| a.file.sync_data());
        if let Err(e) = result {
            self.after_failed_sync(w, &e);
            return Err(Error::io(name, e));
        }
        let mut sync = self.frames_synced_or_poisoned(w)?;
        w.active.sealed = true;
        // Under Always, records become visible once durable: they are now,
        // before any appender learns that they are durable.
        self.publish(w);
        sync.durable_next = w.next_seq;
        self.durable_next.store(w.next_seq, Ordering::Release);
        sync.durable_at = (w.active.header.base_seq, w.active.write_at);
        sync.synced_bytes = w.bytes_written;
        sync.unsynced_since = None;
        drop(sync);
        self.wake_durable();
        Ok(())
    }

    /// Waits out a group-commit leader's `fdatasync` under way; errs (after
    /// undoing what may not be durable) if any sync failed.
    pub(super) fn frames_synced_or_poisoned(
        &self,
        w: &Writer,
    ) -> Result<parking_lot::MutexGuard<'_, SyncState>> {
        let mut sync = self.sync.lock();
        while sync.fsync_running {
            self.fsync_over.wait(&mut sync);
        }
        let poisoned = self.poison.lock().clone();
        if let Some(why) = poisoned {
            drop(sync);
            self.after_failed_sync(w, &std::io::Error::other(why.clone()));
            return Err(Error::Poisoned(why));
        }
        Ok(sync)
    }
}
