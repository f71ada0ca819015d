//! The SHA-256 hash chain.
//!
//! `genesis = SHA-256("chainlog/genesis/v1" || 0x00 || log_id)` and
//! `hash(seq) = SHA-256("chainlog/record/v1" || 0x00 || hash(seq - 1) || seq as u64 LE || record bytes)`,
//! where the record at the log's first seq chains from the genesis hash. The
//! domain tags keep a record hash from ever equalling a genesis hash, and the
//! random log id keeps two logs from sharing a chain.

use std::fmt;
use std::str::FromStr;

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

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
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
    fn hex_round_trip() {
        let h = ChainHash::genesis(&LogId([9; 16]));
        assert_eq!(h.to_hex().parse::<ChainHash>(), Ok(h));
        assert_eq!("zz".parse::<ChainHash>(), Err(BadHex));
        assert_eq!("g".repeat(64).parse::<ChainHash>(), Err(BadHex));
    }
}
