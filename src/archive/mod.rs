//! Archiving sealed segments to S3-compatible object storage (AWS S3, MinIO,
//! Garage, Ceph), and verifying and restoring a log straight from the bucket.
//!
//! Behind the cargo feature `s3`, which the default build includes. This
//! module uses only the library's public API: it reads segments and indexes
//! through [`crate::storage`], and verifies an archive by handing
//! [`crate::verify::verify_dir_with`] a read-only [`Storage`](crate::storage::Storage)
//! over the bucket ([`BucketStorage`]).
//!
//! # Layout of an archive
//!
//! Under `s3://BUCKET/PREFIX/`, the archive mirrors a log directory, so that
//! it can be verified and restored as one:
//!
//! | key | what |
//! |---|---|
//! | `PREFIX/NNNNNNNNNNNNNNNNNNNN.seg` | a sealed segment, byte for byte |
//! | `PREFIX/NNNNNNNNNNNNNNNNNNNN.idx` | its sparse index (derived data) |
//! | `PREFIX/manifest/NNNNNNNNNNNNNNNNNNNN.json` | one [`Manifest`] per archive run, named by the newest archived seq; readers use the newest |
//! | `PREFIX/checkpoint/NNNNNNNNNNNNNNNNNNNN-HHHHHHHHHHHHHHHH.checkpoint` | a signed checkpoint: its size, and the first 16 hex digits of the note's SHA-256 |
//!
//! Objects are never overwritten: every write is a create-only PUT
//! (`If-None-Match: *`), the manifest is written after every object it
//! names, and an object that already exists is compared (SHA-256) with what
//! would have been written. A rerun therefore uploads only what is missing,
//! an interrupted run leaves nothing half-visible (an S3 PUT is atomic per
//! object), and an archived object that was changed or deleted is reported
//! as tampering ([`ArchiveError::Tampered`]).
//!
//! With [`ArchiveOptions::object_lock`], every object a run writes is also
//! locked with S3 Object Lock until one retain-until date ([`ObjectLock`]);
//! reads never carry the lock headers.
//!
//! The functions here block: each connection drives its requests on a small
//! tokio runtime of its own. From async code, call them inside
//! `tokio::task::spawn_blocking`.
//!
//! ```no_run
//! use chainlog::archive::{archive_sealed, ArchiveOptions, ArchiveTarget};
//!
//! # fn main() -> Result<(), chainlog::archive::ArchiveError> {
//! // Credentials come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...
//! let target = ArchiveTarget::parse("s3://audit-archive/prod")?
//!     .with_endpoint(Some("http://127.0.0.1:9000".into()));
//! let outcome = archive_sealed("/var/lib/audit".as_ref(), &target, &ArchiveOptions::default())?;
//! println!("uploaded {} segments", outcome.uploaded_segments.len());
//! # Ok(())
//! # }
//! ```

mod bucket;
mod conditional;
#[cfg(feature = "lake")]
pub mod lake;
mod lock_state;
mod manifest;
mod object_lock;
mod period;
mod restore;
mod upload;
mod verify;

use std::fmt;
use std::path::PathBuf;

pub use bucket::{Bucket, BucketStorage, Created, LOOPBACK_HOSTS};
pub use conditional::{Conditional, ObjectVersion, Versioned};
pub use lock_state::ObjectLockState;
pub(crate) use manifest::newest_manifest;
pub use manifest::{
    checkpoint_key, manifest_key, segment_key, Manifest, ObjectEntry, SegmentEntry, CHECKPOINT_DIR,
    MANIFEST_DIR, MANIFEST_FORMAT,
};
pub use object_lock::{ObjectLock, ObjectLockMode};
pub use period::{period_archive, period_archive_json, PeriodArchive, PeriodSegment};
pub use restore::{restore, RestoreOutcome};
pub use upload::{
    apply_retention_archived, archive_sealed, archived_bases, confirm_archived, ArchiveOptions,
    ArchiveOutcome,
};
pub use verify::{verify_archive, ArchiveProblem, ArchiveProblemKind, ArchiveReport};

/// Where an archive lives: `s3://BUCKET/PREFIX`, and how to reach it.
///
/// Credentials and the remaining settings come from the standard AWS
/// environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_REGION` / `AWS_DEFAULT_REGION`,
/// `AWS_ENDPOINT_URL`); [`ArchiveTarget::endpoint`] and
/// [`ArchiveTarget::region`] override them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveTarget {
    /// The bucket.
    pub bucket: String,
    /// The key prefix, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// The S3 endpoint URL (`http://127.0.0.1:9000`); default: from
    /// `AWS_ENDPOINT_URL`, else AWS. Plain `http` is allowed for loopback
    /// hosts, and elsewhere only with `AWS_ALLOW_HTTP=true`.
    pub endpoint: Option<String>,
    /// The region; default: from `AWS_REGION` / `AWS_DEFAULT_REGION`, else
    /// `us-east-1`.
    pub region: Option<String>,
}

