//! The nodes of a cluster: each writer node keeps its own object
//! `PREFIX/nodes/<node id>.json` ([`NodeRecord`]) renewed every third of
//! the lease TTL; the live nodes are those whose record was renewed within
//! the TTL, by the reader's clock.

use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::archive::{Bucket, Conditional, ObjectVersion};
use crate::cluster::{Clock, ClusterError};

/// The folder of node records under the cluster's prefix.
pub const NODES_DIR: &str = "nodes";
/// The `format` member of every node record.
pub const NODE_FORMAT: &str = "chainlog-node/1";
/// The longest node id.
pub const MAX_NODE_ID_BYTES: usize = 128;
/// The largest node record read.
const MAX_NODE_RECORD_BYTES: usize = 4096;

/// `PREFIX/nodes/<node id>.json`, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRecord {
    /// Always [`NODE_FORMAT`].
    pub format: String,
    /// The node's id (its lease holder name).
    pub node_id: String,
    /// Where other nodes reach its API: `http://HOST:PORT`.
    pub advertise: String,
    /// When the node last wrote the record, ms since the Unix epoch (its clock).
    pub renewed_at_ms: u64,
}

/// A node id that cannot name a node: 1 to 128 bytes of `A-Z a-z 0-9 . _ -`,
/// not starting with `.` (it names an object).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid node id {0:?}: 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' and '-', not starting with '.'")]
pub struct NodeIdError(pub String);

/// Checks a node id.
pub fn validate_node_id(id: &str) -> Result<(), NodeIdError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_NODE_ID_BYTES
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(NodeIdError(id.chars().take(140).collect()))
    }
}

fn object_name(node_id: &str) -> String {
    format!("{NODES_DIR}/{node_id}.json")
}

/// This node's record and the others as last read.
pub struct Nodes {
    bucket: Arc<Bucket>,
    me: NodeRecord,
    ttl_ms: u64,
    clock: Clock,
    /// The version of our record as we last wrote it.
    written: Mutex<Option<ObjectVersion>>,
    /// Every node record last listed (live or not).
    known: Mutex<Vec<NodeRecord>>,
}

impl std::fmt::Debug for Nodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nodes")
            .field("me", &self.me.node_id)
            .finish_non_exhaustive()
    }
}

impl Nodes {
    /// The registry under `bucket`'s prefix, for the node `node_id`
    /// reachable at `advertise`.
    pub fn new(
        bucket: Arc<Bucket>,
        node_id: &str,
        advertise: &str,
        ttl_ms: u64,
        clock: Clock,
    ) -> Nodes {
        Nodes {
            bucket,
            me: NodeRecord {
                format: NODE_FORMAT.into(),
                node_id: node_id.into(),
                advertise: advertise.trim_end_matches('/').into(),
                renewed_at_ms: 0,
            },
            ttl_ms,
            clock,
            written: Mutex::new(None),
            known: Mutex::new(Vec::new()),
        }
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        &self.me.node_id
    }

    /// Writes this node's record, renewed now. Blocking.
    pub fn announce(&self) -> Result<(), ClusterError> {
        let name = object_name(&self.me.node_id);
        let record = NodeRecord {
            renewed_at_ms: (self.clock)(),
            ..self.me.clone()
        };
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        let mut written = self.written.lock();
        // Swap against what we wrote last; when that is not what is there
        // (a first write, or a restart of the same node id), read it first.
        for _ in 0..3 {
            let result = match written.as_ref() {
                Some(version) => self.bucket.put_swap(&name, bytes.clone(), version)?,
                None => match self.bucket.get_versioned(&name)? {
                    Some(found) => self.bucket.put_swap(&name, bytes.clone(), &found.version)?,
                    None => self.bucket.put_create(&name, bytes.clone())?,
                },
            };
            match result {
                Conditional::Written(version) => {
                    *written = Some(version);
                    return Ok(());
                }
                Conditional::Refused => *written = None,
            }
        }
        Err(ClusterError::Invalid {
            what: "node id",
            reason: format!(
                "{} is rewritten by another process as fast as this one writes it: two nodes share the id {:?}",
                self.bucket.url(&name),
                self.me.node_id
            ),
        })
    }

