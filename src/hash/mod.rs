//! The tamper evidence as pure functions over bytes: the hash chain
//! ([`chain`]), RFC 6962 Merkle tree hashing ([`merkle`]), proof checking
//! ([`proof`]) signed checkpoints ([`checkpoint`]) and
//! signed notes with several signatures ([`note`]).
//!
//! Uses only [`crate::event`], [`crate::error`] and the leaves; no I/O.

pub mod chain;
pub mod checkpoint;
pub mod merkle;
pub mod note;
pub mod proof;
