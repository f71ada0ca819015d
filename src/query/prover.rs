//! Proofs over a live log: [`Prover`] reads the tree's tiles, checks every
//! proof against a trusted root and repairs the tiles it used when the check
//! fails. See [`crate::tiles`] for the sources it reads.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::format::segment::{self, Scanner, Step, HEADER_BYTES};
use crate::hash::chain::ChainHash;
use crate::hash::checkpoint::Checkpoint;
use crate::hash::merkle::{leaf_hash, node_hash, Hash};
use crate::hash::proof::{self, SubtreeSource};

use crate::log::{Log, Snapshot, TreeHead};
use crate::query::proofs::{hash_to_hex, ConsistencyProof, InclusionProof, ProveError};
use crate::tiles::store::TileStore;
use crate::tiles::{frontier_map, ProofStats, TileError, TILE_HEIGHT, TILE_WIDTH};

/// The active segment's records, hashed in memory: the part of the tree the
/// tiles do not cover yet.
pub(crate) struct ActiveTree {
    /// Seq of its first record (the active segment's base).
    pub(crate) start: u64,
    pub(crate) chain: Vec<ChainHash>,
    /// `levels[l][i - first(l)]`: the perfect subtree at level `l`, index `i`,
    /// for those inside `start..start + chain.len()`.
    pub(crate) levels: Vec<Vec<Hash>>,
}

impl ActiveTree {
    pub(crate) fn first_index(&self, level: u8) -> u64 {
        let size = 1u128 << level;
        ((u128::from(self.start) + size - 1) >> level) as u64
    }

    pub(crate) fn new(start: u64, chain: Vec<ChainHash>) -> Self {
        let mut tree = ActiveTree {
            start,
            levels: vec![chain.iter().map(|h| leaf_hash(&h.0)).collect()],
            chain,
        };
        let end = u128::from(start) + tree.chain.len() as u128;
        for level in 1..64u8 {
            let first = tree.first_index(level);
            let last = (end >> level) as u64; // exclusive
            if first >= last {
                break;
            }
            let below_first = tree.first_index(level - 1);
            let below = &tree.levels[usize::from(level - 1)];
            let row: Vec<Hash> = (first..last)
                .map(|i| {
                    let l = (2 * i - below_first) as usize;
                    node_hash(&below[l], &below[l + 1])
                })
                .collect();
            tree.levels.push(row);
        }
        tree
    }

    pub(crate) fn subtree(&self, level: u8, index: u64) -> Option<Hash> {
        let first = self.first_index(level);
        let row = self.levels.get(usize::from(level))?;
        row.get(usize::try_from(index.checked_sub(first)?).ok()?)
            .copied()
    }
}

/// A perfect subtree from the active segment's link block and records
/// alone (`None` if it needs anything else).
pub(crate) fn edge_subtree(
    frontier_sealed: &HashMap<(u8, u64), Hash>,
    active: &ActiveTree,
    sealed_end: u64,
    level: u8,
    index: u64,
) -> Option<Hash> {
    let lo = u128::from(index) << level;
    let hi = lo + (1u128 << level);
    if lo >= u128::from(sealed_end) {
        active.subtree(level, index)
    } else if hi <= u128::from(sealed_end) {
        frontier_sealed.get(&(level, index)).copied()
    } else {
        let left = edge_subtree(frontier_sealed, active, sealed_end, level - 1, 2 * index)?;
        let right = edge_subtree(
            frontier_sealed,
            active,
            sealed_end,
            level - 1,
            2 * index + 1,
        )?;
        Some(node_hash(&left, &right))
    }
}

/// Generates inclusion and consistency proofs for one view of a log, from
/// its tiles; see the module docs. Get one from [`Log::prover`] and keep it
/// for many proofs (a bundle): tiles read are cached.
pub struct Prover {
    pub(crate) log_id: crate::hash::chain::LogId,
    /// Records in this view of the log.
    pub(crate) size: u64,
    pub(crate) root: Hash,
    pub(crate) head: Option<ChainHash>,
    /// The active segment's base: tiles cover the records before it.
    pub(crate) sealed_end: u64,
    /// The active segment's `prev_hash`.
    pub(crate) active_prev: ChainHash,
    pub(crate) first_seq: u64,
    pub(crate) frontier_sealed: HashMap<(u8, u64), Hash>,
    pub(crate) frontier_first: HashMap<(u8, u64), Hash>,
    pub(crate) active: ActiveTree,
    pub(crate) store: TileStore,
    /// Roots checked against this log: `(size, root)`.
    pub(crate) checked_roots: HashSet<(u64, Hash)>,
}

