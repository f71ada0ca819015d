//! Following a workspace in the bucket: a read-only log at the newest head
//! (for read replicas and `--from` readers).
//!
//! A thread reads the head every `poll_interval`; when it moved, the head is
//! checked (signature; against the previous head, the epoch and the
//! consistency proof it carries), the new pieces are applied to the cache
//! directory by the reader's rule, the rebuilt tree is compared with the
//! head's root, and a read-only [`Log`] is reopened there. A head the
//! pieces do not give is refused: the follower keeps serving the last good
//! one and reports the problem ([`Follower::problem`]). When the pieces
//! applied so far are no longer the ones the new head chooses (a takeover
//! superseded pieces the follower had read), the cache is rebuilt from
//! scratch in a new generation directory.
//!
//! The cache is bounded ([`FollowOptions::cache_bytes`]): after applying
//! pieces, while the directory holds more, the oldest sealed segments that
//! the newest archive manifest names (and whose local bytes match its
//! SHA-256) are evicted, and the log reads them from the bucket through a
//! [`CachedStorage`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use sha2::{Digest as _, Sha256};

use super::cached_storage::CachedStorage;
use super::rebuild::{head_log_id, Replay};
use crate::archive::{newest_manifest, Bucket, BucketStorage, SegmentEntry};
use crate::cluster::head::{check_head, read_head, HeadProblem};
use crate::cluster::{ClusterError, Head, HEAD_OBJECT};
use crate::format::segment;
use crate::hash::chain::ChainHash;
use crate::hash::checkpoint::NoteVerifier;
use crate::index;
use crate::log::{Log, Options};
use crate::storage::Storage;

/// How a [`Follower`] polls and caches.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// Read the head this often. Default 500 ms.
    pub poll_interval: Duration,
    /// Most bytes kept in the cache directory (files' lengths). Default
    /// 1 GiB.
    ///
    /// After each poll the directory holds at most this much, or, when more
    /// is needed, only the segments that are not archived as whole objects
    /// in the bucket (the newest manifest does not name them: they were
    /// rebuilt from pieces, and the bucket has no object to read them from)
    /// and the log's newest segment. Evicted segments are read from the
    /// bucket with ranged GETs. While a poll applies new pieces the
    /// directory grows by what it downloads before it is trimmed; the
    /// writer archives each segment soon after sealing it, so in a steady
    /// state the bound is exceeded by at most about one segment.
    pub cache_bytes: u64,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            poll_interval: Duration::from_millis(500),
            cache_bytes: 1 << 30,
        }
    }
}

/// What the follower's thread publishes.
#[derive(Debug, Default)]
struct Current {
    log: Option<Arc<Log>>,
    head: Option<Head>,
    /// When the head was last found equal to the follower's.
    checked_at: Option<Instant>,
    /// The storage `log` reads (the cache directory, and the bucket).
    storage: Option<Arc<CachedStorage>>,
    /// Segments evicted from the cache so far.
    evicted_segments: u64,
    /// The last refusal or failure, cleared by a good poll.
    problem: Option<String>,
    stop: bool,
}

#[derive(Debug, Default)]
struct Shared {
    current: Mutex<Current>,
    wake: Condvar,
}

/// A read-only follower of a workspace in the bucket.
#[derive(Debug)]
pub struct Follower {
    shared: Arc<Shared>,
    url: String,
    thread: Option<JoinHandle<()>>,
}

/// The thread's own state.
struct Poller {
    bucket: Arc<Bucket>,
    verifier: NoteVerifier,
    cache_dir: PathBuf,
    cache_bytes: u64,
    generation: u64,
    replay: Option<Replay>,
    /// The current generation's storage.
    storage: Option<Arc<CachedStorage>>,
    trusted: Option<Head>,
}

