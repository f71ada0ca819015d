//! The log: open and recover, append with group commit, roll segments, read.

pub mod cut;
mod migrate;
mod recover;
mod retention;

pub use migrate::Migration;
pub use recover::Damage;
pub use retention::RetentionOutcome;
pub use tiles::RebuildStats;

mod tiles;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::error::{Error, Result};
use crate::event::record::{self, Origin};
use crate::event::{self, EncodeRecord, EngineEvent, Event, RecordView, Timestamp};
use crate::format::frame;
use crate::format::segment::{
    self, data_end_limit, Scanner, SegmentHeader, SegmentTrailer, Step, HEADER_BYTES,
    MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES, TEMP_SUFFIX, TRAILER_BYTES,
};
use crate::hash::chain::{ChainHash, LogId};
use crate::hash::checkpoint::{Checkpoint, NoteSigner};
use crate::hash::merkle::Frontier;
use crate::index::{self, IndexBuilder};
use crate::limits::MAX_BATCH_EVENTS;
use crate::retention::RetentionPolicy;
use crate::storage::{DirLock, FsStorage, Storage, StorageFile};
use crate::tiles::SegmentTree;

/// When an append is acknowledged, relative to `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `append` returns only after the record is on stable storage.
    /// Concurrent appenders share one `fdatasync` (group commit).
    Always,
    /// `append` returns once the record is written to the OS (or, with
    /// [`Options::write_behind`], to the log's write buffer); a background
    /// thread syncs within `max_delay` of the first unsynced append, and an
    /// append that leaves `max_bytes` or more unsynced syncs at once. With
    /// write-behind, the background thread also syncs once half of
    /// `max_bytes` is unsynced, so that appends seldom have to. A crash
    /// can lose at most the records of the last `max_delay` plus the
    /// duration of one `fdatasync` (a record acknowledged just after a sync
    /// began waits for the next), and under `max_bytes` of them.
    Batch {
        /// Longest time a record stays unsynced.
        max_delay: Duration,
        /// Most bytes left unsynced.
        max_bytes: u64,
    },
    /// `append` returns once the record is written to the OS (or, with
    /// [`Options::write_behind`], to the log's write buffer); syncs happen
    /// only when a segment is sealed, on [`Log::sync`] and on close. A crash
    /// can lose everything since the last of those.
    None,
}

/// Write-behind under the relaxed policies ([`Durability::Batch`] and
/// [`Durability::None`]): an append copies its frames into the log's write
/// buffer and returns, and a background thread writes the buffer to the OS
/// with one write, so that one `pwrite` carries many appends and the copy
/// into the page cache runs on another core than the hashing.
///
/// A buffered record is visible to readers of the same [`Log`] at once (a
/// read first writes the buffer out), and to other processes once written:
/// within `max_delay`, or sooner once `buffer_bytes` are waiting. A process
/// that dies (kill -9) loses what was still buffered, which these policies
/// already allow for a crash. Under [`Durability::Always`] appends are
/// coalesced the same way, but the group commit leader writes them, right
/// before its `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteBehind {
    /// Wake the background writer once this many bytes are buffered.
    /// Default 256 KiB; between 4 KiB and 64 MiB. An append waits for the
    /// writer when four times this much is buffered.
    pub buffer_bytes: u32,
    /// Longest time a record stays buffered before it is written. Default
    /// 1 ms.
    pub max_delay: Duration,
}

impl Default for WriteBehind {
    fn default() -> Self {
        WriteBehind {
            buffer_bytes: 256 << 10,
            max_delay: Duration::from_millis(1),
        }
    }
}

impl WriteBehind {
    const BUFFER_BYTES_RANGE: std::ops::RangeInclusive<u32> = 4 << 10..=64 << 20;

    /// Buffered bytes at which an append waits for the background writer.
    fn full_bytes(&self) -> usize {
        self.buffer_bytes as usize * 4
    }
}

thread_local! {
    /// Each appending thread's buffer for encoding frames (see
    /// `Log::append_batch`); a batch that needed more than
    /// `DIRECT_WRITE_BYTES` is not kept.
    static ENCODE_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A batch at least this large is written straight from the caller's
/// buffer (after whatever is buffered), not copied into the write buffer.
const DIRECT_WRITE_BYTES: usize = 256 << 10;

/// How a log is created or opened.
#[derive(Debug, Clone)]
pub struct Options {
    /// Size of each segment file, preallocated. Default 64 MiB; between
    /// [`MIN_SEGMENT_BYTES`] and [`MAX_SEGMENT_BYTES`], a multiple of 8.
    /// Applies to segments created from now on.
    pub segment_bytes: u64,
    /// The sync policy. Default [`Durability::Always`].
    pub durability: Durability,
    /// Open without the writer lock and without repairing anything; appends
    /// fail with [`Error::ReadOnly`]. Default false.
    pub read_only: bool,
    /// Target size of an index block: the time index has an entry, and the
    /// postings a block number, every this many bytes of frames. Default
    /// 4 KiB; between 512 bytes and 1 MiB.
    pub index_block_bytes: u32,
    /// Apply this retention policy after every segment roll. Default none.
    pub retention: Option<RetentionPolicy>,
    /// Write signed checkpoints on a schedule. Default none.
    pub checkpoints: Option<CheckpointSchedule>,
    /// Under the relaxed policies, buffer appends and write them from a
    /// background thread. Default `Some(WriteBehind::default())`; `None`
    /// writes every append to the OS before it returns.
    pub write_behind: Option<WriteBehind>,
    /// Who appends: recorded in every record this handle appends (the
    /// record's `appender`), unless a record names its own
    /// ([`EncodeRecord::appender`]). 1..=256 bytes, no control or invisible
    /// format character. Default [`DEFAULT_APPENDER`]: an embedding program
    /// should name its principal; the CLI names the operating-system user
    /// ([`os_user_appender`]). The default is a constant, not the user, so
    /// that the bytes a program writes do not depend on who runs it.
    pub appender: String,
}

/// The default [`Options::appender`].
pub const DEFAULT_APPENDER: &str = "chainlog";

/// The operating-system user name from `$USER`, `$LOGNAME` or `$USERNAME`
/// (the first one set and a valid appender), else [`DEFAULT_APPENDER`].
pub fn os_user_appender() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|user| event::record::check_appender(user).is_ok())
        .unwrap_or_else(|| DEFAULT_APPENDER.to_string())
}

