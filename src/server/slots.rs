//! Slots for slow work (exports, verifications, queries), shared fairly
//! between workspaces.
//!
//! Each kind of work has a server-wide number of slots and a smaller
//! number per workspace, so that one tenant's slow clients hold at most
//! their own share: with the defaults, a workspace streams 2 exports and
//! runs 1 verification at a time, while the server streams 8 and runs 2.
//!
//! An export that finds no free slot is refused at once (503 with
//! `Retry-After`): a client that cannot get its stream now retries. A
//! verification or a query (a page of events, on a blocking thread) may wait, in a queue bounded per workspace; a request over
//! the bound is refused the same way, and only that workspace's requests
//! are. A freed slot goes to a waiting request of the workspace that got a
//! slot least recently (its oldest), among those under their own limit, so
//! a workspace's queue never stands in front of another workspace's
//! request: that one waits at most for a running request to end, never for
//! the other workspace's queue to drain.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::server::error::ApiError;

/// How many requests of one kind may run and wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotLimits {
    /// Running at once, server-wide (at least 1).
    pub total: usize,
    /// Running at once for one workspace (at least 1, at most `total`).
    pub per_workspace: usize,
    /// Waiting at once for one workspace; 0 refuses at once when no slot
    /// is free.
    pub queued_per_workspace: usize,
}

/// Running and waiting requests of one workspace.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Holding a slot.
    pub running: usize,
    /// Waiting for one.
    pub queued: usize,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    workspace: String,
    grant: oneshot::Sender<SlotPermit>,
}

#[derive(Debug, Default)]
struct State {
    running: usize,
    /// Only workspaces with running or waiting requests.
    usage: HashMap<String, Usage>,
    /// In arrival order.
    waiting: VecDeque<Waiter>,
    next_id: u64,
    /// Slots granted so far; and per workspace in `usage`, the number of
    /// its last grant, to serve the workspace that waited longest first.
    grants: u64,
    last_grant: HashMap<String, u64>,
}

#[derive(Debug)]
struct Inner {
    /// `export`, `verify`: the metrics' label and the error code's stem.
    kind: &'static str,
    limits: SlotLimits,
    /// Seconds in the `Retry-After` of a refusal.
    retry_after_s: u32,
    state: Mutex<State>,
    refused: AtomicU64,
}

/// The slots of one kind of work.
#[derive(Debug, Clone)]
pub struct Slots(Arc<Inner>);

/// A held slot; dropping it frees the slot.
#[derive(Debug)]
pub struct SlotPermit {
    slots: Arc<Inner>,
    workspace: String,
}

/// No slot for this workspace now: answered 503 with `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    kind: &'static str,
    retry_after_s: u32,
    workspace_full: bool,
}

impl Slots {
    /// Slots of `kind` (`export`, `verify`) under `limits`, whose refusals
    /// say to retry after `retry_after_s` seconds.
    pub fn new(kind: &'static str, limits: SlotLimits, retry_after_s: u32) -> Slots {
        let total = limits.total.max(1);
        let limits = SlotLimits {
            total,
            per_workspace: limits.per_workspace.clamp(1, total),
            queued_per_workspace: limits.queued_per_workspace,
        };
        Slots(Arc::new(Inner {
            kind,
            limits,
            retry_after_s,
            state: Mutex::new(State::default()),
            refused: AtomicU64::new(0),
        }))
    }

    /// The limits in force.
    pub fn limits(&self) -> SlotLimits {
        self.0.limits
    }

    /// A slot for `workspace` now, or [`Busy`]; never waits.
    pub fn try_acquire(&self, workspace: &str) -> Result<SlotPermit, Busy> {
        let mut state = self.0.state.lock();
        if let Some(permit) = self.0.take_slot(&mut state, workspace) {
            return Ok(permit);
        }
        Err(self.0.refuse(&state, workspace))
    }

    /// A slot for `workspace`, waiting in the workspace's queue if none is
    /// free; [`Busy`] when that queue is full. Dropping the future leaves
    /// the queue.
    pub async fn acquire(&self, workspace: &str) -> Result<SlotPermit, Busy> {
        let (id, granted) = {
            let mut state = self.0.state.lock();
            if let Some(permit) = self.0.take_slot(&mut state, workspace) {
                return Ok(permit);
            }
            let queued = state.usage.get(workspace).map_or(0, |u| u.queued);
            if queued >= self.0.limits.queued_per_workspace {
                return Err(self.0.refuse(&state, workspace));
            }
            let (grant, granted) = oneshot::channel();
            let id = state.next_id;
            state.next_id += 1;
            state.usage.entry(workspace.to_string()).or_default().queued += 1;
            state.waiting.push_back(Waiter {
                id,
                workspace: workspace.to_string(),
                grant,
            });
            (id, granted)
        };
        let leave = LeaveQueue {
            slots: &self.0,
            id,
            workspace,
        };
        let permit = granted.await;
        drop(leave);
        // The sender is only dropped after a send or by `LeaveQueue`.
        permit.map_err(|_| self.0.busy(false))
    }

