//! The `.parquet` objects: the export's columns, typed, in one row group,
//! written with the `parquet` crate's low-level column writer (no arrow).

use std::sync::Arc;

use bytes::Bytes;
use parquet::basic::{Compression, GzipLevel};
use parquet::data_type::{ByteArray, ByteArrayType, DataType, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use parquet::record::Field;
use parquet::schema::parser::parse_message_type;

use super::rows::{unix_micros, LakeRow, RowError};
use crate::event::Timestamp;
use crate::query::export::CSV_COLUMNS;

/// The schema of every Parquet object, in Parquet's message syntax
/// (documented in docs/LAKE.md). Timestamps are microseconds since the
/// epoch, UTC: the unit every lake engine reads (Athena, Trino, DuckDB,
/// Spark).
pub const PARQUET_SCHEMA: &str = "message chainlog_event {
  REQUIRED INT64 seq;
  REQUIRED INT64 timestamp (TIMESTAMP(MICROS,true));
  REQUIRED BYTE_ARRAY event (STRING);
  REQUIRED BYTE_ARRAY actor (STRING);
  OPTIONAL BYTE_ARRAY node (STRING);
  OPTIONAL BYTE_ARRAY resource (STRING);
  OPTIONAL BYTE_ARRAY ip (STRING);
  REQUIRED BYTE_ARRAY outcome (STRING);
  REQUIRED BYTE_ARRAY context (STRING);
  REQUIRED BYTE_ARRAY hash (STRING);
  OPTIONAL INT64 received_at (TIMESTAMP(MICROS,true));
  OPTIONAL BYTE_ARRAY origin (STRING);
  OPTIONAL BYTE_ARRAY appender (STRING);
}";

/// The columns, in schema order: the export's ([`CSV_COLUMNS`]).
const COLUMNS: [&str; 13] = CSV_COLUMNS;

type RowGroup<'a> = SerializedRowGroupWriter<'a, Vec<u8>>;

/// Writes the next column of `group`: `values` (`None` is null; a
/// required column has none).
fn write_column<T: DataType>(
    group: &mut RowGroup<'_>,
    values: Vec<Option<T::T>>,
) -> Result<(), ParquetError> {
    let mut column = group
        .next_column()?
        .ok_or_else(|| ParquetError::General("more values than columns".into()))?;
    let optional = column.typed::<T>().get_descriptor().max_def_level() > 0;
    let levels: Vec<i16> = values.iter().map(|v| i16::from(v.is_some())).collect();
    let present: Vec<T::T> = values.into_iter().flatten().collect();
    column
        .typed::<T>()
        .write_batch(&present, optional.then_some(&levels[..]), None)?;
    column.close()
}

fn text<'a>(
    rows: &'a [LakeRow],
    get: impl Fn(&'a LakeRow) -> Option<&'a str>,
) -> Vec<Option<ByteArray>> {
    rows.iter()
        .map(|r| get(r).map(|s| ByteArray::from(s.as_bytes().to_vec())))
        .collect()
}

/// The Parquet object of `rows` (one row group, gzip pages). The same rows
/// give the same bytes.
pub fn write_parquet(rows: &[LakeRow]) -> Result<Vec<u8>, ParquetError> {
    let schema = Arc::new(parse_message_type(PARQUET_SCHEMA)?);
    let properties = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::GZIP(GzipLevel::default()))
            .set_created_by(format!("chainlog {}", env!("CARGO_PKG_VERSION")))
            .set_max_row_group_row_count(Some(rows.len().max(1)))
            .build(),
    );
    let mut writer = SerializedFileWriter::new(Vec::new(), schema, properties)?;
    let mut group = writer.next_row_group()?;
    let seq = |r: &LakeRow| i64::try_from(r.seq).ok();
    let seqs: Vec<Option<i64>> = rows.iter().map(seq).collect();
    if seqs.iter().any(Option::is_none) {
        return Err(ParquetError::General("a seq above 2^63".into()));
    }
    write_column::<Int64Type>(&mut group, seqs)?;
    write_column::<Int64Type>(
        &mut group,
        rows.iter()
            .map(|r| Some(unix_micros(r.timestamp)))
            .collect(),
    )?;
    write_column::<ByteArrayType>(&mut group, text(rows, |r| Some(&r.event)))?;
    write_column::<ByteArrayType>(&mut group, text(rows, |r| Some(&r.actor)))?;
    write_column::<ByteArrayType>(&mut group, text(rows, |r| r.node.as_deref()))?;
    write_column::<ByteArrayType>(&mut group, text(rows, |r| r.resource.as_deref()))?;
    write_column::<ByteArrayType>(&mut group, text(rows, |r| r.ip.as_deref()))?;
    write_column::<ByteArrayType>(&mut group, text(rows, |r| Some(&r.outcome)))?;
    write_column::<ByteArrayType>(&mut group, text(rows, |r| Some(&r.context)))?;
    let hashes: Vec<String> = rows.iter().map(|r| r.hash.to_string()).collect();
    write_column::<ByteArrayType>(
        &mut group,
        hashes
            .iter()
            .map(|h| Some(ByteArray::from(h.as_str())))
            .collect(),
    )?;
    write_column::<Int64Type>(
        &mut group,
        rows.iter()
            .map(|r| r.received_at.map(unix_micros))
            .collect(),
    )?;
    write_column::<ByteArrayType>(&mut group, text(rows, |r| r.origin.as_deref()))?;
    write_column::<ByteArrayType>(&mut group, text(rows, |r| r.appender.as_deref()))?;
    group.close()?;
    writer.into_inner()
}

