//! The log: open and recover, append with group commit, roll segments, read.
//! Uses the layers below it (event, hash, storage, format, index, retention,
//! tiles, verify); the query, archive and server layers use it.
//!
//! This file holds the handle (`Log`) and its shared state; the work is in
//! `options` (what a caller chooses), `open` (create, open, recover the
//! newest segment), `write` (frames into the buffer and the file),
//! `write_behind`, `write_index` (the active segment's index, built by an
//! indexer thread from the frames written), `sync` (group commit), `seal`
//! (rolling segments),
//! `checkpoint`, `read` (snapshots and the record iterator), and the
//! maintenance modules `retention`, `cut`, `migrate`, `recover`, `tiles`.

pub mod cut;
mod migrate;
mod recover;
mod retention;

pub use migrate::Migration;
pub use recover::Damage;
pub use retention::RetentionOutcome;
pub use tiles::RebuildStats;

mod tiles;

mod checkpoint;
mod open;
mod options;
mod read;
mod seal;
mod sync;
mod write;
mod write_behind;
mod write_index;
mod zero_ahead;

pub use checkpoint::TreeHead;
use open::read_frontier;
pub use options::{
    os_user_appender, CheckpointSchedule, Durability, Options, WriteBehind, DEFAULT_APPENDER,
};
pub use read::Records;
pub(crate) use read::Snapshot;
use write::take_pending;
use write_index::{IndexFeed, IndexShared};
use zero_ahead::ZeroAhead;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::error::{Error, Result};
use crate::event::record::{self, Origin};
use crate::event::{self, EncodeRecord, EngineEvent, Event, RecordView, Timestamp};
use crate::format::frame;
use crate::format::segment::{self, data_end_limit, SegmentHeader, HEADER_BYTES};
use crate::hash::chain::{ChainHash, LogId};
use crate::index::IndexBuilder;
use crate::limits::MAX_BATCH_EVENTS;
use crate::retention::RetentionPolicy;
use crate::storage::{DirLock, Storage, StorageFile};
use crate::tiles::SegmentTree;

thread_local! {
    /// Each appending thread's buffer for encoding frames (see
    /// `Log::append_batch`); a batch that needed more than
    /// `DIRECT_WRITE_BYTES` is not kept.
    static ENCODE_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A batch at least this large is written straight from the caller's
/// buffer (after whatever is buffered), not copied into the write buffer.
const DIRECT_WRITE_BYTES: usize = 256 << 10;

/// Proof of an append: the record's seq and chain hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Receipt {
    /// Position in the log.
    pub seq: u64,
    /// The record's chain hash.
    pub hash: ChainHash,
}

/// A stored record: the event with its seq and chain hash.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Position in the log.
    pub seq: u64,
    /// The record's chain hash (as stored; `verify` recomputes it).
    pub hash: ChainHash,
    /// The event.
    pub event: Event,
    /// When the engine received it (`None` for a version 1 record).
    pub received_at: Option<Timestamp>,
    /// Who wrote it: a client, the engine, or unrecorded (version 1).
    pub origin: event::Origin,
    /// Who appended it (`None` for a version 1 record).
    pub appender: Option<String>,
}

impl Record {
    /// The owned record from its decoded bytes, parsing the context.
    pub(crate) fn from_view(
        seq: u64,
        hash: ChainHash,
        view: &RecordView<'_>,
    ) -> Result<Self, event::EventError> {
        Ok(Record {
            seq,
            hash,
            event: view.to_event()?,
            received_at: view.received_at,
            origin: view.origin,
            appender: view.appender.map(str::to_string),
        })
    }
}

/// A summary of the log as the handle sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogState {
    /// The log's id.
    pub log_id: LogId,
    /// Segment files.
    pub segments: usize,
    /// First retained seq.
    pub first_seq: u64,
    /// Seq the next append gets; `next_seq - first_seq` records are retained.
    pub next_seq: u64,
    /// Hash of the newest record (the genesis hash when empty).
    pub head: ChainHash,
    /// Records below this seq are durable.
    pub durable_next_seq: u64,
}

