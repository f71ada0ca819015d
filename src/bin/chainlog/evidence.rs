//! `chainlog evidence` and `chainlog check-evidence`: evidence packs for
//! auditors (see `chainlog::evidence` and docs/AUDITORS.md).

use std::fs::{self, File};
use std::io::{self, BufWriter, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use chainlog::event::Timestamp;
use chainlog::evidence::{self, EvidenceError, EvidenceOptions, PackError, PackSummary};
use chainlog::hash::checkpoint::NoteSigner;
use chainlog::query::parse_time;
use chainlog::{Log, Options};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::CliError;
use crate::keys::{load_signer, load_verifier};
use crate::Global;

/// How long the PDF renderer may take.
const PDF_TIMEOUT: Duration = Duration::from_secs(60);
/// Browsers that can print a page to PDF headless, tried in order.
const PDF_RENDERERS: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];

/// `chainlog evidence`.
#[derive(Debug, Args)]
pub struct EvidenceArgs {
    /// The server's data directory (with --workspace); or give the log with
    /// --log (or --dir).
    #[arg(long, value_name = "DIR", requires = "workspace")]
    data: Option<PathBuf>,
    /// The workspace in --data whose log to use.
    #[arg(long, value_name = "NAME", requires = "data")]
    workspace: Option<String>,
    /// The log's directory (default: --dir).
    #[arg(long, value_name = "DIR", conflicts_with = "data")]
    log: Option<PathBuf>,
    /// Start of the period (event time, inclusive): RFC 3339, or relative (`30d`).
    #[arg(long, value_name = "TIME")]
    since: String,
    /// End of the period (event time, exclusive). Default: now.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// The log's checkpoint secret key (from `chainlog keygen`; mode 0600).
    #[arg(long, value_name = "FILE")]
    checkpoint_key: PathBuf,
    /// Where to write the pack (a zip).
    #[arg(long, short, value_name = "FILE")]
    output: PathBuf,
    /// Inclusion proofs to sample (at most 10,000).
    #[arg(long, value_name = "N", default_value_t = 32)]
    sample: u64,
    /// The sample's seed (default: from the clock); kept in the pack.
    #[arg(long, value_name = "SEED")]
    seed: Option<u64>,
    /// Origin prefix of the checkpoints (`<PREFIX>/<log id>`).
    #[arg(long, value_name = "PREFIX", default_value = "chainlog")]
    origin: String,
    /// The newest witnessed (cosigned) checkpoint, to include. Default with
    /// --data: the one `chainlog serve --witness` stored for the workspace
    /// (DATA/witnessed/<NAME>.checkpoint), if any.
    #[arg(long, value_name = "FILE")]
    witnessed_checkpoint: Option<PathBuf>,
    /// Do not render report.pdf even when a headless Chromium is installed.
    #[arg(long)]
    no_pdf: bool,
    /// The log's archive (s3://BUCKET/PREFIX, as given to `chainlog
    /// archive --to`): the pack then states which of the period's segments
    /// the bucket holds and their Object Lock, as the bucket reports them.
    #[cfg(feature = "s3")]
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    archive: Option<String>,
    #[cfg(feature = "s3")]
    #[command(flatten)]
    endpoint: crate::archive::EndpointArgs,
}

/// `chainlog check-evidence`.
#[derive(Debug, Args)]
pub struct CheckEvidenceArgs {
    /// The pack.
    #[arg(value_name = "PACK")]
    pack: PathBuf,
    /// The log's public key. Without it the key in the pack is used, which
    /// only shows that the pack agrees with itself.
    #[arg(long, value_name = "PUBKEY")]
    key: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Also require the pack's witnessed checkpoint to carry valid
    /// cosignatures from this witness policy's quorum (fails when the pack
    /// has none).
    #[arg(long, value_name = "FILE")]
    witness_policy: Option<PathBuf>,
}

fn log_dir(global: &Global, args: &EvidenceArgs) -> Result<PathBuf, CliError> {
    if let (Some(data), Some(workspace)) = (&args.data, &args.workspace) {
        if workspace.is_empty() || workspace.starts_with('.') || workspace.contains(['/', '\\']) {
            return Err(CliError::Usage(format!(
                "--workspace {workspace:?} is not a workspace name"
            )));
        }
        return Ok(data.join("workspaces").join(workspace));
    }
    match &args.log {
        Some(dir) => Ok(dir.clone()),
        None => Ok(global.dir()?.to_path_buf()),
    }
}

