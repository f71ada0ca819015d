//! `chainlog append FILE`: the whole file is checked before anything is
//! appended, and each event is parsed once.
//!
//! A regular file is cut into chunks of whole lines, which two threads
//! check, each taking the next chunk when it is done (so a thread slowed
//! by other work on the machine does not hold the other up). A chunk keeps
//! the encoded records of its lines, in batches, while the memory budget
//! ([`KEPT_BYTES`]) lasts. Once the whole file is checked the kept batches
//! are appended as they are, and only the lines a chunk could not keep
//! are parsed again (pipelined, as stdin is). A pipe or device cannot be
//! read twice, so all its records are kept.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

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
/// A file is checked in chunks of an eighth of it, within these bounds.
const MIN_CHUNK_BYTES: u64 = 128 << 10;
const MAX_CHUNK_BYTES: u64 = 4 << 20;
/// Budget a checking thread takes at a time.
const BUDGET_BLOCK_BYTES: usize = 1 << 20;

/// Memory left for kept records, shared by the checking threads, which
/// take it in blocks (so they seldom touch the same cache line).
struct Budget(AtomicUsize);

impl Budget {
    /// Takes a block, or at least `need` bytes; `None` when fewer are left.
    fn take(&self, need: usize) -> Option<usize> {
        let mut taken = 0;
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                if left < need {
                    return None;
                }
                taken = left.min(need.max(BUDGET_BLOCK_BYTES));
                Some(left - taken)
            })
            .ok()
            .map(|_| taken)
    }

    fn give_back(&self, bytes: usize) {
        self.0.fetch_add(bytes, Ordering::Relaxed);
    }
}

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
/// in batches while `budget` lasts (a record costs its bytes and its end).
fn check_and_keep<R: Read>(
    mut lines: EventLines<R>,
    limits: BatchLimits,
    budget: &Budget,
    progress: &Progress,
) -> Result<Checked, LineError> {
    let mut kept = Vec::new();
    let mut allowance = 0;
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
            kept.push(std::mem::take(&mut batch));
            progress.checked(offset - reported);
            reported = offset;
        }
        let need = record.len() + size_of::<usize>();
        if allowance < need {
            let Some(taken) = budget.take(need) else {
                rest = Some(Rest {
                    offset,
                    lines_before,
                });
                continue;
            };
            allowance += taken;
        }
        allowance -= need;
        batch.push(record, frame_bytes);
    }
    budget.give_back(allowance);
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
    let starts = chunk_starts(&file, metadata.len()).map_err(read_error)?;
    let budget = Budget(AtomicUsize::new(kept_bytes()));
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(usize::MAX);
    // Takes chunks in order until none is left or one before the next has
    // failed; returns each chunk's number and outcome.
    let check_chunks = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= starts.len() || i > failed.load(Ordering::Relaxed) {
                return done;
            }
            // The last chunk reads to the end, wherever that now is.
            let end = starts.get(i + 1).copied().unwrap_or(u64::MAX);
            let input = FileRange {
                file: &file,
                pos: starts[i],
                end,
            };
            let checked = check_and_keep(EventLines::new(input, 0), limits, &budget, progress);
            if checked.is_err() {
                failed.fetch_min(i, Ordering::Relaxed);
            }
            done.push((i, checked));
        }
    };
    let mut chunks: Vec<_> = std::thread::scope(|scope| {
        let other = (starts.len() > 1).then(|| scope.spawn(check_chunks));
        let mut chunks = check_chunks();
        if let Some(other) = other {
            match other.join() {
                Ok(theirs) => chunks.extend(theirs),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        chunks
    });
    chunks.sort_by_key(|(i, _)| *i);
    // Every chunk before the first that failed was checked (chunks are
    // taken in order), so its lines are numbered from the start of the file.
    let mut checked = Vec::with_capacity(chunks.len());
    let mut lines_before = 0;
    for (i, chunk) in chunks {
        let chunk = chunk.map_err(|e| appender.refused(e, true, lines_before))?;
        let lines = chunk.lines;
        checked.push((starts[i], lines_before, chunk));
        lines_before += lines;
    }
    progress.start_appending(
        checked
            .iter()
            .flat_map(|(_, _, c)| &c.kept)
            .map(|b| b.len() as u64)
            .sum(),
        checked.iter().any(|(_, _, c)| c.rest.is_some()),
    );
    for (start, lines_before, chunk) in checked {
        append_checked(appender, &file, start, lines_before, chunk)?;
    }
    Ok(())
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
    let unlimited = Budget(AtomicUsize::new(usize::MAX));
    let checked = check_and_keep(lines, appender.limits(), &unlimited, &appender.progress)
        .map_err(|e| appender.refused(e, true, 0))?;
    let kept = checked.kept.iter().map(|b| b.len() as u64).sum();
    appender.progress.start_appending(kept, false);
    append_kept(appender, checked.kept)
}

/// Where the chunks a file of `len` bytes is checked in start: each at
/// the start of a line; the last one reads to the end. One chunk for a
/// small file.
fn chunk_starts(file: &File, len: u64) -> io::Result<Vec<u64>> {
    let mut starts = vec![0];
    if len < PARALLEL_CHECK_MIN_BYTES {
        return Ok(starts);
    }
    let chunk = (len / 8).clamp(MIN_CHUNK_BYTES, MAX_CHUNK_BYTES);
    for at in (1..).map(|k| k * chunk).take_while(|&at| at < len) {
        // No line ends within the longest line allowed: that line is
        // refused by the chunk it starts in, which reads to the end.
        let Some(start) = next_line_start(file, at, len)? else {
            break;
        };
        if start >= len {
            break;
        }
        // A long line may span several chunks' nominal starts.
        if starts.last().is_some_and(|&last| start > last) {
            starts.push(start);
        }
    }
    Ok(starts)
}

/// Where the first line that starts at or after `at` (> 0) starts, if a
/// line ends within the longest line allowed from there.
fn next_line_start(file: &File, at: u64, len: u64) -> io::Result<Option<u64>> {
    let mut pos = at - 1;
    let limit = len.min(pos + MAX_INPUT_LINE_BYTES as u64 + 2);
    let mut buf = vec![0; 16 << 10];
    while pos < limit {
        let n = file.read_at(&mut buf, pos)?;
        if n == 0 {
            break;
        }
        if let Some(i) = buf[..n].iter().position(|&b| b == b'\n') {
            return Ok(Some(pos + i as u64 + 1));
        }
        pos += n as u64;
    }
    Ok(None)
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

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    /// The chunk starts of a file holding `text`, checked to be line
    /// starts in increasing order.
    fn starts_of(text: &[u8]) -> Vec<u64> {
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, text).unwrap();
        let starts = chunk_starts(&file, text.len() as u64).unwrap();
        assert_eq!(starts.first(), Some(&0));
        assert!(starts.windows(2).all(|w| w[0] < w[1]), "{starts:?}");
        for &s in &starts {
            assert!(s < text.len() as u64);
            assert!(
                s == 0 || text[s as usize - 1] == b'\n',
                "{s} is no line start"
            );
        }
        starts
    }

    #[test]
    fn chunks_start_at_lines() {
        let line = format!("{}\n", "x".repeat(99));
        assert_eq!(starts_of(line.repeat(1000).as_bytes()), [0]);
        let text = line.repeat((2 << 20) / 100);
        let starts = starts_of(text.as_bytes());
        assert_eq!(starts.len(), 8, "{starts:?}");
        assert!(starts.iter().all(|s| s % 100 == 0));
        // A line over two nominal starts (143,750 and 287,500) gives one.
        let long = "y".repeat(249_999);
        let text = format!("{}{long}\n{}", line.repeat(1000), line.repeat(8000));
        let starts = starts_of(text.as_bytes());
        assert_eq!(starts[..3], [0, 350_000, 431_300], "{starts:?}");
        assert_eq!(starts.len(), 7, "{starts:?}");
        // A line longer than the limit: the chunk it starts in reads to
        // the end (and refuses it), whatever follows.
        let longer = "y".repeat(MAX_INPUT_LINE_BYTES * 3);
        let text = format!("{}{longer}\n{}", line.repeat(6000), line.repeat(3000));
        assert_eq!(starts_of(text.as_bytes()), [0, 210_900, 421_700]);
    }
}
