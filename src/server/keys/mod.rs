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

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::event::{Event, Timestamp};
use crate::log::Receipt;
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

mod file;
mod store;
#[cfg(test)]
mod tests;

pub use store::KeyStore;
