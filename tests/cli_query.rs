//! `chainlog query` and `chainlog export`, run as a user would.
//!
//! Every expected answer is computed here, from the events the test
//! appended, with plain closures (not the library's `Filter`): seq ranges,
//! CIDR blocks and time bounds are re-implemented below. Exports are read
//! back by Python's `csv` and `json` modules and by `jq`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chainlog::format::frame::FRAME_HEADER_BYTES;
use chainlog::format::segment::HEADER_BYTES;
use chainlog::{Event, Log, Options, Timestamp};
use serde_json::{json, Map, Value};

const BIN: &str = env!("CARGO_BIN_EXE_chainlog");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cut = |s: &str| s.chars().take(3000).collect::<String>();
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code,
            cut(&self.stdout),
            cut(&self.stderr)
        )
    }
}

/// Runs `chainlog --dir DIR ARGS...`.
fn at(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_remove("CHAINLOG_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Runs it and insists on success.
fn ok(dir: &Path, args: &[&str]) -> Run {
    let r = at(dir, args);
    assert_eq!(r.code, 0, "chainlog {args:?}: {r:?}");
    r
}

/// One appended event, as the test knows it.
#[derive(Debug, Clone)]
struct Ev {
    seq: u64,
    nanos: i64,
    event: String,
    actor: String,
    node: Option<String>,
    resource: Option<String>,
    ip: Option<IpAddr>,
    failure: bool,
    context: Value,
}

impl Ev {
    /// RFC 3339 UTC, as the tool prints it.
    fn timestamp(&self) -> String {
        Timestamp::from_unix_nanos(self.nanos).to_string()
    }

    /// The `append` input line.
    fn input(&self) -> Value {
        let mut v = json!({
            "timestamp": self.timestamp(),
            "event": self.event,
            "actor": self.actor,
            "outcome": if self.failure { "failure" } else { "success" },
            "context": self.context,
        });
        let o = v.as_object_mut().unwrap();
        if let Some(n) = &self.node {
            o.insert("node".into(), n.clone().into());
        }
        if let Some(r) = &self.resource {
            o.insert("resource".into(), r.clone().into());
        }
        if let Some(ip) = &self.ip {
            o.insert("ip".into(), ip.to_string().into());
        }
        v
    }

    fn to_event(&self) -> Event {
        serde_json::from_value(self.input()).unwrap()
    }
}

const T0: i64 = 1_773_043_200_000_000_000; // 2026-03-09T08:00:00Z
const MINUTE: i64 = 60_000_000_000;

const ACTORS: [&str; 5] = [
    "alice@acme.io",
    "bob@acme.io",
    "carol@acme.io",
    "deploy-bot",
    "system",
];
const EVENTS: [&str; 8] = [
    "pcap.download",
    "pcap.delete",
    "pcapture.started",
    "auth.login",
    "auth.login_failed",
    "node.added",
    "incident.opened",
    "config.changed",
];
const NODES: [Option<&str>; 5] = [
    None,
    Some("nyc-edge-01"),
    Some("nyc-edge-02"),
    Some("fra-core-02"),
    Some("ams-edge-07"),
];
const RESOURCES: [Option<&str>; 4] = [None, Some("a3f7c2b1"), Some("INC-4821"), Some("MW-2291")];
const NOTES: [&str; 6] = [
    "a, b, c",
    "she said \"hi\"",
    "line1\nline2\r\nline3",
    "unicode: héllo — 日本語 🚀",
    "=SUM(A1:A2)",
    "tab\there",
];

/// A deterministic mix: fields vary independently (different moduli), and
/// times are not in append order; some carry a fraction of a second.
fn gen(seq: u64, salt: u64) -> Ev {
    // splitmix64, so that the fields do not move in step.
    let mut h = (seq ^ (salt << 32)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^= h >> 31;
    let pick = |n: u64, shift: u32| ((h >> shift) % n) as usize;
    let ip: Option<IpAddr> = match pick(8, 3) {
        0 => None,
        1 => Some(format!("203.0.113.{}", h % 250).parse().unwrap()),
        2 => Some(format!("198.51.100.{}", h % 250).parse().unwrap()),
        3 => Some(format!("10.20.{}.{}", h % 3, h % 200).parse().unwrap()),
        4 => Some(format!("2001:db8::{:x}", h % 4000).parse().unwrap()),
        5 => Some(format!("2001:db8:1::{:x}", h % 4000).parse().unwrap()),
        6 => Some(format!("2001:db9::{:x}", h % 4000).parse().unwrap()),
        _ => Some(format!("fe80::{:x}", h % 4000).parse().unwrap()),
    };
    let minute = ((seq * 7919 + salt) % 600) as i64;
    let fraction = if seq % 10 == 3 {
        500_000_000 + seq as i64
    } else {
        0
    };
    Ev {
        seq,
        nanos: T0 + minute * MINUTE + fraction,
        event: EVENTS[pick(8, 11)].to_string(),
        actor: ACTORS[pick(5, 17)].to_string(),
        node: NODES[pick(5, 23)].map(String::from),
        resource: RESOURCES[pick(4, 29)].map(String::from),
        ip,
        failure: pick(4, 13) == 0,
        context: json!({
            "i": seq,
            "note": NOTES[seq as usize % NOTES.len()],
            "bytes": seq * 1000,
            "sha256": format!("{h:016x}").repeat(4),
            "detail": "x".repeat(200 + (h % 200) as usize),
        }),
    }
}

fn jsonl(evs: &[Ev]) -> String {
    evs.iter().map(|e| e.input().to_string() + "\n").collect()
}

/// A log of `evs` (seq 0..) in `dir`, in 128 KiB segments.
fn build(tmp: &Path, evs: &[Ev]) -> PathBuf {
    let dir = tmp.join("log");
    ok(&dir, &["init", "--segment-bytes", "128KiB"]);
    let input = tmp.join("input.jsonl");
    std::fs::write(&input, jsonl(evs)).unwrap();
    ok(
        &dir,
        &[
            "append",
            "--durability",
            "none",
            "--appender",
            APPENDER,
            input.to_str().unwrap(),
        ],
    );
    dir
}

/// The appender `build` appends as.
const APPENDER: &str = "cli-test";

fn seqs_of_jsonl(stdout: &str) -> Vec<u64> {
    stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["seq"].as_u64().unwrap()
        })
        .collect()
}

/// The rows of a table (cells split on runs of two or more spaces), and its
/// count line.
fn parse_table(stdout: &str) -> (Vec<Vec<String>>, String) {
    let lines: Vec<&str> = stdout.lines().collect();
    let (count, body) = lines.split_last().unwrap();
    let split = |l: &str| -> Vec<String> {
        l.trim()
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect()
    };
    let rows = if body.is_empty() {
        Vec::new()
    } else {
        assert_eq!(
            split(body[0]),
            [
                "Seq",
                "Timestamp (UTC)",
                "Event",
                "Actor",
                "Node / Resource",
                "IP",
                "Outcome"
            ],
            "{stdout}"
        );
        assert!(body[1].trim().starts_with("---"), "{stdout}");
        body[2..].iter().map(|l| split(l)).collect()
    };
    (rows, count.trim().to_string())
}

fn table_seqs(stdout: &str) -> (Vec<u64>, String) {
    let (rows, count) = parse_table(stdout);
    (rows.iter().map(|r| r[0].parse().unwrap()).collect(), count)
}

/// `addr/len` containment, written out for the test.
fn in_net(ip: &IpAddr, net: &str) -> bool {
    let (addr, len) = net.split_once('/').unwrap();
    let len: u32 = len.parse().unwrap();
    match (addr.parse::<IpAddr>().unwrap(), ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(*a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(n) & mask == u128::from(*a) & mask
        }
        _ => false,
    }
}

/// Paging flags, and the seqs they keep, in order.
#[derive(Clone, Copy, Default, Debug)]
struct Paging {
    reverse: bool,
    from_seq: Option<u64>,
    after: Option<u64>,
    limit: Option<usize>,
}

impl Paging {
    fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if self.reverse {
            a.push("--reverse".to_string());
        }
        if let Some(f) = self.from_seq {
            a.extend(["--from-seq".to_string(), f.to_string()]);
        }
        if let Some(x) = self.after {
            a.extend(["--after".to_string(), x.to_string()]);
        }
        if let Some(l) = self.limit {
            a.extend(["--limit".to_string(), l.to_string()]);
        }
        a
    }

    /// All matching seqs in this paging's range and order, before the limit.
    fn unlimited(&self, evs: &[Ev], wanted: &dyn Fn(&Ev) -> bool) -> Vec<u64> {
        let mut seqs: Vec<u64> = evs
            .iter()
            .filter(|e| wanted(e))
            .map(|e| e.seq)
            .filter(|&s| {
                if self.reverse {
                    self.from_seq.is_none_or(|f| s <= f) && self.after.is_none_or(|a| s < a)
                } else {
                    self.from_seq.is_none_or(|f| s >= f) && self.after.is_none_or(|a| s > a)
                }
            })
            .collect();
        if self.reverse {
            seqs.reverse();
        }
        seqs
    }
}