/// Signed checkpoints written automatically by a running log.
#[derive(Debug, Clone)]
pub struct CheckpointSchedule {
    /// Where to write them: `<size, 20 digits>.checkpoint` for each, and
    /// `latest.checkpoint`. Point it at storage outside the log's directory.
    pub dir: PathBuf,
    /// The signing key.
    pub signer: NoteSigner,
    /// Origin prefix (the origin is `<prefix>/<log id>`).
    pub origin_prefix: String,
    /// Write one once this many records were appended since the last.
    pub every_records: Option<u64>,
    /// Write one at least this often while records are being appended.
    pub every: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes: 64 << 20,
            durability: Durability::Always,
            read_only: false,
            index_block_bytes: index::DEFAULT_BLOCK_BYTES,
            retention: None,
            checkpoints: None,
            write_behind: Some(WriteBehind::default()),
            appender: DEFAULT_APPENDER.to_string(),
        }
    }
}

impl Options {
    fn validate(&self) -> Result<()> {
        event::record::check_appender(&self.appender)
            .map_err(|e| Error::InvalidOptions(format!("appender: {e}")))?;
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes)
            || self.segment_bytes % 8 != 0
        {
            return Err(Error::InvalidOptions(format!(
                "segment_bytes must be a multiple of 8 between {MIN_SEGMENT_BYTES} and {MAX_SEGMENT_BYTES}, not {}",
                self.segment_bytes
            )));
        }
        if !index::BLOCK_BYTES_RANGE.contains(&self.index_block_bytes) {
            return Err(Error::InvalidOptions(format!(
                "index_block_bytes must be between {} and {}, not {}",
                index::BLOCK_BYTES_RANGE.start(),
                index::BLOCK_BYTES_RANGE.end(),
                self.index_block_bytes
            )));
        }
        if let Durability::Batch { max_delay, .. } = self.durability {
            if max_delay.is_zero() {
                return Err(Error::InvalidOptions(
                    "Batch max_delay must be positive".into(),
                ));
            }
        }
        if let Some(wb) = &self.write_behind {
            let range = WriteBehind::BUFFER_BYTES_RANGE;
            if !range.contains(&wb.buffer_bytes) {
                return Err(Error::InvalidOptions(format!(
                    "write_behind buffer_bytes must be between {} and {}, not {}",
                    range.start(),
                    range.end(),
                    wb.buffer_bytes
                )));
            }
            if wb.max_delay.is_zero() {
                return Err(Error::InvalidOptions(
                    "write_behind max_delay must be positive".into(),
                ));
            }
        }
        Ok(())
    }
}

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
    /// The Merkle tree before and including the segment's records.
    tree: SegmentTree,
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
    tree: SegmentTree,
    /// Writeback was started for the segment's frames below this offset.
    writeback_at: u64,
}

/// Where frames taken out of the write buffer go.
struct TakenFrames {
    file: Arc<dyn StorageFile>,
    base: u64,
    at: u64,
}

/// Moves the write buffer's frames into `slot` (empty), for one write.
fn take_pending(w: &mut Writer, slot: &mut WriteSlot) -> Option<TakenFrames> {
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
    })
}

/// Pushes the chain hashes of linked frames into the Merkle tree.
fn push_hashes(tree: &mut SegmentTree, mut frames: &[u8]) {
    while !frames.is_empty() {
        tree.push(&frame::linked_hash(frames));
        frames = &frames[frame::built_len(frames)..];
    }
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
    /// A leader is in `fdatasync`.
    syncing: bool,
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
    /// Appenders waiting for a sync under way: the seq each waits for (its
    /// records are below it) and its thread, so that a sync wakes only the
    /// appenders it covers, all at once, without a mutex to pass around.
    durable_waiters: Mutex<Vec<(u64, std::thread::Thread)>>,
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
    /// The active segment's index, kept in memory and extended by queries.
    active_index: Mutex<Option<IndexBuilder>>,
    /// Threads writing the indexes of segments just sealed.
    indexers: Mutex<Vec<JoinHandle<()>>>,
    /// The last error of automatic maintenance.
    maintenance: Mutex<Option<String>>,
    /// Held by retention and legal-hold changes, one at a time.
    retention_lock: Mutex<()>,
    _lock: Option<Box<dyn DirLock>>,
}

