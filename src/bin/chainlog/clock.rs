//! The engine clock the CLI's logs run on, and its test hook.
//!
//! A record's `received_at` and age-based retention read the engine's
//! clock ([`Storage::now`]): the system clock. Tests that age a log by time
//! of receipt need to append "in the past" and run retention "later", so a
//! debug build (what `cargo test` runs) honours [`TEST_CLOCK_VAR`]: an
//! RFC 3339 time the engine clock then reads. A release build ignores the
//! variable, so nobody who runs the shipped binary can forge a time of
//! receipt with it.

use std::path::Path;
use std::sync::Arc;

use chainlog::storage::{FsStorage, Storage};
use chainlog::{Log, Options};

use crate::error::CliError;

/// The test hook: an RFC 3339 time for the engine clock (debug builds only;
/// a release build names it only in these docs).
#[cfg_attr(not(debug_assertions), allow(dead_code))]
pub const TEST_CLOCK_VAR: &str = "CHAINLOG_TEST_ENGINE_CLOCK";

/// The storage the CLI opens logs on: the file system, with the system
/// clock (or, in a debug build, the clock [`TEST_CLOCK_VAR`] sets).
pub fn storage() -> Result<Arc<dyn Storage>, CliError> {
    #[cfg(debug_assertions)]
    if let Some(text) = std::env::var_os(TEST_CLOCK_VAR) {
        let text = text.to_string_lossy();
        let at = chainlog::Timestamp::parse_rfc3339(&text)
            .map_err(|e| CliError::Usage(format!("{TEST_CLOCK_VAR}: {e}")))?;
        return Ok(Arc::new(chainlog::storage::SetClock::new(
            Arc::new(FsStorage),
            at,
        )));
    }
    Ok(Arc::new(FsStorage))
}

/// [`Log::open`] on [`storage`].
pub fn open(dir: &Path, options: Options) -> Result<Log, CliError> {
    Ok(Log::open_in(storage()?, dir, options)?)
}

/// [`Log::create`] on [`storage`].
pub fn create(dir: &Path, options: Options) -> Result<Log, CliError> {
    Ok(Log::create_in(storage()?, dir, options)?)
}