/// The segment being appended to.
struct Active {
    file: Arc<dyn StorageFile>,
    header: SegmentHeader,
    /// Offset of the next frame.
    write_at: u64,
    /// Frames below this offset have been taken out of the write buffer
    /// (written, or being written); `Writer::pending` holds the rest.
    written_at: u64,
    count: u64,
    min_ts: Timestamp,
    max_ts: Timestamp,
    /// The received_at of the newest record (version 2; the epoch before
    /// the first and in a version 1 segment).
    last_received_at: Timestamp,
    /// Sealed (trailer written); the next append must roll first.
    sealed: bool,
}

/// The newest segment as open or create leaves it: where appends go on.
struct Newest {
    active: Active,
    /// The chain head.
    head: ChainHash,
    /// The Merkle tree before and including the segment's records; for a
    /// read-only open, which never extends it, only the tree before them.
    tree: SegmentTree,
    /// The segment's index, of the records read on open (recovery reads
    /// each of them anyway: the index is not read again from the file).
    index: IndexBuilder,
}

impl Active {
    /// A segment with no records yet looked at: frames start at the header's end.
    fn new(file: Arc<dyn StorageFile>, header: SegmentHeader) -> Self {
        Active {
            file,
            header,
            write_at: HEADER_BYTES,
            written_at: HEADER_BYTES,
            count: 0,
            min_ts: Timestamp::default(),
            max_ts: Timestamp::default(),
            last_received_at: Timestamp::default(),
            sealed: false,
        }
    }

    fn name(&self) -> String {
        segment::file_name(self.header.base_seq)
    }

    fn note_timestamp(&mut self, ts: Timestamp) {
        if self.count == 0 {
            self.min_ts = ts;
            self.max_ts = ts;
        } else {
            self.min_ts = self.min_ts.min(ts);
            self.max_ts = self.max_ts.max(ts);
        }
        self.count += 1;
    }
}

struct Writer {
    active: Active,
    next_seq: u64,
    head: ChainHash,
    /// Frame bytes appended since open (for the Batch byte trigger).
    bytes_written: u64,
    /// Linked frames of the active segment that belong at
    /// `active.written_at..active.write_at` and are not yet written.
    pending: Vec<u8>,
    /// The received_at of the newest record: the next one gets at least it.
    last_received_at: Timestamp,
}

/// What a write of the active segment works with (see `Inner::write_slot`).
struct WriteSlot {
    /// The frames being written, taken out of `Writer::pending`; empty
    /// between writes.
    frames: Vec<u8>,
    /// The Merkle tree before and including the segment's written records:
    /// whoever writes frames pushes their hashes, off the appenders' path.
    /// A read-only log writes nothing and never reads it.
    tree: SegmentTree,
    /// Where the written frames go to be indexed (see `write_index`).
    feed: IndexFeed,
    /// Writeback was started for the segment's frames below this offset.
    writeback_at: u64,
    /// Under `Always`, how far the data area is zeroed ahead of the frames.
    zero_ahead: ZeroAhead,
}

/// What an append left for its caller to do, outside the writer lock.
#[derive(Default)]
struct Appended {
    /// `Writer::bytes_written` after the append.
    bytes_written: u64,
    /// Nothing was unsynced before the append (the Batch flusher's delay
    /// starts).
    started_unsynced: bool,
    /// The append started an empty write buffer.
    started_buffer: bool,
    /// The append took the write buffer past `WriteBehind::buffer_bytes`.
    filled_buffer: bool,
}

/// What readers may see: records below `next_seq`.
#[derive(Clone)]
struct View {
    segments: Vec<u64>,
    next_seq: u64,
    head: ChainHash,
    active_base: u64,
    /// End of visible data in the active segment.
    active_end: u64,
    /// End of the data written to the active segment's file; below
    /// `active_end` while visible records are still in the write buffer.
    written_end: u64,
}

