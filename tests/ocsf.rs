//! The OCSF mapping against the OCSF schema's own tooling: every event of
//! the CloudTrail fixture, stored, exported and rendered as OCSF, plus rows
//! that exercise the other branches of the mapping (failed logins, the
//! engine's records, IPv6, no node), must pass tests/ocsf/check.py, which
//! checks them with the OCSF project's ocsf-lib against the OCSF server's
//! export of the pinned schema version, and with the JSON Schema generated
//! from that export. Broken copies of a mapped event must fail it, so the
//! check is known to be able to fail.
//!
//! The validators are Python packages pinned in
//! tests/openapi/requirements.txt and installed into `.venv-tests` by
//! scripts/python-tools.sh; if they cannot be installed the test is skipped
//! with a loud note, unless CHAINLOG_REQUIRE_OCSF is set (scripts/test.sh
//! sets it).

#[path = "support/delivery.rs"]
mod delivery;
#[path = "support/tools.rs"]
mod tools;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use chainlog::delivery::ocsf::OCSF_VERSION;
use chainlog::delivery::{render, Format};
use serde_json::{json, Value};

const CHECK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ocsf/check.py");

/// Runs check.py on `events`; its exit status and report.
fn check(python: &Path, dir: &Path, events: &[Value]) -> (bool, Value) {
    let path = dir.join("events.jsonl");
    let mut text = String::new();
    for e in events {
        text.push_str(&serde_json::to_string(e).unwrap());
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    let out = Command::new(python)
        .arg(CHECK)
        .arg(OCSF_VERSION)
        .arg(&path)
        .output()
        .expect("run tests/ocsf/check.py");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "check.py printed no report: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

/// The venv's python with the OCSF validators, installed once for both
/// tests (scripts/python-tools.sh rebuilds the venv when its requirements
/// change: two runs at once would trip over each other).
fn validator_python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            tools::venv_python(
                "CHAINLOG_REQUIRE_OCSF",
                "the OCSF validators (ocsf-lib, ocsf-json-schema)",
            )
        })
        .clone()
}

fn ocsf(row: &Value) -> Value {
    serde_json::from_slice(&render(Format::Ocsf, "acme", row).unwrap()).unwrap()
}

/// Rows for the branches the fixture does not reach.
fn other_rows(template: &Value) -> Vec<Value> {
    let row = |changes: Value| {
        let mut r = template.clone();
        for (k, v) in changes.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    };
    vec![
        row(json!({"event": "auth.login_failed", "outcome": "failure", "ip": null, "node": null})),
        row(json!({"event": "auth.logout", "ip": "2001:db8::7", "resource": "session-1"})),
        row(json!({"event": "auth.mfa_challenge", "outcome": "failure"})),
        row(
            json!({"event": "retention.applied", "actor": "system", "ip": null, "origin": "engine", "appender": "engine"}),
        ),
        row(json!({"event": "pcap.download", "resource": "a3f7c2b1", "node": "nyc-edge-01"})),
        row(
            json!({"event": "apikey.rotated", "received_at": null, "origin": null, "appender": null}),
        ),
        row(json!({"event": "incident.opened", "context": {}})),
        row(json!({"event": "node.removed", "outcome": "failure", "actor": "ünï \"code\""})),
    ]
}

#[test]
fn every_mapped_event_passes_the_ocsf_validator() {
    let Some(python) = validator_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rows = delivery::cloudtrail_rows(&dir.path().join("log"));
    let mut events: Vec<Value> = rows.iter().map(ocsf).collect();
    events.extend(other_rows(&rows[0]).iter().map(ocsf));
    let classes = |uid: u64| events.iter().filter(|e| e["class_uid"] == uid).count();
    assert!(
        classes(3002) >= 2 + 3 && classes(6003) > 2000,
        "both classes are exercised"
    );

    let (ok, report) = check(&python, dir.path(), &events);
    assert_eq!(report["events"], events.len());
    assert!(
        ok && report["valid"] == events.len(),
        "OCSF {OCSF_VERSION} refused mapped events: {}",
        serde_json::to_string_pretty(
            &report["invalid"].as_array().unwrap()
                [..3.min(report["invalid"].as_array().unwrap().len())]
        )
        .unwrap()
    );
    eprintln!("{} events valid OCSF {OCSF_VERSION}", events.len());
}

#[test]
fn broken_mappings_are_refused() {
    let Some(python) = validator_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let good_row = other_rows(&json!({
        "seq": 5, "timestamp": "2026-03-09T09:52:14Z", "event": "x.y", "actor": "alice",
        "node": "n1", "resource": "r1", "ip": "203.0.113.4", "outcome": "success",
        "context": {"k": 1}, "hash": "ab".repeat(32), "received_at": "2026-03-09T09:52:15Z",
        "origin": "client", "appender": "key:ops"
    }))[0]
        .clone();
    let good = ocsf(&good_row);
    let (ok, _) = check(&python, dir.path(), std::slice::from_ref(&good));
    assert!(ok, "the unbroken event passes");

    type Break = fn(&mut Value);
    let breaks: [(&str, Break, &str); 8] = [
        (
            "no class_uid",
            |e| {
                e.as_object_mut().unwrap().remove("class_uid");
            },
            "class_uid",
        ),
        (
            "unknown class",
            |e| e["class_uid"] = json!(9999),
            "not an OCSF",
        ),
        (
            "wrong type_uid",
            |e| e["type_uid"] = json!(300299),
            "type_uid",
        ),
        (
            "caption mismatch",
            |e| e["activity_name"] = json!("Logoff"),
            "activity_name",
        ),
        (
            "unknown attribute",
            |e| e["chain_hash"] = json!("ab"),
            "chain_hash",
        ),
        (
            "no product",
            |e| {
                e["metadata"].as_object_mut().unwrap().remove("product");
            },
            "product",
        ),
        (
            "bad ip",
            |e| e["src_endpoint"] = json!({"ip": "not-an-ip"}),
            "ip",
        ),
        (
            "status out of enum",
            |e| e["status_id"] = json!(7),
            "status_id",
        ),
    ];
    let broken: Vec<Value> = breaks
        .iter()
        .map(|(_, f, _)| {
            let mut e = good.clone();
            f(&mut e);
            e
        })
        .collect();
    let (ok, report) = check(&python, dir.path(), &broken);
    assert!(!ok);
    assert_eq!(report["valid"], 0, "{report}");
    let invalid = report["invalid"].as_array().unwrap();
    assert_eq!(invalid.len(), breaks.len());
    for ((what, _, needle), found) in breaks.iter().zip(invalid) {
        let errors = found["errors"].to_string();
        assert!(errors.contains(needle), "{what}: {errors}");
    }
}
