//! One fenced writer per workspace over a bucket (feature `s3`): the
//! writer's lease, the published head, the probe that checks a bucket
//! enforces conditional writes, and replicated durability over them
//! ([`replica`]: a writer acknowledged once in the bucket, and a follower).
//!
//! Uses [`crate::archive`] (the bucket connection and its conditional
//! writes), [`crate::hash`] (checkpoints, consistency proof checking),
//! [`crate::log`] and [`crate::query`] (a log's checkpoint and consistency
//! proofs); never the server.
//!
//! Under a workspace's prefix `s3://BUCKET/PREFIX/` (docs/CLUSTER.md
//! specifies both objects member by member):
//!
//! | key | what | written with |
//! |---|---|---|
//! | `PREFIX/lease.json` | [`LeaseRecord`]: who writes the workspace, in which epoch, until when | `If-None-Match: *` (first holder), else `If-Match` |
//! | `PREFIX/head.json` | [`Head`]: the published checkpoint, with the epoch that published it | `If-None-Match: *` (first head), else `If-Match` |
//! | `PREFIX/tail/<base>/<first>-<epoch>.piece` | [`Piece`]: byte ranges of one segment file, written by the holder of `epoch` | `If-None-Match: *`, never replaced |
//!
//! Nothing here is a home-made consensus: every decision is one
//! conditional PUT that the object store orders. That is only as strong as
//! the store's conditional writes, hence [`probe_conditional_writes`], and
//! hence docs/CLUSTER.md's measurement of what a check-then-write server
//! (s3s-fs) lets through.
//!
//! The functions block, like [`Bucket`]'s.

pub mod head;
pub mod lease;
pub mod probe;
pub mod replica;

use std::sync::Arc;

pub use head::{
    check_head, head_of_log, publish_head, read_head, Head, HeadProblem, PublishedHead, HEAD_FORMAT,
};
pub use lease::{read_lease, Lease, LeaseOptions, LeaseRecord, LEASE_FORMAT};
pub use probe::{probe_conditional_writes, ProbeCheck};
pub use replica::{
    FollowOptions, Follower, Piece, PieceError, PieceRange, Replicated, ReplicationOptions,
};

use crate::archive::{ArchiveError, Bucket};

/// The lease's object name under the workspace's prefix.
pub const LEASE_OBJECT: &str = "lease.json";
/// The published head's object name under the workspace's prefix.
pub const HEAD_OBJECT: &str = "head.json";
/// The largest lease or head object read (a head holds a signed note with a
/// few signatures and one consistency proof: a few KiB).
pub const MAX_OBJECT_BYTES: usize = 64 * 1024;

/// Milliseconds since the Unix epoch, from whatever clock the caller
/// trusts ([`system_clock`] by default; tests move time with their own).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The machine's clock, in milliseconds since the Unix epoch.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    })
}

