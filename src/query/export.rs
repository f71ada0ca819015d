//! Streaming export of query results as JSON, JSON Lines or CSV.
//!
//! Every row carries `seq` and `hash`, so an auditor can check it against the
//! log. Rows are written as they come: memory does not grow with the export.
//! The context is copied as the compact JSON text stored in the record
//! (after checking it is well-formed JSON), not parsed and re-serialized.
//!
//! Columns, in this order for CSV (and keys, for JSON):
//! `seq, timestamp, event, actor, node, resource, ip, outcome, context, hash,
//! received_at, origin, appender`. The last three are the record's
//! provenance (`origin` is `client` or `engine`); a version 1 record has
//! none, and all three are absent. Absent values are empty CSV cells and
//! JSON `null`.
//!
//! CSV is written by the `csv` crate, RFC 4180 style: CRLF line ends, fields
//! with `"`, `,`, CR or LF quoted, quotes doubled. Spreadsheets run a cell
//! that starts with `=`, `+`, `-` or `@` as a formula, and some skip leading
//! spaces and invisible characters first or read the full-width forms too,
//! so by default such text cells get a leading `'`
//! ([`ExportOptions::csv_formula_guard`], the rule at [`guarded_cell`]);
//! turn that off to get the stored text byte for byte.

use std::borrow::Cow;
use std::io::{self, Write};
use std::str::FromStr;

use crate::error::Error;
use crate::event::record::is_format_character;
use crate::event::{Origin, RecordView};
use crate::hash::chain::ChainHash;
use crate::query::Match;

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON array of row objects.
    Json,
    /// One row object per line.
    JsonLines,
    /// RFC 4180 CSV with a header row.
    Csv,
}

impl FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(ExportFormat::Json),
            "jsonl" => Ok(ExportFormat::JsonLines),
            "csv" => Ok(ExportFormat::Csv),
            other => Err(format!(
                "unknown export format {other:?} (expected json, jsonl or csv)"
            )),
        }
    }
}

/// How to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOptions {
    /// The format.
    pub format: ExportFormat,
    /// Prefix CSV cells that a spreadsheet would run as a formula with `'`.
    /// Default true.
    pub csv_formula_guard: bool,
}

impl ExportOptions {
    /// The options for `format`, with the formula guard on.
    pub fn new(format: ExportFormat) -> Self {
        ExportOptions {
            format,
            csv_formula_guard: true,
        }
    }
}

/// The CSV header row's columns.
pub const CSV_COLUMNS: [&str; 13] = [
    "seq",
    "timestamp",
    "event",
    "actor",
    "node",
    "resource",
    "ip",
    "outcome",
    "context",
    "hash",
    "received_at",
    "origin",
    "appender",
];

/// The `origin` column: `client`, `engine`, or absent (version 1).
fn origin_text(origin: Origin) -> Option<&'static str> {
    match origin {
        Origin::Client | Origin::Engine => Some(origin.as_str()),
        Origin::Legacy => None,
    }
}

/// Writes rows to `out` in the chosen format.
pub struct Exporter<W: Write> {
    out: Sink<W>,
    options: ExportOptions,
    rows: u64,
    line: Vec<u8>,
}

/// Where rows go: JSON rows are built in `line` and written whole; CSV rows
/// go through the `csv` crate's writer, which owns the output.
enum Sink<W: Write> {
    Json(W),
    // Boxed: the csv writer's state is a few hundred bytes.
    Csv(Box<csv::Writer<W>>),
}

