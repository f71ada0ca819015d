//! `chainlog verify`: recompute the chain and report every problem, and
//! optionally check the log against a signed checkpoint.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chainlog::storage::FsStorage;
use chainlog::verify::{verify_dir_with, Report, VerifyOptions};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::{CliError, EXIT_INTEGRITY};
use crate::keys::{load_verifier, open_checkpoint};
use crate::read::segment_files;
use crate::report::summary;
use crate::Global;

/// Most `--threads`.
const MAX_THREADS: usize = 1024;

/// `chainlog verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Print the full report as JSON.
    #[arg(long)]
    json: bool,
    /// Also check the log against this signed checkpoint (from `chainlog
    /// checkpoint`): it fails if the log was truncated, forked or rewritten
    /// since. Needs --public-key.
    #[arg(long, value_name = "FILE", requires = "public_key")]
    checkpoint: Option<PathBuf>,
    /// The public key the checkpoint must be signed by (from `chainlog
    /// keygen`). Needs --checkpoint.
    #[arg(long, value_name = "FILE", requires = "checkpoint")]
    public_key: Option<PathBuf>,
    #[command(flatten)]
    witness: crate::witness::PolicyArgs,
    /// Segments verified in parallel. Default: the number of cores.
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    threads: Option<usize>,
    /// Verify the archive in s3://BUCKET/PREFIX (from `chainlog archive`)
    /// instead of --dir, streaming it from the bucket, and check every
    /// object against the archive's manifest (SHA-256).
    #[cfg(feature = "s3")]
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    from: Option<String>,
    #[cfg(feature = "s3")]
    #[command(flatten)]
    archive_endpoint: crate::archive::EndpointArgs,
    /// With --from a replicated workspace (`serve --bucket`), read up to its
    /// head and verified as a local log: the key of its heads (default:
    /// --public-key).
    #[cfg(feature = "s3")]
    #[command(flatten)]
    head_key: crate::source::HeadKeyArgs,
}

fn parse_threads(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
        _ => Err(format!(
            "{text:?} is not a thread count between 1 and {MAX_THREADS}"
        )),
    }
}

/// Verifies `dir` on one thread, with a byte progress bar when `show_progress`.
pub fn verify_with_progress(dir: &Path, show_progress: bool) -> Result<Report, CliError> {
    let options = VerifyOptions {
        threads: 1,
        checkpoint: None,
    };
    verify_with_options(dir, &options, show_progress)
}

/// Verifies `dir` with `options`, with a byte progress bar when `show_progress`.
pub fn verify_with_options(
    dir: &Path,
    options: &VerifyOptions,
    show_progress: bool,
) -> Result<Report, CliError> {
    let bar = if show_progress {
        let total: u64 = segment_files(dir)?
            .iter()
            .filter_map(|(_, path)| std::fs::metadata(path).ok())
            .map(|m| m.len())
            .sum();
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "verifying [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Some(bar)
    } else {
        None
    };
    let mut progress = |bytes: u64| {
        if let Some(bar) = &bar {
            bar.set_position(bytes);
        }
    };
    let report = verify_dir_with(&FsStorage, dir, options, &mut progress);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    Ok(report?)
}

/// The consistency proof from `checkpoint`'s tree to the log's current
/// tree, when the log has grown since.
fn consistency_since(
    dir: &Path,
    checkpoint: &chainlog::hash::checkpoint::Checkpoint,
) -> Result<Option<chainlog::query::proofs::ConsistencyProof>, CliError> {
    let log = chainlog::Log::open(dir, chainlog::Options::for_reading())?;
    let mut prover = log.prover()?;
    let head = prover.tree_head();
    if head.size <= checkpoint.size {
        return Ok(None);
    }
    let proof = prover
        .consistency(checkpoint.size, &checkpoint.root, head.size, &head.root)
        .map_err(crate::prove::prove_error)?;
    Ok(Some(proof))
}

