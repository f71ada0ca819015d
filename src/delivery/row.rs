//! One export row (the object `GET …/events` and the JSON Lines export
//! write, see [`crate::query::export`]), read back for the SIEM formats, and
//! the classification the formats share: what kind of activity an event
//! type names and how severe a row is.

use std::net::IpAddr;
use std::str::FromStr;

use serde_json::{Map, Value};

use crate::event::Timestamp;

/// The formats a row is delivered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The export row as JSON, with `workspace` added.
    Json,
    /// An OCSF event ([`super::ocsf`]).
    Ocsf,
    /// A CEF line ([`super::cef`]).
    Cef,
}

impl Format {
    /// The name used in configuration: `json`, `ocsf` or `cef`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Ocsf => "ocsf",
            Format::Cef => "cef",
        }
    }
}

impl FromStr for Format {
    type Err = RenderError;
    fn from_str(s: &str) -> Result<Self, RenderError> {
        match s {
            "json" => Ok(Format::Json),
            "ocsf" => Ok(Format::Ocsf),
            "cef" => Ok(Format::Cef),
            other => Err(RenderError::UnknownFormat(other.to_string())),
        }
    }
}

/// Why a row could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// The row is not a JSON object.
    #[error("an export row must be a JSON object")]
    NotAnObject,
    /// A field every row has is missing or null.
    #[error("the export row has no {0}")]
    MissingField(&'static str),
    /// A field has the wrong type or an unreadable value.
    #[error("the export row's {field} is not {expected}")]
    BadField {
        /// The field.
        field: &'static str,
        /// What it should be.
        expected: &'static str,
    },
    /// A format name that is not `json`, `ocsf` or `cef`.
    #[error("unknown delivery format {0:?} (expected json, ocsf or cef)")]
    UnknownFormat(String),
}

/// Renders `row` (an export row) of `workspace` in `format`: one JSON
/// object or one CEF line, without a line end.
///
/// ```
/// use chainlog::delivery::{render, Format};
///
/// let row = serde_json::json!({
///     "seq": 7, "timestamp": "2026-03-09T09:52:14Z", "event": "auth.login_failed",
///     "actor": "alice@acme.io", "node": null, "resource": null, "ip": "203.0.113.42",
///     "outcome": "failure", "context": {}, "hash": "ab".repeat(32),
///     "received_at": null, "origin": null, "appender": null,
/// });
/// let ocsf: serde_json::Value = serde_json::from_slice(&render(Format::Ocsf, "acme", &row)?)?;
/// assert_eq!(ocsf["class_uid"], 3002); // Authentication
/// assert_eq!(ocsf["metadata"]["sequence"], 7);
/// let cef = String::from_utf8(render(Format::Cef, "acme", &row)?)?;
/// assert!(cef.starts_with("CEF:0|chainlog|chainlog|"));
/// assert!(cef.contains(" cn1=7 cn1Label=seq cs1=acme cs1Label=workspace "));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn render(format: Format, workspace: &str, row: &Value) -> Result<Vec<u8>, RenderError> {
    let row = Row::from_value(row)?;
    Ok(match format {
        Format::Json => row.json_with_workspace(workspace),
        Format::Ocsf => {
            // Serializing a Value into a Vec cannot fail.
            serde_json::to_vec(&super::ocsf::to_ocsf(workspace, &row)).unwrap_or_default()
        }
        Format::Cef => super::cef::to_cef(workspace, &row).into_bytes(),
    })
}

/// An export row, borrowed from its JSON object.
#[derive(Debug, Clone)]
pub struct Row<'a> {
    /// The whole object, for the JSON format.
    pub object: &'a Map<String, Value>,
    /// Position in the log.
    pub seq: u64,
    /// When the event happened, as the row gives it (RFC 3339).
    pub timestamp: &'a str,
    /// The same, parsed.
    pub time: Timestamp,
    /// The dotted event type.
    pub event: &'a str,
    /// Who.
    pub actor: &'a str,
    /// The node touched, if any.
    pub node: Option<&'a str>,
    /// The resource touched, if any.
    pub resource: Option<&'a str>,
    /// The source address, if any.
    pub ip: Option<IpAddr>,
    /// Whether the action failed.
    pub failed: bool,
    /// The context object (any JSON value the row holds).
    pub context: &'a Value,
    /// The record's chain hash, hex.
    pub hash: &'a str,
    /// When the engine received it (RFC 3339), absent for version 1 records.
    pub received_at: Option<&'a str>,
    /// `client` or `engine`, absent for version 1 records.
    pub origin: Option<&'a str>,
    /// Who appended it, absent for version 1 records.
    pub appender: Option<&'a str>,
}