type Wanted = Box<dyn Fn(&Ev) -> bool>;

/// Checks one filter under several pagings, in jsonl (with the stderr
/// cursor hint) and, for two of them, as a table.
fn check(dir: &Path, evs: &[Ev], filter: &[&str], wanted: &dyn Fn(&Ev) -> bool) {
    let all = Paging::default().unlimited(evs, wanted);
    assert!(!all.is_empty(), "{filter:?} matches nothing: a weak case");
    assert!(all.len() < evs.len(), "{filter:?} matches everything");
    let pagings = [
        Paging::default(),
        Paging {
            reverse: true,
            ..Paging::default()
        },
        Paging {
            limit: Some(7),
            ..Paging::default()
        },
        Paging {
            reverse: true,
            from_seq: Some(300),
            limit: Some(5),
            ..Paging::default()
        },
        Paging {
            after: Some(100),
            limit: Some(9),
            ..Paging::default()
        },
        Paging {
            reverse: true,
            after: Some(400),
            ..Paging::default()
        },
    ];
    for (i, p) in pagings.iter().enumerate() {
        let full = p.unlimited(evs, wanted);
        let expected: Vec<u64> = full
            .iter()
            .copied()
            .take(p.limit.unwrap_or(usize::MAX))
            .collect();
        let cut = expected.len() < full.len();
        let mut args: Vec<String> = vec!["query".into(), "--format".into(), "jsonl".into()];
        args.extend(filter.iter().map(|s| s.to_string()));
        args.extend(p.args());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = ok(dir, &args);
        assert_eq!(seqs_of_jsonl(&r.stdout), expected, "{args:?}");
        let hint = expected.last().map(|s| format!("more: --after {s}\n"));
        if cut {
            assert_eq!(Some(r.stderr.clone()), hint, "{args:?}");
        } else {
            assert_eq!(r.stderr, "", "{args:?}");
        }
        if i == 1 || i == 2 {
            let mut args = args.clone();
            args.drain(1..3);
            let r = ok(dir, &args);
            let (seqs, count) = table_seqs(&r.stdout);
            // The table shows 100 rows when --limit is absent.
            let limit = p.limit.unwrap_or(100);
            let expected: Vec<u64> = full.iter().copied().take(limit).collect();
            let cut = expected.len() < full.len();
            assert_eq!(seqs, expected, "{args:?}");
            let noun = if expected.len() == 1 {
                "event"
            } else {
                "events"
            };
            let want = match (cut, expected.last()) {
                (true, Some(last)) => {
                    format!(
                        "{} {noun} (limit reached); more: --after {last}",
                        expected.len()
                    )
                }
                _ => format!("{} {noun}", expected.len()),
            };
            assert_eq!(count, want, "{args:?}");
        }
    }
}