/// Runs `chainlog verify`.
pub fn run(global: &Global, args: VerifyArgs) -> Result<ExitCode, CliError> {
    // A replicated workspace is followed up to its head and verified as a
    // local log; an archive is verified in the bucket.
    #[cfg(feature = "s3")]
    let followed = match &args.from {
        Some(url) => {
            let key = (args.head_key.checkpoint_public_key.as_ref()).or(args.public_key.as_ref());
            let target = args.archive_endpoint.target(url)?;
            match crate::source::followed_dir(&target, key.map(PathBuf::as_path))? {
                Some(dir) => Some(dir),
                None => return run_from(global, url, &args),
            }
        }
        None => None,
    };
    #[cfg(not(feature = "s3"))]
    let followed: Option<PathBuf> = None;
    let dir = match &followed {
        Some(dir) => dir.as_path(),
        None => global.dir()?,
    };
    // The checkpoint is checked first: a bad one fails before a long verify.
    let checkpoint = match (&args.checkpoint, &args.public_key) {
        (Some(checkpoint), Some(public_key)) => {
            let verifier = load_verifier(public_key)?;
            let checkpoint = open_checkpoint(checkpoint, &verifier)?;
            Some((checkpoint, verifier))
        }
        _ => None,
    };
    let witnesses = match (&args.witness.witness_policy, &args.checkpoint) {
        (Some(policy), Some(path)) => {
            let note = crate::keys::read_small_text(path, "checkpoint")?;
            Some(crate::witness::check_policy(policy, &note)?)
        }
        (Some(_), None) => {
            return Err(CliError::Usage(
                "--witness-policy needs --checkpoint and --public-key".into(),
            ))
        }
        _ => None,
    };
    let options = VerifyOptions {
        threads: args
            .threads
            .unwrap_or_else(|| VerifyOptions::default().threads),
        checkpoint: checkpoint.as_ref().map(|(c, _)| c.clone()),
    };
    let show_progress = !global.quiet && io::stderr().is_terminal();
    let report = verify_with_options(dir, &options, show_progress)?;
    let matched = report.checkpoint.as_ref().is_none_or(|c| c.matched);
    // A log that matches an older checkpoint and has grown since: the proof
    // that the current tree extends the checkpoint's, for a monitor to keep.
    let consistency = match &checkpoint {
        Some((cp, _)) if report.is_intact() && matched => consistency_since(dir, cp)?,
        _ => None,
    };
    let mut out = io::stdout().lock();
    if args.json {
        let mut value = serde_json::to_value(&report).map_err(|e| CliError::output(e.into()))?;
        if let (Some(object), Some(_)) = (value.as_object_mut(), &checkpoint) {
            let proof =
                serde_json::to_value(&consistency).map_err(|e| CliError::output(e.into()))?;
            object.insert("consistency".into(), proof);
        }
        if let (Some(object), Some(report)) = (value.as_object_mut(), &witnesses) {
            let report = serde_json::to_value(report).map_err(|e| CliError::output(e.into()))?;
            object.insert("witnesses".into(), report);
        }
        let text = serde_json::to_string_pretty(&value).map_err(|e| CliError::output(e.into()))?;
        writeln!(out, "{text}").map_err(CliError::output)?;
    } else {
        let mut lines = summary(&report);
        if let (Some((checkpoint, verifier)), Some(result)) = (&checkpoint, &report.checkpoint) {
            lines.push(format!(
                "checkpoint: {} the checkpoint signed by {}+{:08x} at size {} ({})",
                if result.matched {
                    "the log matches"
                } else {
                    "the log does NOT match"
                },
                verifier.name(),
                verifier.id(),
                checkpoint.size,
                checkpoint.origin
            ));
        }
        lines.extend(witnesses.as_ref().map(crate::witness::policy_line));
        for line in lines {
            // --quiet keeps the problems and drops the all-clear and notes.
            let chatter = (report.is_intact() && matched) || line.starts_with("note:");
            if global.quiet && chatter {
                continue;
            }
            writeln!(out, "{line}").map_err(CliError::output)?;
        }
        if let Some(proof) = &consistency {
            let text = serde_json::to_string(proof).map_err(|e| CliError::output(e.into()))?;
            writeln!(out, "{text}").map_err(CliError::output)?;
        }
    }
    out.flush().map_err(CliError::output)?;
    Ok(if report.is_intact() && matched {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INTEGRITY)
    })
}

/// Runs `chainlog verify --from s3://BUCKET/PREFIX`: the same report and
/// exit codes as for a local log, plus the archive's manifest checks.
#[cfg(feature = "s3")]
fn run_from(global: &Global, url: &str, args: &VerifyArgs) -> Result<ExitCode, CliError> {
    let checkpoint = match (&args.checkpoint, &args.public_key) {
        (Some(checkpoint), Some(public_key)) => {
            let verifier = load_verifier(public_key)?;
            let checkpoint = open_checkpoint(checkpoint, &verifier)?;
            Some((checkpoint, verifier))
        }
        _ => None,
    };
    let options = VerifyOptions {
        threads: args
            .threads
            .unwrap_or_else(|| VerifyOptions::default().threads),
        checkpoint: checkpoint.as_ref().map(|(c, _)| c.clone()),
    };
    let archived = crate::archive::verify_from(url, &args.archive_endpoint, &options)?;
    let report = &archived.report;
    let matched = report.checkpoint.as_ref().is_none_or(|c| c.matched);
    let intact = archived.is_intact() && matched;
    let mut out = io::stdout().lock();
    if args.json {
        let text =
            serde_json::to_string_pretty(&archived).map_err(|e| CliError::output(e.into()))?;
        writeln!(out, "{text}").map_err(CliError::output)?;
    } else {
        let mut lines = summary(report);
        if let (Some((checkpoint, verifier)), Some(result)) = (&checkpoint, &report.checkpoint) {
            lines.push(format!(
                "checkpoint: {} the checkpoint signed by {}+{:08x} at size {} ({})",
                if result.matched {
                    "the archive matches"
                } else {
                    "the archive does NOT match"
                },
                verifier.name(),
                verifier.id(),
                checkpoint.size,
                checkpoint.origin
            ));
        }
        lines.extend(crate::archive::archive_lines(&archived));
        for line in lines {
            // --quiet keeps the problems and drops the all-clear and notes.
            if global.quiet && (intact || line.starts_with("note:")) {
                continue;
            }
            writeln!(out, "{line}").map_err(CliError::output)?;
        }
    }
    out.flush().map_err(CliError::output)?;
    Ok(if intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INTEGRITY)
    })
}
