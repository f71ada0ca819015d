//! The checks behind chainlog's fuzz targets, as plain functions of the fuzz
//! input, so that `tests/fuzz_regressions.rs` in the main crate replays
//! crash inputs and the seed corpus through exactly the same code.

pub mod common;
pub mod decode;
pub mod ingest;
pub mod model;
pub mod recovery;
