//! `chainlog bench`: the engine's throughput, measured against this
//! machine's limits in the same run.
//!
//! Absolute numbers drift from run to run on shared machines, so every
//! engine figure is shown next to the limit that bounds it, measured
//! minutes apart on the same disk and core: SHA-256 over the same record
//! bytes, sequential write + `fdatasync` bandwidth, and small write +
//! `fdatasync` operations per second.
//!
//! Verify and export run in child processes (this executable re-invoked with
//! hidden arguments), so their peak memory (`VmHWM`) is theirs alone.

mod child;
mod events;
mod limits;
mod report;
mod thousands;
mod workload;

use child::{child_executable, run_child, spawn_child};
use limits::{interleave, seq_write_bytes, settle, sha256_bytes, Rate, RawFsync};
use report::print_rows;
use thousands::group_thousands;
use workload::{build_log, open_ms, query_ms, Appender};

use std::fs;
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chainlog::format::frame::padded_len;
use chainlog::{Durability, Event};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::error::CliError;
use crate::Global;
use events::{encode_all, rare_actor, EventGen};

/// What DESIGN.md says this machine does; the limit rows compare against it.
const NOMINAL_SHA256_BYTES_PER_S: f64 = 0.9e9;
const NOMINAL_SEQ_WRITE_BYTES_PER_S: f64 = 350e6;
const NOMINAL_SMALL_FSYNC_OPS_PER_S: f64 = 1.0 / 150e-6;
/// The targets for open time and peak memory.
const TARGET_OPEN_MS: f64 = 100.0;
const TARGET_PEAK_MIB: f64 = 64.0;
/// Events per `append_batch` call in the batch measurements.
const BATCH_EVENTS: usize = 256;
/// Seed of the event generator: every run sees the same events.
const SEED: u64 = 0x00c0_ffee;
/// Steps of the progress bar: one per `Progress::done` in `measure_all`.
const PROGRESS_STEPS: u64 = 9;
/// The rare actor queried (one of `events::RARE_ACTORS`).
const QUERIED_RARE_ACTOR: u64 = 4242;

/// Arguments of `chainlog bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Where to make the temporary work directory (removed afterwards); put
    /// it on the disk to measure. Default: the system temporary directory.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Smaller counts and shorter timings: under a minute on 2 cores (CI).
    #[arg(long)]
    quick: bool,
    /// Print a JSON array of {measurement, value, unit, limit, limit_unit,
    /// limit_name, ratio, note} instead of a table.
    #[arg(long)]
    json: bool,
    /// Average size of an encoded event record, in bytes (±15% per event).
    #[arg(long, value_name = "BYTES", default_value_t = 280,
          value_parser = clap::value_parser!(u32).range(100..=60_000))]
    event_bytes: u32,
    /// Concurrent writers in the many-writer measurements.
    #[arg(long, value_name = "N", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(2..=1024))]
    writers: u32,
    /// Events in the log built for open, verify, query and export; also
    /// caps each append measurement (for tests).
    #[arg(long, hide = true, value_name = "N")]
    events: Option<u64>,
    /// Segment size of the log built for open, verify, query and export.
    #[arg(long, hide = true, value_name = "BYTES", value_parser = crate::parse_size)]
    log_segment_bytes: Option<u64>,
    /// Seconds per timed measurement.
    #[arg(long, hide = true, value_name = "SECONDS")]
    seconds: Option<f64>,
    /// Internal: run one operation in this (child) process and print its
    /// time and peak memory as JSON.
    #[arg(long, hide = true, value_enum, requires = "child_log")]
    child: Option<ChildOp>,
    /// Internal: the log the child operation reads.
    #[arg(long, hide = true, value_name = "DIR")]
    child_log: Option<PathBuf>,
    /// Internal: verify threads in the child.
    #[arg(long, hide = true, default_value_t = 1)]
    child_threads: usize,
}

/// An operation measured in a child process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ChildOp {
    /// `verify_dir_with`.
    Verify,
    /// A full export as JSON Lines into `io::sink`.
    Export,
}

