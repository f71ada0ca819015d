//! What every request must meet and every answer carries, as one layer
//! around the router (see docs/SECURITY.md):
//!
//! - exactly one `Authorization` header, or 400 (with two, a proxy and the
//!   server could disagree about which key was used);
//! - a request body arrives within [`Limits::body_timeout`] of the request
//!   head, or the answer is 408 and the connection is closed;
//! - the bytes of request bodies being read at once, across all
//!   connections, stay under [`Limits::max_body_bytes_in_flight`]: a body
//!   takes its share of that budget (its declared length, else the largest
//!   body allowed) when the handler starts reading it, which is after the
//!   key was checked, and gives it back when the answer is ready. A body
//!   that cannot get its share before its own deadline is answered 503;
//! - every answer says `Cache-Control: no-store` (some carry a new key's
//!   secret) unless its route chose otherwise (the dashboard page), and
//!   under TLS `Strict-Transport-Security`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body::{Body as _, Frame, SizeHint};
use parking_lot::Mutex;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

use crate::server::error::ApiError;
use crate::server::Limits;

/// HSTS for a year; subdomains are not the server's to speak for.
const HSTS: &str = "max-age=31536000";

/// The layer's settings and the shared body budget.
#[derive(Debug)]
struct Intake {
    budget: Arc<Semaphore>,
    budget_bytes: u32,
    max_body_bytes: usize,
    body_timeout: Duration,
    tls: bool,
}

/// `router` with the intake layer around it.
pub(crate) fn wrap(router: Router, limits: &Limits, tls: bool) -> Router {
    // A budget smaller than one body would let no large body in at all.
    let budget_bytes = limits
        .max_body_bytes_in_flight
        .max(limits.max_body_bytes)
        .clamp(1, u32::MAX as usize) as u32;
    let intake = Arc::new(Intake {
        budget: Arc::new(Semaphore::new(budget_bytes as usize)),
        budget_bytes,
        max_body_bytes: limits.max_body_bytes,
        body_timeout: limits.body_timeout,
        tls,
    });
    router.layer(middleware::from_fn_with_state(intake, intake_layer))
}

async fn intake_layer(State(intake): State<Arc<Intake>>, request: Request, next: Next) -> Response {
    let mut response = if request
        .headers()
        .get_all(header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        ApiError::bad_request(
            "duplicate_authorization",
            "the request has more than one Authorization header; send exactly one",
        )
        .into_response()
    } else {
        let outcome = Arc::new(Mutex::new(Outcome::default()));
        let request =
            request.map(|body| Body::new(BudgetedBody::new(body, &intake, outcome.clone())));
        let response = next.run(request).await;
        // The handler is done with the body: give its bytes back.
        let outcome = std::mem::take(&mut *outcome.lock());
        drop(outcome.share);
        match outcome.ended {
            None => response,
            Some(ended) => {
                let mut refused = ended.into_response(intake.body_timeout);
                // The rest of the body is unread: do not reuse the connection.
                refused
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                refused
            }
        }
    };
    let headers = response.headers_mut();
    // The dashboard page sets its own (no-cache: it holds no secret).
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    if intake.tls {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    response
}

/// Why a body's reading was cut short.
#[derive(Debug, Clone, Copy)]
enum BodyEnd {
    /// The budget had no room for it before its deadline.
    NoBudget,
    /// It did not arrive before its deadline.
    TooSlow,
}

impl BodyEnd {
    fn into_response(self, limit: Duration) -> Response {
        match self {
            BodyEnd::NoBudget => {
                let mut response = ApiError::unavailable(
                    "busy",
                    "the server is reading as many request bodies as it can hold; try again shortly",
                )
                .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                response
            }
            BodyEnd::TooSlow => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} s of the request's headers; nothing was appended",
                    limit.as_secs_f64()
                ),
            )
            .into_response(),
        }
    }
}

/// What the body wrapper leaves for the layer.
#[derive(Debug, Default)]
struct Outcome {
    /// The body's share of the budget, held until the answer is ready.
    share: Option<OwnedSemaphorePermit>,
    ended: Option<BodyEnd>,
}

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// A request body that takes its share of the budget before its first
/// byte is read, and fails once its deadline passes.
struct BudgetedBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Bytes still to take from the budget (0 once taken or not needed).
    wanted: u32,
    acquiring: Option<Acquire>,
    budget: Arc<Semaphore>,
    outcome: Arc<Mutex<Outcome>>,
}

impl BudgetedBody {
    fn new(inner: Body, intake: &Intake, outcome: Arc<Mutex<Outcome>>) -> Self {
        // The declared length (hyper knows it exactly), else the largest body.
        let hint = inner.size_hint();
        let expected = hint.upper().unwrap_or(intake.max_body_bytes as u64);
        let wanted = if inner.is_end_stream() {
            0
        } else {
            expected
                .min(intake.max_body_bytes as u64)
                .min(u64::from(intake.budget_bytes)) as u32
        };
        BudgetedBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(intake.body_timeout)),
            wanted,
            acquiring: None,
            budget: intake.budget.clone(),
            outcome,
        }
    }

    fn fail(&mut self, end: BodyEnd) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.outcome.lock().ended = Some(end);
        self.wanted = 0;
        self.acquiring = None;
        Poll::Ready(Some(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "request body cut off",
        ))))
    }
}

impl http_body::Body for BudgetedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.outcome.lock().ended.is_some() {
            return Poll::Ready(None);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            let end = if this.wanted > 0 {
                BodyEnd::NoBudget
            } else {
                BodyEnd::TooSlow
            };
            return this.fail(end);
        }
        if this.wanted > 0 {
            let (budget, wanted) = (this.budget.clone(), this.wanted);
            let acquiring = this
                .acquiring
                .get_or_insert_with(|| Box::pin(budget.acquire_many_owned(wanted)));
            match acquiring.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(share)) => {
                    this.outcome.lock().share = Some(share);
                    this.wanted = 0;
                    this.acquiring = None;
                }
                // The budget is never closed.
                Poll::Ready(Err(_)) => return this.fail(BodyEnd::NoBudget),
            }
        }
        Pin::new(&mut this.inner)
            .poll_frame(cx)
            .map_err(io::Error::other)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
