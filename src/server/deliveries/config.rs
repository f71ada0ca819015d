//! The destinations of a workspace, as kept in
//! `DIR/deliveries/<workspace>.json`, and their checks.
//!
//! The API and `chainlog delivery` change the file the same way: under the
//! flock of `DIR/deliveries/deliveries.lock`, read, change, check every
//! destination, write a temporary file (mode 0600: it holds the webhook
//! secrets and HEC tokens), fsync, rename, fsync the directory. A running
//! server reads the file again when it changes ([`super::WATCH_INTERVAL`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::Timestamp;
use crate::server::params::{self, Endpoint};
use crate::server::workspace::validate_workspace_name;
use crate::storage::perms::{self, check_mode};
use crate::storage::{write_file_atomic, FsStorage};

use super::render::{self, Format};
use super::DeliveryError;

/// The folder of the data directory that holds the deliveries.
pub const DELIVERIES_DIR_NAME: &str = "deliveries";
/// Taken while a workspace's deliveries file changes.
const LOCK_FILE_NAME: &str = "deliveries.lock";
/// The file's `format` field.
const FILE_FORMAT: &str = "chainlog-deliveries";
/// The file's `version` field.
const FILE_VERSION: u32 = 1;
/// Largest deliveries file read.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// Most destinations of one workspace.
pub const MAX_DESTINATIONS: usize = 64;
/// Events sent in one request when `batch_events` is not given.
pub const DEFAULT_BATCH_EVENTS: u32 = 100;
/// Most events in one request.
pub const MAX_BATCH_EVENTS: u32 = 1000;
/// Shortest webhook secret accepted.
pub const MIN_SECRET_CHARS: usize = 16;
/// Longest secret, token, URL, address, index or host.
const MAX_FIELD_CHARS: usize = 2048;

/// Where a destination's records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// HTTPS `POST` of a JSON batch, HMAC-signed.
    Webhook,
    /// Splunk's HTTP Event Collector.
    SplunkHec,
    /// RFC 5424 over TLS (RFC 5425), octet-counted (RFC 6587).
    Syslog,
}

impl Kind {
    /// The name in the configuration and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::SplunkHec => "splunk_hec",
            Kind::Syslog => "syslog",
        }
    }
}

/// One destination, as stored (with its secret or token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Its name within the workspace: `[a-z0-9][a-z0-9_-]{0,62}`.
    #[serde(default)]
    pub name: String,
    /// Assigned when it is created (16 hex digits); its stored position
    /// belongs to this id, so a destination removed and added again under
    /// the same name starts afresh.
    #[serde(default)]
    pub id: String,
    /// Where the records go.
    pub kind: Kind,
    /// How each record is written. Default `json`.
    #[serde(default = "render::default_format", with = "render::format_name")]
    pub format: Format,
    /// Which records: the query string of `GET …/events`'s filters
    /// (`event=auth.*&outcome=failure`); empty for all.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filters: String,
    /// `webhook`: the URL posted to; `splunk_hec`: the collector's base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `webhook`: the HMAC-SHA256 key (its UTF-8 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// `splunk_hec`: the HEC token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// `splunk_hec`: the index (default: the token's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// `splunk_hec`: the `host` field (default: the server's host name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `syslog`: `host:port` of the TLS listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// A PEM file of the CA(s) that sign the receiver's certificate, in
    /// place of the system's roots (a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Events per request, 1 to 1000. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_events: Option<u32>,
    /// The first seq to deliver when the destination has no position yet.
    /// Default 0 (the whole log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_seq: Option<u64>,
}

impl Destination {
    /// Events per request.
    pub fn batch(&self) -> u32 {
        self.batch_events.unwrap_or(DEFAULT_BATCH_EVENTS)
    }

    /// The filters as a query (checked by [`Destination::validate`]).
    pub fn query(&self) -> Result<crate::query::Query, DeliveryError> {
        let pairs = filter_pairs(&self.filters)?;
        let parsed = params::parse(&pairs, Endpoint::Tail, Timestamp::now())
            .map_err(|e| invalid("filters", e.detail))?;
        Ok(parsed.query)
    }

