//! `chainlog witness serve|keygen`, the witnesses of `chainlog checkpoint
//! --witness`, and the witness policy of `verify` and `check-bundle`.
//!
//! A witness key is a signed-note key of type 0x04 (C2SP
//! tlog-cosignature): `chainlog witness keygen` writes the pair, and the
//! public key is what logs and policies name the witness by.

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chainlog::witness::{PolicyReport, WitnessError, WitnessPolicy};
use clap::{Args, Subcommand};

use crate::error::CliError;
use crate::keys::read_small_text;
use crate::Global;

/// `chainlog witness`.
#[derive(Debug, Subcommand)]
pub enum WitnessCommand {
    /// Run a C2SP tlog-witness: cosign the checkpoints of the logs in
    /// --logs when they are consistent with what the witness cosigned
    /// before, until SIGTERM or Ctrl-C.
    #[cfg(feature = "server")]
    Serve(ServeArgs),
    /// Create a witness key pair (Ed25519, cosignature type 0x04) and print
    /// the public key in the note vkey format.
    Keygen(KeygenArgs),
}

/// `chainlog witness serve`.
#[cfg(feature = "server")]
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The witness's secret key (from `chainlog witness keygen`; mode 0600).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The logs to witness, JSON: {"logs":[{"origin":"…","keys":["<vkey>"]}]}.
    #[arg(long, value_name = "FILE")]
    logs: PathBuf,
    /// The state directory: the newest cosigned checkpoint per log and
    /// refusals.jsonl (created if missing; one witness at a time).
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// Where to listen (HTTP/1.1).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:7380")]
    listen: std::net::SocketAddr,
}

/// `chainlog witness keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    #[command(flatten)]
    files: crate::keys::KeyFiles,
    /// The witness's name, part of every cosignature: a schema-less URL
    /// such as witness.example.com/w1 (no spaces or '+').
    #[arg(long, value_name = "NAME")]
    name: String,
}

/// The witnesses `chainlog checkpoint` submits to.
#[cfg(feature = "server")]
#[derive(Debug, Args)]
pub struct CosignArgs {
    /// Submit the signed checkpoint to this witness and add its
    /// cosignature: its submission URL and its public key (repeatable).
    #[arg(long = "witness", value_name = "URL=VKEY")]
    witnesses: Vec<String>,
    /// Write the checkpoint only when at least N witnesses cosigned it.
    /// Default: all of them.
    #[arg(long, value_name = "N", requires = "witnesses")]
    witness_quorum: Option<usize>,
}

/// Runs `chainlog witness`.
pub fn run(global: &Global, command: WitnessCommand) -> Result<ExitCode, CliError> {
    match command {
        #[cfg(feature = "server")]
        WitnessCommand::Serve(args) => serve(global, args),
        WitnessCommand::Keygen(args) => keygen(global, args),
    }
}

fn keygen(global: &Global, args: KeygenArgs) -> Result<ExitCode, CliError> {
    crate::keys::check_new_key_paths(&args.files)?;
    let cosigner = chainlog::witness::Cosigner::from_seed(&args.name, crate::keys::random_seed()?)
        .map_err(|e| CliError::Usage(format!("key name {:?}: {e}", args.name)))?;
    crate::keys::write_key_pair(
        global,
        &args.files,
        &cosigner.to_secret_text(),
        &cosigner.verifier().to_text(),
    )?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "server")]
