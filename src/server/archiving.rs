//! Scheduled archiving of every log the server holds (cargo features
//! `server` and `s3`; `chainlog serve --archive-to`).
//!
//! A background thread archives the sealed segments of each workspace's log,
//! and of the server's own log, to S3-compatible storage with
//! [`archive_sealed`]: once when the server starts, then every
//! [`ArchiveSchedule::every`] (a day by default). The archive mirrors the
//! data directory: workspace `W` goes to `<PREFIX>/workspaces/W`, the
//! server's log to `<PREFIX>/server-log`. Sealed segments never change, so
//! reading them beside the running logs is safe; a run that fails (network,
//! credentials, a segment deleted by retention meanwhile) is reported on
//! standard error and retried at the next one, and an interrupted run
//! leaves nothing half-visible (see [`crate::archive`]).
//!
//! With [`ArchiveSchedule::lake`] (cargo feature `lake`, `chainlog serve
//! --lake-to`), each run then exports every log's new records to the lake
//! ([`crate::archive::lake`]), each log under the same name as in the
//! archive, inside the lake's prefix.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::archive::{archive_sealed, ArchiveError, ArchiveOptions, ArchiveOutcome, ArchiveTarget};
use crate::server::stop_flag::StopFlag;
use crate::server::workspace::{validate_workspace_name, SERVER_LOG_DIR_NAME, WORKSPACES_DIR_NAME};

/// The default interval between archive runs: nightly.
pub const DEFAULT_ARCHIVE_EVERY: Duration = Duration::from_secs(24 * 60 * 60);

/// Where and how often the server archives its logs.
#[derive(Debug, Clone)]
pub struct ArchiveSchedule {
    /// The archive; each log goes under a key prefix inside it (see the
    /// module docs).
    pub target: ArchiveTarget,
    /// Time from the start of one run to the start of the next.
    pub every: Duration,
    /// How each log is archived (checkpoint signing, Object Lock, ...).
    pub options: ArchiveOptions,
    /// Also export every log to this lake, after archiving it.
    #[cfg(feature = "lake")]
    pub lake: Option<(ArchiveTarget, crate::archive::lake::LakeOptions)>,
}

/// One log's part of a run: its name (`workspaces/W` or `server-log`),
/// where it went, and what happened.
pub type LogArchived = (String, ArchiveTarget, Result<ArchiveOutcome, ArchiveError>);

/// Archives every log under `data_dir` once: the workspaces in name order,
/// then the server's log. Logs with no sealed segment yet are skipped.
pub fn archive_data_dir(data_dir: &Path, schedule: &ArchiveSchedule) -> Vec<LogArchived> {
    logs_of(data_dir)
        .into_iter()
        .filter(|(_, dir)| has_sealed_segment(dir))
        .map(|(name, dir)| {
            let target = under(&schedule.target, &name);
            let outcome = archive_sealed(&dir, &target, &schedule.options);
            (name, target, outcome)
        })
        .collect()
}

/// One log's part of a lake export run.
#[cfg(feature = "lake")]
pub type LogExported = (
    String,
    ArchiveTarget,
    Result<crate::archive::lake::LakeOutcome, ArchiveError>,
);

/// Exports every log under `data_dir` to the lake once, in the order
/// [`archive_data_dir`] archives them. Logs without a segment are skipped.
#[cfg(feature = "lake")]
pub fn export_data_dir(
    data_dir: &Path,
    lake: &ArchiveTarget,
    options: &crate::archive::lake::LakeOptions,
) -> Vec<LogExported> {
    logs_of(data_dir)
        .into_iter()
        .filter(|(_, dir)| segment_names(dir).next().is_some())
        .map(|(name, dir)| {
            let target = under(lake, &name);
            let outcome = crate::archive::lake::export_lake(&dir, &target, options, &mut |_, _| {});
            (name, target, outcome)
        })
        .collect()
}

