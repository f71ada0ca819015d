//! The tamper table (issue 14): one row per attack on a real log, saying
//! whether it is detected and where, run by one loop that prints the table
//! as a report:
//!
//! ```text
//! cargo test --test tamper_table -- --nocapture
//! ```
//!
//! Each row applies its attack to a fresh copy of one log built with the
//! library (three segments of 128 KiB: two sealed, the newest active; their
//! indexes and tiles; a checkpoint signed over every record), then verifies
//! the copy with the library and with the `chainlog verify --json` binary,
//! which must agree. The expected outcome is one of:
//!
//! - *detected*: the first problem has exactly the row's kind, and the seq,
//!   segment and byte offset that `docs/FORMAT.md`'s problem table defines
//!   for it at the place the attack hit; any further problems are of the
//!   kinds the row lists (the consequences of that damage, in file order);
//! - *undetected*: the attack is out of reach of the check the row runs (a
//!   rewrite with every later hash recomputed, a truncation, without a
//!   checkpoint); the row pins that verify says intact, and the row after it
//!   shows the checkpoint catching it;
//! - *no alarm*: what a crash leaves is not tampering: intact, with the note
//!   the row names; and the next open for writing recovers it to an intact
//!   log with no note;
//! - *refused*: the attack is an append (library or CLI) that is refused with
//!   the row's error, and the log is unchanged.
//!
//! Findings 1-10 of issue 14 and their regression tests (`finding_NN_*`
//! below run the rows that reproduce each finding; the others are in the
//! files named). The library tests need the version 2 API and do not build
//! on `a87d9e4`; each finding's CLI behaviour there was checked by hand
//! (its binary on a log it made, damaged as the rows do): it reproduces.
//!
//! | finding | tests |
//! |---|---|
//! | 1 engine records writable by clients | `finding_01_engine_records_cannot_be_appended_or_imitated` (library and CLI rows); `cli::bad_input_names_the_line_exits_2_and_appends_nothing` (CLI); `server::abuse_gets_clean_errors_and_loses_nothing` (HTTP `POST /events`, single and batch); `retention::a_retention_record_that_does_not_parse_is_an_invalid_engine_record_with_the_parser_error` |
//! | 2 verify does not enforce the record rules | `finding_02_verify_enforces_the_record_rules_on_rehashed_records` |
//! | 3 forged index hides events | `finding_03_a_forged_index_fails_verify`; `derived::a_consistently_forged_posting_list_fails_verify`, `derived::cli_verify_fails_on_a_forged_index_that_fools_query` |
//! | 4 torn seal reported as tampering | `finding_04_a_torn_seal_is_not_an_alarm`; `damage::finding_4_a_torn_seal_is_a_note_and_recovery_cuts_it`, `damage::cli_finding_4_verify_exits_0_on_a_torn_seal` |
//! | 5 recovery erases corruption | `damage::finding_5_garbage_then_an_older_frame_is_corruption_to_both`, `damage::cli_finding_5_append_refuses_and_changes_nothing` |
//! | 6 checkpoint signs unverified data | `finding_06_a_forged_link_block_fails_against_a_checkpoint`; `damage::finding_6_checkpoint_refuses_a_forged_link_block`, `damage::cli_finding_6_checkpoint_refuses_a_forged_link_block` |
//! | 7 lock file deletion lets two writers in | `writer_lock::deleting_the_lock_file_does_not_let_a_second_writer_in`, `writer_lock::replacing_the_lock_file_does_not_let_a_second_writer_in`, `process_kill::concurrent_appenders_killed`; `finding_07_an_overwritten_receipted_record_is_corruption` (the remains of a record a second writer overwrote are not a torn tail) |
//! | 8 no provenance | `provenance::received_at_is_the_engines_clock_and_never_goes_back`, `provenance::every_record_names_who_appended_it`, `finding_08_time_of_receipt_never_goes_back`; retention by time of receipt: `provenance::an_event_dated_2261_does_not_block_age_retention`, `cli_retention::age_retention_judges_by_time_of_receipt_not_event_time`, `format_v1::age_retention_judges_v1_segments_by_event_time`; shown and filtered: `provenance::queries_filter_by_appender_origin_and_time_of_receipt`, `cli_query::provenance_is_shown_and_filtered`, `server::provenance_is_served_and_filtered` |
//! | 9 out-of-order torn write | `finding_09_out_of_order_torn_writes`; `damage::finding_9_an_out_of_order_torn_write_is_read_and_cut_by_the_operator`, `damage::cli_finding_9_readers_read_the_prefix_and_recover_cuts`; the `batch` bound is documentation (RELIABILITY.md) |
//! | 10 `at byte 0`; `head: null` | `retention::retention_inside_a_hold_is_reported_by_the_verifier`, `retention::a_retention_record_that_does_not_parse_is_an_invalid_engine_record_with_the_parser_error` (offsets), `derived::cli_verify_and_stats_agree_on_the_head_of_a_new_log`, `derived::the_head_of_an_empty_log_is_its_genesis_hash` |
//!
//! `CHAINLOG_TEST_BIN` names another `chainlog` binary for the CLI rows and
//! checks (to run them against an older build).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/segment_image.rs"]
mod segment_image;
use segment_image::{
    data_end, fix_frame_crc, fix_header_crc, fix_trailer_crc, frames, put_u32, u32_at, FrameAt,
};
#[path = "support/stdin.rs"]
mod stdin;
use stdin::output_with_stdin;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use chainlog::format::frame;
use chainlog::format::segment::{self, data_end_limit, HEADER_BYTES, MIN_SEGMENT_BYTES};
use chainlog::hash::checkpoint::{Checkpoint, NoteSigner};
use chainlog::storage::FsStorage;
use chainlog::verify::{verify_dir_with, Problem, ProblemKind, Report, VerifyOptions};
use chainlog::{ChainHash, Durability, Event, Log, Options, Outcome, Timestamp};
use serde_json::Value;

use ProblemKind as K;

const S: u64 = MIN_SEGMENT_BYTES;
/// Where the trailer starts in every segment of the fixture.
const TRAILER_AT: u64 = data_end_limit(S);
/// Where the link block starts.
const LINK_AT: u64 = TRAILER_AT + segment::TRAILER_BYTES as u64;

fn bin() -> String {
    std::env::var("CHAINLOG_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_chainlog").into())
}

fn options() -> Options {
    Options {
        segment_bytes: S,
        durability: Durability::None,
        ..Options::default()
    }
}

fn event(i: u64) -> Event {
    let kinds = ["pcap.download", "incident.opened", "node.added"];
    let mut e = Event::new(
        Timestamp::from_unix_nanos(1_760_000_000_000_000_000 + i as i64 * 1_000_000_007),
        kinds[i as usize % kinds.len()],
        format!("user{}@acme.io", i % 5),
    );
    e.node = Some(format!("nyc-edge-{:02}", i % 4));
    e.outcome = if i % 7 == 3 {
        Outcome::Failure
    } else {
        Outcome::Success
    };
    e.context.insert("i".into(), i.into());
    e.context.insert(
        "pad".into(),
        Value::String("x".repeat(300 + (i % 40) as usize)),
    );
    e
}

// ---------------------------------------------------------------------------
// The fixture: built once, copied for every row.

