//! Evidence packs for auditors: one zip that shows a period of the log is
//! complete and unchanged, checkable offline with the log's public key.
//! Uses [`crate::query`], [`crate::log`] and [`crate::hash`]; the server and the CLI use it.
//!
//! A pack covers the records with seq `start..end`: from the first to the
//! last record whose event time is in `[since, until)`, and every record
//! between them (a record with an earlier or later time that arrived in
//! between is in the pack too, and counted apart). It holds:
//!
//! | file | what |
//! |---|---|
//! | `manifest.json` | every other file with its SHA-256 and size; the period, the seq range, the trees ([`Manifest`]) |
//! | `manifest.sig` | a signed note (the log's Ed25519 key) over the manifest's SHA-256 and the log's origin |
//! | `public-key.txt` | the key that signed it (compare its id with the log's published key) |
//! | `checkpoints/start.txt`, `checkpoints/end.txt` | signed checkpoints of the trees of `start` and `end` records, with their chain heads |
//! | `checkpoints/witnessed.txt` | the newest witnessed (cosigned) checkpoint, when one was given |
//! | `proofs/witnessed-consistency.json` | with it, when its size is not the end's: the consistency proof between the two trees, the smaller first |
//! | `proofs/consistency.json` | the consistency proof from the start tree to the end tree |
//! | `proofs/inclusion-sample.json` | inclusion proofs of a random sample, and its seed |
//! | `events/events.jsonl`, `events/events.csv` | the rows, as `chainlog export` writes them |
//! | `events/records.jsonl` | each row's stored record bytes: the chain from the start head to the end head is recomputed from them |
//! | `state/retention.json` | retention and legal hold as the log records them; the archive and Object Lock as the bucket reports them |
//! | `access/summary.json` | reads of the log, failed sign-ins, refusals and key changes in the period |
//! | `report.html` (and `report.pdf`) | the report for people, with the controls each file supports |
//! | `VERIFY.md`, `verify_pack.py` | how to check the pack, and a short independent checker |
//!
//! [`build`] writes a pack (streaming: memory does not grow with the
//! period); [`check`] checks one. `docs/FORMAT.md` ("Evidence pack") has
//! the format, `docs/AUDITORS.md` what a pack proves and what it does not.

mod build;
mod check;
mod manifest;
mod report;
mod stats;
#[cfg(test)]
mod tests;

pub use build::{build, ArchiveState, EvidenceOptions, PackSummary};
pub use check::{check, CheckReport};
pub use manifest::{
    sample_seqs, seal, FileEntry, Manifest, PeriodManifest, SampleManifest, TreeManifest,
    MANIFEST_FORMAT, SEAL_PREFIX,
};
pub use stats::{AccessSummary, PeriodStats, MAX_LISTED_FAILURES, MAX_TRACKED_ACTORS};

use crate::hash::checkpoint::CheckpointError;
use crate::query::proofs::ProveError;

/// The manifest's file name.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest's signature.
pub const SEAL_FILE: &str = "manifest.sig";
/// The signer's public key.
pub const KEY_FILE: &str = "public-key.txt";
/// The start checkpoint.
pub const START_FILE: &str = "checkpoints/start.txt";
/// The end checkpoint.
pub const END_FILE: &str = "checkpoints/end.txt";
/// The newest witnessed checkpoint, when one was given.
pub const WITNESSED_FILE: &str = "checkpoints/witnessed.txt";
/// The consistency proof between the witnessed checkpoint's tree and the
/// end checkpoint's (the smaller first), when their sizes differ.
pub const WITNESSED_CONSISTENCY_FILE: &str = "proofs/witnessed-consistency.json";
/// The consistency proof.
pub const CONSISTENCY_FILE: &str = "proofs/consistency.json";
/// The sample's inclusion proofs.
pub const SAMPLE_FILE: &str = "proofs/inclusion-sample.json";
/// The rows as JSON Lines.
pub const EVENTS_JSONL_FILE: &str = "events/events.jsonl";
/// The rows as CSV.
pub const EVENTS_CSV_FILE: &str = "events/events.csv";
/// The rows' record bytes.
pub const RECORDS_FILE: &str = "events/records.jsonl";
/// Retention, hold, archive and Object Lock.
pub const STATE_FILE: &str = "state/retention.json";
/// Access to the log.
pub const ACCESS_FILE: &str = "access/summary.json";
/// The report.
pub const REPORT_FILE: &str = "report.html";
/// The report as PDF, when a renderer was there.
pub const REPORT_PDF_FILE: &str = "report.pdf";
/// How to check the pack.
pub const VERIFY_FILE: &str = "VERIFY.md";
/// The independent checker.
pub const SCRIPT_FILE: &str = "verify_pack.py";

