//! `chainlog verify`: recompute the chain and report every problem.

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use chainlog::storage::FsStorage;
use chainlog::verify::{verify_dir, Problem, Report};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::{CliError, EXIT_INTEGRITY};
use crate::read::segment_files;
use crate::Global;

/// Verifies `dir`, with a byte progress bar when `show_progress`.
pub fn verify_with_progress(dir: &Path, show_progress: bool) -> Result<Report, CliError> {
    let bar = if show_progress {
        let total: u64 = segment_files(dir)?
            .iter()
            .filter_map(|(_, path)| std::fs::metadata(path).ok())
            .map(|m| m.len())
            .sum();
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "verifying [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Some(bar)
    } else {
        None
    };
    let mut progress = |bytes: u64| {
        if let Some(bar) = &bar {
            bar.set_position(bytes);
        }
    };
    let report = verify_dir(&FsStorage, dir, &mut progress);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    Ok(report?)
}

/// The kind of a problem as its snake_case name (`hash_mismatch`).
pub fn kind_name(problem: &Problem) -> String {
    match serde_json::to_value(problem.kind) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{:?}", problem.kind),
    }
}

/// One line per problem: kind, seq, segment file, byte offset, detail.
pub fn problem_line(problem: &Problem) -> String {
    let seq = problem
        .seq
        .map_or_else(|| "seq -".to_string(), |s| format!("seq {s}"));
    format!(
        "{}: {seq} in {} at byte {}: {}",
        kind_name(problem),
        problem.segment,
        problem.offset,
        problem.detail
    )
}

fn segments(n: u64) -> String {
    format!("{n} segment{}", if n == 1 { "" } else { "s" })
}

/// The human summary of a report.
pub fn summary(report: &Report) -> Vec<String> {
    let mut lines = Vec::new();
    let range = match (report.first_seq, report.last_seq) {
        (Some(first), Some(last)) => format!(", seq {first}..={last}"),
        _ => String::new(),
    };
    let head = report
        .head
        .map_or_else(|| "-".to_string(), |h| h.to_string());
    if report.is_intact() {
        lines.push(format!(
            "intact: {} records in {}{range}, head {head}",
            report.records,
            segments(report.segments)
        ));
    } else {
        let count = report.problems.len() as u64 + report.problems_omitted;
        lines.push(format!(
            "NOT INTACT: {count} problem{} found ({} records in {}{range})",
            if count == 1 { "" } else { "s" },
            report.records,
            segments(report.segments)
        ));
        lines.extend(report.problems.iter().map(problem_line));
        if report.problems_omitted > 0 {
            lines.push(format!("... and {} more problems", report.problems_omitted));
        }
    }
    if let Some(torn) = &report.torn_tail {
        lines.push(format!(
            "note: torn tail in {} at byte {} ({} bytes): an incomplete write from a crash, not tampering; the next open for writing cuts it",
            torn.segment, torn.offset, torn.bytes
        ));
    }
    lines
}

/// Runs `chainlog verify`.
pub fn run(global: &Global, json: bool) -> Result<ExitCode, CliError> {
    let dir = global.dir()?;
    let show_progress = !global.quiet && io::stderr().is_terminal();
    let report = verify_with_progress(dir, show_progress)?;
    let mut out = io::stdout().lock();
    if json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| CliError::output(e.into()))?;
        writeln!(out, "{text}").map_err(CliError::output)?;
    } else {
        for line in summary(&report) {
            // --quiet keeps the problems and drops the all-clear and notes.
            let chatter = report.is_intact() || line.starts_with("note:");
            if global.quiet && chatter {
                continue;
            }
            writeln!(out, "{line}").map_err(CliError::output)?;
        }
    }
    out.flush().map_err(CliError::output)?;
    Ok(if report.is_intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INTEGRITY)
    })
}