/// How big and how long.
struct Plan {
    /// Events generated up front and cycled through by the append measurements.
    pool_events: usize,
    /// Time budget of each timed measurement.
    seconds: f64,
    /// Most events one append measurement appends.
    append_max_events: u64,
    /// Events in the log for open, verify, query and export.
    log_events: u64,
    log_segment_bytes: u64,
    /// Bytes written (then synced) in each round of the sequential
    /// bandwidth limit.
    seq_write_bytes: u64,
    /// Rounds each limit is measured in, interleaved with the engine
    /// figures it bounds.
    rounds: usize,
}

impl Plan {
    fn new(args: &BenchArgs) -> Plan {
        let mut plan = if args.quick {
            Plan {
                pool_events: 8_192,
                seconds: 0.5,
                append_max_events: 2_000_000,
                log_events: 200_000,
                log_segment_bytes: 2 << 20,
                seq_write_bytes: 64 << 20,
                rounds: 3,
            }
        } else {
            Plan {
                pool_events: 65_536,
                seconds: 2.0,
                append_max_events: 20_000_000,
                log_events: 6_000_000,
                log_segment_bytes: 64 << 20,
                seq_write_bytes: 256 << 20,
                rounds: 8,
            }
        };
        if let Some(n) = args.events {
            plan.log_events = n.max(1);
            plan.append_max_events = n.max(1);
            plan.pool_events = plan.pool_events.min(n.max(BATCH_EVENTS as u64) as usize);
        }
        if let Some(bytes) = args.log_segment_bytes {
            plan.log_segment_bytes = bytes;
        }
        if let Some(s) = args.seconds {
            plan.seconds = s.max(0.01);
        }
        // Whole batches cycle through the pool.
        plan.pool_events = plan.pool_events.div_ceil(BATCH_EVENTS) * BATCH_EVENTS;
        plan
    }
}

/// One line of the result.
#[derive(Debug, Clone, Serialize)]
struct Row {
    measurement: String,
    value: f64,
    unit: &'static str,
    limit: f64,
    limit_unit: &'static str,
    /// What the limit is.
    limit_name: String,
    /// `value / limit`.
    ratio: f64,
    note: String,
}

