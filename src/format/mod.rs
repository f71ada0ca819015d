//! The bytes of a segment file: frames ([`frame`]), the segment's header,
//! trailer, link block and record scanner ([`segment`]), and the one rule
//! that tells crash debris from corruption ([`damage`]).
//!
//! Uses [`crate::hash`], [`crate::storage`] and the layers below them.

pub mod damage;
pub mod frame;
pub mod segment;
