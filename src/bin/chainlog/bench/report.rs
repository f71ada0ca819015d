//! Printing the figures as a table or JSON.

use std::io::{self, Write};

use crate::error::CliError;

use super::*;

pub(super) fn format_value(value: f64, unit: &str) -> String {
    match unit {
        "events/s" | "ops/s" => format!("{} {unit}", group_thousands(value)),
        "ms" if value < 10.0 => format!("{value:.2} {unit}"),
        _ => format!("{value:.1} {unit}"),
    }
}

pub(super) fn print_rows(
    rows: &[Row],
    ctx: &RunContext,
    json: bool,
    quiet: bool,
) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    if json {
        let text = serde_json::to_string_pretty(rows).map_err(|e| CliError::output(e.into()))?;
        writeln!(out, "{text}").map_err(CliError::output)?;
        return out.flush().map_err(CliError::output);
    }
    if !quiet {
        writeln!(
            out,
            "chainlog bench: {} cores; events {:.0} B per record on average ({:.0} B per frame); work dir {}",
            ctx.cores,
            ctx.record_bytes,
            ctx.frame_bytes,
            ctx.work_dir.display()
        )
        .map_err(CliError::output)?;
        writeln!(
            out,
            "large log: {} events, {} segments, {:.0} MiB; verify and export run in child processes (peak memory is theirs)",
            ctx.log_events,
            ctx.log_segments,
            ctx.log_bytes as f64 / (1 << 20) as f64
        )
        .map_err(CliError::output)?;
        writeln!(
            out,
            "load average before: {}, after: {} (other work on the machine skews the figures; the ratios less so)\n",
            ctx.load_before, ctx.load_after
        )
        .map_err(CliError::output)?;
    }
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            [
                r.measurement.clone(),
                format_value(r.value, r.unit),
                format!("{} ({})", format_value(r.limit, r.limit_unit), r.limit_name),
                format!("{:.3}", r.ratio),
            ]
        })
        .collect();
    let header = ["measurement", "value", "limit", "ratio"].map(String::from);
    let mut widths = [0; 4];
    for line in std::iter::once(&header).chain(&cells) {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for line in std::iter::once(&header).chain(&cells) {
        writeln!(
            out,
            "{:<w0$}  {:>w1$}  {:<w2$}  {:>w3$}",
            line[0],
            line[1],
            line[2],
            line[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        )
        .map_err(CliError::output)?;
    }
    if !quiet {
        writeln!(out).map_err(CliError::output)?;
        for r in rows {
            writeln!(out, "{}: {}", r.measurement, r.note).map_err(CliError::output)?;
        }
    }
    out.flush().map_err(CliError::output)
}
