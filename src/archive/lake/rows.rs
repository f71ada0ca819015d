//! One exported row, as `chainlog export --format jsonl` writes it, read
//! back from a JSON Lines line or a Parquet row, and the partition (the UTC
//! date of the event's timestamp) it goes to.

use sha2::{Digest as _, Sha256};

use super::super::ArchiveError;
use crate::event::{RecordView, Timestamp};
use crate::hash::chain::ChainHash;
use crate::query::export::{ExportFormat, ExportOptions, Exporter};

/// Why a lake object's rows do not decode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RowError {
    /// The gzip stream or a line could not be read.
    #[error("reading the object: {0}")]
    Io(#[from] std::io::Error),
    /// A JSON Lines row is not the row `chainlog export` writes.
    #[error("row {row}: {source}")]
    Json {
        /// The row's position in the object, from 0.
        row: u64,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A Parquet object does not read.
    #[error("{0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// A field holds a value of the wrong kind or shape.
    #[error("row {row}, column {column}: {reason}")]
    Field {
        /// The row's position in the object, from 0.
        row: u64,
        /// The column.
        column: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// One row of the lake: the columns of `chainlog export`, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeRow {
    /// The record's seq.
    pub seq: u64,
    /// When the event happened.
    pub timestamp: Timestamp,
    /// Event type.
    pub event: String,
    /// Actor.
    pub actor: String,
    /// Node, if any.
    pub node: Option<String>,
    /// Resource, if any.
    pub resource: Option<String>,
    /// Source address, if any.
    pub ip: Option<String>,
    /// `success` or `failure`.
    pub outcome: String,
    /// The context, as the compact JSON text stored in the record.
    pub context: String,
    /// The record's chain hash.
    pub hash: ChainHash,
    /// When the engine received it (absent for a version 1 record).
    pub received_at: Option<Timestamp>,
    /// `client` or `engine` (absent for a version 1 record).
    pub origin: Option<String>,
    /// Who appended it (absent for a version 1 record).
    pub appender: Option<String>,
}

/// A JSON Lines row, borrowed from its line (the context kept as text).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LineRow<'a> {
    seq: u64,
    timestamp: String,
    event: String,
    actor: String,
    node: Option<String>,
    resource: Option<String>,
    ip: Option<String>,
    outcome: String,
    #[serde(borrow)]
    context: &'a serde_json::value::RawValue,
    hash: String,
    received_at: Option<String>,
    origin: Option<String>,
    appender: Option<String>,
}

impl LakeRow {
    /// Reads the row `chainlog export --format jsonl` wrote as `line`
    /// (the `row`-th of its object).
    pub fn from_json_line(line: &[u8], row: u64) -> Result<LakeRow, RowError> {
        let parsed: LineRow<'_> =
            serde_json::from_slice(line).map_err(|source| RowError::Json { row, source })?;
        let field = |column, reason: String| RowError::Field {
            row,
            column,
            reason,
        };
        let time = |column, text: &str| {
            Timestamp::parse_rfc3339(text).map_err(|e| field(column, e.to_string()))
        };
        Ok(LakeRow {
            seq: parsed.seq,
            timestamp: time("timestamp", &parsed.timestamp)?,
            event: parsed.event,
            actor: parsed.actor,
            node: parsed.node,
            resource: parsed.resource,
            ip: parsed.ip,
            outcome: parsed.outcome,
            context: parsed.context.get().to_string(),
            hash: parsed
                .hash
                .parse()
                .map_err(|_| field("hash", "not 64 hex digits".into()))?,
            received_at: parsed
                .received_at
                .as_deref()
                .map(|t| time("received_at", t))
                .transpose()?,
            origin: parsed.origin,
            appender: parsed.appender,
        })
    }

    /// The date partition (`2026-03-09`) of the row.
    pub fn dt(&self) -> String {
        partition_date(self.timestamp)
    }

    /// Bytes this row holds in memory, roughly (for the export's bound).
    pub fn buffered_bytes(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        160 + self.event.len()
            + self.actor.len()
            + opt(&self.node)
            + opt(&self.resource)
            + opt(&self.ip)
            + self.context.len()
            + opt(&self.origin)
            + opt(&self.appender)
    }

    /// A digest of every column as both formats hold it (timestamps to the
    /// microsecond, Parquet's unit), to compare a JSON Lines row with the
    /// Parquet row of the same seq.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut text = |value: Option<&str>| match value {
            Some(v) => {
                h.update([1]);
                h.update((v.len() as u64).to_le_bytes());
                h.update(v.as_bytes());
            }
            None => h.update([0]),
        };
        text(Some(&self.event));
        text(Some(&self.actor));
        text(self.node.as_deref());
        text(self.resource.as_deref());
        text(self.ip.as_deref());
        text(Some(&self.outcome));
        text(Some(&self.context));
        text(self.origin.as_deref());
        text(self.appender.as_deref());
        h.update(self.seq.to_le_bytes());
        h.update(unix_micros(self.timestamp).to_le_bytes());
        h.update(self.received_at.map_or(i64::MIN, unix_micros).to_le_bytes());
        h.update(self.hash.0);
        h.finalize().into()
    }
}

