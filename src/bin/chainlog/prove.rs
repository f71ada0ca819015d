//! `chainlog prove inclusion|consistency`, `chainlog check-bundle`, and the
//! bundle format of `chainlog export`: Merkle proofs from the log's tiles.
//!
//! Proofs print as one line of JSON. Every proof is checked against the
//! tree's root (a checkpoint's, or the current one) before it is printed;
//! a log that does not match the checkpoint is an integrity failure (exit 1).

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use chainlog::hash::checkpoint::{Checkpoint, NoteVerifier};
use chainlog::query::bundle::{self, BundleError, BundleExportError};
use chainlog::query::proofs::ProveError;
use chainlog::query::Query;
use chainlog::Log;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::{CliError, EXIT_INTEGRITY};
use crate::keys::{load_verifier, open_checkpoint};
use crate::source::SourceArgs;
use crate::Global;

/// Largest checkpoint file read (a checkpoint is a few hundred bytes).
const MAX_CHECKPOINT_BYTES: u64 = 64 * 1024;

/// `chainlog prove`.
#[derive(Debug, Subcommand)]
pub enum ProveCommand {
    /// Prove that record SEQ is in the tree a signed checkpoint signs (or
    /// the current tree): prints {"seq","tree_size","leaf","root","proof"}.
    Inclusion(InclusionArgs),
    /// Prove that the tree checkpoint NEW signs extends the one OLD signs:
    /// prints {"old_size","new_size","old_root","new_root","proof"}.
    Consistency(ConsistencyArgs),
}

/// `chainlog prove inclusion`.
#[derive(Debug, Args)]
pub struct InclusionArgs {
    /// The record's seq.
    #[arg(long, value_name = "SEQ")]
    seq: u64,
    /// Prove against this signed checkpoint's tree (checked against the log
    /// first). Default: the current tree. Needs --public-key.
    #[arg(long, value_name = "FILE", requires = "public_key")]
    checkpoint: Option<PathBuf>,
    /// The public key the checkpoint must be signed by. Needs --checkpoint.
    #[arg(long, value_name = "FILE", requires = "checkpoint")]
    public_key: Option<PathBuf>,
    #[command(flatten)]
    source: SourceArgs,
}

/// `chainlog prove consistency`.
#[derive(Debug, Args)]
pub struct ConsistencyArgs {
    /// The older checkpoint.
    #[arg(long, value_name = "FILE")]
    old: PathBuf,
    /// The newer checkpoint.
    #[arg(long, value_name = "FILE")]
    new: PathBuf,
    /// Check that both checkpoints are signed by this public key.
    #[arg(long, value_name = "FILE")]
    public_key: Option<PathBuf>,
    #[command(flatten)]
    source: SourceArgs,
}

/// `chainlog check-bundle`.
#[derive(Debug, Args)]
pub struct CheckBundleArgs {
    /// The bundle, from `chainlog export --format bundle`.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The public key the bundle's checkpoint must be signed by.
    #[arg(long, value_name = "FILE")]
    public_key: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    witness: crate::witness::PolicyArgs,
}

/// The CLI error for a proof that cannot be made.
pub fn prove_error(e: ProveError) -> CliError {
    match e {
        ProveError::Log(e) => CliError::Log(e),
        ProveError::Mismatch(why) => CliError::Integrity(format!("the log does not match: {why}")),
        other => CliError::Usage(other.to_string()),
    }
}

