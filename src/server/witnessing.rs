//! Submitting every workspace's checkpoints to witnesses (`chainlog serve
//! --witness URL=VKEY`, C2SP tlog-witness).
//!
//! A background thread wakes every [`WitnessSchedule::every`] (5 minutes by
//! default). For each workspace whose log grew past the size every witness
//! last cosigned, it signs a checkpoint, submits it to each witness with
//! the consistency proof from the size that witness last cosigned, and,
//! when at least [`WitnessSchedule::quorum`] cosigned, stores the note with
//! their cosignatures. In the data directory:
//!
//! | path | what |
//! |---|---|
//! | `witnessed/<w>.checkpoint` | the newest checkpoint of workspace `w` cosigned by a quorum |
//! | `witnessed/<w>.sizes.json` | `{"witnesses": {"<vkey>": size}, "refused": {"<vkey>": size}, "head": hex}`: the size each witness last cosigned, the last refusal of those that refused, the chain head last submitted |
//!
//! Both are replaced atomically (temporary file, fsync, rename, directory
//! fsync). A witness that refuses the checkpoint as inconsistent with what
//! it cosigned (422), or that has cosigned a larger tree (a rollback or a
//! fork elsewhere), is recorded as a `witness.refused` event in the
//! workspace's log, once until that witness cosigns again (the checkpoint
//! is still submitted at every round); a witness that cannot be reached is reported on
//! standard error and tried again at the next round. Appends never wait
//! for any of this.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::{Event, Outcome, Timestamp};
use crate::hash::checkpoint::{Checkpoint, NoteSigner};
use crate::hash::note::SignedNote;
use crate::server::stop_flag::StopFlag;
use crate::server::workspace::{validate_workspace_name, Workspaces, WORKSPACES_DIR_NAME};
use crate::storage::{write_file_atomic, FsStorage};
use crate::witness::client::{self, ClientError, WitnessEndpoint};
use crate::Log;

/// The default time between two rounds.
pub const DEFAULT_WITNESS_EVERY: Duration = Duration::from_secs(5 * 60);
/// The directory of the data directory that holds the witnessed checkpoints.
pub const WITNESSED_DIR_NAME: &str = "witnessed";
/// The event type recording a witness's refusal.
pub const EVENT_WITNESS_REFUSED: &str = "witness.refused";

/// The witnesses the server submits to, and how often.
#[derive(Debug, Clone)]
pub struct WitnessSchedule {
    /// The witnesses (submission prefix and key).
    pub witnesses: Vec<WitnessEndpoint>,
    /// How many must cosign for a checkpoint to be stored.
    pub quorum: usize,
    /// Time between two rounds.
    pub every: Duration,
}

/// The size each witness last cosigned for one workspace, by its key text.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sizes {
    witnesses: BTreeMap<String, u64>,
    /// Witnesses whose last answer was a refusal, with the refused size: a
    /// refusal is recorded once, until the witness cosigns again.
    #[serde(default)]
    refused: BTreeMap<String, u64>,
    /// The chain head (hex) of the last checkpoint submitted: a log of the
    /// same size with another head (a fork) is submitted again.
    #[serde(default)]
    head: Option<String>,
}

fn witnessed_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(WITNESSED_DIR_NAME)
}

/// The newest checkpoint of `workspace` cosigned by a quorum of witnesses,
/// if one was stored.
pub fn witnessed_checkpoint(data_dir: &Path, workspace: &str) -> std::io::Result<Option<String>> {
    if validate_workspace_name(workspace).is_err() {
        return Ok(None);
    }
    let path = witnessed_dir(data_dir).join(format!("{workspace}.checkpoint"));
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn read_sizes(data_dir: &Path, workspace: &str) -> Sizes {
    let path = witnessed_dir(data_dir).join(format!("{workspace}.sizes.json"));
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            eprintln!(
                "chainlog serve: {} is unreadable ({e}); asking the witnesses for their sizes",
                path.display()
            );
            Sizes::default()
        }),
        Err(_) => Sizes::default(),
    }
}

fn store(data_dir: &Path, name: &str, bytes: &[u8]) -> crate::Result<()> {
    let dir = witnessed_dir(data_dir);
    crate::storage::perms::create_private_dir_all(&dir).map_err(|e| crate::Error::io(&dir, e))?;
    write_file_atomic(&FsStorage, &dir, name, bytes)
}

/// What one workspace's round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RoundOutcome {
    /// The checkpoint's size, when one was submitted.
    pub submitted: Option<u64>,
    /// Witnesses that cosigned.
    pub cosigned: usize,
    /// Witnesses that refused (recorded as `witness.refused`).
    pub refused: usize,
}

/// The thread's shared parts.
struct Round<'a> {
    data_dir: &'a Path,
    workspaces: &'a Workspaces,
    signer: &'a NoteSigner,
    origin: &'a str,
    schedule: &'a WitnessSchedule,
    http: &'a reqwest::Client,
    runtime: &'a tokio::runtime::Runtime,
}

