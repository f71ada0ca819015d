//! Input lines to encoded records: the JSON Lines reader, the one parse
//! that checks and encodes an event, and the batches the records go in.

use std::io::{self, BufRead, BufReader, Read};

use chainlog::event::input::check_numbers;
use chainlog::event::{encode_record, EventError, EventRef};
use chainlog::format::frame::padded_len;
use chainlog::limits::MAX_INPUT_LINE_BYTES;
use chainlog::{EncodeRecord, Event};

/// Most events appended in one `append_batch` call.
pub(super) const MAX_CHUNK_EVENTS: usize = 4096;
/// Input buffer size; a stream batch is at most what one read returned.
const INPUT_BUFFER_BYTES: usize = 1 << 20;

/// Encoded (so validated) records, back to back.
#[derive(Default)]
pub(super) struct Records {
    bytes: Vec<u8>,
    /// Where each record ends in `bytes`.
    ends: Vec<usize>,
    /// Bytes their frames (with the provenance prefix) take in a segment.
    frame_bytes: u64,
}

impl Records {
    /// Adds a record whose frame (with its provenance prefix) takes
    /// `frame_bytes` in a segment.
    pub(super) fn push(&mut self, record: &[u8], frame_bytes: u64) {
        self.bytes.extend_from_slice(record);
        self.ends.push(self.bytes.len());
        self.frame_bytes += frame_bytes;
    }

    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.frame_bytes = 0;
    }

    /// Gives back the room a batch grew into but does not use (a batch
    /// that is kept while the rest of the input is read).
    pub(super) fn shrink_to_fit(&mut self) {
        self.bytes.shrink_to_fit();
        self.ends.shrink_to_fit();
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = Encoded<'_>> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| Encoded(&self.bytes[start..end]))
    }
}

/// A record [`parse_event`] encoded: appending it copies its bytes.
pub(super) struct Encoded<'a>(pub(super) &'a [u8]);

impl EncodeRecord for Encoded<'_> {
    fn encode_record(&self, out: &mut Vec<u8>) -> Result<(), EventError> {
        out.extend_from_slice(self.0);
        Ok(())
    }
}

/// How large one `append_batch` call may be.
#[derive(Clone, Copy)]
pub(super) struct BatchLimits {
    /// Bytes of the provenance prefix each record gets.
    pub(super) prefix_bytes: usize,
    pub(super) max_chunk_bytes: u64,
}

impl BatchLimits {
    /// Bytes `record`'s frame takes in a segment.
    pub(super) fn frame_bytes(self, record: &[u8]) -> u64 {
        padded_len(self.prefix_bytes + record.len()) as u64
    }

    /// True when a record of `frame_bytes` does not fit in `batch`.
    pub(super) fn is_full(self, batch: &Records, frame_bytes: u64) -> bool {
        !batch.is_empty()
            && (batch.len() >= MAX_CHUNK_EVENTS
                || batch.frame_bytes + frame_bytes > self.max_chunk_bytes)
    }
}

/// Why reading the next event stopped.
pub(super) enum LineError {
    Bad { line: u64, reason: String },
    Io(io::Error),
}

/// JSON Lines reader with a per-line size limit.
pub(super) struct EventLines<R> {
    reader: BufReader<R>,
    /// Lines read so far (the number of the last one).
    pub(super) line: u64,
    /// Input bytes read so far, up to the end of the last line.
    pub(super) consumed: u64,
    buf: Vec<u8>,
    scratch: Vec<u8>,
}

