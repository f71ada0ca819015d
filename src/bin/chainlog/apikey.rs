//! `chainlog apikey create|rotate|revoke|list`: the server's API keys
//! (see `chainlog::server::keys`). Creating, rotating and revoking a key
//! append an `apikey.*` event to the key's workspace log first. While a
//! `chainlog serve` holds that log, the change is made in `keys.json` at
//! once (a revoked key stops working with the server's next request) and
//! the server records its event when it notices the change (within half a
//! second): the break-glass path when an admin key is stolen.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chainlog::server::key_watch::server_running;
use chainlog::server::keys::{ChangedBy, KeyAudit, KeyError, KeyInfo, KeyStore, Scope, Via};
use chainlog::server::workspace::Workspaces;
use chainlog::storage::perms::check_dir_owner;
use chainlog::{Event, Receipt};
use clap::{Args, Subcommand};

use crate::error::CliError;

/// The actor when neither `--actor` nor a user name is there.
const DEFAULT_ACTOR: &str = "admin-cli";

/// `chainlog apikey`'s subcommands.
#[derive(Debug, Subcommand)]
pub enum ApikeyCommand {
    /// Create a key for a workspace (creating the workspace if needed); the
    /// key is printed once, alone on the last line. Under `chainlog serve
    /// --admin-keys local-only` this is the only way to make an admin key.
    Create {
        #[command(flatten)]
        data: DataArg,
        /// The workspace: 1-63 of a-z, 0-9, '_', '-', starting with a letter or digit.
        #[arg(long, value_name = "NAME")]
        workspace: String,
        /// append (POST events), read (GET events, export, verify,
        /// checkpoint) or admin (both, and manage the workspace's keys).
        #[arg(long, value_name = "SCOPE")]
        scope: String,
        #[command(flatten)]
        actor: ActorArg,
    },
    /// Replace a key's secret; the old secret stops working at once. The new
    /// key is printed once, alone on the last line.
    Rotate {
        #[command(flatten)]
        data: DataArg,
        /// The key's id (the 16 hex digits after `clk_`).
        #[arg(value_name = "KEY_ID")]
        id: String,
        #[command(flatten)]
        actor: ActorArg,
    },
    /// Revoke a key for good. Works while `chainlog serve` runs: the key is
    /// refused from the server's next request on, and the server records
    /// the event (the break-glass path for a stolen key).
    Revoke {
        #[command(flatten)]
        data: DataArg,
        /// The key's id.
        #[arg(value_name = "KEY_ID")]
        id: String,
        #[command(flatten)]
        actor: ActorArg,
    },
    /// List keys (never their secrets).
    List {
        #[command(flatten)]
        data: DataArg,
        /// Only this workspace's keys.
        #[arg(long, value_name = "NAME")]
        workspace: Option<String>,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
}

/// `--data DIR`.
#[derive(Debug, Args)]
pub struct DataArg {
    /// The server's data directory.
    #[arg(long, value_name = "DIR", env = "CHAINLOG_DATA")]
    data: PathBuf,
    /// Change keys although the data directory belongs to another user
    /// (files written now would belong to this user).
    #[arg(long)]
    allow_other_owner: bool,
}

impl DataArg {
    /// The data directory, refused when another user owns it.
    pub fn checked(&self) -> Result<&Path, CliError> {
        if !self.allow_other_owner {
            check_dir_owner(&self.data).map_err(|e| CliError::Usage(e.to_string()))?;
        }
        Ok(&self.data)
    }
}

/// `--actor A`.
#[derive(Debug, Args)]
pub struct ActorArg {
    /// Who makes the change, recorded as the event's actor. Default: the
    /// operating system's user name, or `admin-cli`.
    #[arg(long, value_name = "ACTOR")]
    actor: Option<String>,
}

impl ActorArg {
    fn changed_by(&self) -> ChangedBy {
        ChangedBy {
            actor: self.actor.clone().unwrap_or_else(os_user_name),
            ip: None::<IpAddr>,
            via: Via::Local,
        }
    }
}

/// `$USER`, `$LOGNAME` or the passwd entry of the real user id.
fn os_user_name() -> String {
    let valid = |n: &str| !n.is_empty() && n.len() <= 256 && !n.chars().any(char::is_control);
    for var in ["USER", "LOGNAME"] {
        if let Ok(name) = std::env::var(var) {
            if valid(&name) {
                return name;
            }
        }
    }
    // The owner of /proc/self is the process's user.
    let uid = match std::fs::metadata("/proc/self") {
        Ok(m) => std::os::unix::fs::MetadataExt::uid(&m).to_string(),
        Err(_) => return DEFAULT_ACTOR.to_string(),
    };
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.len() > 2 && fields[2] == uid && valid(fields[0]))
                    .then(|| fields[0].to_string())
            })
        })
        .unwrap_or_else(|| DEFAULT_ACTOR.to_string())
}

/// Appends key events to workspace logs, opened for the one event.
struct CliAudit<'a> {
    data: &'a Path,
}

