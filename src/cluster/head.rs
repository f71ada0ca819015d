//! The published head of a workspace: one object, `PREFIX/head.json`,
//! holding the newest signed checkpoint, the epoch of the writer that
//! published it, and the consistency proof from the head it replaced.
//!
//! - **Publish** ([`publish_head`]): only the lease holder, while its lease
//!   is valid by its own clock, and only by a conditional PUT: a create
//!   (`If-None-Match: *`) for the first head, otherwise a swap (`If-Match`)
//!   on the version the writer read. A head whose epoch is newer than the
//!   writer's is never replaced ([`ClusterError::StaleEpoch`]): once a new
//!   holder has published (even the same checkpoint again, under its epoch:
//!   a takeover should do that first), the old holder cannot move the head,
//!   whatever its clock says.
//! - **Read and check** ([`read_head`], [`check_head`]): the checkpoint's
//!   signature by the log's key, the head's members against the
//!   checkpoint's, and, given the head the reader trusted before, that the
//!   new one extends it (an RFC 6962 consistency proof) and its epoch did
//!   not go back.

use serde::{Deserialize, Serialize};

use super::lease::Lease;
use super::{parse_json, read_small, ClusterError, HEAD_OBJECT};
use crate::archive::{Bucket, Conditional, ObjectVersion};
use crate::hash::chain::ChainHash;
use crate::hash::checkpoint::{Checkpoint, CheckpointError, NoteSigner, NoteVerifier};
use crate::log::Log;
use crate::query::proofs::ConsistencyProof;

/// The `format` member of every head object.
pub const HEAD_FORMAT: &str = "chainlog-head/1";

/// The head object, `PREFIX/head.json`, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    /// Always [`HEAD_FORMAT`].
    pub format: String,
    /// The lease epoch of the writer that published it.
    pub epoch: u64,
    /// The checkpoint's tree size (records in the log).
    pub size: u64,
    /// The checkpoint's Merkle root, 64 hex digits.
    pub root: ChainHash,
    /// The signed checkpoint note (C2SP signed-note text).
    pub checkpoint: String,
    /// The proof that this tree extends the previous head's (absent for the
    /// first head, and when the size did not change).
    pub consistency: Option<ConsistencyProof>,
}

impl Head {
    /// A head for `checkpoint` (its note `note`, signed), published in
    /// `epoch`, with the proof from the previous head.
    pub fn new(
        epoch: u64,
        checkpoint: &Checkpoint,
        note: String,
        consistency: Option<ConsistencyProof>,
    ) -> Head {
        Head {
            format: HEAD_FORMAT.into(),
            epoch,
            size: checkpoint.size,
            root: ChainHash(checkpoint.root),
            checkpoint: note,
            consistency,
        }
    }