struct Fixture {
    /// The log directory, never changed after it is built.
    dir: PathBuf,
    /// Base seqs of its three segments.
    bases: Vec<u64>,
    /// Records in the log.
    records: u64,
    /// A checkpoint signed over every record, and the key to check it.
    checkpoint_text: String,
    public_key_text: String,
    checkpoint: Checkpoint,
    /// Another log with the same events (so the same segment bases) and
    /// another log id.
    other_dir: PathBuf,
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// Appends events until the log has three segments and a few dozen records
/// in the newest; returns the bases and the record count.
fn build(dir: &Path) -> (Vec<u64>, u64, Log) {
    let log = Log::create(dir, options()).unwrap();
    let mut i = 0;
    while log.state().segments < 3 {
        log.append(&event(i)).unwrap();
        i += 1;
    }
    for _ in 0..30 {
        log.append(&event(i)).unwrap();
        i += 1;
    }
    (segment_bases(dir), i, log)
}

fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| segment::parse_file_name(e.unwrap().file_name().to_str()?))
        .collect();
    bases.sort_unstable();
    bases
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // Kept for the whole run (a static is never dropped), under the
        // target's scratch directory.
        let root = scratch().keep();
        let dir = root.join("log");
        let (bases, records, log) = build(&dir);
        let signer = NoteSigner::from_seed("audit.acme.io", [7; 32]).unwrap();
        let checkpoint_text = log.checkpoint("chainlog").unwrap().sign(&signer).unwrap();
        log.close().unwrap();
        let checkpoint = Checkpoint::open(&checkpoint_text, &signer.verifier()).unwrap();
        assert_eq!(checkpoint.size, records);
        let other_dir = root.join("other");
        let (other_bases, _, other) = build(&other_dir);
        other.close().unwrap();
        assert_eq!(other_bases, bases, "the other log's segments line up");
        assert!(
            dir.join(chainlog::index::file_name(bases[1])).exists(),
            "the sealed segments' indexes are written"
        );
        Fixture {
            dir,
            bases,
            records,
            checkpoint_text,
            public_key_text: signer.verifier().to_text(),
            checkpoint,
            other_dir,
        }
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------
// A row's working copy, and what an attack can do to it.

/// Where an attack hit, as the problem table locates it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct At {
    segment: String,
    offset: u64,
    seq: Option<u64>,
}

/// What applying an attack did.
enum Done {
    /// The files were changed; a detection is expected here.
    At(At),
    /// The files were changed (or not); no location applies.
    Changed,
    /// The attack was refused; the text is the error (or exit code and
    /// stderr).
    Refused(String),
}

struct Case {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    dir: PathBuf,
}

impl Case {
    fn new() -> Case {
        let tmp = scratch();
        let root = tmp.path().to_path_buf();
        let dir = root.join("log");
        copy_dir(&fixture().dir, &dir);
        Case {
            _tmp: tmp,
            root,
            dir,
        }
    }

    fn name(&self, segment: usize) -> String {
        segment::file_name(fixture().bases[segment])
    }

    fn path(&self, segment: usize) -> PathBuf {
        self.dir.join(self.name(segment))
    }

    fn image(&self, segment: usize) -> Vec<u8> {
        std::fs::read(self.path(segment)).unwrap()
    }

    fn put(&self, segment: usize, image: &[u8]) {
        std::fs::write(self.path(segment), image).unwrap();
    }

    fn frames(&self, segment: usize) -> Vec<FrameAt> {
        frames(&self.image(segment))
    }

    /// The frame in the middle of `segment`.
    fn middle(&self, segment: usize) -> FrameAt {
        let f = self.frames(segment);
        f[f.len() / 2]
    }

    fn at(&self, segment: usize, offset: usize, seq: Option<u64>) -> Done {
        Done::At(At {
            segment: self.name(segment),
            offset: offset as u64,
            seq,
        })
    }

    /// Changes `segment` with `damage`.
    fn edit(&self, segment: usize, damage: impl FnOnce(&mut Vec<u8>)) {
        let mut image = self.image(segment);
        damage(&mut image);
        assert_eq!(image.len() as u64, S, "keep the file size");
        self.put(segment, &image);
    }

    /// Replaces the records of the newest segment with `change(records)`,
    /// every frame linked again from the header's `prev_hash`: a forger's
    /// rewrite with every later hash recomputed.
    fn rewrite_newest(&self, change: impl FnOnce(&mut Vec<Vec<u8>>)) {
        let mut image = self.image(2);
        let mut records: Vec<Vec<u8>> = frames(&image)
            .iter()
            .map(|f| image[f.offset + 48..f.offset + 48 + f.record_len].to_vec())
            .collect();
        change(&mut records);
        relink(&mut image, &records);
        self.put(2, &image);
    }

    fn remove(&self, name: &str) {
        std::fs::remove_file(self.dir.join(name)).unwrap();
    }

    /// Removes segment `segment` and its index.
    fn remove_segment(&self, segment: usize) {
        self.remove(&self.name(segment));
        self.remove(&chainlog::index::file_name(fixture().bases[segment]));
    }