impl std::fmt::Debug for Prover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prover")
            .field("log_id", &self.log_id)
            .field("size", &self.size)
            .field("sealed_end", &self.sealed_end)
            .field("first_seq", &self.first_seq)
            .finish()
    }
}

impl Prover {
    pub(crate) fn new(snap: Snapshot, log_id: crate::hash::chain::LogId) -> Result<Self> {
        let (storage, dir) = (snap.storage.clone(), snap.dir.clone());
        let sealed_end = snap.active_base;
        let (name, file) = segment::open_for_reading(&*storage, &dir, sealed_end)?;
        let header = segment::read_header(&*file, &name)?;
        let start_frontier = segment::read_start_frontier(&*file, &name, &header)?;
        // The active segment's records, as `Log::tree_head` reads them.
        let mut chain = Vec::new();
        let mut scan = Scanner::new(file.clone(), &name, HEADER_BYTES, snap.active_end);
        loop {
            match scan.next_step()? {
                Step::Frame { offset, frame } => {
                    let expected = sealed_end + chain.len() as u64;
                    if frame.seq != expected {
                        return Err(Error::Corrupted {
                            file: name,
                            offset,
                            reason: format!("frame has seq {}, expected {expected}", frame.seq),
                        });
                    }
                    chain.push(frame.hash);
                }
                Step::End { .. } => break,
                Step::Bad { offset, error } => {
                    return Err(Error::Corrupted {
                        file: name,
                        offset,
                        reason: error.to_string(),
                    })
                }
            }
        }
        let covered = sealed_end + chain.len() as u64;
        if covered != snap.next_seq {
            return Err(Error::Corrupted {
                file: name,
                offset: snap.active_end,
                reason: format!(
                    "the tree covers {covered} records, the log has {}",
                    snap.next_seq
                ),
            });
        }
        let frontier_sealed = frontier_map(&start_frontier);
        let active = ActiveTree::new(sealed_end, chain);
        // The current root from the link block and the active segment's
        // records alone, as `Log::tree_head` computes it: each subtree of the
        // tree's decomposition is one of the link block's, or in the active
        // segment, or the node hash of two such halves.
        let mut parts = Vec::new();
        for level in (0..64u8).rev() {
            if (snap.next_seq >> level) & 1 == 1 {
                let index = (snap.next_seq >> level) - 1;
                let part = edge_subtree(&frontier_sealed, &active, sealed_end, level, index)
                    .ok_or_else(|| Error::Corrupted {
                        file: name.clone(),
                        offset: 0,
                        reason: "the link block does not cover the tree".into(),
                    })?;
                parts.push(part);
            }
        }
        let root = match parts.split_last() {
            None => crate::hash::merkle::empty_root(),
            Some((last, rest)) => rest
                .iter()
                .rev()
                .fold(*last, |acc, left| node_hash(left, &acc)),
        };
        let first_seq = snap.segments.first().copied().unwrap_or(sealed_end);
        let frontier_first = if first_seq == sealed_end {
            frontier_map(&start_frontier)
        } else {
            let (name, file) = segment::open_for_reading(&*storage, &dir, first_seq)?;
            let header = segment::read_header(&*file, &name)?;
            frontier_map(&segment::read_start_frontier(&*file, &name, &header)?)
        };
        let head = active
            .chain
            .last()
            .copied()
            .or_else(|| (snap.next_seq > 0).then_some(header.prev_hash));
        let store = TileStore::new(
            storage,
            dir,
            snap.segments.clone(),
            snap.index_block_bytes,
            !snap.read_only,
            sealed_end,
        );
        Ok(Prover {
            log_id,
            size: snap.next_seq,
            root,
            head,
            sealed_end,
            active_prev: header.prev_hash,
            first_seq,
            frontier_sealed,
            frontier_first,
            active,
            store,
            checked_roots: HashSet::new(),
        })
    }

    /// The tree head of this view of the log (as [`Log::tree_head`]).
    pub fn tree_head(&self) -> TreeHead {
        TreeHead {
            size: self.size,
            root: self.root,
            head: self.head,
        }
    }

    /// The oldest retained seq.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// What the prover has read and rebuilt so far.
    pub fn stats(&self) -> ProofStats {
        let mut stats = self.store.stats;
        stats.segment_bytes_read = self.store.segments.bytes_read;
        stats
    }

    pub(crate) fn check_seq(&self, seq: u64) -> std::result::Result<(), ProveError> {
        if seq >= self.size {
            return Err(ProveError::OutOfRange(format!(
                "seq {seq} is not in the log (it has {} records)",
                self.size
            )));
        }
        if seq < self.first_seq {
            return Err(ProveError::Unavailable(format!(
                "record {seq} was deleted by retention (the log starts at seq {})",
                self.first_seq
            )));
        }
        Ok(())
    }

