//! Pages of matches in event-time order.
//!
//! The log stores records in arrival (seq) order, and a client's timestamp
//! may be late or early, so event-time order cannot be read off the log.
//! A page is found by scanning slices of event time outwards from where the
//! last page ended: the first slice is open on the far side (it takes every
//! early-dated record when going oldest first, or every future-dated one
//! when going newest first), each next slice is twice as wide and adjoins
//! the last, and the scan stops once a slice boundary has `limit + 1`
//! matches behind it. Every slice is a filtered query, so the time index
//! skips segments outside it; no record is read twice, and memory holds at
//! most `limit + 1` matches. The order is total: (event time, seq).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::str::FromStr;

use super::{Match, Query};
use crate::error::Result;
use crate::event::Timestamp;
use crate::log::Log;

/// The first slice's width, one hour; each next slice is twice as wide.
const FIRST_SLICE_NANOS: i64 = 3_600 * 1_000_000_000;

/// Where a page in event-time order ended: its last row's event time and
/// seq. Written as `<unix nanoseconds>.<seq>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeCursor {
    /// The last row's event time.
    pub timestamp: Timestamp,
    /// The last row's seq.
    pub seq: u64,
}

impl fmt::Display for TimeCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.timestamp.unix_nanos(), self.seq)
    }
}

/// A cursor that is not `<unix nanoseconds>.<seq>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad time-order cursor {0:?} (expected <unix nanoseconds>.<seq>, the next_cursor of the previous page)")]
pub struct BadTimeCursor(pub String);

impl FromStr for TimeCursor {
    type Err = BadTimeCursor;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        let bad = || BadTimeCursor(text.chars().take(100).collect());
        let (nanos, seq) = text.split_once('.').ok_or_else(bad)?;
        Ok(TimeCursor {
            timestamp: Timestamp::from_unix_nanos(nanos.parse().map_err(|_| bad())?),
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// One page in event-time order.
#[derive(Debug, Clone)]
pub struct TimePage {
    /// The matches, in the page's order.
    pub matches: Vec<Match>,
    /// Where the next page starts, when more match.
    pub next_cursor: Option<TimeCursor>,
    /// The page was taken over the records below this seq: records appended
    /// while it was read are left for a later page or reload.
    pub through: u64,
}

/// The rows kept so far: the `keep` first in the page's order.
struct Best {
    keep: usize,
    newest_first: bool,
    /// Keyed so that the heap's top is the row to drop first.
    heap: BinaryHeap<(Key, Slot)>,
}

/// A row's place in the page's order (smaller comes first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Ascending(TimeCursor),
    Descending(Reverse<TimeCursor>),
}

/// A match, ordered by nothing (the key orders the heap).
struct Slot(Match);

impl PartialEq for Slot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Slot {}
impl PartialOrd for Slot {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Slot {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl Best {
    fn key(&self, at: TimeCursor) -> Key {
        if self.newest_first {
            Key::Descending(Reverse(at))
        } else {
            Key::Ascending(at)
        }
    }

    fn offer(&mut self, at: TimeCursor, m: Match) {
        let key = self.key(at);
        if self.heap.len() == self.keep {
            match self.heap.peek() {
                Some((worst, _)) if key < *worst => {
                    self.heap.pop();
                }
                _ => return,
            }
        }
        self.heap.push((key, Slot(m)));
    }

    fn full(&self) -> bool {
        self.heap.len() == self.keep
    }

    fn into_sorted(self) -> Vec<(Key, Match)> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|(key, Slot(m))| (key, m))
            .collect()
    }
}

impl Log {
    /// One page of `query`'s matches in event-time order: oldest first, or
    /// newest first when `query.reverse`; ties in time go by seq. `limit`
    /// is the page size (default 100); `from_seq` and `after` must be
    /// unset (the cursor takes their place). Continue with the page's
    /// `next_cursor`.
    pub fn page_by_time(&self, query: &Query, cursor: Option<TimeCursor>) -> Result<TimePage> {
        let limit = query.limit.unwrap_or(100).max(1);
        let through = self.state().next_seq;
        let newest_first = query.reverse;
        let mut best = Best {
            keep: usize::try_from(limit.saturating_add(1)).unwrap_or(usize::MAX),
            newest_first,
            heap: BinaryHeap::new(),
        };
        // The bounds left to scan: [low, high) in event time.
        let mut low = query.filter.since.map_or(i64::MIN, Timestamp::unix_nanos);
        let mut high = query.filter.until.map_or(i64::MAX, Timestamp::unix_nanos);
        if let Some(c) = cursor {
            let at = c.timestamp.unix_nanos();
            if newest_first {
                high = high.min(at.saturating_add(1));
            } else {
                low = low.max(at);
            }
        }
        let mut width = FIRST_SLICE_NANOS;
        let mut first = true;
        while low < high && !best.full() {
            // The slice: open on the far side the first time.
            let (from, to) = if newest_first {
                let anchor = if first {
                    self.anchor_time(through, true)?.unwrap_or(high).min(high)
                } else {
                    high
                };
                let from = anchor.saturating_sub(width).max(low);
                (from, high)
            } else {
                let anchor = if first {
                    self.anchor_time(through, false)?.unwrap_or(low).max(low)
                } else {
                    low
                };
                (low, anchor.saturating_add(width).min(high))
            };
            let mut slice = query.clone();
            slice.limit = None;
            slice.reverse = false;
            slice.filter.since = (from != i64::MIN).then(|| Timestamp::from_unix_nanos(from));
            slice.filter.until = (to != i64::MAX).then(|| Timestamp::from_unix_nanos(to));
            for m in self.query(&slice)? {
                let m = m?;
                if m.seq >= through {
                    break;
                }
                let at = TimeCursor {
                    timestamp: m.view()?.timestamp,
                    seq: m.seq,
                };
                let past_cursor = cursor.is_none_or(|c| if newest_first { at < c } else { at > c });
                if past_cursor {
                    best.offer(at, m);
                }
            }
            if newest_first {
                high = from;
            } else {
                low = to;
            }
            width = width.saturating_mul(2);
            first = false;
        }
        let mut rows = best.into_sorted();
        let next_cursor = if rows.len() as u64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|(key, _)| match *key {
                Key::Ascending(at) | Key::Descending(Reverse(at)) => at,
            })
        } else {
            None
        };
        Ok(TimePage {
            matches: rows.into_iter().map(|(_, m)| m).collect(),
            next_cursor,
            through,
        })
    }