fn row(
    measurement: impl Into<String>,
    (value, unit): (f64, &'static str),
    (limit, limit_unit): (f64, &'static str),
    limit_name: impl Into<String>,
    note: impl Into<String>,
) -> Row {
    Row {
        measurement: measurement.into(),
        value,
        unit,
        limit,
        limit_unit,
        limit_name: limit_name.into(),
        ratio: if limit > 0.0 { value / limit } else { 0.0 },
        note: note.into(),
    }
}

/// The work directory, removed when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create(parent: &Path) -> Result<WorkDir, CliError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = parent.join(format!("chainlog-bench-{}-{nanos}", std::process::id()));
        fs::create_dir_all(parent)
            .and_then(|()| fs::create_dir(&path))
            .map_err(|e| CliError::io(format!("creating {}", path.display()), e))?;
        Ok(WorkDir(path))
    }

    /// A path for a new file or directory; whatever was there is removed
    /// and the file system settled first.
    fn fresh(&self, name: &str) -> PathBuf {
        let path = self.0.join(name);
        let _ = fs::remove_dir_all(&path);
        let _ = fs::remove_file(&path);
        self.settle();
        path
    }

    fn settle(&self) {
        settle(&self.0);
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Progress on stderr: one step per measurement.
struct Progress(Option<ProgressBar>);

impl Progress {
    fn new(show: bool, steps: u64) -> Progress {
        if !show {
            return Progress(None);
        }
        let bar = ProgressBar::with_draw_target(Some(steps), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("bench [{bar:30}] {pos}/{len} {msg} ({elapsed})")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress(Some(bar))
    }

    fn step(&self, what: &str) {
        if let Some(bar) = &self.0 {
            bar.set_message(what.to_string());
        }
    }

    fn done(&self) {
        if let Some(bar) = &self.0 {
            bar.inc(1);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// Runs `chainlog bench`.
pub fn run(global: &Global, args: BenchArgs) -> Result<ExitCode, CliError> {
    if let Some(op) = args.child {
        let dir = args
            .child_log
            .as_deref()
            .ok_or_else(|| CliError::Usage("--child needs --child-log".into()))?;
        return run_child(op, dir, args.child_threads);
    }
    let plan = Plan::new(&args);
    let parent = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = WorkDir::create(&parent)?;
    let show_progress = !global.quiet && io::stderr().is_terminal();
    let progress = Progress::new(show_progress, PROGRESS_STEPS);
    let result = measure_all(&args, &plan, &work, &progress);
    progress.finish();
    let (rows, context) = result?;
    drop(work);
    print_rows(&rows, &context, args.json, global.quiet)?;
    Ok(ExitCode::SUCCESS)
}

/// Facts about the run, printed above the table.
struct RunContext {
    record_bytes: f64,
    frame_bytes: f64,
    cores: usize,
    log_events: u64,
    log_bytes: u64,
    log_segments: u64,
    work_dir: PathBuf,
    /// `/proc/loadavg` before and after: other work on the machine.
    load_before: String,
    load_after: String,
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".to_string(),
        |text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        },
    )
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn measure_all(
    args: &BenchArgs,
    plan: &Plan,
    work: &WorkDir,
    progress: &Progress,
) -> Result<(Vec<Row>, RunContext), CliError> {
    let load_before = load_average();
    let child_exe = child_executable(work)?;
    let event_bytes = args.event_bytes as usize;
    let writers = args.writers as usize;
    let pool: Arc<Vec<Event>> = Arc::new(
        EventGen::new(SEED, event_bytes)
            .take(plan.pool_events)
            .collect(),
    );
    let records = encode_all(&pool);
    let record_total: usize = records.iter().map(Vec::len).sum();
    let frame_total: usize = records.iter().map(|r| padded_len(r.len())).sum();
    let record_bytes = record_total as f64 / records.len() as f64;
    let frame_bytes = frame_total as f64 / records.len() as f64;
    let mut rows = Vec::new();

    let batch_policy = Durability::Batch {
        max_delay: Duration::from_millis(10),
        max_bytes: 1 << 20,
    };
    let rounds = plan.rounds;
    let slice = Duration::from_secs_f64(plan.seconds / rounds as f64);
    let cap = (plan.append_max_events / rounds as u64).max(1);
    let append_note = |run: &Rate| {
        format!(
            "{:.0} events in {:.2} s ({rounds} rounds interleaved with its limit), 64 MiB segments",
            run.amount, run.seconds
        )
    };

    // Each limit is measured in rounds interleaved with the engine figures
    // it bounds, so that drift (a noisy neighbour, background writeback)
    // hits both alike.
    progress.step("SHA-256 limit; append with OS buffering");
    let sha_name = "SHA-256 of the same record bytes, one core";
    let none_single = Appender::new(work, "none-single", Durability::None, 1, 1, &pool)?;
    let none_batch = Appender::new(work, "none-batch", Durability::None, 1, BATCH_EVENTS, &pool)?;
    let [sha, none_single_rate, none_batch_rate] = interleave(
        rounds,
        [
            &mut |_| Ok(sha256_bytes(&records, slice)),
            &mut |_| none_single.run(slice, cap),
            &mut |_| none_batch.run(slice, cap),
        ],
    )?;
    none_single.close()?;
    none_batch.close()?;
    let sha_bytes_per_s = sha.per_s();
    let sha_events = sha_bytes_per_s / record_bytes;
    rows.push(row(
        "limit: SHA-256, one core, record-sized buffers",
        (sha_bytes_per_s / 1e6, "MB/s"),
        (NOMINAL_SHA256_BYTES_PER_S / 1e6, "MB/s"),
        "DESIGN.md nominal",
        format!("Sha256::digest of each record ({record_bytes:.0} B average)"),
    ));
    for (name, run) in [
        ("append none, 1 writer, single", &none_single_rate),
        ("append none, 1 writer, batches of 256", &none_batch_rate),
    ] {
        rows.push(row(
            name,
            (run.per_s(), "events/s"),
            (sha_events, "events/s"),
            sha_name,
            append_note(run),
        ));
    }
    progress.done();

    progress.step("sequential write limit; append with group commit (Batch)");
    let seq_name = "sequential write + fdatasync bandwidth, as record bytes";
    let writers_name = format!("{writers} writers");
    let batch_single = Appender::new(work, "batch-single", batch_policy, 1, 1, &pool)?;
    let batch_batch = Appender::new(work, "batch-batch", batch_policy, 1, BATCH_EVENTS, &pool)?;
    let batch_many = Appender::new(work, "batch-many", batch_policy, writers, 1, &pool)?;
    let always_batch = Appender::new(
        work,
        "always-batch",
        Durability::Always,
        1,
        BATCH_EVENTS,
        &pool,
    )?;
    let seq_path = work.0.join("seq-write");
    let [seq, batch_single_rate, batch_batch_rate, batch_many_rate, always_batch_rate] =
        interleave(
            rounds,
            [
                &mut |_| seq_write_bytes(&seq_path, plan.seq_write_bytes),
                &mut |_| batch_single.run(slice, cap),
                &mut |_| batch_batch.run(slice, cap),
                &mut |_| batch_many.run(slice, cap),
                &mut |_| always_batch.run(slice, cap),
            ],
        )?;
    for a in [batch_single, batch_batch, batch_many, always_batch] {
        a.close()?;
    }
    let seq_bytes_per_s = seq.per_s();
    let seq_events = seq_bytes_per_s / record_bytes;
    rows.push(row(
        "limit: sequential write + fdatasync",
        (seq_bytes_per_s / 1e6, "MB/s"),
        (NOMINAL_SEQ_WRITE_BYTES_PER_S / 1e6, "MB/s"),
        "DESIGN.md nominal",
        format!(
            "{} MiB in 1 MiB writes to a new file, then one fdatasync; {rounds} rounds",
            plan.seq_write_bytes >> 20
        ),
    ));
    for (name, run) in [
        (
            "append batch, 1 writer, single".to_string(),
            &batch_single_rate,
        ),
        (
            "append batch, 1 writer, batches of 256".to_string(),
            &batch_batch_rate,
        ),
        (
            format!("append batch, {writers_name}, single"),
            &batch_many_rate,
        ),
        (
            "append always, 1 writer, batches of 256".to_string(),
            &always_batch_rate,
        ),
    ] {
        rows.push(row(
            name,
            (run.per_s(), "events/s"),
            (seq_events, "events/s"),
            seq_name,
            append_note(run),
        ));
    }
    progress.done();

    progress.step("small write + fdatasync limit; append with Always");
    let fsync_name = "small write + fdatasync rate";
    let write_len = frame_bytes.round() as usize;
    let raw = RawFsync::new(&work.fresh("small-fsync"), write_len)?;
    let always_single = Appender::new(work, "always-single", Durability::Always, 1, 1, &pool)?;
    let always_many = Appender::new(work, "always-many", Durability::Always, writers, 1, &pool)?;
    let [fsyncs, always_single_rate, always_many_rate] = interleave(
        rounds,
        [
            &mut |_| raw.run(slice),
            &mut |_| always_single.run(slice, cap),
            &mut |_| always_many.run(slice, cap),
        ],
    )?;
    always_single.close()?;
    always_many.close()?;
    drop(raw);
    let fsyncs_per_s = fsyncs.per_s();
    rows.push(row(
        "limit: small write + fdatasync",
        (fsyncs_per_s, "ops/s"),
        (NOMINAL_SMALL_FSYNC_OPS_PER_S, "ops/s"),
        "DESIGN.md nominal (150 us)",
        format!(
            "{write_len}-byte writes at increasing offsets of a preallocated file (as segments are), each followed by fdatasync; {rounds} rounds"
        ),
    ));
    for (name, run) in [
        (
            "append always, 1 writer, single".to_string(),
            &always_single_rate,
        ),
        (
            format!("append always, {writers_name}, single"),
            &always_many_rate,
        ),
    ] {
        rows.push(row(
            name,
            (run.per_s(), "events/s"),
            (fsyncs_per_s, "events/s"),
            fsync_name,
            append_note(run),
        ));
    }
    progress.done();

    // The large log for open, verify, query and export.
    progress.step("building the large log");
    let log_dir = work.fresh("large-log");
    let built = build_log(&log_dir, plan, event_bytes)?;
    progress.done();

    progress.step("open");
    let open_ms = open_ms(&log_dir)?;
    rows.push(row(
        "open (Log::open of the large log)",
        (open_ms, "ms"),
        (TARGET_OPEN_MS, "ms"),
        "target",
        format!(
            "median of 3; {} segments, {:.0} MiB; the newest (unsealed, scanned on open) holds {} records, {:.0}% of a sealed one",
            built.segments,
            built.bytes as f64 / (1 << 20) as f64,
            built.active_records,
            built.active_fill * 100.0
        ),
    ));
    progress.done();

    progress.step("verify, 1 thread");
    // Verify is one long run, so its limit is SHA-256 measured just before
    // and just after it (the mean), not the figure from minutes earlier.
    let sha_before = sha256_bytes(&records, slice);
    let verify1 = spawn_child(&child_exe, ChildOp::Verify, &log_dir, 1)?;
    let sha_after = sha256_bytes(&records, slice);
    let sha_around = (sha_before.per_s() + sha_after.per_s()) / 2.0;
    let verify1_rate = verify1.records as f64 / verify1.elapsed_s;
    rows.push(row(
        "verify, 1 thread",
        (verify1_rate, "events/s"),
        (sha_around / record_bytes, "events/s"),
        "SHA-256 of the same record bytes, one core, measured just before and after",
        format!(
            "{} records, {:.1} MB/s of segment data; {:.2} CPUs busy; SHA-256 {:.1} MB/s before, {:.1} MB/s after",
            verify1.records,
            verify1.bytes as f64 / verify1.elapsed_s / 1e6,
            verify1.cpus_used(),
            sha_before.per_s() / 1e6,
            sha_after.per_s() / 1e6
        ),
    ));
    progress.done();
    let n = cores();
    progress.step("verify, all cores");
    let verify_n = spawn_child(&child_exe, ChildOp::Verify, &log_dir, n)?;
    let verify_n_rate = verify_n.records as f64 / verify_n.elapsed_s;
    rows.push(row(
        format!("verify, {n} threads"),
        (verify_n_rate, "events/s"),
        (verify1_rate, "events/s"),
        "verify, 1 thread",
        format!(
            "{:.1} MB/s of segment data; {:.2} CPUs busy (less than {n} when other processes had the cores)",
            verify_n.bytes as f64 / verify_n.elapsed_s / 1e6,
            verify_n.cpus_used()
        ),
    ));
    rows.push(row(
        format!("peak memory, verify {n} threads"),
        (verify_n.vm_hwm_kib as f64 / 1024.0, "MiB"),
        (TARGET_PEAK_MIB, "MiB"),
        "target",
        format!(
            "VmHWM of a child process; {:.1} MiB before verifying",
            verify_n.vm_hwm_start_kib as f64 / 1024.0
        ),
    ));
    progress.done();

    progress.step("export");
    let export = spawn_child(&child_exe, ChildOp::Export, &log_dir, 1)?;
    rows.push(row(
        "export jsonl to a sink",
        (export.records as f64 / export.elapsed_s, "events/s"),
        (verify1_rate, "events/s"),
        "verify, 1 thread",
        format!(
            "{} rows; {:.2} CPUs busy",
            export.records,
            export.cpus_used()
        ),
    ));
    rows.push(row(
        "peak memory, export",
        (export.vm_hwm_kib as f64 / 1024.0, "MiB"),
        (TARGET_PEAK_MIB, "MiB"),
        "target",
        format!(
            "VmHWM of a child process; {:.1} MiB before exporting",
            export.vm_hwm_start_kib as f64 / 1024.0
        ),
    ));
    progress.done();

    progress.step("query");
    let (query_ms, matches) = query_ms(&log_dir, &rare_actor(QUERIED_RARE_ACTOR))?;
    if matches != built.rare_matches {
        return Err(CliError::Integrity(format!(
            "bench: the query found {matches} records of the rare actor, {} were appended",
            built.rare_matches
        )));
    }
    let full_scan_ms = built.events as f64 / verify1_rate * 1e3;
    rows.push(row(
        "query: one rare actor",
        (query_ms, "ms"),
        (full_scan_ms, "ms"),
        "a full scan at the verify, 1 thread rate",
        format!("median of 3; {matches} matches"),
    ));
    progress.done();
    let _ = fs::remove_dir_all(&log_dir);

    let context = RunContext {
        record_bytes,
        frame_bytes,
        cores: n,
        log_events: built.events,
        log_bytes: built.bytes,
        log_segments: built.segments,
        work_dir: work.0.clone(),
        load_before,
        load_after: load_average(),
    };
    Ok((rows, context))
}