#[test]
fn every_filter_flag_alone_and_combined_matches_an_independent_scan() {
    let tmp = tempfile::tempdir().unwrap();
    let evs: Vec<Ev> = (0..600).map(|i| gen(i, 0)).collect();
    let dir = build(tmp.path(), &evs);
    let segments = segment_count(&dir);
    assert!(
        segments >= 2,
        "the test wants several segments, got {segments}"
    );

    // Time bounds that are some events' exact timestamps.
    let mut times: Vec<i64> = evs.iter().map(|e| e.nanos).collect();
    times.sort_unstable();
    let (t1, t2) = (times[150], times[450]);
    let ts = |n: i64| Timestamp::from_unix_nanos(n).to_string();
    let (s1, s2, s1_plus) = (ts(t1), ts(t2), ts(t1 + 1));
    assert!(evs.iter().filter(|e| e.nanos == t1).count() >= 1);
    assert!(evs.iter().filter(|e| e.nanos == t2).count() >= 1);

    let one_ip = evs
        .iter()
        .find_map(|e| e.ip.filter(IpAddr::is_ipv4))
        .unwrap();
    let one_ip_text = one_ip.to_string();
    let cases: Vec<(Vec<&str>, Wanted)> = vec![
        (
            vec!["--actor", "alice@acme.io"],
            Box::new(|e| e.actor == "alice@acme.io"),
        ),
        (
            vec!["--actor", "alice@acme.io", "--actor", "system"],
            Box::new(|e| e.actor == "alice@acme.io" || e.actor == "system"),
        ),
        (
            vec!["--event", "pcap.download"],
            Box::new(|e| e.event == "pcap.download"),
        ),
        // `pcap.*` is the pcap category, not `pcapture.started`.
        (
            vec!["--event", "pcap.*"],
            Box::new(|e| e.event.starts_with("pcap.")),
        ),
        (
            vec!["--event", "auth.*", "--event", "node.added"],
            Box::new(|e| e.event.starts_with("auth.") || e.event == "node.added"),
        ),
        (
            vec!["--node", "nyc-edge-01", "--node", "fra-core-02"],
            Box::new(|e| matches!(e.node.as_deref(), Some("nyc-edge-01" | "fra-core-02"))),
        ),
        (
            vec!["--resource", "INC-4821"],
            Box::new(|e| e.resource.as_deref() == Some("INC-4821")),
        ),
        (
            vec!["--ip", "203.0.113.0/24"],
            Box::new(|e| e.ip.is_some_and(|ip| in_net(&ip, "203.0.113.0/24"))),
        ),
        (
            vec!["--ip", "2001:db8::/32"],
            Box::new(|e| e.ip.is_some_and(|ip| in_net(&ip, "2001:db8::/32"))),
        ),
        (
            vec!["--ip", "10.0.0.0/8", "--ip", "2001:db8:1::/48"],
            Box::new(|e| {
                e.ip.is_some_and(|ip| in_net(&ip, "10.0.0.0/8") || in_net(&ip, "2001:db8:1::/48"))
            }),
        ),
        (
            vec!["--ip", "::/0"],
            Box::new(|e| e.ip.is_some_and(|ip| ip.is_ipv6())),
        ),
        // A bare address is that address alone.
        (
            vec!["--ip", &one_ip_text],
            Box::new(move |e| e.ip == Some(one_ip)),
        ),
        (vec!["--outcome", "failure"], Box::new(|e| e.failure)),
        (
            vec!["--since", &s1, "--until", &s2],
            Box::new(move |e| e.nanos >= t1 && e.nanos < t2),
        ),
        (vec!["--since", &s1_plus], Box::new(move |e| e.nanos > t1)),
        (vec!["--until", &s1], Box::new(move |e| e.nanos < t1)),
        // An offset is the same instant: 10:00+02:00 is 08:00Z.
        (
            vec!["--since", "2026-03-09T14:00:00+02:00"],
            Box::new(|e| e.nanos >= T0 + 240 * MINUTE),
        ),
        (
            vec![
                "--actor",
                "bob@acme.io",
                "--event",
                "pcap.*",
                "--outcome",
                "success",
            ],
            Box::new(|e| e.actor == "bob@acme.io" && e.event.starts_with("pcap.") && !e.failure),
        ),
        (
            vec![
                "--node",
                "nyc-edge-01",
                "--node",
                "nyc-edge-02",
                "--ip",
                "2001:db8::/32",
                "--ip",
                "198.51.100.0/24",
                "--since",
                &s1,
            ],
            Box::new(move |e| {
                matches!(e.node.as_deref(), Some("nyc-edge-01" | "nyc-edge-02"))
                    && e.ip.is_some_and(|ip| {
                        in_net(&ip, "2001:db8::/32") || in_net(&ip, "198.51.100.0/24")
                    })
                    && e.nanos >= t1
            }),
        ),
        (
            vec![
                "--event",
                "auth.*",
                "--actor",
                "carol@acme.io",
                "--actor",
                "deploy-bot",
                "--outcome",
                "failure",
                "--outcome",
                "success",
                "--until",
                &s2,
            ],
            Box::new(move |e| {
                e.event.starts_with("auth.")
                    && (e.actor == "carol@acme.io" || e.actor == "deploy-bot")
                    && e.nanos < t2
            }),
        ),
        (
            vec![
                "--resource",
                "a3f7c2b1",
                "--resource",
                "MW-2291",
                "--node",
                "ams-edge-07",
            ],
            Box::new(|e| {
                matches!(e.resource.as_deref(), Some("a3f7c2b1" | "MW-2291"))
                    && e.node.as_deref() == Some("ams-edge-07")
            }),
        ),
    ];
    for (filter, wanted) in &cases {
        check(&dir, &evs, filter, wanted.as_ref());
    }

    // The boundaries themselves: since is inclusive, until exclusive.
    let at_t1: BTreeSet<u64> = evs
        .iter()
        .filter(|e| e.nanos == t1)
        .map(|e| e.seq)
        .collect();
    let at_t2: BTreeSet<u64> = evs
        .iter()
        .filter(|e| e.nanos == t2)
        .map(|e| e.seq)
        .collect();
    let got: BTreeSet<u64> = seqs_of_jsonl(
        &ok(
            &dir,
            &["query", "--format", "jsonl", "--since", &s1, "--until", &s2],
        )
        .stdout,
    )
    .into_iter()
    .collect();
    assert!(at_t1.is_subset(&got), "since must include {at_t1:?}");
    assert!(at_t2.is_disjoint(&got), "until must exclude {at_t2:?}");
    let got = seqs_of_jsonl(&ok(&dir, &["query", "--format", "jsonl", "--since", &s1_plus]).stdout);
    assert!(got.iter().all(|s| !at_t1.contains(s)));

    // --from-seq and --after alone, and the table's default page of 100.
    check(&dir, &evs, &["--event", "incident.opened"], &|e| {
        e.event == "incident.opened"
    });
    let r = ok(&dir, &["query", "--format", "jsonl", "--from-seq", "590"]);
    assert_eq!(seqs_of_jsonl(&r.stdout), (590..600).collect::<Vec<_>>());
    let r = ok(&dir, &["query", "--format", "jsonl", "--after", "590"]);
    assert_eq!(seqs_of_jsonl(&r.stdout), (591..600).collect::<Vec<_>>());
    let r = ok(&dir, &["query"]);
    let (seqs, count) = table_seqs(&r.stdout);
    assert_eq!(seqs, (0..100).collect::<Vec<_>>());
    assert_eq!(count, "100 events (limit reached); more: --after 99");
    let r = ok(&dir, &["query", "--reverse"]);
    let (seqs, count) = table_seqs(&r.stdout);
    assert_eq!(seqs, (500..600).rev().collect::<Vec<_>>());
    assert_eq!(count, "100 events (limit reached); more: --after 500");
    let r = ok(&dir, &["query", "--actor", "nobody"]);
    assert_eq!(r.stdout, "  0 events\n");
}

#[test]
fn table_rows_show_the_stored_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let evs: Vec<Ev> = (0..40).map(|i| gen(i, 5)).collect();
    let dir = build(tmp.path(), &evs);
    let r = ok(&dir, &["query", "--limit", "40"]);
    let (rows, count) = parse_table(&r.stdout);
    assert_eq!(count, "40 events");
    assert_eq!(rows.len(), 40);
    for (row, e) in rows.iter().zip(&evs) {
        let target = match (&e.node, &e.resource) {
            (Some(n), Some(r)) => format!("{n} / {r}"),
            (Some(n), None) => n.clone(),
            (None, Some(r)) => r.clone(),
            (None, None) => "-".into(),
        };
        let want = [
            e.seq.to_string(),
            e.timestamp(),
            e.event.clone(),
            e.actor.clone(),
            target,
            e.ip.map_or("-".into(), |ip| ip.to_string()),
            if e.failure { "failure" } else { "success" }.to_string(),
        ];
        assert_eq!(row, &want);
    }
    // --output writes the same table to a file, truncating it.
    let file = tmp.path().join("table.txt");
    std::fs::write(&file, "x".repeat(100_000)).unwrap();
    let r2 = ok(
        &dir,
        &["query", "--limit", "40", "--output", file.to_str().unwrap()],
    );
    assert_eq!(r2.stdout, "");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), r.stdout);
}

