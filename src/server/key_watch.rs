//! Key changes made outside the API, and refused reloads of `keys.json`,
//! turned into events.
//!
//! A running server re-reads `keys.json` when it changes (on each request
//! and every [`KEY_WATCH_INTERVAL`]). What changed since it last read the
//! file, and was not recorded by whoever changed it (see
//! [`super::keys`]: a key's `event_seq`), becomes an event with actor
//! `system` and `"via": "keys.json"` in the context, in the log of the
//! workspace the key belongs to: keys added, removed, revoked, reinstated,
//! rotated, moved or given another scope by an edit, and the changes
//! `chainlog apikey` makes while the server holds the workspace's log
//! (the CLI's user is then in the context as `changed_by`); the event's seq
//! is then written back into the key's `event_seq`. A reload that
//! is refused (unsafe mode or owner, a symbolic link, invalid content)
//! leaves the keys as last read in force and is recorded once, as
//! `apikey.reload_refused`, in the server's own log (`server-log/`): it
//! belongs to no one workspace.
//!
//! Edits made while no server runs are not seen: the next server starts
//! from the file as it finds it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustix::fs::FlockOperation;

use serde_json::Value;

use crate::event::{Event, Outcome, Timestamp};
use crate::server::keys::{
    ApiKey, EVENT_KEY_CREATED, EVENT_KEY_REVOKED, EVENT_KEY_ROTATED, KEYS_FILE_NAME,
};
use crate::server::AppState;

/// How often a running server looks at `keys.json` between requests.
pub const KEY_WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// A key's scope was changed outside the API.
pub const EVENT_KEY_SCOPE_CHANGED: &str = "apikey.scope_changed";
/// A revoked key was made active again outside the API.
pub const EVENT_KEY_REINSTATED: &str = "apikey.reinstated";
/// A key was deleted from `keys.json` (or moved to another workspace).
pub const EVENT_KEY_REMOVED: &str = "apikey.removed";
/// Another of a key's fields was changed outside the API.
pub const EVENT_KEY_EDITED: &str = "apikey.edited";
/// `keys.json` changed but was refused; the keys as last read stay.
pub const EVENT_KEYS_RELOAD_REFUSED: &str = "apikey.reload_refused";

/// A running server holds a shared `flock` on the data directory itself
/// (no file to leave behind), so that the CLI can tell that a server will
/// record the key changes it leaves to it.
fn open_data_dir(data_dir: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(data_dir)
}

/// Takes the running server's shared lock on `data_dir` (held while the
/// returned file is open).
pub fn hold_server_lock(data_dir: &Path) -> std::io::Result<File> {
    let file = open_data_dir(data_dir)?;
    rustix::fs::flock(&file, FlockOperation::LockShared)?;
    Ok(file)
}

/// Whether a server runs on `data_dir` (holds its lock).
pub fn server_running(data_dir: &Path) -> bool {
    let Ok(file) = open_data_dir(data_dir) else {
        return false;
    };
    match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {
            let _ = rustix::fs::flock(&file, FlockOperation::Unlock);
            false
        }
        Err(e) => e == rustix::io::Errno::WOULDBLOCK,
    }
}

/// A key change made outside the API, to record in `workspace`'s log.
#[derive(Debug, Clone, PartialEq)]
pub struct OutsideChange {
    /// The key's workspace.
    pub workspace: String,
    /// Whether the workspace's log may be created for it (a key added for
    /// a new workspace, as `chainlog apikey create` would).
    pub create: bool,
    /// The event.
    pub event: Event,
    /// The seq at which the file says the change was recorded already (its
    /// key's new `event_seq`); recorded again unless that record is an
    /// `apikey.*` event of this key.
    pub claimed_seq: Option<u64>,
}

fn change(event_type: &str, key: &ApiKey, create: bool, extra: &[(&str, Value)]) -> OutsideChange {
    let mut event = Event::new(Timestamp::now(), event_type, "system");
    event.resource = Some(key.id.clone());
    event.outcome = Outcome::Success;
    let context = &mut event.context;
    context.insert("key_id".into(), key.id.clone().into());
    context.insert("workspace".into(), key.workspace.clone().into());
    context.insert("scope".into(), key.scope.as_str().into());
    context.insert("via".into(), KEYS_FILE_NAME.into());
    if let Some(by) = &key.pending_by {
        // As written in the file: whoever can write it could write this.
        context.insert("changed_by".into(), by.clone().into());
    }
    for (name, value) in extra {
        context.insert((*name).into(), value.clone());
    }
    OutsideChange {
        workspace: key.workspace.clone(),
        create,
        event,
        claimed_seq: None,
    }
}

