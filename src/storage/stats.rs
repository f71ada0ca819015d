//! The engine's counters, process-wide: `fdatasync`s on the real disk and
//! how long they took, and the records and bytes appended. A monitoring
//! front end (the server's `GET /metrics`) reads them with [`snapshot`].
//!
//! They are plain relaxed atomics, a few nanoseconds per append or sync:
//! counting costs nothing next to the `fdatasync` it counts. The simulated
//! disk keeps its own counts and does not touch these.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (inclusive) of the `fdatasync` latency buckets, in
/// microseconds; a last, unbounded bucket takes the rest. From a fast NVMe
/// sync (tens of µs) to a stalled disk (a second).
pub const SYNC_BUCKETS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 250_000, 1_000_000,
];

const BUCKETS: usize = SYNC_BUCKETS_US.len() + 1;

struct Counters {
    syncs: AtomicU64,
    sync_ns: AtomicU64,
    sync_buckets: [AtomicU64; BUCKETS],
    records: AtomicU64,
    record_bytes: AtomicU64,
}

static COUNTERS: Counters = Counters {
    syncs: AtomicU64::new(0),
    sync_ns: AtomicU64::new(0),
    sync_buckets: [const { AtomicU64::new(0) }; BUCKETS],
    records: AtomicU64::new(0),
    record_bytes: AtomicU64::new(0),
};

/// The counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineStats {
    /// `fdatasync` calls on the real disk (segments, indexes, files the
    /// engine writes), successful or not.
    pub syncs: u64,
    /// Their total time, in nanoseconds.
    pub sync_ns: u64,
    /// How many took at most each bound of [`SYNC_BUCKETS_US`] and more
    /// than the one before (the last entry: longer than the last bound).
    /// Not cumulative.
    pub sync_buckets: [u64; BUCKETS],
    /// Records appended to any log of this process.
    pub records_appended: u64,
    /// Their bytes as framed on disk.
    pub record_bytes_appended: u64,
}

/// Counts one `fdatasync` that took `took`.
pub(crate) fn record_sync(took: Duration) {
    let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
    let us = ns / 1_000;
    let bucket = SYNC_BUCKETS_US
        .iter()
        .position(|&bound| us <= bound)
        .unwrap_or(SYNC_BUCKETS_US.len());
    COUNTERS.sync_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    COUNTERS.sync_ns.fetch_add(ns, Ordering::Relaxed);
    COUNTERS.syncs.fetch_add(1, Ordering::Relaxed);
}

/// Counts `records` appended in `bytes` of frames.
pub(crate) fn record_append(records: u64, bytes: u64) {
    COUNTERS.records.fetch_add(records, Ordering::Relaxed);
    COUNTERS.record_bytes.fetch_add(bytes, Ordering::Relaxed);
}

/// The counters now. Each is read on its own, so a sync counted while this
/// reads may show in the buckets and not yet in [`EngineStats::syncs`].
pub fn snapshot() -> EngineStats {
    EngineStats {
        syncs: COUNTERS.syncs.load(Ordering::Relaxed),
        sync_ns: COUNTERS.sync_ns.load(Ordering::Relaxed),
        sync_buckets: std::array::from_fn(|i| COUNTERS.sync_buckets[i].load(Ordering::Relaxed)),
        records_appended: COUNTERS.records.load(Ordering::Relaxed),
        record_bytes_appended: COUNTERS.record_bytes.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_lands_in_its_bucket() {
        // Other tests in this process sync too: compare the bucket that no
        // real disk reaches (over a second) before and after.
        let before = snapshot();
        record_sync(Duration::from_secs(2));
        record_sync(Duration::from_micros(1_000_000));
        let after = snapshot();
        assert!(after.sync_buckets[BUCKETS - 1] > before.sync_buckets[BUCKETS - 1]);
        assert!(after.sync_buckets[BUCKETS - 2] > before.sync_buckets[BUCKETS - 2]);
        assert!(after.syncs >= before.syncs + 2);
        assert!(after.sync_ns >= before.sync_ns + 3_000_000_000);
    }
}
