//! Queries give exactly what a brute-force scan gives, whatever state the
//! index files are in, and read only what can match.

use std::path::Path;

use chainlog::query::{EventPattern, Filter, IpNet, Query};
use chainlog::{Durability, Event, Log, Options, Outcome, Record, Timestamp};
use proptest::prelude::*;

const ACTORS: [&str; 6] = [
    "alice@acme.io",
    "bob@acme.io",
    "deploy-bot",
    "system",
    "carol@acme.io",
    "rare@acme.io",
];
const EVENTS: [&str; 6] = [
    "pcap.download",
    "pcap.delete",
    "auth.login_failed",
    "auth.login",
    "node.added",
    "incident.opened",
];
const NODES: [&str; 3] = ["nyc-edge-01", "fra-core-02", "sfo-edge-03"];

fn event(i: u64, skew: u64) -> Event {
    // Mostly increasing time with out-of-order jitter, as in real logs.
    let jitter = (i * 7919 % 13) as i64 - 6;
    let ts = 1_700_000_000_000_000_000 + (i as i64 + jitter) * 60_000_000_000;
    let actor = if (i * 31 + skew) % 97 == 0 {
        ACTORS[5]
    } else {
        ACTORS[((i + skew) % 5) as usize]
    };
    let mut e = Event::new(
        Timestamp::from_unix_nanos(ts),
        EVENTS[((i * 3 + skew) % 6) as usize],
        actor,
    );
    e.node = (i % 4 != 0).then(|| NODES[(i % 3) as usize].to_string());
    e.resource = (i % 5 == 0).then(|| format!("res-{}", i % 11));
    e.source_ip = match i % 3 {
        0 => None,
        1 => Some(format!("198.51.100.{}", i % 200).parse().unwrap()),
        _ => Some(format!("2001:db8::{:x}", i % 300).parse().unwrap()),
    };
    e.outcome = if i % 4 == 1 {
        Outcome::Failure
    } else {
        Outcome::Success
    };
    e.context.insert("i".into(), i.into());
    e
}

fn options() -> Options {
    Options {
        segment_bytes: chainlog::format::segment::MIN_SEGMENT_BYTES,
        durability: Durability::None,
        index_block_bytes: 1024,
        ..Options::default()
    }
}

fn build(dir: &Path, n: u64, skew: u64) -> Log {
    let log = Log::create(dir, options()).unwrap();
    let events: Vec<Event> = (0..n).map(|i| event(i, skew)).collect();
    for chunk in events.chunks(97) {
        log.append_batch(chunk).unwrap();
    }
    log
}

fn brute_force(log: &Log, q: &Query) -> Vec<u64> {
    let all: Vec<Record> = log.iter_from(0).collect::<Result<_, _>>().unwrap();
    let mut seqs: Vec<u64> = all
        .iter()
        .filter(|r| {
            let mut bytes = Vec::new();
            chainlog::event::encode_record(&r.event, &mut bytes).unwrap();
            let view = chainlog::event::decode_record(1, &bytes).unwrap();
            q.filter.matches(&view)
        })
        .map(|r| r.seq)
        .filter(|&s| {
            if q.reverse {
                q.from_seq.is_none_or(|f| s <= f) && q.after.is_none_or(|a| s < a)
            } else {
                q.from_seq.is_none_or(|f| s >= f) && q.after.is_none_or(|a| s > a)
            }
        })
        .collect();
    if q.reverse {
        seqs.reverse();
    }
    if let Some(limit) = q.limit {
        seqs.truncate(limit as usize);
    }
    seqs
}

/// Runs `q` both ways (iterator of owned matches, and the in-place visitor)
/// and checks they agree.
fn run(log: &Log, q: &Query) -> Vec<u64> {
    let owned: Vec<u64> = log.query(q).unwrap().map(|m| m.unwrap().seq).collect();
    let mut visited = Vec::new();
    log.query(q)
        .unwrap()
        .try_for_each_view(|seq, hash, view| {
            assert!(q.filter.matches(view));
            assert_ne!(hash, chainlog::ChainHash::default());
            visited.push(seq);
            Ok::<(), chainlog::Error>(())
        })
        .unwrap();
    assert_eq!(owned, visited, "{q:?}");
    owned
}

