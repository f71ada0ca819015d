//! Reading an archived object's S3 Object Lock state as the bucket reports it.
//!
//! A HEAD answers an object's lock in `x-amz-object-lock-mode`,
//! `x-amz-object-lock-retain-until-date` and
//! `x-amz-object-lock-legal-hold`, which object_store's `ObjectMeta` does
//! not carry. So the HEAD goes through a client whose HTTP service keeps the
//! headers of the last answer it passed on: object_store still builds,
//! signs and retries the request, and this module only reads the answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use object_store::{ClientOptions, HeaderMap};
use parking_lot::Mutex;
use serde::Serialize;

/// An object's lock, as its HEAD reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectLockState {
    /// `COMPLIANCE` or `GOVERNANCE`; `None` when the object has no retention.
    pub mode: Option<String>,
    /// Until when (RFC 3339, as the bucket wrote it).
    pub retain_until: Option<String>,
    /// `ON` or `OFF` when the bucket reports a legal hold.
    pub legal_hold: Option<String>,
}

impl ObjectLockState {
    /// The lock headers of a HEAD answer.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        ObjectLockState {
            mode: text("x-amz-object-lock-mode"),
            retain_until: text("x-amz-object-lock-retain-until-date"),
            legal_hold: text("x-amz-object-lock-legal-hold"),
        }
    }
}

/// The headers of the last answer a [`HeaderTap`] client passed on.
pub(super) type LastHeaders = Arc<Mutex<Option<HeaderMap>>>;

/// Connects object_store's own reqwest client, wrapped so that each
/// answer's headers are kept in `last`.
#[derive(Debug, Default)]
pub(super) struct HeaderTap {
    pub(super) last: LastHeaders,
}

impl HttpConnector for HeaderTap {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(Tapped {
            inner: ReqwestConnector::default().connect(options)?,
            last: self.last.clone(),
        }))
    }
}

#[derive(Debug)]
struct Tapped {
    inner: HttpClient,
    last: LastHeaders,
}

type Answer<'a> = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'a>>;

impl HttpService for Tapped {
    // The trait is declared with `async_trait`; this is its expanded form.
    fn call<'life0, 'async_trait>(&'life0 self, request: HttpRequest) -> Answer<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let answer = self.inner.execute(request).await?;
            *self.last.lock() = Some(answer.headers().clone());
            Ok(answer)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_headers_are_read_and_their_absence_is_none() {
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-object-lock-mode", "COMPLIANCE".parse().unwrap());
        headers.insert(
            "x-amz-object-lock-retain-until-date",
            "2027-03-01T00:00:00.000Z".parse().unwrap(),
        );
        let state = ObjectLockState::from_headers(&headers);
        assert_eq!(state.mode.as_deref(), Some("COMPLIANCE"));
        assert_eq!(
            state.retain_until.as_deref(),
            Some("2027-03-01T00:00:00.000Z")
        );
        assert_eq!(state.legal_hold, None);
        let none = ObjectLockState::from_headers(&HeaderMap::new());
        assert_eq!((none.mode, none.retain_until), (None, None));
    }
}
