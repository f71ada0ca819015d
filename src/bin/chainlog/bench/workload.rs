//! The measured work: appenders, the log a run builds, open and query timings.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chainlog::query::{Filter, Query};
use chainlog::{Durability, Event, Log, Options};

use crate::error::CliError;
use events::{rare_actor, EventGen};

use super::*;

/// One append measurement: a log in its own directory, appended to by
/// `writers` threads in slices of time.
pub(super) struct Appender {
    pub(super) dir: PathBuf,
    pub(super) log: Log,
    pub(super) pool: Arc<Vec<Event>>,
    pub(super) writers: usize,
    pub(super) batch: usize,
    /// Where each writer is in the pool (in batches).
    pub(super) next_chunk: std::cell::Cell<usize>,
}

impl Appender {
    pub(super) fn new(
        work: &WorkDir,
        name: &str,
        durability: Durability,
        writers: usize,
        batch: usize,
        pool: &Arc<Vec<Event>>,
    ) -> Result<Appender, CliError> {
        let dir = work.fresh(name);
        let options = Options {
            durability,
            ..Options::default()
        };
        Ok(Appender {
            log: Log::create(&dir, options)?,
            dir,
            pool: pool.clone(),
            writers,
            batch,
            next_chunk: std::cell::Cell::new(0),
        })
    }

    /// Appends for about `budget`, or until `cap` events; the time runs from
    /// when all writers are ready until the last append returns.
    pub(super) fn run(&self, budget: Duration, cap: u64) -> Result<Rate, CliError> {
        let (log, pool, batch, writers) = (&self.log, &*self.pool, self.batch, self.writers);
        let chunks = pool.len() / batch;
        let first_chunk = self.next_chunk.get();
        let claimed = AtomicU64::new(0);
        let ready = std::sync::Barrier::new(writers + 1);
        let (results, seconds) = std::thread::scope(|s| {
            let handles: Vec<_> = (0..writers)
                .map(|w| {
                    let (claimed, ready) = (&claimed, &ready);
                    s.spawn(move || -> Result<(u64, usize), chainlog::Error> {
                        let mut k = first_chunk + w * chunks / writers;
                        let mut appended = 0;
                        ready.wait();
                        let start = Instant::now();
                        while start.elapsed() < budget {
                            let n = batch as u64;
                            if claimed.fetch_add(n, Ordering::Relaxed) + n > cap {
                                break;
                            }
                            let slice = &pool[(k % chunks) * batch..][..batch];
                            if batch == 1 {
                                log.append(&slice[0])?;
                            } else {
                                log.append_batch(slice)?;
                            }
                            appended += n;
                            k += 1;
                        }
                        Ok((appended, k))
                    })
                })
                .collect();
            ready.wait();
            let start = Instant::now();
            let results: Vec<_> = handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Ok((0, 0))))
                .collect();
            (results, start.elapsed().as_secs_f64())
        });
        let mut events = 0;
        for r in results {
            let (appended, k) = r?;
            events += appended;
            self.next_chunk.set(self.next_chunk.get().max(k));
        }
        Ok(Rate {
            amount: events as f64,
            seconds,
        })
    }

    /// Closes the log (syncing it) and removes it.
    pub(super) fn close(self) -> Result<(), CliError> {
        self.log.close()?;
        let _ = fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

pub(super) struct BuiltLog {
    pub(super) events: u64,
    pub(super) bytes: u64,
    pub(super) segments: u64,
    /// Records in the newest segment.
    pub(super) active_records: u64,
    /// Those as a share of a sealed segment's records.
    pub(super) active_fill: f64,
    /// Records of the queried rare actor.
    pub(super) rare_matches: u64,
}

/// Builds the large log with `Durability::None` and batches, generating
/// events on a second thread.
pub(super) fn build_log(dir: &Path, plan: &Plan, event_bytes: usize) -> Result<BuiltLog, CliError> {
    let options = Options {
        durability: Durability::None,
        segment_bytes: plan.log_segment_bytes,
        ..Options::default()
    };
    let log = Log::create(dir, options)?;
    let total = plan.log_events;
    let wanted = rare_actor(QUERIED_RARE_ACTOR);
    // Batches well under a segment: events are at most 1.15 × event_bytes.
    let batch = (plan.log_segment_bytes / 2 / (2 * event_bytes as u64 + 64)).clamp(1, 1024);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Event>>(8);
    let generator = std::thread::spawn(move || {
        let mut gen = EventGen::new(SEED ^ 0x5eed, event_bytes);
        let mut left = total;
        let mut rare = 0u64;
        while left > 0 {
            let n = left.min(batch);
            let batch: Vec<Event> = (&mut gen).take(n as usize).collect();
            rare += batch.iter().filter(|e| e.actor == wanted).count() as u64;
            if tx.send(batch).is_err() {
                break;
            }
            left -= n;
        }
        rare
    });
    let mut appended = 0;
    for batch in rx {
        appended += log.append_batch(&batch)?.len() as u64;
    }
    let rare_matches = generator.join().unwrap_or(0);
    let segments = log.state().segments as u64;
    log.close()?;
    let mut bytes = 0;
    let mut newest_base = 0;
    for (base, path) in crate::read::segment_files(dir)? {
        bytes += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        newest_base = newest_base.max(base);
    }
    // Records in the newest (unsealed) segment, which open scans, against
    // the average of the sealed ones.
    let active_records = appended - newest_base;
    let active_fill = if segments > 1 {
        active_records as f64 / (newest_base as f64 / (segments - 1) as f64)
    } else {
        1.0
    };
    Ok(BuiltLog {
        events: appended,
        bytes,
        segments,
        active_records,
        active_fill,
        rare_matches,
    })
}

/// Median of three read-write opens (the open an appender does: recovery of
/// the newest segment included).
pub(super) fn open_ms(dir: &Path) -> Result<f64, CliError> {
    let mut times = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let log = Log::open(
            dir,
            Options {
                durability: Durability::None,
                ..Options::default()
            },
        )?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        log.close()?;
    }
    times.sort_by(f64::total_cmp);
    Ok(times[1])
}

/// Median of three runs of a query for one actor; returns the time and the
/// number of matches.
pub(super) fn query_ms(dir: &Path, actor: &str) -> Result<(f64, u64), CliError> {
    let log = Log::open(dir, Options::for_reading())?;
    let query = Query {
        filter: Filter {
            actors: vec![actor.to_string()],
            ..Filter::default()
        },
        ..Query::default()
    };
    let mut times = Vec::new();
    let mut matches = 0;
    for _ in 0..3 {
        let start = Instant::now();
        matches = 0;
        for m in log.query(&query)? {
            std::hint::black_box(m?);
            matches += 1;
        }
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[1], matches))
}