/// Puts into `line` (cleared first) the row `chainlog export --format jsonl`
/// writes for this record, `\n`-terminated.
pub(super) fn export_line(
    line: &mut Vec<u8>,
    seq: u64,
    hash: &ChainHash,
    view: &RecordView<'_>,
) -> Result<(), ArchiveError> {
    line.clear();
    let mut rows = Exporter::new(line, ExportOptions::new(ExportFormat::JsonLines))
        .map_err(|e| ArchiveError::io("formatting a row", e))?;
    rows.write_view(seq, hash, view)
        .map_err(|e| ArchiveError::Refused(e.to_string()))?;
    Ok(())
}

/// Microseconds since the Unix epoch, rounded down (Parquet's timestamps).
pub fn unix_micros(t: Timestamp) -> i64 {
    t.unix_nanos().div_euclid(1_000)
}

/// The UTC date of `t`, `YYYY-MM-DD`: the `dt=` partition of its row.
pub fn partition_date(t: Timestamp) -> String {
    let days = t.unix_nanos().div_euclid(86_400 * 1_000_000_000);
    // Every i64 nanosecond count is inside time's range of dates.
    let date = time::Date::from_julian_day(i32::try_from(days + 2_440_588).unwrap_or(i32::MAX))
        .unwrap_or(time::Date::MIN);
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"seq":7,"timestamp":"2026-03-09T23:59:59.123456789Z","event":"pcap.download","actor":"alice@acme.io","node":"nyc-edge-01","resource":null,"ip":"203.0.113.42","outcome":"failure","context":{"b":1,"a":[1.5,"x"]},"hash":"0101010101010101010101010101010101010101010101010101010101010101","received_at":"2026-03-10T00:00:00Z","origin":"client","appender":"ingest"}"#;

    #[test]
    fn rows_read_back_from_export_lines() {
        let row = LakeRow::from_json_line(LINE.as_bytes(), 0).unwrap();
        assert_eq!(row.seq, 7);
        assert_eq!(row.context, r#"{"b":1,"a":[1.5,"x"]}"#);
        assert_eq!(row.dt(), "2026-03-09");
        assert_eq!(row.received_at.map(partition_date).unwrap(), "2026-03-10");
        assert_eq!(row.resource, None);
        assert_eq!(row.hash, ChainHash([1; 32]));
    }

    #[test]
    fn malformed_rows_are_refused() {
        let extra = LINE.replace("\"seq\":7", "\"seq\":7,\"extra\":1");
        let bad_hash = LINE.replace("\"hash\":\"01", "\"hash\":\"zz");
        let bad_time = LINE.replace("2026-03-09T23", "2026-13-09T23");
        for line in [&extra, &bad_hash, &bad_time, &LINE[..40].to_string()] {
            assert!(
                LakeRow::from_json_line(line.as_bytes(), 3).is_err(),
                "{line} should be refused"
            );
        }
    }

    #[test]
    fn partitions_are_utc_dates() {
        assert_eq!(partition_date(Timestamp::from_unix_nanos(0)), "1970-01-01");
        assert_eq!(partition_date(Timestamp::from_unix_nanos(-1)), "1969-12-31");
        let t = Timestamp::parse_rfc3339("2023-07-10T11:42:00+14:00").unwrap();
        assert_eq!(partition_date(t), "2023-07-09");
    }
}