    /// Checks every field for its kind.
    pub fn validate(&self) -> Result<(), DeliveryError> {
        validate_name(&self.name)?;
        if self.id.len() != 16 || !self.id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("id", "expected 16 hex digits".into()));
        }
        for (field, value) in [
            ("url", &self.url),
            ("secret", &self.secret),
            ("token", &self.token),
            ("index", &self.index),
            ("host", &self.host),
            ("address", &self.address),
        ] {
            if value.as_ref().is_some_and(|v| v.len() > MAX_FIELD_CHARS) {
                return Err(invalid(
                    field,
                    format!("longer than {MAX_FIELD_CHARS} bytes"),
                ));
            }
        }
        if self.filters.len() > MAX_FIELD_CHARS {
            return Err(invalid(
                "filters",
                format!("longer than {MAX_FIELD_CHARS} bytes"),
            ));
        }
        if !(1..=MAX_BATCH_EVENTS).contains(&self.batch()) {
            return Err(invalid(
                "batch_events",
                format!("must be 1 to {MAX_BATCH_EVENTS}"),
            ));
        }
        self.query()?;
        render::check(self.kind, self.format)?;
        let needs = |field: &'static str, v: &Option<String>| match v {
            Some(v) if !v.is_empty() => Ok(()),
            _ => Err(invalid(
                field,
                format!("required for a {} destination", self.kind.as_str()),
            )),
        };
        let refuses = |field: &'static str, set: bool| {
            if set {
                Err(invalid(
                    field,
                    format!("does not apply to a {} destination", self.kind.as_str()),
                ))
            } else {
                Ok(())
            }
        };
        match self.kind {
            Kind::Webhook => {
                needs("url", &self.url)?;
                needs("secret", &self.secret)?;
                check_url(self.url.as_deref().unwrap_or_default())?;
                if self
                    .secret
                    .as_ref()
                    .is_some_and(|s| s.len() < MIN_SECRET_CHARS)
                {
                    return Err(invalid(
                        "secret",
                        format!("at least {MIN_SECRET_CHARS} characters"),
                    ));
                }
                refuses("token", self.token.is_some())?;
                refuses("index", self.index.is_some())?;
                refuses("host", self.host.is_some())?;
                refuses("address", self.address.is_some())?;
            }
            Kind::SplunkHec => {
                needs("url", &self.url)?;
                needs("token", &self.token)?;
                check_url(self.url.as_deref().unwrap_or_default())?;
                refuses("secret", self.secret.is_some())?;
                refuses("address", self.address.is_some())?;
            }
            Kind::Syslog => {
                needs("address", &self.address)?;
                needs(
                    "ca_file",
                    &self.ca_file.as_ref().map(|p| p.display().to_string()),
                )?;
                refuses("url", self.url.is_some())?;
                refuses("secret", self.secret.is_some())?;
                refuses("token", self.token.is_some())?;
                refuses("index", self.index.is_some())?;
            }
        }
        Ok(())
    }

    /// The destination as shown by the API and the CLI: without its
    /// secret or token, which are only said to be set.
    pub fn redacted(&self) -> Value {
        let mut shown = self.clone();
        let secret = shown.secret.take().is_some();
        let token = shown.token.take().is_some();
        let mut value = serde_json::to_value(&shown).unwrap_or(Value::Null);
        if let Some(map) = value.as_object_mut() {
            match self.kind {
                Kind::Webhook => {
                    map.insert("secret_set".into(), secret.into());
                }
                Kind::SplunkHec => {
                    map.insert("token_set".into(), token.into());
                }
                Kind::Syslog => {}
            }
        }
        value
    }
}

fn invalid(field: &'static str, reason: String) -> DeliveryError {
    DeliveryError::Invalid { field, reason }
}

/// Checks a destination name (the rule of workspace names).
pub fn validate_name(name: &str) -> Result<(), DeliveryError> {
    validate_workspace_name(name).map_err(|_| {
        invalid(
            "name",
            "1 to 63 characters of a-z, 0-9, '_' and '-', starting with a letter or digit".into(),
        )
    })
}

/// `https://…`, or `http://` to a loopback address only (a receiver on the
/// same machine, or a test): records and signatures are not sent in clear
/// over a network.
fn check_url(url: &str) -> Result<(), DeliveryError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid("url", e.to_string()))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => match parsed
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        {
            Some("localhost") => Ok(()),
            Some(h)
                if h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback()) =>
            {
                Ok(())
            }
            _ => Err(invalid(
                "url",
                "plain http is allowed to a loopback address only; use https".into(),
            )),
        },
        other => Err(invalid(
            "url",
            format!("scheme {other:?}: expected https (or http to a loopback address)"),
        )),
    }
}