fn serve(global: &Global, args: ServeArgs) -> Result<ExitCode, CliError> {
    use std::sync::Arc;

    use chainlog::witness::{Cosigner, LogsConfig, Witness};

    let key = crate::keys::read_secret_text(&args.key)?;
    let cosigner = Cosigner::parse(&key)
        .map_err(|e| CliError::Usage(format!("witness key {}: {e}", args.key.display())))?;
    let logs = read_small_text(&args.logs, "logs file")?;
    let config = LogsConfig::parse(&logs)
        .map_err(|e| CliError::Usage(format!("{}: {e}", args.logs.display())))?;
    let witness = Witness::open(cosigner, &config, &args.state).map_err(|e| match e {
        chainlog::Error::Io { ref source, .. }
            if source.kind() == std::io::ErrorKind::WouldBlock =>
        {
            CliError::Usage(format!(
                "state directory {} is in use by another witness",
                args.state.display()
            ))
        }
        other => CliError::Log(other),
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::io("starting the runtime", e))?;
    let witness = Arc::new(witness);
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| CliError::io(format!("listening on {}", args.listen), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| CliError::io("reading the listening address", e))?;
        if !global.quiet {
            eprintln!(
                "chainlog witness: {} ({} logs), state in {}",
                witness.cosigner().verifier().to_text(),
                config.logs.len(),
                args.state.display()
            );
        }
        outln!("listening on http://{addr}")?;
        chainlog::witness::http::serve(witness, listener, chainlog::server::shutdown_signal())
            .await
            .map_err(|e| CliError::io("serving", e))
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Submits the signed checkpoint `note` to the witnesses of `args` and
/// returns it with their cosignatures, or fails when fewer than the quorum
/// cosigned. `previous` is the size of the last checkpoint the log
/// believes they cosigned (0 when unknown).
#[cfg(feature = "server")]
pub fn cosign(
    global: &Global,
    log: &chainlog::Log,
    checkpoint: &chainlog::hash::checkpoint::Checkpoint,
    note: String,
    args: &CosignArgs,
    previous: u64,
) -> Result<String, CliError> {
    use chainlog::hash::note::SignedNote;
    use chainlog::witness::client::{self, ClientError, WitnessEndpoint};

    if args.witnesses.is_empty() {
        return Ok(note);
    }
    let endpoints = args
        .witnesses
        .iter()
        .map(|w| WitnessEndpoint::parse(w).map_err(|e| CliError::Usage(format!("--witness: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let quorum = args.witness_quorum.unwrap_or(endpoints.len());
    if quorum == 0 || quorum > endpoints.len() {
        return Err(CliError::Usage(format!(
            "--witness-quorum {quorum}: between 1 and the {} witnesses given",
            endpoints.len()
        )));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::io("starting the runtime", e))?;
    let http = reqwest::Client::new();
    let mut prover = log.prover()?;
    let mut prove =
        |old: u64| client::proof_from(&mut prover, old, checkpoint.size, &checkpoint.root);
    let mut cosigned = SignedNote::parse(&note)
        .map_err(|e| CliError::Usage(format!("the signed checkpoint: {e}")))?;
    let mut failures = Vec::new();
    let mut refused = false;
    for endpoint in &endpoints {
        let answer = runtime.block_on(client::cosign(
            &http,
            endpoint,
            &note,
            checkpoint.size,
            previous,
            &mut prove,
        ));
        match answer {
            Ok(sig) => {
                cosigned.add(sig);
                if !global.quiet {
                    eprintln!("cosigned by {} ({})", endpoint.key.name(), endpoint.url);
                }
            }
            Err(e) => {
                refused |= matches!(
                    e,
                    ClientError::WitnessAhead { .. }
                        | ClientError::Refused {
                            status: 409 | 422,
                            ..
                        }
                );
                eprintln!("chainlog: {e}");
                failures.push(e.to_string());
            }
        }
    }
    let got = endpoints.len() - failures.len();
    if got < quorum {
        let why = format!(
            "{got} of {} witnesses cosigned the checkpoint of size {}; --witness-quorum is {quorum}; nothing written",
            endpoints.len(),
            checkpoint.size
        );
        return Err(if refused {
            CliError::Integrity(why)
        } else {
            CliError::Usage(why)
        });
    }
    Ok(cosigned.to_text())
}

/// `--witness-policy` of `verify` and `check-bundle`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Also require the checkpoint to carry valid cosignatures from the
    /// witness policy's quorum (a file of `witness <vkey>` lines and a
    /// `quorum N` line).
    #[arg(long, value_name = "FILE")]
    pub witness_policy: Option<PathBuf>,
}

/// Checks a signed note against the policy file `policy`: too few valid
/// cosignatures, or a bad one, is an integrity failure.
pub fn check_policy(policy: &Path, note: &str) -> Result<PolicyReport, CliError> {
    let text = read_small_text(policy, "witness policy")?;
    let policy_shown = policy.display();
    let policy =
        WitnessPolicy::parse(&text).map_err(|e| CliError::Usage(format!("{policy_shown}: {e}")))?;
    policy.check(note).map_err(|e| match e {
        WitnessError::Note(e) => CliError::Usage(format!("the checkpoint: {e}")),
        other => CliError::Integrity(format!(
            "the checkpoint fails witness policy {policy_shown}: {other}"
        )),
    })
}

/// A line saying who cosigned.
pub fn policy_line(report: &PolicyReport) -> String {
    let names: Vec<String> = report
        .cosigned
        .iter()
        .map(|c| {
            let name = c.witness.split('+').next().unwrap_or_default();
            format!("{name} at {}", c.timestamp)
        })
        .collect();
    format!(
        "witnesses: {} cosigned (the policy asks for {}): {}",
        report.cosigned.len(),
        report.quorum,
        names.join(", ")
    )
}

/// The signed checkpoint at the head of a bundle (its `checkpoint` member),
/// read without holding the bundle in memory.
pub fn bundle_note(path: &Path) -> Result<String, CliError> {
    #[derive(serde::Deserialize)]
    struct Head {
        checkpoint: String,
    }
    let file = std::fs::File::open(path)
        .map_err(|e| CliError::io(format!("reading bundle {}", path.display()), e))?;
    let head: Head = serde_json::from_reader(BufReader::new(file))
        .map_err(|e| CliError::Usage(format!("bundle {}: no checkpoint: {e}", path.display())))?;
    Ok(head.checkpoint)
}

/// Prints the policy line on stdout unless quiet.
pub fn print_policy(global: &Global, report: &PolicyReport) -> Result<(), CliError> {
    if !global.quiet {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", policy_line(report)).map_err(CliError::output)?;
    }
    Ok(())
}
