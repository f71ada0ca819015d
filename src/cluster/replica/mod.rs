//! Replicated durability over a bucket (issue 16): a workspace's writer
//! whose appends are acknowledged once in the bucket ([`Replicated`]), and a
//! reader that follows the bucket ([`Follower`]).
//!
//! Uses the cluster's lease and head ([`super::lease`], [`super::head`]),
//! [`crate::archive`] (the bucket, sealed-segment archiving), [`crate::log`]
//! and the format and hash layers below; never the server. docs/CLUSTER.md
//! ("Replicated durability") specifies the objects.

mod archiver;
pub mod cached_storage;
pub mod follow;
pub mod pieces;
pub mod rebuild;
pub mod uploader;

use std::path::Path;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use cached_storage::CachedStorage;
pub use follow::{FollowOptions, Follower};
pub use pieces::{Piece, PieceError, PieceRange};

use parking_lot::Mutex;
use rebuild::Replay;
use uploader::Uploader;

use super::head::{check_head, publish_head, read_head, Head, HeadProblem, PublishedHead};
use super::lease::{Lease, LeaseOptions};
use super::ClusterError;
use crate::archive::Bucket;
use crate::hash::checkpoint::{Checkpoint, NoteSigner};
use crate::hash::merkle::Frontier;
use crate::log::{Durability, Log, Options};

/// How a [`Replicated`] log uploads and acknowledges.
#[derive(Debug, Clone)]
pub struct ReplicationOptions {
    /// Upload what was appended at least this often. Default 250 ms.
    pub flush_interval: Duration,
    /// Upload at once when this many bytes are pending. Default 1 MiB.
    pub flush_bytes: u64,
    /// [`Replicated::wait_replicated`] gives up after this long
    /// ([`ClusterError::ReplicationTimeout`]). Default 10 s.
    pub ack_timeout: Duration,
    /// The checkpoint origin prefix (the origin is `<prefix>/<log id>`), as
    /// `serve --checkpoint-origin`. Default `chainlog`.
    pub origin_prefix: String,
}

impl Default for ReplicationOptions {
    fn default() -> Self {
        ReplicationOptions {
            flush_interval: Duration::from_millis(250),
            flush_bytes: 1 << 20,
            ack_timeout: Duration::from_secs(10),
            origin_prefix: "chainlog".into(),
        }
    }
}

/// A workspace's log under replicated durability, held under a lease.
///
/// Append to [`Replicated::log`] as to any log, then call
/// [`Replicated::wait_replicated`] with the seq after the last receipt: once
/// it returns, the records are in the bucket under a published head, and
/// survive the loss of this node and its disk.
pub struct Replicated {
    log: Arc<Log>,
    shared: Arc<uploader::Shared>,
    epoch: u64,
    options: ReplicationOptions,
    thread: Option<JoinHandle<(Lease, Option<ClusterError>)>>,
}