struct SyncState {
    /// Records below this seq are durable.
    durable_next: u64,
    /// Where durable data ends: (segment base, offset).
    durable_at: (u64, u64),
    /// A leader has taken its snapshot and its `fdatasync` has not yet
    /// returned (a failure poisons the handle before this is cleared).
    fsync_running: bool,
    /// `Writer::bytes_written` as of the last sync.
    synced_bytes: u64,
    /// When the oldest unsynced record was written (Batch).
    unsynced_since: Option<Instant>,
    /// The write-behind thread found half of `max_bytes` unsynced: the
    /// Batch flusher syncs now.
    flush_requested: bool,
}

/// What the write-behind thread is asked to do.
#[derive(Default)]
struct BehindState {
    /// When the oldest buffered frame was appended: write by then plus the
    /// delay.
    since: Option<Instant>,
    /// The buffer reached `buffer_bytes`: write now.
    full: bool,
}

struct Inner {
    dir: PathBuf,
    /// Read-only: where damage in the newest segment stops the reading.
    damage: Mutex<Option<Damage>>,
    storage: Arc<dyn Storage>,
    options: Options,
    log_id: LogId,
    writer: Mutex<Writer>,
    view: RwLock<View>,
    sync: Mutex<SyncState>,
    /// `SyncState::durable_next`, readable without the lock.
    durable_next: AtomicU64,
    /// `Writer::next_seq`, readable without the writer lock.
    appended_next: AtomicU64,
    /// A group-commit leader is syncing. Changed only under the sync lock
    /// (which decides who leads); read without it by appenders that wait
    /// for a sync by yielding.
    leading: AtomicBool,
    /// How many appenders wait for a leader's sync, yielding or parked.
    waiting: AtomicUsize,
    /// How many must wait before they wait by yielding (four a core).
    yield_from: usize,
    /// How long the last group-commit round's write and `fdatasync` took,
    /// in microseconds: what bounds how long a waiting appender yields.
    last_sync_micros: AtomicU64,
    /// Appenders waiting for a sync under way: the seq each waits for (its
    /// records are below it) and its thread, so that a sync wakes only the
    /// appenders it covers, all at once, without a mutex to pass around.
    durable_waiters: Mutex<Vec<(u64, std::thread::Thread)>>,
    /// Called after records become durable (see [`Log::on_durable`]); held
    /// weakly, so a listener that is dropped is forgotten.
    durable_listeners: Mutex<Vec<std::sync::Weak<DurableListener>>>,
    /// Held for the length of a write of the active segment, and taken
    /// while the writer lock is held, so writes happen one at a time and in
    /// the order the frames were appended.
    write_slot: Mutex<WriteSlot>,
    /// Wakes the write-behind thread.
    behind: Mutex<BehindState>,
    behind_wake: Condvar,
    /// Signalled (with the writer lock) when the write buffer is taken, for
    /// appenders waiting because it was full.
    pending_taken: Condvar,
    /// Signalled when a leader's `fdatasync` returns (a seal waits for it).
    fsync_over: Condvar,
    flusher_wake: Condvar,
    poison: Mutex<Option<String>>,
    closing: AtomicBool,
    /// The active segment's index, built by the indexer thread.
    index: IndexShared,
    /// Threads writing the indexes of segments just sealed.
    indexers: Mutex<Vec<JoinHandle<()>>>,
    /// The last error of automatic maintenance.
    maintenance: Mutex<Option<String>>,
    /// Held by retention and legal-hold changes, one at a time.
    retention_lock: Mutex<()>,
    _lock: Option<Box<dyn DirLock>>,
}

/// A function told the seq below which records are now durable; see
/// [`Log::on_durable`].
pub type DurableListener = dyn Fn(u64) + Send + Sync;

