//! Sending a batch: the webhook (`POST`, HMAC-signed) and the Splunk HTTP
//! Event Collector, over one reqwest client per destination.
//!
//! HTTPS verifies the receiver's certificate against the system's roots, or
//! against `ca_file` alone when given. Redirects are not followed (a
//! signed batch goes where it was configured to go) and no proxy is used.
//! A 2xx answer acknowledges the batch (for HEC, a 200 with `"code": 0`);
//! 408, 429, 5xx, timeouts and connection failures are worth retrying; any
//! other answer is a refusal ([`SendError::Refused`]), which the worker
//! treats as a failure at once (it never skips the batch: see
//! [`super::worker`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::event::Timestamp;

use super::config::{Destination, Kind};
use super::render::Rendered;
use super::DeliveryError;

/// Longest a connection may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one request may take, answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The HEC path under the collector's URL.
pub const HEC_EVENT_PATH: &str = "/services/collector/event";
/// Most bytes of an error answer kept in the failure's reason.
const MAX_REASON_BODY_CHARS: usize = 200;

/// Header: the request's time, Unix seconds.
pub const HEADER_TIMESTAMP: &str = "chainlog-timestamp";
/// Header: `v1=<hex of HMAC-SHA256(secret, timestamp + "." + body)>`.
pub const HEADER_SIGNATURE: &str = "chainlog-signature";
/// Header: the destination's name.
pub const HEADER_DESTINATION: &str = "chainlog-destination";

/// Why a batch was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying: 408, 429, 5xx, a timeout, no connection.
    #[error("{0}")]
    Retry(String),
    /// The receiver refused the batch (another 4xx, or a HEC answer that is
    /// not `"code": 0`): retrying as is will not help until it changes.
    #[error("{0}")]
    Refused(String),
}

/// Whether this build has a transport for `kind`: the syslog transport is
/// the library's `delivery::syslog`, wired here when it is in the build.
pub fn check_kind(kind: Kind) -> Result<(), DeliveryError> {
    match kind {
        Kind::Webhook | Kind::SplunkHec => Ok(()),
        Kind::Syslog => Err(DeliveryError::KindUnavailable(kind.as_str())),
    }
}

/// The signature header's value of a webhook request.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex(&mac.finalize().into_bytes()))
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The rustls configuration: the ring provider, and the CA file's
/// certificates or else the system's roots.
fn tls_config(ca_file: Option<&Path>) -> Result<ClientConfig, DeliveryError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let bad = |reason: String| DeliveryError::Tls(format!("{}: {reason}", path.display()));
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))?;
            for cert in certs {
                let cert = cert.map_err(|e| bad(e.to_string()))?;
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("holds no PEM certificate".into()));
            }
        }
        None => {
            // Unreadable system certificates only leave HTTPS unverifiable
            // (every handshake fails, and says so); plain loopback works.
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DeliveryError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The host name, for HEC's `host` field.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "chainlog".into())
}

/// A destination's sender.
#[derive(Debug)]
pub struct Sender {
    client: reqwest::Client,
    destination: Destination,
    host: String,
}

impl Sender {
    /// A sender for `destination` (a webhook or HEC destination).
    pub fn new(destination: &Destination) -> Result<Sender, DeliveryError> {
        check_kind(destination.kind)?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config(destination.ca_file.as_deref())?)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("chainlog/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DeliveryError::Tls(e.to_string()))?;
        Ok(Sender {
            client,
            host: destination.host.clone().unwrap_or_else(host_name),
            destination: destination.clone(),
        })
    }