impl<'a> Row<'a> {
    /// Reads an export row.
    pub fn from_value(value: &'a Value) -> Result<Self, RenderError> {
        let object = value.as_object().ok_or(RenderError::NotAnObject)?;
        let text = |field: &'static str| -> Result<&'a str, RenderError> {
            match object.get(field) {
                None | Some(Value::Null) => Err(RenderError::MissingField(field)),
                Some(v) => v.as_str().ok_or(RenderError::BadField {
                    field,
                    expected: "a string",
                }),
            }
        };
        let optional = |field: &'static str| -> Result<Option<&'a str>, RenderError> {
            match text(field) {
                Ok(v) => Ok(Some(v)),
                Err(RenderError::MissingField(_)) => Ok(None),
                Err(e) => Err(e),
            }
        };
        let seq = match object.get("seq") {
            None | Some(Value::Null) => return Err(RenderError::MissingField("seq")),
            Some(v) => v.as_u64().ok_or(RenderError::BadField {
                field: "seq",
                expected: "an unsigned integer",
            })?,
        };
        let timestamp = text("timestamp")?;
        let time = Timestamp::parse_rfc3339(timestamp).map_err(|_| RenderError::BadField {
            field: "timestamp",
            expected: "an RFC 3339 time",
        })?;
        let ip = match optional("ip")? {
            None => None,
            Some(ip) => Some(ip.parse().map_err(|_| RenderError::BadField {
                field: "ip",
                expected: "an IP address",
            })?),
        };
        let failed = match text("outcome")? {
            "success" => false,
            "failure" => true,
            _ => {
                return Err(RenderError::BadField {
                    field: "outcome",
                    expected: "success or failure",
                })
            }
        };
        let hash = text("hash")?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RenderError::BadField {
                field: "hash",
                expected: "64 hex digits",
            });
        }
        Ok(Row {
            object,
            seq,
            timestamp,
            time,
            event: text("event")?,
            actor: text("actor")?,
            node: optional("node")?,
            resource: optional("resource")?,
            ip,
            failed,
            context: object.get("context").unwrap_or(&Value::Null),
            hash,
            received_at: optional("received_at")?,
            origin: optional("origin")?,
            appender: optional("appender")?,
        })
    }

    /// The event's time in milliseconds since the Unix epoch.
    pub fn time_ms(&self) -> i64 {
        self.time.unix_nanos().div_euclid(1_000_000)
    }

    /// The category: the event type up to its first dot (`pcap` of
    /// `pcap.download`).
    pub fn category(&self) -> &'a str {
        self.event.split('.').next().unwrap_or(self.event)
    }

    /// The row as compact JSON with `"workspace"` added after `seq`.
    pub fn json_with_workspace(&self, workspace: &str) -> Vec<u8> {
        let mut object = Map::with_capacity(self.object.len() + 1);
        for (key, value) in self.object {
            if key != "workspace" {
                object.insert(key.clone(), value.clone());
            }
            if key == "seq" {
                object.insert("workspace".into(), Value::from(workspace));
            }
        }
        // Serializing a Value into a Vec cannot fail.
        serde_json::to_vec(&Value::Object(object)).unwrap_or_default()
    }

    /// What the event records: an authentication, or an API activity of
    /// some kind (see [`Activity::of`]).
    pub fn activity(&self) -> Activity {
        Activity::of(self.event)
    }

    /// How severe the row is: a success is informational, a failed
    /// authentication medium, any other failure low.
    pub fn severity(&self) -> Severity {
        match (self.failed, self.activity()) {
            (false, _) => Severity::Informational,
            (true, Activity::Authentication(_)) => Severity::Medium,
            (true, Activity::Api(_)) => Severity::Low,
        }
    }
}

