//! `chainlog append FILE`: the whole file is checked before anything is
//! appended, and each event is parsed once.
//!
//! A regular file's two halves are checked on two threads, each keeping
//! the encoded records of its lines, in batches, while they fit in half of
//! [`KEPT_BYTES`]. Once the whole file is checked the kept batches are
//! appended as they are, and only the lines a half could not keep are
//! parsed again (pipelined, as stdin is). A pipe or device cannot be read
//! twice, so all its records are kept.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use chainlog::limits::MAX_INPUT_LINE_BYTES;

use super::lines::{BatchLimits, EventLines, LineError, Records};
use super::pipeline::append_pipelined;
use super::{read_error, Appender, Progress};
use crate::error::CliError;

/// Memory the checked records of a FILE may take before the rest of it is
/// parsed a second time when appended: 256 MiB, about 1.7 million events
/// of 150 bytes.
const KEPT_BYTES: usize = 256 << 20;
/// The test hook: the budget in bytes instead of [`KEPT_BYTES`], so that
/// tests reach the lines parsed again with small files. A debug build
/// (what `cargo test` runs) honours it, a release build ignores it.
#[cfg_attr(not(debug_assertions), allow(dead_code))]
const TEST_KEPT_BYTES_VAR: &str = "CHAINLOG_TEST_APPEND_KEPT_BYTES";

/// The budget for a FILE's kept records: [`KEPT_BYTES`], or in a debug
/// build what [`TEST_KEPT_BYTES_VAR`] says.
fn kept_bytes() -> usize {
    #[cfg(debug_assertions)]
    if let Some(bytes) = std::env::var(TEST_KEPT_BYTES_VAR)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return bytes;
    }
    KEPT_BYTES
}

/// Files smaller than this are checked on one thread (a thread costs more
/// than it saves).
const PARALLEL_CHECK_MIN_BYTES: u64 = 1 << 20;

/// A checked part of the input.
struct Checked {
    /// The encoded records of its first lines, in batches.
    kept: Vec<Records>,
    /// Where the lines that were checked but not kept start.
    rest: Option<Rest>,
    /// Lines in the part.
    lines: u64,
    /// Bytes of the part that were read and checked.
    bytes: u64,
}

/// The lines of a part that were checked but not kept.
struct Rest {
    /// Offset of the first of them in the part.
    offset: u64,
    /// Lines of the part before it.
    lines_before: u64,
}

/// Checks every line of `lines`, keeping the records of the first lines
/// in batches while they take at most `budget` bytes of memory.
fn check_and_keep<R: Read>(
    mut lines: EventLines<R>,
    limits: BatchLimits,
    budget: usize,
    progress: &Progress,
) -> Result<Checked, LineError> {
    let mut kept = Vec::new();
    let mut kept_bytes = 0;
    let mut batch = Records::default();
    let mut rest = None;
    let mut reported = 0;
    loop {
        let (offset, lines_before) = (lines.consumed, lines.line);
        let Some(record) = lines.next_event()? else {
            break;
        };
        if rest.is_some() {
            if lines.consumed - reported >= 1 << 20 {
                progress.checked(lines.consumed - reported);
                reported = lines.consumed;
            }
            continue;
        }
        let frame_bytes = limits.frame_bytes(record);
        if limits.is_full(&batch, frame_bytes) {
            batch.shrink_to_fit();
            kept_bytes += batch.memory_bytes();
            kept.push(std::mem::take(&mut batch));
            progress.checked(offset - reported);
            reported = offset;
        }
        if kept_bytes + batch.memory_bytes() + record.len() > budget {
            rest = Some(Rest {
                offset,
                lines_before,
            });
            continue;
        }
        batch.push(record, frame_bytes);
    }
    progress.checked(lines.consumed - reported);
    if !batch.is_empty() {
        kept.push(batch);
    }
    Ok(Checked {
        kept,
        rest,
        lines: lines.line,
        bytes: lines.consumed,
    })
}

