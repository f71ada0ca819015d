//! `chainlog lake export` and `chainlog lake verify`: the readable export
//! for SIEMs and data lakes (gzip JSON Lines and Parquet, signed manifest).

use std::io::{self, IsTerminal as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use chainlog::archive::lake::{self, LakeOptions, LakeOutcome, LakeReport};
use chainlog::{Log, Options};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::archive::{cli_error, EndpointArgs};
use crate::error::CliError;
use crate::keys::{load_signer, load_verifier};
use crate::Global;

/// `chainlog lake …`.
#[derive(Debug, Subcommand)]
pub enum LakeCommand {
    /// Export the records not exported yet from the log in --dir to
    /// s3://BUCKET/PREFIX/lake/ as gzip JSON Lines and Parquet, partitioned
    /// by date, with a signed manifest; never overwrites an object.
    Export(ExportArgs),
    /// Check a lake from its bucket: manifest signature, object digests,
    /// row counts, seq continuity, both formats agreeing, every row's hash
    /// against the signed checkpoint; with --log, every row against the log.
    Verify(VerifyArgs),
}

/// `chainlog lake export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The lake: s3://BUCKET/PREFIX (objects go under PREFIX/lake/).
    /// Credentials come from the AWS environment variables.
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    to: String,
    #[command(flatten)]
    endpoint: EndpointArgs,
    /// The secret key (from `chainlog keygen`) that signs the checkpoint
    /// and the manifest.
    #[arg(long, value_name = "FILE")]
    checkpoint_key: PathBuf,
    /// Origin prefix of the checkpoint (`<PREFIX>/<log id>`).
    #[arg(long, value_name = "PREFIX", default_value = "chainlog")]
    origin: String,
    /// For servers without conditional PUTs (If-None-Match): check with a
    /// HEAD before each PUT instead; run one export at a time.
    #[arg(long)]
    no_conditional_put: bool,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

/// `chainlog lake verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The lake: s3://BUCKET/PREFIX.
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    from: String,
    #[command(flatten)]
    endpoint: EndpointArgs,
    /// The public key (`<name>+<id>+<key>`, from `chainlog keygen`) that
    /// signed the manifest and the checkpoint.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Also compare every row with this log's record, and the checkpoint
    /// with its tree.
    #[arg(long, value_name = "DIR")]
    log: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `chainlog lake …`.
pub fn run(global: &Global, command: LakeCommand) -> Result<ExitCode, CliError> {
    match command {
        LakeCommand::Export(args) => export(global, args),
        LakeCommand::Verify(args) => verify(global, args),
    }
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} exporting to the lake: {human_pos}/{human_len} rows ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::output(e.into()))?;
    outln!("{text}")
}

fn export(global: &Global, args: ExportArgs) -> Result<ExitCode, CliError> {
    let dir = global.dir()?;
    let target = args.endpoint.target(&args.to)?;
    let mut options = LakeOptions::new(load_signer(&args.checkpoint_key)?);
    options.origin_prefix = args.origin.clone();
    options.conditional_put = !args.no_conditional_put;
    let bar = (!global.quiet && io::stderr().is_terminal()).then(progress_bar);
    let started = Instant::now();
    let outcome = lake::export_lake(dir, &target, &options, &mut |done, total| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let outcome = outcome.map_err(cli_error)?;
    if args.json {
        print_json(&outcome)?;
    } else if !global.quiet {
        print_export(
            &target.to_string(),
            &outcome,
            started.elapsed().as_secs_f64(),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_export(target: &str, outcome: &LakeOutcome, secs: f64) -> Result<(), CliError> {
    let held = outcome.lake_seqs.map_or_else(
        || "nothing yet".to_string(),
        |(a, b)| format!("seq {a}..={b}"),
    );
    match outcome.exported {
        None => outln!("nothing new to export: {target}/lake holds {held}")?,
        Some((first, last)) => outln!(
            "exported {} rows (seq {first}..={last}) to {target}/lake in {secs:.2}s ({:.0} rows/s): {} objects, {} bytes of gzip JSON Lines, {} bytes of Parquet; it now holds {held}",
            outcome.rows,
            outcome.rows as f64 / secs.max(1e-9),
            outcome.objects_written,
            outcome.bytes_written.0,
            outcome.bytes_written.1,
        )?,
    }
    if !outcome.adopted.is_empty() {
        outln!(
            "found {} object(s) written by an interrupted run, identical, and listed them",
            outcome.adopted.len()
        )?;
    }
    if let Some(manifest) = &outcome.manifest {
        outln!("manifest: {manifest}")?;
    }
    Ok(())
}

fn verify(global: &Global, args: VerifyArgs) -> Result<ExitCode, CliError> {
    let target = args.endpoint.target(&args.from)?;
    let verifier = load_verifier(&args.key)?;
    let log = match &args.log {
        Some(dir) => Some(Log::open(dir, Options::for_reading()).map_err(CliError::Log)?),
        None => None,
    };
    let report = lake::verify_lake(&target, &verifier, log.as_ref()).map_err(cli_error)?;
    if args.json {
        print_json(&report)?;
    } else if !global.quiet || !report.is_intact() {
        print_report(&report)?;
    }
    Ok(if report.is_intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::error::EXIT_INTEGRITY)
    })
}

fn print_report(report: &LakeReport) -> Result<(), CliError> {
    for p in &report.problems {
        outln!("{:?}: {}: {}", p.kind, p.object, p.detail)?;
    }
    let seqs = report
        .seqs
        .map_or_else(|| "no seqs".to_string(), |(a, b)| format!("seq {a}..={b}"));
    if report.is_intact() {
        outln!(
            "lake intact: {} holds {seqs}; {} objects, {} JSON Lines and {} Parquet rows checked; every row's hash is in the signed checkpoint of size {}{}",
            report.target,
            report.objects_checked,
            report.rows_checked.0,
            report.rows_checked.1,
            report.checkpoint_size.unwrap_or(0),
            if report.rows_matched_to_log > 0 {
                format!("; {} rows match the log", report.rows_matched_to_log)
            } else {
                String::new()
            }
        )?;
    } else {
        outln!(
            "lake NOT intact: {} problem(s) in {}",
            report.problems.len(),
            report.target
        )?;
    }
    Ok(())
}