/// Everything that can go wrong with a lease, a head or the probe.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// A request to the bucket failed (network, server, credentials).
    #[error(transparent)]
    Store(#[from] ArchiveError),
    /// The bucket does not enforce conditional writes: one check of the
    /// probe failed. A lease over it would not exclude anyone.
    #[error("{url} does not enforce conditional writes: {check}")]
    NotEnforced {
        /// The probe object.
        url: String,
        /// The check that failed.
        check: ProbeCheck,
    },
    /// Another holder's lease has not expired (judged with the skew margin).
    #[error("the lease {url} is held by {holder:?} (epoch {epoch}) until {expires_at_ms} ms")]
    HeldBy {
        /// The lease object.
        url: String,
        /// Who holds it.
        holder: String,
        /// Its epoch.
        epoch: u64,
        /// Its expiry, ms since the Unix epoch (by the holder's clock).
        expires_at_ms: u64,
    },
    /// The lease was taken over (a renew or release was refused): the
    /// holder must stop writing. Never retried as if it still held it.
    #[error("lost the lease {url} of epoch {epoch}: {now}")]
    LeaseLost {
        /// The lease object.
        url: String,
        /// The epoch that was held.
        epoch: u64,
        /// Who holds it now, as far as a read after the refusal could tell.
        now: String,
    },
    /// By the holder's own clock, its lease is past its expiry minus the
    /// skew margin: another node may take it over, so it must not write
    /// until a renew succeeds.
    #[error("the lease of epoch {epoch} expired (at {expires_at_ms} ms less a {skew_margin_ms} ms margin; now {now_ms} ms): renew it first")]
    LeaseExpired {
        /// The epoch held.
        epoch: u64,
        /// Its expiry.
        expires_at_ms: u64,
        /// The margin.
        skew_margin_ms: u64,
        /// The holder's clock.
        now_ms: u64,
    },
    /// The published head belongs to a newer epoch than the writer's: the
    /// writer was fenced.
    #[error("the head {url} was published in epoch {head_epoch}, after this writer's epoch {epoch}: fenced")]
    StaleEpoch {
        /// The head object.
        url: String,
        /// The writer's epoch.
        epoch: u64,
        /// The head's epoch.
        head_epoch: u64,
    },
    /// The head changed since the writer read it (a compare-and-swap was
    /// refused) in the writer's own epoch or an older one: read it again.
    #[error(
        "the head {url} changed since it was read (it is now at size {size}, epoch {head_epoch})"
    )]
    HeadMoved {
        /// The head object.
        url: String,
        /// Its size now.
        size: u64,
        /// Its epoch now.
        head_epoch: u64,
    },
    /// The local log could not be read or checkpointed.
    #[error(transparent)]
    Log(#[from] crate::Error),
    /// A consistency proof could not be made from the log.
    #[error(transparent)]
    Prove(#[from] crate::query::proofs::ProveError),
    /// A head failed a reader's (or the publisher's own) check.
    #[error("head rejected: {0}")]
    BadHead(#[from] HeadProblem),
    /// A lease or head object does not parse, or breaks its own rules.
    #[error("{url} is malformed: {reason}")]
    Malformed {
        /// The object.
        url: String,
        /// Why.
        reason: String,
    },
    /// Records were not replicated (uploaded under a published head) within
    /// the acknowledgement timeout: the bucket is slow or unreachable.
    #[error("records below {next_seq} were not replicated within {waited_ms} ms (replicated: {replicated_next_seq}){}", last_error.as_deref().map(|e| format!("; last upload error: {e}")).unwrap_or_default())]
    ReplicationTimeout {
        /// The records waited for.
        next_seq: u64,
        /// The records replicated when the wait gave up.
        replicated_next_seq: u64,
        /// How long it waited.
        waited_ms: u64,
        /// The uploader's last failure, if any.
        last_error: Option<String>,
    },
    /// A piece object does not decode.
    #[error("{url}: {problem}")]
    BadPiece {
        /// The piece.
        url: String,
        /// What is wrong.
        problem: PieceError,
    },
    /// What the bucket holds does not give the head it publishes: the
    /// records rebuilt from the pieces have another Merkle root, or pieces
    /// are missing.
    #[error("the bucket's objects do not give the head (size {size}, root {root}): {reason}")]
    HeadMismatch {
        /// The head's size.
        size: u64,
        /// The head's root.
        root: crate::hash::chain::ChainHash,
        /// What was found instead.
        reason: String,
    },
    /// The workspace has no records yet (no head, or a head of size 0).
    #[error("{url}: the workspace has no records yet")]
    Empty {
        /// The head object.
        url: String,
    },
    /// A local file or directory operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// An argument is out of range (an empty holder id, a zero TTL).
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was given.
        what: &'static str,
        /// Why it is refused.
        reason: String,
    },
}

/// Reads `name` with its version, refusing objects over [`MAX_OBJECT_BYTES`].
fn read_small(
    bucket: &Bucket,
    name: &str,
) -> Result<Option<crate::archive::Versioned>, ClusterError> {
    let found = bucket.get_versioned(name)?;
    if let Some(found) = &found {
        if found.bytes.len() > MAX_OBJECT_BYTES {
            return Err(ClusterError::Malformed {
                url: bucket.url(name),
                reason: format!(
                    "{} bytes, over the limit of {MAX_OBJECT_BYTES}",
                    found.bytes.len()
                ),
            });
        }
    }
    Ok(found)
}

/// Parses a JSON object read from `name`.
fn parse_json<T: serde::de::DeserializeOwned>(
    bucket: &Bucket,
    name: &str,
    bytes: &[u8],
) -> Result<T, ClusterError> {
    serde_json::from_slice(bytes).map_err(|e| ClusterError::Malformed {
        url: bucket.url(name),
        reason: e.to_string(),
    })
}