/// How severe a row is. OCSF's `severity_id` values; CEF and syslog map
/// them to their own scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// A success.
    Informational = 1,
    /// A failure.
    Low = 2,
    /// A failed authentication.
    Medium = 3,
}

/// What an event type records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// An authentication (category `auth`, or a login or logout anywhere).
    Authentication(AuthActivity),
    /// Anything else: an action on a resource.
    Api(ApiActivity),
}

/// The kind of an authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthActivity {
    /// A login (`auth.login`, `auth.login_failed`, `signin.console_login`).
    Logon = 1,
    /// A logout.
    Logoff = 2,
    /// Anything else in `auth.*` (an MFA challenge, a password reset).
    Other = 99,
}

/// The kind of an API activity, by the verb of the event's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiActivity {
    /// `incident.opened`, `node.added`, `s3.create_bucket`.
    Create = 1,
    /// `pcap.download`, `ec2.describe_instances`.
    Read = 2,
    /// `apikey.rotated`, `config.changed`.
    Update = 3,
    /// `node.removed`, `apikey.revoked`.
    Delete = 4,
    /// A verb none of the lists holds (`maintenance.started`).
    Other = 99,
}

const LOGON: &[&str] = &["login", "logon", "signin", "authenticate", "authenticated"];
const LOGOFF: &[&str] = &["logout", "logoff", "signout"];
const CREATE: &[&str] = &[
    "create",
    "created",
    "add",
    "added",
    "open",
    "opened",
    "new",
    "register",
    "registered",
    "issue",
    "issued",
    "generate",
    "generated",
    "import",
    "imported",
    "upload",
    "uploaded",
    "run",
    "launch",
    "launched",
    "allocate",
    "copy",
    "invite",
    "invited",
];
const READ: &[&str] = &[
    "get",
    "list",
    "describe",
    "read",
    "download",
    "downloaded",
    "view",
    "viewed",
    "export",
    "exported",
    "search",
    "lookup",
    "head",
    "query",
    "show",
    "fetch",
    "access",
    "accessed",
    "select",
    "scan",
    "batch_get",
    "retrieve",
];
const UPDATE: &[&str] = &[
    "update",
    "updated",
    "modify",
    "modified",
    "change",
    "changed",
    "set",
    "put",
    "rotate",
    "rotated",
    "edit",
    "edited",
    "attach",
    "attached",
    "enable",
    "enabled",
    "disable",
    "disabled",
    "tag",
    "untag",
    "assign",
    "assigned",
    "rename",
    "renamed",
    "close",
    "closed",
    "resolve",
    "resolved",
    "reopen",
    "reopened",
    "acknowledge",
    "acknowledged",
    "restore",
    "restored",
    "reset",
    "replace",
    "associate",
    "apply",
    "applied",
];
const DELETE: &[&str] = &[
    "delete",
    "deleted",
    "remove",
    "removed",
    "revoke",
    "revoked",
    "destroy",
    "destroyed",
    "terminate",
    "terminated",
    "detach",
    "detached",
    "purge",
    "purged",
    "drop",
    "dropped",
    "disassociate",
    "deregister",
    "deregistered",
];