    /// Changes the file `name` (an index or a tile) with `change`.
    fn edit_file(&self, name: &str, change: impl FnOnce(&mut Vec<u8>)) {
        let path = self.dir.join(name);
        let mut bytes = std::fs::read(&path).unwrap();
        change(&mut bytes);
        std::fs::write(&path, bytes).unwrap();
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// A frame for `record`, with `seq` and chained from `prev`.
fn build_frame(record: &[u8], seq: u64, prev: &ChainHash) -> (Vec<u8>, ChainHash) {
    let mut out = Vec::new();
    let start = frame::begin(&mut out);
    out.extend_from_slice(record);
    frame::finish(&mut out, start);
    let hash = frame::link(&mut out, seq, prev);
    (out, hash)
}

/// Writes `records` as the segment's frames from its header's base seq and
/// prev hash, zeros after them up to the data limit.
fn relink(image: &mut [u8], records: &[Vec<u8>]) {
    let limit = data_end_limit(image.len() as u64) as usize;
    let base = u64_at(image, 40);
    let mut prev = ChainHash(image[48..80].try_into().unwrap());
    image[HEADER_BYTES as usize..limit].fill(0);
    let mut at = HEADER_BYTES as usize;
    for (seq, record) in (base..).zip(records) {
        let (bytes, hash) = build_frame(record, seq, &prev);
        image[at..at + bytes.len()].copy_from_slice(&bytes);
        at += bytes.len();
        prev = hash;
    }
}

/// Recomputes the link block's CRC (after its frontier hashes).
fn fix_link_crc(image: &mut [u8]) {
    let at = LINK_AT as usize;
    let count = u32_at(image, at + 8);
    let end = at + 16 + 32 * count;
    let crc = crc32c::crc32c(&image[at..end]);
    put_u32(image, end, crc);
}

/// Where `needle` first occurs in frame `f`'s record.
fn find_in(image: &[u8], f: FrameAt, needle: &[u8]) -> usize {
    let record = &image[f.offset + 48..f.offset + 48 + f.record_len];
    f.offset
        + 48
        + record
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
}

// ---------------------------------------------------------------------------
// Records written by hand from docs/FORMAT.md ("Record", version 2), so that
// they can break the rules no encoder lets through.

#[derive(Clone)]
struct RawRecord {
    received_at: [u8; 8],
    origin: u8,
    appender: Vec<u8>,
    timestamp: [u8; 8],
    outcome: u8,
    ip_kind: u8,
    ip: Vec<u8>,
    event_type: Vec<u8>,
    actor: Vec<u8>,
    node: Vec<u8>,
    resource: Vec<u8>,
    context: Vec<u8>,
}

impl RawRecord {
    fn parse(b: &[u8]) -> RawRecord {
        let mut at = 0;
        let mut take = |n: usize| {
            let part = b[at..at + n].to_vec();
            at += n;
            part
        };
        let received_at = take(8).try_into().unwrap();
        let origin = take(1)[0];
        let n = u16::from_le_bytes(take(2).try_into().unwrap()) as usize;
        let appender = take(n);
        let timestamp = take(8).try_into().unwrap();
        let outcome = take(1)[0];
        let ip_kind = take(1)[0];
        let ip = take(match ip_kind {
            4 => 4,
            6 => 16,
            _ => 0,
        });
        let mut text = || {
            let n = u16::from_le_bytes(take(2).try_into().unwrap()) as usize;
            take(n)
        };
        let (event_type, actor, node, resource) = (text(), text(), text(), text());
        let n = u32::from_le_bytes(take(4).try_into().unwrap()) as usize;
        let context = take(n);
        assert_eq!(at, b.len(), "nothing after the context");
        RawRecord {
            received_at,
            origin,
            appender,
            timestamp,
            outcome,
            ip_kind,
            ip,
            event_type,
            actor,
            node,
            resource,
            context,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.received_at);
        out.push(self.origin);
        for (i, text) in [
            &self.appender,
            &self.event_type,
            &self.actor,
            &self.node,
            &self.resource,
        ]
        .into_iter()
        .enumerate()
        {
            if i == 1 {
                out.extend_from_slice(&self.timestamp);
                out.push(self.outcome);
                out.push(self.ip_kind);
                out.extend_from_slice(&self.ip);
            }
            out.extend_from_slice(&(text.len() as u16).to_le_bytes());
            out.extend_from_slice(text);
        }
        out.extend_from_slice(&(self.context.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.context);
        out
    }
}

/// Rewrites record `k` of the newest segment with `change`, every later
/// hash recomputed; returns where it is.
fn forge_record(c: &Case, k: usize, change: impl FnOnce(&mut RawRecord)) -> Done {
    c.rewrite_newest(|records| {
        let mut raw = RawRecord::parse(&records[k]);
        change(&mut raw);
        records[k] = raw.encode();
    });
    let f = c.frames(2)[k];
    c.at(2, f.offset, Some(f.seq))
}

/// Appends `record` to the newest segment as the engine would, behind the
/// log's back (linked from the last record, in the free space).
fn append_behind(c: &Case, change: impl FnOnce(&mut RawRecord)) -> Done {
    c.rewrite_newest(|records| {
        let mut raw = RawRecord::parse(records.last().unwrap());
        change(&mut raw);
        records.push(raw.encode());
    });
    let f = *c.frames(2).last().unwrap();
    c.at(2, f.offset, Some(f.seq))
}

/// A record typed `kind` with `origin` and `context` appended behind the
/// log's back (see [`append_behind`]).
fn behind_typed(c: &Case, origin: u8, kind: &str, context: &str) -> Done {
    append_behind(c, |r| {
        r.origin = origin;
        r.event_type = kind.as_bytes().to_vec();
        r.context = context.as_bytes().to_vec();
    })
}

// ---------------------------------------------------------------------------
// Attacks on the files that more than one row makes.

/// Where a check against the checkpoint reports: the log as a whole (no
/// segment or offset), at `seq`.
fn log_at(seq: u64) -> Done {
    Done::At(At {
        segment: String::new(),
        offset: 0,
        seq: Some(seq),
    })
}

/// Changes one context byte of frame `f` of `segment`, its CRC recomputed
/// when `fix_crc`.
fn flip_context(c: &Case, segment: usize, f: FrameAt, fix_crc: bool) {
    c.edit(segment, |img| {
        let at = find_in(img, f, b"xxxx");
        img[at] = b'y';
        if fix_crc {
            fix_frame_crc(img, f.offset);
        }
    });
}

/// [`flip_context`] on the middle frame of `segment`; returns where it is.
fn flip_middle_record(c: &Case, segment: usize, fix_crc: bool) -> Done {
    let f = c.middle(segment);
    flip_context(c, segment, f, fix_crc);
    c.at(segment, f.offset, Some(f.seq))
}

/// [`flip_context`] on the log's last frame, CRC not fixed; returns its seq.
fn flip_last_record(c: &Case) -> u64 {
    let f = *c.frames(NEWEST).last().unwrap();
    flip_context(c, NEWEST, f, false);
    f.seq
}

/// Changes one byte of `segment`'s header at `at`, the header CRC
/// recomputed when `fix_crc`.
fn flip_header(c: &Case, segment: usize, at: usize, fix_crc: bool) {
    c.edit(segment, |img| {
        img[at] ^= 1;
        if fix_crc {
            fix_header_crc(img);
        }
    });
}

/// Where a problem with segment 0's trailer is reported.
fn first_trailer(c: &Case) -> Done {
    c.at(0, TRAILER_AT as usize, Some(fixture().bases[1] - 1))
}

/// Changes a frontier hash of `segment`'s link block, its CRC recomputed;
/// returns where verify reports it: the newest segment's link block, which
/// the forged frontier (extended by any later records) no longer matches.
fn forge_link_block(c: &Case, segment: usize) -> Done {
    c.edit(segment, |img| {
        img[LINK_AT as usize + 20] ^= 1;
        fix_link_crc(img);
    });
    c.at(NEWEST, LINK_AT as usize, Some(fixture().bases[NEWEST]))
}

/// Removes the middle frame of `segment`, moving the frames after it down;
/// returns where the seq that follows the gap is.
fn delete_middle_record(c: &Case, segment: usize) -> Done {
    let f = c.middle(segment);
    c.edit(segment, |img| {
        let end = data_end(img);
        img.copy_within(f.offset + f.len..end, f.offset);
        img[end - f.len..end].fill(0);
    });
    c.at(segment, f.offset, Some(f.seq + 1))
}

/// A copy of the newest segment's middle frame, changed by `forge`, written
/// before it, the frames from it on moved up; returns the middle frame.
fn insert_at_middle(c: &Case, forge: impl FnOnce(&mut [u8])) -> FrameAt {
    let f = c.middle(NEWEST);
    c.edit(NEWEST, |img| {
        let end = data_end(img);
        let mut copy = img[f.offset..f.offset + f.len].to_vec();
        forge(&mut copy);
        img.copy_within(f.offset..end, f.offset + f.len);
        img[f.offset..f.offset + f.len].copy_from_slice(&copy);
    });
    f
}

/// A copy of the newest segment's middle record inserted after it, every
/// later hash recomputed.
fn insert_rehashed(c: &Case) {
    c.rewrite_newest(|records| {
        let k = records.len() / 2;
        let copy = records[k].clone();
        records.insert(k, copy);
    });
}

/// The last 5 records of the log cut, the rest left as it is (a clean end).
fn truncate_newest(c: &Case) {
    c.rewrite_newest(|records| records.truncate(records.len() - 5));
}

/// The newest segment's file removed: the log ends at a sealed segment.
fn remove_newest(c: &Case) {
    c.remove(&c.name(NEWEST));
}

// ---------------------------------------------------------------------------
// Attacks through the front doors.

fn cli(c: &Case, args: &[&str], stdin: &str) -> (i32, String, String) {
    let out = output_with_stdin(
        Command::new(bin()).arg("--dir").arg(&c.dir).args(args),
        stdin.as_bytes(),
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `chainlog append` of an event typed `kind` by `mallory`, with `context`.
fn cli_append_typed(c: &Case, kind: &str, context: &str) -> Done {
    let line = format!("{{\"event\":\"{kind}\",\"actor\":\"mallory\",\"context\":{context}}}\n");
    let (code, out, err) = cli(c, &["append"], &line);
    if code == 0 {
        Done::Changed
    } else {
        Done::Refused(format!("exit {code}: {}{}", out.trim(), err.trim()))
    }
}

fn library_append(c: &Case, events: &[Event]) -> Done {
    let log = Log::open(&c.dir, options()).unwrap();
    let result = log.append_batch(events);
    log.close().unwrap();
    match result {
        Ok(_) => Done::Changed,
        Err(e) => Done::Refused(format!("{e:?}: {e}")),
    }
}

fn engine_typed(kind: &str) -> Event {
    let mut e = Event::new(
        Timestamp::from_unix_nanos(1_760_000_000_000_000_000),
        kind,
        "mallory",
    );
    e.context.insert("note".into(), "hi".into());
    e
}

// ---------------------------------------------------------------------------
// The table.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// `verify` alone.
    Plain,
    /// `verify --checkpoint` with the fixture's checkpoint.
    Checkpoint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Note {
    None,
    TornTail,
    TornSeal,
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    Detected(ProblemKind, &'static [ProblemKind]),
    Undetected,
    NoAlarm(Note),
    Refused(&'static str),
}

/// What a row does to its copy of the log.
#[derive(Clone, Copy)]
enum Apply {
    /// Anything: changes the files, or calls a front door.
    Custom(fn(&Case) -> Done),
    /// Record 3 of the newest segment changed by the function (to break one
    /// of the record rules), every later hash recomputed.
    BreakRule(fn(&mut RawRecord)),
}

use Apply::Custom;

struct Row {
    attack: &'static str,
    how: &'static str,
    /// The finding of issue 14 the row reproduces (0: none).
    finding: u8,
    check: Check,
    apply: Apply,
    expect: Expect,
}

/// A row of finding 2: a record that breaks one rule, rehashed, which plain
/// verify must call malformed.
const fn broken_rule(attack: &'static str, change: fn(&mut RawRecord)) -> Row {
    Row {
        attack,
        how: "a record of the active segment rewritten, the chain rebuilt",
        finding: 2,
        check: Check::Plain,
        apply: Apply::BreakRule(change),
        expect: Expect::Detected(K::RecordMalformed, &[]),
    }
}

const NEWEST: usize = 2;

static ROWS: &[Row] = &[
    // --- Byte flips.
    Row {
        attack: "record byte flip, sealed segment, CRC fixed",
        how: "one context byte of the middle record of segment 1 changed, frame CRC recomputed",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| flip_middle_record(c, 1, true)),
        expect: Expect::Detected(K::HashMismatch, &[]),
    },
    Row {
        attack: "record byte flip, sealed segment, CRC not fixed",
        how: "one context byte of the middle record of segment 1 changed",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| flip_middle_record(c, 1, false)),
        expect: Expect::Detected(
            K::FrameCorrupt,
            &[K::SeqMismatch, K::HashMismatch, K::TrailerMismatch],
        ),
    },
    Row {
        attack: "record byte flip, newest segment, CRC fixed",
        how: "one context byte of the middle record of the active segment changed, CRC recomputed",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| flip_middle_record(c, NEWEST, true)),
        expect: Expect::Detected(K::HashMismatch, &[]),
    },
    Row {
        attack: "record byte flip, newest segment, CRC not fixed",
        how: "one context byte of the middle record of the active segment changed",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| flip_middle_record(c, NEWEST, false)),
        expect: Expect::Detected(K::FrameCorrupt, &[K::SeqMismatch, K::HashMismatch]),
    },
    Row {
        attack: "byte flip in the newest record, CRC not fixed",
        how: "the last frame of the log fails its CRC: indistinguishable from a torn append",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            flip_last_record(c);
            Done::Changed
        }),
        expect: Expect::Undetected,
    },
    Row {
        attack: "byte flip in the newest record, CRC not fixed, against a checkpoint",
        how: "as above; the checkpoint counts the record the torn tail drops",
        finding: 0,
        check: Check::Checkpoint,
        apply: Custom(|c| log_at(flip_last_record(c))),
        expect: Expect::Detected(K::CheckpointMismatch, &[]),
    },
    Row {
        attack: "stored hash flip, sealed segment, CRC fixed",
        how: "one byte of the middle frame's stored chain hash in segment 1, CRC recomputed",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            let f = c.middle(1);
            c.edit(1, |img| {
                img[f.offset + 20] ^= 1;
                fix_frame_crc(img, f.offset);
            });
            c.at(1, f.offset, Some(f.seq))
        }),
        expect: Expect::Detected(K::HashMismatch, &[K::HashMismatch]),
    },
    Row {
        attack: "header byte flip, sealed segment",
        how: "a log id byte of segment 1's header changed, header CRC not fixed",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            flip_header(c, 1, 30, false);
            c.at(1, 0, None)
        }),
        expect: Expect::Detected(K::HeaderCorrupt, &[]),
    },
    Row {
        attack: "header byte flip, newest segment",
        how: "a log id byte of the active segment's header changed, header CRC not fixed",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            flip_header(c, NEWEST, 30, false);
            c.at(NEWEST, 0, None)
        }),
        expect: Expect::Detected(K::HeaderCorrupt, &[]),
    },
    Row {
        attack: "header log id changed, CRC fixed",
        how: "a log id byte of segment 1's header changed, header CRC recomputed",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            flip_header(c, 1, 30, true);
            c.at(1, 24, Some(fixture().bases[1]))
        }),
        expect: Expect::Detected(K::WrongLog, &[]),
    },
    Row {
        attack: "header link hash changed, CRC fixed",
        how: "a prev_hash byte of segment 1's header changed, header CRC recomputed",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            flip_header(c, 1, 60, true);
            c.at(1, 48, Some(fixture().bases[1]))
        }),
        expect: Expect::Detected(K::LinkMismatch, &[K::HashMismatch]),
    },
    Row {
        attack: "header base seq changed, CRC fixed",
        how: "segment 1's base_seq raised by one, header CRC recomputed (then misnamed too)",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            let base = fixture().bases[1];
            c.edit(1, |img| {
                img[40..48].copy_from_slice(&(base + 1).to_le_bytes());
                fix_header_crc(img);
            });
            // Seq `base` is missing before the segment, which then also
            // disagrees with its name.
            c.at(1, 40, Some(base))
        }),
        expect: Expect::Detected(
            K::MissingRecords,
            &[K::MisnamedSegment, K::TreeMismatch, K::SeqMismatch],
        ),
    },
    Row {
        attack: "trailer byte flip, sealed segment",
        how: "a last_hash byte of segment 0's trailer changed, trailer CRC not fixed",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            c.edit(0, |img| img[TRAILER_AT as usize + 30] ^= 1);
            first_trailer(c)
        }),
        expect: Expect::Detected(K::TrailerMismatch, &[]),
    },
    Row {
        attack: "trailer record count changed, CRC fixed",
        how: "segment 0's record_count raised by one, trailer CRC recomputed",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            c.edit(0, |img| {
                img[TRAILER_AT as usize + 8] += 1;
                fix_trailer_crc(img);
            });
            first_trailer(c)
        }),
        expect: Expect::Detected(K::TrailerMismatch, &[]),
    },
    Row {
        attack: "trailer byte set, newest (unsealed) segment",
        how: "the first trailer byte of the active segment set to 0x01: neither zero nor what \
              its frames imply, so not a torn seal",
        finding: 4,
        check: Check::Plain,
        apply: Custom(|c| {
            let last = c.frames(NEWEST).last().unwrap().seq;
            c.edit(NEWEST, |img| img[TRAILER_AT as usize] = 0x01);
            c.at(NEWEST, TRAILER_AT as usize, Some(last))
        }),
        expect: Expect::Detected(K::TrailerMismatch, &[]),
    },
    Row {
        attack: "trailer zeroed, sealed segment",
        how: "segment 0's trailer overwritten with zeros, as if it was never sealed",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            c.edit(0, |img| {
                img[TRAILER_AT as usize..TRAILER_AT as usize + 96].fill(0);
            });
            first_trailer(c)
        }),
        expect: Expect::Detected(K::NotSealed, &[]),
    },
    Row {
        attack: "bytes after the data, sealed segment",
        how: "one non-zero byte written after segment 0's last frame",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            let end = data_end(&c.image(0));
            c.edit(0, |img| img[end + 100] = 0x5a);
            // Reported where the data ends, as a torn tail would be.
            c.at(0, end, Some(fixture().bases[1]))
        }),
        expect: Expect::Detected(K::UnexpectedBytes, &[]),
    },
    Row {
        attack: "bytes after the link block, newest segment",
        how: "one non-zero byte written 10 bytes after the active segment's link block",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            let img = c.image(NEWEST);
            let count = u32_at(&img, LINK_AT as usize + 8);
            let at = LINK_AT as usize + 16 + 32 * count + 4 + 10;
            c.edit(NEWEST, |img| img[at] = 0x5a);
            c.at(NEWEST, at, None)
        }),
        expect: Expect::Detected(K::UnexpectedBytes, &[]),
    },
    Row {
        attack: "link block byte flip, sealed segment",
        how: "a frontier hash byte of segment 1's link block changed, its CRC not fixed",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            c.edit(1, |img| img[LINK_AT as usize + 20] ^= 1);
            c.at(1, LINK_AT as usize, Some(fixture().bases[1]))
        }),
        expect: Expect::Detected(K::TreeMismatch, &[]),
    },
    Row {
        attack: "link block forged, newest segment, CRC fixed",
        how: "a frontier hash of the active segment's link block changed, CRC recomputed; \
              plain verify extends the previous segment's link block by its records and \
              compares (FORMAT.md, step 2.7)",
        finding: 6,
        check: Check::Plain,
        apply: Custom(|c| forge_link_block(c, NEWEST)),
        expect: Expect::Detected(K::TreeMismatch, &[]),
    },
    Row {
        attack: "link block forged, segment before the newest, CRC fixed",
        how: "a frontier hash of segment 1's link block changed, CRC recomputed: its records \
              extend the forged frontier, which then differs from the newest segment's link \
              block (FORMAT.md, step 2.7 reports it there)",
        finding: 6,
        check: Check::Plain,
        apply: Custom(|c| forge_link_block(c, 1)),
        expect: Expect::Detected(K::TreeMismatch, &[]),
    },
    Row {
        attack: "link block forged, newest segment, CRC fixed, against a checkpoint",
        how: "as above; the verifier rebuilds the tree and compares the frontier",
        finding: 6,
        check: Check::Checkpoint,
        apply: Custom(|c| forge_link_block(c, NEWEST)),
        // The tree goes on from the stored frontier (FORMAT.md, the problem
        // table), so the root at the checkpoint's size differs too.
        expect: Expect::Detected(K::TreeMismatch, &[K::CheckpointMismatch]),
    },
    // --- Records deleted, duplicated, swapped, inserted.
    Row {
        attack: "record deleted, sealed segment",
        how: "the middle frame of segment 1 removed, the frames after it moved down",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| delete_middle_record(c, 1)),
        expect: Expect::Detected(K::SeqMismatch, &[K::HashMismatch, K::TrailerMismatch]),
    },
    Row {
        attack: "record deleted, newest segment",
        how: "the middle frame of the active segment removed, the frames after it moved down",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| delete_middle_record(c, NEWEST)),
        expect: Expect::Detected(K::SeqMismatch, &[K::HashMismatch]),
    },
    Row {
        attack: "record duplicated, newest segment",
        how: "the middle frame of the active segment written twice",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            let f = insert_at_middle(c, |_| {});
            c.at(NEWEST, f.offset + f.len, Some(f.seq))
        }),
        expect: Expect::Detected(K::SeqMismatch, &[K::HashMismatch]),
    },
    Row {
        attack: "records swapped, sealed segment",
        how: "the middle frame of segment 1 and the one after it exchanged",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            let fs = c.frames(1);
            let k = fs.len() / 2;
            let (f, g) = (fs[k], fs[k + 1]);
            c.edit(1, |img| {
                let first = img[f.offset..f.offset + f.len].to_vec();
                let second = img[g.offset..g.offset + g.len].to_vec();
                img[f.offset..f.offset + g.len].copy_from_slice(&second);
                img[f.offset + g.len..f.offset + g.len + f.len].copy_from_slice(&first);
            });
            c.at(1, f.offset, Some(f.seq + 1))
        }),
        expect: Expect::Detected(
            K::SeqMismatch,
            &[K::HashMismatch, K::SeqMismatch, K::RecordMalformed],
        ),
    },
    Row {
        attack: "record inserted, newest segment",
        how: "a copy of the middle record with the next seq and a valid CRC but a made-up hash",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            let f = insert_at_middle(c, |forged| {
                forged[16..48].fill(0x17);
                fix_frame_crc(forged, 0);
            });
            c.at(NEWEST, f.offset, Some(f.seq))
        }),
        expect: Expect::Detected(K::HashMismatch, &[K::SeqMismatch, K::HashMismatch]),
    },
    Row {
        attack: "record inserted, every later hash recomputed",
        how: "a new record in the middle of the active segment, the chain rebuilt after it",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            insert_rehashed(c);
            Done::Changed
        }),
        expect: Expect::Undetected,
    },
    Row {
        attack: "record inserted, every later hash recomputed, against a checkpoint",
        how: "as above; at the checkpoint's size the root and head differ (forked)",
        finding: 0,
        check: Check::Checkpoint,
        apply: Custom(|c| {
            insert_rehashed(c);
            log_at(fixture().checkpoint.size - 1)
        }),
        expect: Expect::Detected(K::CheckpointMismatch, &[]),
    },
    Row {
        attack: "record deleted, every later hash recomputed, against a checkpoint",
        how: "a record removed from the active segment, the chain rebuilt: shorter than signed",
        finding: 0,
        check: Check::Checkpoint,
        apply: Custom(|c| {
            c.rewrite_newest(|records| {
                let k = records.len() / 2;
                records.remove(k);
            });
            log_at(fixture().records - 1)
        }),
        expect: Expect::Detected(K::CheckpointMismatch, &[]),
    },
    Row {
        attack: "record rewritten, every later hash recomputed, against a checkpoint",
        how: "one actor in the active segment replaced, the chain rebuilt",
        finding: 0,
        check: Check::Checkpoint,
        apply: Custom(|c| {
            let k = c.frames(NEWEST).len() / 2;
            forge_record(c, k, |r| r.actor = b"someone@else.io".to_vec());
            log_at(fixture().checkpoint.size - 1)
        }),
        expect: Expect::Detected(K::CheckpointMismatch, &[]),
    },
    // --- Records that break the rules, rehashed (finding 2).
    broken_rule("rehashed record with event type `Login`", |r| {
        r.event_type = b"Login".to_vec()
    }),
    broken_rule("rehashed record with event type `aws..test`", |r| {
        r.event_type = b"aws..test".to_vec()
    }),
    broken_rule("rehashed record with an empty actor", |r| r.actor.clear()),
    broken_rule("rehashed record with U+0001 in the actor", |r| {
        r.actor = b"mall\x01ory".to_vec()
    }),
    broken_rule("rehashed record with a TAB in the node", |r| {
        r.node = b"nyc\tedge".to_vec()
    }),
    broken_rule(
        "rehashed record with a zero-width space in the actor (`adm\\u200bin`)",
        |r| r.actor = "adm\u{200b}in".as_bytes().to_vec(),
    ),
    broken_rule("rehashed record with context `[1]`", |r| {
        r.context = b"[1]".to_vec()
    }),
    broken_rule("rehashed record with context `1`", |r| {
        r.context = b"1".to_vec()
    }),
    broken_rule("rehashed record with context `{x}`", |r| {
        r.context = b"{x}".to_vec()
    }),
    broken_rule(
        "rehashed record with a duplicate context key (`{\"a\":1,\"\\u0061\":2}`)",
        |r| r.context = br#"{"a":1,"\u0061":2}"#.to_vec(),
    ),
    broken_rule("rehashed record with an origin byte of 2", |r| r.origin = 2),
    Row {
        attack: "rehashed record received before the one before it",
        how: "the received_at of a record set an hour back, the chain rebuilt",
        finding: 8,
        check: Check::Plain,
        apply: Custom(|c| {
            forge_record(c, 3, |r| {
                let t = i64::from_le_bytes(r.received_at) - 3_600_000_000_000;
                r.received_at = t.to_le_bytes();
            })
        }),
        expect: Expect::Detected(K::RecordMalformed, &[]),
    },
    // --- Engine records (finding 1).
    Row {
        attack: "injected log.retention through the library",
        how: "Log::append_batch of a client event typed log.retention",
        finding: 1,
        check: Check::Plain,
        apply: Custom(|c| library_append(c, &[engine_typed("log.retention")])),
        expect: Expect::Refused("ReservedEventType"),
    },
    Row {
        attack: "injected log.hold_set in a batch through the library",
        how: "Log::append_batch of a good event then one typed log.hold_set",
        finding: 1,
        check: Check::Plain,
        apply: Custom(|c| library_append(c, &[event(1), engine_typed("log.hold_set")])),
        expect: Expect::Refused("ReservedEventType"),
    },
    Row {
        attack: "injected log.retention through the CLI",
        how: "chainlog append {\"event\":\"log.retention\",\"actor\":\"mallory\",...}",
        finding: 1,
        check: Check::Plain,
        apply: Custom(|c| cli_append_typed(c, "log.retention", r#"{"note":"hi"}"#)),
        expect: Expect::Refused("exit 2: chainlog: line 1: "),
    },
    Row {
        attack: "injected log.hold_released through the CLI",
        how: "chainlog append {\"event\":\"log.hold_released\",\"actor\":\"mallory\",...}",
        finding: 1,
        check: Check::Plain,
        apply: Custom(|c| cli_append_typed(c, "log.hold_released", r#"{"reason":"x"}"#)),
        expect: Expect::Refused("exit 2: chainlog: line 1: "),
    },
    Row {
        attack: "client record typed log.retention, written behind the log's back",
        how: "origin 0 (client), type log.retention, appended to the active segment with its hash",
        finding: 1,
        check: Check::Plain,
        apply: Custom(|c| behind_typed(c, 0, "log.retention", r#"{"note":"hi"}"#)),
        expect: Expect::Detected(K::RecordMalformed, &[]),
    },
    Row {
        attack: "engine record log.retention with a bad schema, behind the log's back",
        how: "origin 1 (engine), type log.retention, context {\"note\":\"hi\"}, with its hash",
        finding: 1,
        check: Check::Plain,
        apply: Custom(|c| behind_typed(c, 1, "log.retention", r#"{"note":"hi"}"#)),
        expect: Expect::Detected(K::EngineRecordInvalid, &[]),
    },
    Row {
        attack: "engine record log.hold_released with no hold set, behind the log's back",
        how: "origin 1 (engine), type log.hold_released, context {\"reason\":\"x\"}, with its hash",
        finding: 1,
        check: Check::Plain,
        apply: Custom(|c| behind_typed(c, 1, "log.hold_released", r#"{"reason":"x"}"#)),
        expect: Expect::Detected(K::EngineRecordInvalid, &[]),
    },
    // --- Two writers (finding 7).
    Row {
        attack: "receipted record overwritten by a second writer",
        how:
            "the log's last record rewritten in place by a writer that saw the same head: a \
              shorter record with the same seq, its chain hash right, the old frame's rest after it",
        finding: 7,
        check: Check::Plain,
        apply: Custom(|c| {
            let image = c.image(NEWEST);
            let fs = frames(&image);
            let (last, before) = (fs[fs.len() - 1], fs[fs.len() - 2]);
            let prev = ChainHash(
                image[before.offset + 16..before.offset + 48]
                    .try_into()
                    .unwrap(),
            );
            let mut raw = RawRecord::parse(&last_record(c));
            raw.context = br#"{"revoked":"key-17"}"#.to_vec();
            let (forged, _) = build_frame(&raw.encode(), last.seq, &prev);
            assert!(forged.len() + 64 < last.len);
            c.edit(NEWEST, |img| {
                img[last.offset..last.offset + forged.len()].copy_from_slice(&forged);
            });
            c.at(NEWEST, last.offset + forged.len(), Some(last.seq + 1))
        }),
        expect: Expect::Detected(K::FrameCorrupt, &[]),
    },
    // --- Segments.
    Row {
        attack: "middle segment deleted",
        how: "segment 1 and its index removed",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            c.remove_segment(1);
            c.at(NEWEST, 40, Some(fixture().bases[1]))
        }),
        expect: Expect::Detected(K::MissingRecords, &[K::LinkMismatch]),
    },
    Row {
        attack: "first segment deleted",
        how: "segment 0 and its index removed (no retention record accounts for it)",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            c.remove_segment(0);
            c.at(1, 0, Some(0))
        }),
        expect: Expect::Detected(K::MissingRecords, &[]),
    },
    Row {
        attack: "newest segment deleted",
        how: "the active segment removed: the log ends at a sealed segment",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            remove_newest(c);
            Done::Changed
        }),
        expect: Expect::Undetected,
    },
    Row {
        attack: "newest segment deleted, against a checkpoint",
        how: "as above; the log is shorter than the checkpoint (truncated)",
        finding: 0,
        check: Check::Checkpoint,
        apply: Custom(|c| {
            remove_newest(c);
            log_at(fixture().bases[NEWEST])
        }),
        expect: Expect::Detected(K::CheckpointMismatch, &[]),
    },
    Row {
        attack: "segment renamed",
        how: "segment 1's file renamed to the next seq's name",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            let to = segment::file_name(fixture().bases[1] + 1);
            std::fs::rename(c.path(1), c.dir.join(&to)).unwrap();
            Done::At(At {
                segment: to,
                offset: 40,
                seq: Some(fixture().bases[1]),
            })
        }),
        expect: Expect::Detected(K::MisnamedSegment, &[]),
    },
    Row {
        attack: "segment swapped in from another log",
        how: "segment 1 and its index replaced by those of a log with the same events",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            let f = fixture();
            for name in [
                c.name(1),
                chainlog::index::file_name(f.bases[1]).to_string(),
            ] {
                std::fs::copy(f.other_dir.join(&name), c.dir.join(&name)).unwrap();
            }
            c.at(1, 24, Some(f.bases[1]))
        }),
        expect: Expect::Detected(K::WrongLog, &[K::LinkMismatch, K::RecordMalformed]),
    },
    Row {
        attack: "segment cut short",
        how: "segment 0's file truncated to 64 KiB",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            let image = c.image(0);
            c.put(0, &image[..65_536]);
            c.at(0, 65_536, None)
        }),
        expect: Expect::Detected(K::WrongSize, &[K::MissingRecords, K::LinkMismatch]),
    },
    // --- Truncation and fork against a checkpoint.
    Row {
        attack: "newest records truncated",
        how: "the last 5 frames of the active segment zeroed (a clean end)",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            truncate_newest(c);
            Done::Changed
        }),
        expect: Expect::Undetected,
    },
    Row {
        attack: "newest records truncated, against a checkpoint",
        how: "as above",
        finding: 0,
        check: Check::Checkpoint,
        apply: Custom(|c| {
            truncate_newest(c);
            log_at(fixture().records - 5)
        }),
        expect: Expect::Detected(K::CheckpointMismatch, &[]),
    },
    Row {
        attack: "fork, against a checkpoint",
        how: "the last 5 records cut, then 7 other events appended through the library",
        finding: 0,
        check: Check::Checkpoint,
        apply: Custom(|c| {
            truncate_newest(c);
            let log = Log::open(&c.dir, options()).unwrap();
            for i in 0..7 {
                log.append(&event(10_000 + i)).unwrap();
            }
            log.close().unwrap();
            log_at(fixture().checkpoint.size - 1)
        }),
        expect: Expect::Detected(K::CheckpointMismatch, &[]),
    },
    // --- Derived data (finding 3).
    Row {
        attack: "forged index, CRCs recomputed",
        how: "one time-span byte of segment 0's index changed, section and header CRCs fixed",
        finding: 3,
        check: Check::Plain,
        apply: Custom(|c| {
            let name = chainlog::index::file_name(0);
            let mut at = 0;
            c.edit_file(&name, |b| {
                // Section 2 (times): its offset, length and CRC in the table.
                let entry = 76 + 16 * 2;
                at = u32_at(b, entry);
                let len = u32_at(b, entry + 4);
                b[at + 8 + 3] ^= 0x40;
                let crc = crc32c::crc32c(&b[at..at + len]);
                put_u32(b, entry + 8, crc);
                let crc = crc32c::crc32c(&b[..188]);
                put_u32(b, 188, crc);
            });
            Done::At(At {
                segment: name,
                offset: at as u64,
                seq: None,
            })
        }),
        expect: Expect::Detected(K::IndexMismatch, &[]),
    },
    Row {
        attack: "forged tile, against a checkpoint",
        how: "leaf 5's stored hash replaced by leaf 6's in the first leaf pack",
        finding: 3,
        check: Check::Checkpoint,
        apply: Custom(|c| {
            let name = chainlog::tiles::leaf_pack_path(0);
            c.edit_file(&name, |b| b.copy_within(6 * 32..7 * 32, 5 * 32));
            Done::At(At {
                segment: name,
                offset: 5 * 32,
                seq: Some(5),
            })
        }),
        expect: Expect::Detected(K::TileMismatch, &[]),
    },
    // --- No false alarms: intact and merely crashed logs.
    Row {
        attack: "intact log",
        how: "nothing changed",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|_| Done::Changed),
        expect: Expect::NoAlarm(Note::None),
    },
    Row {
        attack: "intact log, against a checkpoint",
        how: "nothing changed",
        finding: 0,
        check: Check::Checkpoint,
        apply: Custom(|_| Done::Changed),
        expect: Expect::NoAlarm(Note::None),
    },
    Row {
        attack: "torn tail: a torn append",
        how: "the next frame (seq and hash right) written up to its 100th byte only",
        finding: 0,
        check: Check::Checkpoint,
        apply: Custom(|c| {
            let (next, _, end) = next_frame(c, 0);
            c.edit(NEWEST, |img| {
                img[end..end + 100].copy_from_slice(&next[..100])
            });
            c.at(NEWEST, end, None)
        }),
        expect: Expect::NoAlarm(Note::TornTail),
    },
    Row {
        attack: "torn tail: out-of-order torn write within the unsynced tail",
        how: "the next frame's first 512-byte sector lost, its later sectors persisted",
        finding: 9,
        check: Check::Checkpoint,
        apply: Custom(|c| {
            let (next, _, end) = next_frame(c, 1_200);
            // The 512-byte sectors of the file from the one holding the
            // frame's header on are lost; the rest of the frame persisted.
            let lost_to = ((end + 48) / 512 + 1) * 512;
            assert!(lost_to < end + next.len());
            c.edit(NEWEST, |img| {
                img[lost_to..end + next.len()].copy_from_slice(&next[lost_to - end..]);
            });
            c.at(NEWEST, end, None)
        }),
        expect: Expect::NoAlarm(Note::TornTail),
    },
    Row {
        attack: "out-of-order torn write: a whole later frame persisted",
        how: "two frames written at once; the first one's header lost, the second whole \
              (corruption by FORMAT.md's rule 2: `chainlog recover --cut-at` is the way out)",
        finding: 9,
        check: Check::Plain,
        apply: Custom(|c| {
            let (first, hash, end) = next_frame(c, 0);
            let f = fixture();
            let (second, _) = build_frame(&last_record(c), f.records + 1, &hash);
            c.edit(NEWEST, |img| {
                img[end + 48..end + first.len()].copy_from_slice(&first[48..]);
                let at = end + first.len();
                img[at..at + second.len()].copy_from_slice(&second);
            });
            c.at(NEWEST, end, Some(f.records))
        }),
        expect: Expect::Detected(K::FrameCorrupt, &[K::SeqMismatch, K::HashMismatch]),
    },
    Row {
        attack: "torn seal of the newest segment",
        how: "a crash while sealing segment 1: no segment after it, bytes 40.. of its trailer \
              not written, no index yet",
        finding: 4,
        check: Check::Plain,
        apply: Custom(|c| {
            remove_newest(c);
            c.remove(&chainlog::index::file_name(fixture().bases[1]));
            c.edit(1, |img| {
                img[TRAILER_AT as usize + 40..TRAILER_AT as usize + 96].fill(0);
            });
            c.at(1, TRAILER_AT as usize, None)
        }),
        expect: Expect::NoAlarm(Note::TornSeal),
    },
    Row {
        attack: "torn index file",
        how: "a crash while writing segment 0's index: the file cut in half",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            c.edit_file(&chainlog::index::file_name(0), |b| b.truncate(b.len() / 2));
            Done::Changed
        }),
        expect: Expect::NoAlarm(Note::None),
    },
    Row {
        attack: "lost tiles, against a checkpoint",
        how: "the tile directory removed (tiles are written without fsync)",
        finding: 0,
        check: Check::Checkpoint,
        apply: Custom(|c| {
            std::fs::remove_dir_all(c.dir.join("tile")).unwrap();
            Done::Changed
        }),
        expect: Expect::NoAlarm(Note::None),
    },
    Row {
        attack: "leftover temporary segment",
        how: "a crash while creating the next segment left a zeroed NNN.seg.tmp",
        finding: 0,
        check: Check::Plain,
        apply: Custom(|c| {
            let name = format!(
                "{}{}",
                segment::file_name(fixture().records).trim_end_matches(".seg"),
                segment::TEMP_SUFFIX
            );
            std::fs::write(c.dir.join(name), vec![0; 4096]).unwrap();
            Done::Changed
        }),
        expect: Expect::NoAlarm(Note::None),
    },
];

