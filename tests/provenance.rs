//! Format version 2 provenance: every record says when the engine received
//! it (its own clock, never going back) and who appended it.

use std::path::Path;
use std::sync::Arc;

use chainlog::event::Origin;
use chainlog::format::segment::{self, MIN_SEGMENT_BYTES};
use chainlog::storage::sim::{SimDisk, SIM_CLOCK_START};
use chainlog::storage::Storage;
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
