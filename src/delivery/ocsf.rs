//! Export rows as OCSF events (Open Cybersecurity Schema Framework,
//! version [`OCSF_VERSION`]): Authentication (class 3002) for logins,
//! logouts and `auth.*`, API Activity (class 6003) for everything else.
//!
//! The mapping is documented field by field in `docs/SIEM-formats.md`; the
//! chain's `seq` and `hash` and the workspace sit in `metadata`
//! (`sequence`, `uid`, `log_name`/`tenant_uid`), so a receiver can dedupe
//! and check an event against a bundle or checkpoint. What OCSF has no
//! attribute for (the context, the provenance) goes to `unmapped`.
//! `tests/ocsf.rs` validates the mapping of the CloudTrail fixture with the
//! OCSF schema's own export, read by the OCSF project's `ocsf-lib`.

use serde_json::{json, Map, Value};

use super::row::{Activity, ApiActivity, AuthActivity, Row, Severity};

/// The OCSF schema version the events follow (`metadata.version`).
pub const OCSF_VERSION: &str = "1.7.0";

/// The event as OCSF.
pub fn to_ocsf(workspace: &str, row: &Row<'_>) -> Value {
    let severity = row.severity();
    let (status_id, status) = if row.failed {
        (2, "Failure")
    } else {
        (1, "Success")
    };
    let mut event = Map::new();
    let (class_uid, class_name, category_uid, category_name, activity_id, activity_name) =
        match row.activity() {
            Activity::Authentication(kind) => {
                let name = match kind {
                    AuthActivity::Logon => "Logon",
                    AuthActivity::Logoff => "Logoff",
                    AuthActivity::Other => "Other",
                };
                (
                    3002_u32,
                    "Authentication",
                    3,
                    "Identity & Access Management",
                    kind as u32,
                    name,
                )
            }
            Activity::Api(kind) => {
                let name = match kind {
                    ApiActivity::Create => "Create",
                    ApiActivity::Read => "Read",
                    ApiActivity::Update => "Update",
                    ApiActivity::Delete => "Delete",
                    ApiActivity::Other => "Other",
                };
                (
                    6003_u32,
                    "API Activity",
                    6,
                    "Application Activity",
                    kind as u32,
                    name,
                )
            }
        };
    let type_uid = u64::from(class_uid) * 100 + u64::from(activity_id);
    event.insert("class_uid".into(), json!(class_uid));
    event.insert("class_name".into(), json!(class_name));
    event.insert("category_uid".into(), json!(category_uid));
    event.insert("category_name".into(), json!(category_name));
    event.insert("activity_id".into(), json!(activity_id));
    event.insert("activity_name".into(), json!(activity_name));
    event.insert("type_uid".into(), json!(type_uid));
    event.insert(
        "type_name".into(),
        json!(format!("{class_name}: {activity_name}")),
    );
    event.insert("severity_id".into(), json!(severity as u32));
    event.insert("severity".into(), json!(severity_name(severity)));
    event.insert("status_id".into(), json!(status_id));
    event.insert("status".into(), json!(status));
    event.insert("time".into(), json!(row.time_ms()));
    event.insert("message".into(), json!(message(row)));
    let user = json!({ "name": row.actor });
    event.insert("actor".into(), json!({ "user": user }));
    event.insert("src_endpoint".into(), src_endpoint(row));
    let mut unmapped = Map::new();
    if class_uid == 3002 {
        event.insert("user".into(), user);
        // The service the user authenticated to: the workspace's platform.
        event.insert("service".into(), json!({ "name": workspace }));
        if let Some(node) = row.node {
            event.insert("dst_endpoint".into(), json!({ "name": node }));
        }
        if let Some(resource) = row.resource {
            unmapped.insert("resource".into(), json!(resource));
        }
    } else {
        event.insert(
            "api".into(),
            json!({ "operation": row.event, "service": { "name": row.category() } }),
        );
        let mut resources = Vec::new();
        if let Some(node) = row.node {
            resources.push(json!({ "name": node, "type": "node" }));
        }
        if let Some(resource) = row.resource {
            resources.push(json!({ "uid": resource, "type": "resource" }));
        }
        if !resources.is_empty() {
            event.insert("resources".into(), Value::Array(resources));
        }
    }
    event.insert("metadata".into(), metadata(workspace, row));
    unmapped.insert("context".into(), row.context.clone());
    for (key, value) in [("origin", row.origin), ("appender", row.appender)] {
        if let Some(value) = value {
            unmapped.insert(key.into(), json!(value));
        }
    }
    event.insert("unmapped".into(), Value::Object(unmapped));
    Value::Object(event)
}

