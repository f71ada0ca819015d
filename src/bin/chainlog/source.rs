//! Where a reading command reads: the log directory (`--dir`), or the
//! log's archive in a bucket (`--from s3://BUCKET/PREFIX`).

use chainlog::Log;
use clap::Args;

use crate::error::CliError;
use crate::Global;

/// `--from` and how to reach it, for `query`, `export` and `prove`.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Read the log's archive in a bucket instead of --dir: s3://BUCKET/PREFIX
    /// as `chainlog archive --to` wrote it (its sealed segments and indexes,
    /// read with ranged GETs; records not archived yet are not there).
    /// Credentials come from the AWS environment variables.
    #[cfg(feature = "s3")]
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    from: Option<String>,
    #[cfg(feature = "s3")]
    #[command(flatten)]
    endpoint: crate::archive::EndpointArgs,
}

impl SourceArgs {
    /// The log to read, opened read-only.
    pub fn open(&self, global: &Global) -> Result<Log, CliError> {
        #[cfg(feature = "s3")]
        if let Some(url) = &self.from {
            return open_archive(&self.endpoint.target(url)?);
        }
        crate::read::open_read_only(global.dir()?)
    }
}

/// A read-only log over the archive at `target`.
#[cfg(feature = "s3")]
fn open_archive(target: &chainlog::archive::ArchiveTarget) -> Result<Log, CliError> {
    use chainlog::archive::{ArchiveError, Bucket, BucketStorage};
    use std::sync::Arc;
    let bucket = Bucket::connect(target, true).map_err(crate::archive::cli_error)?;
    let storage = Arc::new(BucketStorage::new(Arc::new(bucket)));
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
