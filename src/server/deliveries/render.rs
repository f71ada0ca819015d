//! What one record looks like at a destination: [`render`], the one place
//! a format is resolved.
//!
//! `json` is the row of `GET …/events` with the workspace added; `ocsf` and
//! `cef` are the library's [`crate::delivery`] formats (OCSF for webhooks and
//! HEC, CEF for syslog).

use serde_json::Value;

use crate::delivery::{cef, ocsf, Row};

use super::config::Kind;
use super::DeliveryError;

pub use crate::delivery::Format;

/// The configuration's default format: `json`.
pub fn default_format() -> Format {
    Format::Json
}

/// [`Format`] in the configuration, by its name (`json`, `ocsf`, `cef`).
pub mod format_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Format;

    /// Writes the format's name.
    pub fn serialize<S: Serializer>(format: &Format, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(format.as_str())
    }

    /// Reads a format's name.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Format, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// One record, rendered.
#[derive(Debug, Clone, PartialEq)]
pub enum Rendered {
    /// A JSON object (`json`, `ocsf`): an element of a webhook batch, a
    /// HEC event.
    Json(Value),
    /// A line of text (`cef`): a syslog message.
    Text(String),
}

/// Whether a destination of `kind` can carry `format` in this build.
pub fn check(kind: Kind, format: Format) -> Result<(), DeliveryError> {
    let fits = match kind {
        Kind::Webhook | Kind::SplunkHec => matches!(format, Format::Json | Format::Ocsf),
        Kind::Syslog => matches!(format, Format::Json | Format::Cef),
    };
    if !fits {
        return Err(DeliveryError::Invalid {
            field: "format",
            reason: format!(
                "a {} destination takes {}",
                kind.as_str(),
                match kind {
                    Kind::Syslog => "cef or json",
                    _ => "json or ocsf",
                }
            ),
        });
    }
    Ok(())
}

/// Renders one row (an object as `GET …/events` gives it, with `seq`,
/// `hash` and the provenance fields) of `workspace` in `format`.
pub fn render(format: Format, workspace: &str, row: &Value) -> Result<Rendered, DeliveryError> {
    match format {
        Format::Json => {
            let mut row = row.clone();
            let map = row
                .as_object_mut()
                .ok_or(DeliveryError::Render("a row is not a JSON object"))?;
            map.insert("workspace".into(), workspace.into());
            Ok(Rendered::Json(row))
        }
        Format::Ocsf => Ok(Rendered::Json(ocsf::to_ocsf(
            workspace,
            &Row::from_value(row)?,
        ))),
        Format::Cef => Ok(Rendered::Text(cef::to_cef(
            workspace,
            &Row::from_value(row)?,
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_keeps_the_row_and_adds_the_workspace() {
        let row = json!({"seq": 4, "event": "auth.login", "hash": "ab"});
        let Rendered::Json(out) = render(Format::Json, "acme", &row).unwrap() else {
            panic!("json renders as JSON");
        };
        assert_eq!(
            out,
            json!({"seq": 4, "event": "auth.login", "hash": "ab", "workspace": "acme"})
        );
        assert!(render(Format::Json, "acme", &json!([1])).is_err());
        let row = json!({
            "seq": 7, "timestamp": "2026-03-09T09:52:14Z", "event": "auth.login_failed",
            "actor": "alice@acme.io", "node": null, "resource": null, "ip": "203.0.113.42",
            "outcome": "failure", "context": {}, "hash": "ab".repeat(32),
            "received_at": null, "origin": null, "appender": null,
        });
        let Rendered::Json(ocsf) = render(Format::Ocsf, "acme", &row).unwrap() else {
            panic!("ocsf renders as JSON");
        };
        assert_eq!(ocsf["metadata"]["sequence"], 7);
        let Rendered::Text(cef) = render(Format::Cef, "acme", &row).unwrap() else {
            panic!("cef renders as text");
        };
        assert!(cef.starts_with("CEF:0|chainlog|"));
        assert!(matches!(
            render(Format::Ocsf, "acme", &json!({"seq": 1})),
            Err(DeliveryError::Row(_))
        ));
        assert!(check(Kind::Webhook, Format::Cef).is_err());
        assert!(check(Kind::SplunkHec, Format::Json).is_ok());
    }
}
