//! A fresh log for the benches (each includes this file with `#[path]`):
//! one that never fsyncs, so that a bench measures the engine, not the disk.

use std::path::Path;

use chainlog::{Durability, Log, Options};

/// Creates a log in `dir` with `Durability::None`.
pub fn unsynced(dir: &Path) -> Log {
    Log::create(
        dir,
        Options {
            durability: Durability::None,
            ..Options::default()
        },
    )
    .unwrap()
}
