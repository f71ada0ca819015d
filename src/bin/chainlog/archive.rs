//! `chainlog archive` and `chainlog restore`: sealed segments to and from
//! S3-compatible object storage; the archive side of `chainlog verify
//! --from` and `chainlog retention --only-archived`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use chainlog::archive::{
    self, ArchiveError, ArchiveOptions, ArchiveOutcome, ArchiveReport, ArchiveTarget, ObjectLock,
    ObjectLockMode,
};
use chainlog::log::RetentionOutcome;
use chainlog::retention::{self, DeletedSegment, RetentionPolicy};
use chainlog::verify::VerifyOptions;
use chainlog::{Log, Timestamp};
use clap::Args;

use crate::error::CliError;
use crate::keys::load_signer;
use crate::Global;

/// Where the archive is, and how to reach it (shared by `archive`,
/// `restore` and `verify --from`).
#[derive(Debug, Args)]
pub struct EndpointArgs {
    /// The S3 endpoint URL (MinIO, Garage, Ceph: `http://127.0.0.1:9000`).
    /// Default: AWS_ENDPOINT_URL, else AWS. Plain http is allowed for
    /// loopback hosts (elsewhere with AWS_ALLOW_HTTP=true).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// The bucket's region. Default: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1.
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
}

impl EndpointArgs {
    /// The target `url` reached this way.
    pub fn target(&self, url: &str) -> Result<ArchiveTarget, CliError> {
        Ok(ArchiveTarget::parse(url)
            .map_err(|e| CliError::Usage(e.to_string()))?
            .with_endpoint(self.endpoint.clone())
            .with_region(self.region.clone()))
    }
}

/// `chainlog archive`.
#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// The archive: s3://BUCKET/PREFIX. Credentials come from the AWS
    /// environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_SESSION_TOKEN).
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    to: String,
    #[command(flatten)]
    endpoint: EndpointArgs,
    /// Sign a checkpoint of the archived records with this secret key (from
    /// `chainlog keygen`) and upload it.
    #[arg(long, value_name = "FILE", conflicts_with = "checkpoint")]
    checkpoint_key: Option<PathBuf>,
    /// Origin prefix of that checkpoint (`<PREFIX>/<log id>`).
    #[arg(long, value_name = "PREFIX", default_value = "chainlog")]
    origin: String,
    /// Upload this signed checkpoint (from `chainlog checkpoint`).
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// Also download every object already archived and compare its SHA-256
    /// with the manifest and the local segment (default: a LIST checks that
    /// each is there with its size).
    #[arg(long)]
    verify_existing: bool,
    /// For servers without conditional PUTs (If-None-Match): check with a
    /// HEAD before each PUT instead. Two concurrent archivers could then
    /// race; run one at a time.
    #[arg(long)]
    no_conditional_put: bool,
    /// Keep archiving: run again every DURATION (30m, 12h, 24h, 7d), until
    /// stopped. A failed run is reported and retried at the next one.
    #[arg(long, value_name = "DURATION", value_parser = parse_every)]
    every: Option<Duration>,
    /// Write each object with S3 Object Lock, retained for N days (1 to
    /// 36500) from the start of each run: S3 refuses to delete or overwrite
    /// it before then (see --object-lock-mode). The bucket must have Object
    /// Lock enabled.
    #[arg(long, value_name = "N")]
    object_lock_days: Option<u32>,
    /// The Object Lock mode: compliance (nobody, not even the root account,
    /// can shorten the retention) or governance (users with
    /// s3:BypassGovernanceRetention can).
    #[arg(
        long,
        value_name = "MODE",
        default_value = "compliance",
        requires = "object_lock_days",
        value_parser = parse_lock_mode
    )]
    object_lock_mode: ObjectLockMode,
}

/// `chainlog restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The archive: s3://BUCKET/PREFIX.
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    from: String,
    #[command(flatten)]
    endpoint: EndpointArgs,
}

/// Parses `30m`, `12h`, `24h`, `7d`, `45s` (at least one second).
pub fn parse_every(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration: use a number and s, m, h or d, e.g. 24h");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    match n.checked_mul(unit_secs) {
        Some(0) => Err(format!("{text:?}: the interval must be at least 1s")),
        Some(secs) => Ok(Duration::from_secs(secs)),
        None => Err(format!("{text:?} is too long")),
    }
}