impl Follower {
    /// Starts following the workspace at `bucket`'s prefix, caching in
    /// `cache_dir` (emptied first: a cache), trusting heads signed for
    /// `verifier`. The first poll happens before it returns: its failure
    /// (other than the workspace having no head yet) is returned.
    pub fn open(
        cache_dir: &Path,
        bucket: Arc<Bucket>,
        verifier: NoteVerifier,
        options: FollowOptions,
    ) -> Result<Follower, ClusterError> {
        if options.poll_interval.is_zero() {
            return Err(ClusterError::Invalid {
                what: "follow options",
                reason: "poll_interval must be positive".into(),
            });
        }
        match std::fs::remove_dir_all(cache_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ClusterError::Io {
                    context: format!("emptying {}", cache_dir.display()),
                    source,
                })
            }
        }
        let url = bucket.url(HEAD_OBJECT);
        let mut poller = Poller {
            bucket,
            verifier,
            cache_dir: cache_dir.to_path_buf(),
            cache_bytes: options.cache_bytes,
            generation: 0,
            replay: None,
            storage: None,
            trusted: None,
        };
        let shared = Arc::new(Shared::default());
        poller.poll(&shared)?;
        let thread_shared = shared.clone();
        let interval = options.poll_interval;
        let thread = std::thread::Builder::new()
            .name("chainlog-follow".into())
            .spawn(move || loop {
                {
                    let mut current = thread_shared.current.lock();
                    if !current.stop {
                        thread_shared.wake.wait_for(&mut current, interval);
                    }
                    if current.stop {
                        return;
                    }
                }
                if let Err(e) = poller.poll(&thread_shared) {
                    thread_shared.current.lock().problem = Some(e.to_string());
                }
            })
            .map_err(|source| ClusterError::Io {
                context: "starting the follower thread".into(),
                source,
            })?;
        Ok(Follower {
            shared,
            url,
            thread: Some(thread),
        })
    }

    /// The log at the newest head checked (read-only), and that head.
    /// [`ClusterError::Empty`] while the workspace has no records.
    pub fn log(&self) -> Result<(Arc<Log>, Option<Head>), ClusterError> {
        let current = self.shared.current.lock();
        match &current.log {
            Some(log) => Ok((log.clone(), current.head.clone())),
            None => Err(ClusterError::Empty {
                url: self.url.clone(),
            }),
        }
    }

    /// How long ago the follower last saw the bucket's head equal to its
    /// own (zero right after a poll that found nothing new): a bound on how
    /// far behind the bucket its log can be.
    pub fn lag(&self) -> Duration {
        self.shared
            .current
            .lock()
            .checked_at
            .map_or(Duration::MAX, |at| at.elapsed())
    }

    /// The storage the log reads: the cache directory, and the bucket for
    /// the segments evicted from it (for [`crate::verify::verify_dir`] over
    /// the log's directory). `None` while the workspace has no records.
    pub fn storage(&self) -> Option<Arc<dyn Storage>> {
        let current = self.shared.current.lock();
        let storage = current.storage.clone()?;
        Some(storage)
    }

    /// Segments evicted from the cache directory so far.
    pub fn evicted_segments(&self) -> u64 {
        self.shared.current.lock().evicted_segments
    }

    /// Why the last poll refused a head or failed, if it did.
    pub fn problem(&self) -> Option<String> {
        self.shared.current.lock().problem.clone()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.shared.current.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Poller {
    /// Reads the head; when it moved, checks it, applies the pieces and
    /// reopens the log.
    fn poll(&mut self, shared: &Shared) -> Result<(), ClusterError> {
        let polled = Instant::now();
        let Some(found) = read_head(&self.bucket)? else {
            shared.current.lock().checked_at = Some(polled);
            return Ok(());
        };
        let head = found.head;
        if self.trusted.as_ref() == Some(&head) {
            // The writer may have archived what the cache holds since.
            let evicted = match (&self.storage, head_log_id(&head)) {
                (Some(storage), Ok(log_id)) => self.evict(storage, &log_id)?,
                _ => 0,
            };
            let mut current = shared.current.lock();
            current.evicted_segments += evicted;
            current.checked_at = Some(polled);
            current.problem = None;
            return Ok(());
        }
        match check_head(&head, &self.verifier, self.trusted.as_ref()) {
            // A head that missed ours in between carries a proof from
            // another size: the rebuilt tree is checked against its root
            // below, from pieces that extend what was checked before.
            Ok(_) | Err(HeadProblem::NoProof { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if head.size == 0 {
            let mut current = shared.current.lock();
            current.checked_at = Some(polled);
            self.trusted = Some(head);
            return Ok(());
        }
        let log_id = head_log_id(&head)?;
        let extended = match self.replay.as_mut() {
            Some(replay) => replay.advance(&self.bucket, &head),
            None => Err(ClusterError::Empty {
                url: self.bucket.url(HEAD_OBJECT),
            }),
        };
        if extended.is_err() {
            // From scratch, in a new generation: readers of the old log
            // keep their files.
            self.generation += 1;
            let dir = self.cache_dir.join(format!("gen-{:06}", self.generation));
            let mut replay = Replay::new(&dir, log_id.clone())?;
            if let Err(e) = replay.advance(&self.bucket, &head) {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
            let remote = Arc::new(BucketStorage::new(self.bucket.clone()));
            self.storage = Some(Arc::new(CachedStorage::new(replay.dir(), remote)));
            let old = self.replay.replace(replay);
            if let Some(old) = old {
                // Its log may still be read; remove the files when the
                // last reader is gone is the OS's business (unlinked files
                // stay readable while open).
                let _ = std::fs::remove_dir_all(old.dir());
            }
        }
        let Some(storage) = self.storage.clone() else {
            return Ok(());
        };
        // A failed eviction (the manifest unreadable) keeps files a while
        // longer; it does not hold the new head back.
        let (evicted, problem) = match self.evict(&storage, &log_id) {
            Ok(evicted) => (evicted, None),
            Err(e) => (0, Some(format!("evicting from the cache: {e}"))),
        };
        let log = Log::open_in(storage.clone(), storage.dir(), Options::for_reading())?;
        let mut current = shared.current.lock();
        current.log = Some(Arc::new(log));
        current.storage = Some(storage);
        current.evicted_segments += evicted;
        current.head = Some(head.clone());
        current.checked_at = Some(polled);
        current.problem = problem;
        self.trusted = Some(head);
        Ok(())
    }
}

impl Poller {
    /// While the cache directory holds more than `cache_bytes`, evicts its
    /// oldest segments that the newest manifest names, never the newest
    /// local one: each is marked archived in `storage` (its reads go to the
    /// bucket) before its file is removed. Returns how many were evicted.
    fn evict(&self, storage: &CachedStorage, log_id: &str) -> Result<u64, ClusterError> {
        let dir = storage.dir();
        let mut files = local_files(dir)?;
        let mut total: u64 = files.iter().map(|(_, len)| len).sum();
        if total <= self.cache_bytes {
            return Ok(0);
        }
        let Some((_, manifest)) = newest_manifest(&self.bucket)? else {
            return Ok(0);
        };
        if manifest.log_id != log_id {
            return Ok(0);
        }
        let newest = files
            .iter()
            .filter_map(|(name, _)| segment::parse_file_name(name))
            .max();
        let mut evicted = 0;
        for entry in &manifest.segments {
            if total <= self.cache_bytes {
                break;
            }
            let name = segment::file_name(entry.base_seq);
            if Some(entry.base_seq) >= newest || entry.segment.name != name {
                continue;
            }
            if !files.iter().any(|(n, _)| *n == name) {
                continue;
            }
            if !matches_archived(&dir.join(&name), entry)? {
                // The bucket's object is not what this follower checked:
                // keep the local copy.
                continue;
            }
            let idx = index::file_name(entry.base_seq);
            if entry.index.as_ref().is_some_and(|i| i.name == idx) {
                storage.mark_archived(&idx);
            }
            storage.mark_archived(&name);
            for gone in [&name, &idx] {
                if let Some(at) = files.iter().position(|(n, _)| n == gone) {
                    let (_, len) = files.swap_remove(at);
                    let path = dir.join(gone);
                    std::fs::remove_file(&path).map_err(|source| ClusterError::Io {
                        context: format!("evicting {}", path.display()),
                        source,
                    })?;
                    total -= len;
                }
            }
            evicted += 1;
        }
        Ok(evicted)
    }
}

/// The files in `dir`, with their lengths.
fn local_files(dir: &Path) -> Result<Vec<(String, u64)>, ClusterError> {
    let io = |source| ClusterError::Io {
        context: format!("reading {}", dir.display()),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let meta = entry.metadata().map_err(io)?;
        if meta.is_file() {
            files.push((entry.file_name().to_string_lossy().into_owned(), meta.len()));
        }
    }
    Ok(files)
}

/// Whether the file at `path` has the size and SHA-256 the manifest gives
/// its archived object.
fn matches_archived(path: &Path, entry: &SegmentEntry) -> Result<bool, ClusterError> {
    let io = |source| ClusterError::Io {
        context: format!("reading {}", path.display()),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    if file.metadata().map_err(io)?.len() != entry.segment.bytes {
        return Ok(false);
    }
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(io)?;
    let digest: [u8; 32] = hasher.finalize().into();
    Ok(ChainHash(digest).to_hex() == entry.segment.sha256)
}
