//! `chainlog query` and `chainlog export`: filtered reads of the log, as an
//! audit table or as JSON, JSON Lines or CSV.
//!
//! Both commands build a [`Query`] from the same flags. `export`, and `query`
//! in the json/jsonl/csv formats, stream rows through [`Exporter`] into a
//! `BufWriter`, so memory stays flat however many rows match, and `query
//! --format csv` prints exactly what `export --format csv` prints. The table
//! needs its column widths before its first line, so it buffers one page: at
//! most `--limit` rows, [`DEFAULT_TABLE_LIMIT`] when `--limit` is absent.
//!
//! When `--limit` is given, one more match than the limit is asked for, to
//! tell a page that was cut short from the last page: a cut page ends with the
//! cursor to pass as `--after` for the next one.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use chainlog::event::Origin;
use chainlog::event::RecordView;
use chainlog::query::export::{ExportError, ExportFormat, ExportOptions, Exporter};
use chainlog::query::time_order::TimeCursor;
use chainlog::query::{
    parse_origin, parse_time, EventPattern, Filter, FilterError, IpNet, Query, QueryStats,
};
use chainlog::ChainHash;
use chainlog::{Event, Log, Outcome, Timestamp};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::CliError;
use crate::source::SourceArgs;
use crate::Global;

/// Rows a table shows when `--limit` is absent.
pub const DEFAULT_TABLE_LIMIT: u64 = 100;

/// Which records: the flags `query` and `export` share. Repeating a flag
/// means any of its values (OR); different flags must all match (AND).
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Only events by this actor (exact match). Repeat for any of several.
    #[arg(long, value_name = "ACTOR")]
    actor: Vec<String>,
    /// Only this event type (pcap.download), or every type under a prefix
    /// ending in `*` (pcap.*). Repeat for any of several.
    #[arg(long, value_name = "TYPE")]
    event: Vec<String>,
    /// Only events touching this node (exact match). Repeatable.
    #[arg(long, value_name = "NODE")]
    node: Vec<String>,
    /// Only events touching this resource (exact match). Repeatable.
    #[arg(long, value_name = "RESOURCE")]
    resource: Vec<String>,
    /// Only events from this source address or CIDR block, IPv4 or IPv6
    /// (203.0.113.42, 198.51.100.0/24, 2001:db8::/32). Repeatable.
    #[arg(long, value_name = "ADDR|CIDR")]
    ip: Vec<String>,
    /// Only events with this outcome: success or failure. Repeatable.
    #[arg(long, value_name = "OUTCOME")]
    outcome: Vec<String>,
    /// Only events at or after TIME (inclusive): RFC 3339
    /// (2026-03-09T09:52:14Z) or a time before now (30s, 15m, 24h, 7d, 2w).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only events before TIME (exclusive): RFC 3339 or relative, as --since.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Only records appended by this appender (an API key id, a CLI
    /// --appender or OS user, a library's Options::appender; exact match).
    /// Version 1 records have none and never match. Repeatable.
    #[arg(long, value_name = "APPENDER")]
    appender: Vec<String>,
    /// Only records of this origin: client (appended through a public
    /// path) or engine (the log's own records). Repeatable.
    #[arg(long, value_name = "ORIGIN")]
    origin: Vec<String>,
    /// Only records the engine received at or after TIME (inclusive; RFC
    /// 3339 or relative, as --since). Version 1 records never match.
    #[arg(long, value_name = "TIME")]
    received_since: Option<String>,
    /// Only records the engine received before TIME (exclusive).
    #[arg(long, value_name = "TIME")]
    received_until: Option<String>,
    /// Start at this seq (inclusive): the lowest seq, or the highest with --reverse.
    #[arg(long, value_name = "SEQ")]
    from_seq: Option<u64>,
    /// Continue after this seq: the last seq of the previous page (a cursor,
    /// stable while the log grows). With --reverse, continue before it.
    #[arg(long, value_name = "SEQ")]
    after: Option<u64>,
    /// Newest first.
    #[arg(long)]
    reverse: bool,
    /// Return at most N events. The table format shows at most 100 when
    /// --limit is absent; the other formats have no default limit.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
}

/// Where and how rows are written.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Write to FILE (created, or truncated) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// CSV: keep every cell as stored, instead of prefixing with ' the cells a
    /// spreadsheet could run as formulas (= + - @, also behind spaces or
    /// invisible characters, and full-width) and those starting with '.
    #[arg(long)]
    no_formula_guard: bool,
    /// Print what the query read and skipped (segments, blocks, bytes) to stderr.
    #[arg(long)]
    stats: bool,
}

