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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::rebuild::{head_log_id, Replay};
use crate::archive::Bucket;
use crate::cluster::head::{check_head, read_head, HeadProblem};
use crate::cluster::{ClusterError, Head, HEAD_OBJECT};
use crate::hash::checkpoint::NoteVerifier;
use crate::log::{Log, Options};

/// How a [`Follower`] polls and caches.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// Read the head this often. Default 500 ms.
    pub poll_interval: Duration,
    /// Most bytes kept in the cache directory. Default 1 GiB. Not enforced
    /// yet: the cache holds the whole log (docs/CLUSTER.md).
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
    generation: u64,
    replay: Option<Replay>,
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
            generation: 0,
            replay: None,
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
            let mut current = shared.current.lock();
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
            let mut replay = Replay::new(&dir, log_id)?;
            if let Err(e) = replay.advance(&self.bucket, &head) {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
            let old = self.replay.replace(replay);
            if let Some(old) = old {
                // Its log may still be read; remove the files when the
                // last reader is gone is the OS's business (unlinked files
                // stay readable while open).
                let _ = std::fs::remove_dir_all(old.dir());
            }
        }
        let dir = self.replay.as_ref().map(|r| r.dir().to_path_buf());
        let Some(dir) = dir else {
            return Ok(());
        };
        let log = Log::open(&dir, Options::for_reading())?;
        let mut current = shared.current.lock();
        current.log = Some(Arc::new(log));
        current.head = Some(head.clone());
        current.checked_at = Some(polled);
        current.problem = None;
        self.trusted = Some(head);
        Ok(())
    }
}