impl Activity {
    /// Classifies an event type. The action (after the last dot) is split
    /// at `_`: a login or logout word anywhere, or the category `auth`,
    /// makes an authentication; otherwise the first word, then the last,
    /// is looked up in the verb lists.
    pub fn of(event: &str) -> Activity {
        let (category, action) = match event.split_once('.') {
            Some((c, _)) => (c, event.rsplit('.').next().unwrap_or(event)),
            None => ("", event),
        };
        let words: Vec<&str> = action.split(['_', '-']).filter(|w| !w.is_empty()).collect();
        let any = |list: &[&str]| words.iter().any(|w| list.contains(w));
        if any(LOGON) {
            return Activity::Authentication(AuthActivity::Logon);
        }
        if any(LOGOFF) {
            return Activity::Authentication(AuthActivity::Logoff);
        }
        if category == "auth" {
            return Activity::Authentication(AuthActivity::Other);
        }
        let kinds = [
            (CREATE, ApiActivity::Create),
            (READ, ApiActivity::Read),
            (UPDATE, ApiActivity::Update),
            (DELETE, ApiActivity::Delete),
        ];
        for word in [words.first(), words.last()].into_iter().flatten() {
            if let Some((_, kind)) = kinds.iter().find(|(list, _)| list.contains(word)) {
                return Activity::Api(*kind);
            }
        }
        Activity::Api(ApiActivity::Other)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A row as the JSON Lines export writes it.
    pub(crate) fn sample_row() -> Value {
        json!({
            "seq": 1042,
            "timestamp": "2026-03-09T09:52:14.123456789Z",
            "event": "pcap.download",
            "actor": "alice@acme.io",
            "node": "nyc-edge-01",
            "resource": "a3f7c2b1",
            "ip": "203.0.113.42",
            "outcome": "success",
            "context": {"sha256": "ab", "bytes": 18231},
            "hash": "0f".repeat(32),
            "received_at": "2026-03-09T09:52:14.2Z",
            "origin": "client",
            "appender": "key:ops"
        })
    }

    #[test]
    fn classifies_event_types() {
        use Activity::*;
        let cases = [
            ("auth.login_failed", Authentication(AuthActivity::Logon)),
            ("signin.console_login", Authentication(AuthActivity::Logon)),
            ("auth.logout", Authentication(AuthActivity::Logoff)),
            ("auth.mfa_challenge", Authentication(AuthActivity::Other)),
            ("incident.opened", Api(ApiActivity::Create)),
            ("pcap.download", Api(ApiActivity::Read)),
            ("ec2.describe_instances", Api(ApiActivity::Read)),
            ("apikey.rotated", Api(ApiActivity::Update)),
            ("node.removed", Api(ApiActivity::Delete)),
            ("maintenance.started", Api(ApiActivity::Other)),
            ("nodots", Api(ApiActivity::Other)),
        ];
        for (event, want) in cases {
            assert_eq!(Activity::of(event), want, "{event}");
        }
    }

    #[test]
    fn reads_a_row_and_refuses_broken_ones() {
        let value = sample_row();
        let row = Row::from_value(&value).unwrap();
        assert_eq!(row.seq, 1042);
        assert_eq!(row.time_ms(), 1_773_049_934_123);
        assert_eq!(row.category(), "pcap");
        assert_eq!(row.severity(), Severity::Informational);
        let broken = [
            (
                "seq",
                json!("x"),
                RenderError::BadField {
                    field: "seq",
                    expected: "an unsigned integer",
                },
            ),
            (
                "hash",
                json!("zz"),
                RenderError::BadField {
                    field: "hash",
                    expected: "64 hex digits",
                },
            ),
            (
                "ip",
                json!("ec2.amazonaws.com"),
                RenderError::BadField {
                    field: "ip",
                    expected: "an IP address",
                },
            ),
            (
                "outcome",
                json!("maybe"),
                RenderError::BadField {
                    field: "outcome",
                    expected: "success or failure",
                },
            ),
            ("actor", Value::Null, RenderError::MissingField("actor")),
        ];
        for (field, bad, want) in broken {
            let mut v = sample_row();
            v[field] = bad;
            assert_eq!(Row::from_value(&v).unwrap_err(), want, "{field}");
        }
        assert_eq!(
            Row::from_value(&json!([1])).unwrap_err(),
            RenderError::NotAnObject
        );
    }

    #[test]
    fn json_format_adds_the_workspace() {
        let out = render(Format::Json, "acme", &sample_row()).unwrap();
        let back: Value = serde_json::from_slice(&out).unwrap();
        let mut want = sample_row();
        want["workspace"] = json!("acme");
        assert_eq!(back, want);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("{\"seq\":1042,\"workspace\":\"acme\","),
            "{text}"
        );
        assert_eq!("cef".parse::<Format>().unwrap(), Format::Cef);
        assert!("xml".parse::<Format>().is_err());
    }
}
