//! Format version 2 provenance: every record says when the engine received
//! it (its own clock, never going back) and who appended it.

use std::path::Path;
use std::sync::Arc;

use chainlog::event::Origin;
use chainlog::format::segment::{self, MIN_SEGMENT_BYTES};
use chainlog::query::{Filter, FilterError, Query, QueryStats};
use chainlog::retention::RetentionPolicy;
use chainlog::storage::sim::{SimDisk, SIM_CLOCK_START};
use chainlog::storage::Storage;
use chainlog::verify::verify_dir;
use chainlog::{EncodeRecord, Error, Event, Log, Options, Timestamp};

const DIR: &str = "/log";

fn options() -> Options {
    Options {
        segment_bytes: MIN_SEGMENT_BYTES,
        ..Options::default()
    }
}

fn event(i: i64) -> Event {
    // The caller's timestamp is far in the past: received_at ignores it.
    let mut e = Event::new(Timestamp::from_unix_nanos(i), "auth.login", "alice@acme.io");
    e.context.insert("pad".into(), "p".repeat(2000).into());
    e
}

fn received(log: &Log) -> Vec<Timestamp> {
    log.iter_from(0)
        .map(|r| r.unwrap().received_at.unwrap())
        .collect()
}

#[test]
fn received_at_is_the_engines_clock_and_never_goes_back() {
    let disk = SimDisk::new();
    let storage = Arc::new(disk.clone());
    let log = Log::create_in(storage.clone(), DIR, options()).unwrap();
    log.append(&event(1)).unwrap();
    disk.advance_clock(5_000);
    log.append(&event(2)).unwrap();
    // The clock steps back: records keep the newest time seen.
    disk.advance_clock(-60_000_000_000);
    log.append(&event(3)).unwrap();
    let start = SIM_CLOCK_START.unix_nanos();
    let expected: Vec<Timestamp> = [start, start + 5_000, start + 5_000]
        .map(Timestamp::from_unix_nanos)
        .to_vec();
    assert_eq!(received(&log), expected);
    // Fill the segment until it rolls, so the newest one starts empty.
    let mut i = 4;
    while log.state().segments < 2 {
        log.append(&event(i)).unwrap();
        i += 1;
    }
    let records = log.state().next_seq - 1;
    drop(log);
    // Undo the append that rolled (as a crash before its write would have
    // left it): the newest segment is empty.
    let newest = disk
        .open(&Path::new(DIR).join(segment::file_name(records)), true)
        .unwrap();
    newest
        .write_all_at(&[0; 4096], segment::HEADER_BYTES)
        .unwrap();
    newest.sync_data().unwrap();
    // The sealed segment's trailer holds its last record's received_at.
    let file = disk
        .open(&Path::new(DIR).join(segment::file_name(0)), false)
        .unwrap();
    let trailer = segment::read_trailer(&*file, "x", MIN_SEGMENT_BYTES)
        .unwrap()
        .unwrap();
    assert_eq!(trailer.last_received_at.unix_nanos(), start + 5_000);
    // After a restart with the clock still behind, appends to the empty
    // newest segment continue from the sealed segment's last received_at.
    let log = Log::open_in(storage, DIR, options()).unwrap();
    let before = log.state().next_seq;
    assert_eq!(before, records);
    let last_sealed = log.iter_from(before - 1).next().unwrap().unwrap();
    log.append(&event(i)).unwrap();
    let newest = log.iter_from(before).next().unwrap().unwrap();
    assert!(newest.received_at >= last_sealed.received_at);
    let all = received(&log);
    assert!(all.windows(2).all(|w| w[0] <= w[1]), "{all:?}");
}

/// An event appended on behalf of someone other than the log's appender.
struct OnBehalf<'a>(&'a Event, &'a str);

impl EncodeRecord for OnBehalf<'_> {
    fn encode_record(&self, out: &mut Vec<u8>) -> Result<(), chainlog::event::EventError> {
        self.0.encode_record(out)
    }
    fn appender(&self) -> Option<&str> {
        Some(self.1)
    }
}

