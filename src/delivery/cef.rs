//! Export rows as CEF (ArcSight Common Event Format, version 0):
//!
//! ```text
//! CEF:0|chainlog|chainlog|VERSION|EVENT|EVENT|SEVERITY|rt=… suser=… …
//! ```
//!
//! Header fields escape `\` and `|` with a backslash; a line end there is
//! not allowed, so it becomes a space (the event type cannot hold one; the
//! exact value is in the extension too). Extension values escape `\`, `=`
//! and line ends (`\n`, `\r`); keys are fixed here. The keys and their
//! labels are in `docs/SIEM-formats.md`.

use std::fmt::Write as _;

use super::row::{Row, Severity};

/// The row as one CEF line, without a line end.
pub fn to_cef(workspace: &str, row: &Row<'_>) -> String {
    let context = row.context.to_string();
    let mut out = String::with_capacity(256 + context.len());
    out.push_str("CEF:0|chainlog|chainlog|");
    header(&mut out, env!("CARGO_PKG_VERSION"));
    out.push('|');
    header(&mut out, row.event);
    out.push('|');
    header(&mut out, row.event);
    // Writing to a String cannot fail.
    let _ = write!(out, "|{}|", cef_severity(row.severity()));
    let mut ext = Extension {
        out: &mut out,
        first: true,
    };
    ext.field("rt", &row.time_ms().to_string());
    ext.field("cat", row.category());
    ext.field("act", row.event);
    ext.field("outcome", if row.failed { "failure" } else { "success" });
    ext.field("suser", row.actor);
    match row.ip {
        Some(std::net::IpAddr::V4(ip)) => ext.field("src", &ip.to_string()),
        Some(std::net::IpAddr::V6(ip)) => {
            ext.field("c6a2", &ip.to_string());
            ext.field("c6a2Label", "Source IPv6 Address");
        }
        None => {}
    }
    if let Some(node) = row.node {
        ext.field("dhost", node);
    }
    ext.field("cn1", &row.seq.to_string());
    ext.field("cn1Label", "seq");
    ext.field("cs1", workspace);
    ext.field("cs1Label", "workspace");
    ext.field("cs2", row.hash);
    ext.field("cs2Label", "hash");
    if let Some(resource) = row.resource {
        ext.field("cs3", resource);
        ext.field("cs3Label", "resource");
    }
    if let Some(appender) = row.appender {
        ext.field("cs4", appender);
        ext.field("cs4Label", "appender");
    }
    if let Some(origin) = row.origin {
        ext.field("cs5", origin);
        ext.field("cs5Label", "origin");
    }
    ext.field("msg", &context);
    out
}

/// CEF's 0-10 scale: 1 (low) for a success, 3 (low) for a failure, 5
/// (medium) for a failed authentication.
pub fn cef_severity(severity: Severity) -> u8 {
    match severity {
        Severity::Informational => 1,
        Severity::Low => 3,
        Severity::Medium => 5,
    }
}

/// Appends a header field, escaped.
fn header(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
}

/// The extension: `key=value` pairs separated by spaces.
struct Extension<'a> {
    out: &'a mut String,
    first: bool,
}

