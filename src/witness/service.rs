//! The witness: which logs it follows, the newest tree it cosigned for each
//! (kept durably), and the `add-checkpoint` decision of C2SP `tlog-witness`.
//!
//! State directory:
//!
//! ```text
//! STATE/
//! ├── chainlog.lock             flocked (with the directory) while a witness uses it
//! ├── logs/<sha256(origin)>.json  {"origin","size","root","note"}: the newest cosigned checkpoint
//! └── refusals.jsonl           one JSON line per refused checkpoint that is signed by the
//!                              log: inconsistent (422), smaller than the cosigned tree (409),
//!                              or with an old size beyond its size (400)
//! ```
//!
//! A log's state file is replaced atomically (temp file, fsync, rename,
//! directory fsync) before the cosignature is returned, under the log's
//! lock, so two requests for one log cannot both pass the old-size check.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::hash::checkpoint::{Checkpoint, CheckpointError, NoteVerifier};
use crate::hash::merkle::{empty_root, Hash};
use crate::hash::note::SignedNote;
use crate::hash::proof::verify_consistency;
use crate::storage::{write_file_atomic, DirLock, FsStorage, Storage};
use crate::witness::cosignature::Cosigner;
use crate::witness::protocol::AddCheckpoint;
use crate::witness::WitnessError;

/// The most logs one witness follows.
pub const MAX_LOGS: usize = 10_000;
/// The largest state or configuration file read.
const MAX_FILE_BYTES: u64 = 16 << 20;

/// The logs a witness follows: `{"logs":[{"origin":"…","keys":["<vkey>",…]},…]}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogsConfig {
    /// The logs.
    pub logs: Vec<LogConfig>,
}

/// One followed log.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// The checkpoints' origin line.
    pub origin: String,
    /// The log's verifier keys (signed-note vkeys, Ed25519).
    pub keys: Vec<String>,
}

impl LogsConfig {
    /// Parses the JSON text.
    pub fn parse(text: &str) -> Result<Self, WitnessError> {
        let config: LogsConfig =
            serde_json::from_str(text).map_err(|e| WitnessError::Config(e.to_string()))?;
        if config.logs.len() > MAX_LOGS {
            return Err(WitnessError::Config(format!("more than {MAX_LOGS} logs")));
        }
        Ok(config)
    }
}

/// The newest checkpoint a witness cosigned for one log.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct LogState {
    origin: String,
    size: u64,
    /// Base64.
    root: String,
    /// The checkpoint with the log's signature and the witness's cosignature.
    note: String,
}

/// A followed log: its keys and, under its lock, its state.
struct FollowedLog {
    keys: Vec<NoteVerifier>,
    state: Mutex<Option<(u64, Hash, String)>>,
}

/// Why a checkpoint was not cosigned; [`AddError::status`] is the HTTP
/// status C2SP `tlog-witness` asks for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddError {
    /// The request is malformed, or its old size exceeds the checkpoint's size.
    #[error("{0}")]
    BadRequest(String),
    /// The checkpoint's origin is not a followed log.
    #[error("unknown log {0:?}")]
    UnknownLog(String),
    /// No valid signature by the log's keys, or a bad one.
    #[error("{0}")]
    Forbidden(String),
    /// The old size is not the size the witness last cosigned.
    #[error("the witness last cosigned size {known}, not {old}")]
    Conflict {
        /// The size the witness knows.
        known: u64,
        /// The request's old size.
        old: u64,
    },
    /// The proof does not show the checkpoint extends the cosigned tree.
    #[error("{0}")]
    Inconsistent(String),
    /// The state could not be written or the refusal recorded.
    #[error(transparent)]
    Storage(#[from] Error),
}

impl AddError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            AddError::BadRequest(_) => 400,
            AddError::Forbidden(_) => 403,
            AddError::UnknownLog(_) => 404,
            AddError::Conflict { .. } => 409,
            AddError::Inconsistent(_) => 422,
            AddError::Storage(_) => 500,
        }
    }
}

/// One line of `refusals.jsonl`.
#[derive(Debug, Serialize)]
struct Refusal<'a> {
    time: u64,
    origin: &'a str,
    status: u16,
    reason: String,
    old_size: u64,
    size: u64,
    root: String,
    note: &'a str,
}

