//! `chainlog`: the command-line tool for chainlog logs.
//!
//! Creates a log (`init`), appends JSON Lines events to it (`append`), prints
//! them back (`cat`), checks the hash chain (`verify`), summarises it
//! (`stats`) and shows the whole idea on a throw-away log (`demo`).
//!
//! Exit codes: 0 success; 1 an integrity problem was found (tampering or
//! corruption); 2 bad usage, bad input or an I/O error.
#![deny(clippy::unwrap_used, clippy::expect_used)]

/// `println!` that returns a [`CliError`] instead of panicking when stdout
/// fails (a closed pipe ends the command quietly).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err($crate::error::CliError::output)
    }};
}

#[cfg(feature = "server")]
mod apikey;
mod append;
#[cfg(feature = "s3")]
mod archive;
mod bench;
mod clock;
#[cfg(feature = "server")]
mod delivery;
mod demo;
mod demo_evidence;
mod error;
mod evidence;
mod keys;
#[cfg(feature = "lake")]
mod lake;
mod prove;
mod query;
mod read;
mod recover;
mod report;
mod retention;
#[cfg(feature = "server")]
mod serve;
mod source;
mod tail;
mod verify;
mod witness;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::error::CliError;

/// Tamper-evident, hash-chained audit logs.
#[derive(Debug, Parser)]
#[command(name = "chainlog", version, about, long_about = None)]
struct Cli {
    /// The log's directory.
    #[arg(long, global = true, env = "CHAINLOG_DIR", value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Print no progress bars, notes or summaries; only requested data and errors.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Write to a log directory that belongs to another user. Refused by
    /// default: root running `append` on a service's log would leave
    /// root-owned segments the service cannot write.
    #[arg(long, global = true)]
    allow_other_owner: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new, empty log in --dir.
    Init {
        /// Size of each segment file (preallocated): bytes, or with a
        /// K/KiB, M/MiB or G/GiB suffix. A multiple of 8 between 128 KiB and 4 GiB.
        #[arg(long, value_name = "BYTES", default_value = "64MiB", value_parser = parse_size)]
        segment_bytes: u64,
        /// Share the log read-only with this group (a name or a gid): the
        /// directory becomes 2750 and what is created in it 0640/0750.
        /// Default: private, files 0600 and directories 0700.
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
    },
    /// Append JSON Lines events from FILE (or stdin).
    Append {
        /// When an append counts as done.
        #[arg(long, value_enum, default_value_t = DurabilityArg::Always)]
        durability: DurabilityArg,
        /// Print {"seq":N,"hash":"<hex>"} for each record once it is durable.
        #[arg(long)]
        receipts: bool,
        /// Who appends, recorded in every record (its `appender`): 1 to 256
        /// bytes, no control or invisible characters. Default: the
        /// operating-system user ($USER, $LOGNAME or $USERNAME), else
        /// `chainlog`.
        #[arg(long, value_name = "NAME")]
        appender: Option<String>,
        /// JSON Lines input; stdin when absent or `-`.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Migrate a log written by an older chainlog (format version 1) to the
    /// current format, so that it can be appended to: recover it, verify
    /// all of it (a damaged log is refused), seal its newest segment, and
    /// record the migration. The chain is unchanged: checkpoints signed
    /// before it still verify.
    Migrate {
        /// The log's directory (default: --dir).
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print stored records as JSON Lines.
    Cat {
        /// First seq to print.
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        from: u64,
        /// Print at most N records.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
    /// Recompute the hash chain and check every segment; with --checkpoint,
    /// also check the log against a signed checkpoint.
    Verify(verify::VerifyArgs),
    /// Summarise the log: segments, records, bytes, seqs, head, time span.
    Stats {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Find events by actor, event type, node, resource, IP, outcome and
    /// time; print them as a table (at most 100 rows unless --limit), or as
    /// JSON Lines, JSON or CSV.
    Query(query::QueryArgs),
    /// Stream matching events (all by default) as JSON, JSON Lines or CSV.
    Export(query::ExportArgs),
    /// Print the newest matching events (10 unless --limit) as JSON Lines;
    /// with -f, keep printing new ones as another process appends them.
    Tail(tail::TailArgs),
    /// Measure append, verify, query, export and open against this
    /// machine's SHA-256 and disk limits, in a temporary directory.
    Bench(bench::BenchArgs),
    /// Delete whole sealed segments older than --max-age (default 90d) or
    /// beyond --max-bytes, after recording a `log.retention` record.
    Retention(retention::RetentionArgs),
    /// Set, release or show the legal hold that blocks retention.
    #[command(subcommand)]
    Hold(retention::HoldCommand),
    /// Cut corruption off the newest segment at a frame boundary, keeping
    /// the cut bytes in quarantine/ and recording the cut in the chain
    /// (`log.recovery_cut`). Without --yes, only shows what the cut drops.
    Recover(recover::RecoverArgs),
    /// Create an Ed25519 key pair for signing checkpoints.
    Keygen(keys::KeygenArgs),
    /// Sign a checkpoint (log id, size, tree root, chain head) of the log.
    Checkpoint(keys::CheckpointArgs),
    /// Upload the sealed segments not yet archived (with their indexes, a
    /// manifest and optionally a signed checkpoint) to s3://BUCKET/PREFIX;
    /// never overwrites an archived object.
    #[cfg(feature = "s3")]
    Archive(archive::ArchiveArgs),
    /// Rebuild a log in --dir (new or empty) from an archive in
    /// s3://BUCKET/PREFIX, checking every object against the manifest.
    #[cfg(feature = "s3")]
    Restore(archive::RestoreArgs),
    /// Export the log to a bucket as gzip JSON Lines and Parquet for SIEMs
    /// and data lakes, with a signed manifest; check such an export.
    #[cfg(feature = "lake")]
    #[command(subcommand)]
    Lake(lake::LakeCommand),
    /// Print a Merkle proof as JSON: that a record is in the tree a signed
    /// checkpoint signs, or that a newer checkpoint's tree extends an older one's.
    #[command(subcommand)]
    Prove(prove::ProveCommand),
    /// Check a bundle from `export --format bundle` offline, with the public
    /// key alone: the signature, and each row's hash, fields and inclusion.
    CheckBundle(prove::CheckBundleArgs),
    /// Write an evidence pack for auditors: one zip with a period's events,
    /// signed checkpoints, proofs, access summary and report.html.
    Evidence(evidence::EvidenceArgs),
    /// Check an evidence pack offline: its signatures, every file's hash,
    /// the proofs, and every row's chain hash and fields.
    CheckEvidence(evidence::CheckEvidenceArgs),
    /// Serve the HTTP API and the Audit Log dashboard over the workspaces
    /// in --data, until SIGTERM or Ctrl-C.
    #[cfg(feature = "server")]
    Serve(serve::ServeArgs),
    /// Witness cosigning (C2SP tlog-witness): run a witness, or create its key.
    #[command(subcommand)]
    Witness(witness::WitnessCommand),
    /// Create, rotate, revoke or list the HTTP API's keys.
    #[cfg(feature = "server")]
    #[command(subcommand)]
    Apikey(apikey::ApikeyCommand),
    /// Add, list, remove SIEM destinations (webhook, Splunk HEC) of a
    /// workspace, and show how far behind they are.
    #[cfg(feature = "server")]
    #[command(subcommand)]
    Delivery(delivery::DeliveryCommand),
    /// Create a log of realistic events, verify it, tamper with a copy and
    /// show the verifier catching it. Uses --dir as its workspace (a fresh
    /// temporary directory when absent).
    Demo,
}

/// The durability policy, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// Each batch is fsynced before the next is read.
    Always,
    /// Group commit: synced within 10 ms or every 1 MiB.
    Batch,
    /// Synced only when a segment fills up and at exit.
    None,
}

impl DurabilityArg {
    /// The library policy this stands for.
    pub fn policy(self) -> chainlog::Durability {
        match self {
            DurabilityArg::Always => chainlog::Durability::Always,
            DurabilityArg::Batch => chainlog::Durability::Batch {
                max_delay: std::time::Duration::from_millis(10),
                max_bytes: 1 << 20,
            },
            DurabilityArg::None => chainlog::Durability::None,
        }
    }
}

/// Parses `131072`, `128K`, `128KiB`, `64M`, `64MiB`, `1G`, `1GiB`.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        _ => return Err(format!("unknown size unit {unit:?} (use K, M or G)")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size in bytes"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// What every command gets: where the log is and how chatty to be.
pub struct Global {
    /// `--dir` (or `CHAINLOG_DIR`).
    pub dir: Option<PathBuf>,
    /// `--quiet`.
    pub quiet: bool,
}

impl Global {
    /// The log directory, which every command but `demo` needs.
    pub fn dir(&self) -> Result<&std::path::Path, CliError> {
        self.dir.as_deref().ok_or_else(|| {
            CliError::Usage("no log directory: pass --dir DIR or set CHAINLOG_DIR".into())
        })
    }
}

fn run(cli: Cli, matches: &ArgMatches) -> Result<ExitCode, CliError> {
    let global = Global {
        dir: cli.dir,
        quiet: cli.quiet,
    };
    // Commands that write into the log directory refuse one another user
    // owns (reading one is harmless).
    let writes = match &cli.command {
        Command::Init { .. }
        | Command::Append { .. }
        | Command::Retention(_)
        | Command::Hold(_)
        | Command::Recover(_) => global.dir.as_deref(),
        Command::Migrate { dir } => dir.as_deref().or(global.dir.as_deref()),
        _ => None,
    };
    if let (Some(dir), false) = (writes, cli.allow_other_owner) {
        chainlog::storage::perms::check_dir_owner(dir)
            .map_err(|e| CliError::Usage(e.to_string()))?;
    }
    match cli.command {
        Command::Init {
            segment_bytes,
            group,
        } => read::init(&global, segment_bytes, group.as_deref()),
        Command::Append {
            durability,
            receipts,
            appender,
            file,
        } => append::run(&global, durability, receipts, appender, file.as_deref()),
        Command::Migrate { dir } => read::migrate(&global, dir.as_deref()),
        Command::Cat { from, limit } => read::cat(&global, from, limit),
        Command::Verify(args) => verify::run(&global, args),
        Command::Retention(args) => retention::run(&global, args),
        Command::Hold(command) => retention::hold(&global, command),
        Command::Recover(args) => recover::run(&global, args),
        Command::Keygen(args) => keys::keygen(&global, args),
        Command::Checkpoint(args) => keys::checkpoint(&global, args),
        #[cfg(feature = "s3")]
        Command::Archive(args) => archive::run(&global, args),
        #[cfg(feature = "s3")]
        Command::Restore(args) => archive::restore(&global, args),
        #[cfg(feature = "lake")]
        Command::Lake(command) => lake::run(&global, command),
        Command::Prove(command) => prove::run(&global, command),
        Command::CheckBundle(args) => prove::check_bundle(&global, args),
        Command::Evidence(args) => evidence::run(&global, args),
        Command::CheckEvidence(args) => evidence::check(&global, args),
        Command::Stats { json } => read::stats(&global, json),
        Command::Query(args) => query::query(&global, args),
        Command::Export(args) => query::export(&global, args),
        Command::Tail(args) => tail::run(&global, args),
        Command::Bench(args) => bench::run(&global, args),
        #[cfg(feature = "server")]
        Command::Serve(args) => serve::run(args, global.quiet),
        #[cfg(feature = "server")]
        Command::Apikey(command) => apikey::run(command, global.quiet),
        Command::Witness(command) => witness::run(&global, command),
        #[cfg(feature = "server")]
        Command::Delivery(command) => delivery::run(command, global.quiet),
        Command::Demo => {
            // The demo writes into its workspace: only take one the user
            // named on the command line, never a CHAINLOG_DIR meant for a real log.
            let workspace = if given_on_command_line(matches, "dir") {
                global.dir.clone()
            } else {
                None
            };
            demo::run(workspace)
        }
    }
}

/// Whether a global argument was given on the command line (before or
/// after the subcommand), rather than taken from the environment.
fn given_on_command_line(matches: &ArgMatches, id: &str) -> bool {
    let sub = matches.subcommand().map(|(_, sub)| sub);
    std::iter::once(matches)
        .chain(sub)
        .any(|m| m.value_source(id) == Some(ValueSource::CommandLine))
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(cli, &matches) {
        Ok(code) => code,
        Err(CliError::BrokenPipe) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("chainlog: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
