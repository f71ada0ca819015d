//! Engine records: the records the log writes about itself (`log.*`),
//! checked against their schemas as each segment is read ([`classify`]),
//! and the legal-hold state machine run over them in chain order
//! ([`HoldState`]). `docs/FORMAT.md` ("Records the log writes itself") has
//! the schemas and the rules.

use serde::Deserialize;

use super::ProblemKind;
use crate::event::record::Origin;
use crate::event::{RecordSummary, Timestamp};
use crate::format::segment::{self, HEADER_BYTES};
use crate::hash::chain::ChainHash;
use crate::retention::{RetentionRecord, HOLD_RELEASED_EVENT, HOLD_SET_EVENT, RETENTION_EVENT};

/// Event type of the record `chainlog recover --cut-at` writes.
pub(crate) const RECOVERY_CUT_EVENT: &str = "log.recovery_cut";
/// Event type of the first record of the first v2 segment after v1 ones.
pub(crate) const MIGRATED_EVENT: &str = "log.migrated";
/// Longest hold reason, in bytes.
const MAX_REASON_BYTES: usize = 1024;

/// Whether a record is an engine record, one the log wrote about itself.
///
/// In a version 2 segment, the record's origin byte says so (1 = engine;
/// no public append path can write it). Version 1 records carry no origin,
/// so there any `log.*` record is taken as the engine's (the v1 rule, a
/// known weakness of that version). This one function makes the decision.
pub(crate) fn engine_record(view: &RecordSummary<'_>) -> bool {
    match view.origin {
        Origin::Engine => true,
        Origin::Client => false,
        Origin::Legacy => view.event_type.starts_with(b"log."),
    }
}

/// What an engine record is.
#[derive(Debug, Clone)]
pub(crate) enum EngineKind {
    /// `log.retention`, with its context when that parses.
    Retention(Option<RetentionRecord>),
    /// `log.hold_set`.
    HoldSet,
    /// `log.hold_released`.
    HoldReleased,
    /// `log.recovery_cut` or `log.migrated`: no state to carry.
    Other,
}

/// An engine record as a segment's check found it.
#[derive(Debug, Clone)]
pub(crate) struct EngineRecord {
    pub(crate) seq: u64,
    /// The frame's offset in its segment.
    pub(crate) offset: u64,
    pub(crate) kind: EngineKind,
    /// Why it breaks its schema, if it does.
    pub(crate) invalid: Option<String>,
}

/// The engine record in the frame at `offset` of segment `segment`, checked
/// against its schema; `None` for a client record.
pub(crate) fn classify(
    summary: &RecordSummary<'_>,
    seq: u64,
    offset: u64,
    segment: &str,
) -> Option<EngineRecord> {
    if !engine_record(summary) {
        return None;
    }
    // The engine's time of receipt (v2); v1 records have only the event time.
    let record_time = summary.received_at.unwrap_or(summary.timestamp);
    let context = summary.context_json;
    let (kind, checked) = match summary.event_type {
        t if t == RETENTION_EVENT.as_bytes() => {
            match serde_json::from_slice::<RetentionRecord>(context) {
                Ok(rec) => {
                    let checked = check_retention(&rec, seq, record_time);
                    (EngineKind::Retention(Some(rec)), checked)
                }
                Err(e) => (
                    EngineKind::Retention(None),
                    Err(format!(
                        "log.retention record with a malformed context: {e}"
                    )),
                ),
            }
        }
        t if t == HOLD_SET_EVENT.as_bytes() => (EngineKind::HoldSet, check_hold(context)),
        t if t == HOLD_RELEASED_EVENT.as_bytes() => (EngineKind::HoldReleased, check_hold(context)),
        t if t == RECOVERY_CUT_EVENT.as_bytes() => (
            EngineKind::Other,
            check_recovery_cut(context, seq, offset, segment),
        ),
        t if t == MIGRATED_EVENT.as_bytes() => (EngineKind::Other, check_migrated(context, offset)),
        t => (
            EngineKind::Other,
            Err(format!(
                "unknown engine record type {:?}",
                String::from_utf8_lossy(t)
            )),
        ),
    };
    Some(EngineRecord {
        seq,
        offset,
        kind,
        invalid: checked.err(),
    })
}