    fn encode(&self) -> Vec<u8> {
        // Strings, integers and hashes always serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The head of `log` as it is now, for `epoch`: its checkpoint (origin
/// `<origin_prefix>/<log id>`, see [`Log::checkpoint`], which reads the
/// whole log) signed by `signer`, with the consistency proof from
/// `previous` when the log grew since. `previous` must be signed by the
/// same key.
pub fn head_of_log(
    log: &Log,
    signer: &NoteSigner,
    origin_prefix: &str,
    epoch: u64,
    previous: Option<&Head>,
) -> Result<Head, ClusterError> {
    let checkpoint = log.checkpoint(origin_prefix)?;
    let consistency = match previous.filter(|p| p.size < checkpoint.size) {
        Some(previous) => {
            let old = Checkpoint::open(&previous.checkpoint, &signer.verifier())
                .map_err(HeadProblem::from)?;
            Some(log.prove_consistency(&old, Some(&checkpoint))?)
        }
        None => None,
    };
    let note = checkpoint.sign(signer).map_err(HeadProblem::from)?;
    Ok(Head::new(epoch, &checkpoint, note, consistency))
}

/// A head as read from the bucket, with the version to swap against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedHead {
    /// The head.
    pub head: Head,
    /// Its object version.
    pub version: ObjectVersion,
}

/// Why a reader refuses a head.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeadProblem {
    /// The checkpoint does not verify with the log's key, or is malformed.
    #[error("its checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The head's members disagree with its own checkpoint, or its format.
    #[error("{0}")]
    Inconsistent(String),
    /// The epoch went back from the head the reader trusted.
    #[error("epoch {new} is older than the previous head's {old}")]
    EpochWentBack {
        /// The previous head's epoch.
        old: u64,
        /// This head's.
        new: u64,
    },
    /// The tree shrank.
    #[error("size {new} is smaller than the previous head's {old}")]
    Shrank {
        /// The previous size.
        old: u64,
        /// This size.
        new: u64,
    },
    /// The head carries no proof from the previous head's tree (the reader
    /// missed a head in between, or the publisher left it out).
    #[error("no consistency proof from size {old} (it carries {carried})")]
    NoProof {
        /// The previous size.
        old: u64,
        /// What the head carries.
        carried: String,
    },
    /// The proof does not show the new tree extends the old one: a fork.
    #[error("the consistency proof from size {old} to {new} does not hold: the log forked or was rewritten")]
    NotConsistent {
        /// The previous size.
        old: u64,
        /// This size.
        new: u64,
    },
}

/// The current head and its version, or `None` before the first publish.
/// Not checked: see [`check_head`].
pub fn read_head(bucket: &Bucket) -> Result<Option<PublishedHead>, ClusterError> {
    let Some(found) = read_small(bucket, HEAD_OBJECT)? else {
        return Ok(None);
    };
    let head: Head = parse_json(bucket, HEAD_OBJECT, &found.bytes)?;
    Ok(Some(PublishedHead {
        head,
        version: found.version,
    }))
}

/// Checks `head` as a reader: the checkpoint is signed by `verifier` and
/// matches the head's members; given `previous` (the head the reader
/// trusted before), the epoch did not go back and the tree extends the old
/// one, by the proof the head carries. Returns the checkpoint.
pub fn check_head(
    head: &Head,
    verifier: &NoteVerifier,
    previous: Option<&Head>,
) -> Result<Checkpoint, HeadProblem> {
    if head.format != HEAD_FORMAT {
        return Err(HeadProblem::Inconsistent(format!(
            "format {:?}, not {HEAD_FORMAT:?}",
            head.format
        )));
    }
    let checkpoint = Checkpoint::open(&head.checkpoint, verifier)?;
    if checkpoint.size != head.size || checkpoint.root != head.root.0 {
        return Err(HeadProblem::Inconsistent(format!(
            "the head says size {} root {}, its checkpoint size {} root {}",
            head.size,
            head.root,
            checkpoint.size,
            ChainHash(checkpoint.root)
        )));
    }
    if let Some(proof) = &head.consistency {
        if proof.new_size != head.size || proof.new_root != head.root.0 {
            return Err(HeadProblem::Inconsistent(
                "its consistency proof ends at another tree".into(),
            ));
        }
    }
    let Some(previous) = previous else {
        return Ok(checkpoint);
    };
    if head.epoch < previous.epoch {
        return Err(HeadProblem::EpochWentBack {
            old: previous.epoch,
            new: head.epoch,
        });
    }
    if head.size < previous.size {
        return Err(HeadProblem::Shrank {
            old: previous.size,
            new: head.size,
        });
    }
    if head.size == previous.size {
        return if head.root == previous.root {
            Ok(checkpoint)
        } else {
            Err(HeadProblem::NotConsistent {
                old: previous.size,
                new: head.size,
            })
        };
    }
    match &head.consistency {
        Some(proof) if proof.old_size == previous.size => {
            if proof.old_root == previous.root.0 && proof.verify() {
                Ok(checkpoint)
            } else {
                Err(HeadProblem::NotConsistent {
                    old: previous.size,
                    new: head.size,
                })
            }
        }
        carried => Err(HeadProblem::NoProof {
            old: previous.size,
            carried: match carried {
                Some(p) => format!("one from size {}", p.old_size),
                None => "none".into(),
            },
        }),
    }
}