impl Extension<'_> {
    fn field(&mut self, key: &str, value: &str) {
        if !self.first {
            self.out.push(' ');
        }
        self.first = false;
        self.out.push_str(key);
        self.out.push('=');
        for c in value.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '=' => self.out.push_str("\\="),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                c => self.out.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::row::tests::sample_row;
    use crate::delivery::{render, Format};
    use serde_json::{json, Value};

    /// A CEF reader as a receiver would write one: header fields split at
    /// unescaped `|`, extension keys found as `KEY=` after a space.
    fn parse(line: &str) -> (Vec<String>, Vec<(String, String)>) {
        let mut fields = Vec::new();
        let mut current = String::new();
        let mut chars = line.chars();
        while fields.len() < 7 {
            match chars.next().expect("header ends early") {
                '\\' => current.push(chars.next().expect("dangling escape")),
                '|' => fields.push(std::mem::take(&mut current)),
                c => current.push(c),
            }
        }
        let ext: Vec<char> = chars.collect();
        // Key starts: at 0 or after a space, `[A-Za-z0-9]+=` with the `=`
        // not escaped.
        let mut starts = Vec::new();
        let mut i = 0;
        while i < ext.len() {
            if i == 0 || ext[i - 1] == ' ' {
                let mut j = i;
                while j < ext.len() && ext[j].is_ascii_alphanumeric() {
                    j += 1;
                }
                if j > i && j < ext.len() && ext[j] == '=' {
                    starts.push((i, j));
                }
            }
            if ext[i] == '\\' {
                i += 1;
            }
            i += 1;
        }
        let mut pairs = Vec::new();
        for (n, &(k, eq)) in starts.iter().enumerate() {
            let end = starts.get(n + 1).map_or(ext.len(), |&(next, _)| next - 1);
            let mut value = String::new();
            let mut it = ext[eq + 1..end].iter();
            while let Some(&c) = it.next() {
                if c == '\\' {
                    match it.next().copied().expect("dangling escape") {
                        'n' => value.push('\n'),
                        'r' => value.push('\r'),
                        other => value.push(other),
                    }
                } else {
                    value.push(c);
                }
            }
            pairs.push((ext[k..eq].iter().collect(), value));
        }
        (fields, pairs)
    }

    fn get<'a>(pairs: &'a [(String, String)], key: &str) -> &'a str {
        &pairs
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no {key}"))
            .1
    }

    #[test]
    fn maps_the_standard_keys() {
        let line = String::from_utf8(render(Format::Cef, "acme", &sample_row()).unwrap()).unwrap();
        let (header, ext) = parse(&line);
        assert_eq!(
            header[..7],
            [
                "CEF:0",
                "chainlog",
                "chainlog",
                env!("CARGO_PKG_VERSION"),
                "pcap.download",
                "pcap.download",
                "1"
            ]
        );
        assert_eq!(get(&ext, "rt"), "1773049934123");
        assert_eq!(get(&ext, "suser"), "alice@acme.io");
        assert_eq!(get(&ext, "src"), "203.0.113.42");
        assert_eq!(get(&ext, "cn1"), "1042");
        assert_eq!(get(&ext, "cs1"), "acme");
        assert_eq!(get(&ext, "cs2"), "0f".repeat(32));
        assert_eq!(get(&ext, "outcome"), "success");
        let context: Value = serde_json::from_str(get(&ext, "msg")).unwrap();
        assert_eq!(context["bytes"], 18231);
        assert!(!line.contains('\n'));
    }

    #[test]
    fn hostile_values_round_trip() {
        let hostile = [
            "a|b\\c=d",
            "x\ny\r\nz",
            "alice cs1=evil cn1=1",
            "\\",
            "=",
            "trailing\\",
            " leading space",
            "ünï|cødé=\\n",
        ];
        for value in hostile {
            let mut row = sample_row();
            row["actor"] = json!(value);
            row["node"] = json!(value);
            row["ip"] = json!("2001:db8::1");
            row["context"] = json!({ "k": value });
            let line = String::from_utf8(render(Format::Cef, value, &row).unwrap()).unwrap();
            assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
            let (header, ext) = parse(&line);
            assert_eq!(header.len(), 7);
            assert_eq!(get(&ext, "suser"), value, "{line}");
            assert_eq!(get(&ext, "dhost"), value);
            assert_eq!(get(&ext, "cs1"), value, "{line}");
            assert_eq!(get(&ext, "cn1"), "1042", "{line}");
            assert_eq!(get(&ext, "c6a2"), "2001:db8::1");
            let context: Value = serde_json::from_str(get(&ext, "msg")).unwrap();
            assert_eq!(context["k"], value);
            // Exactly one cs1 and one cn1: the hostile text made no key.
            assert_eq!(ext.iter().filter(|(k, _)| k == "cs1").count(), 1);
            assert_eq!(ext.iter().filter(|(k, _)| k == "cn1").count(), 1);
        }
    }

    #[test]
    fn header_escapes_pipes_and_backslashes() {
        let mut out = String::new();
        header(&mut out, "a|b\\c\nd");
        assert_eq!(out, "a\\|b\\\\c d");
        let line = format!("CEF:0|v|p|{out}|e|n|1|k=v");
        let (fields, ext) = parse(&line);
        assert_eq!(fields[3], "a|b\\c d");
        assert_eq!(ext, [("k".to_string(), "v".to_string())]);
    }
}