/// The changes from `old` to `new` (keys by id) that their writer did not
/// record: one event per kind of change, in key id order.
pub fn outside_changes(
    old: &HashMap<String, ApiKey>,
    new: &HashMap<String, ApiKey>,
) -> Vec<OutsideChange> {
    let mut out = Vec::new();
    let mut ids: Vec<&String> = new.keys().collect();
    ids.sort();
    for id in ids {
        let n = &new[id];
        let o = old.get(id);
        if o == Some(n) {
            continue;
        }
        // The writer says it recorded this change when it left a new event
        // seq; that claim is checked against the log before it is believed.
        let claimed_seq = n
            .event_seq
            .filter(|seq| Some(*seq) != o.and_then(|o| o.event_seq));
        out.extend(key_changes(o, n).into_iter().map(|mut found| {
            if found.workspace == n.workspace {
                found.claimed_seq = claimed_seq;
            }
            found
        }));
    }
    let mut gone: Vec<&ApiKey> = old.values().filter(|k| !new.contains_key(&k.id)).collect();
    gone.sort_by(|a, b| a.id.cmp(&b.id));
    out.extend(
        gone.into_iter()
            .map(|k| change(EVENT_KEY_REMOVED, k, false, &[])),
    );
    out
}

/// What changed from `o` (none: the key is new) to `n`: one event per kind.
fn key_changes(o: Option<&ApiKey>, n: &ApiKey) -> Vec<OutsideChange> {
    let Some(o) = o else {
        return vec![change(EVENT_KEY_CREATED, n, true, &[])];
    };
    if o.workspace != n.workspace {
        let to = [("moved_to", Value::from(n.workspace.clone()))];
        let from = [("moved_from", Value::from(o.workspace.clone()))];
        return vec![
            change(EVENT_KEY_REMOVED, o, false, &to),
            change(EVENT_KEY_CREATED, n, true, &from),
        ];
    }
    let mut out = Vec::new();
    if o.secret_sha256 != n.secret_sha256 {
        out.push(change(EVENT_KEY_ROTATED, n, false, &[]));
    }
    if o.scope != n.scope {
        let old_scope = [("old_scope", Value::from(o.scope.as_str()))];
        out.push(change(EVENT_KEY_SCOPE_CHANGED, n, false, &old_scope));
    }
    match (o.revoked_at, n.revoked_at) {
        (None, Some(_)) => out.push(change(EVENT_KEY_REVOKED, n, false, &[])),
        (Some(_), None) => out.push(change(EVENT_KEY_REINSTATED, n, false, &[])),
        _ => {}
    }
    if out.is_empty() {
        out.push(change(EVENT_KEY_EDITED, n, false, &[]));
    }
    out
}

/// Whether the record at `seq` of `workspace`'s log is an `apikey.*` event
/// of the key `key_id`: the writer's claim that it recorded its change.
fn claim_holds(state: &AppState, workspace: &str, seq: u64, key_id: Option<&str>) -> bool {
    let Ok(Some(log)) = state.workspaces.open(workspace, false) else {
        return false;
    };
    let record = log.iter_from(seq).next();
    matches!(record, Some(Ok(r)) if r.seq == seq
        && r.event.event_type.starts_with("apikey.")
        && r.event.context.get("key_id").and_then(Value::as_str) == key_id)
}

/// Appends `event` to `workspace`'s log, or to the server's log when that
/// fails (with the workspace and the failure in the context).
/// Returns the seq when it went to the workspace's log.
fn record(state: &AppState, workspace: Option<&str>, create: bool, event: &Event) -> Option<u64> {
    let appended = match workspace {
        Some(w) => match state.workspaces.open(w, create) {
            Ok(Some(log)) => log.append(event).map(|r| r.seq).map_err(|e| e.to_string()),
            Ok(None) => Err("the workspace has no log".to_string()),
            Err(e) => Err(e.to_string()),
        },
        None => Err(String::new()),
    };
    let why = match appended {
        Ok(seq) => return Some(seq),
        Err(why) => why,
    };
    let mut event = event.clone();
    if let Some(w) = workspace {
        eprintln!(
            "chainlog serve: recording {} in workspace {w} failed ({why}); recording it in the server's log",
            event.event_type
        );
        event
            .context
            .insert("recording_failed".into(), format!("{w}: {why}").into());
    }
    let result = state
        .workspaces
        .server_log()
        .and_then(|log| log.append(&event).map(drop));
    if let Err(e) = result {
        eprintln!(
            "chainlog serve: recording {} in the server's log failed: {e}",
            event.event_type
        );
    }
    None
}

/// One look at the key file: reload it, record a refusal (once per
/// distinct reason: `last_refusal` is the one recorded last) and every
/// change made outside the API. Returns the refusal now in force. Blocking.
pub(crate) fn look(state: &AppState, last_refusal: Option<String>) -> Option<String> {
    let refusal = match state.keys.reload() {
        Ok(()) => None,
        Err(e) => Some(e.to_string()),
    };
    if let Some(reason) = refusal
        .as_ref()
        .filter(|r| Some(*r) != last_refusal.as_ref())
    {
        eprintln!("chainlog serve: {reason} (the keys as last read stay in force)");
        let mut event = Event::new(Timestamp::now(), EVENT_KEYS_RELOAD_REFUSED, "system");
        event.outcome = Outcome::Failure;
        event.resource = Some(KEYS_FILE_NAME.into());
        event.context.insert("reason".into(), reason.clone().into());
        let _ = record(state, None, false, &event);
    }
    record_outside_changes(state);
    refusal
}