/// `chainlog query`'s arguments.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Output format: an audit table, or what `export` writes.
    #[arg(long, value_enum, default_value_t = QueryFormat::Table)]
    format: QueryFormat,
    /// Table: add each record's provenance: when the engine received it,
    /// its origin (client or engine) and its appender ("-" for version 1
    /// records). The other formats always carry them.
    #[arg(long)]
    provenance: bool,
    /// Row order: arrival (`seq`, the chain's order), or event time
    /// (`time`, ties by seq; one page of --limit rows, newest first with
    /// --reverse, continued with --cursor; not with --from-seq, --after or
    /// --stats).
    #[arg(long, value_enum, default_value_t = OrderArg::Seq)]
    order: OrderArg,
    /// With --order time: continue after this row (the `--cursor` that
    /// "more:" printed).
    #[arg(long, value_name = "CURSOR", allow_hyphen_values = true)]
    cursor: Option<TimeCursor>,
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    source: SourceArgs,
}

/// `--order`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OrderArg {
    /// Arrival (seq) order.
    Seq,
    /// Event time, ties by seq.
    Time,
}

/// `chainlog export`'s arguments.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Output format: one JSON array, JSON Lines, RFC 4180 CSV with a header
    /// row, or a self-verifying bundle (needs --checkpoint).
    #[arg(long, value_enum)]
    format: RowFormat,
    /// For --format bundle: the signed checkpoint whose tree every row is
    /// proved to be in (only records below its size are exported).
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    source: SourceArgs,
}

/// `query`'s formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum QueryFormat {
    /// Aligned columns for people, then a count line.
    Table,
    /// One JSON object per line.
    Jsonl,
    /// One JSON array.
    Json,
    /// RFC 4180 CSV with a header row.
    Csv,
}

/// The streamed formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RowFormat {
    /// One JSON object per line.
    Jsonl,
    /// One JSON array.
    Json,
    /// RFC 4180 CSV with a header row.
    Csv,
    /// One JSON file with each row's stored bytes and inclusion proof, and
    /// the signed checkpoint (`chainlog check-bundle` checks it offline).
    Bundle,
}

impl RowFormat {
    /// The row format, or `None` for a bundle.
    fn export_format(self) -> Option<ExportFormat> {
        match self {
            RowFormat::Jsonl => Some(ExportFormat::JsonLines),
            RowFormat::Json => Some(ExportFormat::Json),
            RowFormat::Csv => Some(ExportFormat::Csv),
            RowFormat::Bundle => None,
        }
    }
}

/// Parses every value of one flag, naming the flag in the error.
fn parse_all<T>(
    flag: &str,
    values: &[String],
    parse: impl Fn(&str) -> Result<T, FilterError>,
) -> Result<Vec<T>, CliError> {
    values
        .iter()
        .map(|v| parse(v).map_err(|e| CliError::Usage(format!("--{flag}: {e}"))))
        .collect()
}

impl FilterArgs {
    /// The library query these flags ask for; relative times count back from `now`.
    pub fn to_query(&self, now: Timestamp) -> Result<Query, CliError> {
        let time = |flag: &str, text: &Option<String>| match text {
            Some(t) => parse_time(t, now)
                .map(Some)
                .map_err(|e| CliError::Usage(format!("--{flag}: {e}"))),
            None => Ok(None),
        };
        let filter = Filter {
            actors: self.actor.clone(),
            event_types: parse_all("event", &self.event, EventPattern::from_str)?,
            nodes: self.node.clone(),
            resources: self.resource.clone(),
            ips: parse_all("ip", &self.ip, IpNet::from_str)?,
            outcomes: parse_all("outcome", &self.outcome, |s| {
                Outcome::from_str(s).map_err(|_| FilterError::BadOutcome(s.to_string()))
            })?,
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
            appenders: self.appender.clone(),
            origins: parse_all("origin", &self.origin, parse_origin)?,
            received_since: time("received-since", &self.received_since)?,
            received_until: time("received-until", &self.received_until)?,
        };
        filter.validate().map_err(|e| match &e {
            FilterError::EmptyTimeRange { .. } => match (&self.since, &self.until) {
                (Some(since), Some(until)) => CliError::Usage(format!(
                    "{e} (from --since {since:?} and --until {until:?}): the time range is empty"
                )),
                _ => CliError::Usage(e.to_string()),
            },
            _ => CliError::Usage(format!("{e}: the time range is empty")),
        })?;
        Ok(Query {
            filter,
            from_seq: self.from_seq,
            after: self.after,
            reverse: self.reverse,
            limit: self.limit,
        })
    }
}

