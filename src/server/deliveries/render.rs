//! What one record looks like at a destination: [`render`], the one place
//! a format is resolved.
//!
//! `json` is the row of `GET …/events` with the workspace added. `ocsf`
//! and `cef` are names the configuration accepts for the formats of the
//! library's `delivery` module; until they are wired here, a destination
//! that asks for one is refused with [`DeliveryError::FormatUnavailable`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::Kind;
use super::DeliveryError;

/// How each record is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// The row of `GET …/events`, plus `workspace`.
    #[default]
    Json,
    /// OCSF 1.x (API Activity, Authentication).
    Ocsf,
    /// ArcSight CEF (syslog only).
    Cef,
}

impl Format {
    /// The name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Ocsf => "ocsf",
            Format::Cef => "cef",
        }
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
    match format {
        Format::Json => Ok(()),
        other => Err(DeliveryError::FormatUnavailable(other.as_str())),
    }
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
        other => Err(DeliveryError::FormatUnavailable(other.as_str())),
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
        assert!(matches!(
            render(Format::Ocsf, "acme", &row),
            Err(DeliveryError::FormatUnavailable("ocsf"))
        ));
        assert!(check(Kind::Webhook, Format::Cef).is_err());
        assert!(check(Kind::SplunkHec, Format::Json).is_ok());
    }
}
