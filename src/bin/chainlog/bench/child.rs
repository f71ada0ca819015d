//! Verify and export in a child process, so their peak memory and CPU time are theirs alone.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use chainlog::query::export::{ExportError, ExportFormat, ExportOptions, Exporter};
use chainlog::query::Query;
use chainlog::storage::FsStorage;
use chainlog::verify::{verify_dir_with, VerifyOptions};
use chainlog::{Log, Options};
use serde::Serialize;

use crate::error::CliError;

use super::*;

/// What a child process reports.
#[derive(Debug, Serialize, serde::Deserialize)]
pub(super) struct ChildReport {
    pub(super) elapsed_s: f64,
    pub(super) records: u64,
    pub(super) bytes: u64,
    /// `VmHWM` when the operation started and when it ended.
    pub(super) vm_hwm_start_kib: u64,
    pub(super) vm_hwm_kib: u64,
    /// CPU time (user + system, all threads) the operation took.
    pub(super) cpu_s: f64,
}

impl ChildReport {
    /// CPUs busy on average: below the thread count when other processes
    /// had the cores.
    pub(super) fn cpus_used(&self) -> f64 {
        self.cpu_s / self.elapsed_s.max(1e-9)
    }
}

/// A copy of this executable in the work directory, for the child
/// processes: a rebuild of `target/release/chainlog` during a long run
/// would otherwise take the executable away from under the bench.
pub(super) fn child_executable(work: &WorkDir) -> Result<PathBuf, CliError> {
    let exe =
        std::env::current_exe().map_err(|e| CliError::io("finding the chainlog executable", e))?;
    let copy = work.0.join("chainlog-bench-child");
    fs::copy(&exe, &copy).map_err(|e| {
        CliError::io(
            format!("copying {} for the child processes", exe.display()),
            e,
        )
    })?;
    Ok(copy)
}

pub(super) fn spawn_child(
    exe: &Path,
    op: ChildOp,
    log: &Path,
    threads: usize,
) -> Result<ChildReport, CliError> {
    let op_name = match op {
        ChildOp::Verify => "verify",
        ChildOp::Export => "export",
    };
    let output = std::process::Command::new(exe)
        .args(["bench", "--quiet", "--child", op_name, "--child-threads"])
        .arg(threads.to_string())
        .arg("--child-log")
        .arg(log)
        .env_remove("CHAINLOG_DIR")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| CliError::io("running the bench child process", e))?;
    if !output.status.success() {
        return Err(CliError::Integrity(format!(
            "bench: the {op_name} child process failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| CliError::Integrity(format!("bench: unreadable {op_name} child report: {e}")))
}

/// `VmHWM` (peak resident set) of this process, in KiB.
pub(super) fn vm_hwm_kib() -> Result<u64, CliError> {
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| CliError::io("reading /proc/self/status", e))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| CliError::Integrity("no VmHWM in /proc/self/status".into()))
}

/// CPU time of this process so far (user + system, all threads, the
/// exited ones included), from `/proc/self/stat` in USER_HZ (100/s) ticks.
pub(super) fn cpu_seconds() -> Result<f64, CliError> {
    let stat = fs::read_to_string("/proc/self/stat")
        .map_err(|e| CliError::io("reading /proc/self/stat", e))?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => Ok((user + system) as f64 / 100.0),
        _ => Err(CliError::Integrity("unreadable /proc/self/stat".into())),
    }
}

pub(super) fn run_child(op: ChildOp, dir: &Path, threads: usize) -> Result<ExitCode, CliError> {
    let vm_hwm_start_kib = vm_hwm_kib()?;
    let cpu_start = cpu_seconds()?;
    let start = Instant::now();
    let (records, bytes) = match op {
        ChildOp::Verify => {
            let options = VerifyOptions {
                threads: threads.max(1),
                ..VerifyOptions::default()
            };
            let report = verify_dir_with(&FsStorage, dir, &options, &mut |_| {})?;
            if !report.is_intact() {
                return Err(CliError::Integrity(format!(
                    "bench: the log is not intact: {:?}",
                    report.problems.first()
                )));
            }
            (report.records, report.bytes)
        }
        ChildOp::Export => {
            let log = Log::open(dir, Options::for_reading())?;
            let mut exporter =
                Exporter::new(io::sink(), ExportOptions::new(ExportFormat::JsonLines))
                    .map_err(|e| CliError::io("starting the export", e))?;
            // The path `chainlog export` takes: records decoded in place.
            log.query(&Query::default())?
                .try_for_each_view(|seq, hash, view| {
                    exporter.write_view(seq, &hash, view).map_err(|e| match e {
                        ExportError::Io(e) => CliError::io("exporting", e),
                        other => CliError::Integrity(other.to_string()),
                    })
                })?;
            let rows = exporter.rows();
            exporter
                .finish()
                .map_err(|e| CliError::io("finishing the export", e))?;
            (rows, 0)
        }
    };
    let report = ChildReport {
        elapsed_s: start.elapsed().as_secs_f64(),
        records,
        bytes,
        vm_hwm_start_kib,
        vm_hwm_kib: vm_hwm_kib()?,
        cpu_s: cpu_seconds()? - cpu_start,
    };
    let text = serde_json::to_string(&report).map_err(|e| CliError::output(e.into()))?;
    outln!("{text}")?;
    Ok(ExitCode::SUCCESS)
}