fn check_retention(rec: &RetentionRecord, seq: u64, record_time: Timestamp) -> Result<(), String> {
    let Some(last) = rec.deleted.last() else {
        return Err("log.retention record deletes no segment".into());
    };
    for (i, d) in rec.deleted.iter().enumerate() {
        if d.last_seq < d.base_seq || d.record_count != d.last_seq - d.base_seq + 1 {
            return Err(format!(
                "deleted entry {i}: record_count {} for seqs {}..={}",
                d.record_count, d.base_seq, d.last_seq
            ));
        }
        if d.file != segment::file_name(d.base_seq) {
            return Err(format!(
                "deleted entry {i}: file {:?} is not the name of a segment starting at seq {}",
                d.file, d.base_seq
            ));
        }
        if let Some(prev) = i.checked_sub(1).map(|p| &rec.deleted[p]) {
            if Some(d.base_seq) != prev.last_seq.checked_add(1) || d.prev_hash != prev.last_hash {
                return Err(format!(
                    "deleted entry {i} does not continue entry {}: base seq {} after last seq {}, or its prev_hash is not that entry's last_hash",
                    i - 1,
                    d.base_seq,
                    prev.last_seq
                ));
            }
        }
    }
    if Some(rec.first_retained_seq) != last.last_seq.checked_add(1)
        || rec.first_retained_prev_hash != last.last_hash
    {
        return Err(format!(
            "first_retained_seq {} / first_retained_prev_hash do not follow the last deleted segment (last seq {})",
            rec.first_retained_seq, last.last_seq
        ));
    }
    if seq <= last.last_seq {
        return Err(format!(
            "the record (seq {seq}) is not after the segments it deletes (up to seq {})",
            last.last_seq
        ));
    }
    if let Some(cutoff) = rec.cutoff {
        if cutoff > record_time {
            return Err(format!(
                "cutoff {cutoff} is after the record's own time {record_time}"
            ));
        }
        // Each entry's age time: its max_received_at (version 2 segments),
        // else its max_timestamp.
        for (i, d) in rec.deleted.iter().enumerate() {
            let age = d.age_time();
            if age >= cutoff {
                return Err(format!(
                    "deleted entry {i} is from {age}, not older than the cutoff {cutoff}"
                ));
            }
        }
    }
    Ok(())
}

/// `{"reason": string of 1..=1024 bytes}` and nothing else.
fn check_hold(context: &[u8]) -> Result<(), String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Hold {
        reason: String,
    }
    let hold: Hold = serde_json::from_slice(context).map_err(|e| format!("hold record: {e}"))?;
    if hold.reason.is_empty() || hold.reason.len() > MAX_REASON_BYTES {
        return Err(format!(
            "hold record: reason of {} bytes (1..={MAX_REASON_BYTES})",
            hold.reason.len()
        ));
    }
    Ok(())
}

fn check_recovery_cut(context: &[u8], seq: u64, offset: u64, segment: &str) -> Result<(), String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Dropped {
        seq: u64,
        #[allow(dead_code)] // checked by its type
        hash: ChainHash,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RecoveryCut {
        segment: String,
        cut_at: u64,
        #[allow(dead_code)] // checked by its type (a u64; 0 when only a trailer was cut)
        cut_bytes: u64,
        quarantine: String,
        quarantine_sha256: String,
        dropped: Vec<Dropped>,
    }
    let cut: RecoveryCut =
        serde_json::from_slice(context).map_err(|e| format!("log.recovery_cut record: {e}"))?;
    // The record starts where the cut starts, or, when it did not fit in
    // the rest of that segment, as the first frame of the next one (the
    // kept frames were sealed).
    let in_place = cut.segment == segment && cut.cut_at == offset;
    let rolled = offset == HEADER_BYTES
        && matches!(
            (segment::parse_file_name(&cut.segment), segment::parse_file_name(segment)),
            (Some(cut_base), Some(own_base)) if cut_base < own_base
        );
    if !(in_place || rolled) {
        return Err(format!(
            "log.recovery_cut says the cut is at byte {} of {:?}, but its frame is at byte {offset} of {segment}",
            cut.cut_at, cut.segment
        ));
    }
    let plain_name = !cut.quarantine.is_empty()
        && !cut.quarantine.contains(['/', '\\'])
        && cut.quarantine != "."
        && cut.quarantine != "..";
    if !plain_name {
        return Err(format!(
            "log.recovery_cut quarantine {:?} is not a file name",
            cut.quarantine
        ));
    }
    let hex = cut.quarantine_sha256.len() == 64
        && cut
            .quarantine_sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex {
        return Err("log.recovery_cut quarantine_sha256 is not 64 lowercase hex digits".into());
    }
    let mut after = seq;
    for (i, d) in cut.dropped.iter().enumerate() {
        if d.seq < after || (i > 0 && d.seq == after) {
            return Err(format!(
                "log.recovery_cut dropped seqs are not ascending from the record's seq {seq}"
            ));
        }
        after = d.seq;
    }
    Ok(())
}

