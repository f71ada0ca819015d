//! The mapping of the CloudTrail fixtures (`tests/fixtures/cloudtrail`) to
//! chainlog events, shared by the test files that ingest them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use chainlog::{Event, Outcome, Timestamp};
use serde_json::{Map, Value};

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cloudtrail")
}

/// Every CloudTrail record, files in name order, records in file order.
pub fn cloudtrail_records() -> Vec<Map<String, Value>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 55);
    let mut records = Vec::new();
    for file in files {
        let mut doc: Map<String, Value> =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(doc.len(), 1, "{}", file.display());
        let Some(Value::Array(batch)) = doc.remove("Records") else {
            panic!("{} has no Records array", file.display());
        };
        records.extend(batch.into_iter().map(|r| match r {
            Value::Object(o) => o,
            other => panic!("not an object: {other}"),
        }));
    }
    records
}

/// `GetObject` -> `get_object`, `DescribeDBInstances` -> `describe_db_instances`,
/// `ListMFADevices` -> `list_mfa_devices`, `AddPermission20150331v2` ->
/// `add_permission20150331v2`.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower)
            {
                out.push('_');
            }
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Keeps `[a-z0-9_-]`, turning anything else into `_`.
pub fn event_part(text: &str) -> String {
    text.chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_' | '-') => c,
            _ => '_',
        })
        .collect()
}

pub fn text<'a>(record: &'a Map<String, Value>, key: &str) -> &'a str {
    record
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("record without {key}: {record:?}"))
}

/// The mapping: eventTime -> timestamp; eventSource + eventName -> event
/// type; userIdentity.arn (or invokedBy, or type) -> actor; awsRegion ->
/// node; sourceIPAddress -> ip when it is an address (a service name such
/// as `ec2.amazonaws.com` stays in the context only); errorCode -> failure;
/// the whole record -> context.
pub fn to_event(record: &Map<String, Value>) -> Event {
    let source = text(record, "eventSource");
    let category = source.strip_suffix(".amazonaws.com").unwrap_or(source);
    let event_type = format!(
        "{}.{}",
        event_part(category),
        event_part(&snake_case(text(record, "eventName")))
    );
    let identity = record["userIdentity"].as_object().unwrap();
    let actor = ["arn", "invokedBy", "type"]
        .iter()
        .find_map(|k| identity.get(*k).and_then(Value::as_str))
        .unwrap_or_else(|| panic!("no actor in {identity:?}"));
    let mut event = Event::new(
        Timestamp::parse_rfc3339(text(record, "eventTime")).unwrap(),
        event_type,
        actor,
    );
    event.node = Some(text(record, "awsRegion").to_string());
    event.source_ip = text(record, "sourceIPAddress").parse::<IpAddr>().ok();
    if record.contains_key("errorCode") {
        event.outcome = Outcome::Failure;
    }
    event.context = record.clone();
    event
}
