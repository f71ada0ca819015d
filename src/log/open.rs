//! Creating and opening a log: the directory lock, recovery of the newest segment, the threads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::error::{Error, Result};
use crate::event::Timestamp;
use crate::format::segment::{self, Scanner, SegmentHeader, Step, HEADER_BYTES, TEMP_SUFFIX};
use crate::hash::chain::{ChainHash, LogId};
use crate::hash::merkle::Frontier;
use crate::storage::{DirLock, FsStorage, Storage, StorageFile};
use crate::tiles::SegmentTree;

use super::*;

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
            index: IndexBuilder::new(0, options.index_block_bytes),
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
    pub(super) fn open_for(
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
            recover::recover_active(&*storage, &dir, last, &options, refuse_older)?;
        if newest.active.count == 0 {
            // received_at never goes back along the chain, across a roll
            // and a restart too: an empty newest segment continues from the
            // sealed one before it.
            if let Some(&previous) = bases.iter().rev().nth(1) {
                let (name, file) = segment::open_for_reading(&*storage, &dir, previous)?;
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

    pub(super) fn start(
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        options: Options,
        segments: Vec<u64>,
        newest: Newest,
        lock: Option<Box<dyn DirLock>>,
    ) -> Log {
        let Newest {
            active,
            head,
            tree,
            index,
        } = newest;
        let next_end = active.write_at;
        let next_seq = active.header.base_seq + active.count;
        let (feed_tx, feed_rx) = match options.read_only {
            true => (None, None),
            false => {
                let (tx, rx) = std::sync::mpsc::sync_channel(write_index::FEED_DEPTH);
                (Some(tx), Some(rx))
            }
        };
        let index = IndexShared::new(index, feed_rx.is_some());
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
            leading: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
            yield_from: 4 * std::thread::available_parallelism().map_or(1, |n| n.get()),
            last_sync_micros: AtomicU64::new(0),
            durable_waiters: Mutex::new(Vec::new()),
            durable_listeners: Mutex::new(Vec::new()),
            write_slot: Mutex::new(WriteSlot {
                frames: Vec::new(),
                tree,
                feed: IndexFeed::new(feed_tx),
                writeback_at: next_end,
                zero_ahead: ZeroAhead::new(next_end),
            }),
            behind: Mutex::new(BehindState::default()),
            behind_wake: Condvar::new(),
            pending_taken: Condvar::new(),
            fsync_over: Condvar::new(),
            flusher_wake: Condvar::new(),
            poison: Mutex::new(None),
            closing: AtomicBool::new(false),
            index,
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
        let indexer = feed_rx.map(|rx| {
            let inner = inner.clone();
            std::thread::spawn(move || inner.run_indexer(rx))
        });
        Log {
            inner,
            write_behind,
            flusher,
            checkpointer,
            indexer,
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
        let (name, file) = segment::open_for_reading(&FsStorage, dir, base)?;
        Ok(Some(segment::read_header(&*file, &name)?.segment_bytes))
    }
}

pub(super) fn lock_dir(storage: &dyn Storage, dir: &Path) -> Result<Box<dyn DirLock>> {
    storage.lock_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => Error::Locked(dir.to_path_buf()),
        std::io::ErrorKind::NotFound => Error::NotFound(dir.to_path_buf()),
        _ => Error::io(dir, e),
    })
}

/// The segment's start frontier (its link block) extended by the stored
/// hashes of its records up to `end`.
pub(super) fn read_frontier(file: Arc<dyn StorageFile>, name: &str, end: u64) -> Result<Frontier> {
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