#[test]
fn every_record_names_who_appended_it() {
    let disk = SimDisk::new();
    let storage = Arc::new(disk.clone());
    let opts = Options {
        appender: "billing-service".into(),
        ..options()
    };
    let log = Log::create_in(storage.clone(), DIR, opts).unwrap();
    let e = event(1);
    log.append_batch(&[OnBehalf(&e, "key-7f3a"), OnBehalf(&e, "key-0001")])
        .unwrap();
    log.append(&e).unwrap();
    let records: Vec<_> = log.iter_from(0).map(|r| r.unwrap()).collect();
    let appenders: Vec<_> = records.iter().map(|r| r.appender.as_deref()).collect();
    assert_eq!(
        appenders,
        [Some("key-7f3a"), Some("key-0001"), Some("billing-service")]
    );
    assert!(records.iter().all(|r| r.origin == Origin::Client));

    // A bad appender appends nothing.
    let bad = log.append_batch(&[OnBehalf(&e, "ok"), OnBehalf(&e, "a\u{200b}b")]);
    assert!(matches!(bad, Err(Error::InvalidEvent(_))), "{bad:?}");
    assert_eq!(log.state().next_seq, 3);
    drop(log);

    for appender in ["", "tab\there", &"x".repeat(257)] {
        let opts = Options {
            appender: appender.into(),
            ..options()
        };
        let err = Log::open_in(storage.clone(), DIR, opts).unwrap_err();
        assert!(
            matches!(err, Error::InvalidOptions(_)),
            "{appender:?}: {err}"
        );
    }
}

/// The records of `log` a query returns, by seq.
fn query_seqs(log: &Log, filter: Filter) -> (Vec<u64>, QueryStats) {
    let query = Query {
        filter,
        ..Query::default()
    };
    let mut iter = log.query(&query).unwrap();
    let seqs = iter.by_ref().map(|m| m.unwrap().seq).collect();
    (seqs, iter.stats())
}

