//! Scanning a segment's frames in order through a bounded buffer, and
//! telling where valid frames end (what recovery and `verify` build on).

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::frame::{self, Frame, FrameError, FRAME_ALIGN, FRAME_HEADER_BYTES};
use crate::storage::{read_full_at, StorageFile};

/// One step of a [`Scanner`].
#[derive(Debug)]
pub enum Step<'a> {
    /// A valid frame at `offset`.
    Frame {
        /// Byte offset of the frame in the file.
        offset: u64,
        /// The frame.
        frame: Frame<'a>,
    },
    /// The end of the data at `offset`: a zero header, or the scan limit.
    End {
        /// Byte offset where data ends.
        offset: u64,
    },
    /// The bytes at `offset` are not a valid frame.
    Bad {
        /// Byte offset of the bad frame.
        offset: u64,
        /// What is wrong with it.
        error: FrameError,
    },
}

/// Reads frames sequentially from a segment through a bounded buffer, so
/// memory stays flat whatever the segment size.
pub struct Scanner {
    file: Arc<dyn StorageFile>,
    name: String,
    /// Next frame position.
    pos: u64,
    /// Frames are read only below this offset.
    limit: u64,
    /// Read buffer; only `buf[..filled]` holds file bytes. It keeps its
    /// length between reads, so a refill does not zero it again.
    buf: Vec<u8>,
    filled: usize,
    /// File offset of `buf[0]`.
    buf_at: u64,
    /// Bytes read from the file so far.
    bytes_read: u64,
}

/// Bytes read per I/O call while scanning.
const SCAN_CHUNK_BYTES: usize = 1 << 20;

impl Scanner {
    /// Scans `file` (named `name`) from `pos` up to `limit`.
    pub fn new(file: Arc<dyn StorageFile>, name: &str, pos: u64, limit: u64) -> Self {
        Scanner {
            file,
            name: name.to_string(),
            pos,
            limit,
            buf: Vec::new(),
            filled: 0,
            buf_at: pos,
            bytes_read: 0,
        }
    }

    /// Bytes read from the file so far (for I/O accounting).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The position of the next frame.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The scan limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Raises the scan limit (the writer published more data).
    pub fn extend_limit(&mut self, limit: u64) {
        self.limit = self.limit.max(limit);
    }

    /// Moves to `pos` (a frame boundary), dropping buffered bytes before it.
    pub fn seek(&mut self, pos: u64) {
        self.pos = pos;
    }

    /// Makes sure `buf` holds `len` bytes from `pos` (or all bytes up to the
    /// limit, if fewer); returns how many it holds.
    fn fill(&mut self, len: usize) -> Result<usize> {
        let want_end = (self.pos + len as u64).min(self.limit);
        let have_end = self.buf_at + self.filled as u64;
        if self.pos >= self.buf_at && want_end <= have_end {
            return Ok((want_end.saturating_sub(self.pos)) as usize);
        }
        // Refill from `pos`, reading a chunk (bounded by the limit).
        let read_len =
            (len.max(SCAN_CHUNK_BYTES) as u64).min(self.limit.saturating_sub(self.pos)) as usize;
        if self.buf.len() < read_len {
            self.buf.resize(read_len, 0);
        }
        self.filled = 0;
        let n = read_full_at(&*self.file, &mut self.buf[..read_len], self.pos)
            .map_err(|e| Error::io(&self.name, e))?;
        self.filled = n;
        self.buf_at = self.pos;
        self.bytes_read += n as u64;
        Ok(n.min(len))
    }

