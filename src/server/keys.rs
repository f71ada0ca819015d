//! API keys: their text form, how they are stored, and the changes to them
//! that are recorded in a workspace's log.
//!
//! A key's text is `clk_<id>_<secret>`: `id` is 8 random bytes as 16
//! lowercase hex digits, `secret` 32 random bytes as 43 characters of
//! unpadded base64url (which may itself contain `_`; the id has a fixed
//! length, so the text still splits unambiguously). The key is shown once,
//! when it is created or rotated. `DIR/keys.json` keeps the id in clear and
//! only the SHA-256 of the secret's 43 ASCII characters; a presented key is
//! found by its id and its secret's hash compared in constant time. The
//! secret is 256 random bits, so a fast hash is enough: there is nothing to
//! guess a dictionary from.
//!
//! `keys.json` is replaced atomically (temporary file with mode 0600,
//! fsync, rename, directory fsync). A change takes an exclusive `flock` on
//! `DIR/keys.lock`, re-reads the file, appends its event to the
//! workspace's log (through [`KeyAudit`]) and only then writes the file, so
//! the CLI and a running server can both change keys, and no key change
//! happens without its event. A server notices changes the CLI made: it
//! re-reads the file whenever its size, inode, modification time, mode or
//! owner changes.
//!
//! The file is refused (not read: the keys as last read stay in force)
//! when others may write it ([`super::key_policy`]) or it is a symbolic
//! link. Changes made outside a [`KeyStore`] are found by comparing the
//! file with the keys as last read, and handed out as events to record by
//! [`KeyStore::take_outside_changes`] ([`super::key_watch`]).

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::event::{Event, Outcome, Timestamp};
use crate::log::Receipt;
use crate::server::key_policy::{check_key_file, check_via, KeyFileCheck};
pub use crate::server::key_policy::{AdminKeys, Via};
use crate::server::key_watch::{outside_changes, OutsideChange};
use crate::server::workspace::{validate_workspace_name, WorkspaceNameError};
use crate::storage::perms::UnsafeFileError;

/// The key file's name in the data directory.
pub const KEYS_FILE_NAME: &str = "keys.json";
/// The lock file taken while the key file changes.
pub const KEYS_LOCK_FILE_NAME: &str = "keys.lock";
/// Every key's text starts with this.
pub const KEY_PREFIX: &str = "clk_";
/// Hex digits in a key id.
pub const KEY_ID_HEX_DIGITS: usize = 16;
/// Characters of a key's secret (32 bytes, unpadded base64url).
pub const KEY_SECRET_CHARS: usize = 43;
/// Length of a whole key's text.
pub const KEY_TEXT_CHARS: usize = KEY_PREFIX.len() + KEY_ID_HEX_DIGITS + 1 + KEY_SECRET_CHARS;
/// Largest key file read (a key takes about 300 bytes).
const MAX_KEYS_FILE_BYTES: u64 = 64 << 20;
/// The key file's format marker and version.
const KEYS_FORMAT: &str = "chainlog-api-keys";
const KEYS_VERSION: u32 = 1;

/// Event recorded when a key is created.
pub const EVENT_KEY_CREATED: &str = "apikey.created";
/// Event recorded when a key's secret is replaced.
pub const EVENT_KEY_ROTATED: &str = "apikey.rotated";
/// Event recorded when a key is revoked.
pub const EVENT_KEY_REVOKED: &str = "apikey.revoked";

/// What a key may do, within its own workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Only `POST` events.
    Append,
    /// Only read: events, export, verify, checkpoint.
    Read,
    /// Append and read, and manage the workspace's keys.
    Admin,
}

impl Scope {
    /// `append`, `read` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Append => "append",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    /// Whether a key of this scope may do what `needed` guards.
    pub fn allows(self, needed: Scope) -> bool {
        self == Scope::Admin || self == needed
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        match s {
            "append" => Ok(Scope::Append),
            "read" => Ok(Scope::Read),
            "admin" => Ok(Scope::Admin),
            other => Err(KeyError::BadScope(other.to_string())),
        }
    }
}

