//! RFC 5424 syslog messages carrying an export row, and their framing for
//! TCP and TLS transports (octet counting, RFC 6587 section 3.4.1, which
//! RFC 5425 requires):
//!
//! ```text
//! LEN SP <PRI>1 TIMESTAMP HOSTNAME chainlog - MSGID [chainlog@PEN seq="…" hash="…" workspace="…" event="…"] MSG
//! ```
//!
//! PRI is the configured facility times 8 plus the row's severity
//! (informational for a success, notice for a failure, warning for a failed
//! authentication). TIMESTAMP is the event's time in UTC with microseconds
//! (RFC 5424 allows six fraction digits). MSGID is the event type, cut to
//! 32 printable ASCII characters (the full type is the `event` parameter).
//! Parameter values escape `"`, `\` and `]` with a backslash. MSG is the
//! row as CEF, JSON or OCSF; it starts with a UTF-8 BOM when it holds
//! anything but ASCII (RFC 5424's MSG-UTF8), and has none otherwise
//! (MSG-ANY, which every receiver reads as is).
//!
//! The sender that writes these frames over TLS is
//! `delivery::syslog_send` (feature `server`).

use std::fmt::Write as _;
use std::str::FromStr;

use serde_json::Value;

use super::row::{render, Format, RenderError, Row, Severity};

/// The IANA Private Enterprise Number in the structured data's ID when
/// none is configured: 32473, reserved for documentation (RFC 5612).
pub const DEFAULT_PEN: u32 = 32473;

/// The UTF-8 byte order mark that opens a MSG-UTF8.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A syslog facility (0-23).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facility(u8);

/// Facility names, in code order (RFC 5424 table 1; the names rsyslog
/// and syslog-ng use).
const FACILITY_NAMES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

impl Facility {
    /// `log audit` (13), the default.
    pub const AUDIT: Facility = Facility(13);

    /// The facility with this code, if it is one (0-23).
    pub fn from_code(code: u8) -> Option<Facility> {
        (usize::from(code) < FACILITY_NAMES.len()).then_some(Facility(code))
    }

    /// Its code.
    pub fn code(self) -> u8 {
        self.0
    }

    /// Its name (`audit`, `local0`, …).
    pub fn name(self) -> &'static str {
        FACILITY_NAMES[usize::from(self.0)]
    }
}

impl Default for Facility {
    fn default() -> Self {
        Facility::AUDIT
    }
}

impl FromStr for Facility {
    type Err = SyslogError;
    /// A name (`local0`, `audit`, `authpriv`…) or a code (`0`-`23`).
    fn from_str(s: &str) -> Result<Self, SyslogError> {
        FACILITY_NAMES
            .iter()
            .position(|n| *n == s)
            .and_then(|i| u8::try_from(i).ok())
            .or_else(|| s.parse::<u8>().ok())
            .and_then(Facility::from_code)
            .ok_or_else(|| SyslogError::BadFacility(s.to_string()))
    }
}

/// Why a syslog message could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyslogError {
    /// Not a facility name or code.
    #[error("unknown syslog facility {0:?} (a name such as local0 or audit, or 0-23)")]
    BadFacility(String),
    /// A HOSTNAME must be 1-255 printable ASCII characters, no spaces.
    #[error("syslog hostname {0:?} is not 1-255 printable ASCII characters without spaces")]
    BadHostname(String),
    /// The message body only comes as CEF, JSON or OCSF.
    #[error(transparent)]
    Render(#[from] RenderError),
}

/// How messages are built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogOptions {
    /// The facility. Default `audit` (13).
    pub facility: Facility,
    /// The HOSTNAME field: this machine's name. Default `-` (none).
    hostname: String,
    /// The Private Enterprise Number in `chainlog@PEN`. Default
    /// [`DEFAULT_PEN`].
    pub pen: u32,
    /// The MSG format. Default CEF.
    pub body: Format,
}

