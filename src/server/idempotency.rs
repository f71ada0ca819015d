//! `Idempotency-Key` on `POST /v1/workspaces/{w}/events`: a client that
//! retries an append (after a timeout, a dropped connection) gets the first
//! answer back instead of appending the events twice.
//!
//! A key is scoped to the workspace and the API key that sent it, and bound
//! to the request it first came with (a SHA-256 of the body and its kind):
//!
//! - the same key with the same request, once the first one succeeded: the
//!   first answer again (201, the same receipts), with
//!   `Idempotent-Replayed: true`, and nothing appended;
//! - the same key with another request: 422 `idempotency_key_reused`;
//! - the same key while the first request is still being appended: 409
//!   `idempotency_key_in_flight` (retry after it has been answered).
//!
//! Only a success is kept: a refused request appended nothing, so its key
//! is free again at once. Once a request has been handed to the commit
//! queue it is finished and its answer kept even when its client has gone
//! away, so that the client's retry finds it.
//!
//! Answers are kept in memory, for [`Limits::idempotency_ttl`] after they
//! were given, and at most [`Limits::idempotency_keys`] of them and
//! [`MAX_KEPT_BYTES`] of their bodies per workspace (the oldest answer is
//! dropped first), so that one append key cannot fill the server's memory.
//! They do not survive a restart of the server: a retry after one appends
//! again.
//!
//! [`Limits::idempotency_ttl`]: crate::server::Limits::idempotency_ttl
//! [`Limits::idempotency_keys`]: crate::server::Limits::idempotency_keys

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::server::error::ApiError;
use crate::server::ingest::BodyKind;

/// The request header.
pub(crate) const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The answer header that marks a replayed answer.
pub(crate) const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Longest key, in bytes (a UUID takes 36).
pub(crate) const MAX_KEY_BYTES: usize = 255;
/// Most bytes of kept answers per workspace: 64 MiB, about 70 answers of
/// 10,000 receipts, or 600,000 answers of one.
pub(crate) const MAX_KEPT_BYTES: usize = 64 << 20;

/// The `Idempotency-Key` of a request, if it has one: 1 to 255 visible
/// ASCII characters, and one such header at most.
pub(crate) fn key_of(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(bad_key(
            "a request carries one Idempotency-Key header at most",
        ));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_KEY_BYTES || !bytes.iter().all(u8::is_ascii_graphic) {
        return Err(bad_key(
            "an Idempotency-Key is 1 to 255 visible ASCII characters (a UUID, for example)",
        ));
    }
    // Visible ASCII only, so this is the same text.
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

fn bad_key(detail: &str) -> ApiError {
    ApiError::bad_request("invalid_idempotency_key", detail)
}

/// What a request is, for telling a retry from another request under the
/// same key: a SHA-256 of the body's kind and bytes.
pub(crate) fn fingerprint(kind: &str, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(body);
    h.finalize().into()
}

/// Kept answers of every workspace.
#[derive(Debug)]
pub(crate) struct IdempotencyStore {
    ttl: Duration,
    max_per_workspace: usize,
    workspaces: Mutex<HashMap<String, Entries>>,
}

/// One workspace's keys.
#[derive(Debug, Default)]
struct Entries {
    by_key: HashMap<Scope, Entry>,
    /// Keys with an answer, oldest answer first.
    answered: VecDeque<(Instant, Scope)>,
    /// Bytes of the kept answers' bodies.
    kept_bytes: usize,
}

/// An idempotency key as sent by one API key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Scope {
    api_key: String,
    key: String,
}

#[derive(Debug)]
enum Entry {
    InFlight {
        fingerprint: [u8; 32],
    },
    Answered {
        fingerprint: [u8; 32],
        body: Arc<str>,
    },
}

/// What to do with a request that carries a key.
#[derive(Debug)]
pub(crate) enum Begin {
    /// A new key: run the request and [`Pending::answer`] it.
    Run(Pending),
    /// A retry of an answered request: give this body again.
    Replay(Arc<str>),
    /// The key came with another request.
    Reused,
    /// The key's first request is still running.
    InFlight,
}