/// A stored key: everything but its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// The key's id: 16 lowercase hex digits, shown in the key's text.
    pub id: String,
    /// The one workspace the key works on.
    pub workspace: String,
    /// What it may do there.
    pub scope: Scope,
    /// SHA-256 of the secret's text, as 64 hex digits.
    pub secret_sha256: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// Who created it.
    pub created_by: String,
    /// When its secret was last replaced.
    #[serde(default)]
    pub rotated_at: Option<Timestamp>,
    /// When it was revoked; a revoked key never works again.
    #[serde(default)]
    pub revoked_at: Option<Timestamp>,
    /// Seq (in the workspace's log) of the event that recorded the key's
    /// latest change; none when a running server is to record it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_seq: Option<u64>,
    /// Who made the latest change when a running server is to record it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_by: Option<String>,
}

impl ApiKey {
    /// Whether the key still works.
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

/// A key as listed: [`ApiKey`] without the secret's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// The key's id.
    pub id: String,
    /// Its workspace.
    pub workspace: String,
    /// Its scope.
    pub scope: Scope,
    /// When it was created.
    pub created_at: Timestamp,
    /// Who created it.
    pub created_by: String,
    /// When its secret was last replaced.
    pub rotated_at: Option<Timestamp>,
    /// When it was revoked.
    pub revoked_at: Option<Timestamp>,
}

impl From<&ApiKey> for KeyInfo {
    fn from(k: &ApiKey) -> Self {
        KeyInfo {
            id: k.id.clone(),
            workspace: k.workspace.clone(),
            scope: k.scope,
            created_at: k.created_at,
            created_by: k.created_by.clone(),
            rotated_at: k.rotated_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// A key just created or rotated, with the text shown this once.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    /// The stored key.
    pub key: KeyInfo,
    /// `clk_<id>_<secret>`: give it to the client; it is not stored.
    pub text: String,
    /// The receipt of the `apikey.*` event in the workspace's log; none
    /// when a running server records it (the CLI, while a server holds
    /// the workspace's log).
    pub receipt: Option<Receipt>,
}

/// A revoked key, with the receipt of its `apikey.revoked` event.
#[derive(Debug, Clone)]
pub struct RevokedKey {
    /// The key, now revoked.
    pub key: KeyInfo,
    /// The receipt of the event, as for [`IssuedKey::receipt`].
    pub receipt: Option<Receipt>,
}

/// Who changes a key: the event's actor and source address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedBy {
    /// The event's actor (`alice`, `admin-cli`, `apikey:<id>`).
    pub actor: String,
    /// The client's address; none for the CLI.
    pub ip: Option<IpAddr>,
    /// Whether the change comes over HTTP or from the machine.
    pub via: Via,
}

/// Records key changes in a workspace's log. The change is made only if
/// the event was appended (and is durable), or handed to a running server
/// to record (`Ok(None)`).
pub trait KeyAudit {
    /// Appends `event` to `workspace`'s log (creating the log if `create`).
    fn record(
        &self,
        workspace: &str,
        create: bool,
        event: &Event,
    ) -> Result<Option<Receipt>, KeyError>;
}

/// What went wrong with keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Reading or writing the key file failed.
    #[error("{doing} {path}: {source}")]
    Io {
        /// What was being done.
        doing: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The key file is not valid.
    #[error("{path} is not a valid key file: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Not `append`, `read` or `admin`.
    #[error("unknown scope {0:?} (expected append, read or admin)")]
    BadScope(String),
    /// A workspace name is not valid.
    #[error(transparent)]
    BadWorkspace(#[from] WorkspaceNameError),
    /// No key has this id.
    #[error("no API key has the id {0:?}")]
    NotFound(String),
    /// The key was revoked already.
    #[error("API key {0} is revoked")]
    Revoked(String),
    /// The actor is not a valid event actor.
    #[error("bad actor {0:?}: it must be 1 to 256 bytes with no control characters")]
    BadActor(String),
    /// The event could not be appended; nothing was changed.
    #[error(
        "recording the event in workspace {workspace:?} failed, so no key was changed: {reason}"
    )]
    Audit {
        /// The workspace.
        workspace: String,
        /// Why.
        reason: String,
    },
    /// The event was appended, but the key file could not be written.
    #[error("the {event} event was recorded (seq {seq}) but the key file could not be written, so the change did not take effect: {source}")]
    AfterAudit {
        /// The event type.
        event: &'static str,
        /// Its seq.
        seq: u64,
        /// The write error.
        #[source]
        source: Box<KeyError>,
    },
    /// No random numbers.
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
    /// The key file or data directory may be changed by someone other than
    /// its owner, or belongs to another user: it is not read.
    #[error("refusing the key file: {0}")]
    Unsafe(#[from] UnsafeFileError),
    /// Under `--admin-keys local-only`, an admin key change over HTTP.
    #[error("admin keys are created, rotated and revoked only on the server's machine (`chainlog apikey`): the server runs with --admin-keys local-only")]
    LocalOnly,
}

/// How a presented key was judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    /// A valid, active key.
    Valid(ApiKey),
    /// Not a valid key. `key_id` is the id it named, when it had the key
    /// form; `reason` is for the audit record.
    Invalid {
        /// The id in the presented text, when there was one.
        key_id: Option<String>,
        /// `malformed`, `unknown_key`, `wrong_secret` or `revoked`.
        reason: &'static str,
    },
}