/// Publishes `next` as the head, replacing `previous` (the head as the
/// writer read it; `None` when there was none), for the holder of `lease`.
///
/// Refused, with nothing written, when the lease is lost or past its
/// expiry by the holder's clock, when `next` is not in the lease's epoch,
/// when the head in the bucket was published in a newer epoch
/// ([`ClusterError::StaleEpoch`]) or changed since `previous` was read
/// ([`ClusterError::HeadMoved`]), and when `next` does not extend
/// `previous` (its proof is checked as a reader would, without the
/// signature: the publisher may not hold the verifier key).
pub fn publish_head(
    lease: &Lease,
    previous: Option<&PublishedHead>,
    next: Head,
) -> Result<PublishedHead, ClusterError> {
    let bucket = lease.bucket();
    lease.check_valid()?;
    if next.epoch != lease.epoch() {
        return Err(ClusterError::Invalid {
            what: "head",
            reason: format!(
                "it is for epoch {}, the lease is epoch {}",
                next.epoch,
                lease.epoch()
            ),
        });
    }
    if let Some(previous) = previous {
        if previous.head.epoch > lease.epoch() {
            return Err(ClusterError::StaleEpoch {
                url: bucket.url(HEAD_OBJECT),
                epoch: lease.epoch(),
                head_epoch: previous.head.epoch,
            });
        }
        check_extends(&next, &previous.head)?;
    }
    let bytes = next.encode();
    let written = match previous {
        None => bucket.put_create(HEAD_OBJECT, bytes)?,
        Some(previous) => bucket.put_swap(HEAD_OBJECT, bytes, &previous.version)?,
    };
    match written {
        Conditional::Written(version) => Ok(PublishedHead {
            head: next,
            version,
        }),
        Conditional::Refused => {
            let url = bucket.url(HEAD_OBJECT);
            match read_head(bucket)? {
                Some(now) if now.head.epoch > lease.epoch() => Err(ClusterError::StaleEpoch {
                    url,
                    epoch: lease.epoch(),
                    head_epoch: now.head.epoch,
                }),
                Some(now) => Err(ClusterError::HeadMoved {
                    url,
                    size: now.head.size,
                    head_epoch: now.head.epoch,
                }),
                None => Err(ClusterError::HeadMoved {
                    url,
                    size: 0,
                    head_epoch: 0,
                }),
            }
        }
    }
}