    /// Running and waiting requests per workspace (only those with any).
    pub fn usage(&self) -> Vec<(String, Usage)> {
        let state = self.0.state.lock();
        let mut usage: Vec<(String, Usage)> =
            state.usage.iter().map(|(w, u)| (w.clone(), *u)).collect();
        usage.sort_by(|a, b| a.0.cmp(&b.0));
        usage
    }

    /// Requests refused for want of a slot, since the start.
    pub fn refused(&self) -> u64 {
        self.0.refused.load(Ordering::Relaxed)
    }

    /// `export`, `verify`.
    pub fn kind(&self) -> &'static str {
        self.0.kind
    }
}

/// Takes a waiter out of the queue when its request goes away before it
/// got a slot (a slot granted meanwhile is freed with the dropped channel).
struct LeaveQueue<'a> {
    slots: &'a Arc<Inner>,
    id: u64,
    workspace: &'a str,
}

impl Drop for LeaveQueue<'_> {
    fn drop(&mut self) {
        let mut state = self.slots.state.lock();
        if let Some(i) = state.waiting.iter().position(|w| w.id == self.id) {
            state.waiting.remove(i);
            forget_one(&mut state, self.workspace, |u| u.queued -= 1);
        }
    }
}

/// Updates a workspace's usage and forgets it once it has none.
fn forget_one(state: &mut State, workspace: &str, change: impl FnOnce(&mut Usage)) {
    if let Some(usage) = state.usage.get_mut(workspace) {
        change(usage);
        if *usage == Usage::default() {
            state.usage.remove(workspace);
            state.last_grant.remove(workspace);
        }
    }
}

impl Inner {
    /// A slot for `workspace` if one is free to it now.
    fn take_slot(self: &Arc<Self>, state: &mut State, workspace: &str) -> Option<SlotPermit> {
        let running = state.usage.get(workspace).map_or(0, |u| u.running);
        if state.running >= self.limits.total || running >= self.limits.per_workspace {
            return None;
        }
        state.running += 1;
        state
            .usage
            .entry(workspace.to_string())
            .or_default()
            .running += 1;
        state.grants += 1;
        let grant = state.grants;
        state.last_grant.insert(workspace.to_string(), grant);
        Some(SlotPermit {
            slots: self.clone(),
            workspace: workspace.to_string(),
        })
    }

    fn refuse(&self, state: &State, workspace: &str) -> Busy {
        let running = state.usage.get(workspace).map_or(0, |u| u.running);
        self.busy(running >= self.limits.per_workspace)
    }

    fn busy(&self, workspace_full: bool) -> Busy {
        self.refused.fetch_add(1, Ordering::Relaxed);
        Busy {
            kind: self.kind,
            retry_after_s: self.retry_after_s,
            workspace_full,
        }
    }

    /// Frees `workspace`'s slot and hands the free slots to the waiters
    /// that may take them: each to the oldest waiter of the workspace
    /// served least recently.
    fn release(self: &Arc<Self>, workspace: &str) {
        let mut granted = Vec::new();
        {
            let mut state = self.state.lock();
            state.running = state.running.saturating_sub(1);
            forget_one(&mut state, workspace, |u| u.running -= 1);
            while state.running < self.limits.total {
                let pick = state
                    .waiting
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| {
                        let running = state.usage.get(&w.workspace).map_or(0, |u| u.running);
                        running < self.limits.per_workspace
                    })
                    .min_by_key(|(i, w)| {
                        let last = state.last_grant.get(&w.workspace).copied();
                        (last.unwrap_or(0), *i)
                    })
                    .map(|(i, _)| i);
                let Some(waiter) = pick.and_then(|i| state.waiting.remove(i)) else {
                    break;
                };
                if let Some(usage) = state.usage.get_mut(&waiter.workspace) {
                    usage.queued -= 1;
                }
                if let Some(permit) = self.take_slot(&mut state, &waiter.workspace) {
                    granted.push((waiter.grant, permit));
                }
            }
        }
        // Outside the lock: a send to a request that has gone away hands
        // the permit back, and dropping it releases (and locks) again.
        for (grant, permit) in granted {
            let _ = grant.send(permit);
        }
    }
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        self.slots.release(&self.workspace);
    }
}

impl Busy {
    /// The 503 answer.
    pub fn into_api_error(self) -> ApiError {
        let (code, what) = match self.kind {
            "export" => ("too_many_exports", "exports streaming"),
            "query" => ("too_many_queries", "queries running and waiting"),
            "tail" => ("too_many_tails", "live tails streaming"),
            _ => ("too_many_verifies", "verifications running and waiting"),
        };
        let whose = if self.workspace_full {
            "this workspace has as many"
        } else {
            "the server has as many"
        };
        ApiError::unavailable(
            code,
            format!(
                "{whose} {what} as it allows; try again in {} s",
                self.retry_after_s
            ),
        )
    }
}