/// The parts of a key's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyText<'a> {
    /// The 16 hex digits of the id.
    pub id: &'a str,
    /// The 43 base64url characters of the secret.
    pub secret: &'a str,
}

/// Splits `clk_<id>_<secret>`; `None` when the text does not have that form.
pub fn parse_key_text(text: &str) -> Option<KeyText<'_>> {
    let rest = text.strip_prefix(KEY_PREFIX)?;
    if rest.len() != KEY_ID_HEX_DIGITS + 1 + KEY_SECRET_CHARS || !rest.is_ascii() {
        return None;
    }
    let (id, rest) = rest.split_at(KEY_ID_HEX_DIGITS);
    let secret = rest.strip_prefix('_')?;
    let id_ok = id
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let secret_ok = secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some(KeyText { id, secret })
}

/// Whether `id` has the form of a key id.
pub fn is_key_id(id: &str) -> bool {
    id.len() == KEY_ID_HEX_DIGITS
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(bytes)
}

/// A new secret and its text: 32 random bytes, base64url.
fn new_secret() -> Result<String, KeyError> {
    Ok(URL_SAFE_NO_PAD.encode(random::<32>()?))
}

/// The key file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    format: String,
    version: u32,
    keys: Vec<ApiKey>,
}

impl KeyFile {
    fn empty() -> Self {
        KeyFile {
            format: KEYS_FORMAT.into(),
            version: KEYS_VERSION,
            keys: Vec::new(),
        }
    }
}

/// What identifies one version of the key file on disk.
/// Mode and owner are in it so that a `chmod` or `chown` alone is noticed
/// (and refused) too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    mode: u32,
    uid: u32,
}

