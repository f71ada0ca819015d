//! `chainlog bench`, end to end at a tiny size: every measurement is there,
//! with a positive value, limit and ratio, and the work directory is cleaned up.

use std::process::{Command, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_chainlog");

#[test]
fn bench_quick_json_reports_every_measurement() {
    let work = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args([
            "bench",
            "--quick",
            "--json",
            "--writers",
            "4",
            "--events",
            "3000",
            "--seconds",
            "0.3",
            "--log-segment-bytes",
            "128K",
            "--work-dir",
        ])
        .arg(work.path())
        .env_remove("CHAINLOG_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    let rows: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let expected = [
        "limit: SHA-256, one core, record-sized buffers".to_string(),
        "limit: sequential write + fdatasync".to_string(),
        "limit: small write + fdatasync".to_string(),
        "append none, 1 writer, single".to_string(),
        "append none, 1 writer, batches of 256".to_string(),
        "append batch, 1 writer, single".to_string(),
        "append batch, 1 writer, batches of 256".to_string(),
        "append batch, 4 writers, single".to_string(),
        "append always, 1 writer, single".to_string(),
        "append always, 1 writer, batches of 256".to_string(),
        "append always, 4 writers, single".to_string(),
        "open (Log::open of the large log)".to_string(),
        "verify, 1 thread".to_string(),
        format!("verify, {cores} threads"),
        format!("peak memory, verify {cores} threads"),
        "export jsonl to a sink".to_string(),
        "peak memory, export".to_string(),
        "query: one rare actor".to_string(),
    ];
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["measurement"].as_str().unwrap())
        .collect();
    let mut sorted_expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    let mut sorted_names = names.clone();
    sorted_expected.sort_unstable();
    sorted_names.sort_unstable();
    assert_eq!(sorted_names, sorted_expected, "{stdout}");
    for r in &rows {
        for field in ["value", "limit", "ratio"] {
            let x = r[field].as_f64().unwrap_or(f64::NAN);
            assert!(x.is_finite() && x > 0.0, "{field} of {r}");
        }
        for field in ["unit", "limit_unit", "limit_name", "note"] {
            assert!(
                !r[field].as_str().unwrap_or("").is_empty(),
                "{field} of {r}"
            );
        }
        let (value, limit, ratio) = (
            r["value"].as_f64().unwrap(),
            r["limit"].as_f64().unwrap(),
            r["ratio"].as_f64().unwrap(),
        );
        assert!(
            (value / limit - ratio).abs() <= 1e-9 * ratio.max(1.0),
            "{r}"
        );
    }
    // Everything the bench wrote is gone.
    let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