/// A FILE: check all of it, then append it.
pub(super) fn append_file(appender: &mut Appender<'_>, path: &Path) -> Result<(), CliError> {
    let file =
        File::open(path).map_err(|e| CliError::io(format!("opening {}", path.display()), e))?;
    let metadata = file
        .metadata()
        .map_err(|e| CliError::io(format!("reading {}", path.display()), e))?;
    if !metadata.is_file() {
        return append_unseekable(appender, file);
    }
    let progress = &appender.progress;
    progress.start_checking(metadata.len());
    let limits = appender.limits();
    let split = split_point(&file, metadata.len()).map_err(read_error)?;
    let budget = kept_bytes() / 2;
    let check = |start, end| {
        let lines = EventLines::new(
            FileRange {
                file: &file,
                pos: start,
                end,
            },
            0,
        );
        check_and_keep(lines, limits, budget, progress)
    };
    let (first, second) = std::thread::scope(|scope| {
        // The second half reads to the end, wherever that now is.
        let second = scope.spawn(|| check(split, u64::MAX));
        let first = check(0, split);
        (first, second.join())
    });
    let first = first.map_err(|e| appender.refused(e, true, 0))?;
    let second = match second {
        Ok(second) => second.map_err(|e| appender.refused(e, true, first.lines))?,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    progress.start_appending(
        first
            .kept
            .iter()
            .chain(&second.kept)
            .map(|b| b.len() as u64)
            .sum(),
        first.rest.is_some() || second.rest.is_some(),
    );
    let first_lines = first.lines;
    append_checked(appender, &file, 0, 0, first)?;
    append_checked(appender, &file, split, first_lines, second)
}

/// Appends a part of `file` that was checked, starting at offset `start`
/// and line `lines_before + 1`: its kept records, then its other lines
/// parsed again.
fn append_checked(
    appender: &mut Appender<'_>,
    file: &File,
    start: u64,
    lines_before: u64,
    part: Checked,
) -> Result<(), CliError> {
    append_kept(appender, part.kept)?;
    let Some(rest) = part.rest else {
        return Ok(());
    };
    // Only the bytes that were checked: lines added to the file since then
    // are not appended. Were the file changed in between, a bad line stops
    // here and the message says what was appended.
    let input = FileRange {
        file,
        pos: start + rest.offset,
        end: start + part.bytes,
    };
    match append_pipelined(appender, input, lines_before + rest.lines_before, false)? {
        None => Ok(()),
        Some(LineError::Bad { line, reason }) => Err(appender.bad_line(
            line,
            format!("{reason} (the file changed while being appended)"),
            false,
        )),
        Some(LineError::Io(e)) => Err(read_error(e)),
    }
}

/// Appends checked batches, each as one `append_batch` call, freeing each
/// once it is appended.
fn append_kept(appender: &mut Appender<'_>, kept: Vec<Records>) -> Result<(), CliError> {
    for batch in kept {
        appender.append(&batch)?;
    }
    Ok(())
}

/// A pipe or device cannot be read twice: all its records are kept in
/// memory (with no budget, nothing is left to parse again).
fn append_unseekable(appender: &mut Appender<'_>, file: File) -> Result<(), CliError> {
    appender.progress.start_checking_stream();
    let lines = EventLines::new(file, 0);
    let checked = check_and_keep(lines, appender.limits(), usize::MAX, &appender.progress)
        .map_err(|e| appender.refused(e, true, 0))?;
    let kept = checked.kept.iter().map(|b| b.len() as u64).sum();
    appender.progress.start_appending(kept, false);
    append_kept(appender, checked.kept)
}

/// Where the line after the middle of the file starts (so both halves are
/// whole lines), or `len` for a small file or when no line ends within the
/// longest line allowed (that line is then refused by the first half).
fn split_point(file: &File, len: u64) -> io::Result<u64> {
    if len < PARALLEL_CHECK_MIN_BYTES {
        return Ok(len);
    }
    let mut pos = len / 2;
    let limit = len.min(pos + MAX_INPUT_LINE_BYTES as u64 + 2);
    let mut buf = vec![0; 64 << 10];
    while pos < limit {
        let n = file.read_at(&mut buf, pos)?;
        if n == 0 {
            break;
        }
        if let Some(i) = buf[..n].iter().position(|&b| b == b'\n') {
            return Ok(pos + i as u64 + 1);
        }
        pos += n as u64;
    }
    Ok(len)
}

/// A byte range of a file, read with `pread` (no shared cursor, so two
/// threads can read one file).
struct FileRange<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for FileRange<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = (self.end.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        if room == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..room], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}