impl ArchiveTarget {
    /// Parses `s3://BUCKET` or `s3://BUCKET/PREFIX`.
    pub fn parse(url: &str) -> Result<Self, ArchiveError> {
        let bad = |why: &str| ArchiveError::InvalidTarget(format!("{url:?}: {why}"));
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("expected s3://BUCKET/PREFIX"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // S3 bucket names: 3 to 63 lowercase letters, digits, dots and hyphens.
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !bucket_ok {
            return Err(bad(
                "the bucket name must be 3 to 63 lowercase letters, digits, '.' or '-'",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|part| part == "." || part == "..")
            || prefix.contains("//")
            || prefix.chars().any(char::is_control)
        {
            return Err(bad(
                "the prefix must not contain empty, '.' or '..' parts or control characters",
            ));
        }
        Ok(ArchiveTarget {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint: None,
            region: None,
        })
    }

    /// The same target with this endpoint (`None` keeps the environment's).
    pub fn with_endpoint(mut self, endpoint: Option<String>) -> Self {
        if endpoint.is_some() {
            self.endpoint = endpoint;
        }
        self
    }

    /// The same target with this region (`None` keeps the environment's).
    pub fn with_region(mut self, region: Option<String>) -> Self {
        if region.is_some() {
            self.region = region;
        }
        self
    }

    /// The object key of `name` under the prefix.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }
}

impl fmt::Display for ArchiveTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// Everything that can go wrong while archiving, verifying from or
/// restoring from a bucket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The `s3://` URL or an option is malformed.
    #[error("invalid archive target {0}")]
    InvalidTarget(String),
    /// The Object Lock settings are malformed (an unknown mode, a
    /// retention of 0 days or over [`ObjectLock::MAX_DAYS`]).
    #[error("invalid object lock: {0}")]
    InvalidObjectLock(String),
    /// A request to the object store failed (network, server, credentials).
    #[error("{doing}: {source}{}", store_hint(.source))]
    Store {
        /// What was being done (`uploading s3://b/p/000….seg`).
        doing: String,
        /// The object store's error.
        #[source]
        source: object_store::Error,
    },
    /// The local log could not be read, or is damaged.
    #[error(transparent)]
    Log(#[from] crate::Error),
    /// A local file outside the log could not be written or read.
    #[error("{doing}: {source}")]
    Io {
        /// What was being done.
        doing: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Archived objects differ from what was archived, or are missing.
    #[error("the archive was tampered with: {}", .0.join("; "))]
    Tampered(Vec<String>),
    /// The archive holds another log.
    #[error("{target} holds log {archived}, not log {local}; use another prefix")]
    WrongLog {
        /// The archive.
        target: String,
        /// The log id in its manifest.
        archived: String,
        /// The local log's id.
        local: String,
    },
    /// The bucket has no archive under the prefix.
    #[error("no archive at {0} (no manifest under it; run `chainlog archive` first)")]
    NoArchive(String),
    /// A manifest in the bucket does not parse.
    #[error("manifest {key} is malformed: {reason}")]
    BadManifest {
        /// Its key.
        key: String,
        /// Why.
        reason: String,
    },
    /// `restore` was pointed at a directory that is not empty.
    #[error("{} is not empty; restore writes only into a new or empty directory", .0.display())]
    NotEmpty(PathBuf),
    /// An option is inconsistent (e.g. a checkpoint for another log).
    #[error("{0}")]
    Refused(String),
    /// The server answered a read or a write without an ETag, which
    /// conditional writes need.
    #[error("{0}: the server sent no ETag, so conditional writes cannot be used")]
    MissingETag(String),
}

impl ArchiveError {
    /// True when the error means archived data is damaged or missing.
    pub fn is_tampering(&self) -> bool {
        match self {
            ArchiveError::Tampered(_) => true,
            ArchiveError::Log(e) => e.is_corruption(),
            _ => false,
        }
    }

    pub(crate) fn store(doing: impl Into<String>, source: object_store::Error) -> Self {
        ArchiveError::Store {
            doing: doing.into(),
            source,
        }
    }

    pub(crate) fn io(doing: impl Into<String>, source: std::io::Error) -> Self {
        ArchiveError::Io {
            doing: doing.into(),
            source,
        }
    }
}

/// A hint after an object store error that has a usual cause.
fn store_hint(e: &object_store::Error) -> &'static str {
    match e {
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            " (the server refused the credentials: check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, and the bucket's policy)"
        }
        object_store::Error::NotImplemented { .. } => {
            " (the server does not support conditional (create-only) PUTs; see README, \"Archive\")"
        }
        e => {
            let text = e.to_string();
            let refused = ["403 Forbidden", "401 Unauthorized", "SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"];
            if refused.iter().any(|r| text.contains(r)) {
                " (the server refused the credentials: check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, and the bucket's policy)"
            } else {
                ""
            }
        }
    }
}

/// Hex of a SHA-256 digest.
pub(crate) fn hex(digest: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(digest.len() * 2);
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// SHA-256 of `bytes`, as hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let t = ArchiveTarget::parse("s3://audit-archive/prod/eu/").unwrap();
        assert_eq!(t.bucket, "audit-archive");
        assert_eq!(t.prefix, "prod/eu");
        assert_eq!(t.key("a.seg"), "prod/eu/a.seg");
        assert_eq!(t.to_string(), "s3://audit-archive/prod/eu");
        let t = ArchiveTarget::parse("s3://audit").unwrap();
        assert_eq!(t.prefix, "");
        assert_eq!(t.key("a.seg"), "a.seg");
        for bad in [
            "audit/x",
            "s3://",
            "s3://UPPER/x",
            "s3://ab",
            "s3://audit/a/../b",
            "s3://audit/a//b",
            "http://audit/x",
        ] {
            assert!(
                matches!(
                    ArchiveTarget::parse(bad),
                    Err(ArchiveError::InvalidTarget(_))
                ),
                "{bad} should be refused"
            );
        }
    }
}
