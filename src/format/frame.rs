//! Frames: how one record sits in a segment.
//!
//! ```text
//! offset  size  field
//!      0     4  crc32c   CRC-32C (Castagnoli) of bytes 4 .. 48 + len
//!      4     4  len      record length in bytes, 1 ..= MAX_RECORD_BYTES
//!      8     8  seq      the record's sequence number
//!     16    32  hash     the record's chain hash
//!     48   len  record   the record bytes (see `event`)
//!  48+len   0-7 padding  zeros, up to the next multiple of 8
//! ```
//!
//! All integers little-endian. A frame whose first 48 bytes are all zero marks
//! the end of the data (segments are preallocated with zeros).

use crate::hash::chain::ChainHash;
use crate::le::{u32_at, u64_at};
use crate::limits::MAX_RECORD_BYTES;

/// Size of the fixed part of a frame.
pub const FRAME_HEADER_BYTES: usize = 48;
/// Frames start at multiples of this.
pub const FRAME_ALIGN: usize = 8;
/// The largest frame, padding included.
pub const MAX_FRAME_BYTES: usize = padded_len(MAX_RECORD_BYTES);

const CRC_AT: usize = 0;
const LEN_AT: usize = CRC_AT + 4;
const SEQ_AT: usize = LEN_AT + 4;
const HASH_AT: usize = SEQ_AT + 8;
const RECORD_AT: usize = HASH_AT + 32;
const _: () = assert!(RECORD_AT == FRAME_HEADER_BYTES);

/// Bytes a frame holding `record_len` record bytes occupies, padding included.
pub const fn padded_len(record_len: usize) -> usize {
    (FRAME_HEADER_BYTES + record_len).div_ceil(FRAME_ALIGN) * FRAME_ALIGN
}

/// Why the bytes at a frame position are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field is 0 (with a non-zero header) or over the limit.
    #[error("frame length {0} is outside 1..={max}", max = MAX_RECORD_BYTES)]
    BadLength(u32),
    /// Fewer bytes are available than the frame declares.
    #[error("frame needs {needed} bytes, only {available} available")]
    Truncated {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes there are.
        available: usize,
    },
    /// The CRC does not match the bytes.
    #[error("frame checksum mismatch: expected {expected:#010x}, got {got:#010x}")]
    Checksum {
        /// The CRC stored in the frame.
        expected: u32,
        /// The CRC of the bytes read.
        got: u32,
    },
    /// The padding after the record is not zero.
    #[error("frame padding is not zero")]
    Padding,
}

/// A valid frame, borrowing its record bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The record's seq.
    pub seq: u64,
    /// The chain hash stored with the record.
    pub hash: ChainHash,
    /// The record bytes.
    pub record: &'a [u8],
}

impl Frame<'_> {
    /// Bytes this frame occupies, padding included.
    pub fn padded_len(&self) -> usize {
        padded_len(self.record.len())
    }
}

/// The padded length that the frame header at the start of `header` (at
/// least [`FRAME_HEADER_BYTES`]) declares, when its length field is in range.
pub fn declared_len(header: &[u8]) -> Option<usize> {
    let len = u32_at(header, LEN_AT) as usize;
    (1..=MAX_RECORD_BYTES)
        .contains(&len)
        .then(|| padded_len(len))
}

/// Decodes the frame at the start of `buf`.
///
/// `Ok(None)` is the end-of-data marker (a zero header). `buf` must hold at
/// least [`FRAME_HEADER_BYTES`]; a frame longer than `buf` is
/// [`FrameError::Truncated`], so the caller can read more or call it torn.
pub fn decode(buf: &[u8]) -> Result<Option<Frame<'_>>, FrameError> {
    if buf.len() < FRAME_HEADER_BYTES {
        return Err(FrameError::Truncated {
            needed: FRAME_HEADER_BYTES,
            available: buf.len(),
        });
    }
    let len = u32_at(buf, LEN_AT);
    // Only a zero length can be the all-zero end marker.
    if len == 0 && buf[..FRAME_HEADER_BYTES].iter().all(|&b| b == 0) {
        return Ok(None);
    }
    if len == 0 || len as usize > MAX_RECORD_BYTES {
        return Err(FrameError::BadLength(len));
    }
    let total = padded_len(len as usize);
    if buf.len() < total {
        return Err(FrameError::Truncated {
            needed: total,
            available: buf.len(),
        });
    }
    let record_end = RECORD_AT + len as usize;
    let expected = u32_at(buf, CRC_AT);
    let got = crc32c::crc32c(&buf[LEN_AT..record_end]);
    if expected != got {
        return Err(FrameError::Checksum { expected, got });
    }
    if buf[record_end..total].iter().any(|&b| b != 0) {
        return Err(FrameError::Padding);
    }
    let mut hash = [0; 32];
    hash.copy_from_slice(&buf[HASH_AT..RECORD_AT]);
    Ok(Some(Frame {
        seq: u64_at(buf, SEQ_AT),
        hash: ChainHash(hash),
        record: &buf[RECORD_AT..record_end],
    }))
}