fn ts_of_minute(m: i64) -> Timestamp {
    Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + m * 60_000_000_000)
}

fn filter_strategy() -> impl Strategy<Value = Query> {
    (
        proptest::collection::vec(0..ACTORS.len(), 0..3),
        proptest::collection::vec(0..EVENTS.len() + 2, 0..3),
        proptest::collection::vec(0..NODES.len(), 0..2),
        proptest::option::of(0..3u8),
        proptest::option::of(any::<bool>()),
        proptest::option::of((0i64..3000, 1i64..600)),
        (
            proptest::option::of(0u64..3000),
            proptest::option::of(0u64..3000),
        ),
        any::<bool>(),
        proptest::option::of(1u64..200),
        proptest::option::of(0..11u64),
    )
        .prop_map(
            |(actors, events, nodes, ip, outcome, time, (from, after), reverse, limit, res)| {
                Query {
                    filter: Filter {
                        actors: actors.into_iter().map(|i| ACTORS[i].to_string()).collect(),
                        event_types: events
                            .into_iter()
                            .map(|i| match i {
                                6 => EventPattern::Prefix("pcap.".into()),
                                7 => EventPattern::Prefix("auth.login".into()),
                                i => EventPattern::Exact(EVENTS[i].into()),
                            })
                            .collect(),
                        nodes: nodes.into_iter().map(|i| NODES[i].to_string()).collect(),
                        resources: res.map(|r| format!("res-{r}")).into_iter().collect(),
                        ips: match ip {
                            Some(0) => vec!["198.51.100.0/25".parse::<IpNet>().unwrap()],
                            Some(1) => vec![
                                "2001:db8::/120".parse().unwrap(),
                                "198.51.100.7".parse().unwrap(),
                            ],
                            Some(_) => vec!["0.0.0.0/0".parse().unwrap()],
                            None => vec![],
                        },
                        outcomes: outcome
                            .map(|f| {
                                if f {
                                    Outcome::Failure
                                } else {
                                    Outcome::Success
                                }
                            })
                            .into_iter()
                            .collect(),
                        since: time.map(|(s, _)| ts_of_minute(s)),
                        until: time.map(|(s, len)| ts_of_minute(s + len)),
                        // Provenance filters: tests/provenance.rs.
                        ..Filter::default()
                    },
                    from_seq: from,
                    after,
                    reverse,
                    limit,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn queries_match_a_brute_force_scan(q in filter_strategy()) {
        use std::sync::OnceLock;
        static LOG: OnceLock<(tempfile::TempDir, Log)> = OnceLock::new();
        let (_, log) = LOG.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let log = build(dir.path(), 3000, 1);
            (dir, log)
        });
        prop_assert_eq!(run(log, &q), brute_force(log, &q));
    }
}

#[test]
fn missing_stale_and_damaged_indexes_never_change_answers() {
    let dir = tempfile::tempdir().unwrap();
    let log = build(dir.path(), 3000, 2);
    let queries = [
        Query {
            filter: Filter {
                actors: vec![ACTORS[5].into()],
                ..Filter::default()
            },
            ..Query::default()
        },
        Query {
            filter: Filter {
                event_types: vec!["pcap.*".parse().unwrap()],
                since: Some(ts_of_minute(500)),
                until: Some(ts_of_minute(900)),
                ..Filter::default()
            },
            reverse: true,
            ..Query::default()
        },
        Query {
            filter: Filter {
                nodes: vec![NODES[1].into()],
                ..Filter::default()
            },
            from_seq: Some(1234),
            ..Query::default()
        },
    ];
    let expected: Vec<Vec<u64>> = queries.iter().map(|q| brute_force(&log, q)).collect();
    let check = |log: &Log| {
        for (q, want) in queries.iter().zip(&expected) {
            assert_eq!(&run(log, q), want, "{q:?}");
        }
    };
    check(&log);
    drop(log); // joins the background indexers
    let index_files = || -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "idx"))
            .collect();
        v.sort();
        v
    };
    let files = index_files();
    assert!(
        files.len() >= 3,
        "sealed segments get index files: {files:?}"
    );

    // Deleted: rebuilt on demand.
    for f in &files {
        std::fs::remove_file(f).unwrap();
    }
    let ro = Options {
        read_only: true,
        ..options()
    };
    check(&Log::open(dir.path(), ro.clone()).unwrap());
    check(&Log::open(dir.path(), options()).unwrap());
    assert_eq!(
        index_files().len(),
        files.len(),
        "a writable open rewrites missing indexes"
    );

    // Damaged: every byte flipped in turn in one file is caught and rebuilt.
    let original = std::fs::read(&files[1]).unwrap();
    for at in (0..original.len()).step_by(original.len() / 40 + 1) {
        let mut bad = original.clone();
        bad[at] ^= 0x5a;
        std::fs::write(&files[1], &bad).unwrap();
        check(&Log::open(dir.path(), ro.clone()).unwrap());
    }

    // Stale: another segment's index under this segment's name.
    std::fs::copy(&files[0], &files[1]).unwrap();
    check(&Log::open(dir.path(), ro.clone()).unwrap());

    // Truncated and empty.
    std::fs::write(&files[2], &original[..original.len() / 2]).unwrap();
    std::fs::write(&files[0], b"").unwrap();
    check(&Log::open(dir.path(), ro).unwrap());
}

