//! Replicated durability over a bucket (issue 16): a workspace's writer
//! whose appends are acknowledged once in the bucket ([`Replicated`]), and a
//! reader that follows the bucket ([`Follower`]).
//!
//! Uses the cluster's lease and head ([`super::lease`], [`super::head`]),
//! [`crate::archive`] (the bucket, sealed-segment archiving), [`crate::log`]
//! and the format and hash layers below; never the server. docs/CLUSTER.md
//! ("Replicated durability") specifies the objects.

pub mod follow;
pub mod pieces;
pub mod rebuild;
pub mod uploader;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use follow::{FollowOptions, Follower};
pub use pieces::{Piece, PieceError, PieceRange};

use super::head::Head;
use super::lease::LeaseOptions;
use super::ClusterError;
use crate::archive::Bucket;
use crate::hash::checkpoint::NoteSigner;
use crate::log::{Log, Options};

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
pub struct Replicated {
    log: Arc<Log>,
    shared: Arc<uploader::Shared>,
    epoch: u64,
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
    pub fn open(
        dir: &Path,
        bucket: Arc<Bucket>,
        holder: &str,
        lease: LeaseOptions,
        signer: NoteSigner,
        log_options: Options,
        options: ReplicationOptions,
    ) -> Result<Replicated, ClusterError> {
        let _ = (dir, bucket, holder, lease, signer, log_options, options);
        unimplemented!()
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
        let _ = next_seq;
        unimplemented!()
    }

    /// The size of the newest head this writer published.
    pub fn replicated_next_seq(&self) -> u64 {
        unimplemented!()
    }

    /// Why this writer stopped (lease lost, ...), if it did: the server then
    /// drops the workspace.
    pub fn fenced(&self) -> Option<String> {
        unimplemented!()
    }

    /// The newest head this writer published.
    pub fn head(&self) -> Option<Head> {
        unimplemented!()
    }

    /// Uploads what is pending, stops the uploader, closes the log, releases
    /// the lease.
    pub fn close(self) -> Result<(), ClusterError> {
        unimplemented!()
    }
}