/// The record bytes of the log's last record.
fn last_record(c: &Case) -> Vec<u8> {
    let image = c.image(NEWEST);
    let f = *frames(&image).last().unwrap();
    image[f.offset + 48..f.offset + 48 + f.record_len].to_vec()
}

/// The frame the next append would write (a copy of the last record, padded
/// by `extra` context bytes), its hash, and where it goes (the data end).
fn next_frame(c: &Case, extra: usize) -> (Vec<u8>, ChainHash, usize) {
    let image = c.image(NEWEST);
    let last = *frames(&image).last().unwrap();
    let head = ChainHash(
        image[last.offset + 16..last.offset + 48]
            .try_into()
            .unwrap(),
    );
    let mut raw = RawRecord::parse(&last_record(c));
    if extra > 0 {
        raw.context = format!("{{\"pad\":\"{}\"}}", "z".repeat(extra)).into_bytes();
    }
    let (bytes, hash) = build_frame(&raw.encode(), last.seq + 1, &head);
    (bytes, hash, last.offset + last.len)
}

// ---------------------------------------------------------------------------
// The loop.

fn verify_options(check: Check) -> VerifyOptions {
    VerifyOptions {
        threads: 2,
        checkpoint: (check == Check::Checkpoint).then(|| fixture().checkpoint.clone()),
    }
}