/// Prints `html` to PDF with a headless Chromium, when one is installed.
pub fn render_pdf(html: &str) -> Option<Vec<u8>> {
    let renderer = PDF_RENDERERS.iter().find(|name| {
        Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })?;
    let dir = std::env::temp_dir().join(format!(
        "chainlog-report-{}-{}",
        std::process::id(),
        Timestamp::now().unix_nanos()
    ));
    fs::create_dir(&dir).ok()?;
    let result = (|| {
        let page = dir.join("report.html");
        let pdf = dir.join("report.pdf");
        fs::write(&page, html).ok()?;
        let mut child = Command::new(renderer)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-pdf-header-footer",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .arg(format!("--print-to-pdf={}", pdf.display()))
            .arg(format!("file://{}", page.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if started.elapsed() < PDF_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
        fs::read(&pdf).ok().filter(|b| b.starts_with(b"%PDF"))
    })();
    let _ = fs::remove_dir_all(&dir);
    result
}

fn evidence_error(e: EvidenceError) -> CliError {
    match e {
        EvidenceError::Log(e) => CliError::Log(e),
        EvidenceError::ChainBroken { .. } => CliError::Integrity(e.to_string()),
        e => CliError::Usage(e.to_string()),
    }
}

/// Writes a pack of `log` to `output` (through a temporary file beside
/// it, renamed when complete), with a progress bar unless `quiet`.
pub fn write_pack(
    log: &Log,
    signer: &NoteSigner,
    options: &EvidenceOptions,
    output: &Path,
    pdf: bool,
    quiet: bool,
) -> Result<PackSummary, CliError> {
    let name = output.file_name().ok_or_else(|| {
        CliError::Usage(format!("--output {}: not a file name", output.display()))
    })?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = output.with_file_name(tmp_name);
    let file =
        File::create(&tmp).map_err(|e| CliError::io(format!("creating {}", tmp.display()), e))?;
    let bar = (!quiet && io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} rows written ({per_sec})")
        {
            bar.set_style(style);
        }
        bar
    });
    let no_pdf = |_: &str| None;
    let renderer: &dyn Fn(&str) -> Option<Vec<u8>> = if pdf { &render_pdf } else { &no_pdf };
    let result = evidence::build(
        log,
        signer,
        options,
        BufWriter::with_capacity(1 << 16, file),
        renderer,
        &mut |done, total| {
            if let Some(bar) = &bar {
                bar.set_length(total);
                bar.set_position(done);
            }
        },
    );
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let summary = match result {
        Ok(summary) => summary,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(evidence_error(e));
        }
    };
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .and_then(|()| fs::rename(&tmp, output))
        .map_err(|e| CliError::io(format!("writing {}", output.display()), e))?;
    Ok(summary)
}