impl std::fmt::Debug for Replicated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicated")
            .field("dir", &self.log.dir())
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Replicated {
    /// Takes the workspace at `bucket`'s prefix over (or creates it): lease,
    /// republished head, rebuilt `dir`, open log, uploader. Fails with
    /// [`ClusterError::HeldBy`] when another holder's lease is live.
    ///
    /// Whatever `dir` held is a cache: it is moved aside to
    /// `<dir>.stale-<epoch>` (replacing an older one) and the log is rebuilt
    /// from the bucket, exactly up to the head. A workspace without a head,
    /// or with a head of size 0, starts a new log.
    ///
    /// `log_options` are used with [`Durability::None`], write-behind off
    /// (every append is in the segment file when it returns, where the
    /// uploader reads it) and no retention (the bucket holds the log).
    pub fn open(
        dir: &Path,
        bucket: Arc<Bucket>,
        holder: &str,
        lease: LeaseOptions,
        signer: NoteSigner,
        log_options: Options,
        options: ReplicationOptions,
    ) -> Result<Replicated, ClusterError> {
        if options.flush_interval.is_zero() || options.ack_timeout.is_zero() {
            return Err(ClusterError::Invalid {
                what: "replication options",
                reason: "flush_interval and ack_timeout must be positive".into(),
            });
        }
        let log_options = Options {
            durability: Durability::None,
            write_behind: None,
            read_only: false,
            retention: None,
            ..log_options
        };
        let renew_every = Duration::from_millis((lease.ttl_ms / 3).max(1));
        let lease = Lease::acquire(bucket.clone(), holder, lease)?;
        let epoch = lease.epoch();
        let (lease, taken) = while_renewed(lease, renew_every, |lease| {
            take_over(dir, lease, &signer, log_options, &options)
        });
        let (log, start) = match taken {
            Ok(taken) => taken,
            Err(e) => {
                // Let another node try at once rather than after the TTL.
                let _ = lease.release();
                return Err(e);
            }
        };
        let log = Arc::new(log);
        let shared = Arc::new(uploader::Shared::default());
        {
            let mut state = shared.state.lock();
            state.replicated_next = start.next_seq;
            state.head = start.published.as_ref().map(|p| p.head.clone());
            state.uploaded_at = start.active.unwrap_or((start.next_seq, 0));
        }
        let uploader = Uploader::new(
            log.clone(),
            lease,
            signer,
            options.clone(),
            shared.clone(),
            start,
        )?;
        let thread = std::thread::Builder::new()
            .name("chainlog-replica".into())
            .spawn(move || uploader.run())
            .map_err(|source| ClusterError::Io {
                context: "starting the uploader thread".into(),
                source,
            })?;
        Ok(Replicated {
            log,
            shared,
            epoch,
            options,
            thread: Some(thread),
        })
    }

    /// The log: append to it, then [`Replicated::wait_replicated`].
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// The lease epoch this writer holds.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Blocks until records below `next_seq` are in the bucket under a
    /// published head. [`ClusterError::ReplicationTimeout`] after
    /// [`ReplicationOptions::ack_timeout`]; [`ClusterError::LeaseLost`] at once
    /// (now and on every later call) once the writer was fenced.
    pub fn wait_replicated(&self, next_seq: u64) -> Result<(), ClusterError> {
        let started = Instant::now();
        let deadline = started + self.options.ack_timeout;
        let mut state = self.shared.state.lock();
        loop {
            if let Some(fenced) = &state.fenced {
                return Err(fenced.error());
            }
            if state.replicated_next >= next_seq {
                return Ok(());
            }
            if !state.flush_now && self.pending_bytes(&state) >= self.options.flush_bytes {
                state.flush_now = true;
                self.shared.wake.notify_one();
            }
            if self
                .shared
                .changed
                .wait_until(&mut state, deadline)
                .timed_out()
                && state.replicated_next < next_seq
                && state.fenced.is_none()
            {
                return Err(ClusterError::ReplicationTimeout {
                    next_seq,
                    replicated_next_seq: state.replicated_next,
                    waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    last_error: state.last_error.clone(),
                });
            }
        }
    }

    /// Bytes written to the log's files and not yet in a piece (all of a
    /// segment when the log has rolled past the one being uploaded).
    fn pending_bytes(&self, state: &uploader::State) -> u64 {
        let (base, end) = self.log.written_end();
        let (uploaded_base, uploaded_end) = state.uploaded_at;
        if base == uploaded_base {
            end.saturating_sub(uploaded_end)
        } else {
            u64::MAX
        }
    }

    /// The size of the newest head this writer published: records below it
    /// are replicated.
    pub fn replicated_next_seq(&self) -> u64 {
        self.shared.state.lock().replicated_next
    }

    /// Why this writer stopped (lease lost, ...), if it did: whoever holds it then
    /// drops the workspace.
    pub fn fenced(&self) -> Option<String> {
        self.shared
            .state
            .lock()
            .fenced
            .as_ref()
            .map(|f| f.why.clone())
    }

    /// The newest head this writer published.
    pub fn head(&self) -> Option<Head> {
        self.shared.state.lock().head.clone()
    }

    /// PUT requests made so far (pieces and heads), for figures.
    pub fn puts(&self) -> u64 {
        self.shared.state.lock().puts
    }

    /// Uploads what is pending, stops the uploader, closes the log, releases
    /// the lease. Fails (after releasing the lease) when the last upload
    /// failed or the writer was fenced.
    pub fn close(mut self) -> Result<(), ClusterError> {
        {
            let mut state = self.shared.state.lock();
            state.stop = true;
            self.shared.wake.notify_all();
        }
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let (lease, failed) = thread.join().map_err(|_| ClusterError::Invalid {
            what: "uploader",
            reason: "its thread panicked".into(),
        })?;
        let fenced = self.shared.state.lock().fenced.clone();
        let log = self.log.clone();
        drop(self);
        if let Ok(log) = Arc::try_unwrap(log) {
            log.close()?;
        }
        if let Some(fenced) = fenced {
            return Err(fenced.error());
        }
        lease.release()?;
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Replicated {
    /// Stops the uploader at once, without a last upload and without
    /// releasing the lease (it expires): what a crash leaves.
    fn drop(&mut self) {
        {
            let mut state = self.shared.state.lock();
            if state.fenced.is_none() {
                state.fenced = Some(uploader::Fenced {
                    url: String::new(),
                    epoch: self.epoch,
                    why: "the writer was dropped".into(),
                });
            }
            self.shared.wake.notify_all();
            self.shared.changed.notify_all();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `work` while a thread renews `lease` every `every`, then returns the
/// lease (renewed last at most `every` ago) and what `work` returned. A
/// rebuild can outlast the lease's TTL: left to expire, the lease would be
/// taken by another node before this one's uploader first renewed it, and
/// that node's rebuild could lose it the same way. A renew that fails leaves
/// the lease to `work`'s own checks ([`publish_head`] refuses a lost lease)
/// and the uploader's.
fn while_renewed<T>(
    lease: Lease,
    every: Duration,
    work: impl FnOnce(&Mutex<Lease>) -> T,
) -> (Lease, T) {
    let lease = Mutex::new(lease);
    let (done, stop) = std::sync::mpsc::channel::<()>();
    let renewed = &lease;
    let result = std::thread::scope(|scope| {
        scope.spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
                if renewed.lock().renew().is_err() {
                    return;
                }
            }
        });
        let result = work(&lease);
        drop(done);
        result
    });
    (lease.into_inner(), result)
}

/// Everything [`Replicated::open`] does under the lease before the uploader
/// starts: the head claimed, the directory rebuilt (or a new log), the log
/// opened.
fn take_over(
    dir: &Path,
    lease: &Mutex<Lease>,
    signer: &NoteSigner,
    log_options: Options,
    options: &ReplicationOptions,
) -> Result<(Log, uploader::Start), ClusterError> {
    let (epoch, bucket) = {
        let lease = lease.lock();
        (lease.epoch(), lease.bucket().clone())
    };
    let (current, claimed) = claim_head(lease, signer)?;
    move_aside(dir, epoch)?;
    let taken = match (current, claimed) {
        (_, Some(published)) => {
            let mut replay = Replay::new(dir, rebuild::head_log_id(&published.head)?)?;
            replay.advance(&bucket, &published.head)?;
            let end = replay.end();
            drop(replay);
            sync_dir(dir)?;
            let log = Log::open(dir, log_options)?;
            let state = log.state();
            if state.next_seq != published.head.size {
                return Err(ClusterError::HeadMismatch {
                    size: published.head.size,
                    root: published.head.root,
                    reason: format!("the rebuilt log opens with {} records", state.next_seq),
                });
            }
            let start = uploader::Start {
                dir: dir.to_path_buf(),
                active: end.active,
                next_seq: end.next_seq,
                chain_head: state.head,
                frontier: end.frontier,
                published: Some(published),
            };
            (log, start)
        }
        (previous, None) => {
            let log = Log::create(dir, log_options)?;
            let checkpoint = Checkpoint {
                origin: format!("{}/{}", options.origin_prefix, log.log_id()),
                size: 0,
                root: Frontier::new().root(),
                head: None,
            };
            let note = checkpoint.sign(signer).map_err(HeadProblem::from)?;
            let first = Head::new(epoch, &checkpoint, note, None);
            let published = publish_head(&lease.lock(), previous.as_ref(), first)?;
            let start = uploader::Start {
                dir: dir.to_path_buf(),
                active: None,
                next_seq: 0,
                chain_head: log.state().head,
                frontier: Frontier::new(),
                published: Some(published),
            };
            (log, start)
        }
    };
    Ok(taken)
}

/// Reads the head and, when it has records, republishes it under the
/// lease's epoch: from then on no older epoch can move it. A head moved
/// meanwhile by the old holder (its last publish racing the takeover) is
/// read again. Returns the head read, and the one republished.
fn claim_head(
    lease: &Mutex<Lease>,
    signer: &NoteSigner,
) -> Result<(Option<PublishedHead>, Option<PublishedHead>), ClusterError> {
    const ATTEMPTS: usize = 8;
    let mut attempt = 0;
    let (epoch, bucket) = {
        let lease = lease.lock();
        (lease.epoch(), lease.bucket().clone())
    };
    loop {
        attempt += 1;
        let current = read_head(&bucket)?;
        let Some(found) = current.as_ref().filter(|f| f.head.size > 0) else {
            return Ok((current, None));
        };
        check_head(&found.head, &signer.verifier(), None)?;
        let claimed = Head {
            epoch,
            consistency: None,
            ..found.head.clone()
        };
        match publish_head(&lease.lock(), Some(found), claimed) {
            Ok(published) => return Ok((current, Some(published))),
            Err(ClusterError::HeadMoved { .. }) if attempt < ATTEMPTS => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Moves a non-empty `dir` aside to `<dir>.stale-<epoch>` (removing an
/// older one, and the archiver's `<dir>.archive`): a local copy is a cache,
/// never trusted over the bucket.
fn move_aside(dir: &Path, epoch: u64) -> Result<(), ClusterError> {
    let io = |what: &str, path: &Path| {
        let context = format!("{what} {}", path.display());
        move |source| ClusterError::Io { context, source }
    };
    // The archiver's links to an earlier run's segments go too.
    let staging = archiver::staging_dir(dir);
    match std::fs::remove_dir_all(&staging) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io("removing", &staging)(e))
        }
        _ => {}
    }
    let empty = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("reading", dir)(e)),
    };
    if empty {
        return Ok(());
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = dir.parent().unwrap_or(Path::new("."));
    if let Ok(entries) = std::fs::read_dir(parent) {
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}.stale-"))
            {
                let path = entry.path();
                std::fs::remove_dir_all(&path).map_err(io("removing", &path))?;
            }
        }
    }
    let aside = parent.join(format!("{name}.stale-{epoch}"));
    std::fs::rename(dir, &aside).map_err(io("moving aside", dir))
}

fn sync_dir(dir: &Path) -> Result<(), ClusterError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| ClusterError::Io {
            context: format!("syncing {}", dir.display()),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both are shared between the threads that serve requests.
    #[test]
    fn writers_and_followers_are_send_and_sync() {
        fn shared<T: Send + Sync>() {}
        shared::<Replicated>();
        shared::<Follower>();
    }
}
