//! Damage classification: the one rule that tells crash debris from
//! corruption, used by the verifier and by recovery alike, so that what
//! verify calls a torn tail is exactly what recovery cuts, and what verify
//! calls corruption is exactly what recovery refuses to touch.
//!
//! The functions here are pure: they judge what a scan of the segment found
//! ([`DataScan`], the trailer bytes) and decide nothing by reading.
//! [`scan_data_end`] gathers a [`DataScan`] with a [`Scanner`] stopped at the
//! first position that is not a valid frame. The rules are in
//! `docs/FORMAT.md` ("Damage classification").

use crate::error::Result;
use crate::format::frame::FRAME_ALIGN;
#[cfg(test)]
use crate::format::segment::SegmentTrailer;
use crate::format::segment::{Scanner, TRAILER_BYTES};

/// Offset of the seq field within a frame.
const SEQ_FIELD_AT: u64 = 8;

/// What a scan found at and after `at`, the first position of a segment's
/// data area that is not a valid frame (a zero header, a bad length, a bad
/// CRC or non-zero padding), or the scan limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataScan {
    /// The first position that is not a valid frame.
    pub at: u64,
    /// Just past the last non-zero 8-byte word from `at` to the data limit
    /// (`at` when all of it is zero).
    pub nonzero_end: u64,
    /// The first valid frame (CRC, length, padding) at an 8-aligned offset
    /// after `at` whose seq is at least the expected one: (offset, seq).
    pub resume: Option<(u64, u64)>,
    /// The 8 bytes at `at + 8 .. at + 16` (the seq field of a frame there),
    /// zero beyond the data limit.
    pub seq_field: [u8; 8],
}

/// How the data area of a segment ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataEnd {
    /// Only zeros from `at` on.
    Clean {
        /// Where the data ends.
        at: u64,
    },
    /// An incomplete write at the end of the newest unsealed segment: crash
    /// debris. Verify notes it; recovery zeroes `at .. end`.
    TornTail {
        /// Where the valid data ends.
        at: u64,
        /// Just past the last non-zero byte of the debris (8-aligned).
        end: u64,
    },
    /// Damage no crash of this engine leaves: verify reports it, recovery
    /// refuses and changes nothing.
    Corrupt {
        /// Where the valid data ends.
        at: u64,
        /// Why it is corruption.
        cause: Corruption,
    },
}

impl DataEnd {
    /// Where the valid frames end.
    pub fn valid_end(&self) -> u64 {
        match *self {
            DataEnd::Clean { at } | DataEnd::TornTail { at, .. } | DataEnd::Corrupt { at, .. } => {
                at
            }
        }
    }
}

/// Why damage at the end of the valid frames is corruption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// A valid frame with a seq at least the expected one follows: records
    /// after the damage would be lost by a cut.
    ValidFramesResume {
        /// The valid frame's offset.
        offset: u64,
        /// Its seq.
        seq: u64,
    },
    /// The seq field at the damage holds bytes of neither zero nor the
    /// expected seq: the remains of an overwritten record, not a write that
    /// stopped part-way.
    ForeignSeq {
        /// The seq field's value.
        found: u64,
    },
    /// Non-zero bytes after the data of a segment that cannot have a torn
    /// tail (sealed, or not the newest).
    NotTornable {
        /// Just past the last non-zero byte.
        end: u64,
    },
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Corruption::ValidFramesResume { offset, seq } => {
                write!(f, "valid frames resume at byte {offset} (seq {seq})")
            }
            Corruption::ForeignSeq { found } => write!(
                f,
                "the seq field there reads {found}: the remains of another record, not a torn write"
            ),
            Corruption::NotTornable { end } => write!(
                f,
                "non-zero bytes up to byte {end} in a segment that cannot have a torn tail"
            ),
        }
    }
}