    /// Deletes this node's record (a clean stop): the others stop counting
    /// it as live at once, not a TTL later. Blocking.
    pub fn leave(&self) -> Result<(), ClusterError> {
        self.bucket.delete(&object_name(&self.me.node_id))?;
        *self.written.lock() = None;
        Ok(())
    }

    /// Lists and reads every node record; returns the live ones (this node
    /// always among them). Blocking.
    pub fn refresh(&self) -> Result<Vec<NodeRecord>, ClusterError> {
        let mut records = Vec::new();
        for (file, _) in self.bucket.list(NODES_DIR)? {
            let Some(id) = file.strip_suffix(".json") else {
                continue;
            };
            if validate_node_id(id).is_err() {
                continue;
            }
            match self.read(id) {
                Ok(Some(record)) => records.push(record),
                Ok(None) => {}
                Err(e) => eprintln!("chainlog serve: skipping the node record of {id:?}: {e}"),
            }
        }
        *self.known.lock() = records;
        Ok(self.live())
    }

    /// One node's record, read now. Blocking.
    pub fn read(&self, node_id: &str) -> Result<Option<NodeRecord>, ClusterError> {
        let name = object_name(node_id);
        let Some(found) = self.bucket.get_versioned(&name)? else {
            return Ok(None);
        };
        let malformed = |reason: String| ClusterError::Malformed {
            url: self.bucket.url(&name),
            reason,
        };
        if found.bytes.len() > MAX_NODE_RECORD_BYTES {
            return Err(malformed(format!("over {MAX_NODE_RECORD_BYTES} bytes")));
        }
        let record: NodeRecord =
            serde_json::from_slice(&found.bytes).map_err(|e| malformed(e.to_string()))?;
        if record.format != NODE_FORMAT || record.node_id != node_id {
            return Err(malformed(format!(
                "format {:?} and node id {:?}, not {NODE_FORMAT:?} and {node_id:?}",
                record.format, record.node_id
            )));
        }
        Ok(Some(record))
    }

    /// The live nodes as last listed, this node first.
    pub fn live(&self) -> Vec<NodeRecord> {
        let now = (self.clock)();
        let mut live = vec![self.me.clone()];
        live.extend(
            self.known
                .lock()
                .iter()
                .filter(|r| r.node_id != self.me.node_id)
                .filter(|r| r.renewed_at_ms.saturating_add(self.ttl_ms) >= now)
                .cloned(),
        );
        live
    }

    /// Where `node_id` is reached, from the records last listed, else read
    /// now. Blocking.
    pub fn advertise_of(&self, node_id: &str) -> Result<Option<String>, ClusterError> {
        if node_id == self.me.node_id {
            return Ok(Some(self.me.advertise.clone()));
        }
        if let Some(r) = self.known.lock().iter().find(|r| r.node_id == node_id) {
            return Ok(Some(r.advertise.clone()));
        }
        Ok(self.read(node_id)?.map(|r| r.advertise))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids() {
        for good in ["a", "node-1", "Node_2.eu", &"n".repeat(128)] {
            assert!(validate_node_id(good).is_ok(), "{good:?}");
        }
        for bad in ["", ".", ".hidden", "a/b", "a b", "é", &"n".repeat(129)] {
            assert!(validate_node_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_node_record_round_trips_and_refuses_unknown_members() {
        let record = NodeRecord {
            format: NODE_FORMAT.into(),
            node_id: "node-a".into(),
            advertise: "http://127.0.0.1:8080".into(),
            renewed_at_ms: 42,
        };
        let text = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<NodeRecord>(&text).unwrap(), record);
        let extra = text.replace('}', ",\"x\":1}");
        assert!(serde_json::from_str::<NodeRecord>(&extra).is_err());
        let missing = text.replace(",\"renewed_at_ms\":42", "");
        assert!(serde_json::from_str::<NodeRecord>(&missing).is_err());
    }
}