    /// The stored chain hash of record `seq`.
    pub fn stored_hash(&mut self, seq: u64) -> std::result::Result<ChainHash, ProveError> {
        self.check_seq(seq)?;
        if seq >= self.sealed_end {
            return Ok(self.active.chain[(seq - self.sealed_end) as usize]);
        }
        Ok(self.store.segments.hash_at(seq)?)
    }

    /// The chain hash record `seq` chains from: the stored hash of the record
    /// before it, or its segment header's `prev_hash` for a segment's first.
    pub fn prev_hash(&mut self, seq: u64) -> std::result::Result<ChainHash, ProveError> {
        self.check_seq(seq)?;
        if seq == self.sealed_end {
            return Ok(self.active_prev);
        }
        if seq > self.sealed_end {
            return Ok(self.active.chain[(seq - self.sealed_end - 1) as usize]);
        }
        Ok(self.store.segments.prev_hash(seq)?)
    }

    pub(crate) fn truncated(&self, size: u64) -> ProveError {
        ProveError::Mismatch(format!(
            "truncated: the log has {} records, the tree asked for has {size}",
            self.size
        ))
    }

    /// Runs `attempt` until it returns a value; after each failure, rebuilds
    /// the tiles it used (from the tiles below, then from the segments).
    /// `Ok(None)` when the tiles rebuilt from the segments still fail.
    pub(crate) fn with_repairs<T>(
        &mut self,
        mut attempt: impl FnMut(&mut Self) -> std::result::Result<Option<T>, ProveError>,
    ) -> std::result::Result<Option<T>, ProveError> {
        for round in 0..6 {
            self.store.used.clear();
            if let Some(value) = attempt(self)? {
                return Ok(Some(value));
            }
            let suspects: Vec<(u8, u64)> = self.store.used.iter().copied().collect();
            let repaired = if round == 0 {
                self.store.repair_shallow(&suspects)?
            } else {
                self.store.repair_deep(&suspects)?
            };
            if !repaired && round > 0 {
                break;
            }
        }
        Ok(None)
    }

    /// Checks that the log's tree of `size` records has root `root`
    /// ([`ProveError::Mismatch`] if not).
    pub fn check_root(&mut self, size: u64, root: &Hash) -> std::result::Result<(), ProveError> {
        if size > self.size {
            return Err(self.truncated(size));
        }
        if self.checked_roots.contains(&(size, *root)) {
            return Ok(());
        }
        let mismatch = || {
            ProveError::Mismatch(format!(
                "forked or rewritten: at size {size} the log's tree root is not {}",
                hash_to_hex(root)
            ))
        };
        // The tiles first (O(log n) of them); a root they do not give is
        // recomputed from what the log trusts, so that a damaged tile costs
        // only that, and a wrong root no rebuilding at all.
        self.store.used.clear();
        if proof::tree_root(self, size).is_ok_and(|ours| ours == *root) {
            self.checked_roots.insert((size, *root));
            return Ok(());
        }
        match self.trusted_root(size)? {
            Some(trusted) if trusted == *root => {}
            Some(_) => return Err(mismatch()),
            None => {
                // Before the oldest retained record only the tiles are left.
                let matched = self.with_repairs(|p| {
                    let ours = proof::tree_root(p, size)?;
                    Ok((ours == *root).then_some(()))
                })?;
                if matched.is_none() {
                    return Err(mismatch());
                }
            }
        }
        self.checked_roots.insert((size, *root));
        Ok(())
    }

    /// The root of the tree of `size` records as a checkpoint is checked:
    /// from the link block of the segment that holds record `size` (or the
    /// last one) and the stored hashes after it, reading at most one
    /// segment and no tile. `None` when that segment was deleted by retention.
    pub(crate) fn trusted_root(
        &mut self,
        size: u64,
    ) -> std::result::Result<Option<Hash>, ProveError> {
        if size >= self.sealed_end {
            // Every subtree of the decomposition is in the active segment's
            // link block, or in its records, or made of those.
            let mut parts = Vec::new();
            for level in (0..64u8).rev() {
                if (size >> level) & 1 == 1 {
                    let index = (size >> level) - 1;
                    match edge_subtree(
                        &self.frontier_sealed,
                        &self.active,
                        self.sealed_end,
                        level,
                        index,
                    ) {
                        Some(h) => parts.push(h),
                        None => return Ok(None),
                    }
                }
            }
            return Ok(Some(match parts.split_last() {
                None => crate::hash::merkle::empty_root(),
                Some((last, rest)) => rest
                    .iter()
                    .rev()
                    .fold(*last, |acc, left| node_hash(left, &acc)),
            }));
        }
        if size < self.first_seq {
            return Ok(None);
        }
        let mut frontier = self.store.segments.start_frontier(size)?;
        let from = frontier.size();
        self.store
            .segments
            .for_each(from, size, &mut |_, h| frontier.push(&h.0))?;
        Ok(Some(frontier.root()))
    }

