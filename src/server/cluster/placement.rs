//! Which node should hold a workspace: rendezvous (highest random weight)
//! hashing over the live nodes. Every node computes the same answer from
//! the same list, a workspace moves only when its preferred node comes or
//! goes, and a dead node's workspaces spread over all the others.

use sha2::{Digest, Sha256};

/// The weight of `node` for `workspace`: the first 8 bytes, big-endian, of
/// SHA-256(`"chainlog-placement/1"`, 0, node id, 0, workspace name).
pub fn weight(node: &str, workspace: &str) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(b"chainlog-placement/1\0");
    hasher.update(node.as_bytes());
    hasher.update([0]);
    hasher.update(workspace.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The preferred holder of `workspace` among `nodes`: the one of highest
/// weight (ties, which need a 64-bit collision, go to the smaller id).
/// `None` when `nodes` is empty.
pub fn preferred<'a, I>(nodes: I, workspace: &str) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    nodes
        .into_iter()
        .map(|node| (weight(node, workspace), node))
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(a.1)))
        .map(|(_, node)| node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(count: usize) -> Vec<String> {
        (0..count).map(|i| format!("ws-{i}")).collect()
    }

    #[test]
    fn every_node_agrees_whatever_the_order_of_the_list() {
        let nodes = ["node-a", "node-b", "node-c"];
        let reversed = ["node-c", "node-b", "node-a"];
        for w in names(50) {
            assert_eq!(preferred(nodes, &w), preferred(reversed, &w));
        }
        assert_eq!(preferred([] as [&str; 0], "ws"), None);
    }

    #[test]
    fn thirty_workspaces_spread_over_three_nodes_and_a_dead_nodes_spread_over_the_rest() {
        let nodes = ["node-a", "node-b", "node-c"];
        let workspaces = names(30);
        let placed: Vec<&str> = workspaces
            .iter()
            .map(|w| preferred(nodes, w).unwrap())
            .collect();
        for node in nodes {
            let held = placed.iter().filter(|&&p| p == node).count();
            assert!((4..=16).contains(&held), "{node} holds {held} of 30");
        }
        // node-b dies: only its workspaces move, and to both others.
        let alive = ["node-a", "node-c"];
        let mut moved_to = std::collections::BTreeSet::new();
        for (w, before) in workspaces.iter().zip(&placed) {
            let after = preferred(alive, w).unwrap();
            if *before == "node-b" {
                moved_to.insert(after);
            } else {
                assert_eq!(after, *before, "{w} moved though its node lives");
            }
        }
        assert_eq!(moved_to.len(), 2, "{moved_to:?}");
    }

    #[test]
    fn the_weight_is_the_specified_hash() {
        // SHA-256("chainlog-placement/1\0node-a\0acme"), first 8 bytes.
        let digest = Sha256::digest(b"chainlog-placement/1\0node-a\0acme");
        let expected = u64::from_be_bytes(digest[..8].try_into().unwrap());
        assert_eq!(weight("node-a", "acme"), expected);
        assert_ne!(weight("node-a", "acme"), weight("node-b", "acme"));
    }
}
