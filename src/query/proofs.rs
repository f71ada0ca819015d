//! Inclusion and consistency proofs as returned to a client, and what making
//! them read ([`ProofStats`]) or why it failed ([`ProveError`]).

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::hash::chain::ChainHash;
use crate::hash::merkle::Hash;
use crate::hash::proof::{self, ProofError};

use crate::tiles::TileError;

pub use crate::tiles::ProofStats;

/// A proof request that cannot be answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProveError {
    /// Reading the log failed.
    #[error(transparent)]
    Log(#[from] Error),
    /// The seq or size is not in the log, or the request is inconsistent.
    #[error("{0}")]
    OutOfRange(String),
    /// The proof needs hashes of records that retention deleted.
    #[error("{0}")]
    Unavailable(String),
    /// The log's tree does not match the root or checkpoint given: it was
    /// truncated, rewritten or forked, or it is another log.
    #[error("{0}")]
    Mismatch(String),
}

impl From<TileError> for ProveError {
    fn from(e: TileError) -> Self {
        match e {
            TileError::Unavailable(why) => ProveError::Unavailable(why),
            TileError::Log(e) => ProveError::Log(e),
        }
    }
}

impl From<ProofError<TileError>> for ProveError {
    fn from(e: ProofError<TileError>) -> Self {
        match e {
            ProofError::OutOfRange(why) => ProveError::OutOfRange(why.to_string()),
            ProofError::Source(e) => e.into(),
        }
    }
}

/// Hashes as lowercase hex in JSON.
pub(crate) mod hex_hashes {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::hash::merkle::Hash;

    /// 64 lowercase hex digits.
    pub fn encode(h: &Hash) -> String {
        crate::hash::chain::ChainHash(*h).to_hex()
    }

    /// A hash from 64 hex digits.
    pub fn decode(text: &str) -> Option<Hash> {
        text.parse::<crate::hash::chain::ChainHash>()
            .ok()
            .map(|h| h.0)
    }

    pub fn serialize<S: Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(h))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        decode(&text).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }

    pub mod list {
        use serde::ser::SerializeSeq;
        use serde::{Deserialize, Deserializer, Serializer};

        use crate::hash::merkle::Hash;

        pub fn serialize<S: Serializer>(hashes: &[Hash], s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(hashes.len()))?;
            for h in hashes {
                seq.serialize_element(&super::encode(h))?;
            }
            seq.end()
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
            let texts = Vec::<std::borrow::Cow<'de, str>>::deserialize(d)?;
            texts
                .iter()
                .map(|t| {
                    super::decode(t)
                        .ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
                })
                .collect()
        }
    }
}

pub use hex_hashes::{decode as hash_from_hex, encode as hash_to_hex};

/// Proof that the record at `seq`, whose chain hash is `leaf`, is in the tree
/// of `tree_size` records with root `root` (RFC 6962 audit path, leaf first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    /// The record's seq: its leaf index.
    pub seq: u64,
    /// Records in the tree.
    pub tree_size: u64,
    /// The record's chain hash: the leaf's data.
    pub leaf: ChainHash,
    /// The tree's root.
    #[serde(with = "hex_hashes")]
    pub root: Hash,
    /// The audit path, from the leaf up.
    #[serde(with = "hex_hashes::list")]
    pub proof: Vec<Hash>,
}

impl InclusionProof {
    /// Whether the proof shows `leaf` at `seq` in the tree with `root`.
    pub fn verify(&self) -> bool {
        proof::verify_inclusion(
            &self.leaf.0,
            self.seq,
            self.tree_size,
            &self.proof,
            &self.root,
        )
    }
}

/// Proof that the tree of `new_size` records with root `new_root` extends the
/// tree of `old_size` records with root `old_root` (RFC 6962).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    /// Records in the older tree.
    pub old_size: u64,
    /// Records in the newer tree.
    pub new_size: u64,
    /// The older tree's root.
    #[serde(with = "hex_hashes")]
    pub old_root: Hash,
    /// The newer tree's root.
    #[serde(with = "hex_hashes")]
    pub new_root: Hash,
    /// The proof's hashes.
    #[serde(with = "hex_hashes::list")]
    pub proof: Vec<Hash>,
}

impl ConsistencyProof {
    /// Whether the proof shows the new tree extends the old one.
    pub fn verify(&self) -> bool {
        proof::verify_consistency(
            self.old_size,
            self.new_size,
            &self.old_root,
            &self.new_root,
            &self.proof,
        )
    }
}