    /// The event time of the newest record below `through` (or of the
    /// oldest retained one): where the first slice starts.
    fn anchor_time(&self, through: u64, newest: bool) -> Result<Option<i64>> {
        let Some(last) = through.checked_sub(1) else {
            return Ok(None);
        };
        let probe = Query {
            from_seq: newest.then_some(last),
            reverse: newest,
            limit: Some(1),
            ..Query::default()
        };
        match self.query(&probe)?.next() {
            Some(m) => Ok(Some(m?.view()?.timestamp.unix_nanos())),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::log::Options;
    use crate::query::Filter;

    /// A log whose event times are out of arrival order: seq i is dated
    /// `times[i]` hours after 2026-01-01.
    fn log_with_hours(times: &[i64]) -> (tempfile::TempDir, Log) {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::create(dir.path().join("log"), Options::default()).unwrap();
        let base = Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        for (i, h) in times.iter().enumerate() {
            let at = Timestamp::from_unix_nanos(base.unix_nanos() + h * 3_600_000_000_000);
            let actor = if i % 2 == 0 { "alice" } else { "bob" };
            log.append(&Event::new(at, "test.event", actor)).unwrap();
        }
        (dir, log)
    }

    /// Every page of a walk, as seqs.
    fn walk(log: &Log, query: &Query) -> Vec<u64> {
        let mut seqs = Vec::new();
        let mut cursor = None;
        loop {
            let page = log.page_by_time(query, cursor).unwrap();
            assert!(page.matches.len() as u64 <= query.limit.unwrap());
            seqs.extend(page.matches.iter().map(|m| m.seq));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return seqs,
            }
        }
    }

    /// The same order by sorting every match.
    fn sorted(log: &Log, query: &Query) -> Vec<u64> {
        let mut all: Vec<(i64, u64)> = log
            .query(&Query {
                filter: query.filter.clone(),
                ..Query::default()
            })
            .unwrap()
            .map(|m| {
                let m = m.unwrap();
                (m.view().unwrap().timestamp.unix_nanos(), m.seq)
            })
            .collect();
        all.sort();
        if query.reverse {
            all.reverse();
        }
        all.into_iter().map(|(_, seq)| seq).collect()
    }

    #[test]
    fn pages_walk_every_match_once_in_time_order() {
        // Late, early, far-future and equal times among ordinary ones.
        let mut hours: Vec<i64> = (0..200).collect();
        hours[50] = -24 * 400;
        hours[120] = 5;
        hours[121] = 5;
        hours[150] = 24 * 365 * 30;
        hours[10] = 180;
        let (_dir, log) = log_with_hours(&hours);
        for reverse in [true, false] {
            for limit in [1, 7, 100, 1000] {
                let query = Query {
                    reverse,
                    limit: Some(limit),
                    ..Query::default()
                };
                assert_eq!(
                    walk(&log, &query),
                    sorted(&log, &query),
                    "reverse {reverse} limit {limit}"
                );
                let alice = Query {
                    filter: Filter {
                        actors: vec!["alice".into()],
                        since: Some(Timestamp::parse_rfc3339("2026-01-02T00:00:00Z").unwrap()),
                        ..Filter::default()
                    },
                    ..query.clone()
                };
                assert_eq!(
                    walk(&log, &alice),
                    sorted(&log, &alice),
                    "filtered, reverse {reverse} limit {limit}"
                );
            }
        }
    }

    #[test]
    fn an_empty_log_and_no_match_give_an_empty_last_page() {
        let (_dir, log) = log_with_hours(&[]);
        let page = log.page_by_time(&Query::default(), None).unwrap();
        assert!(page.matches.is_empty() && page.next_cursor.is_none());
        let (_dir, log) = log_with_hours(&[1, 2, 3]);
        let none = Query {
            filter: Filter {
                actors: vec!["carol".into()],
                ..Filter::default()
            },
            reverse: true,
            ..Query::default()
        };
        let page = log.page_by_time(&none, None).unwrap();
        assert!(page.matches.is_empty() && page.next_cursor.is_none());
        assert_eq!(page.through, 3);
    }

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused() {
        let c = TimeCursor {
            timestamp: Timestamp::from_unix_nanos(-5),
            seq: 42,
        };
        assert_eq!(c.to_string().parse::<TimeCursor>().unwrap(), c);
        for bad in ["", "12", "x.1", "1.x", "1.2.3", "1.-1"] {
            assert!(bad.parse::<TimeCursor>().is_err(), "{bad}");
        }
    }
}