/// The rows of a Parquet object written by [`write_parquet`]. Timestamps
/// come back at microsecond precision.
pub fn read_parquet(bytes: Vec<u8>) -> Result<Vec<LakeRow>, RowError> {
    let reader = SerializedFileReader::new(Bytes::from(bytes))?;
    let names: Vec<&str> = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name())
        .collect();
    if names != COLUMNS {
        return Err(RowError::Field {
            row: 0,
            column: "schema",
            reason: format!("columns {names:?}, expected {COLUMNS:?}"),
        });
    }
    let mut rows = Vec::new();
    for (index, row) in reader.get_row_iter(None)?.enumerate() {
        let row = row?;
        let index = index as u64;
        let fields: Vec<&Field> = row.get_column_iter().map(|(_, f)| f).collect();
        let bad = |column: &'static str, reason: &str| RowError::Field {
            row: index,
            column,
            reason: reason.to_string(),
        };
        let get = |i: usize| fields.get(i).copied().unwrap_or(&Field::Null);
        let opt_text = |i: usize| match get(i) {
            Field::Null => Ok(None),
            Field::Str(s) => Ok(Some(s.clone())),
            _ => Err(bad(COLUMNS[i], "not a string")),
        };
        let req_text = |i: usize| opt_text(i)?.ok_or_else(|| bad(COLUMNS[i], "null"));
        let opt_time = |i: usize| match get(i) {
            Field::Null => Ok(None),
            Field::TimestampMicros(us) => us
                .checked_mul(1_000)
                .map(|ns| Some(Timestamp::from_unix_nanos(ns)))
                .ok_or_else(|| bad(COLUMNS[i], "out of range")),
            _ => Err(bad(COLUMNS[i], "not a timestamp")),
        };
        let seq = match get(0) {
            Field::Long(n) => u64::try_from(*n).map_err(|_| bad("seq", "negative"))?,
            _ => return Err(bad("seq", "not an INT64")),
        };
        rows.push(LakeRow {
            seq,
            timestamp: opt_time(1)?.ok_or_else(|| bad("timestamp", "null"))?,
            event: req_text(2)?,
            actor: req_text(3)?,
            node: opt_text(4)?,
            resource: opt_text(5)?,
            ip: opt_text(6)?,
            outcome: req_text(7)?,
            context: req_text(8)?,
            hash: req_text(9)?
                .parse()
                .map_err(|_| bad("hash", "not 64 hex digits"))?,
            received_at: opt_time(10)?,
            origin: opt_text(11)?,
            appender: opt_text(12)?,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::chain::ChainHash;

    fn row(seq: u64, node: Option<&str>) -> LakeRow {
        LakeRow {
            seq,
            timestamp: Timestamp::from_unix_nanos(1_700_000_000_123_456_000),
            event: "pcap.download".into(),
            actor: "alice@acme.io".into(),
            node: node.map(Into::into),
            resource: None,
            ip: Some("203.0.113.42".into()),
            outcome: "success".into(),
            context: r#"{"sha256":"ab","bytes":18231}"#.into(),
            hash: ChainHash([seq as u8; 32]),
            received_at: Some(Timestamp::from_unix_nanos(1_700_000_001_000_000_000)),
            origin: Some("client".into()),
            appender: None,
        }
    }

    #[test]
    fn parquet_round_trip() {
        let rows = vec![
            row(10, Some("nyc-edge-01")),
            row(11, None),
            row(12, Some("x")),
        ];
        let bytes = write_parquet(&rows).unwrap();
        assert_eq!(bytes, write_parquet(&rows).unwrap(), "deterministic");
        assert_eq!(read_parquet(bytes).unwrap(), rows);
    }

    #[test]
    fn damaged_parquet_is_refused() {
        let bytes = write_parquet(&[row(1, None), row(2, None)]).unwrap();
        // The footer's length and magic, then a page in the middle.
        for at in [bytes.len() - 1, bytes.len() - 6, 60] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0xff;
            let read = read_parquet(damaged);
            assert!(
                read.as_ref()
                    .map_or(true, |r| r != &[row(1, None), row(2, None)]),
                "a flipped byte at {at} went unnoticed"
            );
        }
        assert!(read_parquet(bytes[..bytes.len() / 2].to_vec()).is_err());
    }
}
