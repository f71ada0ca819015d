//! Segment images read and patched by hand, for the tamper tests
//! (tests/tamper.rs, tests/tamper_table.rs): where the frames are, and the
//! CRCs of a frame, the header and the trailer recomputed after a change.
#![allow(dead_code)]

use chainlog::format::frame::{self, FRAME_HEADER_BYTES};
use chainlog::format::segment::{data_end_limit, HEADER_BYTES};

/// A frame found in a segment image.
#[derive(Debug, Clone, Copy)]
pub struct FrameAt {
    /// Where it starts in the file.
    pub offset: usize,
    /// Its length with padding: where the next frame starts.
    pub len: usize,
    /// The length of the record it holds (after the frame header).
    pub record_len: usize,
    /// The seq in its header.
    pub seq: u64,
}

/// The frames of `image`, from the header to the first place that holds
/// none; a frame that does not decode fails the test.
pub fn frames(image: &[u8]) -> Vec<FrameAt> {
    let limit = data_end_limit(image.len() as u64) as usize;
    let mut at = HEADER_BYTES as usize;
    let mut out = Vec::new();
    while at + FRAME_HEADER_BYTES <= limit {
        let decoded = frame::decode(&image[at..limit])
            .unwrap_or_else(|e| panic!("the frame at {at} does not decode: {e}"));
        let Some(f) = decoded else { break };
        out.push(FrameAt {
            offset: at,
            len: f.padded_len(),
            record_len: f.record.len(),
            seq: f.seq,
        });
        at += f.padded_len();
    }
    out
}

/// Where the last frame of `image` ends.
pub fn data_end(image: &[u8]) -> usize {
    let f = frames(image);
    let last = f.last().unwrap();
    last.offset + last.len
}

pub fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

pub fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Recomputes the CRC of the frame at `offset`.
pub fn fix_frame_crc(image: &mut [u8], offset: usize) {
    let len = u32_at(image, offset + 4);
    let crc = crc32c::crc32c(&image[offset + 4..offset + FRAME_HEADER_BYTES + len]);
    put_u32(image, offset, crc);
}

/// Recomputes the header CRC.
pub fn fix_header_crc(image: &mut [u8]) {
    let crc = crc32c::crc32c(&image[..124]);
    put_u32(image, 124, crc);
}

/// Recomputes the trailer CRC.
pub fn fix_trailer_crc(image: &mut [u8]) {
    let at = data_end_limit(image.len() as u64) as usize;
    let crc = crc32c::crc32c(&image[at..at + 92]);
    put_u32(image, at + 92, crc);
}
