//! Witness cosigning (C2SP `tlog-witness`, `tlog-cosignature`): the
//! cosignature keys and their check, witness policies, the witness itself
//! (its durable state and the `add-checkpoint` decision) and, with the
//! `server` feature, its HTTP service and the log's client.
//!
//! Uses [`crate::hash`] (notes, checkpoints, proof checking), [`crate::storage`]
//! (atomic files, the directory lock) and [`crate::query`] (the log's
//! consistency proofs); never the server.

#[cfg(feature = "server")]
pub mod client;
pub mod cosignature;
#[cfg(feature = "server")]
pub mod http;
pub mod policy;
pub mod protocol;
pub mod service;

pub use cosignature::{CosignatureVerifier, Cosigner};
pub use policy::{PolicyReport, WitnessPolicy};
pub use protocol::AddCheckpoint;
pub use service::{AddError, LogsConfig, Witness};

use crate::hash::checkpoint::CheckpointError;

/// Why a witness key, policy, note or request was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessError {
    /// A key's text is malformed.
    #[error("malformed witness key: {0}")]
    BadKey(&'static str),
    /// The note is malformed.
    #[error(transparent)]
    Note(CheckpointError),
    /// A cosignature by a trusted witness key does not verify.
    #[error("the cosignature by witness {0} does not verify: the checkpoint was changed or the cosignature forged")]
    BadCosignature(String),
    /// Fewer trusted witnesses cosigned than the policy asks.
    #[error(
        "{valid} of the policy's witnesses cosigned the checkpoint; the policy asks for {required}"
    )]
    QuorumNotMet {
        /// Witnesses with a valid cosignature.
        valid: usize,
        /// The policy's quorum.
        required: usize,
    },
    /// A policy file is malformed (`line` 0: the policy as a whole).
    #[error("witness policy line {line}: {why}")]
    Policy {
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// An `add-checkpoint` request body is malformed.
    #[error("malformed add-checkpoint request: {0}")]
    Request(String),
    /// The logs configuration is malformed.
    #[error("witness logs configuration: {0}")]
    Config(String),
}
