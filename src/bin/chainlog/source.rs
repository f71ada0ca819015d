//! Where a reading command reads: the log directory (`--dir`), or the
//! log's archive in a bucket (`--from s3://BUCKET/PREFIX`): a replicated
//! workspace (`chainlog serve --bucket`, which publishes a head there) is
//! read up to its published head, through a follower; an archive without a
//! head, as `chainlog archive` wrote it.

use chainlog::Log;
use clap::Args;

use crate::error::CliError;
use crate::Global;

/// `--from` and how to reach it, for `query`, `export` and `prove`.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Read the log in a bucket instead of --dir: s3://BUCKET/PREFIX as
    /// `chainlog archive --to` wrote it (its sealed segments and indexes,
    /// read with ranged GETs; records not archived yet are not there), or a
    /// workspace of `chainlog serve --bucket` (s3://BUCKET/PREFIX/ws/NAME),
    /// read up to its published head (needs --checkpoint-public-key).
    /// Credentials come from the AWS environment variables.
    #[cfg(feature = "s3")]
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    from: Option<String>,
    #[cfg(feature = "s3")]
    #[command(flatten)]
    endpoint: crate::archive::EndpointArgs,
    #[cfg(feature = "s3")]
    #[command(flatten)]
    head_key: HeadKeyArgs,
}

/// The key of a replicated workspace's heads, for `--from`.
#[cfg(feature = "s3")]
#[derive(Debug, Args)]
pub struct HeadKeyArgs {
    /// With --from a replicated workspace: the public key of the checkpoint
    /// key that signs its heads (as `chainlog keygen --public-key` wrote
    /// it); the head is checked with it, and the records against the head.
    #[arg(
        long = "checkpoint-public-key",
        visible_alias = "checkpoint-vkey",
        value_name = "FILE",
        requires = "from"
    )]
    pub checkpoint_public_key: Option<std::path::PathBuf>,
}

impl SourceArgs {
    /// The log to read, opened read-only.
    pub fn open(&self, global: &Global) -> Result<Log, CliError> {
        #[cfg(feature = "s3")]
        if let Some(url) = &self.from {
            return open_bucket(
                &self.endpoint.target(url)?,
                self.head_key.checkpoint_public_key.as_deref(),
            );
        }
        crate::read::open_read_only(global.dir()?)
    }
}

/// A read-only log over the bucket at `target`: up to the published head
/// when there is one, else the archive.
#[cfg(feature = "s3")]
fn open_bucket(
    target: &chainlog::archive::ArchiveTarget,
    head_key: Option<&std::path::Path>,
) -> Result<Log, CliError> {
    use chainlog::archive::{ArchiveError, BucketStorage};
    use std::sync::Arc;
    let bucket = match replicated(target, head_key)? {
        Ok(log) => return Ok(log),
        Err(bucket) => bucket,
    };
    let storage = Arc::new(BucketStorage::new(bucket));
    match Log::open_in(
        storage,
        std::path::Path::new(""),
        chainlog::Options::for_reading(),
    ) {
        Err(chainlog::Error::NotFound(_)) => Err(crate::archive::cli_error(
            ArchiveError::NoArchive(target.to_string()),
        )),
        other => Ok(other?),
    }
}

/// The directory of the log of the replicated workspace at `target`,
/// followed up to its head into the cache; `None` when `target` has no
/// head (an archive, for `verify --from`'s archive checks).
#[cfg(feature = "s3")]
pub fn followed_dir(
    target: &chainlog::archive::ArchiveTarget,
    head_key: Option<&std::path::Path>,
) -> Result<Option<std::path::PathBuf>, CliError> {
    Ok(replicated(target, head_key)?
        .ok()
        .map(|log| log.dir().to_path_buf()))
}

/// The log of the replicated workspace at `target` (it has a published
/// head: `head_key` must then be given), or the connection to a bucket
/// prefix without a head.
#[cfg(feature = "s3")]
fn replicated(
    target: &chainlog::archive::ArchiveTarget,
    head_key: Option<&std::path::Path>,
) -> Result<Result<Log, std::sync::Arc<chainlog::archive::Bucket>>, CliError> {
    use chainlog::archive::Bucket;
    use std::sync::Arc;
    let bucket = Arc::new(Bucket::connect(target, true).map_err(crate::archive::cli_error)?);
    if chainlog::cluster::read_head(&bucket)
        .map_err(cluster_error)?
        .is_none()
    {
        return Ok(Err(bucket));
    }
    let Some(key) = head_key else {
        return Err(CliError::Usage(format!(
            "{target} is a replicated workspace (it has a published head): pass --checkpoint-public-key FILE, the public key of the checkpoint key that signs its heads, to read it up to its head"
        )));
    };
    follow(target, bucket, crate::keys::load_verifier(key)?).map(Ok)
}

/// The log of a replicated workspace at its newest head, through a
/// follower caching under the user's cache directory (reused by the next
/// read of the same workspace).
#[cfg(feature = "s3")]
fn follow(
    target: &chainlog::archive::ArchiveTarget,
    bucket: std::sync::Arc<chainlog::archive::Bucket>,
    verifier: chainlog::hash::checkpoint::NoteVerifier,
) -> Result<Log, CliError> {
    use chainlog::cluster::{FollowOptions, Follower};
    use std::sync::Arc;
    let cache = cache_dir(target);
    std::fs::create_dir_all(&cache)
        .map_err(|e| CliError::io(format!("creating the cache {}", cache.display()), e))?;
    let (log, _) = Follower::open(&cache, bucket, verifier, FollowOptions::default())
        .and_then(|follower| follower.log())
        .map_err(cluster_error)?;
    // The follower (dropped) let go of its log: this read owns it.
    Arc::try_unwrap(log).or_else(|shared| {
        // Still shared (a follower thread winding down): reopen it read-only.
        let dir = shared.dir().to_path_buf();
        drop(shared);
        crate::read::open_read_only(&dir)
    })
}

/// `$XDG_CACHE_HOME/chainlog/from/BUCKET/PREFIX` (else `~/.cache/…`, else
/// the temporary directory).
#[cfg(feature = "s3")]
fn cache_dir(target: &chainlog::archive::ArchiveTarget) -> std::path::PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("chainlog/from")
        .join(&target.bucket)
        .join(&target.prefix)
}

#[cfg(feature = "s3")]
fn cluster_error(e: chainlog::cluster::ClusterError) -> CliError {
    use chainlog::cluster::ClusterError;
    match e {
        ClusterError::Store(e) => crate::archive::cli_error(e),
        ClusterError::Log(e) => CliError::Log(e),
        e @ (ClusterError::BadHead(_)
        | ClusterError::HeadMismatch { .. }
        | ClusterError::BadPiece { .. }) => CliError::Integrity(e.to_string()),
        e => CliError::Usage(e.to_string()),
    }
}