/// Creates (or truncates) `path`, or takes stdout; buffered either way.
fn open_output(path: Option<&Path>) -> Result<BufWriter<Box<dyn Write>>, CliError> {
    let writer: Box<dyn Write> = match path {
        Some(p) => Box::new(
            File::create(p).map_err(|e| CliError::io(format!("creating {}", p.display()), e))?,
        ),
        None => Box::new(io::stdout().lock()),
    };
    Ok(BufWriter::with_capacity(1 << 16, writer))
}

/// The CLI error for a failed write (a closed stdout pipe ends quietly).
fn write_error(path: Option<&Path>, e: io::Error) -> CliError {
    match path {
        Some(p) => CliError::io(format!("writing {}", p.display()), e),
        None => CliError::output(e),
    }
}

/// The CLI error for a row the exporter refused.
fn export_error(path: Option<&Path>, e: ExportError) -> CliError {
    match e {
        ExportError::Io(e) => write_error(path, e),
        bad @ ExportError::BadRecord { .. } => {
            CliError::Integrity(format!("{bad} (run `chainlog verify` for a full report)"))
        }
        other => CliError::Usage(other.to_string()),
    }
}

/// How a query run ended: rows written, and whether --limit cut it short.
struct PageEnd {
    rows: u64,
    /// The flags that continue with the next page (`--after SEQ`, or
    /// `--order time --cursor C`), when `--limit` cut this one short.
    more: Option<String>,
    stats: QueryStats,
}

/// The order of a query's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Arrival (seq) order.
    Seq,
    /// Event time, ties by seq: one page, after the cursor when given.
    Time(Option<TimeCursor>),
}