impl Default for SyslogOptions {
    fn default() -> Self {
        SyslogOptions {
            facility: Facility::AUDIT,
            hostname: "-".into(),
            pen: DEFAULT_PEN,
            body: Format::Cef,
        }
    }
}

impl SyslogOptions {
    /// Sets HOSTNAME (checked: 1-255 printable ASCII, no spaces).
    pub fn with_hostname(mut self, hostname: &str) -> Result<Self, SyslogError> {
        if hostname.is_empty()
            || hostname.len() > 255
            || !hostname.bytes().all(|b| (33..=126).contains(&b))
        {
            return Err(SyslogError::BadHostname(hostname.to_string()));
        }
        self.hostname = hostname.to_string();
        Ok(self)
    }

    /// Sets the MSG format.
    pub fn with_body(mut self, body: Format) -> Self {
        self.body = body;
        self
    }

    /// Sets the facility.
    pub fn with_facility(mut self, facility: Facility) -> Self {
        self.facility = facility;
        self
    }

    /// The HOSTNAME field.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }
}

/// The syslog severity of a row: 6 (informational), 5 (notice) or 4
/// (warning).
pub fn syslog_severity(severity: Severity) -> u8 {
    match severity {
        Severity::Informational => 6,
        Severity::Low => 5,
        Severity::Medium => 4,
    }
}

/// The RFC 5424 message for `row` (an export row) of `workspace`, unframed.
pub fn message(
    options: &SyslogOptions,
    workspace: &str,
    row: &Value,
) -> Result<Vec<u8>, SyslogError> {
    let body = render(options.body, workspace, row)?;
    let row = Row::from_value(row)?;
    let pri = u16::from(options.facility.code()) * 8 + u16::from(syslog_severity(row.severity()));
    let mut head = String::with_capacity(256);
    // Writing to a String cannot fail.
    let _ = write!(
        head,
        "<{pri}>1 {} {} chainlog - ",
        timestamp(&row),
        options.hostname
    );
    head.extend(
        row.event
            .chars()
            .map(|c| {
                if (c as u32) > 32 && (c as u32) < 127 {
                    c
                } else {
                    '_'
                }
            })
            .take(32),
    );
    let _ = write!(
        head,
        " [chainlog@{} seq=\"{}\" hash=\"",
        options.pen, row.seq
    );
    param_value(&mut head, row.hash);
    head.push_str("\" workspace=\"");
    param_value(&mut head, workspace);
    head.push_str("\" event=\"");
    param_value(&mut head, row.event);
    head.push_str("\"] ");
    let mut out = head.into_bytes();
    if !body.is_ascii() {
        out.extend_from_slice(BOM);
    }
    out.extend_from_slice(&body);
    Ok(out)
}

/// Appends `message` to `out` with octet-counting framing: its length in
/// decimal, a space, the message.
pub fn frame(message: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(message.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(message);
}

/// `2026-03-09T09:52:14.123456Z`.
fn timestamp(row: &Row<'_>) -> String {
    let nanos = i128::from(row.time.unix_nanos());
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.microsecond()
        ),
        // Every i64 of nanoseconds is a valid time; NILVALUE otherwise.
        Err(_) => "-".into(),
    }
}