/// Reads a checkpoint file's text (bounded).
fn read_note(path: &Path) -> Result<String, CliError> {
    let io_error = |e| CliError::io(format!("reading checkpoint {}", path.display()), e);
    let mut bytes = Vec::new();
    File::open(path)
        .map_err(io_error)?
        .take(MAX_CHECKPOINT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > MAX_CHECKPOINT_BYTES {
        return Err(CliError::Usage(format!(
            "checkpoint {} is larger than {MAX_CHECKPOINT_BYTES} bytes: not a checkpoint",
            path.display()
        )));
    }
    String::from_utf8(bytes).map_err(|_| {
        CliError::Usage(format!(
            "checkpoint {} is not UTF-8 text: not a checkpoint",
            path.display()
        ))
    })
}

/// A checkpoint, its signature checked when a key is given.
fn load_checkpoint(path: &Path, verifier: Option<&NoteVerifier>) -> Result<Checkpoint, CliError> {
    match verifier {
        Some(v) => open_checkpoint(path, v),
        None => bundle::parse_unverified(&read_note(path)?)
            .map_err(|e| CliError::Usage(format!("checkpoint {}: {e}", path.display()))),
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string(value).map_err(|e| CliError::output(e.into()))?;
    outln!("{text}")
}

/// Runs `chainlog prove`.
pub fn run(global: &Global, command: ProveCommand) -> Result<ExitCode, CliError> {
    match command {
        ProveCommand::Inclusion(args) => {
            let checkpoint = match (&args.checkpoint, &args.public_key) {
                (Some(cp), Some(key)) => Some(load_checkpoint(cp, Some(&load_verifier(key)?))?),
                _ => None,
            };
            let log = args.source.open(global)?;
            let proof = log
                .prove_inclusion(args.seq, checkpoint.as_ref())
                .map_err(prove_error)?;
            print_json(&proof)?;
        }
        ProveCommand::Consistency(args) => {
            let verifier = args.public_key.as_deref().map(load_verifier).transpose()?;
            let old = load_checkpoint(&args.old, verifier.as_ref())?;
            let new = load_checkpoint(&args.new, verifier.as_ref())?;
            if old.origin != new.origin {
                return Err(CliError::Integrity(format!(
                    "the checkpoints are for different logs ({:?} and {:?})",
                    old.origin, new.origin
                )));
            }
            let log = args.source.open(global)?;
            let proof = log
                .prove_consistency(&old, Some(&new))
                .map_err(prove_error)?;
            print_json(&proof)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A spinner counting bundle rows on stderr.
fn progress_spinner() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} exporting a bundle: {human_pos} rows ({per_sec})")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Runs `chainlog export --format bundle`: the rows `query` matches below
/// the checkpoint's size, each with its proof, and the checkpoint, to
/// `output` (stdout when `None`). Returns the rows written.
pub fn export_bundle(
    global: &Global,
    log: &Log,
    query: &Query,
    checkpoint: &Path,
    output: Option<&Path>,
) -> Result<u64, CliError> {
    let note = read_note(checkpoint)?;
    let writer: Box<dyn Write> = match output {
        Some(p) => Box::new(
            File::create(p).map_err(|e| CliError::io(format!("creating {}", p.display()), e))?,
        ),
        None => Box::new(io::stdout().lock()),
    };
    let out = BufWriter::with_capacity(1 << 16, writer);
    let progress = (!global.quiet && io::stderr().is_terminal()).then(progress_spinner);
    let result = bundle::export(log, query, &note, out, &mut |rows| {
        if let Some(bar) = &progress {
            bar.set_position(rows);
        }
    });
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let summary = result.map_err(|e| match e {
        BundleExportError::Io(e) => match output {
            Some(p) => CliError::io(format!("writing {}", p.display()), e),
            None => CliError::output(e),
        },
        BundleExportError::Log(e) => CliError::Log(e),
        BundleExportError::Prove(e) => prove_error(e),
        BundleExportError::Checkpoint(e) => {
            CliError::Usage(format!("checkpoint {}: {e}", checkpoint.display()))
        }
        bad @ BundleExportError::BadRecord { .. } => {
            CliError::Integrity(format!("{bad} (run `chainlog verify` for a full report)"))
        }
        other => CliError::Usage(other.to_string()),
    })?;
    Ok(summary.rows)
}

/// Runs `chainlog check-bundle`.
pub fn check_bundle(global: &Global, args: CheckBundleArgs) -> Result<ExitCode, CliError> {
    let verifier = load_verifier(&args.public_key)?;
    let witnesses = match &args.witness.witness_policy {
        Some(policy) => {
            let note = crate::witness::bundle_note(&args.file)?;
            Some(crate::witness::check_policy(policy, &note)?)
        }
        None => None,
    };
    let file = File::open(&args.file)
        .map_err(|e| CliError::io(format!("reading bundle {}", args.file.display()), e))?;
    let shown = args.file.display();
    let report = bundle::check(file, &verifier).map_err(|e| match e {
        e if e.is_integrity() => CliError::Integrity(format!(
            "bundle {shown}: {e}; none of its rows can be trusted"
        )),
        BundleError::Io(e) => CliError::io(format!("reading bundle {shown}"), e),
        other => CliError::Usage(format!("bundle {shown}: {other}")),
    })?;
    if args.json {
        let mut value = serde_json::to_value(&report).map_err(|e| CliError::output(e.into()))?;
        if let (Some(object), Some(w)) = (value.as_object_mut(), &witnesses) {
            let w = serde_json::to_value(w).map_err(|e| CliError::output(e.into()))?;
            object.insert("witnesses".into(), w);
        }
        let text = serde_json::to_string_pretty(&value).map_err(|e| CliError::output(e.into()))?;
        outln!("{text}")?;
    } else if report.is_intact() {
        if !global.quiet {
            outln!(
                "bundle intact: {} row{}, each in the tree of {} records signed by {} ({})",
                report.rows,
                if report.rows == 1 { "" } else { "s" },
                report.tree_size,
                report.signer,
                report.origin
            )?;
            if let Some(w) = &witnesses {
                crate::witness::print_policy(global, w)?;
            }
        }
    } else {
        let count = report.problems.len() as u64 + report.problems_omitted;
        outln!(
            "BUNDLE NOT INTACT: {count} problem{} in {} rows (checkpoint of {} records signed by {}, {})",
            if count == 1 { "" } else { "s" },
            report.rows,
            report.tree_size,
            report.signer,
            report.origin
        )?;
        for problem in &report.problems {
            outln!("{problem}")?;
        }
        if report.problems_omitted > 0 {
            outln!("... and {} more problems", report.problems_omitted)?;
        }
    }
    Ok(if report.is_intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INTEGRITY)
    })
}