pub fn parse_lock_mode(text: &str) -> Result<ObjectLockMode, String> {
    text.parse().map_err(|e: ArchiveError| e.to_string())
}

/// An archive error as the tool's error: tampering is exit code 1,
/// everything else (network, credentials, usage) 2.
pub fn cli_error(e: ArchiveError) -> CliError {
    match e {
        ArchiveError::Log(e) => CliError::Log(e),
        e if e.is_tampering() => CliError::Integrity(e.to_string()),
        e => CliError::Usage(e.to_string()),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn plural(n: u64, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

fn print_outcome(
    global: &Global,
    target: &ArchiveTarget,
    options: &ArchiveOptions,
    outcome: &ArchiveOutcome,
    secs: f64,
) -> Result<(), CliError> {
    if global.quiet {
        return Ok(());
    }
    let held = outcome.archived_seqs.map_or_else(
        || "nothing yet".to_string(),
        |(a, b)| format!("seq {a}..={b}"),
    );
    if outcome.uploaded_segments.is_empty() {
        outln!(
            "nothing new to archive: {target} holds {held} ({} segments)",
            outcome.already_archived
        )?;
    } else {
        let first = outcome.uploaded_segments.first().copied().unwrap_or(0);
        let last = outcome.archived_seqs.map_or(first, |(_, b)| b);
        outln!(
            "archived {} (seq {first}..={last}) to {target}: {}, {} in {secs:.2}s ({:.0} MiB/s); it now holds {held}",
            plural(outcome.uploaded_segments.len() as u64, "segment"),
            plural(outcome.uploaded_objects as u64, "object"),
            mib(outcome.uploaded_bytes),
            outcome.uploaded_bytes as f64 / (1 << 20) as f64 / secs.max(1e-9),
        )?;
    }
    if !outcome.adopted_objects.is_empty() {
        outln!(
            "found {} already uploaded by an interrupted run, identical to the local files",
            plural(outcome.adopted_objects.len() as u64, "object")
        )?;
    }
    if outcome.verified_objects > 0 {
        outln!(
            "checked {} already archived against the manifest's SHA-256",
            plural(outcome.verified_objects as u64, "object")
        )?;
    }
    if let (Some(until), Some(lock)) = (&outcome.locked_until, &options.object_lock) {
        if outcome.uploaded_objects > 0 {
            outln!(
                "object lock: the objects written are retained in {} mode until {until}",
                lock.mode
            )?;
        }
    }
    if let Some(manifest) = &outcome.manifest {
        outln!("manifest: {manifest}")?;
    }
    if let Some((key, size)) = &outcome.checkpoint {
        outln!("checkpoint: {key} (size {size})")?;
    }
    if let Some(active) = outcome.active_segment {
        outln!("note: the newest segment (seq {active}..) is not sealed yet; it is archived once it is full")?;
    }
    Ok(())
}

/// Runs `chainlog archive`.
pub fn run(global: &Global, args: ArchiveArgs) -> Result<ExitCode, CliError> {
    let dir = global.dir()?;
    let target = args.endpoint.target(&args.to)?;
    let checkpoint_signer = args
        .checkpoint_key
        .as_deref()
        .map(load_signer)
        .transpose()?;
    let checkpoint_note = match &args.checkpoint {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| CliError::io(format!("reading checkpoint {}", path.display()), e))?,
        ),
        None => None,
    };
    let object_lock = args
        .object_lock_days
        .map(|days| ObjectLock::new(args.object_lock_mode, days))
        .transpose()
        .map_err(cli_error)?;
    let options = ArchiveOptions {
        verify_existing: args.verify_existing,
        checkpoint_signer,
        origin_prefix: args.origin.clone(),
        checkpoint_note,
        conditional_put: !args.no_conditional_put,
        object_lock,
    };
    let Some(every) = args.every else {
        let started = std::time::Instant::now();
        let outcome = archive::archive_sealed(dir, &target, &options).map_err(cli_error)?;
        print_outcome(
            global,
            &target,
            &options,
            &outcome,
            started.elapsed().as_secs_f64(),
        )?;
        return Ok(ExitCode::SUCCESS);
    };
    loop {
        let started = std::time::Instant::now();
        match archive::archive_sealed(dir, &target, &options) {
            Ok(outcome) => print_outcome(
                global,
                &target,
                &options,
                &outcome,
                started.elapsed().as_secs_f64(),
            )?,
            Err(e) => {
                let e = cli_error(e);
                eprintln!(
                    "chainlog: {}: archive run failed (retrying in {}s): {e}",
                    Timestamp::now(),
                    every.as_secs()
                );
            }
        }
        std::thread::sleep(every);
    }
}

/// Runs `chainlog restore`.
pub fn restore(global: &Global, args: RestoreArgs) -> Result<ExitCode, CliError> {
    let dir = global.dir()?;
    let target = args.endpoint.target(&args.from)?;
    let started = std::time::Instant::now();
    let outcome = archive::restore(&target, dir, &mut |_| {}).map_err(cli_error)?;
    let secs = started.elapsed().as_secs_f64();
    let intact = outcome.report.is_intact();
    if !global.quiet || !intact {
        outln!(
            "restored {} ({}, {}) from {} into {} in {secs:.2}s",
            plural(outcome.segments, "segment"),
            plural(outcome.files, "file"),
            mib(outcome.bytes),
            outcome.manifest,
            dir.display()
        )?;
        for line in crate::report::summary(&outcome.report) {
            outln!("{line}")?;
        }
        if let Some(checkpoint) = &outcome.checkpoint {
            outln!("the archive's newest checkpoint: {checkpoint}")?;
        }
    }
    Ok(if intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::error::EXIT_INTEGRITY)
    })
}

