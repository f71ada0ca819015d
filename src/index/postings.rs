//! The posting lists of one field while an index is built: value bytes to
//! the blocks holding them.
//!
//! The verifier adds three values for every record it reads, so this is a
//! small open-addressing table rather than a `HashMap<Vec<u8>, _>`: each
//! value's 64-bit hash and first [`HEAD_BYTES`] bytes are kept beside it
//! and compared first, so that a short value (most actors, event types and
//! nodes) is matched without reading memory elsewhere, and longer bytes are
//! compared inline (a call to `memcmp` cost more than the comparison). The hash is foldhash, randomly seeded per
//! table, so a log cannot be written to make its values collide.

use std::hash::BuildHasher;

/// Bytes of a value kept in its table entry.
const HEAD_BYTES: usize = 16;

/// One distinct value and its blocks, in ascending order without repeats.
#[derive(Debug, Clone)]
struct Entry {
    hash: u64,
    /// The last of `blocks`, kept here so that a value seen again in the
    /// same block touches no other memory.
    last_block: u32,
    /// The value's first bytes, zero-padded ([`head_of`]).
    head: [u8; HEAD_BYTES],
    value: Box<[u8]>,
    blocks: Vec<u32>,
}

/// Value bytes to the (ascending) blocks that hold them.
#[derive(Debug, Clone, Default)]
pub(super) struct Postings {
    state: foldhash::fast::RandomState,
    /// Open addressing, linear probing: 0 is empty, else 1 + an index
    /// into `entries`. A power of two long, at most half full.
    slots: Vec<u32>,
    entries: Vec<Entry>,
}

impl Postings {
    /// Notes that `block` holds `value`. Blocks are added in ascending
    /// order; a block already noted for the value is not noted twice.
    pub(super) fn add(&mut self, value: &[u8], block: u32) {
        let hash = self.state.hash_one(value);
        let head = head_of(value);
        if (self.entries.len() + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = slot_of(hash, mask);
        loop {
            match self.slots[i] {
                0 => {
                    // Fewer entries than records, and a segment holds fewer
                    // than 2^32 records.
                    self.slots[i] = self.entries.len() as u32 + 1;
                    self.entries.push(Entry {
                        hash,
                        last_block: block,
                        head,
                        value: value.into(),
                        blocks: vec![block],
                    });
                    return;
                }
                n => {
                    let entry = &mut self.entries[n as usize - 1];
                    let same = entry.hash == hash
                        && entry.value.len() == value.len()
                        && entry.head == head
                        && (value.len() <= HEAD_BYTES
                            || same_bytes(&entry.value[HEAD_BYTES..], &value[HEAD_BYTES..]));
                    if same {
                        if entry.last_block != block {
                            entry.last_block = block;
                            entry.blocks.push(block);
                        }
                        return;
                    }
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Doubles the slots (16 at first) and places the entries again.
    fn grow(&mut self) {
        let len = (self.slots.len() * 2).max(16);
        let mask = len - 1;
        let mut slots = vec![0u32; len];
        for (n, entry) in self.entries.iter().enumerate() {
            let mut i = slot_of(entry.hash, mask);
            while slots[i] != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = n as u32 + 1;
        }
        self.slots = slots;
    }

    /// Each value and its blocks, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u32])> {
        self.entries.iter().map(|e| (&e.value[..], &e.blocks[..]))
    }
}

/// The first slot to probe for `hash` in a table of `mask + 1` slots: its
/// top bits after a Fibonacci multiply, so that every bit of the hash counts.
fn slot_of(hash: u64, mask: usize) -> usize {
    let bits = mask.count_ones();
    if bits == 0 {
        return 0;
    }
    (hash.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
}

/// The first [`HEAD_BYTES`] of `value`, zero-padded.
fn head_of(value: &[u8]) -> [u8; HEAD_BYTES] {
    let mut head = [0; HEAD_BYTES];
    let n = value.len().min(HEAD_BYTES);
    head[..n].copy_from_slice(&value[..n]);
    head
}

/// `a == b`, comparing eight bytes at a time inline.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut wa, mut wb) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut wa).zip(&mut wb) {
        if x.first_chunk::<8>() != y.first_chunk::<8>() {
            return false;
        }
    }
    wa.remainder()
        .iter()
        .zip(wb.remainder())
        .all(|(x, y)| x == y)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::{same_bytes, Postings};

    /// Values that share their kept head differ by the rest.
    #[test]
    fn values_with_the_same_head_stay_apart() {
        let mut table = Postings::default();
        let long = |tail: &str| format!("{}{tail}", "a".repeat(16)).into_bytes();
        for (value, block) in [
            (long("x"), 0),
            (long("y"), 1),
            (long("x"), 2),
            (long(""), 2),
            (long("xy"), 3),
            (b"a".to_vec(), 3),
        ] {
            table.add(&value, block);
        }
        let mut got: Vec<(Vec<u8>, Vec<u32>)> = table
            .iter()
            .map(|(v, b)| (v.to_vec(), b.to_vec()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (b"a".to_vec(), vec![3]),
                (long(""), vec![2]),
                (long("x"), vec![0, 2]),
                (long("xy"), vec![3]),
                (long("y"), vec![1]),
            ]
        );
    }

    proptest! {
        /// The table holds what a map of value to blocks holds.
        #[test]
        fn postings_match_a_simple_map(
            adds in prop::collection::vec((prop::collection::vec(0..3u8, 0..40), 0..3u32), 0..400)
        ) {
            let mut table = Postings::default();
            let mut model: BTreeMap<Vec<u8>, Vec<u32>> = BTreeMap::new();
            let mut block = 0;
            for (value, step) in adds {
                block += step;
                table.add(&value, block);
                let list = model.entry(value).or_default();
                if list.last() != Some(&block) {
                    list.push(block);
                }
            }
            let got: BTreeMap<Vec<u8>, Vec<u32>> =
                table.iter().map(|(v, b)| (v.to_vec(), b.to_vec())).collect();
            prop_assert_eq!(got.len(), table.iter().count(), "a value appears twice");
            prop_assert_eq!(got, model);
        }

        #[test]
        fn same_bytes_is_equality(
            a in prop::collection::vec(0..3u8, 0..40),
            b in prop::collection::vec(0..3u8, 0..40),
        ) {
            prop_assert_eq!(same_bytes(&a, &b), a == b);
            prop_assert!(same_bytes(&a, &a.clone()));
        }
    }
}
