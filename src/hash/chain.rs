//! The SHA-256 hash chain.
//!
//! `genesis = SHA-256("chainlog/genesis/v1" || 0x00 || log_id)` and
//! `hash(seq) = SHA-256("chainlog/record/v1" || 0x00 || hash(seq - 1) || seq as u64 LE || record bytes)`,
//! where the record at the log's first seq chains from the genesis hash. The
//! domain tags keep a record hash from ever equalling a genesis hash, and the
//! random log id keeps two logs from sharing a chain.

use std::fmt;
use std::str::FromStr;

use sha2::digest::consts::U64;
use sha2::digest::generic_array::GenericArray;
use sha2::{Digest, Sha256};

/// Domain tag for the genesis hash (followed by one zero byte).
pub const GENESIS_TAG: &[u8] = b"chainlog/genesis/v1\0";
/// Domain tag for a record hash (followed by one zero byte).
pub const RECORD_TAG: &[u8] = b"chainlog/record/v1\0";

/// A log's random 16-byte identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogId(pub [u8; 16]);

impl LogId {
    /// A fresh random id from the operating system's generator.
    pub fn random() -> std::io::Result<Self> {
        let mut id = [0; 16];
        getrandom::getrandom(&mut id).map_err(std::io::Error::from)?;
        Ok(LogId(id))
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LogId({self})")
    }
}

/// A SHA-256 chain hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ChainHash(pub [u8; 32]);

impl ChainHash {
    /// The hash the first record of the log with `log_id` chains from.
    pub fn genesis(log_id: &LogId) -> Self {
        let mut h = Sha256::new();
        h.update(GENESIS_TAG);
        h.update(log_id.0);
        ChainHash(h.finalize().into())
    }

    /// The hash of the record at `seq` with stored bytes `record`, chained
    /// from `self` (the previous record's hash).
    pub fn next(&self, seq: u64, record: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(RECORD_TAG);
        h.update(self.0);
        h.update(seq.to_le_bytes());
        h.update(record);
        ChainHash(h.finalize().into())
    }

    /// [`ChainHash::next`] for two records at once: `a` is `(prev, seq,
    /// record)` and so is `b`. The verifier checks each record against the
    /// stored hash before it, so consecutive records are independent; their
    /// SHA-256 blocks are interleaved, which keeps the CPU's SHA unit busier
    /// than one chain of dependent blocks does.
    pub fn next_pair(a: (&ChainHash, u64, &[u8]), b: (&ChainHash, u64, &[u8])) -> (Self, Self) {
        let a = StepMessage::new(a.0, a.1, a.2);
        let b = StepMessage::new(b.0, b.1, b.2);
        let mut state_a = SHA256_IV;
        let mut state_b = SHA256_IV;
        for i in 0..a.blocks().max(b.blocks()) {
            if let Some(block) = a.block(i) {
                sha2::compress256(&mut state_a, std::slice::from_ref(block));
            }
            if let Some(block) = b.block(i) {
                sha2::compress256(&mut state_b, std::slice::from_ref(block));
            }
        }
        (digest_of(&state_a), digest_of(&state_b))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

type Block = GenericArray<u8, U64>;

/// The bytes before the record in a chain step: tag, previous hash, seq.
const STEP_PREFIX_BYTES: usize = RECORD_TAG.len() + 32 + 8;

/// The padded SHA-256 message of one chain step,
/// `RECORD_TAG || prev || seq || record || padding`, as 64-byte blocks: a
/// first block with the prefix, the record's whole blocks in place, and one
/// or two last blocks with the rest of the record and the padding.
struct StepMessage<'a> {
    /// Whether the message has a first block of its own (it does unless it
    /// is shorter than one block).
    first: Option<Block>,
    /// Record bytes that fill whole blocks, read in place.
    middle: &'a [u8],
    /// The last one or two blocks.
    last: [u8; 128],
    last_blocks: usize,
}

impl<'a> StepMessage<'a> {
    fn new(prev: &ChainHash, seq: u64, record: &'a [u8]) -> Self {
        let mut prefix = [0; STEP_PREFIX_BYTES];
        prefix[..RECORD_TAG.len()].copy_from_slice(RECORD_TAG);
        prefix[RECORD_TAG.len()..RECORD_TAG.len() + 32].copy_from_slice(&prev.0);
        prefix[RECORD_TAG.len() + 32..].copy_from_slice(&seq.to_le_bytes());
        let message_len = STEP_PREFIX_BYTES + record.len();
        let mut last = [0; 128];
        let (first, middle, rest) = match record.split_at_checked(64 - STEP_PREFIX_BYTES) {
            Some((head, tail)) => {
                let mut first = Block::default();
                first[..STEP_PREFIX_BYTES].copy_from_slice(&prefix);
                first[STEP_PREFIX_BYTES..].copy_from_slice(head);
                let (middle, rest) = tail.split_at(tail.len() / 64 * 64);
                last[..rest.len()].copy_from_slice(rest);
                (Some(first), middle, rest.len())
            }
            None => {
                last[..STEP_PREFIX_BYTES].copy_from_slice(&prefix);
                last[STEP_PREFIX_BYTES..message_len].copy_from_slice(record);
                (None, &record[..0], message_len)
            }
        };
        // Padding: 0x80, zeros, then the length in bits, big-endian.
        last[rest] = 0x80;
        let last_blocks = if rest + 9 <= 64 { 1 } else { 2 };
        let bits = (message_len as u64) * 8;
        last[last_blocks * 64 - 8..last_blocks * 64].copy_from_slice(&bits.to_be_bytes());
        StepMessage {
            first,
            middle,
            last,
            last_blocks,
        }
    }

