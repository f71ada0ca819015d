//! How a log is opened: durability, write-behind, segment size, appender and schedules.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::event;
use crate::format::segment::{MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES};
use crate::hash::checkpoint::NoteSigner;
use crate::index;
use crate::retention::RetentionPolicy;

/// When an append is acknowledged, relative to `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `append` returns only after the record is on stable storage.
    /// Concurrent appenders share one `fdatasync` (group commit). Readers
    /// see a record once it is durable: by the time `append` returns.
    Always,
    /// `append` returns once the record is written to the OS (or, with
    /// [`Options::write_behind`], to the log's write buffer); a background
    /// thread syncs within `max_delay` of the first unsynced append, and an
    /// append that leaves `max_bytes` or more unsynced syncs at once. With
    /// write-behind, the background thread also syncs once half of
    /// `max_bytes` is unsynced, so that appends seldom have to. A crash
    /// can lose at most the records of the last `max_delay` plus the
    /// duration of one `fdatasync` (a record acknowledged just after a sync
    /// began waits for the next), and under `max_bytes` of them.
    Batch {
        /// Longest time a record stays unsynced.
        max_delay: Duration,
        /// Most bytes left unsynced.
        max_bytes: u64,
    },
    /// `append` returns once the record is written to the OS (or, with
    /// [`Options::write_behind`], to the log's write buffer); syncs happen
    /// only when a segment is sealed, on [`Log::sync`](crate::Log::sync) and on close. A crash
    /// can lose everything since the last of those.
    None,
}

/// Write-behind under the relaxed policies ([`Durability::Batch`] and
/// [`Durability::None`]): an append copies its frames into the log's write
/// buffer and returns, and a background thread writes the buffer to the OS
/// with one write, so that one `pwrite` carries many appends and the copy
/// into the page cache runs on another core than the hashing.
///
/// A buffered record is visible to readers of the same [`Log`](crate::Log) at once (a
/// read first writes the buffer out), and to other processes once written:
/// within `max_delay`, or sooner once `buffer_bytes` are waiting. A process
/// that dies (kill -9) loses what was still buffered, which these policies
/// already allow for a crash. Under [`Durability::Always`] appends are
/// coalesced the same way, but the group commit leader writes them, right
/// before its `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteBehind {
    /// Wake the background writer once this many bytes are buffered.
    /// Default 256 KiB; between 4 KiB and 64 MiB. An append waits for the
    /// writer when four times this much is buffered.
    pub buffer_bytes: u32,
    /// Longest time a record stays buffered before it is written. Default
    /// 1 ms.
    pub max_delay: Duration,
}

impl Default for WriteBehind {
    fn default() -> Self {
        WriteBehind {
            buffer_bytes: 256 << 10,
            max_delay: Duration::from_millis(1),
        }
    }
}

impl WriteBehind {
    const BUFFER_BYTES_RANGE: std::ops::RangeInclusive<u32> = 4 << 10..=64 << 20;

    /// Buffered bytes at which an append waits for the background writer.
    pub(super) fn full_bytes(&self) -> usize {
        self.buffer_bytes as usize * 4
    }
}

/// How a log is created or opened.
#[derive(Debug, Clone)]
pub struct Options {
    /// Size of each segment file, preallocated. Default 64 MiB; between
    /// [`MIN_SEGMENT_BYTES`] and [`MAX_SEGMENT_BYTES`], a multiple of 8.
    /// Applies to segments created from now on.
    pub segment_bytes: u64,
    /// The sync policy. Default [`Durability::Always`].
    pub durability: Durability,
    /// Open without the writer lock and without repairing anything; appends
    /// fail with [`Error::ReadOnly`]. Default false.
    pub read_only: bool,
    /// Target size of an index block: the time index has an entry, and the
    /// postings a block number, every this many bytes of frames. Default
    /// 4 KiB; between 512 bytes and 1 MiB.
    pub index_block_bytes: u32,
    /// Apply this retention policy after every segment roll. Default none.
    pub retention: Option<RetentionPolicy>,
    /// Write signed checkpoints on a schedule. Default none.
    pub checkpoints: Option<CheckpointSchedule>,
    /// Under the relaxed policies, buffer appends and write them from a
    /// background thread. Default `Some(WriteBehind::default())`; `None`
    /// writes every append to the OS before it returns.
    pub write_behind: Option<WriteBehind>,
    /// Who appends: recorded in every record this handle appends (the
    /// record's `appender`), unless a record names its own
    /// ([`EncodeRecord::appender`](crate::event::EncodeRecord::appender)). 1..=256 bytes, no control or invisible
    /// format character. Default [`DEFAULT_APPENDER`]: an embedding program
    /// should name its principal; the CLI names the operating-system user
    /// ([`os_user_appender`]). The default is a constant, not the user, so
    /// that the bytes a program writes do not depend on who runs it.
    pub appender: String,
}

