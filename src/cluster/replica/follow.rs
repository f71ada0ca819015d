//! Following a workspace in the bucket: a read-only log at the newest head.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::archive::Bucket;
use crate::cluster::{ClusterError, Head};
use crate::hash::checkpoint::NoteVerifier;
use crate::log::Log;

/// How a [`Follower`] polls and caches.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// Read the head this often. Default 500 ms.
    pub poll_interval: Duration,
    /// Most bytes kept in the cache directory. Default 1 GiB.
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

/// A read-only follower of a workspace in the bucket.
#[derive(Debug)]
pub struct Follower {}

impl Follower {
    /// Starts following the workspace at `bucket`'s prefix, caching in
    /// `cache_dir`, trusting heads signed for `verifier`.
    pub fn open(
        cache_dir: &Path,
        bucket: Arc<Bucket>,
        verifier: NoteVerifier,
        options: FollowOptions,
    ) -> Result<Follower, ClusterError> {
        let _ = (cache_dir, bucket, verifier, options);
        unimplemented!()
    }

    /// The log at the newest head checked (read-only), and that head.
    pub fn log(&self) -> Result<(Arc<Log>, Option<Head>), ClusterError> {
        unimplemented!()
    }

    /// How far behind the bucket's newest head the log is.
    pub fn lag(&self) -> Duration {
        unimplemented!()
    }
}