/// Records the changes made outside the API found so far. Blocking.
pub(crate) fn record_outside_changes(state: &AppState) {
    for found in state.keys.take_outside_changes() {
        let recorded = found.claimed_seq.is_some_and(|seq| {
            claim_holds(
                state,
                &found.workspace,
                seq,
                found.event.resource.as_deref(),
            )
        });
        if recorded {
            continue;
        }
        let seq = record(state, Some(&found.workspace), found.create, &found.event);
        // Written back into the file, so that the CLI can report the seq and
        // no later look takes the change for an unrecorded one.
        if let (Some(seq), Some(id)) = (seq, found.event.resource.as_deref()) {
            if let Err(e) = state.keys.note_recorded(id, seq) {
                eprintln!(
                    "chainlog serve: noting in keys.json that key {id}'s change is seq {seq}: {e}"
                );
            }
        }
    }
}

/// Looks at the key file every [`KEY_WATCH_INTERVAL`] until aborted.
pub(crate) async fn watch(state: Arc<AppState>) {
    let mut last_refusal = None;
    let mut every = tokio::time::interval(KEY_WATCH_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let st = state.clone();
        let last = last_refusal.clone();
        if let Ok(now) = tokio::task::spawn_blocking(move || look(&st, last)).await {
            last_refusal = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::keys::Scope;

    fn key(id: &str) -> ApiKey {
        ApiKey {
            id: id.into(),
            workspace: "acme".into(),
            scope: Scope::Read,
            secret_sha256: "00".repeat(32),
            created_at: Timestamp::now(),
            created_by: "alice".into(),
            rotated_at: None,
            revoked_at: None,
            event_seq: Some(3),
            pending_by: None,
        }
    }

    fn types(changes: &[OutsideChange]) -> Vec<(&str, &str)> {
        changes
            .iter()
            .map(|c| (c.workspace.as_str(), c.event.event_type.as_str()))
            .collect()
    }

    #[test]
    fn each_unrecorded_change_is_an_event() {
        let map = |keys: Vec<ApiKey>| -> HashMap<String, ApiKey> {
            keys.into_iter().map(|k| (k.id.clone(), k)).collect()
        };
        let a = key("aaaaaaaaaaaaaaaa");
        let b = key("bbbbbbbbbbbbbbbb");
        let old = map(vec![a.clone(), b.clone()]);
        assert!(outside_changes(&old, &old).is_empty());

        // Scope raised and a revocation undone by an edit, one key deleted,
        // one added.
        let mut a2 = a.clone();
        a2.scope = Scope::Admin;
        a2.revoked_at = None;
        let mut old_revoked = old.clone();
        old_revoked.get_mut(&a.id).unwrap().revoked_at = Some(Timestamp::now());
        let mut c = key("cccccccccccccccc");
        c.event_seq = None;
        let new = map(vec![a2.clone(), c]);
        let found = outside_changes(&old_revoked, &new);
        assert_eq!(
            types(&found),
            [
                ("acme", EVENT_KEY_SCOPE_CHANGED),
                ("acme", EVENT_KEY_REINSTATED),
                ("acme", EVENT_KEY_CREATED),
                ("acme", EVENT_KEY_REMOVED),
            ]
        );
        assert_eq!(found[0].event.context["old_scope"], "read");
        assert_eq!(found[0].event.context["via"], "keys.json");
        assert_eq!(found[0].event.actor, "system");
        assert!(found[2].create && !found[0].create);

        // A change whose writer recorded it (a new event seq) is not
        // recorded again; the CLI's deferred revocation is, with its user.
        let mut recorded = a.clone();
        recorded.revoked_at = Some(Timestamp::now());
        recorded.event_seq = Some(9);
        let found = outside_changes(&old, &map(vec![recorded, b.clone()]));
        assert_eq!(types(&found), [("acme", EVENT_KEY_REVOKED)]);
        assert_eq!(found[0].claimed_seq, Some(9));
        let mut deferred = a.clone();
        deferred.revoked_at = Some(Timestamp::now());
        deferred.event_seq = None;
        deferred.pending_by = Some("root".into());
        let found = outside_changes(&old, &map(vec![deferred, b.clone()]));
        assert_eq!(types(&found), [("acme", EVENT_KEY_REVOKED)]);
        assert_eq!(found[0].claimed_seq, None);
        assert_eq!(found[0].event.context["changed_by"], "root");

        // Moved to another workspace: removed there, created here.
        let mut moved = b.clone();
        moved.workspace = "other".into();
        let found = outside_changes(&old, &map(vec![a, moved]));
        assert_eq!(
            types(&found),
            [("acme", EVENT_KEY_REMOVED), ("other", EVENT_KEY_CREATED)]
        );
    }
}