/// Reserves a frame header in `out` before the record bytes are encoded after
/// it; returns where the frame starts, for [`finish`].
pub fn begin(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.resize(start + FRAME_HEADER_BYTES, 0);
    start
}

/// Completes the frame that [`begin`] started at `start`, whose record bytes
/// are everything after its header: sets the length and pads it. The frame is
/// not valid until [`link`] gives it its seq and hash.
pub fn finish(out: &mut Vec<u8>, start: usize) {
    let record_len = out.len() - start - FRAME_HEADER_BYTES;
    debug_assert!((1..=MAX_RECORD_BYTES).contains(&record_len));
    out[start + LEN_AT..start + SEQ_AT].copy_from_slice(&(record_len as u32).to_le_bytes());
    out.resize(start + padded_len(record_len), 0);
}

/// Links a finished frame at the start of `buf` into the chain: writes its
/// `seq`, its hash chained from `prev`, and its CRC. Returns the hash.
pub fn link(buf: &mut [u8], seq: u64, prev: &ChainHash) -> ChainHash {
    let record_end = RECORD_AT + u32_at(buf, LEN_AT) as usize;
    let hash = prev.next(seq, &buf[RECORD_AT..record_end]);
    buf[SEQ_AT..HASH_AT].copy_from_slice(&seq.to_le_bytes());
    buf[HASH_AT..RECORD_AT].copy_from_slice(&hash.0);
    let crc = crc32c::crc32c(&buf[LEN_AT..record_end]);
    buf[CRC_AT..LEN_AT].copy_from_slice(&crc.to_le_bytes());
    hash
}

/// The padded length of a frame built by [`finish`]; for walking a buffer of
/// built frames.
pub fn built_len(buf: &[u8]) -> usize {
    padded_len(u32_at(buf, LEN_AT) as usize)
}

/// The chain hash of a frame that [`link`] linked.
pub fn linked_hash(buf: &[u8]) -> ChainHash {
    ChainHash(crate::le::array_at(buf, HASH_AT))
}

/// The record bytes of a frame built by [`finish`].
pub fn built_record(buf: &[u8]) -> &[u8] {
    &buf[RECORD_AT..RECORD_AT + u32_at(buf, LEN_AT) as usize]
}

/// The record bytes of a frame built by [`finish`], to fill in a field
/// before [`link`] (the engine's `received_at`).
pub fn built_record_mut(buf: &mut [u8]) -> &mut [u8] {
    let len = u32_at(buf, LEN_AT) as usize;
    &mut buf[RECORD_AT..RECORD_AT + len]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(seq: u64, record: &[u8]) -> (Vec<u8>, ChainHash) {
        let mut out = Vec::new();
        let start = begin(&mut out);
        out.extend_from_slice(record);
        finish(&mut out, start);
        let hash = link(&mut out, seq, &ChainHash::default());
        (out, hash)
    }

    #[test]
    fn frame_round_trip() {
        for len in [1, 7, 8, 9, 100] {
            let record: Vec<u8> = (0..len).map(|i| i as u8 | 1).collect();
            let (buf, hash) = build(42, &record);
            assert_eq!(buf.len() % FRAME_ALIGN, 0);
            let frame = decode(&buf).unwrap().unwrap();
            assert_eq!(frame.seq, 42);
            assert_eq!(frame.hash, hash);
            assert_eq!(frame.record, &record[..]);
            assert_eq!(frame.padded_len(), buf.len());
            assert_eq!(built_len(&buf), buf.len());
            assert_eq!(declared_len(&buf), Some(buf.len()));
        }
    }

    #[test]
    fn frame_detects_every_flipped_bit() {
        let (buf, _) = build(3, b"some record bytes");
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                assert!(decode(&bad).is_err(), "flip at {byte}:{bit} went unnoticed");
            }
        }
    }

    #[test]
    fn zero_header_is_the_end_and_short_buffers_are_truncated() {
        assert_eq!(decode(&[0; 64]), Ok(None));
        let (buf, _) = build(1, b"abc");
        assert!(matches!(
            decode(&buf[..buf.len() - 1]),
            Err(FrameError::Truncated { .. })
        ));
        assert!(matches!(
            decode(&buf[..10]),
            Err(FrameError::Truncated { .. })
        ));
        let mut huge = buf.clone();
        huge[LEN_AT..SEQ_AT].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&huge), Err(FrameError::BadLength(u32::MAX)));
        assert_eq!(declared_len(&huge), None);
        assert_eq!(declared_len(&[0; 48]), None);
    }

    #[test]
    fn relinking_matches_a_fresh_build() {
        let (mut buf, _) = build(1, b"record");
        let prev = ChainHash([7; 32]);
        let hash = link(&mut buf, 9, &prev);
        assert_eq!(hash, prev.next(9, b"record"));
        let frame = decode(&buf).unwrap().unwrap();
        assert_eq!((frame.seq, frame.hash), (9, hash));
    }
}
