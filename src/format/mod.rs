//! The bytes of a segment file: frames ([`frame`]) and the segment's header,
//! trailer, link block and record scanner ([`segment`]).
//!
//! Uses [`crate::hash`], [`crate::storage`] and the layers below them.

pub mod frame;
pub mod segment;
