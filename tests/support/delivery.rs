//! Export rows for the delivery tests: the CloudTrail fixture stored in a
//! log and read back through the JSON Lines export, as `GET …/events` and
//! `chainlog export` give them.
#![allow(dead_code)]

use std::path::Path;

use chainlog::query::export::{ExportFormat, ExportOptions, Exporter};
use chainlog::query::Query;
use chainlog::{Log, Options};
use serde_json::Value;

#[path = "cloudtrail.rs"]
mod cloudtrail;

/// Every CloudTrail event of the fixture, appended to a new log in `dir`
/// and exported as JSON Lines: 2,900 rows, parsed.
pub fn cloudtrail_rows(dir: &Path) -> Vec<Value> {
    let events: Vec<_> = cloudtrail::cloudtrail_records()
        .iter()
        .map(cloudtrail::to_event)
        .collect();
    let log = Log::create(dir, Options::default()).unwrap();
    for batch in events.chunks(100) {
        log.append_batch(batch).unwrap();
    }
    let mut exporter =
        Exporter::new(Vec::new(), ExportOptions::new(ExportFormat::JsonLines)).unwrap();
    for m in log.query(&Query::default()).unwrap() {
        exporter.write(&m.unwrap()).unwrap();
    }
    let text = exporter.finish().unwrap();
    let rows: Vec<Value> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2900);
    rows
}