/// Classifies the end of a segment's valid frames.
///
/// `expected_seq` is the seq the next frame would have; `may_be_torn` is
/// true only for the newest segment when it is unsealed or its seal is
/// torn (see [`SealState::allows_torn_tail`]).
pub fn classify_data(scan: &DataScan, expected_seq: u64, may_be_torn: bool) -> DataEnd {
    let at = scan.at;
    // 1. Nothing but zeros.
    if scan.nonzero_end <= at {
        return DataEnd::Clean { at };
    }
    // 2. Records follow the damage: cutting would drop them.
    if let Some((offset, seq)) = scan.resume {
        return DataEnd::Corrupt {
            at,
            cause: Corruption::ValidFramesResume { offset, seq },
        };
    }
    // 3. A write that stopped part-way leaves each byte of the seq field
    // either unwritten (zero) or as intended (the expected seq).
    let want = expected_seq.to_le_bytes();
    if scan
        .seq_field
        .iter()
        .zip(want)
        .any(|(&got, want)| got != 0 && got != want)
    {
        return DataEnd::Corrupt {
            at,
            cause: Corruption::ForeignSeq {
                found: u64::from_le_bytes(scan.seq_field),
            },
        };
    }
    // 4. Crash debris, where a crash can leave it.
    if may_be_torn {
        DataEnd::TornTail {
            at,
            end: scan.nonzero_end,
        }
    } else {
        DataEnd::Corrupt {
            at,
            cause: Corruption::NotTornable {
                end: scan.nonzero_end,
            },
        }
    }
}

/// Gathers a [`DataScan`] at the scanner's position (where it stopped on a
/// bad frame or the end marker), for a segment whose next frame would have
/// `expected_seq`. Leaves the position unchanged.
pub fn scan_data_end(scan: &mut Scanner, expected_seq: u64) -> Result<DataScan> {
    let at = scan.position();
    let (resume, nonzero_end) = scan.find_valid_after(expected_seq)?;
    let mut seq_field = [0; 8];
    let field_at = at + SEQ_FIELD_AT;
    if field_at < scan.limit() {
        let n = ((scan.limit() - field_at) as usize).min(8);
        scan.peek(field_at, &mut seq_field[..n])?;
    }
    Ok(DataScan {
        at,
        nonzero_end: nonzero_end.max(at),
        resume,
        seq_field,
    })
}

/// The state of a segment's trailer (its first [`TRAILER_BYTES`] bytes)
/// against the trailer its frames imply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealState {
    /// All zero.
    Unsealed,
    /// Exactly the trailer the frames imply.
    Sealed,
    /// Newest segment only: a seal a crash interrupted. Each byte is zero
    /// or the byte the frames imply. (A whole trailer never reaches the disk
    /// ahead of its frames: the engine syncs the frames before writing it.)
    /// Verify notes it; recovery zeroes it.
    TornSeal,
    /// Anything else: verify reports `trailer_mismatch`; recovery refuses.
    Mismatch,
}

impl SealState {
    /// Whether damage after the frames may be a torn tail (given the
    /// segment is the newest).
    pub fn allows_torn_tail(self) -> bool {
        matches!(self, SealState::Unsealed | SealState::TornSeal)
    }
}

/// Classifies the trailer bytes `found` of a segment whose valid frames imply
/// the trailer `implied` (`None`: no records, so no seal can be right). Only
/// the newest segment can have a torn seal.
pub fn classify_seal(
    found: &[u8; TRAILER_BYTES],
    implied: Option<&[u8; TRAILER_BYTES]>,
    newest: bool,
) -> SealState {
    if found.iter().all(|&b| b == 0) {
        return SealState::Unsealed;
    }
    if implied == Some(found) {
        return SealState::Sealed;
    }
    if !newest {
        return SealState::Mismatch;
    }
    match implied {
        Some(implied)
            if found
                .iter()
                .zip(implied)
                .all(|(&got, &want)| got == 0 || got == want) =>
        {
            SealState::TornSeal
        }
        _ => SealState::Mismatch,
    }
}

