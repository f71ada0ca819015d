//! The active segment's index, built from the frames the write path already
//! holds in memory. Whoever writes frames to the segment (the write-behind
//! thread, a group-commit leader, a write-through append) adds a copy to
//! those collected for the log's indexer thread, which are handed to it by
//! the MiB (and before a seal or a query), and it adds them to the index
//! that the open started from the frames it read. A seal hands it the
//! sealed segment, whose index it encodes and writes without reading the
//! segment again, and a query of the active segment reads no frame twice.
//! The indexing has its own thread: on two cores the appending thread is
//! what bounds appends (docs/PERFORMANCE.md).

use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::error::Result;
use crate::event::{self, index_fields};
use crate::format::frame;
use crate::format::segment;
use crate::index::{IndexBuilder, IndexedFields};
use crate::storage::StorageFile;
use crate::tiles::SegmentTree;

use super::Inner;

/// Messages the write path may have queued for the indexer thread before a
/// write waits for it (each holds at most one write's frames).
pub(super) const FEED_DEPTH: usize = 16;
/// Spare buffers kept for the copies, and the largest one kept.
const SPARE_BUFFERS: usize = FEED_DEPTH + 2;
const SPARE_MAX_BYTES: usize = 4 << 20;
/// Frames are collected up to this many bytes before they are handed to
/// the indexer thread (or sooner, when a seal or a query needs them): one
/// wake-up of that thread per write cost 32 appenders under `Always` about
/// a tenth of their rate on two cores (a group commit writes a few KiB).
const HAND_OVER_BYTES: usize = 1 << 20;

/// What the indexer thread is handed, in the order of the segment's file.
pub(super) enum IndexWork {
    /// Linked frames just written at `at` in `file`.
    Frames {
        file: Arc<dyn StorageFile>,
        at: u64,
        frames: Vec<u8>,
    },
    /// The active segment was sealed: its index and tiles are to be
    /// written, and the next segment's index starts at `next_base`.
    Sealed {
        sealed: SealedSegment,
        tree: SegmentTree,
        next_base: u64,
    },
    /// The log is closing.
    Stop,
}

/// A segment just sealed, as its background indexing needs it.
pub(super) struct SealedSegment {
    pub(super) file: Arc<dyn StorageFile>,
    pub(super) base: u64,
    pub(super) data_end: u64,
    pub(super) count: u64,
}

/// The write path's end of the indexer thread's queue, kept in the write
/// slot so that frames are sent in the order they are written.
pub(super) struct IndexFeed {
    tx: Option<SyncSender<IndexWork>>,
    /// Messages sent so far.
    sent: u64,
    /// Frames written but not handed over yet (an `IndexWork::Frames` of
    /// consecutive writes).
    collected: Option<IndexWork>,
}

impl IndexFeed {
    /// A feed into `tx`; `None` when no indexer thread runs (read-only).
    pub(super) fn new(tx: Option<SyncSender<IndexWork>>) -> Self {
        IndexFeed {
            tx,
            sent: 0,
            collected: None,
        }
    }

    /// Hands over the frames collected, and returns the messages sent so
    /// far: a query waits until the indexer handled them.
    pub(super) fn handed_over(&mut self, shared: &IndexShared) -> u64 {
        self.hand_over(shared);
        self.sent
    }

    /// Collects a copy of `frames`, just written at `at`, for the indexer.
    /// Without an indexer thread the frames are left out: the index takes
    /// them from the file when it is next needed.
    pub(super) fn frames(
        &mut self,
        shared: &IndexShared,
        file: &Arc<dyn StorageFile>,
        at: u64,
        frames: &[u8],
    ) {
        if self.tx.is_none() {
            return;
        }
        if let Some(IndexWork::Frames {
            file: to,
            at: from,
            frames: collected,
        }) = &mut self.collected
        {
            if Arc::ptr_eq(to, file) && *from + collected.len() as u64 == at {
                collected.extend_from_slice(frames);
                if collected.len() >= HAND_OVER_BYTES {
                    self.hand_over(shared);
                }
                return;
            }
        }
        self.hand_over(shared);
        let mut copy = shared.spare.lock().pop().unwrap_or_default();
        copy.extend_from_slice(frames);
        self.collected = Some(IndexWork::Frames {
            file: file.clone(),
            at,
            frames: copy,
        });
        if frames.len() >= HAND_OVER_BYTES {
            self.hand_over(shared);
        }
    }

    /// Sends the frames collected, if any.
    fn hand_over(&mut self, shared: &IndexShared) {
        let Some(work) = self.collected.take() else {
            return;
        };
        if matches!(&work, IndexWork::Frames { frames, .. } if frames.len() > SPARE_MAX_BYTES) {
            // The queue bounds messages, not bytes: at most one large copy
            // is queued at a time, so the copies stay under about
            // FEED_DEPTH x SPARE_MAX_BYTES plus one write.
            drop(shared.wait_handled(self.sent));
        }
        let _ = self.send_now(work);
    }

