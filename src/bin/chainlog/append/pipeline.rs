//! Parsing on one thread while the calling one appends: stdin, and the
//! part of a FILE that was checked without keeping its records.

use std::io::Read;
use std::sync::mpsc::{self, Receiver, SyncSender};

use super::lines::{BatchLimits, EventLines, LineError, Records};
use super::Appender;
use crate::error::CliError;

/// Checked batches the parsing thread may be ahead of the appending one.
const BATCHES_IN_FLIGHT: usize = 2;

/// What the parsing thread hands the appending one.
enum Piece {
    /// Checked records, appended as one batch.
    Batch(Records),
    /// The input ended: cleanly, or at a bad line or a read error (every
    /// line before it was handed over first).
    End(Option<LineError>),
}

/// Reads, checks and encodes `input` (whose first line is line
/// `lines_before + 1`) into batches on a thread of its own while this one
/// appends them. With `stream`, a batch is also handed over whenever no
/// more input is buffered (the next read may wait for the producer).
/// Returns why the input stopped early, once everything before that point
/// is appended.
pub(super) fn append_pipelined<R: Read + Send>(
    appender: &mut Appender<'_>,
    input: R,
    lines_before: u64,
    stream: bool,
) -> Result<Option<LineError>, CliError> {
    let limits = appender.limits();
    std::thread::scope(|scope| {
        let (batches, checked) = mpsc::sync_channel(BATCHES_IN_FLIGHT);
        let (give_back, spare) = mpsc::channel();
        let lines = EventLines::new(input, lines_before);
        scope.spawn(move || parse_batches(lines, limits, stream, &batches, &spare));
        // Returning early drops `checked`, which stops the parsing thread.
        for piece in checked.iter() {
            match piece {
                Piece::Batch(mut batch) => {
                    appender.append(&batch)?;
                    batch.clear();
                    // The parser may have finished: then the buffer is dropped.
                    let _ = give_back.send(batch);
                }
                Piece::End(stop) => return Ok(stop),
            }
        }
        // The parser hung up without `End`: it panicked, and the scope
        // passes the panic on.
        Ok(None)
    })
}

/// The parsing thread of [`append_pipelined`]. Stops quietly when the
/// appending side has hung up (it failed and reports why).
fn parse_batches<R: Read>(
    mut lines: EventLines<R>,
    limits: BatchLimits,
    stream: bool,
    batches: &SyncSender<Piece>,
    spare: &Receiver<Records>,
) {
    let mut batch = Records::default();
    let stop = loop {
        match lines.next_event() {
            Ok(Some(record)) => {
                let frame_bytes = limits.frame_bytes(record);
                if limits.is_full(&batch, frame_bytes) {
                    let next = spare.try_recv().unwrap_or_default();
                    let full = std::mem::replace(&mut batch, next);
                    if batches.send(Piece::Batch(full)).is_err() {
                        return;
                    }
                }
                batch.push(record, frame_bytes);
                if stream && !lines.input_buffered() {
                    let next = spare.try_recv().unwrap_or_default();
                    let ready = std::mem::replace(&mut batch, next);
                    if batches.send(Piece::Batch(ready)).is_err() {
                        return;
                    }
                }
            }
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    if !batch.is_empty() && batches.send(Piece::Batch(batch)).is_err() {
        return;
    }
    // Nobody to tell if the appending side has gone.
    let _ = batches.send(Piece::End(stop));
}