fn check_migrated(context: &[u8], offset: u64) -> Result<(), String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Migrated {
        from_version: u16,
    }
    let m: Migrated =
        serde_json::from_slice(context).map_err(|e| format!("log.migrated record: {e}"))?;
    if m.from_version != 1 {
        return Err(format!(
            "log.migrated from version {}: only 1 is known",
            m.from_version
        ));
    }
    if offset != HEADER_BYTES {
        return Err(format!(
            "log.migrated must be the first record of its segment, not at byte {offset}"
        ));
    }
    Ok(())
}

/// The legal hold as the engine records say, in chain order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HoldState {
    NotHeld,
    Held,
    /// The log starts after retention: the records that set or released a
    /// hold before it are gone.
    Unknown,
}

impl HoldState {
    /// The state at the start of a log whose first record is `first_seq`.
    pub(crate) fn at_start(first_seq: u64) -> Self {
        if first_seq == 0 {
            HoldState::NotHeld
        } else {
            HoldState::Unknown
        }
    }

    /// Moves past `rec`; the problem it is, if any.
    pub(crate) fn apply(&mut self, rec: &EngineRecord) -> Option<(ProblemKind, String)> {
        let before = *self;
        let (after, problem) = match (&rec.kind, before) {
            (EngineKind::HoldSet, HoldState::Held) => (
                HoldState::Held,
                Some((
                    ProblemKind::EngineRecordInvalid,
                    "log.hold_set while a legal hold was already in force".to_string(),
                )),
            ),
            (EngineKind::HoldSet, _) => (HoldState::Held, None),
            (EngineKind::HoldReleased, HoldState::NotHeld) => (
                HoldState::NotHeld,
                Some((
                    ProblemKind::EngineRecordInvalid,
                    "log.hold_released while no legal hold was in force".to_string(),
                )),
            ),
            (EngineKind::HoldReleased, _) => (HoldState::NotHeld, None),
            (EngineKind::Retention(_), HoldState::Held) => (
                HoldState::NotHeld,
                Some((
                    ProblemKind::RetentionDuringHold,
                    "a retention record while a legal hold was in force".to_string(),
                )),
            ),
            (EngineKind::Retention(_), _) => (HoldState::NotHeld, None),
            (EngineKind::Other, state) => (state, None),
        };
        *self = after;
        problem
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retention::{DeletedSegment, RetentionPolicy};

    const DAY: i64 = 86_400_000_000_000;

    fn entry(base: u64, last: u64, prev: u8, max_day: i64) -> DeletedSegment {
        DeletedSegment {
            file: segment::file_name(base),
            base_seq: base,
            last_seq: last,
            record_count: last - base + 1,
            prev_hash: ChainHash([prev; 32]),
            last_hash: ChainHash([prev + 1; 32]),
            min_timestamp: Timestamp::from_unix_nanos(0),
            max_timestamp: Timestamp::from_unix_nanos(max_day * DAY),
            bytes: 1,
            max_received_at: None,
        }
    }

    fn record() -> RetentionRecord {
        RetentionRecord {
            first_retained_seq: 20,
            first_retained_prev_hash: ChainHash([2; 32]),
            deleted: vec![entry(0, 9, 0, 1), entry(10, 19, 1, 2)],
            cutoff: Some(Timestamp::from_unix_nanos(3 * DAY)),
            policy: RetentionPolicy::default(),
        }
    }

    fn check(rec: &RetentionRecord, seq: u64, day: i64) -> Result<(), String> {
        // What the verifier checks is what the record's JSON holds.
        let json = serde_json::to_vec(rec).unwrap();
        let parsed: RetentionRecord = serde_json::from_slice(&json).unwrap();
        check_retention(&parsed, seq, Timestamp::from_unix_nanos(day * DAY))
    }

    #[test]
    fn retention_schema_rules() {
        assert_eq!(check(&record(), 25, 4), Ok(()));
        type Damage = Box<dyn Fn(&mut RetentionRecord)>;
        let broken: Vec<(&str, Damage, u64, i64)> = vec![
            ("no entries", Box::new(|r| r.deleted.clear()), 25, 4),
            ("gap", Box::new(|r| r.deleted[1].base_seq = 11), 25, 4),
            ("count", Box::new(|r| r.deleted[0].record_count = 9), 25, 4),
            (
                "file",
                Box::new(|r| r.deleted[0].file = "x.seg".into()),
                25,
                4,
            ),
            (
                "link",
                Box::new(|r| r.deleted[1].prev_hash = ChainHash([9; 32])),
                25,
                4,
            ),
            (
                "first retained",
                Box::new(|r| r.first_retained_seq = 21),
                25,
                4,
            ),
            ("own seq", Box::new(|_| {}), 19, 4),
            ("cutoff after record", Box::new(|_| {}), 25, 2),
            (
                "entry not old",
                Box::new(|r| r.cutoff = Some(Timestamp::from_unix_nanos(2 * DAY))),
                25,
                4,
            ),
        ];
        for (what, damage, seq, day) in broken {
            let mut r = record();
            damage(&mut r);
            assert!(check(&r, seq, day).is_err(), "{what} was accepted");
        }
        let mut no_cutoff = record();
        no_cutoff.cutoff = None;
        assert_eq!(check(&no_cutoff, 25, 0), Ok(()));
        // With times of receipt, those count, not the event times: a
        // segment dated in 2261 but received on day 1 is old enough...
        let mut received = record();
        for d in &mut received.deleted {
            d.max_timestamp = Timestamp::from_unix_nanos(106_000 * DAY);
            d.max_received_at = Some(Timestamp::from_unix_nanos(2 * DAY));
        }
        assert_eq!(check(&received, 25, 4), Ok(()));
        // ... and one dated day 1 but received on day 3 is not.
        let mut late = record();
        late.deleted[1].max_received_at = Some(Timestamp::from_unix_nanos(3 * DAY));
        assert!(check(&late, 25, 4).is_err());
    }

    #[test]
    fn hold_state_machine() {
        let rec = |kind| EngineRecord {
            seq: 7,
            offset: 128,
            kind,
            invalid: None,
        };
        let mut s = HoldState::at_start(0);
        assert!(s.apply(&rec(EngineKind::HoldReleased)).is_some());
        assert!(s.apply(&rec(EngineKind::HoldSet)).is_none());
        assert!(s.apply(&rec(EngineKind::HoldSet)).is_some());
        let during = s.apply(&rec(EngineKind::Retention(None)));
        assert_eq!(during.map(|p| p.0), Some(ProblemKind::RetentionDuringHold));
        assert_eq!(s, HoldState::NotHeld);
        // After retention, the first hold record may be either.
        let mut s = HoldState::at_start(50);
        assert!(s.apply(&rec(EngineKind::HoldReleased)).is_none());
        let mut s = HoldState::at_start(50);
        assert!(s.apply(&rec(EngineKind::HoldSet)).is_none());
    }

    #[test]
    fn hold_reason_and_recovery_cut_schemas() {
        assert!(check_hold(br#"{"reason":"audit"}"#).is_ok());
        assert!(check_hold(br#"{"reason":""}"#).is_err());
        assert!(check_hold(br#"{"reason":"a","by":"x"}"#).is_err());
        let long = format!(r#"{{"reason":"{}"}}"#, "x".repeat(1025));
        assert!(check_hold(long.as_bytes()).is_err());
        let seg = segment::file_name(0);
        let cut = |at: u64, seq: u64| {
            format!(
                r#"{{"segment":"{seg}","cut_at":{at},"cut_bytes":64,"quarantine":"{seg}-{at}.bin","quarantine_sha256":"{}","dropped":[{{"seq":{seq},"hash":"{}"}}]}}"#,
                "ab".repeat(32),
                "00".repeat(32)
            )
        };
        assert_eq!(
            check_recovery_cut(cut(256, 5).as_bytes(), 5, 256, &seg),
            Ok(())
        );
        assert!(check_recovery_cut(cut(256, 5).as_bytes(), 5, 264, &seg).is_err());
        assert!(check_recovery_cut(cut(256, 4).as_bytes(), 5, 256, &seg).is_err());
        assert!(check_migrated(br#"{"from_version":1}"#, HEADER_BYTES).is_ok());
        assert!(check_migrated(br#"{"from_version":1}"#, 256).is_err());
        assert!(check_migrated(br#"{"from_version":2}"#, HEADER_BYTES).is_err());
    }
}