#[test]
fn relative_times_count_back_from_now() {
    let tmp = tempfile::tempdir().unwrap();
    let now = Timestamp::now().unix_nanos();
    // Minutes before now; each at least a minute from any bound asked below.
    let offsets: [i64; 14] = [
        -10, 1, 5, 14, 16, 30, 59, 61, 120, 1380, 1500, 8640, 11520, 21600,
    ];
    let evs: Vec<Ev> = offsets
        .iter()
        .enumerate()
        .map(|(i, off)| Ev {
            nanos: now - off * MINUTE,
            ..gen(i as u64, 9)
        })
        .collect();
    let dir = build(tmp.path(), &evs);
    // (flags, which offsets in minutes they keep)
    type Case = (&'static [&'static str], fn(i64) -> bool);
    let cases: [Case; 6] = [
        (&["--since", "15m"], |m| m < 15),
        (&["--since", "90s"], |m| m < 2),
        (&["--since", "24h", "--until", "1h"], |m| m > 60 && m < 1440),
        (&["--since", "7d"], |m| m < 7 * 1440),
        (&["--until", "7d"], |m| m > 7 * 1440),
        (&["--since", "2w", "--until", "1d"], |m| {
            m > 1440 && m < 14 * 1440
        }),
    ];
    for (flags, wanted) in cases {
        let expected: Vec<u64> = evs
            .iter()
            .zip(offsets)
            .filter(|(_, m)| wanted(*m))
            .map(|(e, _)| e.seq)
            .collect();
        assert!(
            !expected.is_empty() && expected.len() < evs.len(),
            "{flags:?}"
        );
        let mut args = vec!["query", "--format", "jsonl"];
        args.extend_from_slice(flags);
        assert_eq!(
            seqs_of_jsonl(&ok(&dir, &args).stdout),
            expected,
            "{flags:?}"
        );
    }
}

/// Pages of `filter` with `--limit page` (and `extra` flags), following the
/// cursor until the tool stops offering one. `between` runs after every page.
fn follow_pages(
    dir: &Path,
    filter: &[&str],
    extra: &[&str],
    page: usize,
    table: bool,
    mut between: impl FnMut(usize),
) -> Vec<u64> {
    let mut all = Vec::new();
    let mut after: Option<u64> = None;
    for n in 0.. {
        assert!(n < 1000, "paging does not end");
        let limit = page.to_string();
        let after_text = after.map(|a| a.to_string());
        let mut args = vec!["query", "--limit", &limit];
        if !table {
            args.extend(["--format", "jsonl"]);
        }
        args.extend_from_slice(filter);
        args.extend_from_slice(extra);
        if let Some(a) = &after_text {
            args.extend(["--after", a]);
        }
        let r = ok(dir, &args);
        let (seqs, hint) = if table {
            let (seqs, count) = table_seqs(&r.stdout);
            (
                seqs,
                count
                    .split_once("more: --after ")
                    .map(|(_, s)| s.to_string()),
            )
        } else {
            let hint = r
                .stderr
                .strip_prefix("more: --after ")
                .map(|s| s.trim().to_string());
            (seqs_of_jsonl(&r.stdout), hint)
        };
        assert!(seqs.len() <= page);
        all.extend(&seqs);
        match hint {
            Some(h) => {
                assert_eq!(seqs.len(), page, "a hint on a short page");
                assert_eq!(Some(h.parse::<u64>().unwrap()), seqs.last().copied());
                after = seqs.last().copied();
            }
            None => break,
        }
        between(n);
    }
    all
}

#[test]
fn cursor_paging_is_stable_while_another_process_appends() {
    let tmp = tempfile::tempdir().unwrap();
    let mut evs: Vec<Ev> = (0..300).map(|i| gen(i, 1)).collect();
    let dir = build(tmp.path(), &evs);
    // This process holds the writer lock and appends between pages; the
    // tool reads beside it.
    let log = Log::open(&dir, Options::default()).unwrap();
    let wanted = |e: &Ev| e.event.starts_with("auth.");
    let mut appended = Vec::new();
    let pages = follow_pages(&dir, &["--event", "auth.*"], &[], 10, false, |n| {
        if n < 8 {
            for _ in 0..3 {
                let seq = 300 + appended.len() as u64;
                let e = gen(seq, 1);
                assert_eq!(log.append(&e.to_event()).unwrap().seq, seq);
                appended.push(e);
            }
        }
    });
    evs.extend(appended);
    let expected = Paging::default().unlimited(&evs, &wanted);
    assert!(
        expected.iter().any(|&s| s >= 300),
        "nothing appended matched"
    );
    assert_eq!(
        pages, expected,
        "pages must concatenate to the whole answer"
    );

    // Newest first: pages walk back from where the first page started; the
    // records appended meanwhile are newer and stay out.
    let before: Vec<Ev> = evs.clone();
    let mut appended = 0u64;
    let pages = follow_pages(
        &dir,
        &["--event", "pcap.*"],
        &["--reverse"],
        25,
        false,
        |_| {
            if appended < 20 {
                let seq = before.len() as u64 + appended;
                log.append(&gen(seq, 1).to_event()).unwrap();
                appended += 1;
            }
        },
    );
    let expected = Paging {
        reverse: true,
        ..Paging::default()
    }
    .unlimited(&before, &|e| e.event.starts_with("pcap."));
    assert_eq!(pages, expected);

    // The table's hint is a cursor too.
    let all_now: Vec<Ev> = (0..before.len() as u64 + appended)
        .map(|i| gen(i, 1))
        .collect();
    let pages = follow_pages(&dir, &["--actor", "alice@acme.io"], &[], 17, true, |_| {});
    assert_eq!(
        pages,
        Paging::default().unlimited(&all_now, &|e| e.actor == "alice@acme.io")
    );
    log.close().unwrap();
}