impl IntoResponse for Busy {
    fn into_response(self) -> Response {
        let retry_after = self.retry_after_s;
        let mut response = self.into_api_error().into_response();
        if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(total: usize, per: usize, queued: usize) -> Slots {
        Slots::new(
            "verify",
            SlotLimits {
                total,
                per_workspace: per,
                queued_per_workspace: queued,
            },
            1,
        )
    }

    #[test]
    fn a_workspace_takes_its_share_only() {
        let s = slots(3, 2, 0);
        let a1 = s.try_acquire("a").unwrap();
        let _a2 = s.try_acquire("a").unwrap();
        let busy = s.try_acquire("a").unwrap_err();
        assert!(busy.workspace_full);
        let _b1 = s.try_acquire("b").unwrap();
        let busy = s.try_acquire("c").unwrap_err();
        assert!(!busy.workspace_full, "the server is full, not c");
        assert_eq!(s.refused(), 2);
        drop(a1);
        let _c1 = s.try_acquire("c").unwrap();
        assert_eq!(
            s.usage(),
            vec![
                (
                    "a".into(),
                    Usage {
                        running: 1,
                        queued: 0
                    }
                ),
                (
                    "b".into(),
                    Usage {
                        running: 1,
                        queued: 0
                    }
                ),
                (
                    "c".into(),
                    Usage {
                        running: 1,
                        queued: 0
                    }
                ),
            ]
        );
    }

    #[tokio::test]
    async fn a_queue_does_not_stand_before_another_workspace() {
        let s = slots(2, 1, 2);
        let a1 = s.acquire("a").await.unwrap();
        let s2 = s.clone();
        let a2 = tokio::spawn(async move { s2.acquire("a").await.map(|_| ()) });
        let s3 = s.clone();
        let a3 = tokio::spawn(async move { s3.acquire("a").await.map(|_| ()) });
        // Both wait: a has its one slot.
        while s.usage()
            != vec![(
                "a".into(),
                Usage {
                    running: 1,
                    queued: 2,
                },
            )]
        {
            tokio::task::yield_now().await;
        }
        // A third waiter of a is refused; b runs at once.
        assert!(s.acquire("a").await.unwrap_err().workspace_full);
        let b = s.try_acquire("b").unwrap();
        drop(b);
        drop(a1);
        a2.await.unwrap().unwrap();
        a3.await.unwrap().unwrap();
        assert!(s.usage().is_empty(), "{:?}", s.usage());
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_workspace_served_least_recently() {
        let s = slots(1, 1, 3);
        let a1 = s.try_acquire("a").unwrap();
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for w in ["a", "a", "b"] {
            let (s2, order) = (s.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = s2.acquire(w).await.unwrap();
                order.lock().push(w);
            }));
            // Queue them in this order.
            while s.usage().iter().map(|(_, u)| u.queued).sum::<usize>() < tasks.len() {
                tokio::task::yield_now().await;
            }
        }
        drop(a1);
        for t in tasks {
            t.await.unwrap();
        }
        // b came last, but a had just been served.
        assert_eq!(*order.lock(), ["b", "a", "a"]);
    }

    #[test]
    fn a_refusal_says_which_kind_and_when_to_retry() {
        for (kind, code, retry) in [
            ("export", "too_many_exports", "1"),
            ("verify", "too_many_verifies", "5"),
            ("query", "too_many_queries", "2"),
        ] {
            let limits = SlotLimits {
                total: 1,
                per_workspace: 1,
                queued_per_workspace: 0,
            };
            let s = Slots::new(kind, limits, retry.parse().unwrap());
            let _held = s.try_acquire("a").unwrap();
            let busy = s.try_acquire("a").unwrap_err();
            assert_eq!(busy.clone().into_api_error().error, code);
            let response = busy.into_response();
            assert_eq!(response.status(), 503);
            assert_eq!(response.headers()[header::RETRY_AFTER], retry);
        }
    }

    #[tokio::test]
    async fn a_request_that_goes_away_leaves_the_queue() {
        let s = slots(1, 1, 1);
        let a1 = s.try_acquire("a").unwrap();
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(1), s.acquire("a"));
        assert!(waiting.await.is_err(), "no slot was free");
        assert_eq!(
            s.usage(),
            vec![(
                "a".into(),
                Usage {
                    running: 1,
                    queued: 0
                }
            )]
        );
        drop(a1);
        assert!(s.usage().is_empty());
        let _again = s.try_acquire("a").unwrap();
    }
}