    /// The next step, advancing past a valid frame. After `Bad` or `End` the
    /// position stays put.
    pub fn next_step(&mut self) -> Result<Step<'_>> {
        let have = match self.buffer_frame()? {
            Ok(have) => have,
            Err(step) => return Ok(step),
        };
        let offset = self.pos;
        let start = (self.pos - self.buf_at) as usize;
        match frame::decode(&self.buf[start..start + have]) {
            Ok(Some(frame)) => {
                self.pos += frame.padded_len() as u64;
                Ok(Step::Frame { offset, frame })
            }
            Ok(None) => Ok(Step::End { offset }),
            Err(error) => Ok(Step::Bad { offset, error }),
        }
    }

    /// [`Scanner::next_step`], and when that is a frame, also the frame after
    /// it (with its offset) if that one is valid and already buffered,
    /// advancing past both. The second frame is the one `next_step` would
    /// return next; when there is none, `next_step` reads on from there as
    /// usual. Lets the verifier hash two records at once.
    pub fn next_pair(&mut self) -> Result<(Step<'_>, Option<(u64, Frame<'_>)>)> {
        let have = match self.buffer_frame()? {
            Ok(have) => have,
            Err(step) => return Ok((step, None)),
        };
        let offset = self.pos;
        let start = (self.pos - self.buf_at) as usize;
        let frame = match frame::decode(&self.buf[start..start + have]) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok((Step::End { offset }, None)),
            Err(error) => return Ok((Step::Bad { offset, error }, None)),
        };
        self.pos += frame.padded_len() as u64;
        let second_at = self.pos;
        let buffered_end = (self.buf_at + self.filled as u64).min(self.limit);
        let mut second = None;
        if second_at + FRAME_HEADER_BYTES as u64 <= buffered_end {
            let start = (second_at - self.buf_at) as usize;
            let end = (buffered_end - self.buf_at) as usize;
            // `decode` reads only the bytes its header declares.
            if let Ok(Some(next)) = frame::decode(&self.buf[start..end]) {
                self.pos += next.padded_len() as u64;
                second = Some((second_at, next));
            }
        }
        Ok((Step::Frame { offset, frame }, second))
    }

    /// Buffers the frame at the position (as much of it as there is before
    /// the limit); returns how many of its bytes are buffered, or the step
    /// when no frame header fits.
    fn buffer_frame(&mut self) -> Result<std::result::Result<usize, Step<'static>>> {
        if self.pos + FRAME_HEADER_BYTES as u64 > self.limit {
            return Ok(Err(Step::End { offset: self.pos }));
        }
        let have = self.fill(FRAME_HEADER_BYTES)?;
        if have < FRAME_HEADER_BYTES {
            return Ok(Err(Step::Bad {
                offset: self.pos,
                error: FrameError::Truncated {
                    needed: FRAME_HEADER_BYTES,
                    available: have,
                },
            }));
        }
        // The whole frame its header declares, so that it is decoded once.
        let start = (self.pos - self.buf_at) as usize;
        let needed =
            frame::declared_len(&self.buf[start..self.filled]).unwrap_or(FRAME_HEADER_BYTES);
        Ok(Ok(self.fill(needed)?))
    }

    /// Reads `out.len()` bytes at `at` (below the limit), without moving the
    /// position; returns how many there were.
    pub fn peek(&mut self, at: u64, out: &mut [u8]) -> Result<usize> {
        let resume = self.pos;
        self.pos = at;
        let have = self.fill(out.len());
        self.pos = resume;
        let have = have?;
        let s = (at - self.buf_at) as usize;
        out[..have].copy_from_slice(&self.buf[s..s + have]);
        Ok(have)
    }

    /// Looks past a bad frame or the end marker for any valid frame with a
    /// seq of at least `min_seq`, at every aligned offset after the current
    /// position up to the limit. Returns its offset and seq, and the offset
    /// just past the last non-zero byte seen (where damage or a torn tail
    /// ends). Leaves the position unchanged.
    pub fn find_valid_after(&mut self, min_seq: u64) -> Result<(Option<(u64, u64)>, u64)> {
        let resume = self.pos;
        let mut last_nonzero_end = resume;
        let mut at = resume + FRAME_ALIGN as u64;
        let mut found = None;
        // The byte at `resume` itself may be non-zero.
        self.pos = resume;
        if self.fill(FRAME_ALIGN)? > 0 {
            let s = (self.pos - self.buf_at) as usize;
            if self.buf[s..s + FRAME_ALIGN.min(self.filled - s)]
                .iter()
                .any(|&b| b != 0)
            {
                last_nonzero_end = resume + FRAME_ALIGN as u64;
            }
        }
        // Look at every word up to the limit, including the last few where no
        // frame header fits (`next_step` reports `End` there): the format
        // says they are zero too, and a stray byte there must not go unseen.
        while at < self.limit {
            self.pos = at;
            let have = self.fill(FRAME_ALIGN)?;
            if have == 0 {
                break;
            }
            let s = (at - self.buf_at) as usize;
            if self.buf[s..s + have].iter().all(|&b| b == 0) {
                // Skip the whole run of zero words already buffered at once:
                // the tail of a preallocated segment is mostly zeros.
                let zero_words = (zero_prefix(&self.buf[s..self.filled]) / FRAME_ALIGN).max(1);
                at += (zero_words * FRAME_ALIGN) as u64;
                continue;
            }
            last_nonzero_end = at + FRAME_ALIGN as u64;
            if found.is_none() {
                if let Step::Frame { frame, .. } = self.next_step()? {
                    if frame.seq >= min_seq {
                        found = Some((at, frame.seq));
                    }
                }
            }
            at += FRAME_ALIGN as u64;
        }
        self.pos = resume;
        Ok((found, last_nonzero_end.min(self.limit)))
    }
}