/// An append-only, hash-chained, segmented log in one directory.
///
/// `Log` is `Send + Sync`: share it (in an `Arc`) between appending and
/// reading threads. See the crate docs for an example.
pub struct Log {
    inner: Arc<Inner>,
    write_behind: Option<JoinHandle<()>>,
    flusher: Option<JoinHandle<()>>,
    checkpointer: Option<JoinHandle<()>>,
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
    /// Creates a new log in `dir` (created if missing) on the real file system.
    pub fn create(dir: impl AsRef<Path>, options: Options) -> Result<Log> {
        Log::create_in(Arc::new(FsStorage), dir, options)
    }

    /// Opens the log in `dir` on the real file system, recovering from a crash.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Log> {
        Log::open_in(Arc::new(FsStorage), dir, options)
    }

    /// [`Log::create`] on any storage.
    pub fn create_in(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        options: Options,
    ) -> Result<Log> {
        let dir = dir.as_ref().to_path_buf();
        options.validate()?;
        if options.read_only {
            return Err(Error::InvalidOptions(
                "cannot create a log read-only".into(),
            ));
        }
        storage
            .create_dir_all(&dir)
            .map_err(|e| Error::io(&dir, e))?;
        let lock = lock_dir(&*storage, &dir)?;
        if !list_segments(&*storage, &dir)?.is_empty() {
            return Err(Error::AlreadyExists(dir));
        }
        let log_id = LogId::random().map_err(|e| Error::io(&dir, e))?;
        let header = SegmentHeader {
            version: segment::FORMAT_VERSION,
            log_id,
            base_seq: 0,
            prev_hash: ChainHash::genesis(&log_id),
            segment_bytes: options.segment_bytes,
            created_at: Timestamp::now(),
        };
        let file = segment::create(&*storage, &dir, &header, &Frontier::new())?;
        let newest = Newest {
            active: Active::new(file, header),
            head: header.prev_hash,
            tree: SegmentTree::new(Frontier::new()),
        };
        Ok(Log::start(
            storage,
            dir,
            options,
            vec![0],
            newest,
            Some(lock),
        ))
    }

    /// [`Log::open`] on any storage.
    ///
    /// Only the newest segment is read: a torn tail (an incomplete or bad
    /// frame with nothing valid after it) is cut, and the log continues from
    /// the last valid record. A bad frame followed by a valid one is
    /// corruption: opening fails with [`Error::Corrupted`] and nothing is
    /// changed.
    pub fn open_in(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        options: Options,
    ) -> Result<Log> {
        Log::open_for(storage, dir.as_ref(), options, false)
    }

    /// [`Log::open_in`]; `migrating` accepts an older newest segment for
    /// writing (only [`Log::migrate`] does, and it appends nothing to it).
    fn open_for(
        storage: Arc<dyn Storage>,
        dir: &Path,
        options: Options,
        migrating: bool,
    ) -> Result<Log> {
        let dir = dir.to_path_buf();
        options.validate()?;
        let lock = if options.read_only {
            None
        } else {
            Some(lock_dir(&*storage, &dir)?)
        };
        let names = storage.list(&dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound(dir.clone()),
            _ => Error::io(&dir, e),
        })?;
        if !options.read_only {
            // A temporary segment is an interrupted create: never part of the log.
            let mut removed = false;
            for name in names.iter().filter(|n| n.ends_with(TEMP_SUFFIX)) {
                storage
                    .remove(&dir.join(name))
                    .map_err(|e| Error::io(dir.join(name), e))?;
                removed = true;
            }
            if removed {
                storage.sync_dir(&dir).map_err(|e| Error::io(&dir, e))?;
            }
        }
        let bases = list_segments(&*storage, &dir)?;
        let Some(&last) = bases.last() else {
            return Err(Error::NotFound(dir));
        };
        let refuse_older = !options.read_only && !migrating;
        let (mut newest, damage) =
            recover::recover_active(&*storage, &dir, last, options.read_only, refuse_older)?;
        if newest.active.count == 0 {
            // received_at never goes back along the chain, across a roll
            // and a restart too: an empty newest segment continues from the
            // sealed one before it.
            if let Some(&previous) = bases.iter().rev().nth(1) {
                let name = segment::file_name(previous);
                let path = dir.join(&name);
                let file = storage
                    .open(&path, false)
                    .map_err(|e| Error::io(&path, e))?;
                let header = segment::read_header(&*file, &name)?;
                if let Some(trailer) = segment::read_trailer(&*file, &name, header.segment_bytes)? {
                    newest.active.last_received_at = trailer.last_received_at;
                }
            }
        }
        let log = Log::start(storage, dir, options, bases, newest, lock);
        *log.inner.damage.lock() = damage;
        Ok(log)
    }

    fn start(
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        options: Options,
        segments: Vec<u64>,
        newest: Newest,
        lock: Option<Box<dyn DirLock>>,
    ) -> Log {
        let Newest { active, head, tree } = newest;
        let next_end = active.write_at;
        let next_seq = active.header.base_seq + active.count;
        let view = View {
            segments,
            next_seq,
            head,
            active_base: active.header.base_seq,
            active_end: active.write_at,
            written_end: active.write_at,
        };
        let sync = SyncState {
            durable_next: next_seq,
            durable_at: (active.header.base_seq, active.write_at),
            syncing: false,
            fsync_running: false,
            synced_bytes: 0,
            unsynced_since: None,
            flush_requested: false,
        };
        let inner = Arc::new(Inner {
            dir,
            storage,
            log_id: active.header.log_id,
            writer: Mutex::new(Writer {
                last_received_at: active.last_received_at,
                active,
                next_seq,
                head,
                bytes_written: 0,
                pending: Vec::new(),
            }),
            view: RwLock::new(view),
            sync: Mutex::new(sync),
            durable_next: AtomicU64::new(next_seq),
            appended_next: AtomicU64::new(next_seq),
            durable_waiters: Mutex::new(Vec::new()),
            write_slot: Mutex::new(WriteSlot {
                frames: Vec::new(),
                tree,
                writeback_at: next_end,
            }),
            behind: Mutex::new(BehindState::default()),
            behind_wake: Condvar::new(),
            pending_taken: Condvar::new(),
            fsync_over: Condvar::new(),
            flusher_wake: Condvar::new(),
            poison: Mutex::new(None),
            closing: AtomicBool::new(false),
            active_index: Mutex::new(None),
            indexers: Mutex::new(Vec::new()),
            maintenance: Mutex::new(None),
            retention_lock: Mutex::new(()),
            damage: Mutex::new(None),
            options,
            _lock: lock,
        });
        let write_behind = match inner.write_behind() {
            Some(wb) => {
                let inner = inner.clone();
                Some(std::thread::spawn(move || inner.run_write_behind(wb)))
            }
            None => None,
        };
        let flusher = match inner.options.durability {
            Durability::Batch { max_delay, .. } if !inner.options.read_only => {
                let inner = inner.clone();
                Some(std::thread::spawn(move || inner.run_flusher(max_delay)))
            }
            _ => None,
        };
        let checkpointer = match &inner.options.checkpoints {
            Some(schedule) if !inner.options.read_only => {
                let (inner, schedule) = (inner.clone(), schedule.clone());
                Some(std::thread::spawn(move || {
                    inner.run_checkpointer(&schedule)
                }))
            }
            _ => None,
        };
        Log {
            inner,
            write_behind,
            flusher,
            checkpointer,
        }
    }

    /// The size of the newest segment in `dir`: what the log there was last
    /// writing with, or `None` when `dir` holds no segment. Pass it as
    /// [`Options::segment_bytes`] to [`Log::open`] to keep the log's segment
    /// size (the option applies to the segments created from then on).
    pub fn newest_segment_bytes(dir: impl AsRef<Path>) -> Result<Option<u64>> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Ok(None);
        }
        let Some(&base) = list_segments(&FsStorage, dir)?.last() else {
            return Ok(None);
        };
        let name = segment::file_name(base);
        let path = dir.join(&name);
        let file = FsStorage
            .open(&path, false)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Some(segment::read_header(&*file, &name)?.segment_bytes))
    }

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
        match self.apply_retention(policy, Timestamp::now()) {
            Ok(_) | Err(Error::LegalHold { .. }) => {}
            Err(e) => *self.inner.maintenance.lock() = Some(format!("retention: {e}")),
        }
    }

    /// Makes every appended record durable now, whatever the policy.
    pub fn sync(&self) -> Result<()> {
        let next = self.inner.writer.lock().next_seq;
        self.inner.sync_until(next)
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

    /// Iterates over records from `seq` (clamped to the first retained
    /// record) up to the newest visible one, including records appended while
    /// iterating. Under [`Durability::Always`] readers see only durable
    /// records; under the relaxed policies, every record once written.
    pub fn iter_from(&self, seq: u64) -> Records {
        Records {
            inner: self.inner.clone(),
            next: seq,
            visible_next: 0,
            cursor: None,
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
        for indexer in std::mem::take(&mut *self.inner.indexers.lock()) {
            let _ = indexer.join();
        }
        if self.inner.options.read_only || self.inner.poison.lock().is_some() {
            return Ok(());
        }
        self.sync()
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        // Best effort: `close` reports a failing final sync.
        let _ = self.shutdown();
    }
}

fn lock_dir(storage: &dyn Storage, dir: &Path) -> Result<Box<dyn DirLock>> {
    storage.lock_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => Error::Locked(dir.to_path_buf()),
        std::io::ErrorKind::NotFound => Error::NotFound(dir.to_path_buf()),
        _ => Error::io(dir, e),
    })
}

