//! The tail object codec: a *piece* holds byte ranges of one segment file,
//! so that the pieces of a segment, applied in order to a zeroed file of
//! `segment_bytes`, give the segment file byte for byte. docs/CLUSTER.md
//! ("Replicated durability") specifies the layout; the offsets below follow
//! it field by field.
//!
//! ```text
//! 0   8  magic          "CHLOGPCE"
//! 8   2  version        1
//! 10  2  reserved       0
//! 12  4  range_count    1..=MAX_RANGES
//! 16  8  segment_bytes  the segment file's size
//! 24  8  base_seq       the segment's base seq
//! 32  8  epoch          the writer's lease epoch
//! 40  8  first_seq      the first record the piece's frames hold
//! 48  8  next_seq       one past the last (= first_seq: no frame)
//! 56  ranges, each: u64 offset, u32 length, u32 reserved 0, the bytes,
//!     zeros to a multiple of 8
//! ..  4  CRC-32C of every byte before it
//! ```

use crate::format::segment::{MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES};

/// The first 8 bytes of every piece.
pub const PIECE_MAGIC: [u8; 8] = *b"CHLOGPCE";
/// The piece format version written and read.
pub const PIECE_VERSION: u16 = 1;
/// The most ranges in one piece (a header, a link block, frames and a
/// trailer need four).
pub const MAX_RANGES: usize = 8;
/// Bytes before the first range.
pub const PIECE_HEADER_BYTES: usize = layout::RANGES;
/// Bytes of a range's header (offset, length, reserved).
pub const RANGE_HEADER_BYTES: usize = 16;

/// Offsets in the piece header (the table above).
mod layout {
    pub const VERSION: usize = 8; // after the magic
    pub const RESERVED: usize = VERSION + 2;
    pub const RANGE_COUNT: usize = RESERVED + 2;
    /// segment_bytes, base_seq, epoch, first_seq, next_seq: 8 bytes each.
    pub const U64_FIELDS: usize = RANGE_COUNT + 4;
    pub const RANGES: usize = U64_FIELDS + 5 * 8;
}

/// One byte range of a segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceRange {
    /// Where the bytes go in the segment file.
    pub offset: u64,
    /// The bytes.
    pub bytes: Vec<u8>,
}

impl PieceRange {
    /// One past the range's last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.bytes.len() as u64
    }
}

/// A piece: ranges of the segment starting at `base_seq`, written in
/// `epoch`, whose frames are records `first_seq..next_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// The segment's base seq.
    pub base_seq: u64,
    /// The lease epoch of the writer.
    pub epoch: u64,
    /// The first record it covers.
    pub first_seq: u64,
    /// One past the last record it covers.
    pub next_seq: u64,
    /// The segment's size in bytes.
    pub segment_bytes: u64,
    /// The ranges, in increasing order, not overlapping, none empty.
    pub ranges: Vec<PieceRange>,
}

/// Why a piece's bytes are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PieceError {
    /// The piece is shorter than its fields say.
    #[error("truncated: {0}")]
    Truncated(&'static str),
    /// Not a piece.
    #[error("bad magic")]
    BadMagic,
    /// A version this reader does not know.
    #[error("unsupported piece version {0}")]
    Version(u16),
    /// The checksum over the whole piece does not match.
    #[error("checksum mismatch: expected {expected:#010x}, got {got:#010x}")]
    Checksum {
        /// Stored.
        expected: u32,
        /// Computed.
        got: u32,
    },
    /// The fields break the piece's rules.
    #[error("invalid: {0}")]
    Invalid(String),
}

/// `tail/<base_seq, 20 digits>`: the folder of a segment's pieces.
pub fn piece_dir(base_seq: u64) -> String {
    format!("tail/{base_seq:020}")
}

/// `<first_seq, 20 digits>-<epoch, 20 digits>.piece`.
pub fn piece_file_name(first_seq: u64, epoch: u64) -> String {
    format!("{first_seq:020}-{epoch:020}.piece")
}

/// `tail/<base_seq>/<first_seq>-<epoch>.piece`, under the workspace prefix.
pub fn piece_key(base_seq: u64, first_seq: u64, epoch: u64) -> String {
    format!(
        "{}/{}",
        piece_dir(base_seq),
        piece_file_name(first_seq, epoch)
    )
}

/// The `(first_seq, epoch)` a piece's file name gives.
pub fn parse_piece_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".piece")?;
    let (first, epoch) = stem.split_once('-')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(first) || !digits(epoch) {
        return None;
    }
    Some((first.parse().ok()?, epoch.parse().ok()?))
}

impl Piece {
    /// This piece's key under the workspace prefix.
    pub fn key(&self) -> String {
        piece_key(self.base_seq, self.first_seq, self.epoch)
    }

