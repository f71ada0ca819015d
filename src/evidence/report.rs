//! `report.html`: one self-contained page (inline CSS and SVG, no script)
//! that prints well, for the people who read the pack.

use std::fmt::Write as _;

use serde_json::Value;

use super::manifest::PeriodManifest;
use super::stats::{AccessKind, PeriodStats};
use super::*;

/// What the report is made of.
pub(crate) struct ReportInput<'a> {
    pub origin: &'a str,
    pub key: String,
    pub period: &'a PeriodManifest,
    pub start_root: String,
    pub end_root: String,
    pub sample: u64,
    pub seed: u64,
    pub witnessed: bool,
    pub stats: &'a PeriodStats,
    pub state: &'a Value,
    pub generated_at: String,
}

/// Each file of the pack and the controls it supports.
pub(crate) const CONTROLS: &[(&str, &str, &str)] = &[
    (
        "checkpoints/start.txt, checkpoints/end.txt, proofs/consistency.json",
        "The log's signed trees before and after the period, and the proof that the later extends the earlier: nothing in or before the period was changed, removed or reordered",
        "SOC 2 CC7.2; ISO/IEC 27001:2022 A.8.15; PCI DSS v4.0 10.3.2, 10.3.4",
    ),
    (
        "events/events.jsonl, events/events.csv, events/records.jsonl",
        "Every event of the period (who, what, where from, when, outcome), with the stored bytes that chain from the start checkpoint's head to the end checkpoint's",
        "SOC 2 CC7.2; ISO/IEC 27001:2022 A.8.15; PCI DSS v4.0 10.2.1, 10.2.2, 10.3.1",
    ),
    (
        "events/events.jsonl (timestamp, received_at)",
        "Each row carries the event's time and the time the engine received it, by the engine's one clock",
        "ISO/IEC 27001:2022 A.8.17; PCI DSS v4.0 10.6.1",
    ),
    (
        "proofs/inclusion-sample.json",
        "Inclusion proofs of a random sample (seed in the pack) against the end checkpoint",
        "SOC 2 CC7.2; PCI DSS v4.0 10.3.4",
    ),
    (
        "access/summary.json",
        "Who read, exported or verified the log, failed sign-ins, refused requests, API key creations, rotations and revocations",
        "SOC 2 CC6.1, CC6.2; ISO/IEC 27001:2022 A.8.15; PCI DSS v4.0 10.2.1.1-10.2.1.5, 10.2.1.7",
    ),
    (
        "state/retention.json",
        "Retention runs, legal holds, how long the log is retained and what is immediately available; the archived copies of the period's segments and their Object Lock, as the bucket reports them",
        "PCI DSS v4.0 10.5.1 (12 months retained, 3 immediately available); ISO/IEC 27001:2022 A.8.15",
    ),
    (
        "report.html (failures, refusals, engine records)",
        "Every failure of the period, listed for review, and the engine's own records (recovery cuts, retention)",
        "SOC 2 CC7.2; PCI DSS v4.0 10.4.1, 10.4.2, 10.4.3, 10.7.2",
    ),
    (
        "manifest.json, manifest.sig, public-key.txt, VERIFY.md, verify_pack.py",
        "The SHA-256 of every file, signed with the log's key; how to check the pack with chainlog or 60 lines of Python",
        "PCI DSS v4.0 10.3.2, 10.3.4; ISO/IEC 27001:2022 A.8.15",
    ),
];

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;color:#1b1f24;margin:24px auto;max-width:1000px;padding:0 16px}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}\
table{border-collapse:collapse;width:100%;margin:6px 0}th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}\
th{background:#f3f5f7}td.n{text-align:right;font-variant-numeric:tabular-nums}code{font-size:12px;word-break:break-all}\
.ok{color:#116329;font-weight:600}.bad{color:#a40e26;font-weight:600}.muted{color:#57606a}\
svg{display:block;margin:8px 0}@media print{body{margin:0;max-width:none}h2{break-after:avoid}table,svg{break-inside:avoid}}";

fn row(out: &mut String, cells: &[&str]) {
    out.push_str("<tr>");
    for c in cells {
        let _ = write!(out, "<td>{}</td>", esc(c));
    }
    out.push_str("</tr>");
}

fn num_row(out: &mut String, label: &str, n: u64) {
    let _ = write!(
        out,
        "<tr><td>{}</td><td class=\"n\">{n}</td></tr>",
        esc(label)
    );
}

/// Events per day, failures stacked on top in their own colour.
fn day_chart(out: &mut String, stats: &PeriodStats) {
    let days: Vec<(&String, &stats::DayCount)> = stats.by_day.iter().collect();
    let max = days.iter().map(|(_, d)| d.events).max().unwrap_or(0).max(1);
    let (width, height, pad) = (960.0_f64, 220.0_f64, 30.0_f64);
    let slot = (width - pad) / days.len().max(1) as f64;
    let bar = (slot * 0.8).clamp(1.0, 48.0);
    let _ = write!(
        out,
        "<svg id=\"chart-days\" role=\"img\" aria-label=\"events per day\" width=\"{width}\" height=\"{}\" viewBox=\"0 0 {width} {}\">",
        height + 40.0,
        height + 40.0
    );
    let _ = write!(
        out,
        "<line x1=\"{pad}\" y1=\"{height}\" x2=\"{width}\" y2=\"{height}\" stroke=\"#8c959f\"/><text x=\"0\" y=\"12\" font-size=\"11\">{max}</text>"
    );
    for (i, (day, count)) in days.iter().enumerate() {
        let x = pad + i as f64 * slot;
        let h = count.events as f64 / max as f64 * (height - 10.0);
        let hf = count.failures as f64 / max as f64 * (height - 10.0);
        let _ = write!(
            out,
            "<rect class=\"bar-events\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"#3b82c4\"><title>{} {} events</title></rect>",
            height - h,
            h - hf,
            esc(day),
            count.events
        );
        if count.failures > 0 {
            let _ = write!(
                out,
                "<rect class=\"bar-failures\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{hf:.1}\" fill=\"#d1242f\"><title>{} {} failures</title></rect>",
                height - hf,
                esc(day),
                count.failures
            );
        }
        if days.len() <= 31 || i % (days.len() / 15).max(1) == 0 {
            let _ = write!(
                out,
                "<text x=\"{x:.1}\" y=\"{}\" font-size=\"10\">{}</text>",
                height + 14.0,
                esc(&day[5.min(day.len())..])
            );
        }
    }
    out.push_str(
        "</svg><p class=\"muted\">Blue: events; red: failures (stacked). Days in UTC.</p>",
    );
}

/// A horizontal bar per category.
fn category_chart(out: &mut String, stats: &PeriodStats) {
    let mut cats: Vec<(&String, &u64)> = stats.by_category.iter().collect();
    cats.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    cats.truncate(20);
    let max = cats.first().map_or(1, |c| *c.1).max(1);
    let height = 22 * cats.len().max(1);
    let _ = write!(
        out,
        "<svg id=\"chart-categories\" role=\"img\" aria-label=\"events per category\" width=\"960\" height=\"{height}\" viewBox=\"0 0 960 {height}\">"
    );
    for (i, (cat, n)) in cats.iter().enumerate() {
        let y = i * 22;
        let w = (**n as f64 / max as f64 * 640.0).max(1.0);
        let _ = write!(
            out,
            "<text x=\"0\" y=\"{}\" font-size=\"12\">{}</text><rect class=\"bar-category\" x=\"200\" y=\"{}\" width=\"{w:.1}\" height=\"16\" fill=\"#6e56cf\"/><text x=\"{:.1}\" y=\"{}\" font-size=\"12\">{n}</text>",
            y + 14,
            esc(cat),
            y + 2,
            206.0 + w,
            y + 14
        );
    }
    out.push_str("</svg>");
}

fn access_table(out: &mut String, id: &str, title: &str, kind: &AccessKind) {
    let _ = write!(
        out,
        "<h3>{} ({})</h3><table id=\"{id}\"><tr><th>event</th><th>count</th></tr>",
        esc(title),
        kind.total
    );
    for (event, n) in &kind.by_event {
        num_row(out, event, *n);
    }
    out.push_str("</table>");
    if !kind.listed.is_empty() {
        out.push_str("<table><tr><th>seq</th><th>time</th><th>event</th><th>actor</th><th>from</th><th>context</th></tr>");
        for e in kind.listed.iter().take(50) {
            let ctx = e.context.to_string();
            let ctx: String = ctx.chars().take(160).collect();
            row(
                out,
                &[
                    &e.seq.to_string(),
                    &e.timestamp,
                    &e.event,
                    &e.actor,
                    e.ip.as_deref().unwrap_or("-"),
                    &ctx,
                ],
            );
        }
        out.push_str("</table>");
        if kind.total > 50 {
            let _ = write!(
                out,
                "<p class=\"muted\">{} more in access/summary.json and events/events.jsonl.</p>",
                kind.total - 50
            );
        }
    }
}

/// The report's HTML.
pub(crate) fn render(input: &ReportInput<'_>) -> String {
    let (p, s) = (input.period, input.stats);
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Audit evidence {} to {}</title><style>{STYLE}</style></head><body>",
        esc(&p.since),
        esc(&p.until)
    );
    let _ = write!(
        out,
        "<h1>Audit log evidence</h1><p class=\"muted\">Log <code>{}</code>, generated {}. Signed by <code>{}</code>.</p>",
        esc(input.origin),
        esc(&input.generated_at),
        esc(&input.key)
    );
    out.push_str("<h2>Period</h2><table id=\"period\">");
    row(&mut out, &["since (event time, inclusive)", &p.since]);
    row(&mut out, &["until (event time, exclusive)", &p.until]);
    row(
        &mut out,
        &[
            "rows (seq range)",
            &format!(
                "{} (seq {} to {})",
                p.rows,
                p.first_seq,
                p.end_seq.saturating_sub(1)
            ),
        ],
    );
    row(
        &mut out,
        &[
            "rows timestamped in the period",
            &p.rows_in_period.to_string(),
        ],
    );
    row(
        &mut out,
        &[
            "start tree (size, root)",
            &format!("{} {}", p.first_seq, input.start_root),
        ],
    );
    row(
        &mut out,
        &[
            "end tree (size, root)",
            &format!("{} {}", p.end_seq, input.end_root),
        ],
    );
    out.push_str("</table>");

    out.push_str("<h2>Verification</h2><p id=\"verification\" class=\"ok\">Verified when the pack was made: every check below passed.</p><table id=\"checks\"><tr><th>check</th><th>result</th></tr>");
    let checks = [
        "every row's chain hash recomputed from its record bytes, from the start checkpoint's head to the end checkpoint's head".to_string(),
        "both trees' roots recomputed from the log and signed".to_string(),
        format!("consistency proof from {} to {} records", p.first_seq, p.end_seq),
        format!("{} sampled inclusion proofs (seed {})", input.sample, input.seed),
        if input.witnessed {
            "the newest witnessed checkpoint is included".to_string()
        } else {
            "no witnessed checkpoint was given: the pack does not show the log was not forked (see docs/AUDITORS.md)".to_string()
        },
    ];
    for check in &checks {
        row(
            &mut out,
            &[
                check,
                if check.starts_with("no witnessed") {
                    "not available"
                } else {
                    "passed"
                },
            ],
        );
    }
    out.push_str("</table><p>Check it again yourself: see VERIFY.md (<code>chainlog check-evidence</code> or <code>python3 verify_pack.py</code>).</p>");

    out.push_str("<h2>Events per day</h2>");
    day_chart(&mut out, s);
    out.push_str("<h2>Events per category</h2>");
    category_chart(&mut out, s);
    out.push_str("<table id=\"categories\"><tr><th>category</th><th>events</th></tr>");
    for (cat, n) in &s.by_category {
        num_row(&mut out, cat, *n);
    }
    num_row(&mut out, "total", s.rows);
    out.push_str(
        "</table><h2>Top actors</h2><table id=\"actors\"><tr><th>actor</th><th>events</th></tr>",
    );
    for (actor, n) in s.top_actors(10) {
        num_row(&mut out, &actor, n);
    }
    let _ = write!(
        out,
        "</table><h2>Failures ({})</h2><table id=\"failures\"><tr><th>seq</th><th>time</th><th>event</th><th>actor</th><th>from</th></tr>",
        s.failures
    );
    for f in &s.failure_list {
        row(
            &mut out,
            &[
                &f.seq.to_string(),
                &f.timestamp,
                &f.event,
                &f.actor,
                f.ip.as_deref().unwrap_or("-"),
            ],
        );
    }
    out.push_str("</table>");
    if s.failures > s.failure_list.len() as u64 {
        let _ = write!(
            out,
            "<p class=\"muted\">{} more failures: every one is in events/events.csv (outcome = failure).</p>",
            s.failures - s.failure_list.len() as u64
        );
    }
    out.push_str("<h2>Access to the log</h2>");
    let a = &s.access;
    access_table(
        &mut out,
        "access-reads",
        "Reads: queries, exports, verifications",
        &a.reads,
    );
    access_table(
        &mut out,
        "access-failed",
        "Failed sign-ins",
        &a.failed_sign_ins,
    );
    access_table(&mut out, "access-refusals", "Refused requests", &a.refusals);
    access_table(
        &mut out,
        "access-keys",
        "API key creations, rotations, revocations",
        &a.key_changes,
    );
    access_table(
        &mut out,
        "access-engine",
        "The engine's records (retention, legal hold, recovery)",
        &a.engine,
    );

    out.push_str("<h2>Retention, legal hold, archive</h2><table id=\"retention\">");
    let st = input.state;
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let runs = st["retention"]["runs"]
        .as_array()
        .map_or(0, Vec::len)
        .to_string();
    let facts = [
        ("first retained seq", text(&st["log"]["first_retained_seq"])),
        (
            "oldest retained record received",
            text(&st["log"]["oldest_retained_received_at"]),
        ),
        ("days retained", text(&st["log"]["retained_days"])),
        (
            "12 months retained (PCI DSS 10.5.1)",
            text(&st["pci_dss_10_5_1"]["twelve_months_retained"]),
        ),
        (
            "3 months immediately available (PCI DSS 10.5.1)",
            text(&st["pci_dss_10_5_1"]["three_months_immediately_available"]),
        ),
        ("legal hold now", text(&st["legal_hold"]["now"])),
        ("retention runs recorded", runs),
    ];
    for (label, value) in facts.iter().chain(&archive_facts(&st["archive"])) {
        row(&mut out, &[label, value]);
    }
    out.push_str("</table><h2>Files and the controls they support</h2><table id=\"controls\"><tr><th>file</th><th>what it shows</th><th>controls</th></tr>");
    for (file, what, controls) in CONTROLS {
        row(&mut out, &[file, what, controls]);
    }
    out.push_str("</table></body></html>\n");
    out
}

/// The report's lines on the archive and Object Lock (see
/// `archive::PeriodArchive` for the members).
fn archive_facts(archive: &Value) -> Vec<(&'static str, String)> {
    if let Some(error) = archive["error"].as_str() {
        return vec![("archive", format!("could not be read: {error}"))];
    }
    let Some(target) = archive["target"].as_str() else {
        let note = archive["note"].as_str().unwrap_or("-");
        return vec![("archive, Object Lock", note.to_string())];
    };
    let segments = archive["segments"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let present = segments.iter().filter(|s| s["present"] == true).count();
    let problems = archive["problems"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let number = |v: &Value| v.as_u64().map_or("-".into(), |n| n.to_string());
    vec![
        ("archive", target.to_string()),
        ("archived through seq", number(&archive["archived_seqs"][1])),
        (
            "records of the period not archived yet",
            number(&archive["records_not_archived"]),
        ),
        (
            "archived segments of the period in the bucket",
            format!("{present} of {}", segments.len()),
        ),
        (
            "of them under Object Lock (as the bucket reports)",
            number(&archive["locked_segments"]),
        ),
        (
            "earliest retain-until (every segment locked)",
            archive["earliest_retain_until"]
                .as_str()
                .unwrap_or("-")
                .to_string(),
        ),
        (
            "archive problems",
            if problems.is_empty() {
                "none".into()
            } else {
                problems
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }
}