/// `metadata`: the product, the schema version, and the chain's
/// coordinates (`uid` = the record's chain hash, `sequence` = its seq,
/// `log_name` and `tenant_uid` = the workspace).
fn metadata(workspace: &str, row: &Row<'_>) -> Value {
    let mut metadata = json!({
        "version": OCSF_VERSION,
        "product": {
            "name": "chainlog",
            "vendor_name": "chainlog",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "uid": row.hash,
        "sequence": row.seq,
        "log_name": workspace,
        "tenant_uid": workspace,
        "log_provider": "chainlog",
        "event_code": row.event,
        "original_time": row.timestamp,
    });
    if let Some(ms) = row
        .received_at
        .and_then(|t| crate::event::Timestamp::parse_rfc3339(t).ok())
        .map(|t| t.unix_nanos().div_euclid(1_000_000))
    {
        metadata["logged_time"] = json!(ms);
    }
    metadata
}

/// Where the action came from: its address; for the engine's own records
/// the engine; otherwise OCSF still needs one attribute, and the source is
/// unknown.
fn src_endpoint(row: &Row<'_>) -> Value {
    match (row.ip, row.origin) {
        (Some(ip), _) => json!({ "ip": ip.to_string() }),
        (None, Some("engine")) => json!({ "svc_name": "chainlog" }),
        (None, _) => json!({ "name": "unknown" }),
    }
}

/// `pcap.download by alice@acme.io on nyc-edge-01 (success)`.
fn message(row: &Row<'_>) -> String {
    let mut text = format!("{} by {}", row.event, row.actor);
    if let Some(node) = row.node {
        text.push_str(" on ");
        text.push_str(node);
    }
    text.push_str(if row.failed {
        " (failure)"
    } else {
        " (success)"
    });
    text
}

/// OCSF's caption of a severity.
fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Informational => "Informational",
        Severity::Low => "Low",
        Severity::Medium => "Medium",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::row::tests::sample_row;
    use crate::delivery::{render, Format};

    fn ocsf(row: &Value) -> Value {
        serde_json::from_slice(&render(Format::Ocsf, "acme", row).unwrap()).unwrap()
    }

    #[test]
    fn api_activity_keeps_the_chain_in_metadata() {
        let event = ocsf(&sample_row());
        assert_eq!(event["class_uid"], 6003);
        assert_eq!(event["activity_id"], 2);
        assert_eq!(event["type_uid"], 600302);
        assert_eq!(event["time"], 1_773_049_934_123_i64);
        assert_eq!(event["api"]["operation"], "pcap.download");
        assert_eq!(event["src_endpoint"]["ip"], "203.0.113.42");
        assert_eq!(event["metadata"]["sequence"], 1042);
        assert_eq!(event["metadata"]["uid"], "0f".repeat(32));
        assert_eq!(event["metadata"]["log_name"], "acme");
        assert_eq!(event["metadata"]["version"], OCSF_VERSION);
        assert_eq!(event["metadata"]["logged_time"], 1_773_049_934_200_i64);
        assert_eq!(event["resources"][1]["uid"], "a3f7c2b1");
        assert_eq!(event["unmapped"]["context"]["bytes"], 18231);
        assert_eq!(event["status_id"], 1);
    }

    #[test]
    fn failed_login_is_an_authentication() {
        let mut row = sample_row();
        row["event"] = json!("auth.login_failed");
        row["outcome"] = json!("failure");
        row["ip"] = Value::Null;
        let event = ocsf(&row);
        assert_eq!(event["class_uid"], 3002);
        assert_eq!(event["type_uid"], 300201);
        assert_eq!(event["status"], "Failure");
        assert_eq!(event["severity_id"], 3);
        assert_eq!(event["user"]["name"], "alice@acme.io");
        assert_eq!(event["service"]["name"], "acme");
        assert_eq!(event["src_endpoint"]["name"], "unknown");
        assert!(event.get("api").is_none());
    }
}