#[test]
fn bad_values_exit_2_naming_the_flag_and_value() {
    let tmp = tempfile::tempdir().unwrap();
    let evs: Vec<Ev> = (0..10).map(|i| gen(i, 2)).collect();
    let dir = build(tmp.path(), &evs);
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--ip", "10.0.0.0/33"],
            &["--ip", "\"10.0.0.0/33\"", "CIDR"],
        ),
        (&["--ip", "10.0.0/8"], &["--ip", "\"10.0.0/8\""]),
        (&["--ip", "2001:db8::/129"], &["--ip", "\"2001:db8::/129\""]),
        (
            &["--since", "yesterday"],
            &["--since", "\"yesterday\"", "bad time"],
        ),
        (
            &["--until", "2026-13-01T00:00:00Z"],
            &["--until", "\"2026-13-01T00:00:00Z\""],
        ),
        (&["--since", "15x"], &["--since", "\"15x\""]),
        (
            &[
                "--since",
                "2026-03-09T10:00:00Z",
                "--until",
                "2026-03-09T09:00:00Z",
            ],
            &["--since", "--until", "not before", "2026-03-09T10:00:00Z"],
        ),
        (
            &[
                "--since",
                "2026-03-09T10:00:00Z",
                "--until",
                "2026-03-09T10:00:00Z",
            ],
            &["--since", "--until", "not before"],
        ),
        (
            &["--since", "1h", "--until", "2h"],
            &["--since", "\"1h\"", "--until", "\"2h\""],
        ),
        (
            &["--event", "Pcap.*"],
            &["--event", "\"Pcap.*\"", "event pattern"],
        ),
        (&["--event", "pcap"], &["--event", "\"pcap\""]),
        (&["--event", "a*b*"], &["--event", "\"a*b*\""]),
        (
            &["--outcome", "maybe"],
            &["--outcome", "\"maybe\"", "success or failure"],
        ),
        (&["--frobnicate"], &["--frobnicate"]),
        (&["--limit", "0"], &["--limit", "0"]),
        (&["--limit", "ten"], &["--limit", "ten"]),
        (&["--format", "xml"], &["--format", "xml"]),
    ];
    for (command, extra) in [("query", &[][..]), ("export", &["--format", "csv"][..])] {
        for (flags, needles) in cases {
            if command == "export" && flags[0] == "--format" {
                continue;
            }
            let out = tmp.path().join("must-not-exist.csv");
            let mut args = vec![command];
            args.extend_from_slice(extra);
            args.extend_from_slice(flags);
            args.extend(["--output", out.to_str().unwrap()]);
            let r = at(&dir, &args);
            assert_eq!(r.code, 2, "{args:?}: {r:?}");
            assert_eq!(r.stdout, "", "{args:?}");
            for n in *needles {
                assert!(r.stderr.contains(n), "{args:?}: {n:?} not in {r:?}");
            }
            assert!(!out.exists(), "{args:?} created its output");
        }
    }
    // export needs a format; a missing log is an error too.
    let r = at(&dir, &["export"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--format"), "{r:?}");
    let r = at(&tmp.path().join("nope"), &["query"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("no log found"), "{r:?}");
}

/// Reads an export with Python's standard library and prints it as a JSON
/// array of rows (the CSV context cell parsed as JSON), or fails.
const PY_READ: &str = r#"
import csv, json, sys
fmt, path = sys.argv[1], sys.argv[2]
if fmt == "csv":
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, strict=True)
        assert reader.fieldnames == ["seq", "timestamp", "event", "actor", "node", "resource", "ip", "outcome", "context", "hash", "received_at", "origin", "appender"], reader.fieldnames
        rows = []
        for r in reader:
            r["seq"] = int(r["seq"])
            r["context"] = json.loads(r["context"])
            for k in ("node", "resource", "ip", "received_at", "origin", "appender"):
                r[k] = r[k] or None
            rows.append(r)
elif fmt == "json":
    with open(path, encoding="utf-8") as f:
        rows = json.load(f)
else:
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
json.dump(rows, sys.stdout, ensure_ascii=False)
"#;

fn python_rows(format: &str, path: &Path) -> Vec<Map<String, Value>> {
    let out = Command::new("python3")
        .args(["-c", PY_READ, format])
        .arg(path)
        .output()
        .expect("python3 must be installed to check exports");
    assert!(
        out.status.success(),
        "python3 could not read the {format} export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout)
        .unwrap()
        .into_iter()
        .map(|v| match v {
            Value::Object(o) => o,
            other => panic!("not a row: {other}"),
        })
        .collect()
}

/// (seq -> hash) from `cat`.
fn cat_hashes(dir: &Path) -> BTreeMap<u64, String> {
    ok(dir, &["cat"])
        .stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["seq"].as_u64().unwrap(),
                v["hash"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Events with hostile text: CSV specials, formula starters, unicode.
fn tricky_events() -> Vec<Ev> {
    let actors = [
        "alice@acme.io",
        "=HYPERLINK(\"http://evil.example\",\"x\")",
        "+1-555-0100",
        "-cmd",
        "@SUM(1,2)",
        "o'brien, \"the admin\"",
        "zoë — 日本",
        // What a spreadsheet may still run: behind spaces, full-width; and a
        // real leading `'`, which the guard doubles.
        "  =1+1",
        "\u{3000}@x",
        "＝1+1",
        "'=not a formula",
    ];
    let contexts = [
        json!({}),
        json!({"note": "a, b", "q": "she said \"hi\""}),
        json!({"multi": "line1\nline2\r\nline3", "cr": "\r"}),
        json!({"unicode": "héllo — 日本語 🚀", "nested": {"list": [1, "x,y", null, true]}}),
        json!({"formula": "=1+1", "big": 18_446_744_073_709_551_615u64, "neg": -5}),
        json!({"tab": "\tlead", "quote": "\"", "comma": ","}),
    ];
    (0..42)
        .map(|i| {
            let mut e = gen(i, 3);
            e.actor = actors[i as usize % actors.len()].to_string();
            e.context = contexts[i as usize % contexts.len()].clone();
            if i % 5 == 0 {
                e.node = Some("=node".into());
                e.resource = Some("-rsrc".into());
            }
            e
        })
        .collect()
}

fn assert_rows_equal(
    rows: &[Map<String, Value>],
    evs: &[Ev],
    hashes: &BTreeMap<u64, String>,
    guarded: bool,
    what: &str,
) {
    assert_eq!(rows.len(), evs.len(), "{what}");
    // The guard's rule (docs/CLI.md, export), for the characters these
    // events hold: tab or CR first, or a formula starter (ASCII or
    // full-width) after whitespace and zero-width characters; and a real
    // leading `'` doubled.
    let guard = |s: &str| -> String {
        let after_blanks = s.trim_start_matches(|c: char| {
            c.is_whitespace() || ('\u{200b}'..='\u{200f}').contains(&c)
        });
        let formula = s.starts_with(['\t', '\r'])
            || after_blanks.starts_with(['=', '+', '-', '@', '＝', '＋', '－', '＠']);
        if guarded && (formula || s.starts_with('\'')) {
            format!("'{s}")
        } else {
            s.to_string()
        }
    };
    for (row, e) in rows.iter().zip(evs) {
        let keys: Vec<&str> = row.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
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
                "appender"
            ],
            "{what}"
        );
        // Provenance: a time of receipt, by a client, as `build` appended.
        let received = row["received_at"].as_str().unwrap_or_default();
        assert!(
            Timestamp::parse_rfc3339(received).is_ok(),
            "{what} seq {}: {received:?}",
            e.seq
        );
        assert_eq!(row["origin"], json!("client"), "{what} seq {}", e.seq);
        assert_eq!(row["appender"], json!(APPENDER), "{what} seq {}", e.seq);
        let opt = |v: &Option<String>| {
            v.as_deref()
                .map_or(Value::Null, |s| Value::String(guard(s)))
        };
        assert_eq!(row["seq"], json!(e.seq), "{what}");
        assert_eq!(
            row["timestamp"],
            json!(e.timestamp()),
            "{what} seq {}",
            e.seq
        );
        assert_eq!(row["event"], json!(e.event), "{what} seq {}", e.seq);
        assert_eq!(row["actor"], json!(guard(&e.actor)), "{what} seq {}", e.seq);
        assert_eq!(row["node"], opt(&e.node), "{what} seq {}", e.seq);
        assert_eq!(row["resource"], opt(&e.resource), "{what} seq {}", e.seq);
        assert_eq!(
            row["ip"],
            e.ip.map_or(Value::Null, |ip| json!(ip.to_string())),
            "{what} seq {}",
            e.seq
        );
        assert_eq!(
            row["outcome"],
            json!(if e.failure { "failure" } else { "success" }),
            "{what}"
        );
        assert_eq!(row["context"], e.context, "{what} seq {}", e.seq);
        assert_eq!(
            row["hash"],
            json!(hashes[&e.seq]),
            "{what} seq {}: hash differs from cat",
            e.seq
        );
    }
}

#[test]
fn exports_read_back_exactly_with_python_and_jq() {
    let tmp = tempfile::tempdir().unwrap();
    let evs = tricky_events();
    let dir = build(tmp.path(), &evs);
    let hashes = cat_hashes(&dir);
    assert_eq!(hashes.len(), evs.len());
    let path = |name: &str| tmp.path().join(name);
    let export = |format: &str, name: &str, extra: &[&str]| {
        let file = path(name);
        let mut args = vec![
            "export",
            "--format",
            format,
            "--output",
            file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let r = ok(&dir, &args);
        assert_eq!(r.stdout, "");
        assert_eq!(
            r.stderr,
            format!("exported {} records to {}\n", evs.len(), file.display())
        );
        file
    };
    let raw_csv = export("csv", "raw.csv", &["--no-formula-guard"]);
    assert_rows_equal(&python_rows("csv", &raw_csv), &evs, &hashes, false, "csv");
    let guarded_csv = export("csv", "guarded.csv", &[]);
    let guarded = python_rows("csv", &guarded_csv);
    assert_rows_equal(&guarded, &evs, &hashes, true, "guarded csv");
    // The guard really fired on the `=` cell, and only changed such cells.
    let row1 = &guarded[1];
    assert_eq!(
        row1["actor"],
        json!("'=HYPERLINK(\"http://evil.example\",\"x\")")
    );
    assert_eq!(guarded[0]["node"], json!("'=node"));
    assert_eq!(guarded[0]["resource"], json!("'-rsrc"));
    let raw_text = std::fs::read_to_string(&raw_csv).unwrap();
    let guarded_text = std::fs::read_to_string(&guarded_csv).unwrap();
    assert_ne!(raw_text, guarded_text);
    assert!(raw_text.contains(",\"=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\")\","));
    assert!(
        raw_text.starts_with("seq,timestamp,event,actor,node,resource,ip,outcome,context,hash,received_at,origin,appender\r\n")
    );
    let json_file = export("json", "all.json", &[]);
    assert_rows_equal(
        &python_rows("json", &json_file),
        &evs,
        &hashes,
        false,
        "json",
    );
    let jsonl_file = export("jsonl", "all.jsonl", &[]);
    assert_rows_equal(
        &python_rows("jsonl", &jsonl_file),
        &evs,
        &hashes,
        false,
        "jsonl",
    );

    // jq, when it is there (scripts/test.sh installs it).
    match Command::new("jq").arg("--version").output() {
        Ok(o) if o.status.success() => {
            let jq = |filter: &str, file: &Path| {
                let o = Command::new("jq")
                    .args(["-c", filter])
                    .arg(file)
                    .output()
                    .unwrap();
                assert!(
                    o.status.success(),
                    "jq {filter}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                String::from_utf8(o.stdout).unwrap()
            };
            let seqs: String = evs.iter().map(|e| format!("{}\n", e.seq)).collect();
            assert_eq!(jq(".[] | .seq", &json_file), seqs);
            let hash_lines: String = hashes.values().map(|h| format!("\"{h}\"\n")).collect();
            assert_eq!(jq(".hash", &jsonl_file), hash_lines);
            let actors: String = evs
                .iter()
                .map(|e| serde_json::to_string(&e.actor).unwrap() + "\n")
                .collect();
            assert_eq!(jq(".[] | .actor", &json_file), actors);
        }
        _ => eprintln!("note: jq is not installed; skipping the jq checks"),
    }
}

#[test]
fn query_formats_print_exactly_what_export_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let evs = tricky_events();
    let dir = build(tmp.path(), &evs);
    let expected = evs.iter().filter(|e| e.seq % 4 != 0 && !e.failure).count();
    for format in ["csv", "json", "jsonl"] {
        let filter = ["--outcome", "success", "--from-seq", "1"];
        let mut q = vec!["query", "--format", format];
        q.extend_from_slice(&filter);
        let query = ok(&dir, &q);
        let mut x = vec!["export", "--format", format];
        x.extend_from_slice(&filter);
        let export = ok(&dir, &x);
        assert_eq!(query.stdout, export.stdout, "{format}");
        assert_eq!(query.stderr, "");
        let n = evs.iter().filter(|e| e.seq >= 1 && !e.failure).count();
        assert_eq!(export.stderr, format!("exported {n} records\n"));
        // --quiet silences the summary; --stats adds the read statistics.
        x.push("--quiet");
        let quiet = ok(&dir, &x);
        assert_eq!(
            (quiet.stdout.as_str(), quiet.stderr.as_str()),
            (export.stdout.as_str(), "")
        );
        x.push("--stats");
        let stats = ok(&dir, &x);
        assert!(
            stats.stderr.starts_with("stats: ") && stats.stderr.contains("segments skipped"),
            "{stats:?}"
        );
        // --output truncates what was there and writes the same bytes.
        let file = tmp.path().join(format!("out.{format}"));
        std::fs::write(&file, "#".repeat(200_000)).unwrap();
        x.truncate(x.len() - 2);
        x.extend(["--output", file.to_str().unwrap()]);
        assert_eq!(ok(&dir, &x).stdout, "");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            export.stdout,
            "{format}"
        );
    }
    assert!(expected > 0);
    // An empty answer is still a well-formed document.
    let r = ok(&dir, &["export", "--format", "json", "--actor", "nobody"]);
    assert_eq!(r.stdout, "[]\n");
    assert_eq!(r.stderr, "exported 0 records\n");
    let r = ok(&dir, &["export", "--format", "csv", "--actor", "nobody"]);
    assert_eq!(
        r.stdout,
        "seq,timestamp,event,actor,node,resource,ip,outcome,context,hash,received_at,origin,appender\r\n"
    );
}

/// Runs `chainlog --dir DIR ARGS...` with the engine clock at `clock`
/// (the debug build's test hook).
fn at_clock(dir: &Path, clock: &str, args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_remove("CHAINLOG_DIR")
        .env("CHAINLOG_TEST_ENGINE_CLOCK", clock)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let r = Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    assert_eq!(r.code, 0, "chainlog {args:?}: {r:?}");
    r
}

#[test]
fn provenance_is_shown_and_filtered() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    ok(&dir, &["init", "--segment-bytes", "128KiB"]);
    // Three appends: two appenders, at three engine times; the events'
    // own timestamps say nothing about when they were received.
    let batches = [
        ("ingest-a", "2026-01-01T00:00:00.000000001Z", 0..150u64),
        ("ingest-b", "2026-02-01T00:00:00Z", 150..300),
        ("ingest-a", "2026-03-01T00:00:00Z", 300..450),
    ];
    for (appender, clock, seqs) in &batches {
        let evs: Vec<Ev> = seqs.clone().map(|i| gen(i, 9)).collect();
        let input = tmp.path().join("input.jsonl");
        std::fs::write(&input, jsonl(&evs)).unwrap();
        let args = ["append", "--appender", appender, input.to_str().unwrap()];
        at_clock(&dir, clock, &args);
    }
    let segments = segment_count(&dir);
    assert!(segments >= 3, "{segments} segments");
    let rows = |args: &[&str]| -> Vec<Value> {
        let mut all = vec!["export", "--format", "jsonl", "--quiet"];
        all.extend_from_slice(args);
        ok(&dir, &all)
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let seqs =
        |rows: &[Value]| -> Vec<u64> { rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect() };
    let all = rows(&[]);
    assert_eq!(all.len(), 450);
    for (row, i) in all.iter().zip(0..) {
        let (appender, clock, _) = &batches[i / 150];
        assert_eq!(row["appender"], json!(appender), "seq {i}");
        assert_eq!(row["origin"], json!("client"), "seq {i}");
        assert_eq!(row["received_at"], json!(clock), "seq {i}");
    }
    let range = |r: std::ops::Range<u64>| r.collect::<Vec<u64>>();
    assert_eq!(seqs(&rows(&["--appender", "ingest-b"])), range(150..300));
    let a = rows(&["--appender", "ingest-a"]);
    assert_eq!(seqs(&a), [range(0..150), range(300..450)].concat());
    assert_eq!(
        rows(&["--appender", "ingest-a", "--appender", "ingest-b"]).len(),
        450
    );
    assert!(
        rows(&["--appender", "ingest"]).is_empty(),
        "exact match only"
    );
    assert_eq!(rows(&["--origin", "client"]).len(), 450);
    assert!(rows(&["--origin", "engine"]).is_empty());
    // Time of receipt: since is inclusive (to the nanosecond), until exclusive.
    let since = rows(&["--received-since", "2026-01-01T00:00:00.000000001Z"]);
    assert_eq!(since.len(), 450);
    let since = rows(&["--received-since", "2026-01-01T00:00:00.000000002Z"]);
    assert_eq!(seqs(&since), range(150..450));
    let window = rows(&[
        "--received-since",
        "2026-01-15T00:00:00Z",
        "--received-until",
        "2026-03-01T00:00:00Z",
    ]);
    assert_eq!(seqs(&window), range(150..300));
    // Combined with an indexed filter and another provenance filter.
    let actor = all[310]["actor"].as_str().unwrap().to_string();
    let both = rows(&[
        "--actor",
        &actor,
        "--appender",
        "ingest-a",
        "--received-since",
        "2026-02-15T00:00:00Z",
    ]);
    let expected: Vec<u64> = all
        .iter()
        .filter(|r| r["actor"] == json!(actor) && r["seq"].as_u64().unwrap() >= 300)
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(seqs(&both), expected);
    // A late received-since skips sealed segments by their trailers.
    let r = ok(
        &dir,
        &[
            "export",
            "--format",
            "jsonl",
            "--quiet",
            "--stats",
            "--received-since",
            "2026-03-01T00:00:00Z",
        ],
    );
    assert_eq!(r.stdout.lines().count(), 150);
    assert!(!r.stderr.contains(" 0 segments skipped"), "{r:?}");
    // CSV carries the same columns; the table shows them on request.
    let csv = ok(
        &dir,
        &[
            "query",
            "--format",
            "csv",
            "--appender",
            "ingest-b",
            "--limit",
            "1",
        ],
    );
    let line = csv.stdout.split("\r\n").nth(1).unwrap();
    assert!(
        line.ends_with(",2026-02-01T00:00:00Z,client,ingest-b"),
        "{line}"
    );
    let table = ok(
        &dir,
        &["query", "--provenance", "--limit", "1", "--from-seq", "150"],
    );
    let lines: Vec<&str> = table.stdout.lines().collect();
    let header: Vec<&str> = lines[0]
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header[7..],
        ["Received (UTC)", "Origin", "Appender"],
        "{table:?}"
    );
    let cells: Vec<&str> = lines[2]
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(cells[0], "150", "{table:?}");
    assert_eq!(
        cells[cells.len() - 3..],
        ["2026-02-01T00:00:00Z", "client", "ingest-b"],
        "{table:?}"
    );
    let plain = ok(&dir, &["query", "--limit", "1"]);
    assert!(!plain.stdout.contains("Received"), "{plain:?}");
    // Bad values name the flag.
    for (args, needle) in [
        (vec!["query", "--origin", "legacy"], "--origin"),
        (
            vec!["query", "--received-since", "soon"],
            "--received-since",
        ),
        (
            vec!["export", "--format", "json", "--received-until", "x"],
            "--received-until",
        ),
        (
            vec![
                "query",
                "--received-since",
                "2026-02-01T00:00:00Z",
                "--received-until",
                "2026-01-01T00:00:00Z",
            ],
            "is not before --received-until",
        ),
    ] {
        let r = at(&dir, &args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.stderr.contains(needle), "{args:?}: {r:?}");
    }
}

#[test]
fn a_corrupt_record_met_by_a_query_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let evs: Vec<Ev> = (0..600).map(|i| gen(i, 4)).collect();
    let dir = build(tmp.path(), &evs);
    let first = dir.join(format!("{:020}.seg", 0));
    let mut bytes = std::fs::read(&first).unwrap();
    // A byte inside seq 0's record: its frame CRC no longer matches.
    bytes[HEADER_BYTES as usize + FRAME_HEADER_BYTES + 20] ^= 0x40;
    std::fs::write(&first, bytes).unwrap();
    for args in [
        &["query"][..],
        &["query", "--format", "jsonl"],
        &["export", "--format", "csv"],
        &[
            "export",
            "--format",
            "json",
            "--output",
            tmp.path().join("x.json").to_str().unwrap(),
        ],
    ] {
        let r = at(&dir, args);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains("corruption") || r.stderr.contains("checksum"),
            "{args:?}: {r:?}"
        );
        assert!(r.stderr.contains("chainlog verify"), "{r:?}");
    }
    // A query that never reads the damaged segment still answers.
    let r = ok(&dir, &["query", "--format", "jsonl", "--from-seq", "595"]);
    assert_eq!(seqs_of_jsonl(&r.stdout), (595..600).collect::<Vec<_>>());
}