/// A witness over a state directory.
pub struct Witness {
    cosigner: Cosigner,
    logs: HashMap<String, FollowedLog>,
    dir: PathBuf,
    refusals: Mutex<File>,
    _lock: Box<dyn DirLock>,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Witness")
            .field("cosigner", &self.cosigner)
            .field("logs", &self.logs.len())
            .field("dir", &self.dir)
            .finish()
    }
}

/// The hex SHA-256 of an origin: its state file's name and its monitoring path.
pub fn origin_hash(origin: &str) -> String {
    Sha256::digest(origin.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read_bounded(path: &Path) -> Result<Option<String>, Error> {
    use std::io::Read;
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut text = String::new();
    file.take(MAX_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| Error::io(path, e))?;
    Ok(Some(text))
}

fn corrupt(path: &Path, reason: String) -> Error {
    Error::Corrupted {
        file: path.display().to_string(),
        offset: 0,
        reason,
    }
}

impl Witness {
    /// Opens (creating it if needed) the state directory `dir`, locks it,
    /// and loads the state of every log in `config`.
    pub fn open(cosigner: Cosigner, config: &LogsConfig, dir: &Path) -> Result<Self, Error> {
        let storage = FsStorage;
        let logs_dir = dir.join("logs");
        storage
            .create_dir_all(&logs_dir)
            .map_err(|e| Error::io(&logs_dir, e))?;
        let lock = storage.lock_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut logs = HashMap::new();
        for log in &config.logs {
            let keys = log
                .keys
                .iter()
                .map(|k| NoteVerifier::parse(k))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::InvalidOptions(format!("log {:?}: {e}", log.origin)))?;
            if keys.is_empty() || log.origin.is_empty() || log.origin.contains('\n') {
                return Err(Error::InvalidOptions(format!(
                    "log {:?}: an origin line and at least one key are needed",
                    log.origin
                )));
            }
            let path = logs_dir.join(format!("{}.json", origin_hash(&log.origin)));
            let state = match read_bounded(&path)? {
                None => None,
                Some(text) => {
                    let s: LogState =
                        serde_json::from_str(&text).map_err(|e| corrupt(&path, e.to_string()))?;
                    let root: Hash = B64
                        .decode(&s.root)
                        .ok()
                        .and_then(|r| r.try_into().ok())
                        .ok_or_else(|| corrupt(&path, "the root is not 32 bytes".into()))?;
                    if s.origin != log.origin {
                        return Err(corrupt(&path, format!("holds origin {:?}", s.origin)));
                    }
                    Some((s.size, root, s.note))
                }
            };
            let followed = FollowedLog {
                keys,
                state: Mutex::new(state),
            };
            if logs.insert(log.origin.clone(), followed).is_some() {
                return Err(Error::InvalidOptions(format!(
                    "log {:?} is listed twice",
                    log.origin
                )));
            }
        }
        let path = dir.join("refusals.jsonl");
        let refusals = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        storage.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
        Ok(Witness {
            cosigner,
            logs,
            dir: dir.to_path_buf(),
            refusals: Mutex::new(refusals),
            _lock: lock,
        })
    }

    /// The witness's key.
    pub fn cosigner(&self) -> &Cosigner {
        &self.cosigner
    }

    /// The newest cosigned checkpoint (with the log's signature and the
    /// witness's cosignature) of the log whose origin hashes to `hash`.
    pub fn latest(&self, hash: &str) -> Option<String> {
        self.logs
            .iter()
            .find(|(origin, _)| origin_hash(origin) == hash)
            .and_then(|(_, log)| log.state.lock().as_ref().map(|s| s.2.clone()))
    }

    /// Handles an `add-checkpoint` request body at time `now` (POSIX
    /// seconds, not zero): the cosignature line to answer with, or why not.
    pub fn add_checkpoint(&self, body: &[u8], now: u64) -> Result<String, AddError> {
        let request =
            AddCheckpoint::parse(body).map_err(|e| AddError::BadRequest(e.to_string()))?;
        let mut note =
            SignedNote::parse(&request.note).map_err(|e| AddError::BadRequest(e.to_string()))?;
        let checkpoint =
            Checkpoint::parse_body(&note.text).map_err(|e| AddError::BadRequest(e.to_string()))?;
        let log = self
            .logs
            .get(&checkpoint.origin)
            .ok_or_else(|| AddError::UnknownLog(checkpoint.origin.clone()))?;
        let mut signed = false;
        for key in &log.keys {
            match key.open_note(&request.note) {
                Ok(_) => signed = true,
                Err(CheckpointError::NotSignedByKey { .. }) => {}
                Err(e) => return Err(AddError::Forbidden(e.to_string())),
            }
        }
        if !signed {
            return Err(AddError::Forbidden(
                "no signature by the log's keys".to_string(),
            ));
        }
        let refuse = |error: AddError| -> AddError {
            match self.record_refusal(&request, &checkpoint, &error, now) {
                Ok(()) => error,
                Err(e) => AddError::Storage(e),
            }
        };
        if request.old_size > checkpoint.size {
            return Err(refuse(AddError::BadRequest(format!(
                "old size {} is larger than the checkpoint's size {}",
                request.old_size, checkpoint.size
            ))));
        }
        let mut state = log.state.lock();
        let (known_size, known_root) = state.as_ref().map_or((0, empty_root()), |s| (s.0, s.1));
        if request.old_size != known_size {
            let conflict = AddError::Conflict {
                known: known_size,
                old: request.old_size,
            };
            // A client that does not know the witness's size asks with a
            // guess: only a checkpoint smaller than the cosigned tree (a
            // rollback, or a fork's) is worth recording.
            return Err(if checkpoint.size < known_size {
                refuse(conflict)
            } else {
                conflict
            });
        }
        if checkpoint.size == 0 && checkpoint.root != empty_root() {
            return Err(refuse(AddError::Inconsistent(
                "a checkpoint of size 0 must have the empty tree's root".into(),
            )));
        }
        if request.old_size == 0 && !request.proof.is_empty() {
            return Err(refuse(AddError::Inconsistent(
                "old size 0 takes no consistency proof".into(),
            )));
        }
        let consistent = request.old_size == 0
            || verify_consistency(
                request.old_size,
                checkpoint.size,
                &known_root,
                &checkpoint.root,
                &request.proof,
            );
        if !consistent {
            return Err(refuse(AddError::Inconsistent(format!(
                "the checkpoint of size {} is not consistent with the tree of size {} this witness cosigned",
                checkpoint.size, known_size
            ))));
        }
        let cosignature = self.cosigner.cosign(&note.text, now.max(1));
        note.signatures.retain(|s| {
            log.keys
                .iter()
                .any(|k| k.name() == s.name && k.id() == s.id)
        });
        note.add(cosignature.clone());
        let stored = LogState {
            origin: checkpoint.origin.clone(),
            size: checkpoint.size,
            root: B64.encode(checkpoint.root),
            note: note.to_text(),
        };
        let bytes =
            serde_json::to_vec(&stored).map_err(|e| Error::InvalidOptions(e.to_string()))?;
        write_file_atomic(
            &FsStorage,
            &self.dir.join("logs"),
            &format!("{}.json", origin_hash(&checkpoint.origin)),
            &bytes,
        )?;
        *state = Some((checkpoint.size, checkpoint.root, stored.note));
        Ok(cosignature.line())
    }

    /// Appends a refusal to `refusals.jsonl` and syncs it.
    fn record_refusal(
        &self,
        request: &AddCheckpoint,
        checkpoint: &Checkpoint,
        error: &AddError,
        now: u64,
    ) -> Result<(), Error> {
        let refusal = Refusal {
            time: now,
            origin: &checkpoint.origin,
            status: error.status(),
            reason: error.to_string(),
            old_size: request.old_size,
            size: checkpoint.size,
            root: B64.encode(checkpoint.root),
            note: &request.note,
        };
        let mut line =
            serde_json::to_vec(&refusal).map_err(|e| Error::InvalidOptions(e.to_string()))?;
        line.push(b'\n');
        let path = self.dir.join("refusals.jsonl");
        let mut file = self.refusals.lock();
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;
    use crate::hash::checkpoint::NoteSigner;
    use crate::hash::proof::{consistency_proof, tree_root, MemoryTree};

    const ORIGIN: &str = "example.com/log";

    fn log_key() -> NoteSigner {
        NoteSigner::from_seed("example.com/log", [3; 32]).unwrap()
    }

    fn config() -> LogsConfig {
        LogsConfig::parse(&format!(
            r#"{{"logs":[{{"origin":"{ORIGIN}","keys":["{}"]}}]}}"#,
            log_key().verifier().to_text()
        ))
        .unwrap()
    }

    fn open(dir: &Path) -> Result<Witness, Error> {
        Witness::open(
            Cosigner::from_seed("w.example", [4; 32]).unwrap(),
            &config(),
            dir,
        )
    }

    /// The request for the tree of the first `size` of `leaves` from `old`.
    fn request(leaves: &[Vec<u8>], old: u64, size: u64) -> Vec<u8> {
        let mut tree = MemoryTree::new(leaves);
        let checkpoint = Checkpoint {
            origin: ORIGIN.into(),
            size,
            root: tree_root(&mut tree, size).unwrap(),
            head: None,
        };
        let proof = if old == 0 {
            vec![]
        } else {
            consistency_proof(&mut tree, old, size).unwrap()
        };
        AddCheckpoint {
            old_size: old,
            proof,
            note: checkpoint.sign(&log_key()).unwrap(),
        }
        .to_body()
        .into_bytes()
    }

    fn leaves(tag: u8, n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| vec![tag, i as u8]).collect()
    }

    #[test]
    fn concurrent_requests_for_one_log_cannot_both_pass_the_old_size_check() {
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let witness = Arc::new(open(dir.path()).unwrap());
            let leaves = leaves(1, 16);
            let start = Arc::new(Barrier::new(4));
            let answers: Vec<_> = (0..4u64)
                .map(|k| {
                    let (witness, start, body) =
                        (witness.clone(), start.clone(), request(&leaves, 0, 5 + k));
                    std::thread::spawn(move || {
                        start.wait();
                        witness.add_checkpoint(&body, 1_700_000_000)
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect();
            let cosigned = answers.iter().filter(|a| a.is_ok()).count();
            assert_eq!(cosigned, 1, "{answers:?}");
            for answer in answers.iter().filter_map(|a| a.as_ref().err()) {
                assert_eq!(answer.status(), 409, "{answer}");
            }
        }
    }

    #[test]
    fn state_survives_a_reopen_and_a_fork_is_refused_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let real = leaves(1, 20);
        {
            let witness = open(dir.path()).unwrap();
            let line = witness.add_checkpoint(&request(&real, 0, 10), 7).unwrap();
            assert!(line.starts_with("\u{2014} w.example "));
            assert!(matches!(
                open(dir.path()),
                Err(Error::Io { ref source, .. }) if source.kind() == std::io::ErrorKind::WouldBlock
            ));
        }
        let witness = open(dir.path()).unwrap();
        // A rollback: 409 naming 10.
        let err = witness
            .add_checkpoint(&request(&real, 0, 8), 8)
            .unwrap_err();
        assert!(
            matches!(err, AddError::Conflict { known: 10, old: 0 }),
            "{err}"
        );
        // A fork: the same first 9 leaves, then others.
        let mut fork = real[..9].to_vec();
        fork.extend(leaves(2, 11));
        let err = witness
            .add_checkpoint(&request(&fork, 10, 20), 9)
            .unwrap_err();
        assert_eq!(err.status(), 422, "{err}");
        witness.add_checkpoint(&request(&real, 10, 20), 10).unwrap();
        let refusals = std::fs::read_to_string(dir.path().join("refusals.jsonl")).unwrap();
        let sizes: Vec<u64> = refusals
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["size"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(sizes, [8, 20]);
        assert!(witness
            .latest(&origin_hash(ORIGIN))
            .unwrap()
            .contains("\n20\n"));
    }

    #[test]
    fn a_damaged_state_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        open(dir.path())
            .unwrap()
            .add_checkpoint(&request(&leaves(1, 4), 0, 4), 7)
            .unwrap();
        let path = dir
            .path()
            .join("logs")
            .join(format!("{}.json", origin_hash(ORIGIN)));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"size\":4", "\"size\":\"4\"")).unwrap();
        assert!(matches!(open(dir.path()), Err(Error::Corrupted { .. })));
    }
}
