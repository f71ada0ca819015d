//! Fixed time windows for the audit limiters (refusals in `audit.rs`, reads
//! in `reads.rs`): what happened past a budget in one window is counted
//! and written as one summary event when the window ends.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::event::Timestamp;

/// Fixed windows of one length from a start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WindowClock {
    epoch: Instant,
    epoch_at: Timestamp,
    length: Duration,
}

impl WindowClock {
    /// Windows of `length` (at least 1 ms) starting at `epoch` (which is
    /// `epoch_at` on the wall clock).
    pub(crate) fn new(epoch: Instant, epoch_at: Timestamp, length: Duration) -> Self {
        WindowClock {
            epoch,
            epoch_at,
            length: length.max(Duration::from_millis(1)),
        }
    }

    /// The window `now` falls in.
    pub(crate) fn index(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.epoch).as_nanos() / self.length.as_nanos()) as u64
    }

    /// The window's start and end on the wall clock, as text.
    pub(crate) fn bounds(&self, index: u64) -> (String, String) {
        let len = i64::try_from(self.length.as_nanos()).unwrap_or(i64::MAX);
        let start = self
            .epoch_at
            .unix_nanos()
            .saturating_add(len.saturating_mul(index as i64));
        (
            Timestamp::from_unix_nanos(start).to_string(),
            Timestamp::from_unix_nanos(start.saturating_add(len)).to_string(),
        )
    }
}

/// What a limiter keeps for one window.
pub(crate) trait WindowCounts: Default {
    /// Nothing to summarise: an ended window like this is dropped.
    fn is_empty(&self) -> bool;
}

/// An ended window: its start and end as text, and its counts.
pub(crate) struct Ended<W> {
    pub(crate) start: String,
    pub(crate) end: String,
    pub(crate) counts: W,
}

/// The current window and the ended ones whose summaries are not taken yet.
#[derive(Debug)]
pub(crate) struct Windows<W> {
    clock: WindowClock,
    index: u64,
    current: W,
    ended: Vec<(u64, W)>,
}

impl<W: WindowCounts> Windows<W> {
    /// Windows of `length` from `epoch` (now, on the wall clock).
    pub(crate) fn new(epoch: Instant, length: Duration) -> Self {
        Windows {
            clock: WindowClock::new(epoch, Timestamp::now(), length),
            index: 0,
            current: W::default(),
            ended: Vec::new(),
        }
    }

    /// The counts of the window `now` falls in (ending the current one if
    /// `now` is past it).
    pub(crate) fn at(&mut self, now: Instant) -> &mut W {
        self.roll(self.clock.index(now));
        &mut self.current
    }

    /// Ends the windows that are over at `now` (and the current one too
    /// with `all`), and hands them over.
    pub(crate) fn take_due(&mut self, now: Instant, all: bool) -> Vec<Ended<W>> {
        self.roll(self.clock.index(now));
        let mut ended = std::mem::take(&mut self.ended);
        if all {
            ended.push((self.index, std::mem::take(&mut self.current)));
        }
        ended
            .into_iter()
            .map(|(index, counts)| {
                let (start, end) = self.clock.bounds(index);
                Ended { start, end, counts }
            })
            .collect()
    }

    fn roll(&mut self, index: u64) {
        if index > self.index {
            let ended = std::mem::take(&mut self.current);
            if !ended.is_empty() {
                self.ended.push((self.index, ended));
            }
            self.index = index;
        }
    }
}

/// Counts by name, naming at most `max` names; the rest are counted in
/// `unlisted`.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) listed: BTreeMap<String, u64>,
    pub(crate) unlisted: u64,
}

impl Tally {
    pub(crate) fn add(&mut self, name: &str, max: usize) {
        if let Some(n) = self.listed.get_mut(name) {
            *n += 1;
        } else if self.listed.len() < max {
            self.listed.insert(name.to_string(), 1);
        } else {
            self.unlisted += 1;
        }
    }
}