    /// Sends `work` after the frames collected, waiting while the queue is
    /// full. Gives it back if no indexer thread takes it (none runs, or it
    /// has ended).
    pub(super) fn send(&mut self, shared: &IndexShared, work: IndexWork) -> Option<IndexWork> {
        self.hand_over(shared);
        self.send_now(work)
    }

    fn send_now(&mut self, work: IndexWork) -> Option<IndexWork> {
        let Some(tx) = &self.tx else {
            return Some(work);
        };
        let refused = match tx.try_send(work) {
            Ok(()) => None,
            Err(TrySendError::Full(work)) => tx.send(work).err().map(|e| e.0),
            Err(TrySendError::Disconnected(work)) => Some(work),
        };
        match refused {
            None => self.sent += 1,
            Some(_) => self.tx = None,
        }
        refused
    }
}

/// The index and the indexer thread's progress, shared with queries.
pub(super) struct IndexShared {
    state: Mutex<IndexState>,
    progressed: Condvar,
    spare: Mutex<Vec<Vec<u8>>>,
}

struct IndexState {
    index: WriteIndex,
    /// Messages the indexer thread has handled.
    handled: u64,
    /// The indexer thread has ended (or there is none).
    stopped: bool,
}

impl IndexShared {
    /// Starts from `index`, that of the newest segment as opened.
    pub(super) fn new(index: IndexBuilder, thread: bool) -> Self {
        IndexShared {
            state: Mutex::new(IndexState {
                index: WriteIndex {
                    builder: Some(index),
                },
                handled: 0,
                stopped: !thread,
            }),
            progressed: Condvar::new(),
            spare: Mutex::new(Vec::new()),
        }
    }

    /// Takes the index out (for the segment's seal), leaving that of the
    /// next segment, starting at `next_base`; counts as a message handled.
    pub(super) fn take(&self, next_base: u64, block_bytes: u32) -> Option<IndexBuilder> {
        let mut state = self.state.lock();
        let index = state.index.take(next_base, block_bytes);
        state.handled += 1;
        drop(state);
        self.progressed.notify_all();
        index
    }

    /// The index file bytes of the segment `base_seq` up to at least
    /// `limit`, once the indexer has handled the first `sent` messages.
    pub(super) fn encode_to(
        &self,
        sent: u64,
        file: &Arc<dyn StorageFile>,
        base_seq: u64,
        block_bytes: u32,
        limit: u64,
    ) -> Result<Vec<u8>> {
        let mut state = self.wait_handled(sent);
        state.index.encode_to(file, base_seq, block_bytes, limit)
    }

    /// Waits until the indexer thread has handled the first `sent`
    /// messages, or has ended.
    fn wait_handled(&self, sent: u64) -> parking_lot::MutexGuard<'_, IndexState> {
        let mut state = self.state.lock();
        while state.handled < sent && !state.stopped {
            // Woken at each message handled; the timeout only guards
            // against a wake-up lost to a thread that ended.
            self.progressed
                .wait_for(&mut state, Duration::from_millis(100));
        }
        state
    }
}

/// Ends the indexer thread's part when it returns or unwinds.
struct Stopped<'a>(&'a IndexShared);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.0.state.lock().stopped = true;
        self.0.progressed.notify_all();
    }
}

impl Inner {
    /// The indexer thread: adds the frames it is handed to the active
    /// segment's index, and starts the writing of a sealed segment's index
    /// and tiles.
    pub(super) fn run_indexer(&self, work: Receiver<IndexWork>) {
        let shared = &self.index;
        let _stopped = Stopped(shared);
        let block_bytes = self.options.index_block_bytes;
        for item in work {
            match item {
                IndexWork::Frames {
                    file,
                    at,
                    mut frames,
                } => {
                    let mut state = shared.state.lock();
                    state.index.add_frames(&file, at, &frames);
                    state.handled += 1;
                    drop(state);
                    shared.progressed.notify_all();
                    frames.clear();
                    let mut spare = shared.spare.lock();
                    if spare.len() < SPARE_BUFFERS && frames.capacity() <= SPARE_MAX_BYTES {
                        spare.push(frames);
                    }
                }
                IndexWork::Sealed {
                    sealed,
                    tree,
                    next_base,
                } => {
                    let index = shared.take(next_base, block_bytes);
                    self.index_in_background(sealed, tree, index);
                }
                IndexWork::Stop => return,
            }
        }
    }
}

/// The index of the active segment's written frames, from those an open
/// read and those written since. It may lag behind what is written (frames
/// left out: a log with no indexer thread): the frames it lacks are then
/// added from the file. `None` when a frame could not be
/// indexed; the seal then rebuilds it from the file.
#[derive(Debug)]
pub(super) struct WriteIndex {
    builder: Option<IndexBuilder>,
}

impl WriteIndex {
    /// The index of a segment starting at `base_seq`, nothing added yet.
    pub(super) fn new(base_seq: u64, block_bytes: u32) -> Self {
        WriteIndex {
            builder: Some(IndexBuilder::new(base_seq, block_bytes)),
        }
    }