    fn blocks(&self) -> usize {
        usize::from(self.first.is_some()) + self.middle.len() / 64 + self.last_blocks
    }

    fn block(&self, i: usize) -> Option<&Block> {
        let i = match &self.first {
            Some(first) if i == 0 => return Some(first),
            Some(_) => i - 1,
            None => i,
        };
        let middle_blocks = self.middle.len() / 64;
        let bytes = if i < middle_blocks {
            &self.middle[i * 64..][..64]
        } else if i - middle_blocks < self.last_blocks {
            &self.last[(i - middle_blocks) * 64..][..64]
        } else {
            return None;
        };
        Some(Block::from_slice(bytes))
    }
}

/// The digest of a final SHA-256 state: its words, big-endian.
fn digest_of(state: &[u32; 8]) -> ChainHash {
    let mut out = [0; 32];
    for (bytes, word) in out.chunks_exact_mut(4).zip(state) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    ChainHash(out)
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({self})")
    }
}

/// The text is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected 64 hex digits")]
pub struct BadHex;

impl FromStr for ChainHash {
    type Err = BadHex;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(BadHex);
        }
        let mut out = [0; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or(BadHex)?;
            let lo = hex_value(pair[1]).ok_or(BadHex)?;
            out[i] = hi << 4 | lo;
        }
        Ok(ChainHash(out))
    }
}

impl serde::Serialize for ChainHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ChainHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    // Hashes are formatted for every exported row: a table beats `write!` per byte.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 64];
    for (pair, b) in buf.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
    let len = (bytes.len() * 2).min(buf.len());
    f.write_str(std::str::from_utf8(&buf[..len]).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // Computed independently with Python's hashlib:
        // sha256(b"chainlog/genesis/v1\0" + bytes(16)), then
        // sha256(b"chainlog/record/v1\0" + genesis + (7).to_bytes(8, "little") + b"abc").
        let genesis = ChainHash::genesis(&LogId([0; 16]));
        assert_eq!(
            genesis.to_hex(),
            "c69751f80ee3f7c84c03a6aa0558b8a22c82360bbea3e2157847d6d5442e0611"
        );
        assert_eq!(
            genesis.next(7, b"abc").to_hex(),
            "b277c6a0c8cd5b99140f6eeafcbc76b8fde53aab66c08fb4030e45a37b4a44b0"
        );
    }

    #[test]
    fn every_input_changes_the_hash() {
        let g = ChainHash::genesis(&LogId([1; 16]));
        assert_ne!(g, ChainHash::genesis(&LogId([2; 16])));
        let base = g.next(1, b"record");
        assert_ne!(base, g.next(2, b"record"));
        assert_ne!(base, g.next(1, b"recorD"));
        assert_ne!(base, ChainHash([0; 32]).next(1, b"record"));
    }

    #[test]
    fn next_pair_matches_next() {
        // Every record length across the block boundaries (the 59-byte
        // prefix, the 9 bytes of padding), and the largest record, paired
        // with shorter, equal and longer ones.
        let bytes: Vec<u8> = (0..crate::limits::MAX_RECORD_BYTES + 8)
            .map(|i| (i * 131 % 251) as u8)
            .collect();
        let mut lens: Vec<usize> = (0..=300).collect();
        lens.extend([1000, 4096 + 7, crate::limits::MAX_RECORD_BYTES]);
        let a_prev = ChainHash::genesis(&LogId([4; 16]));
        let b_prev = ChainHash([0xa5; 32]);
        for (k, &len) in lens.iter().enumerate() {
            for other in [0, 5, 64, 250, len.saturating_sub(1), len, len + 1] {
                let a = &bytes[..len];
                let b = &bytes[3..3 + other];
                let seq = 1_000 + k as u64;
                let (ha, hb) = ChainHash::next_pair((&a_prev, seq, a), (&b_prev, u64::MAX, b));
                assert_eq!(ha, a_prev.next(seq, a), "len {len}");
                assert_eq!(hb, b_prev.next(u64::MAX, b), "len {other}");
            }
        }
    }

    #[test]
    fn hex_round_trip() {
        let h = ChainHash::genesis(&LogId([9; 16]));
        assert_eq!(h.to_hex().parse::<ChainHash>(), Ok(h));
        assert_eq!("zz".parse::<ChainHash>(), Err(BadHex));
        assert_eq!("g".repeat(64).parse::<ChainHash>(), Err(BadHex));
    }
}
