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
//! Layers, each using only those below it: [`event`], [`error`],
//! [`hash`], [`storage`], [`format`](mod@format), [`index`], [`tiles`], [`verify`],
//! [`log`], [`query`], [`retention`]. The on-disk format is specified in
//! `docs/FORMAT.md`; the fault model in `docs/RELIABILITY.md`.
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "s3")]
pub mod archive;
pub mod error;
pub mod event;
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

pub use error::{Error, Result};
pub use event::{EncodeRecord, Event, Outcome, Timestamp};
pub use hash::chain::{ChainHash, LogId};
pub use log::{
    Durability, Log, LogState, Options, Receipt, Record, Records, TreeHead, WriteBehind,
};