    /// The piece's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let body: usize = self
            .ranges
            .iter()
            .map(|r| RANGE_HEADER_BYTES + r.bytes.len().next_multiple_of(8))
            .sum();
        let mut b = Vec::with_capacity(PIECE_HEADER_BYTES + body + 4);
        b.extend_from_slice(&PIECE_MAGIC);
        b.extend_from_slice(&PIECE_VERSION.to_le_bytes());
        b.extend_from_slice(&[0; 2]);
        b.extend_from_slice(&(self.ranges.len() as u32).to_le_bytes());
        for v in [
            self.segment_bytes,
            self.base_seq,
            self.epoch,
            self.first_seq,
            self.next_seq,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        debug_assert_eq!(b.len(), PIECE_HEADER_BYTES);
        for range in &self.ranges {
            b.extend_from_slice(&range.offset.to_le_bytes());
            b.extend_from_slice(&(range.bytes.len() as u32).to_le_bytes());
            b.extend_from_slice(&[0; 4]);
            b.extend_from_slice(&range.bytes);
            b.resize(b.len().next_multiple_of(8), 0);
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a piece: magic, version, CRC, then the fields'
    /// rules (see [`Piece::check`]).
    pub fn decode(b: &[u8]) -> Result<Piece, PieceError> {
        if b.len() < PIECE_HEADER_BYTES + 4 {
            return Err(PieceError::Truncated("shorter than a piece header"));
        }
        if b[..8] != PIECE_MAGIC {
            return Err(PieceError::BadMagic);
        }
        let version = u16_at(b, layout::VERSION);
        if version != PIECE_VERSION {
            return Err(PieceError::Version(version));
        }
        let (body, crc) = b.split_at(b.len() - 4);
        let expected = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        let got = crc32c::crc32c(body);
        if expected != got {
            return Err(PieceError::Checksum { expected, got });
        }
        if u16_at(b, layout::RESERVED) != 0 {
            return Err(PieceError::Invalid("reserved bytes are not zero".into()));
        }
        let count = u32_at(b, layout::RANGE_COUNT) as usize;
        if count == 0 || count > MAX_RANGES {
            return Err(PieceError::Invalid(format!(
                "{count} ranges, not 1..={MAX_RANGES}"
            )));
        }
        let field = |i: usize| u64_at(b, layout::U64_FIELDS + 8 * i);
        let mut piece = Piece {
            segment_bytes: field(0),
            base_seq: field(1),
            epoch: field(2),
            first_seq: field(3),
            next_seq: field(4),
            ranges: Vec::with_capacity(count),
        };
        let mut at = PIECE_HEADER_BYTES;
        for _ in 0..count {
            if body.len() < at + RANGE_HEADER_BYTES {
                return Err(PieceError::Truncated("a range header"));
            }
            let offset = u64_at(body, at);
            let len = u32_at(body, at + 8) as usize;
            if u32_at(body, at + 12) != 0 {
                return Err(PieceError::Invalid(
                    "a range's reserved bytes are not zero".into(),
                ));
            }
            at += RANGE_HEADER_BYTES;
            let padded = len.next_multiple_of(8);
            if body.len() < at + padded {
                return Err(PieceError::Truncated("a range's bytes"));
            }
            if body[at + len..at + padded].iter().any(|&x| x != 0) {
                return Err(PieceError::Invalid("a range's padding is not zero".into()));
            }
            piece.ranges.push(PieceRange {
                offset,
                bytes: body[at..at + len].to_vec(),
            });
            at += padded;
        }
        if at != body.len() {
            return Err(PieceError::Invalid(format!(
                "{} bytes after the last range",
                body.len() - at
            )));
        }
        piece.check()?;
        Ok(piece)
    }

    /// The rules every piece keeps: a segment size in range, the base seq
    /// at or before the first seq, `first_seq <= next_seq`, an epoch of at
    /// least 1, and ranges that are non-empty, in increasing order, not
    /// overlapping and inside the segment file.
    pub fn check(&self) -> Result<(), PieceError> {
        let invalid = |why: String| Err(PieceError::Invalid(why));
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes)
            || self.segment_bytes % 8 != 0
        {
            return invalid(format!("segment size {}", self.segment_bytes));
        }
        if self.epoch == 0 {
            return invalid("epoch 0".into());
        }
        if self.first_seq < self.base_seq || self.next_seq < self.first_seq {
            return invalid(format!(
                "seqs out of order: base {}, first {}, next {}",
                self.base_seq, self.first_seq, self.next_seq
            ));
        }
        if self.ranges.is_empty() || self.ranges.len() > MAX_RANGES {
            return invalid(format!("{} ranges", self.ranges.len()));
        }
        let mut end = 0;
        for range in &self.ranges {
            if range.bytes.is_empty() || range.bytes.len() > u32::MAX as usize {
                return invalid("an empty or oversized range".into());
            }
            if range.offset < end || range.end() > self.segment_bytes {
                return invalid(format!(
                    "range at {} (+{}) overlaps or leaves the segment",
                    range.offset,
                    range.bytes.len()
                ));
            }
            end = range.end();
        }
        Ok(())
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece() -> Piece {
        Piece {
            base_seq: 100,
            epoch: 3,
            first_seq: 100,
            next_seq: 104,
            segment_bytes: 1 << 20,
            ranges: vec![
                PieceRange {
                    offset: 0,
                    bytes: vec![7; 128],
                },
                PieceRange {
                    offset: 128,
                    bytes: (0..301u32).map(|i| i as u8).collect(),
                },
                PieceRange {
                    offset: (1 << 20) - 4096 + 96,
                    bytes: vec![9; 52],
                },
            ],
        }
    }

    /// Replaces the CRC so that only the rule under test can fail.
    fn recrc(b: &mut [u8]) {
        let n = b.len() - 4;
        let crc = crc32c::crc32c(&b[..n]);
        b[n..].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn pieces_round_trip() {
        let p = piece();
        let bytes = p.encode();
        assert_eq!(bytes.len() % 8, 4);
        assert_eq!(Piece::decode(&bytes).unwrap(), p);
        assert_eq!(
            p.key(),
            "tail/00000000000000000100/00000000000000000100-00000000000000000003.piece"
        );
        assert_eq!(
            parse_piece_file_name("00000000000000000100-00000000000000000003.piece"),
            Some((100, 3))
        );
        for bad in [
            "100-3.piece",
            "00000000000000000100-00000000000000000003",
            "x",
        ] {
            assert_eq!(parse_piece_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_corruption_is_refused() {
        let good = piece().encode();
        // Any flipped byte: the CRC (or, for the CRC itself, the same).
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x20;
            assert!(Piece::decode(&b).is_err(), "byte {i} flipped was accepted");
        }
        // Every truncation.
        for n in 0..good.len() {
            assert!(Piece::decode(&good[..n]).is_err(), "truncated to {n}");
        }
        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(Piece::decode(&b), Err(PieceError::BadMagic));
        let mut b = good.clone();
        b[8] = 2;
        assert_eq!(Piece::decode(&b), Err(PieceError::Version(2)));
        let mut b = good.clone();
        b[100] ^= 1;
        assert!(matches!(
            Piece::decode(&b),
            Err(PieceError::Checksum { .. })
        ));
        // Well-checksummed but breaking the rules.
        type Change = Box<dyn Fn(&mut Piece)>;
        let rules: Vec<(&str, Change)> = vec![
            ("epoch 0", Box::new(|p| p.epoch = 0)),
            ("next before first", Box::new(|p| p.next_seq = 99)),
            ("first before base", Box::new(|p| p.first_seq = 50)),
            ("segment size", Box::new(|p| p.segment_bytes = 1000)),
            ("overlap", Box::new(|p| p.ranges[1].offset = 100)),
            (
                "outside the segment",
                Box::new(|p| p.ranges[2].offset = 1 << 20),
            ),
            ("empty range", Box::new(|p| p.ranges[1].bytes.clear())),
        ];
        for (what, change) in rules {
            let mut p = piece();
            change(&mut p);
            assert!(
                matches!(Piece::decode(&p.encode()), Err(PieceError::Invalid(_))),
                "{what}"
            );
        }
        // Reserved bytes and padding.
        let mut b = good.clone();
        b[10] = 1;
        recrc(&mut b);
        assert!(matches!(Piece::decode(&b), Err(PieceError::Invalid(_))));
        let mut b = good.clone();
        // The second range's padding: 301 bytes pad to 304.
        let pad = PIECE_HEADER_BYTES + RANGE_HEADER_BYTES + 128 + RANGE_HEADER_BYTES + 301;
        b[pad] = 1;
        recrc(&mut b);
        assert!(matches!(Piece::decode(&b), Err(PieceError::Invalid(_))));
        // Extra bytes after the last range, and a range count of zero.
        let mut b = good.clone();
        b.splice(good.len() - 4..good.len() - 4, [0u8; 8]);
        recrc(&mut b);
        assert!(matches!(Piece::decode(&b), Err(PieceError::Invalid(_))));
        let mut b = good.clone();
        b[12..16].copy_from_slice(&0u32.to_le_bytes());
        recrc(&mut b);
        assert!(matches!(Piece::decode(&b), Err(PieceError::Invalid(_))));
    }
}
