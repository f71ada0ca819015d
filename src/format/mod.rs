//! The bytes of a segment file: frames ([`frame`]), the segment's header,
//! trailer and link block ([`segment`]), the frame scanner ([`scanner`]),
//! and the one rule that tells crash debris from corruption ([`damage`]).
//!
//! Uses [`crate::hash`], [`crate::storage`] and the layers below them.

pub mod damage;
pub mod frame;
pub mod scanner;
pub mod segment;