/// How many bytes at the start of `bytes` are zero. Whole runs of 64 bytes
/// are tested at once (an OR that the compiler vectorises): the space after
/// a segment's data is megabytes of zeros.
fn zero_prefix(bytes: &[u8]) -> usize {
    const RUN: usize = 64;
    let runs = bytes
        .chunks_exact(RUN)
        .position(|c| c.iter().fold(0, |a, &b| a | b) != 0)
        .unwrap_or(bytes.len() / RUN);
    let from = runs * RUN;
    from + bytes[from..]
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len() - from)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::format::segment::tests::header;
    use crate::format::segment::{create, data_end_limit, HEADER_BYTES};
    use crate::hash::chain::ChainHash;
    use crate::hash::merkle::Frontier;
    use crate::storage::sim::SimDisk;

    type Seen = (u64, std::result::Result<(u64, ChainHash, Vec<u8>), String>);

    /// What a scan saw (and how many frames came second in a pair): each step's offset and frame (seq, hash, record) or
    /// error, moving past damage as the verifier does.
    fn walk(scan: &mut Scanner, pairs: bool) -> (Vec<Seen>, usize) {
        let mut seen = Vec::new();
        let mut paired = 0;
        loop {
            let (step, second) = if pairs {
                scan.next_pair().unwrap()
            } else {
                (scan.next_step().unwrap(), None)
            };
            match step {
                Step::Frame { offset, frame } => {
                    seen.push((offset, Ok((frame.seq, frame.hash, frame.record.to_vec()))));
                    if let Some((offset, frame)) = second {
                        paired += 1;
                        seen.push((offset, Ok((frame.seq, frame.hash, frame.record.to_vec()))));
                    }
                    continue;
                }
                Step::End { offset } => seen.push((offset, Err("end".into()))),
                Step::Bad { offset, error } => seen.push((offset, Err(error.to_string()))),
            }
            match scan.find_valid_after(0).unwrap() {
                (Some((next, _)), _) => scan.seek(next),
                (None, _) => return (seen, paired),
            }
        }
    }

    #[test]
    fn frame_pairs_are_the_frames_one_at_a_time() {
        let disk = SimDisk::new();
        let mut h = header();
        h.segment_bytes = 4 * SCAN_CHUNK_BYTES as u64;
        let mut frontier = Frontier::new();
        for i in 0..h.base_seq {
            frontier.push(&i.to_le_bytes());
        }
        let file = create(&disk, Path::new("/log"), &h, &frontier).unwrap();
        // Frames of many sizes, some large, so that frames straddle the
        // scanner's reads; then a bad CRC, a zeroed frame and a torn tail.
        let mut buf = Vec::new();
        let mut starts = Vec::new();
        let mut prev = h.prev_hash;
        let mut seq = h.base_seq;
        while buf.len() < 3 * SCAN_CHUNK_BYTES {
            let len = [1, 7, 300, 4096, 40_000, crate::limits::MAX_RECORD_BYTES][seq as usize % 6];
            let start = frame::begin(&mut buf);
            starts.push(start);
            buf.extend((0..len).map(|i| (i as u64 ^ seq) as u8));
            frame::finish(&mut buf, start);
            prev = frame::link(&mut buf[start..], seq, &prev);
            seq += 1;
        }
        buf[starts[20] + 60] ^= 1;
        let zeroed = starts[31]..starts[32];
        buf[zeroed].fill(0);
        let torn = buf.len() - 20;
        buf.truncate(torn);
        file.write_all_at(&buf, HEADER_BYTES).unwrap();
        let limit = data_end_limit(h.segment_bytes);
        let (one, _) = walk(
            &mut Scanner::new(file.clone(), "x", HEADER_BYTES, limit),
            false,
        );
        let (two, paired) = walk(
            &mut Scanner::new(file.clone(), "x", HEADER_BYTES, limit),
            true,
        );
        assert!(paired > 20, "{paired} frames came in pairs");
        assert!(one.len() > 60, "{} steps", one.len());
        assert_eq!(one.iter().filter(|(_, s)| s.is_err()).count(), 3);
        assert!(one == two, "the paired scan differs");
    }

    #[test]
    fn zero_prefix_counts_the_leading_zeros() {
        for len in [0, 1, 63, 64, 65, 200, 1000] {
            let mut bytes = vec![0u8; len];
            assert_eq!(zero_prefix(&bytes), len);
            for at in [0, 1, 7, 8, 63, 64, 65, 130, 999] {
                if at < len {
                    bytes[at] = 3;
                    assert_eq!(zero_prefix(&bytes), at, "len {len}, at {at}");
                    bytes[at] = 0;
                }
            }
        }
    }
}