/// Why a row could not be exported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Writing the output failed.
    #[error("writing the export failed: {0}")]
    Io(#[from] io::Error),
    /// The query behind the export failed (I/O, or a damaged segment).
    #[error(transparent)]
    Log(#[from] Error),
    /// A record's bytes do not decode (the log needs `verify`).
    #[error("record {seq} cannot be exported: {reason}")]
    BadRecord {
        /// The record's seq.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
}

impl<W: Write> Exporter<W> {
    /// Starts an export (writes the CSV header or the opening `[`).
    pub fn new(mut out: W, options: ExportOptions) -> io::Result<Self> {
        let out = match options.format {
            ExportFormat::Json => {
                out.write_all(b"[")?;
                Sink::Json(out)
            }
            ExportFormat::JsonLines => Sink::Json(out),
            ExportFormat::Csv => {
                let mut csv = csv::WriterBuilder::new()
                    .terminator(csv::Terminator::CRLF)
                    .from_writer(out);
                csv.write_record(CSV_COLUMNS).map_err(csv_io)?;
                Sink::Csv(Box::new(csv))
            }
        };
        Ok(Exporter {
            out,
            options,
            rows: 0,
            line: Vec::with_capacity(1024),
        })
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes one row.
    pub fn write(&mut self, m: &Match) -> Result<(), ExportError> {
        let view = m.view().map_err(|e| ExportError::BadRecord {
            seq: m.seq,
            reason: e.to_string(),
        })?;
        self.write_view(m.seq, &m.hash, &view)
    }

    /// Writes one row from a decoded record (see
    /// [`crate::query::QueryIter::try_for_each_view`]).
    pub fn write_view(
        &mut self,
        seq: u64,
        hash: &ChainHash,
        view: &RecordView<'_>,
    ) -> Result<(), ExportError> {
        let bad = |reason: String| ExportError::BadRecord { seq, reason };
        serde_json::from_str::<serde::de::IgnoredAny>(view.context_json)
            .map_err(|e| bad(format!("context is not JSON: {e}")))?;
        let ts = view.timestamp.to_string();
        let ip = view.source_ip.map(|ip| ip.to_string());
        let received_at = view.received_at.map(|t| t.to_string());
        let origin = origin_text(view.origin);
        match &mut self.out {
            Sink::Json(out) => {
                let line = &mut self.line;
                line.clear();
                if self.options.format == ExportFormat::Json {
                    line.extend_from_slice(if self.rows == 0 { b"\n" } else { b",\n" });
                }
                write!(line, "{{\"seq\":{seq},\"timestamp\":\"{ts}\",\"event\":")?;
                json_string(line, Some(view.event_type));
                line.extend_from_slice(b",\"actor\":");
                json_string(line, Some(view.actor));
                line.extend_from_slice(b",\"node\":");
                json_string(line, view.node);
                line.extend_from_slice(b",\"resource\":");
                json_string(line, view.resource);
                line.extend_from_slice(b",\"ip\":");
                json_string(line, ip.as_deref());
                write!(
                    line,
                    ",\"outcome\":\"{}\",\"context\":",
                    view.outcome.as_str()
                )?;
                line.extend_from_slice(view.context_json.as_bytes());
                write!(line, ",\"hash\":\"{hash}\",\"received_at\":")?;
                json_string(line, received_at.as_deref());
                line.extend_from_slice(b",\"origin\":");
                json_string(line, origin);
                line.extend_from_slice(b",\"appender\":");
                json_string(line, view.appender);
                line.push(b'}');
                if self.options.format == ExportFormat::JsonLines {
                    line.push(b'\n');
                }
                out.write_all(line)?;
            }
            Sink::Csv(out) => {
                let on = self.options.csv_formula_guard;
                let row: [Cow<'_, str>; 13] = [
                    Cow::Owned(seq.to_string()),
                    Cow::Owned(ts),
                    text_cell(view.event_type, on),
                    text_cell(view.actor, on),
                    text_cell(view.node.unwrap_or(""), on),
                    text_cell(view.resource.unwrap_or(""), on),
                    Cow::Owned(ip.unwrap_or_default()),
                    Cow::Borrowed(view.outcome.as_str()),
                    text_cell(view.context_json, on),
                    Cow::Owned(hash.to_string()),
                    Cow::Owned(received_at.unwrap_or_default()),
                    Cow::Borrowed(origin.unwrap_or("")),
                    text_cell(view.appender.unwrap_or(""), on),
                ];
                out.write_record(row.iter().map(|cell| cell.as_bytes()))
                    .map_err(csv_io)?;
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Ends the export (writes the closing `]` for JSON), flushes, and
    /// returns the writer.
    pub fn finish(self) -> io::Result<W> {
        let mut out = match self.out {
            Sink::Json(mut out) => {
                if self.options.format == ExportFormat::Json {
                    out.write_all(if self.rows == 0 { b"]\n" } else { b"\n]\n" })?;
                }
                out
            }
            // Flushes the csv writer's buffer into `out`.
            Sink::Csv(csv) => csv.into_inner().map_err(|e| e.into_error())?,
        };
        out.flush()?;
        Ok(out)
    }
}

fn json_string(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        // Serializing a str into a Vec cannot fail.
        Some(v) => {
            let _ = serde_json::to_writer(&mut *out, v);
        }
        None => out.extend_from_slice(b"null"),
    }
}

/// A text cell as the CSV formula guard writes it: with a `'` in front
/// when a spreadsheet could run it as a formula, or when it already starts
/// with `'` (so a reader that strips exactly one leading `'` gets the
/// stored text back, and a stored `'=1` cannot pass for a guarded `=1`).
///
/// A cell could run as a formula when its first character is a tab or CR,
/// or when its first character that is neither whitespace (Unicode
/// White_Space) nor an invisible format character (category Cf: zero-width
/// space, BOM, bidi controls…) is `=`, `+`, `-`, `@` or one of their
/// full-width forms `＝ ＋ － ＠`. Spreadsheets differ in what they skip
/// before a formula, so the guard skips all of those.
pub fn guarded_cell(cell: &str) -> Cow<'_, str> {
    let first = cell.chars().next();
    let starts_formula = matches!(first, Some('\t' | '\r'))
        || matches!(
            cell.chars()
                .find(|&c| !c.is_whitespace() && !is_format_character(c)),
            Some('=' | '+' | '-' | '@' | '＝' | '＋' | '－' | '＠')
        );
    if starts_formula || first == Some('\'') {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

/// The I/O error inside a csv error, its kind kept (a client that went
/// away is `BrokenPipe`, not an export failure); csv's own conversion
/// wraps every error as `Other`.
fn csv_io(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        // Not met when writing byte fields, ten to a row.
        other => io::Error::other(format!("CSV writer: {other:?}")),
    }
}

/// A text cell, guarded when `guard` is on.
fn text_cell(cell: &str, guard: bool) -> Cow<'_, str> {
    if guard {
        guarded_cell(cell)
    } else {
        Cow::Borrowed(cell)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{encode_record, Event, Outcome, Timestamp};
    use crate::hash::chain::ChainHash;

    fn row(actor: &str, context: serde_json::Value) -> Match {
        let mut e = Event::new(
            Timestamp::from_unix_nanos(1_500_000_000),
            "config.changed",
            actor,
        );
        e.outcome = Outcome::Failure;
        e.source_ip = Some("2001:db8::1".parse().unwrap());
        e.context = context.as_object().unwrap().clone();
        let mut record = Vec::new();
        encode_record(&e, &mut record).unwrap();
        Match {
            seq: 7,
            hash: ChainHash([0xab; 32]),
            record,
            version: 1,
        }
    }

    fn export(format: ExportFormat, guard: bool, rows: &[Match]) -> String {
        let mut ex = Exporter::new(
            Vec::new(),
            ExportOptions {
                format,
                csv_formula_guard: guard,
            },
        )
        .unwrap();
        for r in rows {
            ex.write(r).unwrap();
        }
        String::from_utf8(ex.finish().unwrap()).unwrap()
    }

    #[test]
    fn json_and_jsonl_parse_back() {
        let rows = [
            row(
                "alice \"the admin\"",
                serde_json::json!({"old": "a,b", "new": "\n"}),
            ),
            row("bob", serde_json::json!({})),
        ];
        let json: serde_json::Value =
            serde_json::from_str(&export(ExportFormat::Json, true, &rows)).unwrap();
        assert_eq!(json[0]["actor"], "alice \"the admin\"");
        assert_eq!(json[0]["context"]["new"], "\n");
        assert_eq!(json[0]["node"], serde_json::Value::Null);
        assert_eq!(json[1]["seq"], 7);
        assert_eq!(json[0]["ip"], "2001:db8::1");
        assert_eq!(json[0]["timestamp"], "1970-01-01T00:00:01.5Z");
        let lines = export(ExportFormat::JsonLines, true, &rows);
        assert_eq!(lines.lines().count(), 2);
        for l in lines.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["hash"], "ab".repeat(32));
        }
        assert_eq!(export(ExportFormat::Json, true, &[]), "[]\n");
    }

    #[test]
    fn csv_quotes_and_guards_formulas() {
        let rows = [row(
            "=cmd|'/c calc'!A1",
            serde_json::json!({"k": "v, \"q\""}),
        )];
        let guarded = export(ExportFormat::Csv, true, &rows);
        let mut lines = guarded.split("\r\n");
        assert_eq!(
            lines.next().unwrap(),
            "seq,timestamp,event,actor,node,resource,ip,outcome,context,hash,received_at,origin,appender"
        );
        let line = lines.next().unwrap();
        // The guarded cell needs no quotes: the `'` is what stops the formula.
        assert!(
            line.starts_with(
                "7,1970-01-01T00:00:01.5Z,config.changed,'=cmd|'/c calc'!A1,,,2001:db8::1,failure,"
            ),
            "{line}"
        );
        assert!(line.contains(r#""{""k"":""v, \""q\""""}""#), "{line}");
        assert_eq!(lines.next(), Some(""), "CRLF after the last row");
        let raw = export(ExportFormat::Csv, false, &rows);
        assert!(raw.contains(",=cmd|'/c calc'!A1,"), "{raw}");
        // A version 1 record has no provenance: three empty cells.
        assert!(
            line.ends_with(&format!(",{},,,", "ab".repeat(32))),
            "{line}"
        );
    }

    /// A version 2 row: the record `row` builds, behind a provenance prefix.
    fn row_v2(appender: &str, origin: Origin) -> Match {
        let mut m = row("bob", serde_json::json!({"k": 1}));
        let mut record = Vec::new();
        crate::event::record::encode_provenance(
            Timestamp::from_unix_nanos(1_700_000_000_123_456_789),
            origin,
            appender,
            &mut record,
        )
        .unwrap();
        record.extend_from_slice(&m.record);
        m.record = record;
        m.version = 2;
        m
    }

    #[test]
    fn provenance_is_in_every_format() {
        let v1 = row("bob", serde_json::json!({}));
        let rows = [row_v2("key-7f3a", Origin::Client), v1];
        for format in [ExportFormat::Json, ExportFormat::JsonLines] {
            let text = export(format, true, &rows);
            let values: Vec<serde_json::Value> = if format == ExportFormat::Json {
                serde_json::from_str(&text).unwrap()
            } else {
                text.lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect()
            };
            assert_eq!(values[0]["received_at"], "2023-11-14T22:13:20.123456789Z");
            assert_eq!(values[0]["origin"], "client");
            assert_eq!(values[0]["appender"], "key-7f3a");
            for key in ["received_at", "origin", "appender"] {
                assert_eq!(values[1][key], serde_json::Value::Null, "{key}");
            }
        }
        let engine = export(ExportFormat::Csv, true, &[row_v2("=evil", Origin::Engine)]);
        let line = engine.split("\r\n").nth(1).unwrap();
        assert!(
            // The guard's `'` needs no quotes: the csv crate quotes only `"`, `,`, CR, LF.
            line.ends_with(",2023-11-14T22:13:20.123456789Z,engine,'=evil"),
            "{line}"
        );
    }

    #[test]
    fn the_formula_guard_rule() {
        let guarded = [
            // The ASCII starts, and tab and CR as the first character.
            "=1+1",
            "+1",
            "-1",
            "@SUM(A1)",
            "\t=1",
            "\tx",
            "\rx",
            // Behind whitespace: spaces, no-break and ideographic space,
            // line breaks.
            " =1",
            "   +1",
            "\u{a0}-1",
            "\u{3000}@x",
            "\n=1",
            "\u{2028}=1",
            // Behind invisible format characters: zero-width space, BOM,
            // bidi controls, word joiner, soft hyphen, a tag character.
            "\u{200b}=1",
            "\u{feff}+1",
            "\u{202e}-1",
            "\u{2066}@x",
            "\u{2060}=1",
            "\u{ad}=1",
            "\u{e0041}=1",
            " \u{200b} \u{200d}=1",
            // Full-width forms, bare and behind the rest.
            "＝1",
            "＋1",
            "－1",
            "＠x",
            " ＝1",
            "\u{200b}＠x",
        ];
        for cell in guarded {
            assert_eq!(guarded_cell(cell), format!("'{cell}"), "{cell:?}");
        }
        // A cell that really starts with `'` gets one more, so that `'=1`
        // stored cannot pass for a guarded `=1`.
        assert_eq!(guarded_cell("'=1"), "''=1");
        assert_eq!(guarded_cell("'quoted'"), "''quoted'");
        assert_eq!(guarded_cell("''"), "'''");
        for cell in [
            "",
            "alice@acme.io",
            "a=b",
            "1-2",
            " hello",
            "\u{200b}x",
            "x=1",
            "’=1",
            "＇=1",
            " '=1",
            "\u{2212}1",
            "﹦1",
            "pcap.download",
            "{\"k\":\"=1\"}",
        ] {
            assert_eq!(guarded_cell(cell), cell, "{cell:?}");
            assert!(matches!(guarded_cell(cell), Cow::Borrowed(_)));
        }
    }

    #[test]
    fn stripping_one_leading_quote_gives_the_stored_text_back() {
        let actors = [
            "=HYPERLINK(\"x\")",
            "'=1",
            "''",
            "'",
            "plain",
            " @x",
            "\u{3000}=1",
            "＋1",
            "a,b",
            "-",
            "q\"uote",
            "'a,\"b\"",
        ];
        let rows: Vec<Match> = actors
            .iter()
            .map(|a| row(a, serde_json::json!({"f": "=1"})))
            .collect();
        let csv = export(ExportFormat::Csv, true, &rows);
        let mut reader = csv::ReaderBuilder::new().from_reader(csv.as_bytes());
        let unguard = |cell: &str| cell.strip_prefix('\'').unwrap_or(cell).to_string();
        let read: Vec<(String, String)> = reader
            .records()
            .map(|r| {
                let r = r.unwrap();
                (unguard(&r[3]), unguard(&r[8]))
            })
            .collect();
        assert_eq!(read.len(), actors.len());
        for ((actor, context), expected) in read.iter().zip(actors) {
            assert_eq!(actor, expected);
            assert_eq!(context, r#"{"f":"=1"}"#);
        }
    }

    /// A writer that refuses every write as a client gone away.
    struct Gone;

    impl Write for Gone {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn a_csv_write_failure_keeps_its_io_kind() {
        let e = match Exporter::new(Gone, ExportOptions::new(ExportFormat::Csv)) {
            Ok(mut ex) => {
                // The header and rows wait in the csv writer's buffer; a
                // full buffer or the end writes them.
                let big = row("x", serde_json::json!({"blob": "y".repeat(20_000)}));
                match ex.write(&big) {
                    Err(ExportError::Io(e)) => e,
                    Err(other) => panic!("{other}"),
                    Ok(()) => ex.finish().map(drop).unwrap_err(),
                }
            }
            Err(e) => e,
        };
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }
}
