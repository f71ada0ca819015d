//! A writer node's loop: its node record renewed every third of the lease
//! TTL; every half TTL, the fenced workspaces let go, and the workspaces
//! whose lease expired taken over when this node is their preferred holder
//! among the live nodes (failover without waiting for a request).

use std::sync::Arc;
use std::time::Duration;

use super::{placement, Cluster};
use crate::cluster::{read_lease, ClusterError};
use crate::server::workspace::validate_workspace_name;
use crate::server::AppState;

/// Workspaces taken over at once by one round.
const TAKEOVERS_AT_ONCE: usize = 4;

/// Runs until aborted.
pub(crate) async fn hold(state: Arc<AppState>, cluster: Arc<Cluster>) {
    let ttl = Duration::from_millis(cluster.lease().ttl_ms);
    let mut announce = tokio::time::interval(ttl / 3);
    let mut scan = tokio::time::interval(ttl / 2);
    announce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = announce.tick() => {
                let c = cluster.clone();
                let announced = tokio::task::spawn_blocking(move || match c.nodes() {
                    Some(nodes) => nodes.announce(),
                    None => Ok(()),
                })
                .await;
                if let Ok(Err(e)) = announced {
                    eprintln!("chainlog serve: renewing this node's record: {e}");
                }
            }
            _ = scan.tick() => {
                let (st, c) = (state.clone(), cluster.clone());
                let scanned = tokio::task::spawn_blocking(move || take_over(&st, &c)).await;
                if let Ok(Err(e)) = scanned {
                    eprintln!("chainlog serve: looking for workspaces to take over: {e}");
                }
            }
        }
    }
}

/// One round: let go of fenced writers, take over what this node should
/// hold. Blocking.
fn take_over(state: &AppState, cluster: &Cluster) -> Result<(), ClusterError> {
    for (name, replica) in state.workspaces.writers() {
        if let Some(why) = replica.fenced() {
            drop(replica);
            eprintln!("chainlog serve: letting go of workspace {name}: {why}");
            super::let_go(state, &name);
        }
    }
    let Some(nodes) = cluster.nodes() else {
        return Ok(());
    };
    let live = nodes.refresh()?;
    let mut due = Vec::new();
    for name in cluster.workspaces_in_bucket()? {
        if validate_workspace_name(&name).is_err() || state.workspaces.cached_open(&name).is_some()
        {
            continue;
        }
        let preferred = placement::preferred(live.iter().map(|n| n.node_id.as_str()), &name);
        if preferred != Some(nodes.me()) {
            continue;
        }
        let bucket = cluster.workspace_bucket(&name)?;
        let now = (cluster.lease().clock)();
        let expired = match read_lease(&bucket)? {
            Some((record, _)) => {
                now >= record
                    .expires_at_ms
                    .saturating_add(cluster.lease().skew_margin_ms)
                    || record.holder == nodes.me()
            }
            None => true,
        };
        if expired {
            due.push(name);
        }
    }
    // A takeover waits on the bucket more than on the cores: a few at once.
    let due = parking_lot::Mutex::new(due);
    std::thread::scope(|s| {
        for _ in 0..TAKEOVERS_AT_ONCE {
            s.spawn(|| loop {
                let Some(name) = due.lock().pop() else {
                    return;
                };
                match state.workspaces.take(&name) {
                    Ok(true) => eprintln!("chainlog serve: took workspace {name} over"),
                    Ok(false) => {}
                    Err(ClusterError::HeldBy { holder, .. }) => {
                        eprintln!("chainlog serve: workspace {name} was taken by {holder:?} first");
                    }
                    Err(e) => eprintln!("chainlog serve: taking workspace {name} over: {e}"),
                }
            });
        }
    });
    Ok(())
}