// --- CloudTrail: real data -------------------------------------------------

#[path = "support/cloudtrail.rs"]
mod mapping;
use mapping::{cloudtrail_records, to_event};

#[test]
fn cloudtrail_queries_match_the_fixture() {
    let records = cloudtrail_records();
    assert_eq!(records.len(), 2900);
    let events: Vec<Event> = records.iter().map(to_event).collect();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    ok(&dir, &["init", "--segment-bytes", "1MiB"]);
    let input = tmp.path().join("cloudtrail.jsonl");
    let text: String = events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap() + "\n")
        .collect();
    std::fs::write(&input, text).unwrap();
    ok(
        &dir,
        &["append", "--durability", "none", input.to_str().unwrap()],
    );

    // Independent answers, straight from the fixture's JSON.
    let raw = |i: usize, k: &str| records[i][k].as_str().unwrap().to_string();
    let nanos = |i: usize| {
        Timestamp::parse_rfc3339(&raw(i, "eventTime"))
            .unwrap()
            .unix_nanos()
    };
    let mut by_actor: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_ip: BTreeMap<String, usize> = BTreeMap::new();
    for e in &events {
        *by_actor.entry(e.actor.clone()).or_default() += 1;
        if let Some(IpAddr::V4(ip)) = e.source_ip {
            *by_ip.entry(ip.to_string()).or_default() += 1;
        }
    }
    let actor = by_actor
        .iter()
        .filter(|(a, _)| a.starts_with("arn:"))
        .max_by_key(|(_, n)| **n)
        .unwrap()
        .0
        .clone();
    let ip = by_ip.iter().max_by_key(|(_, n)| **n).unwrap().0.clone();
    let octets: Vec<&str> = ip.split('.').collect();
    let cidr = format!("{}.{}.0.0/16", octets[0], octets[1]);
    let (since, until) = ("2023-07-10T12:00:00Z", "2023-07-10T12:15:00Z");
    let (t_since, t_until) = (
        Timestamp::parse_rfc3339(since).unwrap().unix_nanos(),
        Timestamp::parse_rfc3339(until).unwrap().unix_nanos(),
    );
    let arn = |i: usize| records[i]["userIdentity"]["arn"].as_str().map(String::from);
    let source_ip = |i: usize| raw(i, "sourceIPAddress");
    let in_16 = |i: usize| {
        source_ip(i)
            .parse::<IpAddr>()
            .is_ok_and(|a| in_net(&a, &cidr))
    };

    type Case<'a> = (Vec<String>, Box<dyn Fn(usize) -> bool + 'a>);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let cases: Vec<Case> = vec![
        (
            s(&["--actor", &actor]),
            Box::new(|i| arn(i).as_deref() == Some(actor.as_str())),
        ),
        (
            s(&["--event", "iam.*"]),
            Box::new(|i| raw(i, "eventSource") == "iam.amazonaws.com"),
        ),
        (
            s(&["--event", "s3.*", "--outcome", "failure"]),
            Box::new(|i| {
                raw(i, "eventSource") == "s3.amazonaws.com" && records[i].contains_key("errorCode")
            }),
        ),
        (
            s(&["--since", since, "--until", until]),
            Box::new(|i| nanos(i) >= t_since && nanos(i) < t_until),
        ),
        (s(&["--ip", &cidr]), Box::new(in_16)),
        (
            s(&["--actor", &actor, "--since", since, "--node", "us-east-1"]),
            Box::new(|i| {
                arn(i).as_deref() == Some(actor.as_str())
                    && nanos(i) >= t_since
                    && raw(i, "awsRegion") == "us-east-1"
            }),
        ),
    ];
    for (k, (flags, wanted)) in cases.iter().enumerate() {
        let expected: Vec<u64> = (0..records.len())
            .filter(|&i| wanted(i))
            .map(|i| i as u64)
            .collect();
        assert!(
            !expected.is_empty() && expected.len() < records.len(),
            "{flags:?}"
        );
        let table = k % 2 == 1;
        let mut args: Vec<&str> = if table {
            vec!["query", "--limit", "5000"]
        } else {
            vec!["query", "--format", "jsonl"]
        };
        args.extend(flags.iter().map(String::as_str));
        let r = ok(&dir, &args);
        let got = if table {
            let (seqs, count) = table_seqs(&r.stdout);
            assert_eq!(count, format!("{} events", expected.len()));
            seqs
        } else {
            seqs_of_jsonl(&r.stdout)
        };
        assert_eq!(got, expected, "{flags:?}");
    }
}