    /// Checks a checkpoint against the log: its origin names this log, and
    /// at its size the tree root and the chain head are the checkpoint's.
    pub fn check_checkpoint(
        &mut self,
        checkpoint: &Checkpoint,
    ) -> std::result::Result<(), ProveError> {
        let id = self.log_id.to_string();
        if !checkpoint.origin.ends_with(&format!("/{id}")) {
            return Err(ProveError::Mismatch(format!(
                "the checkpoint is for {:?}, not log {id}",
                checkpoint.origin
            )));
        }
        self.check_root(checkpoint.size, &checkpoint.root)?;
        if let Some(head) = checkpoint.head {
            if let Some(last) = checkpoint
                .size
                .checked_sub(1)
                .filter(|&l| l >= self.first_seq)
            {
                if self.stored_hash(last)? != head {
                    return Err(ProveError::Mismatch(format!(
                        "forked or rewritten: record {last}'s hash is not the checkpoint's chain head {head}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The inclusion proof of record `seq` in the tree of `size` records
    /// with root `root`, checked before it is returned.
    pub fn inclusion(
        &mut self,
        seq: u64,
        size: u64,
        root: &Hash,
    ) -> std::result::Result<InclusionProof, ProveError> {
        if size > self.size {
            return Err(self.truncated(size));
        }
        if seq >= size {
            return Err(ProveError::OutOfRange(format!(
                "seq {seq} is not in the tree of {size} records"
            )));
        }
        let leaf = self.stored_hash(seq)?;
        self.check_root(size, root)?;
        self.inclusion_of(seq, leaf, size, root)
    }

    /// [`Prover::inclusion`] for a leaf whose stored hash the caller has
    /// (read with the record), against a root already checked or to check.
    pub fn inclusion_of(
        &mut self,
        seq: u64,
        leaf: ChainHash,
        size: u64,
        root: &Hash,
    ) -> std::result::Result<InclusionProof, ProveError> {
        if seq >= size || size > self.size {
            return Err(ProveError::OutOfRange(format!(
                "seq {seq} is not in the tree of {size} records"
            )));
        }
        self.check_root(size, root)?;
        let proof = self.with_repairs(|p| {
            let path = proof::inclusion_proof(p, seq, size)?;
            Ok(proof::verify_inclusion(&leaf.0, seq, size, &path, root).then_some(path))
        })?;
        let proof = proof.ok_or_else(|| {
            ProveError::Mismatch(format!(
                "record {seq} (hash {leaf}) is not in the tree of {size} records with root {}: the log was rewritten",
                hash_to_hex(root)
            ))
        })?;
        Ok(InclusionProof {
            seq,
            tree_size: size,
            leaf,
            root: *root,
            proof,
        })
    }

    /// The consistency proof from the tree of `old_size` records with root
    /// `old_root` to the tree of `new_size` with `new_root`, after checking
    /// both roots against the log.
    pub fn consistency(
        &mut self,
        old_size: u64,
        old_root: &Hash,
        new_size: u64,
        new_root: &Hash,
    ) -> std::result::Result<ConsistencyProof, ProveError> {
        if old_size > new_size {
            return Err(ProveError::OutOfRange(format!(
                "the old tree ({old_size} records) is larger than the new one ({new_size})"
            )));
        }
        self.check_root(new_size, new_root)?;
        self.check_root(old_size, old_root).map_err(|e| match e {
            ProveError::Mismatch(_) => ProveError::Mismatch(format!(
                "forked or rewritten: the log's tree at size {old_size} does not have the old root {}",
                hash_to_hex(old_root)
            )),
            other => other,
        })?;
        let proof = self.with_repairs(|p| {
            let path = proof::consistency_proof(p, old_size, new_size)?;
            let ok = proof::verify_consistency(old_size, new_size, old_root, new_root, &path);
            Ok(ok.then_some(path))
        })?;
        let proof = proof.ok_or_else(|| {
            ProveError::Mismatch(format!(
                "the log's tree of {new_size} records does not extend its tree of {old_size}"
            ))
        })?;
        Ok(ConsistencyProof {
            old_size,
            new_size,
            old_root: *old_root,
            new_root: *new_root,
            proof,
        })
    }

    /// A perfect subtree from the tiles.
    pub(crate) fn tile_subtree(
        &mut self,
        level: u8,
        index: u64,
    ) -> std::result::Result<Hash, TileError> {
        let tile_level = level / TILE_HEIGHT as u8;
        let within = u32::from(level % TILE_HEIGHT as u8);
        let position = index << within;
        let tile_index = position >> TILE_HEIGHT;
        let offset = (position & (TILE_WIDTH as u64 - 1)) as usize;
        let tile = self
            .store
            .tile(tile_level, tile_index, offset + (1 << within))?;
        tile.subtree(within, offset >> within).ok_or_else(|| {
            TileError::Unavailable(format!("no subtree at level {level}, index {index}"))
        })
    }

    pub(crate) fn halves(&mut self, level: u8, index: u64) -> std::result::Result<Hash, TileError> {
        let left = self.subtree(level - 1, 2 * index)?;
        let right = self.subtree(level - 1, 2 * index + 1)?;
        Ok(node_hash(&left, &right))
    }
}

impl SubtreeSource for Prover {
    type Error = TileError;

    fn subtree(&mut self, level: u8, index: u64) -> std::result::Result<Hash, TileError> {
        let lo = u128::from(index) << level;
        let hi = lo + (1u128 << level);
        if hi > u128::from(self.size) {
            return Err(TileError::Unavailable(format!(
                "no subtree at level {level}, index {index} in a tree of {} records",
                self.size
            )));
        }
        let (lo, hi) = (lo as u64, hi as u64);
        if lo >= self.sealed_end {
            return self.active.subtree(level, index).ok_or_else(|| {
                TileError::Unavailable(format!("no subtree at level {level}, index {index}"))
            });
        }
        if hi > self.sealed_end {
            return self.halves(level, index);
        }
        if let Some(h) = self.frontier_sealed.get(&(level, index)) {
            return Ok(*h);
        }
        if let Some(h) = self.frontier_first.get(&(level, index)) {
            return Ok(*h);
        }
        match self.tile_subtree(level, index) {
            // A tile over records retention deleted, missing or damaged: what
            // is left of the subtree comes from the tiles below it, and from
            // the segments for a single record.
            Err(TileError::Unavailable(_)) if hi > self.first_seq => {
                if level == 0 {
                    let h = self.store.segments.hash_at(lo)?;
                    Ok(leaf_hash(&h.0))
                } else {
                    self.halves(level, index)
                }
            }
            other => other,
        }
    }
}

impl Log {
    /// A prover over the log as it is now (see [`Prover`]). Reads the active
    /// segment's records once, as [`Log::tree_head`] does.
    pub fn prover(&self) -> Result<Prover> {
        Prover::new(self.snapshot()?, self.log_id())
    }

    /// The inclusion proof of record `seq` in the tree a checkpoint signs
    /// (checked against the log first: origin, root and chain head), or in
    /// the current tree when `checkpoint` is `None`.
    pub fn prove_inclusion(
        &self,
        seq: u64,
        checkpoint: Option<&Checkpoint>,
    ) -> std::result::Result<InclusionProof, ProveError> {
        let mut prover = self.prover()?;
        let (size, root) = match checkpoint {
            Some(cp) => {
                prover.check_checkpoint(cp)?;
                (cp.size, cp.root)
            }
            None => {
                let head = prover.tree_head();
                (head.size, head.root)
            }
        };
        prover.inclusion(seq, size, &root)
    }

    /// The consistency proof from the tree checkpoint `old` signs to the one
    /// `new` signs, or to the current tree when `new` is `None`; both are
    /// checked against the log first.
    pub fn prove_consistency(
        &self,
        old: &Checkpoint,
        new: Option<&Checkpoint>,
    ) -> std::result::Result<ConsistencyProof, ProveError> {
        let mut prover = self.prover()?;
        let (new_size, new_root) = match new {
            Some(cp) => {
                prover.check_checkpoint(cp)?;
                (cp.size, cp.root)
            }
            None => {
                let head = prover.tree_head();
                (head.size, head.root)
            }
        };
        let id = self.log_id().to_string();
        if !old.origin.ends_with(&format!("/{id}")) {
            return Err(ProveError::Mismatch(format!(
                "the old checkpoint is for {:?}, not log {id}",
                old.origin
            )));
        }
        prover.consistency(old.size, &old.root, new_size, &new_root)
    }
}