impl Round<'_> {
    fn workspace_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.data_dir.join(WORKSPACES_DIR_NAME))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|name| validate_workspace_name(name).is_ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn workspace(&self, name: &str) -> Result<RoundOutcome, String> {
        let Some(log) = self
            .workspaces
            .open(name, false)
            .map_err(|e| e.to_string())?
        else {
            return Ok(RoundOutcome::default());
        };
        let mut sizes = read_sizes(self.data_dir, name);
        let state = log.state();
        let (size, head) = (state.next_seq, Some(state.head.to_string()));
        let keys: Vec<String> = self
            .schedule
            .witnesses
            .iter()
            .map(|w| w.key.to_text())
            .collect();
        if size == 0
            || (sizes.head == head && keys.iter().all(|k| sizes.witnesses.get(k) == Some(&size)))
        {
            return Ok(RoundOutcome::default());
        }
        let checkpoint = log.checkpoint(self.origin).map_err(|e| e.to_string())?;
        let note = checkpoint.sign(self.signer).map_err(|e| e.to_string())?;
        let mut cosigned = SignedNote::parse(&note).map_err(|e| e.to_string())?;
        let mut prover = log.prover().map_err(|e| e.to_string())?;
        let mut prove =
            |old: u64| client::proof_from(&mut prover, old, checkpoint.size, &checkpoint.root);
        sizes.head = checkpoint.head.map(|h| h.to_string());
        let mut outcome = RoundOutcome {
            submitted: Some(checkpoint.size),
            ..RoundOutcome::default()
        };
        for (witness, key) in self.schedule.witnesses.iter().zip(&keys) {
            let old = sizes.witnesses.get(key).copied().unwrap_or(0);
            let answer = self.runtime.block_on(client::cosign(
                self.http,
                witness,
                &note,
                checkpoint.size,
                old,
                &mut prove,
            ));
            match answer {
                Ok(sig) => {
                    cosigned.add(sig);
                    sizes.witnesses.insert(key.clone(), checkpoint.size);
                    sizes.refused.remove(key);
                    outcome.cosigned += 1;
                }
                Err(e) => {
                    eprintln!("chainlog serve: workspace {name}: {e}");
                    if is_refusal(&e) {
                        outcome.refused += 1;
                        if !sizes.refused.contains_key(key) {
                            record_refusal(&log, name, witness, &checkpoint, &e);
                        }
                        sizes.refused.insert(key.clone(), checkpoint.size);
                    }
                }
            }
        }
        let text = serde_json::to_vec(&sizes).map_err(|e| e.to_string())?;
        store(self.data_dir, &format!("{name}.sizes.json"), &text).map_err(|e| e.to_string())?;
        if outcome.cosigned >= self.schedule.quorum {
            let name = format!("{name}.checkpoint");
            store(self.data_dir, &name, cosigned.to_text().as_bytes())
                .map_err(|e| e.to_string())?;
        }
        Ok(outcome)
    }
}

/// Whether the witness refused the checkpoint for what it cosigned before
/// (not for being unreachable or answering something unexpected).
fn is_refusal(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::WitnessAhead { .. }
            | ClientError::Refused {
                status: 409 | 422,
                ..
            }
    )
}

fn record_refusal(
    log: &Log,
    workspace: &str,
    witness: &WitnessEndpoint,
    checkpoint: &Checkpoint,
    e: &ClientError,
) {
    let mut event = Event::new(Timestamp::now(), EVENT_WITNESS_REFUSED, "system");
    event.outcome = Outcome::Failure;
    event.resource = Some(witness.key.to_text());
    let c = &mut event.context;
    c.insert("witness_url".into(), witness.url.clone().into());
    c.insert("origin".into(), checkpoint.origin.clone().into());
    c.insert("size".into(), checkpoint.size.into());
    c.insert("reason".into(), e.to_string().into());
    if let Err(e) = log.append(&event) {
        eprintln!("chainlog serve: recording witness.refused in workspace {workspace} failed: {e}");
    }
}

/// The running witnessing thread.
pub(crate) struct Witnessing {
    stop: StopFlag,
    thread: JoinHandle<()>,
}

impl Witnessing {
    /// Starts the rounds; each workspace's failures are reported on
    /// standard error.
    pub(crate) fn start(
        data_dir: PathBuf,
        state: Arc<crate::server::AppState>,
        schedule: WitnessSchedule,
    ) -> Witnessing {
        let stop = StopFlag::default();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let (Ok(runtime), Some(signer)) = (
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build(),
                state.signer.as_ref(),
            ) else {
                eprintln!("chainlog serve: witnessing cannot start (no runtime or no signer)");
                return;
            };
            let http = reqwest::Client::new();
            let round = Round {
                data_dir: &data_dir,
                workspaces: &state.workspaces,
                signer,
                origin: &state.checkpoint_origin,
                schedule: &schedule,
                http: &http,
                runtime: &runtime,
            };
            loop {
                for name in round.workspace_names() {
                    if stopping.is_set() {
                        return;
                    }
                    if let Err(e) = round.workspace(&name) {
                        eprintln!("chainlog serve: witnessing workspace {name}: {e}");
                    }
                }
                if stopping.wait(schedule.every) {
                    return;
                }
            }
        });
        Witnessing { stop, thread }
    }

    /// Stops the rounds and waits for the one in progress (its requests
    /// time out after [`client::REQUEST_TIMEOUT`]).
    pub(crate) fn stop(self) {
        self.stop.set();
        let _ = self.thread.join();
    }
}
