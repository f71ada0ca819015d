//! chainlog: a tamper-evident audit-log storage engine.
//!
//! A log is a directory of fixed-size, preallocated segment files. Every
//! record (an audit [`Event`] with its seq) is SHA-256 hash-chained to the one
//! before it, so a modified, deleted, inserted or reordered record breaks the
//! chain at a reported seq; each frame also carries a CRC-32C so that a write
//! torn by a crash is told apart from a forged record. Signed checkpoints
//! ([`hash::checkpoint`]) close what a chain alone cannot: truncation of the newest
//! records and a wholesale rewrite.
//!
//! ```
//! use chainlog::{Event, Log, Options, Outcome, Timestamp};
//! use chainlog::verify::verify_dir;
//! use chainlog::storage::FsStorage;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let log = Log::create(dir.path(), Options::default())?;
//!
//! let mut event = Event::new(Timestamp::now(), "auth.login_failed", "alice@acme.io");
//! event.source_ip = Some("203.0.113.42".parse()?);
//! event.outcome = Outcome::Failure;
//! let receipt = log.append(&event)?; // durable when it returns (Durability::Always)
//!
//! for record in log.iter_from(0) {
//!     let record = record?;
//!     assert_eq!(record.hash, receipt.hash);
//! }
//! drop(log);
//!
//! let report = verify_dir(&FsStorage, dir.path(), &mut |_bytes| {})?;
//! assert!(report.is_intact());
//! # Ok(())
//! # }
//! ```
//!
//! # Layers
//!
//! Each module uses only modules of a lower rank (`tests/layers.rs` checks
//! it, from the same table):
//!
//! | rank | modules | owns |
//! |---|---|---|
//! | 0 | [`limits`], `le` | limits on every input; little-endian reads |
//! | 1 | [`event`] | the event, its record bytes, reading it from JSON |
//! | 2 | [`error`] | the library's error type |
//! | 3 | [`hash`] | hash chain, Merkle hashing, proofs, checkpoints (no I/O) |
//! | 4 | [`storage`] | the I/O trait, the file system, the simulated disk |
//! | 5 | [`format`](mod@format) | frames and segment files |
//! | 6 | [`index`], [`retention`] | `.idx` files; retention policy and record |
//! | 7 | [`tiles`] | the Merkle tree's tiles on disk |
//! | 8 | [`verify`] | checking a log's files without trusting them |
//! | 9 | [`log`] | the log: open, recover, append, read, retain |
//! | 10 | [`query`] | filters, exports, proofs and bundles over a log |
//! | 11 | `archive` | sealed segments to object storage (feature `s3`); the lake export (feature `lake`) |
//! | 11 | [`delivery`] | rows for SIEMs: OCSF, CEF, syslog over TLS |
//! | 11 | [`evidence`] | evidence packs for auditors |
//! | 11 | [`witness`] | witness cosigning (C2SP tlog-witness): keys, policies, the witness, the log's client |
//! | 12 | `cluster` | one fenced writer per workspace over a bucket: the lease, the published head, the conditional-write probe, replicated durability and the follower (feature `s3`) |
//! | 13 | `server` | the HTTP API (feature `server`) |
//!
//! # A log on disk
//!
//! ```text
//! DIR/
//! ├── chainlog.lock                  flocked by the writer, beside the directory itself (storage)
//! ├── 00000000000000000000.seg       a sealed segment: header, frames, trailer (format::segment)
//! ├── 00000000000000000000.idx       its sparse index, derived, rebuilt when missing (index)
//! ├── 00000000000000004096.seg       the active segment (base seq in the name)
//! ├── 00000000000000004096.seg.tmp   only while a segment is being created
//! ├── legal-hold.json                only while a legal hold is set (retention)
//! ├── quarantine/                    bytes cut by `chainlog recover --cut-at`, kept (log::cut)
//! └── tile/                          the Merkle tree's tiles, derived (tiles)
//!     ├── leaves/000                 level-0 tiles, 256 to a pack file
//!     └── 1/000, 1/000.p/17, …       higher levels; `.p/W` is a partial tile
//! ```
//!
//! Signed checkpoints ([`log::CheckpointSchedule`]) go to a directory of
//! their own, outside the log's.
//!
//! The on-disk format is specified in `docs/FORMAT.md`; the fault model in
//! `docs/RELIABILITY.md`.
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "s3")]
pub mod archive;
#[cfg(feature = "s3")]
pub mod cluster;
pub mod delivery;
pub mod error;
pub mod event;
pub mod evidence;
pub mod format;
pub mod hash;
pub mod index;
mod le;
pub mod limits;
pub mod log;
pub mod query;
pub mod retention;
#[cfg(feature = "server")]
pub mod server;
pub mod storage;
pub mod tiles;
pub mod verify;
pub mod witness;

pub use error::{Error, Result};
pub use event::{EncodeRecord, Event, Outcome, Timestamp};
pub use hash::chain::{ChainHash, LogId};
pub use log::{
    Durability, Log, LogState, Options, Receipt, Record, Records, TreeHead, WriteBehind,
};
