//! The tail object codec: a *piece* holds byte ranges of one segment file,
//! so that the pieces of a segment, applied in order to a zeroed file, give
//! the segment file byte for byte. docs/CLUSTER.md specifies it.

/// One byte range of a segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceRange {
    /// Where the bytes go in the segment file.
    pub offset: u64,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// A piece: ranges of the segment starting at `base_seq`, written in `epoch`,
/// covering records `first_seq..next_seq`.
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
    /// The ranges, in increasing order, not overlapping.
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
    #[error("unsupported version {0}")]
    Version(u16),
    /// The checksum over the whole piece does not match.
    #[error("checksum mismatch: expected {expected:08x}, got {got:08x}")]
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