/// An append-only, hash-chained, segmented log in one directory.
///
/// `Log` is `Send + Sync`: share it (in an `Arc`) between appending and
/// reading threads. See the crate docs for an example.
pub struct Log {
    inner: Arc<Inner>,
    write_behind: Option<JoinHandle<()>>,
    flusher: Option<JoinHandle<()>>,
    checkpointer: Option<JoinHandle<()>>,
    indexer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.inner.dir)
            .field("log_id", &self.inner.log_id)
            .finish()
    }
}

pub(crate) fn list_segments(storage: &dyn Storage, dir: &Path) -> Result<Vec<u64>> {
    let names = storage.list(dir).map_err(|e| Error::io(dir, e))?;
    let mut bases: Vec<u64> = names
        .iter()
        .filter_map(|n| segment::parse_file_name(n))
        .collect();
    bases.sort_unstable();
    Ok(bases)
}

impl Log {
    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The log's random id.
    pub fn log_id(&self) -> LogId {
        self.inner.log_id
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// Appends one event; see [`Log::append_batch`].
    pub fn append(&self, event: &Event) -> Result<Receipt> {
        let receipts = self.append_batch(std::slice::from_ref(event))?;
        receipts
            .into_iter()
            .next()
            .ok_or(Error::InvalidOptions("empty batch".into()))
    }

    /// Appends events as one batch: all are validated first (an invalid
    /// event appends nothing), then written with one write into one segment,
    /// then made durable as the policy says. Returns a receipt per event.
    ///
    /// `events` are usually [`Event`]s; anything that implements
    /// [`EncodeRecord`] can be appended.
    pub fn append_batch<E: EncodeRecord>(&self, events: &[E]) -> Result<Vec<Receipt>> {
        self.append_with_origin(events, Origin::Client)
    }

    /// Appends a record the engine writes about itself (retention, legal
    /// holds, recovery cuts, migration): origin `engine`, which no public
    /// append path can write, and a reserved (`log.*`) type allowed.
    pub(crate) fn append_engine(&self, event: &Event) -> Result<Receipt> {
        let receipts =
            self.append_with_origin(std::slice::from_ref(&EngineEvent(event)), Origin::Engine)?;
        receipts
            .into_iter()
            .next()
            .ok_or(Error::InvalidOptions("empty batch".into()))
    }

    fn append_with_origin<E: EncodeRecord>(
        &self,
        events: &[E],
        origin: Origin,
    ) -> Result<Vec<Receipt>> {
        if events.len() > MAX_BATCH_EVENTS {
            return Err(Error::BatchTooLarge {
                len: events.len() as u64,
                max: MAX_BATCH_EVENTS as u64,
                unit: "events",
            });
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // Encode outside the lock; only seq, hash and CRC are filled in
        // under it. The buffer is the thread's own, reused, so that an
        // append neither allocates nor touches fresh memory.
        let mut frames = ENCODE_BUFFER.with_borrow_mut(std::mem::take);
        frames.clear();
        frames.reserve(events.len() * 320);
        let default_appender = self.inner.options.appender.as_str();
        for event in events {
            let start = frame::begin(&mut frames);
            // received_at is filled in under the writer lock.
            let appender = event.appender().unwrap_or(default_appender);
            record::encode_provenance(Timestamp::default(), origin, appender, &mut frames)?;
            event.encode_record(&mut frames)?;
            frame::finish(&mut frames, start);
        }
        let capacity = data_end_limit(self.inner.options.segment_bytes) - HEADER_BYTES;
        if frames.len() as u64 > capacity {
            return Err(Error::BatchTooLarge {
                len: frames.len() as u64,
                max: capacity,
                unit: "bytes (one segment)",
            });
        }
        let frame_bytes = frames.len() as u64;
        let (receipts, appended) = self.inner.write_batch(&mut frames, events.len())?;
        crate::storage::stats::record_append(receipts.len() as u64, frame_bytes);
        if frames.capacity() <= DIRECT_WRITE_BYTES {
            ENCODE_BUFFER.with_borrow_mut(|kept| *kept = frames);
        }
        self.inner.after_append(&appended);
        let next = receipts.last().map_or(0, |r| r.seq + 1);
        self.inner.after_write(next, &appended)?;
        if let Some(policy) = &self.inner.options.retention {
            let first = receipts.first().map_or(0, |r| r.seq);
            if self.inner.view.read().active_base == first {
                self.auto_retention(policy);
            }
        }
        Ok(receipts)
    }

    /// Retention after a roll. Skipped while a retention run is under way
    /// (its own record can roll the segment); errors are kept for
    /// [`Log::last_maintenance_error`], since the append itself succeeded.
    fn auto_retention(&self, policy: &RetentionPolicy) {
        if self.inner.retention_lock.try_lock().is_none() {
            return;
        }
        match self.apply_retention(policy) {
            Ok(_) | Err(Error::LegalHold { .. }) => {}
            Err(e) => *self.inner.maintenance.lock() = Some(format!("retention: {e}")),
        }
    }

    /// Makes every appended record durable now, whatever the policy.
    pub fn sync(&self) -> Result<()> {
        let next = self.inner.writer.lock().next_seq;
        self.inner.sync_until(next)
    }

    /// Records below this seq are durable; an atomic load, no lock.
    pub fn durable_next_seq(&self) -> u64 {
        self.inner.durable_next.load(Ordering::Acquire)
    }

    /// The newest segment's base seq and the offset where the data written
    /// to its file ends (what a reader of the file finds): for a replicator
    /// that uploads the file's new bytes.
    pub fn written_end(&self) -> (u64, u64) {
        let view = self.inner.view.read();
        (view.active_base, view.written_end)
    }

    /// Calls `listener` with [`Log::durable_next_seq`] each time records
    /// become durable (after each group commit and seal), on the thread
    /// that made them so: it must be quick and must not append. The log
    /// holds it weakly: drop the `Arc` to stop. For live readers (the
    /// server's tail) that would otherwise poll.
    pub fn on_durable(&self, listener: &Arc<DurableListener>) {
        let mut listeners = self.inner.durable_listeners.lock();
        listeners.retain(|l| l.strong_count() > 0);
        listeners.push(Arc::downgrade(listener));
    }

    /// Blocks until the record at `seq` is durable (syncing if nobody else will).
    pub fn wait_durable(&self, seq: u64) -> Result<()> {
        self.inner.sync_until(seq.saturating_add(1))
    }

    /// A snapshot of the log's bounds and head.
    pub fn state(&self) -> LogState {
        let view = self.inner.view.read();
        let durable_next_seq = self.inner.sync.lock().durable_next;
        LogState {
            log_id: self.inner.log_id,
            segments: view.segments.len(),
            first_seq: view.segments.first().copied().unwrap_or(0),
            next_seq: view.next_seq,
            head: view.head,
            durable_next_seq,
        }
    }

    /// Syncs (under every policy) and closes, reporting a failed final sync.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        self.inner.closing.store(true, Ordering::SeqCst);
        {
            let _guard = self.inner.sync.lock();
            self.inner.flusher_wake.notify_all();
        }
        {
            let _guard = self.inner.behind.lock();
            self.inner.behind_wake.notify_all();
        }
        if let Some(writer) = self.write_behind.take() {
            let _ = writer.join();
        }
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
        if let Some(checkpointer) = self.checkpointer.take() {
            let _ = checkpointer.join();
        }
        let result = if self.inner.options.read_only || self.inner.poison.lock().is_some() {
            Ok(())
        } else {
            self.sync()
        };
        // The indexer thread ends after the last frames' message.
        let inner = &self.inner;
        let stop = write_index::IndexWork::Stop;
        let _ = inner.write_slot.lock().feed.send(&inner.index, stop);
        if let Some(indexer) = self.indexer.take() {
            let _ = indexer.join();
        }
        for indexer in std::mem::take(&mut *self.inner.indexers.lock()) {
            let _ = indexer.join();
        }
        result
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        // Best effort: `close` reports a failing final sync.
        let _ = self.shutdown();
    }
}