impl KeyAudit for CliAudit<'_> {
    fn record(
        &self,
        workspace: &str,
        create: bool,
        event: &Event,
    ) -> Result<Option<Receipt>, KeyError> {
        let workspaces = Workspaces::new(self.data);
        let fail = |reason: String| KeyError::Audit {
            workspace: workspace.to_string(),
            reason,
        };
        let log = match workspaces.open(workspace, create) {
            Ok(Some(log)) => log,
            Ok(None) => return Err(fail("the workspace has no log".into())),
            // The running server records the event when it sees the change.
            Err(chainlog::Error::Locked(_)) if server_running(self.data) => return Ok(None),
            Err(chainlog::Error::Locked(_)) => {
                return Err(fail(
                    "its log is held by another writer (not a `chainlog serve` on this data \
                     directory); try again when it is done"
                        .into(),
                ))
            }
            Err(e) => return Err(fail(e.to_string())),
        };
        let receipt = log.append(event).map_err(|e| fail(e.to_string()))?;
        // Let go of the log first: close_all waits (up to its grace) for
        // every other holder, and this one would otherwise cost the whole
        // wait on every command.
        drop(log);
        let failures = workspaces.close_all(std::time::Duration::from_secs(5));
        if let Some((_, e)) = failures.into_iter().next() {
            return Err(fail(e.to_string()));
        }
        Ok(Some(receipt))
    }
}

fn key_error(e: KeyError) -> CliError {
    CliError::Usage(e.to_string())
}

fn open_store(data: &DataArg) -> Result<KeyStore, CliError> {
    KeyStore::open_as(&data.data, data.allow_other_owner).map_err(key_error)
}

/// How long the CLI waits for a running server to record a change it left
/// to it; the server looks at least every half second.
const SERVER_RECORD_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How the event was recorded, for the messages. A change left to a
/// running server is waited for (the change itself is in force already).
fn recorded(store: &KeyStore, id: &str, event: &str, receipt: Option<Receipt>) -> String {
    if let Some(r) = receipt {
        return format!("{event} is seq {} of the workspace's log", r.seq);
    }
    let deadline = std::time::Instant::now() + SERVER_RECORD_WAIT;
    loop {
        if let Ok(Some(seq)) = store.recorded_seq(id) {
            return format!(
                "the running server holds the workspace's log and recorded {event} as seq {seq}"
            );
        }
        if std::time::Instant::now() >= deadline {
            eprintln!(
                "chainlog: warning: the running server has not recorded {event} within {} s; \
                 the change is in force, and the server records it when it next looks at keys.json \
                 (see its standard error if it does not)",
                SERVER_RECORD_WAIT.as_secs()
            );
            return format!(
                "the running server holds the workspace's log and is to record {event}"
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn key_line(k: &KeyInfo) -> String {
    let status = match (k.revoked_at, k.rotated_at) {
        (Some(at), _) => format!("revoked {at}"),
        (None, Some(at)) => format!("active (rotated {at})"),
        (None, None) => "active".to_string(),
    };
    format!(
        "{}  {:<20} {:<6}  created {} by {}  {}",
        k.id, k.workspace, k.scope, k.created_at, k.created_by, status
    )
}

/// Runs `chainlog apikey …`.
pub fn run(command: ApikeyCommand, quiet: bool) -> Result<ExitCode, CliError> {
    match command {
        ApikeyCommand::Create {
            data,
            workspace,
            scope,
            actor,
        } => {
            let scope: Scope = scope.parse().map_err(key_error)?;
            let dir = data.checked()?;
            let store = open_store(&data)?;
            let issued = store
                .create(
                    &workspace,
                    scope,
                    &actor.changed_by(),
                    &CliAudit { data: dir },
                )
                .map_err(key_error)?;
            if !quiet {
                outln!(
                    "created API key {} for workspace {} with scope {} ({})",
                    issued.key.id,
                    issued.key.workspace,
                    issued.key.scope,
                    recorded(&store, &issued.key.id, "apikey.created", issued.receipt)
                )?;
                outln!("the key is shown only now; send it as `Authorization: Bearer <key>`:")?;
            }
            outln!("{}", issued.text)?;
        }
        ApikeyCommand::Rotate { data, id, actor } => {
            let dir = data.checked()?;
            let store = open_store(&data)?;
            let issued = store
                .rotate(&id, None, &actor.changed_by(), &CliAudit { data: dir })
                .map_err(key_error)?;
            if !quiet {
                outln!(
                    "rotated API key {} of workspace {}: the old secret no longer works ({})",
                    issued.key.id,
                    issued.key.workspace,
                    recorded(&store, &issued.key.id, "apikey.rotated", issued.receipt)
                )?;
                outln!("the new key is shown only now:")?;
            }
            outln!("{}", issued.text)?;
        }
        ApikeyCommand::Revoke { data, id, actor } => {
            let dir = data.checked()?;
            let store = open_store(&data)?;
            let revoked = store
                .revoke(&id, None, &actor.changed_by(), &CliAudit { data: dir })
                .map_err(key_error)?;
            outln!(
                "revoked API key {} of workspace {} ({})",
                revoked.key.id,
                revoked.key.workspace,
                recorded(&store, &revoked.key.id, "apikey.revoked", revoked.receipt)
            )?;
        }
        ApikeyCommand::List {
            data,
            workspace,
            json,
        } => {
            let store = open_store(&data)?;
            let keys = store.list(workspace.as_deref()).map_err(key_error)?;
            if json {
                let text = serde_json::to_string(&keys)
                    .map_err(|e| CliError::Usage(format!("encoding the key list: {e}")))?;
                outln!("{text}")?;
            } else {
                for k in &keys {
                    outln!("{}", key_line(k))?;
                }
                if !quiet {
                    outln!(
                        "{} key{}",
                        keys.len(),
                        if keys.len() == 1 { "" } else { "s" }
                    )?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