/// The publisher's own check that `next` extends `previous` (all of
/// [`check_head`] but the signature).
fn check_extends(next: &Head, previous: &Head) -> Result<(), HeadProblem> {
    let shrank = next.size < previous.size;
    let forked = next.size == previous.size && next.root != previous.root;
    let unproven = next.size > previous.size
        && !next.consistency.as_ref().is_some_and(|p| {
            p.old_size == previous.size
                && p.old_root == previous.root.0
                && p.new_size == next.size
                && p.new_root == next.root.0
                && p.verify()
        });
    if shrank {
        return Err(HeadProblem::Shrank {
            old: previous.size,
            new: next.size,
        });
    }
    if forked || unproven {
        return Err(HeadProblem::NotConsistent {
            old: previous.size,
            new: next.size,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::checkpoint::NoteSigner;
    use crate::hash::proof::{consistency_proof, tree_root, MemoryTree};

    fn signer() -> NoteSigner {
        NoteSigner::from_seed("cluster.test", [3; 32]).unwrap()
    }

    /// The head of a tree of `size` leaves, with the proof from `from`.
    fn head_at(tree: &mut MemoryTree, size: u64, epoch: u64, from: Option<u64>) -> Head {
        let root = tree_root(tree, size).unwrap();
        let checkpoint = Checkpoint {
            origin: "chainlog/00112233445566778899aabbccddeeff".into(),
            size,
            root,
            head: None,
        };
        let consistency = from.map(|old| ConsistencyProof {
            old_size: old,
            new_size: size,
            old_root: tree_root(tree, old).unwrap(),
            new_root: root,
            proof: consistency_proof(tree, old, size).unwrap(),
        });
        Head::new(
            epoch,
            &checkpoint,
            checkpoint.sign(&signer()).unwrap(),
            consistency,
        )
    }

    fn tree() -> MemoryTree {
        let leaves: Vec<Vec<u8>> = (0..40u32).map(|i| i.to_le_bytes().to_vec()).collect();
        MemoryTree::new(&leaves)
    }

    #[test]
    fn heads_round_trip_and_refuse_unknown_members() {
        let mut tree = tree();
        let head = head_at(&mut tree, 20, 2, Some(7));
        let bytes = head.encode();
        let back: Head = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, head);
        let text = String::from_utf8(bytes).unwrap();
        let extra = text.replacen('{', r#"{"trusted":true,"#, 1);
        assert!(serde_json::from_str::<Head>(&extra).is_err());
    }

    #[test]
    fn readers_check_signature_members_epoch_and_consistency() {
        let verifier = signer().verifier();
        let mut tree = tree();
        let first = head_at(&mut tree, 10, 1, None);
        let second = head_at(&mut tree, 25, 2, Some(10));
        assert_eq!(check_head(&first, &verifier, None).unwrap().size, 10);
        assert_eq!(
            check_head(&second, &verifier, Some(&first)).unwrap().size,
            25
        );

        // Another key's signature.
        let other = NoteSigner::from_seed("cluster.test", [4; 32])
            .unwrap()
            .verifier();
        assert!(matches!(
            check_head(&first, &other, None),
            Err(HeadProblem::Checkpoint(_))
        ));
        // A member changed after signing.
        let mut lying = second.clone();
        lying.size = 26;
        assert!(matches!(
            check_head(&lying, &verifier, None),
            Err(HeadProblem::Inconsistent(_))
        ));
        // The epoch went back.
        let mut older = second.clone();
        older.epoch = 0;
        assert!(matches!(
            check_head(&older, &verifier, Some(&first)),
            Err(HeadProblem::EpochWentBack { old: 1, new: 0 })
        ));
        // A shrunk tree, a missing proof, a proof from another size.
        let shrunk = head_at(&mut tree, 10, 2, None);
        assert!(matches!(
            check_head(&shrunk, &verifier, Some(&second)),
            Err(HeadProblem::Shrank { old: 25, new: 10 })
        ));
        let unproven = head_at(&mut tree, 25, 2, None);
        assert!(matches!(
            check_head(&unproven, &verifier, Some(&first)),
            Err(HeadProblem::NoProof { .. })
        ));
        let from_elsewhere = head_at(&mut tree, 25, 2, Some(11));
        assert!(matches!(
            check_head(&from_elsewhere, &verifier, Some(&first)),
            Err(HeadProblem::NoProof { .. })
        ));
        // A fork: a tree of other leaves, proven from its own old root.
        let forked_leaves: Vec<Vec<u8>> = (0..40u32)
            .map(|i| (i + 1000).to_le_bytes().to_vec())
            .collect();
        let mut forked_tree = MemoryTree::new(&forked_leaves);
        let forked = head_at(&mut forked_tree, 25, 2, Some(10));
        assert!(matches!(
            check_head(&forked, &verifier, Some(&first)),
            Err(HeadProblem::NotConsistent { old: 10, new: 25 })
        ));
        assert!(check_extends(&forked, &first).is_err());
        assert!(check_extends(&second, &first).is_ok());
        // The same tree republished by a new epoch is fine.
        let claimed = head_at(&mut tree, 25, 3, None);
        assert!(check_head(&claimed, &verifier, Some(&second)).is_ok());
    }
}