/// Appends an SD PARAM-VALUE, escaped.
fn param_value(out: &mut String, value: &str) {
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::row::tests::sample_row;
    use serde_json::json;

    /// The SD parameters of a message, unescaped, as a receiver reads them.
    fn params(message: &str) -> Vec<(String, String)> {
        let start = message.find(" [").unwrap() + 2;
        let mut chars = message[start..].chars().peekable();
        let id: String = chars.by_ref().take_while(|c| *c != ' ').collect();
        assert_eq!(id, "chainlog@32473");
        let mut out = Vec::new();
        loop {
            let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
            assert_eq!(chars.next(), Some('"'));
            let mut value = String::new();
            loop {
                match chars.next().unwrap() {
                    '\\' => value.push(chars.next().unwrap()),
                    '"' => break,
                    c => value.push(c),
                }
            }
            out.push((name, value));
            match chars.next().unwrap() {
                ' ' => continue,
                ']' => break,
                c => panic!("unexpected {c:?}"),
            }
        }
        out
    }

    #[test]
    fn builds_an_rfc5424_message() {
        let options = SyslogOptions::default().with_hostname("audit-1").unwrap();
        let m = message(&options, "acme", &sample_row()).unwrap();
        let text = String::from_utf8(m).unwrap();
        let want = format!(
            "<110>1 2026-03-09T09:52:14.123456Z audit-1 chainlog - pcap.download \
             [chainlog@32473 seq=\"1042\" hash=\"{}\" workspace=\"acme\" event=\"pcap.download\"] CEF:0|",
            "0f".repeat(32)
        );
        assert!(text.starts_with(&want), "{text}");
        let mut failed = sample_row();
        failed["event"] = json!("auth.login_failed");
        failed["outcome"] = json!("failure");
        let options = SyslogOptions::default()
            .with_facility("local0".parse().unwrap())
            .with_body(Format::Json);
        let text = String::from_utf8(message(&options, "acme", &failed).unwrap()).unwrap();
        // local0 (16) * 8 + warning (4).
        assert!(text.starts_with("<132>1 "), "{text}");
        let json_body = &text[text.find("] ").unwrap() + 2..];
        let back: Value = serde_json::from_str(json_body).unwrap();
        assert_eq!(back["workspace"], "acme");
    }

    #[test]
    fn sd_values_are_escaped_and_utf8_gets_a_bom() {
        let workspace = "we\"ird]\\ ws=1";
        let mut row = sample_row();
        row["event"] = json!("a.very_long_event_type_that_goes_past_thirty_two");
        row["actor"] = json!("ünïcode");
        let options = SyslogOptions::default().with_body(Format::Json);
        let m = message(&options, workspace, &row).unwrap();
        let at = m
            .windows(3)
            .position(|w| w == BOM)
            .expect("a BOM before a UTF-8 MSG");
        assert_eq!(&m[at - 2..at], b"] ");
        let text = String::from_utf8(m).unwrap();
        let p = params(&text);
        assert_eq!(p[0], ("seq".into(), "1042".into()));
        assert_eq!(p[2], ("workspace".into(), workspace.to_string()));
        assert_eq!(p[3].1, "a.very_long_event_type_that_goes_past_thirty_two");
        let msgid = text.split(' ').nth(5).unwrap();
        assert_eq!(msgid, "a.very_long_event_type_that_goes");
        // ASCII bodies have no BOM.
        let ascii = message(&SyslogOptions::default(), "acme", &sample_row()).unwrap();
        assert!(!ascii.windows(3).any(|w| w == BOM));
    }

    #[test]
    fn options_are_checked() {
        assert_eq!("audit".parse::<Facility>().unwrap().code(), 13);
        assert_eq!("23".parse::<Facility>().unwrap().name(), "local7");
        assert!("24".parse::<Facility>().is_err());
        assert!("locl0".parse::<Facility>().is_err());
        for bad in ["", "two words", "tab\t", &"h".repeat(256), "ünï"] {
            assert!(
                SyslogOptions::default().with_hostname(bad).is_err(),
                "{bad:?}"
            );
        }
        let mut broken = sample_row();
        broken["hash"] = json!(1);
        assert!(matches!(
            message(&SyslogOptions::default(), "acme", &broken),
            Err(SyslogError::Render(RenderError::BadField {
                field: "hash",
                ..
            }))
        ));
    }

    #[test]
    fn frames_count_octets() {
        let mut out = Vec::new();
        frame("<14>1 ü".as_bytes(), &mut out);
        frame(b"x", &mut out);
        assert_eq!(out, "8 <14>1 ü1 x".as_bytes());
    }
}