#[test]
fn rare_actor_query_reads_a_small_part_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::create(
        dir.path(),
        Options {
            index_block_bytes: 4096,
            ..options()
        },
    )
    .unwrap();
    // A busy crowd and one actor in ~0.1% of events.
    let events: Vec<Event> = (0..12_000u64)
        .map(|i| {
            let mut e = event(i, 0);
            e.actor = if i % 1000 == 500 {
                "needle@acme.io".into()
            } else {
                ACTORS[(i % 4) as usize].into()
            };
            e
        })
        .collect();
    for chunk in events.chunks(200) {
        log.append_batch(chunk).unwrap();
    }
    drop(log);
    let log = Log::open(
        dir.path(),
        Options {
            read_only: true,
            ..options()
        },
    )
    .unwrap();
    let q = Query {
        filter: Filter {
            actors: vec!["needle@acme.io".into()],
            ..Filter::default()
        },
        ..Query::default()
    };
    let mut it = log.query(&q).unwrap();
    let found: Vec<u64> = it.by_ref().map(|m| m.unwrap().seq).collect();
    assert_eq!(found, (0..12).map(|k| k * 1000 + 500).collect::<Vec<_>>());
    let stats = it.stats();
    let log_bytes: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let read = stats.data_bytes_read + stats.index_bytes_read;
    assert!(
        read * 10 < log_bytes,
        "read {read} bytes ({stats:?}) of a {log_bytes}-byte log"
    );
}

#[test]
fn cursor_pages_are_stable_while_the_log_grows() {
    let dir = tempfile::tempdir().unwrap();
    let log = build(dir.path(), 1000, 3);
    let filter = Filter {
        event_types: vec!["auth.*".parse().unwrap()],
        ..Filter::default()
    };
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let q = Query {
            filter: filter.clone(),
            after,
            limit: Some(50),
            ..Query::default()
        };
        let page = run(&log, &q);
        if page.is_empty() {
            break;
        }
        after = page.last().copied();
        pages.extend(page);
        // The log grows between pages.
        log.append(&event(5000 + pages.len() as u64, 3)).unwrap();
    }
    let all = run(
        &log,
        &Query {
            filter,
            ..Query::default()
        },
    );
    assert_eq!(pages, all);
}