/// The segment's start frontier (its link block) extended by the stored
/// hashes of its records up to `end`.
fn read_frontier(file: Arc<dyn StorageFile>, name: &str, end: u64) -> Result<Frontier> {
    let header = segment::read_header(&*file, name)?;
    let mut frontier = segment::read_start_frontier(&*file, name, &header)?;
    let mut scan = Scanner::new(file, name, HEADER_BYTES, end);
    loop {
        match scan.next_step()? {
            Step::Frame { frame, .. } => frontier.push(&frame.hash.0),
            Step::End { .. } => return Ok(frontier),
            Step::Bad { offset, error } => {
                return Err(Error::Corrupted {
                    file: name.to_string(),
                    offset,
                    reason: error.to_string(),
                })
            }
        }
    }
}

impl Inner {
    fn check_poison(&self) -> Result<()> {
        if self.options.read_only {
            return Err(Error::ReadOnly);
        }
        match &*self.poison.lock() {
            Some(why) => Err(Error::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    fn set_poison(&self, why: String) {
        let mut p = self.poison.lock();
        if p.is_none() {
            *p = Some(why);
        }
    }

    /// Assigns seqs and hashes, rolls if the batch does not fit, and
    /// appends the batch: into the write buffer, or (write-through, or a
    /// large batch) with one write after what is buffered. Returns the
    /// receipts and what the caller must do next.
    fn write_batch(&self, frames: &mut [u8], count: usize) -> Result<(Vec<Receipt>, Appended)> {
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
    fn write_direct(&self, w: &mut Writer, frames: &[u8]) -> Result<()> {
        let mut slot = self.write_slot.lock();
        if let Some(taken) = take_pending(w, &mut slot) {
            self.write_taken(&mut slot, taken)?;
        }
        let at = w.active.written_at;
        if let Err(e) = w.active.file.write_all_at(frames, at) {
            let name = w.active.name();
            self.after_failed_write(&w.active, at, frames.len() as u64, &e);
            return Err(Error::io(self.dir.join(name), e));
        }
        w.active.written_at += frames.len() as u64;
        push_hashes(&mut slot.tree, frames);
        self.start_writeback(&mut slot, &*w.active.file, w.active.written_at);
        self.note_written(w.active.header.base_seq, w.active.written_at);
        Ok(())
    }

    /// Writes what is in the write buffer, holding the writer lock (a seal
    /// does this before its trailer).
    fn write_pending(&self, w: &mut Writer) -> Result<()> {
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
    fn write_pending_released(&self, mut w: parking_lot::MutexGuard<'_, Writer>) -> Result<()> {
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
    fn write_taken(&self, slot: &mut WriteSlot, taken: TakenFrames) -> Result<()> {
        let frames = &mut slot.frames;
        let len = frames.len() as u64;
        let result = match self.check_poison() {
            Ok(()) => taken.file.write_all_at(frames, taken.at),
            Err(e) => {
                frames.clear();
                return Err(e);
            }
        };
        if result.is_ok() {
            push_hashes(&mut slot.tree, frames);
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
    fn start_writeback(&self, slot: &mut WriteSlot, file: &dyn StorageFile, end: u64) {
        const WRITEBACK_BYTES: u64 = 256 << 10;
        if self.options.durability != Durability::Always
            && end >= slot.writeback_at + WRITEBACK_BYTES
        {
            file.start_writeback(slot.writeback_at, end - slot.writeback_at);
            slot.writeback_at = end;
        }
    }

    /// Readers may now read the active segment `base` up to `end`.
    fn note_written(&self, base: u64, end: u64) {
        let mut view = self.view.write();
        if view.active_base == base && end > view.written_end {
            view.written_end = end;
        }
    }

    /// Before a read: writes buffered frames that readers can see.
    fn write_visible(&self) -> Result<()> {
        {
            let view = self.view.read();
            if view.written_end >= view.active_end {
                return Ok(());
            }
        }
        self.write_pending_released(self.writer.lock())
    }

    fn write_behind(&self) -> Option<WriteBehind> {
        match self.options.durability {
            Durability::Always => None,
            _ if self.options.read_only => None,
            _ => self.options.write_behind,
        }
    }

    /// The most the write buffer holds while the writer keeps up: up to the
    /// point where appends wait for it, plus one batch small enough to be
    /// buffered (under Always, a few waiting appenders' batches).
    fn steady_buffer_bytes(&self) -> usize {
        self.write_behind()
            .map_or(4 * DIRECT_WRITE_BYTES, |wb| wb.full_bytes())
            + DIRECT_WRITE_BYTES
    }

    /// Tells the write-behind thread about a buffer just started (arm the
    /// delay) or just filled (write now).
    fn wake_write_behind(&self, started: bool, full: bool) {
        let mut state = self.behind.lock();
        if started {
            state.since.get_or_insert_with(Instant::now);
        }
        state.full |= full;
        self.behind_wake.notify_one();
    }

    /// After an append: wakes the write-behind thread when it has work.
    fn after_append(&self, appended: &Appended) {
        if appended.started_buffer || appended.filled_buffer {
            self.wake_write_behind(appended.started_buffer, appended.filled_buffer);
        }
    }

    /// The write-behind thread: writes the buffer once it is full, or once
    /// its oldest frame has waited `max_delay`. A failed write poisons the
    /// handle (appenders see it), and the thread ends.
    fn run_write_behind(&self, wb: WriteBehind) {
        let mut state = self.behind.lock();
        while !self.closing.load(Ordering::SeqCst) {
            let due = match state.since {
                None if !state.full => {
                    self.behind_wake.wait(&mut state);
                    continue;
                }
                None => Instant::now(),
                Some(since) => since + wb.max_delay,
            };
            if !state.full && Instant::now() < due {
                self.behind_wake.wait_until(&mut state, due);
                continue;
            }
            // Cleared before the buffer is taken: a frame appended after the
            // take arms the delay again.
            *state = BehindState::default();
            drop(state);
            let result = self.write_pending_released(self.writer.lock());
            if result.is_err() {
                return;
            }
            self.request_batch_flush();
            state = self.behind.lock();
        }
    }

    /// A failed write may have left part of the batch on disk: zero that
    /// range so nothing partial is ever read back. If even that fails, the
    /// state of the file is unknown and the handle is poisoned.
    fn after_failed_write(&self, active: &Active, at: u64, len: u64, error: &std::io::Error) {
        let zeros = vec![0; len as usize];
        if active.file.write_all_at(&zeros, at).is_err() {
            self.set_poison(format!("write to {} failed: {error}", active.name()));
        }
    }

    /// Makes records appended so far visible to readers.
    fn publish(&self, w: &Writer) {
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

    /// Seals the active segment (if not yet) and starts the next one.
    fn roll(&self, w: &mut Writer) -> Result<()> {
        if !w.active.sealed {
            self.seal(w)?;
            let tree = self.write_slot.lock().tree.take_hashes();
            self.index_in_background(&w.active, tree);
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
    fn index_in_background(&self, sealed: &Active, tree: SegmentTree) {
        let (storage, dir, file) = (self.storage.clone(), self.dir.clone(), sealed.file.clone());
        let (base, data_end, count) = (sealed.header.base_seq, sealed.write_at, sealed.count);
        let block_bytes = self.options.index_block_bytes;
        let mut indexers = self.indexers.lock();
        indexers.retain(|h| !h.is_finished());
        let previous = indexers.pop();
        indexers.push(std::thread::spawn(move || {
            let mut builder = IndexBuilder::new(base, block_bytes);
            let built = builder.extend_from(file, &segment::file_name(base), data_end);
            if built.is_ok() && builder.records() == count {
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
    fn seal(&self, w: &mut Writer) -> Result<()> {
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
        sync.durable_next = w.next_seq;
        self.durable_next.store(w.next_seq, Ordering::Release);
        sync.durable_at = (w.active.header.base_seq, w.active.write_at);
        sync.synced_bytes = w.bytes_written;
        sync.unsynced_since = None;
        drop(sync);
        self.wake_durable();
        // Under Always, records become visible once durable: they are now.
        self.publish(w);
        Ok(())
    }

    /// Waits out a group-commit leader's `fdatasync` under way; errs (after
    /// undoing what may not be durable) if any sync failed.
    fn frames_synced_or_poisoned(
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

    /// After a failed `fdatasync` nothing since the last good sync can be
    /// trusted to be on disk, even though reads may still return it (the
    /// kernel may have dropped the dirty pages). Zero that range and the
    /// trailer so a reopen recovers to the last truly durable record and
    /// never builds on a hole; then poison the handle.
    fn after_failed_sync(&self, w: &Writer, error: &std::io::Error) {
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
    fn after_write(&self, next: u64, appended: &Appended) -> Result<()> {
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
    fn request_batch_flush(&self) {
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
    /// `fdatasync` for everything appended so far; the others park until a
    /// sync covers them, and are woken, all at once, by the sync that does.
    fn sync_until(&self, next: u64) -> Result<()> {
        loop {
            if self.durable_next.load(Ordering::Acquire) >= next {
                return Ok(());
            }
            let mut sync = self.sync.lock();
            if sync.durable_next >= next {
                return Ok(());
            }
            if let Some(why) = &*self.poison.lock() {
                return Err(Error::Poisoned(why.clone()));
            }
            if !sync.syncing {
                sync.syncing = true;
                drop(sync);
                return self.lead(next);
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
    fn lead(&self, next: u64) -> Result<()> {
        const LEADER_ROUNDS: u32 = 4;
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
        self.sync.lock().syncing = false;
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

    /// Wakes the appenders whose records are now durable.
    fn wake_durable(&self) {
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
    }

    /// Writes the buffered frames, then one `fdatasync` of the active
    /// segment, covering everything appended before it started (earlier
    /// segments were synced when sealed).
    fn sync_leader(&self) -> Result<()> {
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
        drop(sync);
        if self.options.durability == Durability::Always {
            let mut view = self.view.write();
            if target > view.next_seq {
                view.next_seq = target;
                view.head = head;
                view.active_base = at.0;
                view.active_end = at.1;
            }
        }
        Ok(())
    }

    /// The Batch policy's background syncer: syncs once the oldest unsynced
    /// record has waited `max_delay`, or when asked to.
    fn run_flusher(&self, max_delay: Duration) {
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

/// The Merkle tree over the visible records: what a checkpoint signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeHead {
    /// Records appended since the log was created.
    pub size: u64,
    /// RFC 6962 root over their chain hashes.
    pub root: [u8; 32],
    /// The chain hash of the last record (none for an empty log).
    pub head: Option<ChainHash>,
}

impl Log {
    /// The tree head of the visible log. Hashes only the active segment's
    /// records: the tree over everything before it is the segment's start
    /// frontier.
    pub fn tree_head(&self) -> Result<TreeHead> {
        self.inner.tree_head()
    }

    /// An unsigned checkpoint of the visible log, with origin
    /// `<origin_prefix>/<log id>`. The whole log is verified first and its
    /// Merkle tree rebuilt from the records: problems, or a tree that
    /// differs from the log's own, fail with [`Error::Unverified`]. (It reads
    /// the whole log: a cost proportional to its size.)
    pub fn checkpoint(&self, origin_prefix: &str) -> Result<Checkpoint> {
        self.inner.checkpoint(origin_prefix)
    }

    /// Where a read-only open stopped reading because the newest segment
    /// is corrupt (a writer's open refuses instead); `None` when intact.
    pub fn damage(&self) -> Option<Damage> {
        self.inner.damage.lock().clone()
    }

    /// The last error of automatic maintenance (retention after a roll,
    /// scheduled checkpoints), which has no caller to return it to.
    pub fn last_maintenance_error(&self) -> Option<String> {
        self.inner.maintenance.lock().clone()
    }
}

impl Inner {
    fn tree_head(&self) -> Result<TreeHead> {
        self.write_visible()?;
        let (next_seq, head, base, end) = {
            let view = self.view.read();
            (view.next_seq, view.head, view.active_base, view.active_end)
        };
        let name = segment::file_name(base);
        let path = self.dir.join(&name);
        let file = self
            .storage
            .open(&path, false)
            .map_err(|e| Error::io(&path, e))?;
        let frontier = read_frontier(file, &name, end)?;
        if frontier.size() != next_seq {
            return Err(Error::Corrupted {
                file: name,
                offset: end,
                reason: format!(
                    "the tree covers {} records, the log has {next_seq}",
                    frontier.size()
                ),
            });
        }
        Ok(TreeHead {
            size: next_seq,
            root: frontier.root(),
            head: (next_seq > 0).then_some(head),
        })
    }

    /// A checkpoint signs only a root computed by hashing the records: the
    /// log is verified, its tree rebuilt from the oldest retained segment's
    /// link block, and both must agree with the log's own tree head.
    fn checkpoint(&self, origin_prefix: &str) -> Result<Checkpoint> {
        let tree = self.tree_head()?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (report, verified) =
            crate::verify::verified_tree_head(&*self.storage, &self.dir, tree.size, threads)?;
        let refuse = |problems: u64, first: String| Error::Unverified {
            dir: self.dir.clone(),
            problems,
            first,
        };
        if !report.is_intact() {
            let first = report.problems.first().map_or_else(String::new, |p| {
                format!(
                    "{:?} in {} at byte {}: {}",
                    p.kind, p.segment, p.offset, p.detail
                )
            });
            return Err(refuse(
                report.problems.len() as u64 + report.problems_omitted,
                first,
            ));
        }
        match verified {
            Some(v) if v.root == tree.root && (tree.size == 0 || v.head == tree.head) => {}
            _ => {
                return Err(refuse(
                    1,
                    format!(
                    "the tree rebuilt from the records differs from the log's tree head at size {}",
                    tree.size
                ),
                ))
            }
        }
        Ok(Checkpoint {
            origin: format!("{origin_prefix}/{}", self.log_id),
            size: tree.size,
            root: tree.root,
            head: tree.head,
        })
    }

    /// Writes a signed checkpoint of the visible log to `schedule.dir`.
    fn write_checkpoint(&self, schedule: &CheckpointSchedule) -> Result<u64> {
        let checkpoint = self.checkpoint(&schedule.origin_prefix)?;
        let note = checkpoint
            .sign(&schedule.signer)
            .map_err(|e| Error::InvalidOptions(e.to_string()))?;
        let storage = &*self.storage;
        storage
            .create_dir_all(&schedule.dir)
            .map_err(|e| Error::io(&schedule.dir, e))?;
        let name = format!("{:020}.checkpoint", checkpoint.size);
        crate::storage::write_file_atomic(storage, &schedule.dir, &name, note.as_bytes())?;
        crate::storage::write_file_atomic(
            storage,
            &schedule.dir,
            "latest.checkpoint",
            note.as_bytes(),
        )?;
        Ok(checkpoint.size)
    }

    /// The scheduled checkpointer: polls the log's size and writes a
    /// checkpoint when enough records or time have passed since the last.
    fn run_checkpointer(&self, schedule: &CheckpointSchedule) {
        const POLL: Duration = Duration::from_millis(50);
        let mut last_size = self.view.read().next_seq;
        let mut last_at = Instant::now();
        while !self.closing.load(Ordering::SeqCst) {
            {
                let mut sync = self.sync.lock();
                self.flusher_wake.wait_for(&mut sync, POLL);
            }
            let size = self.view.read().next_seq;
            let by_count = schedule
                .every_records
                .is_some_and(|n| size >= last_size + n.max(1));
            let by_time =
                schedule.every.is_some_and(|t| last_at.elapsed() >= t) && size > last_size;
            if by_count || by_time {
                match self.write_checkpoint(schedule) {
                    Ok(written) => last_size = written,
                    Err(e) => *self.maintenance.lock() = Some(format!("scheduled checkpoint: {e}")),
                }
                last_at = Instant::now();
            }
        }
    }
}

/// A consistent view of the log for a query: what exists and is visible.
pub(crate) struct Snapshot {
    pub(crate) dir: PathBuf,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) segments: Vec<u64>,
    pub(crate) next_seq: u64,
    pub(crate) active_base: u64,
    pub(crate) active_end: u64,
    pub(crate) index_block_bytes: u32,
    pub(crate) read_only: bool,
    pub(crate) log: LogRef,
}

/// A handle on the log's shared state, for queries that outlive a borrow.
pub(crate) struct LogRef(Arc<Inner>);

impl LogRef {
    /// The active segment's index up to at least `limit`, as index file
    /// bytes. The in-memory index is extended incrementally, so repeated
    /// queries only index what was appended since.
    pub(crate) fn active_index(
        &self,
        file: Arc<dyn StorageFile>,
        header: &SegmentHeader,
        limit: u64,
    ) -> Result<Vec<u8>> {
        let mut cached = self.0.active_index.lock();
        let builder = match cached.as_mut() {
            Some(b) if b.base_seq() == header.base_seq => b,
            _ => cached.insert(IndexBuilder::new(
                header.base_seq,
                self.0.options.index_block_bytes,
            )),
        };
        if builder.end() < limit {
            builder.extend_from(file, &segment::file_name(header.base_seq), limit)?;
        }
        Ok(builder.encode())
    }
}

impl Log {
    /// Serializes retention runs and legal-hold changes.
    pub(crate) fn retention_lock(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.inner.retention_lock.lock()
    }

    /// Drops deleted segments from what readers see.
    pub(crate) fn forget_segments(&self, bases: &[u64]) {
        self.inner
            .view
            .write()
            .segments
            .retain(|b| !bases.contains(b));
    }

    /// What readers can see now (buffered frames are written first).
    pub(crate) fn snapshot(&self) -> Result<Snapshot> {
        self.inner.write_visible()?;
        let view = self.inner.view.read();
        Ok(Snapshot {
            dir: self.inner.dir.clone(),
            storage: self.inner.storage.clone(),
            segments: view.segments.clone(),
            next_seq: view.next_seq,
            active_base: view.active_base,
            active_end: view.active_end,
            index_block_bytes: self.inner.options.index_block_bytes,
            read_only: self.inner.options.read_only,
            log: LogRef(self.inner.clone()),
        })
    }
}

/// Iterator over records, from [`Log::iter_from`].
pub struct Records {
    inner: Arc<Inner>,
    next: u64,
    /// Cached bound: records below it are visible.
    visible_next: u64,
    cursor: Option<Cursor>,
}

struct Cursor {
    base: u64,
    /// The segment's format version: its records' layout.
    version: u16,
    scanner: Scanner,
    name: String,
    /// Where frames end once the segment is sealed.
    sealed_limit: u64,
}

impl Records {
    fn corrupt(&self, offset: u64, reason: String) -> Error {
        let name = self
            .cursor
            .as_ref()
            .map(|c| c.name.clone())
            .unwrap_or_default();
        Error::Corrupted {
            file: name,
            offset,
            reason,
        }
    }

    fn step(&mut self) -> Result<Option<Record>> {
        loop {
            if self.next >= self.visible_next {
                if self.next >= self.inner.view.read().next_seq {
                    return Ok(None);
                }
                self.inner.write_visible()?;
                let view = self.inner.view.read();
                self.visible_next = view.next_seq;
                if self.next >= self.visible_next {
                    return Ok(None);
                }
                let first = view.segments.first().copied().unwrap_or(0);
                if self.next < first {
                    self.next = first;
                }
                if let Some(c) = &mut self.cursor {
                    let limit = if c.base == view.active_base {
                        view.active_end
                    } else {
                        c.sealed_limit
                    };
                    c.scanner.extend_limit(limit);
                }
            }
            if self.cursor.is_none() {
                self.cursor = Some(self.open_cursor()?);
            }
            let Some(cursor) = self.cursor.as_mut() else {
                return Ok(None);
            };
            match cursor.scanner.next_step()? {
                Step::Frame { offset, frame } => {
                    if frame.seq < self.next {
                        continue;
                    }
                    if frame.seq != self.next {
                        let reason = format!("expected seq {}, found {}", self.next, frame.seq);
                        return Err(self.corrupt(offset, reason));
                    }
                    let record = event::decode_record(cursor.version, frame.record)
                        .and_then(|v| Record::from_view(frame.seq, frame.hash, &v));
                    let record = record.map_err(|e| self.corrupt(offset, e.to_string()))?;
                    self.next += 1;
                    return Ok(Some(record));
                }
                Step::End { offset } => {
                    // The visible record `next` is not in this segment: it
                    // must start the next one.
                    let base = cursor.base;
                    let view = self.inner.view.read();
                    let next_segment = view.segments.iter().copied().find(|&b| b > base);
                    drop(view);
                    // If no segment starts at `next` (one was removed behind
                    // the log's back), reopening a cursor would pick this
                    // segment again and loop forever: that is an error.
                    match next_segment {
                        None => {
                            let reason = format!("seq {} is visible but not found", self.next);
                            return Err(self.corrupt(offset, reason));
                        }
                        Some(next_base) if next_base > self.next => {
                            let reason = format!(
                                "seq {} is missing: this segment ends before it and the next one starts at seq {next_base}",
                                self.next
                            );
                            return Err(self.corrupt(offset, reason));
                        }
                        Some(_) => {}
                    }
                    self.cursor = None;
                }
                Step::Bad { offset, error } => return Err(self.corrupt(offset, error.to_string())),
            }
        }
    }

    fn open_cursor(&self) -> Result<Cursor> {
        let view = self.inner.view.read();
        let idx = view.segments.partition_point(|&b| b <= self.next);
        let Some(&base) = idx.checked_sub(1).and_then(|i| view.segments.get(i)) else {
            return Err(Error::SeqOutOfRange {
                seq: self.next,
                first: view.segments.first().copied().unwrap_or(0),
                next: view.next_seq,
            });
        };
        let active = (view.active_base, view.active_end);
        drop(view);
        let name = segment::file_name(base);
        let path = self.inner.dir.join(&name);
        let file = self
            .inner
            .storage
            .open(&path, false)
            .map_err(|e| Error::io(&path, e))?;
        let header = segment::read_header(&*file, &name)?;
        let sealed_limit = data_end_limit(header.segment_bytes);
        let limit = if base == active.0 {
            active.1
        } else {
            sealed_limit
        };
        Ok(Cursor {
            base,
            version: header.version,
            scanner: Scanner::new(file, &name, HEADER_BYTES, limit),
            name,
            sealed_limit,
        })
    }
}

impl Iterator for Records {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => None,
            Err(e) => {
                // Stop after an error rather than repeat it forever.
                self.visible_next = 0;
                self.next = u64::MAX;
                Some(Err(e))
            }
        }
    }
}