/// Runs `chainlog evidence`.
pub fn run(global: &Global, args: EvidenceArgs) -> Result<ExitCode, CliError> {
    let dir = log_dir(global, &args)?;
    let now = Timestamp::now();
    let time = |flag: &str, text: &str| {
        parse_time(text, now).map_err(|e| CliError::Usage(format!("--{flag} {text:?}: {e}")))
    };
    let since = time("since", &args.since)?;
    let until = match &args.until {
        Some(text) => time("until", text)?,
        None => now,
    };
    let signer = load_signer(&args.checkpoint_key)?;
    let witnessed = match &args.witnessed_checkpoint {
        Some(path) => Some(fs::read_to_string(path).map_err(|e| {
            CliError::io(
                format!("reading the witnessed checkpoint {}", path.display()),
                e,
            )
        })?),
        // A server's data directory: the one its witnesses cosigned last.
        #[cfg(feature = "server")]
        None => match (&args.data, &args.workspace) {
            (Some(data), Some(w)) => chainlog::server::witnessing::witnessed_checkpoint(data, w)
                .map_err(|e| CliError::io("reading the witnessed checkpoint", e))?,
            _ => None,
        },
        #[cfg(not(feature = "server"))]
        None => None,
    };
    let log = Log::open(&dir, Options::for_reading())?;
    let mut options = EvidenceOptions::new(since, until);
    options.sample = args.sample;
    if let Some(seed) = args.seed {
        options.seed = seed;
    }
    options.origin_prefix = args.origin;
    options.witnessed_checkpoint = witnessed;
    #[cfg(feature = "s3")]
    let archive_error = match &args.archive {
        Some(url) => Some(archive_state(
            &mut options,
            args.endpoint.target(url)?,
            &log,
        )),
        None => None,
    };
    let summary = write_pack(
        &log,
        &signer,
        &options,
        &args.output,
        !args.no_pdf,
        global.quiet,
    )?;
    if !global.quiet {
        outln!(
            "wrote {}: {} rows (seq {} to {}), {} in the period, {} failures; {} files{}",
            args.output.display(),
            summary.end_seq - summary.first_seq,
            summary.first_seq,
            summary.end_seq.saturating_sub(1),
            summary.rows_in_period,
            summary.failures,
            summary.files,
            if summary.pdf {
                " with report.pdf"
            } else {
                " (no PDF renderer: report.html only)"
            }
        )?;
    }
    #[cfg(feature = "s3")]
    if let Some(error) = archive_error.and_then(|e| e.lock().ok().and_then(|mut cell| cell.take()))
    {
        eprintln!("chainlog: warning: the archive could not be read ({error}); the pack says so in state/retention.json");
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks `target` for the archive's state of the pack's seqs while the pack
/// is built; the error it gave, if any, lands in the returned cell.
#[cfg(feature = "s3")]
fn archive_state(
    options: &mut EvidenceOptions,
    target: chainlog::archive::ArchiveTarget,
    log: &Log,
) -> std::sync::Arc<std::sync::Mutex<Option<String>>> {
    let error = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen = error.clone();
    let log_id = log.log_id().to_string();
    options.archive = Some(evidence::ArchiveState(std::sync::Arc::new(
        move |first, end| {
            let state = chainlog::archive::period_archive_json(&target, &log_id, first, end);
            if let (Some(e), Ok(mut cell)) = (state["error"].as_str(), seen.lock()) {
                *cell = Some(e.to_string());
            }
            state
        },
    )));
    error
}

/// Runs `chainlog check-evidence`.
pub fn check(global: &Global, args: CheckEvidenceArgs) -> Result<ExitCode, CliError> {
    let key = match &args.key {
        Some(path) => Some(load_verifier(path)?),
        None => None,
    };
    match evidence::check(&args.pack, key.as_ref()) {
        Ok(report) => {
            let cosigned = match (&args.witness_policy, &report.witnessed_note) {
                (Some(_), Some(_)) if !report.witnessed_linked => {
                    return Err(CliError::Integrity(format!(
                        "{}: the pack has no consistency proof between its witnessed checkpoint and its end checkpoint; --witness-policy cannot show the period is in the witnessed history (make the pack again)",
                        args.pack.display()
                    )))
                }
                (Some(policy), Some(note)) => Some(crate::witness::check_policy(policy, note)?),
                (Some(_), None) => {
                    return Err(CliError::Integrity(format!(
                        "{}: the pack has no witnessed checkpoint; --witness-policy cannot be met",
                        args.pack.display()
                    )))
                }
                (None, _) => None,
            };
            if args.json {
                let text = serde_json::to_string(&report)
                    .map_err(|e| CliError::io("writing JSON", e.into()))?;
                outln!("{text}")?;
            } else if !global.quiet {
                outln!(
                    "intact: {} rows (seq {} to {}) of {}, {} to {}; {} files, {} sampled proofs, consistency proof checked{}",
                    report.rows,
                    report.first_seq,
                    report.end_seq.saturating_sub(1),
                    report.origin,
                    report.since,
                    report.until,
                    report.files,
                    report.sample,
                    match (report.witnessed, report.witnessed_linked) {
                        (true, true) => "; witnessed checkpoint included, one history with the end checkpoint",
                        (true, false) => "; witnessed checkpoint included, with no proof linking it to the end checkpoint",
                        (false, _) => "; no witnessed checkpoint",
                    }
                )?;
                if let Some(cosigned) = &cosigned {
                    crate::witness::print_policy(global, cosigned)?;
                }
                if !report.key_given {
                    eprintln!(
                        "chainlog: warning: checked with the key in the pack ({}); pass --key with the log's published key to know who signed it",
                        report.key
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(PackError::Unreadable { file, reason }) if file == "(pack)" => Err(CliError::Usage(
            format!("{}: {reason}", args.pack.display()),
        )),
        Err(e) => Err(CliError::Integrity(format!("{}: {e}", args.pack.display()))),
    }
}