/// Runs `query` against `log`, handing each match to `row`. When the query
/// has a limit, one more match is fetched to learn whether the page was cut.
/// In event-time order it is one page of `--limit` rows (the library's
/// [`Log::page_by_time`]; no read statistics).
fn run_query(
    log: &Log,
    mut query: Query,
    order: Order,
    mut row: impl FnMut(u64, &ChainHash, &RecordView<'_>) -> Result<(), CliError>,
) -> Result<PageEnd, CliError> {
    if let Order::Time(cursor) = order {
        let page = log.page_by_time(&query, cursor)?;
        for m in &page.matches {
            row(m.seq, &m.hash, &m.view()?)?;
        }
        return Ok(PageEnd {
            rows: page.matches.len() as u64,
            more: page
                .next_cursor
                .map(|c| format!("--order time --cursor {c}")),
            stats: QueryStats::default(),
        });
    }
    let limit = query.limit;
    query.limit = limit.map(|l| l.saturating_add(1));
    let mut matches = log.query(&query)?;
    let (mut rows, mut last, mut more) = (0u64, None, false);
    // Records are handed over decoded in place: no copy per row.
    matches.try_for_each_view(|seq, hash, view| {
        if limit.is_some_and(|l| rows >= l) {
            more = true; // the one extra match: the page was cut
            return Ok(());
        }
        row(seq, &hash, view)?;
        rows += 1;
        last = Some(seq);
        Ok::<(), CliError>(())
    })?;
    Ok(PageEnd {
        rows,
        more: last.filter(|_| more).map(|seq| format!("--after {seq}")),
        stats: matches.stats(),
    })
}

fn print_stats(stats: &QueryStats) {
    eprintln!(
        "stats: {} segments skipped, {} segments indexed, {} blocks read, {} records examined, {} bytes read ({} data, {} index)",
        stats.segments_skipped,
        stats.segments_indexed,
        stats.blocks_read,
        stats.records_examined,
        stats.data_bytes_read + stats.index_bytes_read,
        stats.data_bytes_read,
        stats.index_bytes_read
    );
}

/// The "Node / Resource" cell.
pub fn target_cell(node: Option<&str>, resource: Option<&str>) -> String {
    match (node, resource) {
        (Some(n), Some(r)) => format!("{n} / {r}"),
        (Some(n), None) => n.to_string(),
        (None, Some(r)) => r.to_string(),
        (None, None) => "-".to_string(),
    }
}

/// The table's columns.
pub const TABLE_HEADER: [&str; 7] = [
    "Seq",
    "Timestamp (UTC)",
    "Event",
    "Actor",
    "Node / Resource",
    "IP",
    "Outcome",
];

/// The provenance columns `query --provenance` adds to the table.
pub const PROVENANCE_HEADER: [&str; 3] = ["Received (UTC)", "Origin", "Appender"];

/// The provenance cells of a row ("-" where a version 1 record has none).
fn provenance_cells(view: &RecordView<'_>) -> [String; 3] {
    [
        view.received_at
            .map_or_else(|| "-".to_string(), |t| t.to_string()),
        match view.origin {
            Origin::Client | Origin::Engine => view.origin.as_str().to_string(),
            Origin::Legacy => "-".to_string(),
        },
        view.appender.unwrap_or("-").to_string(),
    ]
}

/// One table row.
fn table_row(seq: u64, view: &RecordView<'_>) -> [String; 7] {
    [
        seq.to_string(),
        view.timestamp.to_string(),
        view.event_type.to_string(),
        view.actor.to_string(),
        target_cell(view.node, view.resource),
        view.source_ip
            .map_or_else(|| "-".to_string(), |ip| ip.to_string()),
        view.outcome.as_str().to_string(),
    ]
}

/// One table row for an event that has not been stored (the demo's input).
pub fn event_cells(event: &Event) -> [String; 6] {
    [
        event.timestamp.to_string(),
        event.event_type.clone(),
        event.actor.clone(),
        target_cell(event.node.as_deref(), event.resource.as_deref()),
        event
            .source_ip
            .map_or_else(|| "-".to_string(), |ip| ip.to_string()),
        event.outcome.as_str().to_string(),
    ]
}

/// Aligned lines: the header, a rule, then the rows, indented by two spaces.
pub fn table_lines<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> Vec<String> {
    let header = header.map(String::from);
    let mut widths = [0; N];
    for row in std::iter::once(&header).chain(rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |row: &[String; N]| {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        format!("  {}", cells.join("  ").trim_end())
    };
    let rule = widths.map(|w| "-".repeat(w));
    let mut lines = Vec::with_capacity(rows.len() + 2);
    lines.push(line(&header));
    lines.push(line(&rule));
    lines.extend(rows.iter().map(line));
    lines
}

/// `12 events`, and the cursor when the page was cut short.
pub fn count_line(rows: u64, more: Option<&str>) -> String {
    let noun = if rows == 1 { "event" } else { "events" };
    match more {
        Some(more) => format!("{rows} {noun} (limit reached); more: {more}"),
        None => format!("{rows} {noun}"),
    }
}

/// Runs a query and returns the table's lines, ending with the count line
/// (all indented by two spaces). Buffers at most `query.limit` rows.
pub fn query_table(log: &Log, query: Query) -> Result<(Vec<String>, QueryStats), CliError> {
    query_table_with(log, query, false, Order::Seq)
}

/// [`query_table`], with the provenance columns when `provenance` is set.
fn query_table_with(
    log: &Log,
    query: Query,
    provenance: bool,
    order: Order,
) -> Result<(Vec<String>, QueryStats), CliError> {
    let mut rows = Vec::new();
    let mut wide = Vec::new();
    let done = run_query(log, query, order, |seq, _, view| {
        let row = table_row(seq, view);
        if provenance {
            let [a, b, c, d, e, f, g] = row;
            let [r, o, p] = provenance_cells(view);
            wide.push([a, b, c, d, e, f, g, r, o, p]);
        } else {
            rows.push(row);
        }
        Ok(())
    })?;
    let mut lines = if rows.is_empty() && wide.is_empty() {
        Vec::new()
    } else if provenance {
        let [a, b, c, d, e, f, g] = TABLE_HEADER;
        let [r, o, p] = PROVENANCE_HEADER;
        table_lines([a, b, c, d, e, f, g, r, o, p], &wide)
    } else {
        table_lines(TABLE_HEADER, &rows)
    };
    lines.push(format!("  {}", count_line(done.rows, done.more.as_deref())));
    Ok((lines, done.stats))
}

/// A spinner counting exported records on stderr.
fn progress_spinner() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} exporting: {human_pos} records ({per_sec})")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Streams the matches of `query` in `options.format` to `output` (stdout
/// when `None`). A failed row ends the stream without closing it (no JSON
/// `]`), so a reader cannot take the rows before it for the whole answer.
fn stream(
    log: &Log,
    query: Query,
    order: Order,
    options: ExportOptions,
    output: Option<&Path>,
    progress: Option<&ProgressBar>,
) -> Result<PageEnd, CliError> {
    let mut out = open_output(output)?;
    let mut exporter = Exporter::new(&mut out, options).map_err(|e| write_error(output, e))?;
    let done = run_query(log, query, order, |seq, hash, view| {
        exporter
            .write_view(seq, hash, view)
            .map_err(|e| export_error(output, e))?;
        if let Some(bar) = progress {
            bar.inc(1);
        }
        Ok(())
    });
    let done = match done {
        Ok(done) => done,
        Err(e) => {
            drop(exporter);
            // The rows before the failure still reach the reader.
            let _ = out.flush();
            return Err(e);
        }
    };
    exporter.finish().map_err(|e| write_error(output, e))?;
    out.flush().map_err(|e| write_error(output, e))?;
    Ok(done)
}

/// Runs `chainlog query`.
pub fn query(global: &Global, args: QueryArgs) -> Result<ExitCode, CliError> {
    let mut query = args.filter.to_query(Timestamp::now())?;
    let order = match (args.order, args.cursor) {
        (OrderArg::Seq, None) => Order::Seq,
        (OrderArg::Seq, Some(_)) => {
            return Err(CliError::Usage("--cursor goes with --order time".into()))
        }
        (OrderArg::Time, _) if query.from_seq.is_some() || query.after.is_some() => {
            return Err(CliError::Usage(
                "--order time pages with --cursor, not --from-seq or --after".into(),
            ))
        }
        (OrderArg::Time, _) if args.output.stats => {
            return Err(CliError::Usage(
                "--stats is not kept in event-time order".into(),
            ))
        }
        (OrderArg::Time, cursor) => Order::Time(cursor),
    };
    let log = args.source.open(global)?;
    let options = ExportOptions {
        format: match args.format {
            QueryFormat::Table => {
                query.limit = Some(query.limit.unwrap_or(DEFAULT_TABLE_LIMIT));
                let (lines, stats) = query_table_with(&log, query, args.provenance, order)?;
                let path = args.output.output.as_deref();
                let mut out = open_output(path)?;
                for line in lines {
                    writeln!(out, "{line}").map_err(|e| write_error(path, e))?;
                }
                out.flush().map_err(|e| write_error(path, e))?;
                if args.output.stats {
                    print_stats(&stats);
                }
                return Ok(ExitCode::SUCCESS);
            }
            QueryFormat::Jsonl => ExportFormat::JsonLines,
            QueryFormat::Json => ExportFormat::Json,
            QueryFormat::Csv => ExportFormat::Csv,
        },
        csv_formula_guard: !args.output.no_formula_guard,
    };
    let done = stream(
        &log,
        query,
        order,
        options,
        args.output.output.as_deref(),
        None,
    )?;
    if let Some(more) = done.more.filter(|_| !global.quiet) {
        eprintln!("more: {more}");
    }
    if args.output.stats {
        print_stats(&done.stats);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `chainlog export`.
pub fn export(global: &Global, args: ExportArgs) -> Result<ExitCode, CliError> {
    let query = args.filter.to_query(Timestamp::now())?;
    let log = args.source.open(global)?;
    let Some(format) = args.format.export_format() else {
        let checkpoint = args.checkpoint.as_deref().ok_or_else(|| {
            CliError::Usage(
                "--format bundle needs --checkpoint FILE (from `chainlog checkpoint`)".into(),
            )
        })?;
        let output = args.output.output.as_deref();
        let rows = crate::prove::export_bundle(global, &log, &query, checkpoint, output)?;
        if !global.quiet {
            let to = output.map_or_else(String::new, |p| format!(" to {}", p.display()));
            eprintln!("exported a bundle of {rows} records{to}");
        }
        return Ok(ExitCode::SUCCESS);
    };
    if args.checkpoint.is_some() {
        return Err(CliError::Usage(
            "--checkpoint is only for --format bundle".into(),
        ));
    }
    let options = ExportOptions {
        format,
        csv_formula_guard: !args.output.no_formula_guard,
    };
    let progress = (!global.quiet && io::stderr().is_terminal()).then(progress_spinner);
    let output = args.output.output.as_deref();
    let result = stream(&log, query, Order::Seq, options, output, progress.as_ref());
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let done = result?;
    if !global.quiet {
        let to = output.map_or_else(String::new, |p| format!(" to {}", p.display()));
        let more = done.more.map_or_else(String::new, |more| {
            format!(" (limit reached; more: {more})")
        });
        eprintln!("exported {} records{to}{more}", done.rows);
    }
    if args.output.stats {
        print_stats(&done.stats);
    }
    Ok(ExitCode::SUCCESS)
}
