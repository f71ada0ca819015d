//! chainlog: a tamper-evident audit-log storage engine.
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod chain;
pub mod checkpoint;
pub mod error;
pub mod event;
pub mod export;
pub mod frame;
pub mod index;
pub mod limits;
pub mod log;
pub mod merkle;
pub mod query;
pub mod retention;
pub mod segment;
pub mod sim;
pub mod storage;
pub mod verify;

pub use chain::{ChainHash, LogId};
pub use error::{Error, Result};
pub use event::{Event, Outcome, Timestamp};
pub use log::{Durability, Log, LogState, Options, Receipt, Record, Records};