impl FileStamp {
    fn of(path: &Path) -> io::Result<Option<FileStamp>> {
        match fs::symlink_metadata(path) {
            Ok(m) => Ok(Some(FileStamp::from_metadata(&m))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn from_metadata(m: &fs::Metadata) -> FileStamp {
        FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            mode: m.mode(),
            uid: m.uid(),
        }
    }
}

/// The keys as last read, indexed by id.
#[derive(Debug)]
struct Cached {
    stamp: Option<FileStamp>,
    by_id: HashMap<String, ApiKey>,
}

/// The API keys of a data directory.
#[derive(Debug)]
pub struct KeyStore {
    dir: PathBuf,
    path: PathBuf,
    cache: RwLock<Cached>,
    admin_keys: AdminKeys,
    /// Changes made outside this store, found but not yet handed out.
    outside: parking_lot::Mutex<Vec<OutsideChange>>,
    /// A server's shared lock on the data directory, held for the store's life.
    _server_lock: Option<File>,
    /// Whether a key file and data directory of another user are accepted
    /// (their modes are checked all the same).
    other_owner: bool,
}

impl KeyStore {
    /// Opens the key store of the data directory `dir` (no key file yet
    /// means no keys).
    pub fn open(dir: &Path) -> Result<KeyStore, KeyError> {
        KeyStore::open_as(dir, false)
    }

    /// [`KeyStore::open`], accepting a key file and data directory owned by
    /// another user when `other_owner` (`chainlog apikey
    /// --allow-other-owner`).
    pub fn open_as(dir: &Path, other_owner: bool) -> Result<KeyStore, KeyError> {
        let path = dir.join(KEYS_FILE_NAME);
        let (stamp, file) = read_key_file(&path, other_owner)?;
        Ok(KeyStore {
            dir: dir.to_path_buf(),
            path,
            cache: RwLock::new(Cached {
                stamp,
                by_id: index(file),
            }),
            admin_keys: AdminKeys::Any,
            outside: parking_lot::Mutex::new(Vec::new()),
            _server_lock: None,
            other_owner,
        })
    }

    /// The same store, holding the lock that tells the CLI a server runs
    /// here and records the key changes the CLI leaves to it.
    pub fn as_server(mut self) -> Result<KeyStore, KeyError> {
        let lock = crate::server::key_watch::hold_server_lock(&self.dir).map_err(|source| {
            KeyError::Io {
                doing: "locking",
                path: self.dir.clone(),
                source,
            }
        })?;
        self._server_lock = Some(lock);
        Ok(self)
    }

    /// The same store, with this policy for admin keys changed over HTTP.
    pub fn with_admin_keys(mut self, admin_keys: AdminKeys) -> KeyStore {
        self.admin_keys = admin_keys;
        self
    }

    /// Hands out (once) the changes made outside this store that it has
    /// found, oldest first.
    pub fn take_outside_changes(&self) -> Vec<OutsideChange> {
        std::mem::take(&mut *self.outside.lock())
    }

    /// Re-reads the key file if it changed on disk since it was last read,
    /// noting changes made outside this store. On an error the keys as last
    /// read stay in force.
    pub fn reload(&self) -> Result<(), KeyError> {
        self.refresh()
    }

    /// Replaces the cache with `by_id`, noting what changed outside.
    fn replace_cache(&self, stamp: Option<FileStamp>, by_id: HashMap<String, ApiKey>) {
        let mut cache = self.cache.write();
        let found = outside_changes(&cache.by_id, &by_id);
        if !found.is_empty() {
            self.outside.lock().extend(found);
        }
        *cache = Cached { stamp, by_id };
    }

    /// Re-reads the key file if it changed on disk since it was last read.
    fn refresh(&self) -> Result<(), KeyError> {
        let stamp = FileStamp::of(&self.path).map_err(|source| KeyError::Io {
            doing: "reading",
            path: self.path.clone(),
            source,
        })?;
        if stamp == self.cache.read().stamp {
            return Ok(());
        }
        let (stamp, file) = read_key_file(&self.path, self.other_owner)?;
        self.replace_cache(stamp, index(file));
        Ok(())
    }

    /// Judges a presented key. A key file that cannot be re-read leaves the
    /// keys as last read (and the error is returned beside the verdict).
    pub fn check(&self, presented: &str) -> (KeyCheck, Option<KeyError>) {
        let refresh_error = self.refresh().err();
        let Some(text) = parse_key_text(presented) else {
            return (
                KeyCheck::Invalid {
                    key_id: None,
                    reason: "malformed",
                },
                refresh_error,
            );
        };
        let invalid = |reason| KeyCheck::Invalid {
            key_id: Some(text.id.to_string()),
            reason,
        };
        let cache = self.cache.read();
        let verdict = match cache.by_id.get(text.id) {
            None => invalid("unknown_key"),
            Some(key) => {
                let stored = unhex32(&key.secret_sha256).unwrap_or([0; 32]);
                let matches: bool = secret_hash(text.secret).ct_eq(&stored).into();
                if !matches {
                    invalid("wrong_secret")
                } else if !key.is_active() {
                    invalid("revoked")
                } else {
                    KeyCheck::Valid(key.clone())
                }
            }
        };
        (verdict, refresh_error)
    }

    /// Every key (of `workspace`, when given), oldest first.
    pub fn list(&self, workspace: Option<&str>) -> Result<Vec<KeyInfo>, KeyError> {
        self.refresh()?;
        let cache = self.cache.read();
        let mut keys: Vec<KeyInfo> = cache
            .by_id
            .values()
            .filter(|k| workspace.is_none_or(|w| k.workspace == w))
            .map(KeyInfo::from)
            .collect();
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(keys)
    }

    /// The key with this id.
    pub fn get(&self, id: &str) -> Result<Option<KeyInfo>, KeyError> {
        self.refresh()?;
        Ok(self.cache.read().by_id.get(id).map(KeyInfo::from))
    }

    /// The seq of the event that recorded key `id`'s latest change, as the
    /// file says; none while a running server has yet to record it.
    pub fn recorded_seq(&self, id: &str) -> Result<Option<u64>, KeyError> {
        self.refresh()?;
        Ok(self.cache.read().by_id.get(id).and_then(|k| k.event_seq))
    }

    /// Notes that the change of key `id` made outside this store was
    /// recorded at `seq` of its workspace's log (when the file has no seq
    /// for it yet).
    pub fn note_recorded(&self, id: &str, seq: u64) -> Result<(), KeyError> {
        let cached = self.cache.read().by_id.get(id).map(|k| k.event_seq);
        if !matches!(cached, Some(None)) {
            return Ok(());
        }
        self.change(|file| {
            let key = file.keys.iter_mut().find(|k| k.id == id);
            if let Some(key) = key.filter(|k| k.event_seq.is_none()) {
                key.event_seq = Some(seq);
                key.pending_by = None;
            }
            Ok(((), "", None))
        })
    }

    /// Creates a key for `workspace` (whose log is created if missing),
    /// after recording `apikey.created` there.
    pub fn create(
        &self,
        workspace: &str,
        scope: Scope,
        by: &ChangedBy,
        audit: &dyn KeyAudit,
    ) -> Result<IssuedKey, KeyError> {
        validate_workspace_name(workspace)?;
        check_actor(&by.actor)?;
        check_via(self.admin_keys, scope, by)?;
        self.change(|file| {
            let id = loop {
                let id = hex(&random::<8>()?);
                if !file.keys.iter().any(|k| k.id == id) {
                    break id;
                }
            };
            let secret = new_secret()?;
            let now = Timestamp::now();
            let key = ApiKey {
                id: id.clone(),
                workspace: workspace.to_string(),
                scope,
                secret_sha256: hex(&secret_hash(&secret)),
                created_at: now,
                created_by: by.actor.clone(),
                rotated_at: None,
                revoked_at: None,
                event_seq: None,
                pending_by: None,
            };
            let event = key_event(EVENT_KEY_CREATED, &key, by, now);
            let receipt = audit.record(workspace, true, &event)?;
            let mut key = key;
            mark_recorded(&mut key, receipt, by);
            let info = KeyInfo::from(&key);
            file.keys.push(key);
            Ok((
                IssuedKey {
                    key: info,
                    text: format!("{KEY_PREFIX}{id}_{secret}"),
                    receipt,
                },
                EVENT_KEY_CREATED,
                receipt.map(|r| r.seq),
            ))
        })
    }

    /// Replaces a key's secret (the old one stops working at once), after
    /// recording `apikey.rotated` in its workspace. With `workspace`, the
    /// key must belong to it.
    pub fn rotate(
        &self,
        id: &str,
        workspace: Option<&str>,
        by: &ChangedBy,
        audit: &dyn KeyAudit,
    ) -> Result<IssuedKey, KeyError> {
        check_actor(&by.actor)?;
        self.change(|file| {
            let key = find_key(file, id, workspace)?;
            if !key.is_active() {
                return Err(KeyError::Revoked(id.to_string()));
            }
            check_via(self.admin_keys, key.scope, by)?;
            let secret = new_secret()?;
            let now = Timestamp::now();
            let event = key_event(EVENT_KEY_ROTATED, key, by, now);
            let receipt = audit.record(&key.workspace.clone(), false, &event)?;
            key.secret_sha256 = hex(&secret_hash(&secret));
            key.rotated_at = Some(now);
            mark_recorded(key, receipt, by);
            Ok((
                IssuedKey {
                    key: KeyInfo::from(&*key),
                    text: format!("{KEY_PREFIX}{id}_{secret}"),
                    receipt,
                },
                EVENT_KEY_ROTATED,
                receipt.map(|r| r.seq),
            ))
        })
    }

    /// Revokes a key for good, after recording `apikey.revoked` in its
    /// workspace. With `workspace`, the key must belong to it.
    pub fn revoke(
        &self,
        id: &str,
        workspace: Option<&str>,
        by: &ChangedBy,
        audit: &dyn KeyAudit,
    ) -> Result<RevokedKey, KeyError> {
        check_actor(&by.actor)?;
        self.change(|file| {
            let key = find_key(file, id, workspace)?;
            if !key.is_active() {
                return Err(KeyError::Revoked(id.to_string()));
            }
            check_via(self.admin_keys, key.scope, by)?;
            let now = Timestamp::now();
            let event = key_event(EVENT_KEY_REVOKED, key, by, now);
            let receipt = audit.record(&key.workspace.clone(), false, &event)?;
            key.revoked_at = Some(now);
            mark_recorded(key, receipt, by);
            Ok((
                RevokedKey {
                    key: KeyInfo::from(&*key),
                    receipt,
                },
                EVENT_KEY_REVOKED,
                receipt.map(|r| r.seq),
            ))
        })
    }

    /// Runs one change under the lock: re-read (noting changes made
    /// outside), change (which records its event), write, and refresh the
    /// cache.
    fn change<T>(
        &self,
        f: impl FnOnce(&mut KeyFile) -> Result<(T, &'static str, Option<u64>), KeyError>,
    ) -> Result<T, KeyError> {
        crate::storage::perms::create_private_dir_all(&self.dir).map_err(|source| {
            KeyError::Io {
                doing: "creating",
                path: self.dir.clone(),
                source,
            }
        })?;
        let _lock = lock_keys(&self.dir)?;
        let (stamp, file) = read_key_file(&self.path, self.other_owner)?;
        self.replace_cache(stamp, index(file.clone()));
        let mut file = file.unwrap_or_else(KeyFile::empty);
        let (out, event, seq) = f(&mut file)?;
        write_key_file(&self.dir, &self.path, &file).map_err(|e| match seq {
            Some(seq) => KeyError::AfterAudit {
                event,
                seq,
                source: Box::new(e),
            },
            None => e,
        })?;
        let stamp = FileStamp::of(&self.path).ok().flatten();
        *self.cache.write() = Cached {
            stamp,
            by_id: index(Some(file)),
        };
        Ok(out)
    }
}

fn find_key<'a>(
    file: &'a mut KeyFile,
    id: &str,
    workspace: Option<&str>,
) -> Result<&'a mut ApiKey, KeyError> {
    file.keys
        .iter_mut()
        .find(|k| k.id == id && workspace.is_none_or(|w| k.workspace == w))
        .ok_or_else(|| KeyError::NotFound(id.to_string()))
}

/// Notes in the key who recorded its change: the event's seq, or who made
/// it when a running server is to record it.
fn mark_recorded(key: &mut ApiKey, receipt: Option<Receipt>, by: &ChangedBy) {
    key.event_seq = receipt.map(|r| r.seq);
    key.pending_by = receipt.is_none().then(|| by.actor.clone());
}

fn check_actor(actor: &str) -> Result<(), KeyError> {
    if actor.is_empty()
        || actor.len() > crate::limits::MAX_ACTOR_BYTES
        || actor.chars().any(char::is_control)
    {
        return Err(KeyError::BadActor(actor.to_string()));
    }
    Ok(())
}

/// The `apikey.*` event: the key's id as the resource, its scope and
/// workspace in the context. Never the secret or its hash.
fn key_event(event_type: &str, key: &ApiKey, by: &ChangedBy, at: Timestamp) -> Event {
    let mut event = Event::new(at, event_type, by.actor.clone());
    event.resource = Some(key.id.clone());
    event.source_ip = by.ip;
    event.outcome = Outcome::Success;
    event.context.insert("key_id".into(), key.id.clone().into());
    event
        .context
        .insert("workspace".into(), key.workspace.clone().into());
    event
        .context
        .insert("scope".into(), key.scope.as_str().into());
    event
}

fn index(file: Option<KeyFile>) -> HashMap<String, ApiKey> {
    file.map(|f| f.keys.into_iter().map(|k| (k.id.clone(), k)).collect())
        .unwrap_or_default()
}

/// Reads and checks the key file; `None` when there is none.
fn read_key_file(
    path: &Path,
    other_owner: bool,
) -> Result<(Option<FileStamp>, Option<KeyFile>), KeyError> {
    let io_err = |source| KeyError::Io {
        doing: "reading",
        path: path.to_path_buf(),
        source,
    };
    let bad = |reason: String| KeyError::BadFile {
        path: path.to_path_buf(),
        reason,
    };
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((None, None)),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(KeyError::Unsafe(UnsafeFileError {
                path: path.to_path_buf(),
                reason: "it is a symbolic link; the key file is never read through a link".into(),
            }))
        }
        Err(e) => return Err(io_err(e)),
    };
    let metadata = file.metadata().map_err(io_err)?;
    check_key_file(&metadata, path, other_owner).map_err(|e| match e {
        KeyFileCheck::Unsafe(e) => KeyError::Unsafe(e),
        KeyFileCheck::Io(e) => io_err(e),
    })?;
    if metadata.len() > MAX_KEYS_FILE_BYTES {
        return Err(bad(format!("it is over {MAX_KEYS_FILE_BYTES} bytes")));
    }
    let stamp = FileStamp::from_metadata(&metadata);
    let parsed: KeyFile =
        serde_json::from_reader(io::BufReader::new(file)).map_err(|e| bad(e.to_string()))?;
    if parsed.format != KEYS_FORMAT || parsed.version != KEYS_VERSION {
        return Err(bad(format!(
            "format {:?} version {} (this build reads {KEYS_FORMAT:?} version {KEYS_VERSION})",
            parsed.format, parsed.version
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for key in &parsed.keys {
        if !is_key_id(&key.id) || !seen.insert(key.id.as_str()) {
            return Err(bad(format!("bad or repeated key id {:?}", key.id)));
        }
        if unhex32(&key.secret_sha256).is_none() {
            return Err(bad(format!(
                "key {}: secret_sha256 is not 64 hex digits",
                key.id
            )));
        }
        validate_workspace_name(&key.workspace).map_err(|e| bad(format!("key {}: {e}", key.id)))?;
    }
    Ok((Some(stamp), Some(parsed)))
}

/// Replaces the key file: temporary file (mode 0600), fsync, rename,
/// directory fsync.
fn write_key_file(dir: &Path, path: &Path, file: &KeyFile) -> Result<(), KeyError> {
    let temp = dir.join(format!("{KEYS_FILE_NAME}.tmp"));
    let io_err = |doing, p: &Path| {
        let p = p.to_path_buf();
        move |source| KeyError::Io {
            doing,
            path: p,
            source,
        }
    };
    let mut text = serde_json::to_vec_pretty(file).map_err(|e| KeyError::BadFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    text.push(b'\n');
    match fs::remove_file(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("removing", &temp)(e)),
    }
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(io_err("creating", &temp))?;
    // The mode given at creation is masked by the umask; 0600 is narrower
    // than any umask leaves, but set it explicitly all the same.
    out.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_err("setting the mode of", &temp))?;
    out.write_all(&text).map_err(io_err("writing", &temp))?;
    out.sync_all().map_err(io_err("syncing", &temp))?;
    drop(out);
    fs::rename(&temp, path).map_err(io_err("renaming into place", path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing directory", dir))
}

/// The exclusive lock held while the key file changes (blocks until free).
fn lock_keys(dir: &Path) -> Result<File, KeyError> {
    let path = dir.join(KEYS_LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|source| KeyError::Io {
            doing: "opening",
            path: path.clone(),
            source,
        })?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
        KeyError::Io {
            doing: "locking",
            path,
            source: e.into(),
        }
    })?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct Recorder(RefCell<Vec<(String, Event)>>);

    impl KeyAudit for Recorder {
        fn record(
            &self,
            workspace: &str,
            _create: bool,
            event: &Event,
        ) -> Result<Option<Receipt>, KeyError> {
            let mut events = self.0.borrow_mut();
            events.push((workspace.to_string(), event.clone()));
            Ok(Some(Receipt {
                seq: events.len() as u64 - 1,
                hash: crate::ChainHash([0; 32]),
            }))
        }
    }

    struct Failing;

    impl KeyAudit for Failing {
        fn record(&self, workspace: &str, _: bool, _: &Event) -> Result<Option<Receipt>, KeyError> {
            Err(KeyError::Audit {
                workspace: workspace.into(),
                reason: "disk full".into(),
            })
        }
    }

    fn by() -> ChangedBy {
        ChangedBy {
            actor: "alice".into(),
            ip: None,
            via: Via::Local,
        }
    }

    #[test]
    fn key_text_round_trip_and_rejections() {
        let secret = URL_SAFE_NO_PAD.encode([0xffu8; 32]);
        assert_eq!(secret.len(), KEY_SECRET_CHARS);
        let text = format!("clk_0123456789abcdef_{secret}");
        assert_eq!(text.len(), KEY_TEXT_CHARS);
        let parsed = parse_key_text(&text).unwrap();
        assert_eq!(parsed.id, "0123456789abcdef");
        assert_eq!(parsed.secret, secret);
        for bad in [
            "",
            "clk_",
            &text[..text.len() - 1],
            &format!("{text}x"),
            &text.replace("clk_", "CLK_"),
            &text.replace("0123456789abcdef", "0123456789ABCDEF"),
            &format!("clk_0123456789abcdef_{}", "é".repeat(21)),
        ] {
            assert!(parse_key_text(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn create_check_rotate_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let audit = Recorder(RefCell::new(Vec::new()));
        let issued = store.create("acme", Scope::Read, &by(), &audit).unwrap();
        assert!(parse_key_text(&issued.text).is_some());
        let mode = fs::metadata(dir.path().join(KEYS_FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let stored = fs::read_to_string(dir.path().join(KEYS_FILE_NAME)).unwrap();
        let secret = parse_key_text(&issued.text).unwrap().secret;
        assert!(!stored.contains(secret), "the secret must not be stored");
        assert!(
            matches!(store.check(&issued.text).0, KeyCheck::Valid(k) if k.scope == Scope::Read)
        );

        // Another handle (the server) sees the change through the file.
        let other = KeyStore::open(dir.path()).unwrap();
        assert!(matches!(other.check(&issued.text).0, KeyCheck::Valid(_)));

        let mut wrong = issued.text.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(
            store.check(&wrong).0,
            KeyCheck::Invalid {
                key_id: Some(issued.key.id.clone()),
                reason: "wrong_secret"
            }
        );

        let rotated = store.rotate(&issued.key.id, None, &by(), &audit).unwrap();
        assert_eq!(rotated.key.id, issued.key.id);
        assert!(matches!(
            store.check(&issued.text).0,
            KeyCheck::Invalid {
                reason: "wrong_secret",
                ..
            }
        ));
        assert!(matches!(other.check(&rotated.text).0, KeyCheck::Valid(_)));

        assert!(matches!(
            store.revoke(&issued.key.id, Some("other"), &by(), &audit),
            Err(KeyError::NotFound(_))
        ));
        store
            .revoke(&issued.key.id, Some("acme"), &by(), &audit)
            .unwrap();
        assert!(matches!(
            other.check(&rotated.text).0,
            KeyCheck::Invalid {
                reason: "revoked",
                ..
            }
        ));
        assert!(matches!(
            store.rotate(&issued.key.id, None, &by(), &audit),
            Err(KeyError::Revoked(_))
        ));

        let events = audit.0.borrow();
        let types: Vec<&str> = events.iter().map(|(_, e)| e.event_type.as_str()).collect();
        assert_eq!(
            types,
            [EVENT_KEY_CREATED, EVENT_KEY_ROTATED, EVENT_KEY_REVOKED]
        );
        assert!(events
            .iter()
            .all(|(w, e)| w == "acme" && e.actor == "alice"));
        assert_eq!(store.list(Some("acme")).unwrap().len(), 1);
        assert!(store.list(Some("other")).unwrap().is_empty());
    }

    #[test]
    fn a_failed_audit_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        assert!(matches!(
            store.create("acme", Scope::Admin, &by(), &Failing),
            Err(KeyError::Audit { .. })
        ));
        assert!(store.list(None).unwrap().is_empty());
        assert!(matches!(
            store.create("../etc", Scope::Admin, &by(), &Failing),
            Err(KeyError::BadWorkspace(_))
        ));
    }
}