/// The (name, value) pairs of a filter query string. `cursor` is refused:
/// a destination's start is `start_seq`.
fn filter_pairs(filters: &str) -> Result<Vec<(String, String)>, DeliveryError> {
    let pairs: Vec<(String, String)> = reqwest::Url::parse("http://x/")
        .map(|mut u| {
            u.set_query(Some(filters));
            u.query_pairs().into_owned().collect()
        })
        .map_err(|e| invalid("filters", e.to_string()))?;
    let pairs: Vec<(String, String)> = if filters.is_empty() {
        Vec::new()
    } else {
        pairs
    };
    if pairs.iter().any(|(n, _)| n == "cursor") {
        return Err(invalid(
            "filters",
            "`cursor` is not a filter; set start_seq".into(),
        ));
    }
    Ok(pairs)
}

/// The file of destinations of one workspace.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveriesFile {
    format: String,
    version: u32,
    destinations: Vec<Destination>,
}

/// The deliveries folder of a data directory.
pub fn deliveries_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(DELIVERIES_DIR_NAME)
}

/// The file of a workspace's destinations.
pub fn config_path(data_dir: &Path, workspace: &str) -> PathBuf {
    deliveries_dir(data_dir).join(format!("{workspace}.json"))
}

/// The workspaces that have a deliveries file.
pub fn configured_workspaces(data_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(deliveries_dir(data_dir))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".json")?.to_string();
            validate_workspace_name(&name).ok().map(|()| name)
        })
        .collect();
    names.sort();
    names
}

/// The raw bytes of a workspace's deliveries file (`None` when missing),
/// checked for its owner and mode (no access for group or others).
pub fn read_raw(data_dir: &Path, workspace: &str) -> Result<Option<Vec<u8>>, DeliveryError> {
    let path = config_path(data_dir, workspace);
    let io_err = |source| DeliveryError::Io {
        path: path.clone(),
        source,
    };
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    let meta = file.metadata().map_err(io_err)?;
    check_mode(&meta, &path, "deliveries file (it holds secrets)", 0o077)?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(DeliveryError::BadFile {
            path,
            reason: format!("it is over {MAX_FILE_BYTES} bytes"),
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    Ok(Some(bytes))
}

/// Parses and checks a deliveries file's bytes.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<Destination>, DeliveryError> {
    let bad = |reason: String| DeliveryError::BadFile {
        path: path.to_path_buf(),
        reason,
    };
    let file: DeliveriesFile = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if file.format != FILE_FORMAT || file.version != FILE_VERSION {
        return Err(bad(format!(
            "format {:?} version {} (this build reads {FILE_FORMAT:?} version {FILE_VERSION})",
            file.format, file.version
        )));
    }
    check_all(&file.destinations).map_err(|e| bad(e.to_string()))?;
    Ok(file.destinations)
}

pub(crate) fn check_all(destinations: &[Destination]) -> Result<(), DeliveryError> {
    if destinations.len() > MAX_DESTINATIONS {
        return Err(DeliveryError::TooMany(MAX_DESTINATIONS));
    }
    let mut seen = std::collections::HashSet::new();
    for d in destinations {
        d.validate().map_err(|e| DeliveryError::InDestination {
            name: d.name.clone(),
            reason: e.to_string(),
        })?;
        if !seen.insert(d.name.as_str()) {
            return Err(DeliveryError::Exists(d.name.clone()));
        }
    }
    Ok(())
}

/// A workspace's destinations (none when it has no file).
pub fn load(data_dir: &Path, workspace: &str) -> Result<Vec<Destination>, DeliveryError> {
    match read_raw(data_dir, workspace)? {
        Some(bytes) => parse(&config_path(data_dir, workspace), &bytes),
        None => Ok(Vec::new()),
    }
}

/// Changes a workspace's destinations under the lock: `change` edits the
/// list, which is checked whole and written crash-safely.
pub fn change<T>(
    data_dir: &Path,
    workspace: &str,
    change: impl FnOnce(&mut Vec<Destination>) -> Result<T, DeliveryError>,
) -> Result<T, DeliveryError> {
    validate_workspace_name(workspace)?;
    let dir = deliveries_dir(data_dir);
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DeliveryError::Io { path, source }
    };
    perms::create_private_dir_all(&dir).map_err(io_err(&dir))?;
    let _lock = lock(&dir)?;
    let mut destinations = load(data_dir, workspace)?;
    let out = change(&mut destinations)?;
    check_all(&destinations)?;
    let file = DeliveriesFile {
        format: FILE_FORMAT.into(),
        version: FILE_VERSION,
        destinations,
    };
    let mut text = serde_json::to_vec_pretty(&file).map_err(|e| DeliveryError::BadFile {
        path: config_path(data_dir, workspace),
        reason: e.to_string(),
    })?;
    text.push(b'\n');
    write_file_atomic(&FsStorage, &dir, &format!("{workspace}.json"), &text)
        .map_err(|e| DeliveryError::Write(e.to_string()))?;
    Ok(out)
}