#[test]
fn the_demo_queries_and_exports_its_log() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("demo");
    let out = Command::new(BIN)
        .args(["demo", "--dir"])
        .arg(&ws)
        .env_remove("CHAINLOG_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = ws.join("export.csv");
    let json = ws.join("export.json");
    for expected in [
        "chainlog query --event 'auth.*' --outcome failure",
        "  2 events\n",
        "chainlog query --event pcap.download --actor alice@acme.io",
        "  1 event\n",
        &format!("{}: 16 rows", csv.display()),
        &format!("{}: 16 rows", json.display()),
        "     seq,timestamp,event,actor,node,resource,ip,outcome,context,hash,received_at,origin,appender\n     0,2026-03-09T08:00:00Z,node.added,deploy-bot,",
        "TAMPERING DETECTED",
    ] {
        assert!(stdout.contains(expected), "{expected:?} missing:\n{stdout}");
    }
    // The files are what `export` writes for the demo's log.
    let log = ws.join("log");
    assert_eq!(
        std::fs::read_to_string(&csv).unwrap(),
        ok(&log, &["export", "--format", "csv"]).stdout
    );
    assert_eq!(
        std::fs::read_to_string(&json).unwrap(),
        ok(&log, &["export", "--format", "json"]).stdout
    );
    let rows = python_rows("csv", &csv);
    assert_eq!(rows.len(), 16);
    let failed: Vec<u64> = rows
        .iter()
        .filter(|r| r["event"].as_str().unwrap().starts_with("auth.") && r["outcome"] == "failure")
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(failed, [4, 13]);
}

