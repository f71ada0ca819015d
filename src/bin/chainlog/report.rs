//! A verification report as text: the summary lines `chainlog verify`,
//! `chainlog archive verify` and the demo print.

use chainlog::verify::{Problem, Report};

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
    if problem.segment.is_empty() {
        // A problem of the whole log (a checkpoint mismatch) has no place in a file.
        return format!("{}: {seq}: {}", kind_name(problem), problem.detail);
    }
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