/// The independent checker's source, shipped in every pack.
pub const VERIFY_PACK_PY: &str = include_str!("verify_pack.py");
/// `VERIFY.md`, shipped in every pack.
pub const VERIFY_MD: &str = include_str!("VERIFY.md");

/// Most sampled inclusion proofs in a pack.
pub const MAX_SAMPLE: u64 = 10_000;
/// Most bytes the checker reads from one file of a pack (the events files
/// are streamed and not bounded by this).
pub const MAX_SMALL_FILE_BYTES: u64 = 64 << 20;

/// Why a pack could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    /// Reading the log failed.
    #[error(transparent)]
    Log(#[from] crate::Error),
    /// A proof or a root could not be made, or the log does not match itself.
    #[error(transparent)]
    Prove(#[from] ProveError),
    /// Writing the pack failed.
    #[error("writing the pack failed: {0}")]
    Io(#[from] std::io::Error),
    /// The zip writer failed.
    #[error("writing the pack failed: {0}")]
    Zip(#[from] zip::result::ZipError),
    /// Signing failed.
    #[error("signing: {0}")]
    Sign(CheckpointError),
    /// The period is empty or inverted, or a limit is exceeded.
    #[error("{0}")]
    BadRequest(String),
    /// The witnessed checkpoint given is not a checkpoint of this log signed
    /// with its key.
    #[error("the witnessed checkpoint is not this log's: {0}")]
    BadWitnessed(String),
    /// A record's hash is not what its bytes chain to: the log needs `chainlog verify`.
    #[error("record {seq} does not chain from the record before it: run `chainlog verify`; no pack is made from a damaged log")]
    ChainBroken {
        /// The record's seq.
        seq: u64,
    },
    /// A record's bytes do not decode.
    #[error("record {seq} cannot be exported: {reason}")]
    BadRecord {
        /// The record's seq.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
}

/// What is wrong with a pack: the file it is in, and what.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackError {
    /// The pack is not a zip, or a file cannot be read from it.
    #[error("{file}: cannot be read: {reason}")]
    Unreadable {
        /// The file (or the pack itself).
        file: String,
        /// Why.
        reason: String,
    },
    /// A file the format requires is missing.
    #[error("{file}: missing from the pack")]
    Missing {
        /// The file.
        file: String,
    },
    /// A file is in the pack but not in the manifest.
    #[error("{file}: in the pack but not listed in manifest.json (added)")]
    Unlisted {
        /// The file.
        file: String,
    },
    /// A file's SHA-256 or size differs from the manifest's.
    #[error("{file}: does not match manifest.json ({reason}): the file was changed")]
    HashMismatch {
        /// The file.
        file: String,
        /// Expected and found.
        reason: String,
    },
    /// A signature does not verify, or is by another key.
    #[error("{file}: {source}")]
    Signature {
        /// The signed file.
        file: String,
        /// Why.
        #[source]
        source: CheckpointError,
    },
    /// A file does not parse, or says something other than the manifest.
    #[error("{file}: {reason}")]
    Malformed {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// A proof, a chain hash, a count or a range does not check out.
    #[error("{file}: {reason}")]
    Invalid {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
}

impl PackError {
    /// The file of the pack the problem is in.
    pub fn file(&self) -> &str {
        match self {
            PackError::Unreadable { file, .. }
            | PackError::Missing { file }
            | PackError::Unlisted { file }
            | PackError::HashMismatch { file, .. }
            | PackError::Signature { file, .. }
            | PackError::Malformed { file, .. }
            | PackError::Invalid { file, .. } => file,
        }
    }
}