/// How many segment files `dir` holds.
fn segment_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count()
}

/// `--order time` pages by event time (ties by seq) with `--cursor`, the
/// filters applying, newest first with `--reverse`; the table says how to
/// go on; misuse is exit 2.
#[test]
fn order_time_pages_by_event_time_with_a_cursor() {
    let tmp = tempfile::tempdir().unwrap();
    let evs: Vec<Ev> = (0..400).map(|s| gen(s, 5)).collect();
    let dir = build(tmp.path(), &evs);
    for reverse in [false, true] {
        let mut expected: Vec<(i64, u64)> = evs
            .iter()
            .filter(|e| e.actor == ACTORS[1])
            .map(|e| (e.nanos, e.seq))
            .collect();
        expected.sort();
        if reverse {
            expected.reverse();
        }
        let (mut seen, mut cursor) = (Vec::new(), None::<String>);
        loop {
            let mut args = vec![
                "query", "--order", "time", "--format", "jsonl", "--limit", "7", "--actor",
                ACTORS[1],
            ];
            if reverse {
                args.push("--reverse");
            }
            if let Some(c) = &cursor {
                args.extend(["--cursor", c.as_str()]);
            }
            let r = ok(&dir, &args);
            seen.extend(seqs_of_jsonl(&r.stdout));
            match r.stderr.trim().strip_prefix("more: --order time --cursor ") {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let want: Vec<u64> = expected.iter().map(|&(_, seq)| seq).collect();
        assert_eq!(seen, want, "reverse {reverse}");
    }
    let table = ok(&dir, &["query", "--order", "time", "--limit", "5"]);
    assert!(
        table
            .stdout
            .contains("(limit reached); more: --order time --cursor "),
        "{table:?}"
    );
    for (args, said) in [
        (
            &["query", "--cursor", "1.2"][..],
            "--cursor goes with --order time",
        ),
        (
            &["query", "--order", "time", "--after", "3"][..],
            "not --from-seq or --after",
        ),
        (&["query", "--order", "time", "--stats"][..], "--stats"),
        (
            &["query", "--order", "time", "--cursor", "7"][..],
            "bad time-order cursor",
        ),
    ] {
        let r = at(&dir, args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.stderr.contains(said), "{args:?}: {r:?}");
    }
}