fn library_verify(c: &Case, check: Check) -> Report {
    verify_dir_with(&FsStorage, &c.dir, &verify_options(check), &mut |_| {}).unwrap()
}

/// `chainlog verify --json`: its exit code and report.
fn cli_verify(c: &Case, check: Check) -> (i32, Value) {
    let mut args = vec!["verify".to_string(), "--json".into()];
    if check == Check::Checkpoint {
        let f = fixture();
        let cp = c.root.join("audit.checkpoint");
        let key = c.root.join("audit.pub");
        std::fs::write(&cp, &f.checkpoint_text).unwrap();
        std::fs::write(&key, &f.public_key_text).unwrap();
        args.extend([
            "--checkpoint".into(),
            cp.display().to_string(),
            "--public-key".into(),
            key.display().to_string(),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = cli(c, &args, "");
    let json = serde_json::from_str(&out).unwrap_or_else(|e| {
        panic!("chainlog verify --json printed no report ({e}): exit {code}\n{out}\n{err}")
    });
    (code, json)
}

fn kind_name(kind: ProblemKind) -> String {
    serde_json::to_value(kind)
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

fn show(p: &Problem) -> String {
    let seq = p.seq.map_or("-".into(), |s| s.to_string());
    let segment = if p.segment.is_empty() {
        "(log)"
    } else {
        p.segment.as_str()
    };
    let detail = if p.kind == K::CheckpointMismatch {
        format!(" ({})", p.detail)
    } else {
        String::new()
    };
    format!(
        "{} seq {seq} in {segment} at {}{detail}",
        kind_name(p.kind),
        p.offset
    )
}

fn note_of(report: &Report) -> Note {
    match (&report.torn_tail, &report.torn_seal) {
        (None, None) => Note::None,
        (Some(_), None) => Note::TornTail,
        (None, Some(_)) => Note::TornSeal,
        (Some(_), Some(_)) => panic!("both a torn tail and a torn seal: {report:#?}"),
    }
}

/// The CLI's report agrees with the library's: exit code, problems
/// (kind, seq, segment, offset) and notes.
fn check_cli_agrees(c: &Case, check: Check, report: &Report) -> Result<(), String> {
    let (code, json) = cli_verify(c, check);
    let matched = report.checkpoint.as_ref().is_none_or(|r| r.matched);
    let want = if report.is_intact() && matched { 0 } else { 1 };
    if code != want {
        return Err(format!("CLI verify exit {code}, expected {want}: {json}"));
    }
    let problems: Vec<Value> = report
        .problems
        .iter()
        .map(|p| serde_json::json!([kind_name(p.kind), p.seq, p.segment, p.offset]))
        .collect();
    let cli: Vec<Value> = json["problems"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| serde_json::json!([p["kind"], p["seq"], p["segment"], p["offset"]]))
        .collect();
    if problems != cli {
        return Err(format!(
            "CLI problems {cli:?} differ from the library's {problems:?}"
        ));
    }
    if json["torn_tail"].is_null() != report.torn_tail.is_none()
        || json["torn_seal"].is_null() != report.torn_seal.is_none()
    {
        return Err(format!("CLI notes differ: {json}"));
    }
    Ok(())
}

/// Runs one row; `Ok(observed)` when it holds, else what went wrong.
fn run(row: &Row) -> Result<String, String> {
    let case = Case::new();
    let records_before = fixture().records;
    let done = match row.apply {
        Apply::Custom(apply) => apply(&case),
        Apply::BreakRule(change) => forge_record(&case, 3, change),
    };
    if let Expect::Refused(want) = row.expect {
        let Done::Refused(error) = done else {
            return Err("accepted".into());
        };
        if !error.contains(want) {
            return Err(format!("refused with {error:?}, expected {want:?}"));
        }
        // Nothing was stored: the log is as it was.
        let report = library_verify(&case, Check::Checkpoint);
        if !report.is_intact() || report.records != records_before || note_of(&report) != Note::None
        {
            return Err(format!("the log changed: {report:#?}"));
        }
        return Ok(format!("refused: {}", error.lines().next().unwrap_or("")));
    }
    if let Done::Refused(error) = &done {
        return Err(format!("the attack could not be applied: {error}"));
    }
    let report = library_verify(&case, row.check);
    check_cli_agrees(&case, row.check, &report)?;
    let matched = report.checkpoint.as_ref().map(|r| r.matched);
    let problems: Vec<String> = report.problems.iter().map(show).collect();
    match row.expect {
        Expect::Detected(kind, also) => {
            let Done::At(at) = done else {
                panic!("{}: a detected row must say where it hit", row.attack);
            };
            let Some(first) = report.problems.first() else {
                return Err(format!("not detected: {report:#?}"));
            };
            let observed = At {
                segment: first.segment.clone(),
                offset: first.offset,
                seq: first.seq,
            };
            if first.kind != kind || observed != at {
                return Err(format!(
                    "first problem {}, expected {} seq {:?} in {:?} at {}; all: {problems:#?}",
                    show(first),
                    kind_name(kind),
                    at.seq,
                    at.segment,
                    at.offset
                ));
            }
            if let Some(p) = report.problems[1..]
                .iter()
                .find(|p| !also.contains(&p.kind))
            {
                return Err(format!(
                    "unexpected further problem {}: {problems:#?}",
                    show(p)
                ));
            }
            // FORMAT.md: `matched` is never true beside these.
            let voids_match = |k: &ProblemKind| {
                matches!(
                    k,
                    K::TreeMismatch | K::LinkMismatch | K::MissingRecords | K::CheckpointMismatch
                )
            };
            if matched == Some(true) && report.problems.iter().any(|p| voids_match(&p.kind)) {
                return Err("the checkpoint is `matched` beside a tree problem".into());
            }
            Ok(format!("detected: {}", problems.join("; ")))
        }
        Expect::Undetected => {
            if !report.is_intact() || matched == Some(false) {
                return Err(format!("detected after all: {problems:#?}"));
            }
            Ok(format!(
                "undetected (as expected), note {:?}",
                note_of(&report)
            ))
        }
        Expect::NoAlarm(note) => {
            if !report.is_intact() || matched == Some(false) {
                return Err(format!("false alarm: {problems:#?} matched {matched:?}"));
            }
            if note_of(&report) != note {
                return Err(format!("note {:?}, expected {note:?}", note_of(&report)));
            }
            if let (Done::At(at), Some(t)) = (&done, &report.torn_tail) {
                if (t.segment.as_str(), t.offset) != (at.segment.as_str(), at.offset) {
                    return Err(format!("torn tail at {t:?}, expected at {at:?}"));
                }
            }
            if let (Done::At(at), Some(t)) = (&done, &report.torn_seal) {
                if (t.segment.as_str(), t.offset) != (at.segment.as_str(), at.offset) {
                    return Err(format!("torn seal at {t:?}, expected at {at:?}"));
                }
            }
            // Recovery cuts what verify calls crash debris, and nothing else.
            Log::open(&case.dir, options())
                .and_then(|log| log.close())
                .map_err(|e| format!("recovery refused a crashed log: {e}"))?;
            let after = library_verify(&case, row.check);
            if !after.is_intact() || note_of(&after) != Note::None {
                return Err(format!("after recovery: {after:#?}"));
            }
            Ok(format!("no alarm, note {note:?}"))
        }
        Expect::Refused(_) => unreachable!(),
    }
}

fn expected(row: &Row) -> String {
    let check = match row.check {
        Check::Plain => "",
        Check::Checkpoint => " [checkpoint]",
    };
    let what = match row.expect {
        Expect::Detected(kind, _) => format!("detected: {}", kind_name(kind)),
        Expect::Undetected => "undetected".into(),
        Expect::NoAlarm(note) => format!("no alarm ({note:?})"),
        Expect::Refused(e) => format!("refused: {e}"),
    };
    format!("{what}{check}")
}

/// Runs the rows `select` picks, printing each, and fails with every row
/// that did not hold.
fn run_table(select: impl Fn(&Row) -> bool) {
    let mut failed = Vec::new();
    let rows: Vec<&Row> = ROWS.iter().filter(|r| select(r)).collect();
    assert!(!rows.is_empty());
    println!("\n{:-<100}", "");
    for (i, row) in rows.iter().enumerate() {
        println!("{:>2}. {}\n    how: {}", i + 1, row.attack, row.how);
        println!("    expected: {}", expected(row));
        match run(row) {
            Ok(observed) => println!("    observed: {observed}  ok"),
            Err(why) => {
                println!("    FAILED: {why}");
                failed.push(format!("{}: {why}", row.attack));
            }
        }
    }
    println!("{:-<100}", "");
    println!("{} rows, {} failed", rows.len(), failed.len());
    assert!(
        failed.is_empty(),
        "rows that failed:\n{}",
        failed.join("\n")
    );
}

#[test]
fn tamper_table() {
    run_table(|_| true);
}

/// The rows that reproduce finding `n` of issue 14.
fn finding(n: u8) {
    run_table(|r| r.finding == n);
}

#[test]
fn finding_01_engine_records_cannot_be_appended_or_imitated() {
    finding(1);
}

#[test]
fn finding_02_verify_enforces_the_record_rules_on_rehashed_records() {
    finding(2);
}

#[test]
fn finding_03_a_forged_index_fails_verify() {
    finding(3);
}

#[test]
fn finding_04_a_torn_seal_is_not_an_alarm() {
    finding(4);
}

#[test]
fn finding_06_a_forged_link_block_fails_against_a_checkpoint() {
    finding(6);
}

#[test]
fn finding_07_an_overwritten_receipted_record_is_corruption() {
    finding(7);
}

#[test]
fn finding_08_time_of_receipt_never_goes_back() {
    finding(8);
}

#[test]
fn finding_09_out_of_order_torn_writes() {
    finding(9);
}
