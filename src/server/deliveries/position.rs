//! A destination's durable position: `DIR/deliveries/<workspace>/<name>.state`.
//!
//! The file holds the next seq to deliver and the destination's failure
//! state, as JSON with a CRC-32C of the position's canonical bytes, so that
//! a damaged file is refused (the destination stops with the reason)
//! rather than read as a position that would skip or repeat records. It is
//! replaced crash-safely (temporary file, fsync, rename, directory fsync)
//! and only after the destination acknowledged everything before
//! `next_seq`.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::storage::{perms, write_file_atomic, FsStorage};

use super::config::deliveries_dir;
use super::DeliveryError;

/// Where a destination stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    /// The destination's id (a position of another id is not this one's).
    pub id: String,
    /// Every record before this seq was acknowledged (or did not match).
    pub next_seq: u64,
    /// Records acknowledged since the destination was created.
    pub delivered: u64,
    /// Requests that failed one after another, up to now.
    pub consecutive_failures: u32,
    /// When the current run of failures began (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
    /// The seq of the `delivery.failing` event of the current run, once
    /// recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_event_seq: Option<u64>,
    /// The last failure's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    position: Position,
    crc32c: u32,
}

/// The folder of a workspace's positions.
pub fn positions_dir(data_dir: &Path, workspace: &str) -> PathBuf {
    deliveries_dir(data_dir).join(workspace)
}

fn file_name(name: &str) -> String {
    format!("{name}.state")
}

fn checksum(position: &Position) -> u32 {
    crc32c::crc32c(&serde_json::to_vec(position).unwrap_or_default())
}

/// Encodes a position as the file's bytes.
pub fn encode(position: &Position) -> Vec<u8> {
    let file = StateFile {
        position: position.clone(),
        crc32c: checksum(position),
    };
    let mut bytes = serde_json::to_vec(&file).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Decodes the file's bytes, checking the checksum.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Position, DeliveryError> {
    let bad = |reason: String| DeliveryError::BadPosition {
        path: path.to_path_buf(),
        reason,
    };
    let file: StateFile = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let got = checksum(&file.position);
    if got != file.crc32c {
        return Err(bad(format!(
            "checksum mismatch: expected {:08x}, got {got:08x}",
            file.crc32c
        )));
    }
    Ok(file.position)
}

/// The stored position of destination `name` of `workspace`, when it has
/// one.
pub fn load(
    data_dir: &Path,
    workspace: &str,
    name: &str,
) -> Result<Option<Position>, DeliveryError> {
    let path = positions_dir(data_dir, workspace).join(file_name(name));
    match std::fs::read(&path) {
        Ok(bytes) => decode(&path, &bytes).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DeliveryError::Io { path, source }),
    }
}

/// Stores a position durably.
pub fn store(
    data_dir: &Path,
    workspace: &str,
    name: &str,
    position: &Position,
) -> Result<(), DeliveryError> {
    let dir = positions_dir(data_dir, workspace);
    perms::create_private_dir_all(&dir).map_err(|source| DeliveryError::Io {
        path: dir.clone(),
        source,
    })?;
    write_file_atomic(&FsStorage, &dir, &file_name(name), &encode(position))
        .map_err(|e| DeliveryError::Write(e.to_string()))
}

/// Removes a destination's position (when it is removed).
pub fn remove(data_dir: &Path, workspace: &str, name: &str) -> Result<(), DeliveryError> {
    let path = positions_dir(data_dir, workspace).join(file_name(name));
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DeliveryError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Position {
        Position {
            id: "0123456789abcdef".into(),
            next_seq: 1042,
            delivered: 1000,
            consecutive_failures: 3,
            failing_since: Some("2026-03-09T09:52:14Z".into()),
            failing_event_seq: None,
            last_error: Some("HTTP 503".into()),
        }
    }

    #[test]
    fn round_trip() {
        let p = sample();
        assert_eq!(decode(Path::new("x"), &encode(&p)).unwrap(), p);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), "acme", "siem").unwrap(), None);
        store(dir.path(), "acme", "siem", &p).unwrap();
        assert_eq!(load(dir.path(), "acme", "siem").unwrap(), Some(p));
        remove(dir.path(), "acme", "siem").unwrap();
        assert_eq!(load(dir.path(), "acme", "siem").unwrap(), None);
    }

    #[test]
    fn damage_is_detected() {
        let bytes = encode(&sample());
        let text = String::from_utf8(bytes.clone()).unwrap();
        // A changed digit of the position: the checksum no longer fits.
        let changed = text.replace("1042", "1043");
        assert!(matches!(
            decode(Path::new("x"), changed.as_bytes()),
            Err(DeliveryError::BadPosition { .. })
        ));
        // A torn file.
        assert!(decode(Path::new("x"), &bytes[..bytes.len() / 2]).is_err());
        assert!(decode(Path::new("x"), b"").is_err());
    }
}
