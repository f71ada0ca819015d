//! The library's error type.
//!
//! Corruption (bytes on disk that fail a check) and I/O failure (the operating
//! system refused) are different variants, so a caller can tell a damaged log
//! from a full disk. After an I/O failure while writing, the handle is poisoned
//! and every later append fails with [`Error::Poisoned`] until the log is
//! reopened, because the state of the file after a failed write or fsync is
//! unknown.

use std::io;
use std::path::PathBuf;

use crate::event::EventError;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operating system reported an I/O error.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Verification of the log found problems, so the operation that needs
    /// a verified log (signing a checkpoint) was refused.
    #[error("{dir}: verification found {problems} problem(s) (first: {first}); refusing to sign a checkpoint of an unverified log")]
    Unverified {
        /// The log directory.
        dir: PathBuf,
        /// How many problems verification found.
        problems: u64,
        /// The first one, for people.
        first: String,
    },
    /// An earlier write or sync failed; the handle refuses writes until reopened.
    #[error("the log handle is poisoned by an earlier I/O failure ({0}); reopen the log")]
    Poisoned(String),
    /// Stored bytes failed a check (checksum, magic, length, sequence).
    #[error("corruption in {file} at byte {offset}: {reason}")]
    Corrupted {
        /// The segment (or other) file, by name.
        file: String,
        /// Byte offset in that file where the bad data starts.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// A checksum did not match.
    #[error(
        "checksum mismatch in {file} at byte {offset}: expected {expected:#010x}, got {got:#010x}"
    )]
    ChecksumMismatch {
        /// The file, by name.
        file: String,
        /// Byte offset of the checksummed structure.
        offset: u64,
        /// The checksum stored on disk.
        expected: u32,
        /// The checksum computed over the bytes read.
        got: u32,
    },
    /// The file's format version is not one this build can read.
    #[error(
        "{file}: unsupported format version {found} (this build reads versions 1 to {supported})"
    )]
    UnsupportedVersion {
        /// The file, by name.
        file: String,
        /// The version found in the file.
        found: u16,
        /// The version this build reads and writes.
        supported: u16,
    },
    /// The log's newest segment has an older format version: it can be
    /// read, but appending needs a migration first.
    #[error("the log in {dir} has format version {version}; run `chainlog migrate {dir}` before writing to it", dir = dir.display())]
    MigrationNeeded {
        /// The log directory.
        dir: PathBuf,
        /// The newest segment's format version.
        version: u16,
    },
    /// An event failed validation; nothing was appended.
    #[error("invalid event: {0}")]
    InvalidEvent(#[from] EventError),
    /// A batch has more than [`crate::limits::MAX_BATCH_EVENTS`] events, or
    /// more bytes than one segment holds.
    #[error("batch of {len} {unit} exceeds the limit of {max}")]
    BatchTooLarge {
        /// The batch's size.
        len: u64,
        /// The limit.
        max: u64,
        /// What is counted.
        unit: &'static str,
    },
    /// A legal hold blocks retention.
    #[error("a legal hold set by {actor} at {since} blocks retention: {reason}")]
    LegalHold {
        /// Who set it.
        actor: String,
        /// Why.
        reason: String,
        /// When.
        since: crate::event::Timestamp,
    },
    /// A legal hold is already set (or not set, when releasing).
    #[error("{0}")]
    HoldState(&'static str),
    /// The log was opened read-only.
    #[error("the log is open read-only")]
    ReadOnly,
    /// [`crate::Log::create`] found an existing log.
    #[error("a log already exists in {0}")]
    AlreadyExists(PathBuf),
    /// [`crate::Log::open`] found no log.
    #[error("no log found in {0}")]
    NotFound(PathBuf),
    /// Another process holds the log's write lock.
    #[error("the log in {0} is locked by another writer")]
    Locked(PathBuf),
    /// The options are inconsistent.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// A sequence number outside the log was requested.
    #[error("seq {seq} is not in the log (retained range {first}..{next})")]
    SeqOutOfRange {
        /// The requested seq.
        seq: u64,
        /// The first retained seq.
        first: u64,
        /// The seq the next append will get.
        next: u64,
    },
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// True when the error means stored data failed a check.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::Corrupted { .. } | Error::ChecksumMismatch { .. }
        )
    }
}