    /// Sends one batch of rendered records of `workspace`; `rows` are the
    /// rows they were rendered from (for HEC's `time`).
    pub async fn send(
        &self,
        workspace: &str,
        rows: &[Value],
        events: Vec<Rendered>,
    ) -> Result<(), SendError> {
        let d = &self.destination;
        let url = d.url.as_deref().unwrap_or_default();
        let request = match d.kind {
            Kind::Webhook => {
                let events: Vec<Value> = events.into_iter().map(into_json).collect();
                let body = json!({
                    "workspace": workspace,
                    "destination": d.name,
                    "events": events,
                })
                .to_string();
                let timestamp = (Timestamp::now().unix_nanos() / 1_000_000_000).to_string();
                let signature = sign(
                    d.secret.as_deref().unwrap_or_default(),
                    &timestamp,
                    body.as_bytes(),
                );
                self.client
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(HEADER_TIMESTAMP, timestamp)
                    .header(HEADER_SIGNATURE, signature)
                    .header(HEADER_DESTINATION, d.name.as_str())
                    .body(body)
            }
            Kind::SplunkHec => {
                let mut body = String::new();
                for (row, event) in rows.iter().zip(events) {
                    let mut item = json!({
                        "time": hec_time(row),
                        "host": self.host,
                        "source": format!("chainlog:{workspace}"),
                        "sourcetype": "chainlog",
                        "event": into_json(event),
                    });
                    if let (Some(index), Some(map)) = (&d.index, item.as_object_mut()) {
                        map.insert("index".into(), index.as_str().into());
                    }
                    body.push_str(&item.to_string());
                }
                self.client
                    .post(format!("{}{HEC_EVENT_PATH}", url.trim_end_matches('/')))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(
                        reqwest::header::AUTHORIZATION,
                        format!("Splunk {}", d.token.as_deref().unwrap_or_default()),
                    )
                    .body(body)
            }
            Kind::Syslog => {
                return Err(SendError::Refused(
                    "the syslog transport is not in this build".into(),
                ))
            }
        };
        let answer = request
            .send()
            .await
            .map_err(|e| SendError::Retry(reason(&e)))?;
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        let shown: String = text.chars().take(MAX_REASON_BODY_CHARS).collect();
        let code = status.as_u16();
        if status.is_success() {
            if d.kind == Kind::SplunkHec {
                let hec_code = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.get("code").and_then(Value::as_i64));
                if hec_code != Some(0) {
                    return Err(SendError::Refused(format!(
                        "HTTP {code} without \"code\": 0: {shown}"
                    )));
                }
            }
            return Ok(());
        }
        let why = format!("HTTP {code}: {shown}");
        if code == 408 || code == 429 || status.is_server_error() {
            Err(SendError::Retry(why))
        } else {
            Err(SendError::Refused(why))
        }
    }
}

fn into_json(r: Rendered) -> Value {
    match r {
        Rendered::Json(v) => v,
        Rendered::Text(t) => Value::String(t),
    }
}

/// HEC's `time`: the event's timestamp in Unix seconds, to the millisecond.
fn hec_time(row: &Value) -> Value {
    let nanos = row
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(|t| Timestamp::parse_rfc3339(t).ok())
        .unwrap_or_else(Timestamp::now)
        .unix_nanos();
    let millis = nanos.div_euclid(1_000_000);
    serde_json::Number::from_f64(millis as f64 / 1000.0)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// A request failure with its causes (reqwest's own message is terse).
fn reason(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        let hmac = |key: &[u8], message: &[u8]| {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
            mac.update(message);
            hex(&mac.finalize().into_bytes())
        };
        // RFC 4231 test case 2: the HMAC used is the standard one.
        assert_eq!(
            hmac(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // The signed text is timestamp, '.', body.
        let want = hmac(b"0123456789abcdef", b"1700000000.{\"events\":[]}");
        assert_eq!(
            sign("0123456789abcdef", "1700000000", b"{\"events\":[]}"),
            format!("v1={want}")
        );
        assert_ne!(
            sign("0123456789abcdef", "1700000001", b"{\"events\":[]}"),
            format!("v1={want}")
        );
    }

    #[test]
    fn hec_time_is_event_time_in_seconds() {
        let row = json!({"timestamp": "2026-03-09T09:52:14.123456Z"});
        assert_eq!(hec_time(&row), json!(1773049934.123));
    }
}
