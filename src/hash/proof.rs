//! RFC 6962 / RFC 9162 inclusion and consistency proofs.
//!
//! Generation works over any [`SubtreeSource`], which answers "the root of
//! the perfect subtree of 2^level leaves starting at leaf index × 2^level"
//! (stored tiles, or hashes in memory); verification is pure, with no I/O and
//! no dependency beyond `sha2` (through [`crate::hash::merkle`]), so an auditor's
//! tool can use it alone.

use crate::hash::merkle::{leaf_hash, node_hash, Hash};

/// Where proof generation gets subtree hashes.
pub trait SubtreeSource {
    /// The error reading a hash.
    type Error;
    /// The root of the perfect subtree over leaves
    /// `index << level .. (index + 1) << level`.
    fn subtree(&mut self, level: u8, index: u64) -> Result<Hash, Self::Error>;
}

/// A proof request that cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError<E> {
    /// The leaf or size is out of range.
    #[error("bad proof request: {0}")]
    OutOfRange(&'static str),
    /// The hash source failed.
    #[error("reading tree hashes: {0}")]
    Source(E),
}

/// The largest power of two smaller than `n` (for `n > 1`).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// MTH of leaves `lo..hi` from perfect subtrees.
fn subtree_root<S: SubtreeSource>(src: &mut S, lo: u64, hi: u64) -> Result<Hash, S::Error> {
    let n = hi - lo;
    if n.is_power_of_two() && lo % n == 0 {
        return src.subtree(n.trailing_zeros() as u8, lo / n);
    }
    let k = split(n);
    let left = subtree_root(src, lo, lo + k)?;
    let right = subtree_root(src, lo + k, hi)?;
    Ok(node_hash(&left, &right))
}

/// The root of the tree of `size` leaves.
pub fn tree_root<S: SubtreeSource>(src: &mut S, size: u64) -> Result<Hash, S::Error> {
    if size == 0 {
        return Ok(crate::hash::merkle::empty_root());
    }
    subtree_root(src, 0, size)
}

/// The audit path of leaf `index` in the tree of `size` leaves (RFC 6962
/// `PATH(m, D[n])`), from the leaf upwards.
pub fn inclusion_proof<S: SubtreeSource>(
    src: &mut S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if index >= size {
        return Err(ProofError::OutOfRange("the leaf is not in the tree"));
    }
    let mut proof = Vec::new();
    path(src, index, 0, size, &mut proof).map_err(ProofError::Source)?;
    Ok(proof)
}

fn path<S: SubtreeSource>(
    src: &mut S,
    m: u64,
    lo: u64,
    hi: u64,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = hi - lo;
    if n <= 1 {
        return Ok(());
    }
    let k = split(n);
    if m - lo < k {
        path(src, m, lo, lo + k, out)?;
        out.push(subtree_root(src, lo + k, hi)?);
    } else {
        path(src, m, lo + k, hi, out)?;
        out.push(subtree_root(src, lo, lo + k)?);
    }
    Ok(())
}

/// The consistency proof from the tree of `old` leaves to the tree of `new`
/// leaves (RFC 6962 `PROOF(m, D[n])`).
pub fn consistency_proof<S: SubtreeSource>(
    src: &mut S,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if old > new {
        return Err(ProofError::OutOfRange(
            "the old size is larger than the new",
        ));
    }
    let mut proof = Vec::new();
    if old == 0 || old == new {
        return Ok(proof);
    }
    subproof(src, old, 0, new, true, &mut proof).map_err(ProofError::Source)?;
    Ok(proof)
}

fn subproof<S: SubtreeSource>(
    src: &mut S,
    m: u64,
    lo: u64,
    hi: u64,
    whole: bool,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = hi - lo;
    if m == n {
        if !whole {
            out.push(subtree_root(src, lo, hi)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(src, m, lo, lo + k, whole, out)?;
        out.push(subtree_root(src, lo + k, hi)?);
    } else {
        subproof(src, m - k, lo + k, hi, false, out)?;
        out.push(subtree_root(src, lo, lo + k)?);
    }
    Ok(())
}

/// Checks that the leaf with data `leaf_data` is at `index` in the tree of
/// `size` leaves with root `root` (RFC 9162, section 2.1.3.2).
pub fn verify_inclusion(
    leaf_data: &[u8],
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf_hash(leaf_data);
    for p in proof {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && &r == root
}

/// Checks that the tree of `new_size` leaves with root `new_root` extends the
/// tree of `old_size` leaves with root `old_root` (RFC 9162, section 2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        return proof.is_empty();
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut f, mut s) = (old_size - 1, new_size - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && &fr == old_root && &sr == new_root
}

/// Subtree hashes computed from leaf data held in memory (for tests and
/// small trees).
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    /// `levels[l][i]` is the root of the perfect subtree at level `l`, index `i`.
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    /// A tree over `leaves` (each leaf's data, hashed as an RFC 6962 leaf).
    pub fn new<D: AsRef<[u8]>>(leaves: &[D]) -> Self {
        let mut tree = MemoryTree::default();
        for leaf in leaves {
            tree.push(leaf.as_ref());
        }
        tree
    }

    /// Appends a leaf.
    pub fn push(&mut self, data: &[u8]) {
        let mut hash = leaf_hash(data);
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(hash);
            let row = &self.levels[level];
            if row.len() % 2 == 1 {
                break;
            }
            hash = node_hash(&row[row.len() - 2], &row[row.len() - 1]);
            level += 1;
        }
    }

    /// Leaves in the tree.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }
}