#[test]
fn queries_filter_by_appender_origin_and_time_of_receipt() {
    let disk = SimDisk::new();
    let log = Log::create_in(Arc::new(disk.clone()), DIR, options()).unwrap();
    const HOUR: i64 = 3_600_000_000_000;
    let start = SIM_CLOCK_START;
    // Hour 0: key-a; hour 1: key-b, then a legal hold (an engine record);
    // hour 2: the log's own appender. Enough records to seal segments.
    let e = event(1);
    for _ in 0..40 {
        log.append_batch(&[OnBehalf(&e, "key-a")]).unwrap();
    }
    disk.advance_clock(HOUR);
    for _ in 0..40 {
        log.append_batch(&[OnBehalf(&e, "key-b")]).unwrap();
    }
    let hold = log.set_hold("counsel@acme.io", "case 7").unwrap().seq;
    disk.advance_clock(HOUR);
    for _ in 0..40 {
        log.append(&e).unwrap();
    }
    assert!(log.state().segments >= 3, "{:?}", log.state());
    let records: Vec<_> = log.iter_from(0).map(|r| r.unwrap()).collect();
    // Each answer is compared with a scan of the records.
    let scan = |keep: &dyn Fn(&chainlog::Record) -> bool| -> Vec<u64> {
        records.iter().filter(|r| keep(r)).map(|r| r.seq).collect()
    };
    let at = |hours: i64| Timestamp::from_unix_nanos(start.unix_nanos() + hours * HOUR);
    let by_appender = |names: &[&str]| Filter {
        appenders: names.iter().map(|s| s.to_string()).collect(),
        ..Filter::default()
    };
    let (a, _) = query_seqs(&log, by_appender(&["key-a"]));
    assert_eq!(a, (0..40).collect::<Vec<_>>());
    let (ab, _) = query_seqs(&log, by_appender(&["key-a", "key-b"]));
    assert_eq!(ab, (0..80).collect::<Vec<_>>());
    let (own, _) = query_seqs(&log, by_appender(&[chainlog::log::DEFAULT_APPENDER]));
    let expected = scan(&|r| r.appender.as_deref() == Some(chainlog::log::DEFAULT_APPENDER));
    assert_eq!(own, expected);
    assert!(own.len() >= 40 && own.contains(&hold), "{own:?}");
    let engine = Filter {
        origins: vec![Origin::Engine],
        ..Filter::default()
    };
    assert_eq!(query_seqs(&log, engine).0, [hold]);
    let client = Filter {
        origins: vec![Origin::Client],
        ..Filter::default()
    };
    assert_eq!(
        query_seqs(&log, client).0,
        scan(&|r| r.origin == Origin::Client)
    );
    assert_eq!(scan(&|r| r.origin == Origin::Client).len(), 120);
    // Hour 1 exactly: key-b and the hold.
    let window = Filter {
        received_since: Some(at(1)),
        received_until: Some(at(2)),
        ..Filter::default()
    };
    assert_eq!(query_seqs(&log, window).0, (40..81).collect::<Vec<_>>());
    // A late bound skips sealed segments by their trailers, and the answer
    // is still the scan's.
    let late = Filter {
        received_since: Some(at(2)),
        ..Filter::default()
    };
    let (seqs, stats) = query_seqs(&log, late);
    assert_eq!(seqs, scan(&|r| r.received_at >= Some(at(2))));
    assert_eq!(seqs.len(), 40);
    assert!(stats.segments_skipped >= 1, "{stats:?}");
    // With an indexed filter and another provenance filter, AND.
    let both = Filter {
        actors: vec!["alice@acme.io".into()],
        appenders: vec!["key-b".into()],
        received_until: Some(at(2)),
        ..Filter::default()
    };
    assert_eq!(query_seqs(&log, both).0, (40..80).collect::<Vec<_>>());
    let empty = Filter {
        received_since: Some(at(2)),
        received_until: Some(at(2)),
        ..Filter::default()
    };
    assert!(matches!(
        empty.validate(),
        Err(FilterError::EmptyReceivedRange { .. })
    ));
}

/// Issue 14, finding 8: an event dated 2261 kept its segment, and every
/// segment after it, forever. Age is now judged by the time of receipt.
#[test]
fn an_event_dated_2261_does_not_block_age_retention() {
    let disk = SimDisk::new();
    let log = Log::create_in(Arc::new(disk.clone()), DIR, options()).unwrap();
    let far = Timestamp::parse_rfc3339("2261-12-31T23:59:59Z").unwrap();
    let mut e = event(1);
    e.timestamp = far;
    while log.state().segments < 4 {
        log.append(&e).unwrap();
    }
    let policy = RetentionPolicy::default();
    assert!(
        log.plan_retention(&policy).unwrap().is_empty(),
        "just received"
    );
    // 91 days later by the engine's clock.
    disk.advance_clock(91 * 86_400_000_000_000);
    let sealed = log.state().segments - 1;
    let outcome = log.apply_retention(&policy).unwrap();
    assert_eq!(outcome.deleted.len(), sealed);
    for d in &outcome.deleted {
        assert_eq!(d.max_timestamp, far);
        assert_eq!(d.max_received_at, Some(SIM_CLOCK_START));
    }
    // The record says so, and the verifier holds it to the rule.
    let record = log
        .iter_from(outcome.record.unwrap().seq)
        .next()
        .unwrap()
        .unwrap();
    let context = serde_json::Value::Object(record.event.context.clone());
    assert_eq!(
        context["deleted"][0]["max_received_at"],
        SIM_CLOCK_START.to_string()
    );
    let cutoff = Timestamp::from_unix_nanos(disk.now().unix_nanos() - 90 * 86_400_000_000_000);
    assert_eq!(context["cutoff"], cutoff.to_string());
    assert_eq!(record.received_at, Some(disk.now()));
    drop(log);
    let report = verify_dir(&disk, Path::new(DIR), &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{:#?}", report.problems);
}