impl IdempotencyStore {
    /// Keeps answers for `ttl`, at most `max_per_workspace` per workspace
    /// (both at least 1).
    pub(crate) fn new(ttl: Duration, max_per_workspace: usize) -> Arc<Self> {
        Arc::new(IdempotencyStore {
            ttl: ttl.max(Duration::from_millis(1)),
            max_per_workspace: max_per_workspace.max(1),
            workspaces: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entries>> {
        // The map stays consistent whatever panicked while holding it:
        // every change is one insert or remove.
        self.workspaces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Looks `key` up for a request of `api_key` in `workspace`.
    pub(crate) fn begin(
        self: &Arc<Self>,
        workspace: &str,
        api_key: &str,
        key: String,
        fingerprint: [u8; 32],
    ) -> Begin {
        self.begin_at(Instant::now(), workspace, api_key, key, fingerprint)
    }

    fn begin_at(
        self: &Arc<Self>,
        now: Instant,
        workspace: &str,
        api_key: &str,
        key: String,
        fingerprint: [u8; 32],
    ) -> Begin {
        let scope = Scope {
            api_key: api_key.to_string(),
            key,
        };
        let mut workspaces = self.lock();
        let entries = workspaces.entry(workspace.to_string()).or_default();
        entries.expire(now, self.ttl);
        match entries.by_key.get(&scope) {
            Some(Entry::InFlight { fingerprint: first }) if *first == fingerprint => {
                Begin::InFlight
            }
            Some(Entry::Answered {
                fingerprint: first,
                body,
            }) if *first == fingerprint => Begin::Replay(body.clone()),
            Some(_) => Begin::Reused,
            None => {
                entries
                    .by_key
                    .insert(scope.clone(), Entry::InFlight { fingerprint });
                Begin::Run(Pending {
                    store: self.clone(),
                    workspace: workspace.to_string(),
                    scope: Some(scope),
                })
            }
        }
    }

    /// Keys (in flight or answered) held for `workspace`.
    #[cfg(test)]
    fn len(&self, workspace: &str) -> usize {
        self.lock().get(workspace).map_or(0, |e| e.by_key.len())
    }
}

impl Entries {
    /// Drops the answers older than `ttl`.
    fn expire(&mut self, now: Instant, ttl: Duration) {
        while let Some((at, _)) = self.answered.front() {
            if now.saturating_duration_since(*at) < ttl {
                break;
            }
            self.drop_oldest();
        }
    }

    /// Drops the oldest answer.
    fn drop_oldest(&mut self) {
        if let Some((_, scope)) = self.answered.pop_front() {
            if let Some(Entry::Answered { body, .. }) = self.by_key.remove(&scope) {
                self.kept_bytes -= body.len();
            }
        }
    }
}

/// A request running under a new key. Dropped without an answer (the
/// request was refused, or failed before it was handed to the commit
/// queue), it frees the key.
#[derive(Debug)]
pub(crate) struct Pending {
    store: Arc<IdempotencyStore>,
    workspace: String,
    scope: Option<Scope>,
}

impl Pending {
    /// Keeps `body`, the request's successful answer, for its retries.
    pub(crate) fn answer(mut self, body: &str) {
        self.answer_at(Instant::now(), body);
    }

    fn answer_at(&mut self, now: Instant, body: &str) {
        let Some(scope) = self.scope.take() else {
            return;
        };
        let mut workspaces = self.store.lock();
        let entries = workspaces.entry(self.workspace.clone()).or_default();
        let Some(entry) = entries.by_key.get_mut(&scope) else {
            return;
        };
        let Entry::InFlight { fingerprint } = *entry else {
            return;
        };
        *entry = Entry::Answered {
            fingerprint,
            body: Arc::from(body),
        };
        entries.answered.push_back((now, scope));
        entries.kept_bytes += body.len();
        while entries.answered.len() > self.store.max_per_workspace
            || entries.kept_bytes > MAX_KEPT_BYTES
        {
            entries.drop_oldest();
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(scope) = self.scope.take() {
            let mut workspaces = self.store.lock();
            if let Some(entries) = workspaces.get_mut(&self.workspace) {
                if let Some(Entry::InFlight { .. }) = entries.by_key.get(&scope) {
                    entries.by_key.remove(&scope);
                }
            }
        }
    }
}

/// How a `POST` goes on.
#[derive(Debug)]
pub(crate) enum Start {
    /// Append, and keep the answer for the key if there is one.
    Run(Option<Pending>),
    /// Answer with this kept body ([`replay`]).
    Replay(Arc<str>),
}

/// Looks up the request's `Idempotency-Key` (from [`key_of`]) in `store`:
/// run it, replay the first answer, or refuse it (422, 409).
pub(crate) fn start(
    store: &Arc<IdempotencyStore>,
    key: Option<String>,
    workspace: &str,
    api_key: &str,
    kind: BodyKind,
    body: &[u8],
) -> Result<Start, ApiError> {
    let Some(key) = key else {
        return Ok(Start::Run(None));
    };
    let kind = match kind {
        BodyKind::Json => "json",
        BodyKind::NdJson => "ndjson",
    };
    match store.begin(workspace, api_key, key, fingerprint(kind, body)) {
        Begin::Run(pending) => Ok(Start::Run(Some(pending))),
        Begin::Replay(body) => Ok(Start::Replay(body)),
        refused => Err(refusal(&refused)
            .unwrap_or_else(|| ApiError::internal("idempotency", &"a runnable key was refused"))),
    }
}

/// Runs `commit` (the append, handed to the commit queue; its answer's
/// body) and keeps its answer for `pending`'s key. Under a key it runs as
/// its own task, so that the append and its kept answer are finished even
/// when the client goes away (its retry finds them).
pub(crate) async fn finish<F>(pending: Option<Pending>, commit: F) -> Result<String, ApiError>
where
    F: Future<Output = Result<String, ApiError>> + Send + 'static,
{
    let Some(pending) = pending else {
        return commit.await;
    };
    tokio::spawn(async move {
        let answer = commit.await?;
        pending.answer(&answer);
        Ok(answer)
    })
    .await
    .map_err(|e| ApiError::internal("appending", &e))?
}

/// A kept answer, given again: 201 with `Idempotent-Replayed: true`.
pub(crate) fn replay(body: Arc<str>) -> Response {
    (
        StatusCode::CREATED,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (IDEMPOTENT_REPLAYED, HeaderValue::from_static("true")),
        ],
        body.to_string(),
    )
        .into_response()
}

/// The answers to a key that cannot run now.
pub(crate) fn refusal(begin: &Begin) -> Option<ApiError> {
    match begin {
        Begin::Reused => Some(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key came with another request (a different body); use a new key for a new request",
        )),
        Begin::InFlight => Some(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_key_in_flight",
            "the first request with this Idempotency-Key is still being appended; retry once it has been answered",
        )),
        Begin::Run(_) | Begin::Replay(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn begin(store: &Arc<IdempotencyStore>, now: Instant, key: &str, body: &[u8]) -> Begin {
        store.begin_at(now, "w", "k1", key.to_string(), fingerprint("json", body))
    }

    #[test]
    fn a_retry_replays_and_another_body_is_refused() {
        let store = IdempotencyStore::new(Duration::from_secs(60), 10);
        let now = Instant::now();
        let Begin::Run(mut pending) = begin(&store, now, "a", b"[1]") else {
            panic!("a new key runs");
        };
        assert!(matches!(begin(&store, now, "a", b"[1]"), Begin::InFlight));
        assert!(matches!(begin(&store, now, "a", b"[2]"), Begin::Reused));
        pending.answer_at(now, "first");
        match begin(&store, now, "a", b"[1]") {
            Begin::Replay(body) => assert_eq!(&*body, "first"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(begin(&store, now, "a", b"[2]"), Begin::Reused));
        // Another API key, or another workspace, has its own keys.
        let other = store.begin_at(now, "w", "k2", "a".into(), fingerprint("json", b"[1]"));
        assert!(matches!(other, Begin::Run(_)));
        let other = store.begin_at(now, "v", "k1", "a".into(), fingerprint("json", b"[1]"));
        assert!(matches!(other, Begin::Run(_)));
        // The same bytes as another kind of body are another request.
        let ndjson = store.begin_at(now, "w", "k1", "a".into(), fingerprint("ndjson", b"[1]"));
        assert!(matches!(ndjson, Begin::Reused));
    }

    #[test]
    fn a_request_without_an_answer_frees_its_key() {
        let store = IdempotencyStore::new(Duration::from_secs(60), 10);
        let now = Instant::now();
        let first = begin(&store, now, "a", b"[1]");
        assert!(matches!(first, Begin::Run(_)));
        drop(first);
        assert_eq!(store.len("w"), 0);
        assert!(matches!(begin(&store, now, "a", b"[2]"), Begin::Run(_)));
    }

    #[test]
    fn answers_expire_and_the_oldest_go_first() {
        let store = IdempotencyStore::new(Duration::from_secs(60), 2);
        let t0 = Instant::now();
        for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
            let Begin::Run(mut p) = begin(&store, t0, key, b"x") else {
                panic!("new key {key}");
            };
            p.answer_at(t0 + Duration::from_secs(i as u64), key);
        }
        // Two kept per workspace: "a" was dropped.
        assert_eq!(store.len("w"), 2);
        assert!(matches!(begin(&store, t0, "a", b"y"), Begin::Run(_)));
        assert!(matches!(
            begin(&store, t0 + Duration::from_secs(2), "b", b"y"),
            Begin::Reused
        ));
        // "b" was answered at t0+1s, "c" at t0+2s: at t0+61s only "c" is kept.
        let late = t0 + Duration::from_secs(61);
        assert!(matches!(begin(&store, late, "b", b"y"), Begin::Run(_)));
        assert!(matches!(begin(&store, late, "c", b"x"), Begin::Replay(_)));
    }

    #[test]
    fn kept_bytes_are_bounded() {
        let store = IdempotencyStore::new(Duration::from_secs(60), 1000);
        let now = Instant::now();
        let big = "r".repeat(MAX_KEPT_BYTES / 3);
        for key in ["a", "b", "c", "d"] {
            let Begin::Run(mut p) = begin(&store, now, key, b"x") else {
                panic!("new key {key}");
            };
            p.answer_at(now, &big);
        }
        // Three fit in the budget; the fourth pushed out the oldest.
        assert_eq!(store.len("w"), 3);
        assert!(matches!(begin(&store, now, "a", b"y"), Begin::Run(_)));
        assert!(matches!(begin(&store, now, "b", b"x"), Begin::Replay(_)));
        let kept = store.lock().get("w").map(|e| e.kept_bytes);
        assert_eq!(kept, Some(3 * big.len()));
    }

    #[test]
    fn keys_are_checked() {
        let mut headers = HeaderMap::new();
        assert_eq!(key_of(&headers).unwrap(), None);
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("3f2a-retry-1"));
        assert_eq!(key_of(&headers).unwrap().as_deref(), Some("3f2a-retry-1"));
        for bad in ["", "has space", &"k".repeat(MAX_KEY_BYTES + 1)] {
            headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_str(bad).unwrap());
            assert_eq!(
                key_of(&headers).unwrap_err().error,
                "invalid_idempotency_key"
            );
        }
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("a"));
        headers.append(IDEMPOTENCY_KEY, HeaderValue::from_static("b"));
        assert_eq!(
            key_of(&headers).unwrap_err().error,
            "invalid_idempotency_key"
        );
    }
}