    /// Adds `frames` (linked frames of the current format, just written at
    /// `at` in `file`), first adding from the file any frames before `at`
    /// it does not have yet.
    pub(super) fn add_frames(&mut self, file: &Arc<dyn StorageFile>, at: u64, mut frames: &[u8]) {
        let Some(builder) = self.caught_up(file, at) else {
            return;
        };
        let mut offset = at;
        while !frames.is_empty() {
            let len = frame::built_len(frames);
            let record = frame::built_record(frames);
            let Some(fields) = index_fields(segment::FORMAT_VERSION, record) else {
                self.builder = None;
                return;
            };
            let fields = IndexedFields {
                timestamp: event::record_timestamp(segment::FORMAT_VERSION, record),
                actor: fields.actor,
                event_type: fields.event_type,
                node: fields.node,
            };
            // The builder holds consecutive frames from the segment's
            // first: this one's seq follows them.
            let seq = builder.base_seq() + builder.records();
            builder.add_fields(offset, len as u64, seq, frame::linked_hash(frames), &fields);
            offset += len as u64;
            frames = &frames[len..];
        }
    }

    /// The builder, having added from `file` the frames up to `end` it
    /// lacks; `None` if it is unusable (it then stays so).
    fn caught_up(&mut self, file: &Arc<dyn StorageFile>, end: u64) -> Option<&mut IndexBuilder> {
        let builder = self.builder.as_mut()?;
        if builder.end() < end {
            let name = segment::file_name(builder.base_seq());
            if builder.extend_from(file.clone(), &name, end).is_err() {
                self.builder = None;
                return None;
            }
        }
        if builder.end() != end {
            self.builder = None;
            return None;
        }
        self.builder.as_mut()
    }

    /// The index file bytes of the segment `base_seq` up to at least
    /// `limit` (written frames; more if more were written).
    fn encode_to(
        &mut self,
        file: &Arc<dyn StorageFile>,
        base_seq: u64,
        block_bytes: u32,
        limit: u64,
    ) -> Result<Vec<u8>> {
        match &mut self.builder {
            Some(b) if b.base_seq() == base_seq && b.end() >= limit => return Ok(b.encode()),
            Some(b) if b.base_seq() == base_seq => {
                let name = segment::file_name(base_seq);
                if b.extend_from(file.clone(), &name, limit).is_ok() {
                    return Ok(b.encode());
                }
                self.builder = None;
            }
            _ => {}
        }
        // Another segment (the one queried was sealed meanwhile), or an
        // index that could not be kept: from the file.
        let mut b = IndexBuilder::new(base_seq, block_bytes);
        b.extend_from(file.clone(), &segment::file_name(base_seq), limit)?;
        Ok(b.encode())
    }

    /// Takes the index out (for the segment's seal), leaving that of the
    /// next segment, starting at `next_base`.
    fn take(&mut self, next_base: u64, block_bytes: u32) -> Option<IndexBuilder> {
        std::mem::replace(self, WriteIndex::new(next_base, block_bytes)).builder
    }
}

#[cfg(test)]
mod tests {
    use crate::format::segment::MIN_SEGMENT_BYTES;
    use crate::index::IndexBuilder;
    use crate::{Durability, Event, Log, Options, Timestamp};

    fn event(i: u64) -> Event {
        let mut e = Event::new(
            Timestamp::from_unix_nanos(1_700_000_000_000_000_000 - (i as i64 % 13) * 1_000),
            if i % 3 == 0 {
                "auth.login"
            } else {
                "pcap.download"
            },
            format!("user{}@acme.io", i % 9),
        );
        e.node = (i % 4 != 0).then(|| format!("edge-{}", i % 5));
        e.context
            .insert("pad".into(), "y".repeat((i * 37 % 400) as usize).into());
        e
    }

    /// The active segment's index a query gets is the one built from the
    /// segment's file, before and after a reopen in the middle of it.
    #[test]
    fn the_active_index_is_the_one_rebuilt_from_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let options = Options {
            segment_bytes: MIN_SEGMENT_BYTES,
            durability: Durability::None,
            index_block_bytes: 512,
            ..Options::default()
        };
        let mut log = Log::create(tmp.path(), options.clone()).unwrap();
        let mut checked = 0;
        for i in 0..1500u64 {
            log.append(&event(i)).unwrap();
            if i == 700 {
                log.close().unwrap();
                log = Log::open(tmp.path(), options.clone()).unwrap();
            }
            if i % 97 != 0 {
                continue;
            }
            let snap = log.snapshot().unwrap();
            let (name, file) = crate::format::segment::open_for_reading(
                &*snap.storage,
                &snap.dir,
                snap.active_base,
            )
            .unwrap();
            let header = crate::format::segment::read_header(&*file, &name).unwrap();
            let got = snap
                .log
                .active_index(file.clone(), &header, snap.active_end)
                .unwrap();
            let mut want = IndexBuilder::new(snap.active_base, 512);
            want.extend_from(file, &name, snap.active_end).unwrap();
            assert!(got == want.encode(), "record {i}: the active index differs");
            checked += 1;
        }
        assert_eq!(checked, 16);
        assert!(log.state().segments >= 3);
    }
}