/// The logs under `data_dir`: the workspaces in name order, then the
/// server's log, with their names (`workspaces/W`, `server-log`).
fn logs_of(data_dir: &Path) -> Vec<(String, PathBuf)> {
    let mut logs: Vec<(String, PathBuf)> = Vec::new();
    let workspaces = data_dir.join(WORKSPACES_DIR_NAME);
    if let Ok(entries) = std::fs::read_dir(&workspaces) {
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| validate_workspace_name(name).is_ok())
            .collect();
        names.sort();
        for name in names {
            let dir = workspaces.join(&name);
            logs.push((format!("{WORKSPACES_DIR_NAME}/{name}"), dir));
        }
    }
    logs.push((
        SERVER_LOG_DIR_NAME.to_string(),
        data_dir.join(SERVER_LOG_DIR_NAME),
    ));
    logs
}

/// Where `target`'s archive of workspace `w` lies.
pub(crate) fn workspace_archive(target: &ArchiveTarget, w: &str) -> ArchiveTarget {
    under(target, &format!("{WORKSPACES_DIR_NAME}/{w}"))
}

/// `target` with `name` appended to its key prefix.
fn under(target: &ArchiveTarget, name: &str) -> ArchiveTarget {
    let mut t = target.clone();
    t.prefix = if t.prefix.is_empty() {
        name.to_string()
    } else {
        format!("{}/{name}", t.prefix)
    };
    t
}

/// Whether `dir` holds more than one segment file (all but the newest are
/// sealed). Cheap: a directory listing.
fn has_sealed_segment(dir: &Path) -> bool {
    segment_names(dir).nth(1).is_some()
}

/// The segment files in `dir` (none when it cannot be read).
fn segment_names(dir: &Path) -> impl Iterator<Item = String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| crate::format::segment::parse_file_name(n).is_some())
}

/// The running archive thread.
pub(crate) struct Archiver {
    stop: StopFlag,
    thread: JoinHandle<()>,
}

impl Archiver {
    /// Starts archiving `data_dir` on `schedule`, reporting each run on
    /// standard error.
    pub(crate) fn start(data_dir: PathBuf, schedule: ArchiveSchedule) -> Archiver {
        let stop = StopFlag::default();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || loop {
            for (name, target, outcome) in archive_data_dir(&data_dir, &schedule) {
                report(&name, &target, &outcome);
            }
            #[cfg(feature = "lake")]
            if let Some((lake, options)) = &schedule.lake {
                for (name, target, outcome) in export_data_dir(&data_dir, lake, options) {
                    report_lake(&name, &target, &outcome);
                }
            }
            if stopping.wait(schedule.every) {
                return;
            }
        });
        Archiver { stop, thread }
    }

    /// Stops the schedule. A run in progress is not waited for: the process
    /// may end in the middle of it, which the next run completes.
    pub(crate) fn stop(self) {
        self.stop.set();
        if self.thread.is_finished() {
            let _ = self.thread.join();
        }
    }
}

fn report(name: &str, target: &ArchiveTarget, outcome: &Result<ArchiveOutcome, ArchiveError>) {
    match outcome {
        Ok(o) if o.uploaded_segments.is_empty() => {}
        Ok(o) => eprintln!(
            "chainlog serve: archived {} segment(s) of {name} to {target} ({} bytes)",
            o.uploaded_segments.len(),
            o.uploaded_bytes
        ),
        Err(e) => eprintln!("chainlog serve: archiving {name} to {target} failed: {e}"),
    }
}

#[cfg(feature = "lake")]
fn report_lake(
    name: &str,
    target: &ArchiveTarget,
    outcome: &Result<crate::archive::lake::LakeOutcome, ArchiveError>,
) {
    match outcome {
        Ok(o) if o.rows == 0 => {}
        Ok(o) => eprintln!(
            "chainlog serve: exported {} record(s) of {name} to {target}/lake",
            o.rows
        ),
        Err(e) => eprintln!("chainlog serve: exporting {name} to {target}/lake failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_log_gets_its_own_prefix() {
        let root = ArchiveTarget::parse("s3://audit").unwrap();
        assert_eq!(under(&root, "server-log").prefix, "server-log");
        let nested = ArchiveTarget::parse("s3://audit/prod/eu").unwrap();
        assert_eq!(
            under(&nested, "workspaces/acme").prefix,
            "prod/eu/workspaces/acme"
        );
    }
}
