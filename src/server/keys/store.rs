//! The key store: `keys.json` as last read, the changes made through it, and the changes found in it.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::event::{Event, Outcome, Timestamp};
use crate::log::Receipt;
use crate::server::key_policy::check_via;

use super::file::{lock_keys, read_key_file, write_key_file};
use super::*;

/// The key file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyFile {
    pub(super) format: String,
    pub(super) version: u32,
    pub(super) keys: Vec<ApiKey>,
}

impl KeyFile {
    pub(super) fn empty() -> Self {
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
pub(super) struct FileStamp {
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) len: u64,
    pub(super) mtime_ns: i128,
    pub(super) mode: u32,
    pub(super) uid: u32,
}

impl FileStamp {
    pub(super) fn of(path: &Path) -> io::Result<Option<FileStamp>> {
        match fs::symlink_metadata(path) {
            Ok(m) => Ok(Some(FileStamp::from_metadata(&m))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(super) fn from_metadata(m: &fs::Metadata) -> FileStamp {
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
pub(super) struct Cached {
    pub(super) stamp: Option<FileStamp>,
    pub(super) by_id: HashMap<String, ApiKey>,
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
    pub(super) fn replace_cache(&self, stamp: Option<FileStamp>, by_id: HashMap<String, ApiKey>) {
        let mut cache = self.cache.write();
        let found = outside_changes(&cache.by_id, &by_id);
        if !found.is_empty() {
            self.outside.lock().extend(found);
        }
        *cache = Cached { stamp, by_id };
    }

    /// Re-reads the key file if it changed on disk since it was last read.
    pub(super) fn refresh(&self) -> Result<(), KeyError> {
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
        let secret = new_secret()?;
        let secret_sha256 = hex(&secret_hash(&secret));
        let (key, receipt) =
            self.change_active(id, workspace, by, audit, EVENT_KEY_ROTATED, |key, now| {
                key.secret_sha256 = secret_sha256;
                key.rotated_at = Some(now);
            })?;
        Ok(IssuedKey {
            key,
            text: format!("{KEY_PREFIX}{id}_{secret}"),
            receipt,
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
        let (key, receipt) =
            self.change_active(id, workspace, by, audit, EVENT_KEY_REVOKED, |key, now| {
                key.revoked_at = Some(now);
            })?;
        Ok(RevokedKey { key, receipt })
    }

    /// Changes an active key (of `workspace`, when given) under the lock:
    /// its `event_type` event is recorded first, then `apply` changes it.
    fn change_active(
        &self,
        id: &str,
        workspace: Option<&str>,
        by: &ChangedBy,
        audit: &dyn KeyAudit,
        event_type: &'static str,
        apply: impl FnOnce(&mut ApiKey, Timestamp),
    ) -> Result<(KeyInfo, Option<Receipt>), KeyError> {
        check_actor(&by.actor)?;
        self.change(|file| {
            let key = find_key(file, id, workspace)?;
            if !key.is_active() {
                return Err(KeyError::Revoked(id.to_string()));
            }
            check_via(self.admin_keys, key.scope, by)?;
            let now = Timestamp::now();
            let event = key_event(event_type, key, by, now);
            let receipt = audit.record(&key.workspace.clone(), false, &event)?;
            apply(key, now);
            mark_recorded(key, receipt, by);
            Ok((
                (KeyInfo::from(&*key), receipt),
                event_type,
                receipt.map(|r| r.seq),
            ))
        })
    }

    /// Runs one change under the lock: re-read (noting changes made
    /// outside), change (which records its event), write, and refresh the
    /// cache.
    pub(super) fn change<T>(
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

pub(super) fn find_key<'a>(
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
pub(super) fn mark_recorded(key: &mut ApiKey, receipt: Option<Receipt>, by: &ChangedBy) {
    key.event_seq = receipt.map(|r| r.seq);
    key.pending_by = receipt.is_none().then(|| by.actor.clone());
}

pub(super) fn check_actor(actor: &str) -> Result<(), KeyError> {
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
pub(super) fn key_event(event_type: &str, key: &ApiKey, by: &ChangedBy, at: Timestamp) -> Event {
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

pub(super) fn index(file: Option<KeyFile>) -> HashMap<String, ApiKey> {
    file.map(|f| f.keys.into_iter().map(|k| (k.id.clone(), k)).collect())
        .unwrap_or_default()
}