/// `verify --from`: verifies the archive with `options`, printing the
/// verifier's report as for a local log and the archive's own checks.
pub fn verify_from(
    url: &str,
    endpoint: &EndpointArgs,
    options: &VerifyOptions,
) -> Result<ArchiveReport, CliError> {
    let target = endpoint.target(url)?;
    archive::verify_archive(&target, options, &mut |_| {}).map_err(cli_error)
}

/// The archive's lines after the verifier's summary.
pub fn archive_lines(report: &ArchiveReport) -> Vec<String> {
    let a = &report.archive;
    let mut lines = Vec::new();
    match &a.manifest {
        Some(manifest) => lines.push(format!(
            "archive: {} objects of {} checked against the SHA-256 in {}/{manifest}",
            a.objects_checked,
            plural(a.manifest_segments, "segment"),
            a.target
        )),
        None => lines.push(format!("archive: {} has no manifest", a.target)),
    }
    for p in &a.problems {
        let kind = match serde_json::to_value(p.kind) {
            Ok(serde_json::Value::String(name)) => name,
            _ => format!("{:?}", p.kind),
        };
        lines.push(format!("{kind}: {}: {}", p.object, p.detail));
    }
    lines
}

/// `retention --only-archived URL`: applies `policy`, deleting due segments
/// from the oldest up to the first without an exact archived copy at `url`
/// (the local file's SHA-256 equals the manifest's, and the object is
/// there); the rest stay, listed in the outcome's `kept`.
pub fn apply_retention_archived(
    log: &Log,
    url: &str,
    policy: &RetentionPolicy,
) -> Result<RetentionOutcome, CliError> {
    let target = ArchiveTarget::parse(url).map_err(|e| CliError::Usage(e.to_string()))?;
    archive::apply_retention_archived(log, &target, policy).map_err(cli_error)
}

/// `retention --dry-run --only-archived URL`: how many of `due` (oldest
/// first) a real run would delete, the archive as it is now.
pub fn archived_prefix(dir: &Path, url: &str, due: &[DeletedSegment]) -> Result<usize, CliError> {
    let target = ArchiveTarget::parse(url).map_err(|e| CliError::Usage(e.to_string()))?;
    let bases: Vec<u64> = due.iter().map(|s| s.base_seq).collect();
    let archived = archive::confirm_archived(&target, dir, &bases).map_err(cli_error)?;
    Ok(retention::deletable_prefix(due, &archived))
}