/// A subtree the tree does not have yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no subtree at level {level}, index {index}")]
pub struct MissingSubtree {
    /// The level.
    pub level: u8,
    /// The index.
    pub index: u64,
}

impl SubtreeSource for MemoryTree {
    type Error = MissingSubtree;
    fn subtree(&mut self, level: u8, index: u64) -> Result<Hash, MissingSubtree> {
        self.levels
            .get(usize::from(level))
            .and_then(|row| row.get(index as usize))
            .copied()
            .ok_or(MissingSubtree { level, index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::merkle::tests::{hex, rfc_leaves};

    #[test]
    fn rfc6962_inclusion_vectors() {
        // From the Certificate Transparency reference tests (leaf, size, path).
        let mut tree = MemoryTree::new(&rfc_leaves());
        let cases: [(u64, u64, &[&str]); 4] = [
            (0, 1, &[]),
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
        ];
        for (leaf, size, want) in cases {
            let proof = inclusion_proof(&mut tree, leaf, size).unwrap();
            assert_eq!(
                proof.iter().map(hex).collect::<Vec<_>>(),
                want,
                "leaf {leaf} of {size}"
            );
            let root = tree_root(&mut tree, size).unwrap();
            assert!(verify_inclusion(
                &rfc_leaves()[leaf as usize],
                leaf,
                size,
                &proof,
                &root
            ));
        }
    }

    #[test]
    fn rfc6962_consistency_vectors() {
        let mut tree = MemoryTree::new(&rfc_leaves());
        let cases: [(u64, u64, &[&str]); 3] = [
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (old, new, want) in cases {
            let proof = consistency_proof(&mut tree, old, new).unwrap();
            assert_eq!(
                proof.iter().map(hex).collect::<Vec<_>>(),
                want,
                "{old} -> {new}"
            );
            let (a, b) = (
                tree_root(&mut tree, old).unwrap(),
                tree_root(&mut tree, new).unwrap(),
            );
            assert!(verify_consistency(old, new, &a, &b, &proof));
        }
    }

    #[test]
    fn every_proof_in_small_trees_verifies_and_tampering_fails() {
        let leaves: Vec<Vec<u8>> = (0..40u32).map(|i| i.to_le_bytes().to_vec()).collect();
        let mut tree = MemoryTree::new(&leaves);
        for size in 1..=40u64 {
            let root = tree_root(&mut tree, size).unwrap();
            for leaf in 0..size {
                let proof = inclusion_proof(&mut tree, leaf, size).unwrap();
                assert!(verify_inclusion(
                    &leaves[leaf as usize],
                    leaf,
                    size,
                    &proof,
                    &root
                ));
                assert!(!verify_inclusion(
                    &leaves[(leaf as usize + 1) % 40],
                    leaf,
                    size,
                    &proof,
                    &root
                ));
                if leaf + 1 < size {
                    assert!(!verify_inclusion(
                        &leaves[leaf as usize],
                        leaf + 1,
                        size,
                        &proof,
                        &root
                    ));
                }
                if let Some(first) = proof.first() {
                    let mut bad = proof.clone();
                    bad[0] = node_hash(first, first);
                    assert!(!verify_inclusion(
                        &leaves[leaf as usize],
                        leaf,
                        size,
                        &bad,
                        &root
                    ));
                }
            }
            for old in 0..=size {
                let old_root = tree_root(&mut tree, old).unwrap();
                let proof = consistency_proof(&mut tree, old, size).unwrap();
                assert!(
                    verify_consistency(old, size, &old_root, &root, &proof),
                    "{old} -> {size}"
                );
                if old > 0 && old < size {
                    assert!(!verify_consistency(old, size, &root, &root, &proof));
                    let mut bad = proof.clone();
                    bad.pop();
                    assert!(!verify_consistency(old, size, &old_root, &root, &bad));
                }
            }
        }
        assert!(inclusion_proof(&mut tree, 40, 40).is_err());
        assert!(consistency_proof(&mut tree, 5, 4).is_err());
    }
}