/// The exclusive lock of the deliveries folder (blocks until free).
fn lock(dir: &Path) -> Result<File, DeliveryError> {
    let path = dir.join(LOCK_FILE_NAME);
    perms::lock_private_file(&path).map_err(|source| DeliveryError::Io { path, source })
}

/// A new destination id: 16 random hex digits.
pub fn new_id() -> String {
    let mut bytes = [0u8; 8];
    // getrandom fails only without an entropy source; a fixed id then still
    // works, it only does not tell a re-added destination from the old one.
    let _ = getrandom::getrandom(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new webhook secret: 32 random bytes as 64 hex digits.
pub fn new_secret() -> Result<String, DeliveryError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| DeliveryError::Write(format!("no randomness for a secret: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(name: &str) -> Destination {
        Destination {
            name: name.into(),
            id: new_id(),
            kind: Kind::Webhook,
            format: Format::Json,
            filters: "event=auth.*&outcome=failure".into(),
            url: Some("https://siem.example/hook".into()),
            secret: Some("s".repeat(32)),
            token: None,
            index: None,
            host: None,
            address: None,
            ca_file: None,
            batch_events: None,
            start_seq: None,
        }
    }

    #[test]
    fn file_round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let d = webhook("siem");
        change(dir.path(), "acme", |list| {
            list.push(d.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(load(dir.path(), "acme").unwrap(), vec![d]);
        let path = config_path(dir.path(), "acme");
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        // A cut file and an unknown field are refused, not read as empty.
        let text = std::fs::read(&path).unwrap();
        assert!(String::from_utf8_lossy(&text).contains("\"format\": \"json\""));
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        assert!(matches!(
            load(dir.path(), "acme"),
            Err(DeliveryError::BadFile { .. })
        ));
        let edited = String::from_utf8(text.clone())
            .unwrap()
            .replace("\"kind\"", "\"bogus\": 1, \"kind\"");
        std::fs::write(&path, edited).unwrap();
        assert!(matches!(
            load(dir.path(), "acme"),
            Err(DeliveryError::BadFile { .. })
        ));
        let unknown = String::from_utf8(text.clone())
            .unwrap()
            .replace("\"json\"", "\"xml\"");
        assert!(parse(&path, unknown.as_bytes()).is_err(), "{unknown}");
        let ocsf = String::from_utf8(text.clone())
            .unwrap()
            .replace("\"json\"", "\"ocsf\"");
        assert_eq!(
            parse(&path, ocsf.as_bytes()).unwrap()[0].format,
            Format::Ocsf
        );
        assert_eq!(configured_workspaces(dir.path()), vec!["acme".to_string()]);
    }

    #[test]
    fn checks() {
        assert!(webhook("a").validate().is_ok());
        let mut d = webhook("a");
        d.url = Some("http://siem.example/hook".into());
        assert!(d.validate().is_err(), "plain http off loopback");
        d.url = Some("http://127.0.0.1:9/hook".into());
        assert!(d.validate().is_ok());
        d.secret = Some("short".into());
        assert!(d.validate().is_err());
        let mut d = webhook("a");
        d.filters = "cursor=5".into();
        assert!(d.validate().is_err());
        d.filters = "outcome=maybe".into();
        assert!(d.validate().is_err());
        d.filters = "limit=5".into();
        assert!(d.validate().is_err());
        let mut d = webhook("a");
        d.format = Format::Cef;
        assert!(d.validate().is_err(), "cef is for syslog");
        let mut d = webhook("A/b");
        d.name = "../x".into();
        assert!(d.validate().is_err());
        let mut d = webhook("a");
        d.kind = Kind::SplunkHec;
        assert!(
            d.validate().is_err(),
            "a HEC destination needs a token, not a secret"
        );
        d.secret = None;
        d.token = Some("tok".into());
        assert!(d.validate().is_ok());
        let shown = d.redacted();
        assert_eq!(shown["token_set"], true);
        assert!(shown.get("token").is_none());
    }
}