impl<R: Read> EventLines<R> {
    /// Reads `input`, whose first line is line `lines_before + 1`.
    pub(super) fn new(input: R, lines_before: u64) -> Self {
        EventLines {
            reader: BufReader::with_capacity(INPUT_BUFFER_BYTES, input),
            line: lines_before,
            consumed: 0,
            buf: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// True when more input is already buffered (reading it will not block).
    pub(super) fn input_buffered(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    /// The next event's record bytes, skipping blank lines; `None` at the
    /// end of the input.
    pub(super) fn next_event(&mut self) -> Result<Option<&[u8]>, LineError> {
        loop {
            self.buf.clear();
            // Room for the longest line plus "\r\n": anything longer is rejected
            // without reading the rest of it into memory.
            let cap = MAX_INPUT_LINE_BYTES as u64 + 2;
            let n = (&mut self.reader)
                .take(cap)
                .read_until(b'\n', &mut self.buf)
                .map_err(LineError::Io)?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            self.consumed += n as u64;
            let ended = self.buf.last() == Some(&b'\n');
            if ended {
                self.buf.pop();
                if self.buf.last() == Some(&b'\r') {
                    self.buf.pop();
                }
            }
            if self.buf.len() > MAX_INPUT_LINE_BYTES || (!ended && n as u64 == cap) {
                return Err(self.bad(format!(
                    "line is longer than the limit of {MAX_INPUT_LINE_BYTES} bytes"
                )));
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.scratch.clear();
            return match parse_event(&self.buf, &mut self.scratch) {
                Ok(()) => Ok(Some(&self.scratch)),
                Err(reason) => Err(self.bad(reason)),
            };
        }
    }

    fn bad(&self, reason: String) -> LineError {
        LineError::Bad {
            line: self.line,
            reason,
        }
    }
}

/// Parses one line and appends its record bytes to `out`, checked exactly
/// as `append_batch` would check the event, and by the input contract's
/// number rule. The usual line is read once, by the borrowed reader; the
/// number rule reads it again only when a number was read as a float (the
/// only kind it can refuse).
pub(super) fn parse_event(line: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let start = out.len();
    let borrowed = std::str::from_utf8(line).ok().and_then(EventRef::from_json);
    let numbers_to_check = match borrowed {
        Some(event) => {
            event.encode_record(out).map_err(|e| e.to_string())?;
            event.float_read()
        }
        None => {
            let event: Event = serde_json::from_slice(line).map_err(|e| json_reason(&e))?;
            encode_record(&event, out).map_err(|e| e.to_string())?;
            true
        }
    };
    if numbers_to_check {
        // serde_json took it, so its numbers can be checked as JSON tokens.
        check_numbers(line).map_err(|e| {
            out.truncate(start);
            e.to_string()
        })?;
    }
    Ok(())
}

/// serde_json's message without its "at line 1 column N" (the input line
/// number is reported instead; the column is kept).
fn json_reason(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    match msg.strip_suffix(&position) {
        Some(head) => format!("{head} (column {})", e.column()),
        None => msg,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    /// What the owned path stores for `line`, or its error message.
    fn owned(line: &str) -> Result<Vec<u8>, String> {
        let event: Event = serde_json::from_str(line).map_err(|e| json_reason(&e))?;
        let mut out = Vec::new();
        encode_record(&event, &mut out).map_err(|e| e.to_string())?;
        check_numbers(line.as_bytes()).map_err(|e| e.to_string())?;
        Ok(out)
    }

    fn parsed(line: &str) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        parse_event(line.as_bytes(), &mut out).map(|()| out)
    }

    #[test]
    fn lines_store_what_the_owned_event_stores() {
        for line in [
            r#"{"timestamp":"2026-03-09T09:52:14Z","event":"pcap.download","actor":"alice@acme.io","ip":"203.0.113.42","context":{"bytes":18231,"f":1E+2,"s":"caf\u00e9\/x"}}"#,
            // Left to the owned path: a repeated context key.
            r#"{"timestamp":"2026-03-09T09:52:14Z","event":"a.b","actor":"x","context":{"a":1,"b":2,"a":3}}"#,
            // Refused by serde_json, and refused by validation.
            r#"{"timestamp":"2026-03-09T09:52:14Z","event":"a.b","actor":"x","colour":"red"}"#,
            r#"{"timestamp":"2026-03-09T09:52:14Z","event":"Pcap.download","actor":"x"}"#,
            r#"{"event":"a.b","actor":"#,
            // Refused by the number rule, on the borrowed and the owned path.
            r#"{"timestamp":"2026-03-09T09:52:14Z","event":"a.b","actor":"x","context":{"n":18446744073709551616}}"#,
            r#"{"timestamp":"2026-03-09T09:52:14Z","event":"a.b","actor":"x","context":{"n":[1,3.14159265358979323846]}}"#,
            r#"{"timestamp":"2026-03-09T09:52:14Z","event":"a.b","actor":"x","context":{"n":1e-400,"n":1}}"#,
            // Integers at the ends of the range, read without a float.
            r#"{"timestamp":"2026-03-09T09:52:14Z","event":"a.b","actor":"x","context":{"n":[18446744073709551615,-9223372036854775808]}}"#,
        ] {
            assert_eq!(parsed(line), owned(line), "{line}");
        }
        let dup = parsed(r#"{"timestamp":"2026-03-09T09:52:14Z","event":"a.b","actor":"x","context":{"a":1,"b":2,"a":3}}"#).unwrap();
        assert!(dup.ends_with(br#"{"a":3,"b":2}"#));
        let refused = parsed(r#"{"event":"a.b","actor":"x","context":{"n":-9223372036854775809}}"#);
        assert!(refused.unwrap_err().contains("would not be stored as sent"));
    }

    #[test]
    fn a_line_that_is_not_utf8_gets_serde_jsons_message() {
        let line = b"{\"event\":\"a.b\",\"actor\":\"\xff\"}";
        let mut out = Vec::new();
        let reason = parse_event(line, &mut out).unwrap_err();
        assert!(reason.contains("invalid unicode code point"), "{reason}");
        assert!(out.is_empty());
    }

    #[test]
    fn records_are_split_where_they_were_pushed() {
        let mut records = Records::default();
        records.push(b"abc", 40);
        records.push(b"", 32);
        records.push(b"de", 48);
        let parts: Vec<&[u8]> = records.iter().map(|r| r.0).collect();
        assert_eq!(parts, [&b"abc"[..], b"", b"de"]);
        assert_eq!(records.frame_bytes, 40 + 32 + 48);
        records.clear();
        assert!(records.is_empty() && records.frame_bytes == 0);
    }

    #[test]
    fn lines_are_numbered_and_counted_from_where_the_input_starts() {
        let event = r#"{"timestamp":"2026-03-09T09:52:14Z","event":"a.b","actor":"x"}"#;
        let text = format!("{event}\r\n\n  \n{event}\n{event}");
        let mut lines = EventLines::new(text.as_bytes(), 10);
        assert!(lines.next_event().ok().flatten().is_some());
        assert_eq!((lines.line, lines.consumed), (11, event.len() as u64 + 2));
        assert!(lines.next_event().ok().flatten().is_some());
        assert_eq!(lines.line, 14);
        assert!(lines.next_event().ok().flatten().is_some());
        assert!(lines.next_event().ok().flatten().is_none());
        assert_eq!((lines.line, lines.consumed), (15, text.len() as u64));
    }
}
