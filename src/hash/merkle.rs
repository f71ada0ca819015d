//! RFC 6962 Merkle tree hashing over the records' chain hashes.
//!
//! Leaf `i` of the tree is the chain hash of the record with seq `i`:
//! `leaf = SHA-256(0x00 || chain_hash)`, `node = SHA-256(0x01 || left || right)`,
//! and the tree over `n` leaves is RFC 6962's Merkle Tree Hash (the left
//! subtree holds the largest power of two smaller than `n`). This module has
//! no I/O and depends only on `sha2`, so an auditor's tool can use it alone.
//!
//! A [`Frontier`] is the tree's right edge: the roots of the perfect subtrees
//! that make up a tree of `n` leaves, one per set bit of `n`, at most 64
//! hashes. It is all that is needed to append more leaves and to compute the
//! root, which is why segment trailers store it: a checkpoint then hashes only
//! the records after the last sealed segment, and retention can delete old
//! segments without losing the tree.

use sha2::{Digest, Sha256};

/// A 32-byte tree hash.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The right edge of a Merkle tree: enough to extend it and to compute its root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Subtree roots, largest (leftmost) first; `hashes.len() == size.count_ones()`.
    hashes: Vec<Hash>,
}

/// A frontier whose hash count does not match its size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a frontier of size {size} needs {expected} hashes, not {got}")]
pub struct BadFrontier {
    /// The tree size.
    pub size: u64,
    /// Hashes a frontier of that size has.
    pub expected: u32,
    /// Hashes given.
    pub got: usize,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Frontier::default()
    }

    /// Rebuilds a frontier from its parts (as stored in a trailer).
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Result<Self, BadFrontier> {
        if hashes.len() != size.count_ones() as usize {
            return Err(BadFrontier {
                size,
                expected: size.count_ones(),
                got: hashes.len(),
            });
        }
        Ok(Frontier { size, hashes })
    }

    /// Leaves in the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The subtree roots, leftmost (largest) first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Appends a leaf whose data is `data` (a chain hash).
    pub fn push(&mut self, data: &[u8]) {
        self.push_with(data, |_, _| {});
    }

    /// Appends a leaf like [`Frontier::push`], and calls `completed(height,
    /// hash)` for each subtree the leaf completes, smallest first: the leaf
    /// hash itself (height 0), then each node its carries make. Over a run
    /// of pushes this yields every node of the tree exactly once, in order
    /// within each height: the node with index `i` at height `h` (leaves
    /// `i·2^h ..` up to `(i+1)·2^h`) when its last leaf is pushed.
    pub fn push_with(&mut self, data: &[u8], mut completed: impl FnMut(u32, &Hash)) {
        let mut hash = leaf_hash(data);
        completed(0, &hash);
        // Merging follows the carries of size + 1: one per trailing one bit.
        let mut size = self.size;
        let mut height = 0;
        while size & 1 == 1 {
            if let Some(left) = self.hashes.pop() {
                hash = node_hash(&left, &hash);
            }
            height += 1;
            completed(height, &hash);
            size >>= 1;
        }
        self.hashes.push(hash);
        self.size += 1;
    }

    /// The RFC 6962 Merkle Tree Hash of the leaves so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.hashes.iter().rev();
        let Some(mut acc) = iter.next().copied() else {
            return empty_root();
        };
        for left in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The leaf inputs of the Certificate Transparency reference tests.
    pub(crate) fn rfc_leaves() -> Vec<Vec<u8>> {
        vec![
            vec![],
            vec![0x00],
            vec![0x10],
            vec![0x20, 0x21],
            vec![0x30, 0x31],
            vec![0x40, 0x41, 0x42, 0x43],
            vec![0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
            (0x60..=0x6f).collect(),
        ]
    }

    pub(crate) fn hex(h: &Hash) -> String {
        h.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// RFC 6962 reference: MTH by recursion over the leaf data.
    fn mth(leaves: &[Vec<u8>]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaf_hash(&leaves[0]),
            n => {
                let k = 1 << (usize::BITS - (n - 1).leading_zeros() - 1);
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn rfc6962_test_vectors() {
        // The inputs and roots of the Certificate Transparency reference tests.
        let leaves = rfc_leaves();
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        assert_eq!(
            hex(&empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut f = Frontier::new();
        for (i, leaf) in leaves.iter().enumerate() {
            f.push(leaf);
            assert_eq!(hex(&f.root()), roots[i], "tree of {} leaves", i + 1);
            assert_eq!(f.hashes().len(), f.size().count_ones() as usize);
        }
    }

    #[test]
    fn frontier_matches_the_recursive_definition() {
        let leaves: Vec<Vec<u8>> = (0..300u32).map(|i| i.to_le_bytes().to_vec()).collect();
        let mut f = Frontier::new();
        for n in 1..=leaves.len() {
            f.push(&leaves[n - 1]);
            assert_eq!(f.root(), mth(&leaves[..n]), "n = {n}");
        }
        let again = Frontier::from_parts(f.size(), f.hashes().to_vec()).unwrap();
        assert_eq!(again, f);
        assert!(Frontier::from_parts(3, vec![[0; 32]]).is_err());
    }

    #[test]
    fn push_with_reports_every_node_once_in_order() {
        let leaves: Vec<Vec<u8>> = (0..300u32).map(|i| i.to_le_bytes().to_vec()).collect();
        // Start in the middle, from a frontier, as a segment does.
        let start = 77;
        let mut f = Frontier::new();
        for leaf in &leaves[..start] {
            f.push(leaf);
        }
        let mut by_height: Vec<Vec<Hash>> = vec![Vec::new(); 10];
        for leaf in &leaves[start..] {
            f.push_with(leaf, |h, hash| by_height[h as usize].push(*hash));
        }
        for (h, got) in by_height.iter().enumerate() {
            let first = start >> h;
            let end = leaves.len() >> h;
            let want: Vec<Hash> = (first..end)
                .map(|i| mth(&leaves[i << h..(i + 1) << h]))
                .collect();
            assert_eq!(got, &want, "height {h}");
        }
    }

    #[test]
    fn a_frontier_rebuilt_from_parts_is_the_same() {
        let mut f = Frontier::new();
        for i in 0..300u32 {
            f.push(&i.to_le_bytes());
        }
        let again = Frontier::from_parts(f.size(), f.hashes().to_vec()).unwrap();
        assert_eq!(again, f);
        assert!(Frontier::from_parts(3, vec![[0; 32]]).is_err());
    }
}