/// The default [`Options::appender`].
pub const DEFAULT_APPENDER: &str = "chainlog";

/// The operating-system user name from `$USER`, `$LOGNAME` or `$USERNAME`
/// (the first one set and a valid appender), else [`DEFAULT_APPENDER`].
pub fn os_user_appender() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|user| event::record::check_appender(user).is_ok())
        .unwrap_or_else(|| DEFAULT_APPENDER.to_string())
}

/// Signed checkpoints written automatically by a running log.
#[derive(Debug, Clone)]
pub struct CheckpointSchedule {
    /// Where to write them: `<size, 20 digits>.checkpoint` for each, and
    /// `latest.checkpoint`. Point it at storage outside the log's directory.
    pub dir: PathBuf,
    /// The signing key.
    pub signer: NoteSigner,
    /// Origin prefix (the origin is `<prefix>/<log id>`).
    pub origin_prefix: String,
    /// Write one once this many records were appended since the last.
    pub every_records: Option<u64>,
    /// Write one at least this often while records are being appended.
    pub every: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes: 64 << 20,
            durability: Durability::Always,
            read_only: false,
            index_block_bytes: index::DEFAULT_BLOCK_BYTES,
            retention: None,
            checkpoints: None,
            write_behind: Some(WriteBehind::default()),
            appender: DEFAULT_APPENDER.to_string(),
        }
    }
}

impl Options {
    /// The defaults with [`Options::read_only`] set: for readers beside a
    /// writer (`cat`, `query`, `export`, `verify`, checkpoints).
    pub fn for_reading() -> Options {
        Options {
            read_only: true,
            ..Options::default()
        }
    }

    pub(super) fn validate(&self) -> Result<()> {
        event::record::check_appender(&self.appender)
            .map_err(|e| Error::InvalidOptions(format!("appender: {e}")))?;
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes)
            || self.segment_bytes % 8 != 0
        {
            return Err(Error::InvalidOptions(format!(
                "segment_bytes must be a multiple of 8 between {MIN_SEGMENT_BYTES} and {MAX_SEGMENT_BYTES}, not {}",
                self.segment_bytes
            )));
        }
        if !index::BLOCK_BYTES_RANGE.contains(&self.index_block_bytes) {
            return Err(Error::InvalidOptions(format!(
                "index_block_bytes must be between {} and {}, not {}",
                index::BLOCK_BYTES_RANGE.start(),
                index::BLOCK_BYTES_RANGE.end(),
                self.index_block_bytes
            )));
        }
        if let Durability::Batch { max_delay, .. } = self.durability {
            if max_delay.is_zero() {
                return Err(Error::InvalidOptions(
                    "Batch max_delay must be positive".into(),
                ));
            }
        }
        if let Some(wb) = &self.write_behind {
            let range = WriteBehind::BUFFER_BYTES_RANGE;
            if !range.contains(&wb.buffer_bytes) {
                return Err(Error::InvalidOptions(format!(
                    "write_behind buffer_bytes must be between {} and {}, not {}",
                    range.start(),
                    range.end(),
                    wb.buffer_bytes
                )));
            }
            if wb.max_delay.is_zero() {
                return Err(Error::InvalidOptions(
                    "write_behind max_delay must be positive".into(),
                ));
            }
        }
        Ok(())
    }
}