/// The 8-aligned offsets a cut may start at: multiples of [`FRAME_ALIGN`].
pub const fn is_aligned(offset: u64) -> bool {
    offset % FRAME_ALIGN as u64 == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Timestamp;
    use crate::hash::chain::ChainHash;

    fn scan(at: u64, nonzero_end: u64, resume: Option<(u64, u64)>, seq: [u8; 8]) -> DataScan {
        DataScan {
            at,
            nonzero_end,
            resume,
            seq_field: seq,
        }
    }

    #[test]
    fn data_rules_in_order() {
        let zero = [0; 8];
        assert_eq!(
            classify_data(&scan(200, 200, None, zero), 5, false),
            DataEnd::Clean { at: 200 }
        );
        // Resumption wins over a torn-looking seq field, even when torn tails are allowed.
        assert_eq!(
            classify_data(&scan(200, 900, Some((400, 7)), 5u64.to_le_bytes()), 5, true),
            DataEnd::Corrupt {
                at: 200,
                cause: Corruption::ValidFramesResume {
                    offset: 400,
                    seq: 7
                }
            }
        );
        // Partly written seq field: torn.
        let mut partial = 0x0102_0304_0506_0708u64.to_le_bytes();
        partial[5] = 0;
        assert_eq!(
            classify_data(&scan(200, 300, None, partial), 0x0102_0304_0506_0708, true),
            DataEnd::TornTail { at: 200, end: 300 }
        );
        // Another record's seq: corruption even in the newest segment.
        assert!(matches!(
            classify_data(&scan(200, 300, None, 3u64.to_le_bytes()), 5, true),
            DataEnd::Corrupt {
                cause: Corruption::ForeignSeq { found: 3 },
                ..
            }
        ));
        // Torn-looking debris where none may be.
        assert!(matches!(
            classify_data(&scan(200, 300, None, zero), 5, false),
            DataEnd::Corrupt {
                cause: Corruption::NotTornable { end: 300 },
                ..
            }
        ));
    }

    fn trailer(count: u64, data_end: u64) -> [u8; TRAILER_BYTES] {
        SegmentTrailer {
            record_count: count,
            last_seq: count - 1,
            last_hash: ChainHash([7; 32]),
            min_timestamp: Timestamp::from_unix_nanos(1),
            max_timestamp: Timestamp::from_unix_nanos(2),
            data_end,
            last_received_at: Timestamp::from_unix_nanos(3),
        }
        .encode()
    }

    #[test]
    fn seal_rules() {
        let implied = trailer(3, 400);
        let zero = [0; TRAILER_BYTES];
        assert_eq!(
            classify_seal(&zero, Some(&implied), true),
            SealState::Unsealed
        );
        assert_eq!(
            classify_seal(&implied, Some(&implied), false),
            SealState::Sealed
        );
        // Any prefix, and any scattering, of the implied bytes.
        for cut in 1..TRAILER_BYTES {
            let mut torn = implied;
            torn[cut..].fill(0);
            assert_eq!(
                classify_seal(&torn, Some(&implied), true),
                SealState::TornSeal
            );
            assert_eq!(
                classify_seal(&torn, Some(&implied), false),
                SealState::Mismatch
            );
            let mut scattered = zero;
            scattered[cut] = implied[cut];
            let want = if implied[cut] == 0 {
                SealState::Unsealed
            } else {
                SealState::TornSeal
            };
            assert_eq!(classify_seal(&scattered, Some(&implied), true), want);
        }
        // One byte that is neither: tampering.
        let mut wrong = implied;
        wrong[20] ^= 0x40;
        assert_eq!(
            classify_seal(&wrong, Some(&implied), true),
            SealState::Mismatch
        );
        // A whole seal that counts more or fewer frames than there are is
        // no crash: the engine syncs the frames before it writes the seal.
        for other in [trailer(4, 480), trailer(2, 320)] {
            assert_eq!(
                classify_seal(&other, Some(&implied), true),
                SealState::Mismatch
            );
            assert_eq!(classify_seal(&other, None, true), SealState::Mismatch);
        }
        // No records: nothing can be torn towards.
        let mut stray = zero;
        stray[3] = 1;
        assert_eq!(classify_seal(&stray, None, true), SealState::Mismatch);
    }
}
