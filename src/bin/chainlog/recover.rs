//! `chainlog recover --cut-at OFFSET`: the operator's recorded cut of
//! corruption in the newest segment.

use std::path::PathBuf;
use std::process::ExitCode;

use chainlog::log::cut::{apply_cut, plan_cut};
use chainlog::storage::FsStorage;
use clap::Args;

use crate::error::CliError;
use crate::Global;

/// `chainlog recover` arguments.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Byte offset in the newest segment where the cut starts: a frame of
    /// the valid prefix, or where the valid prefix ends (the offset that
    /// `verify` and a refused open name).
    #[arg(long, value_name = "OFFSET")]
    pub cut_at: u64,
    /// The newest segment's file name, as a check that the cut is where the
    /// operator thinks it is.
    #[arg(long, value_name = "FILE")]
    pub segment: Option<PathBuf>,
    /// Carry out the cut. Without it, only show what it would drop.
    #[arg(long)]
    pub yes: bool,
}

/// Runs `chainlog recover`.
pub fn run(global: &Global, args: RecoverArgs) -> Result<ExitCode, CliError> {
    let dir = global.dir()?;
    let plan = plan_cut(&FsStorage, dir, args.cut_at)?;
    if let Some(want) = &args.segment {
        let want = want.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if want != plan.segment {
            return Err(CliError::Usage(format!(
                "--segment {want}: the newest segment is {}; only it can be cut",
                plan.segment
            )));
        }
    }
    outln!(
        "cut of {} at byte {}: {} bytes{}, {} valid frame(s) in the region",
        plan.segment,
        plan.cut_at,
        plan.cut_bytes(),
        if plan.trailer { " and the trailer" } else { "" },
        plan.dropped.len()
    )?;
    for d in &plan.dropped {
        outln!(
            "  drops seq {} at byte {}: hash {} event {} actor {}",
            d.seq,
            d.offset,
            d.hash,
            d.event.as_deref().unwrap_or("(undecodable)"),
            d.actor.as_deref().unwrap_or("(undecodable)")
        )?;
    }
    if !args.yes {
        outln!("nothing changed; run again with --yes to cut (the bytes are kept in quarantine/)")?;
        return Ok(ExitCode::SUCCESS);
    }
    let done = apply_cut(&FsStorage, dir, &plan)?;
    outln!(
        "cut done: bytes kept in {} (sha256 {}); record log.recovery_cut is seq {} (hash {})",
        done.quarantine.display(),
        done.quarantine_sha256,
        done.seq,
        done.hash
    )?;
    Ok(ExitCode::SUCCESS)
}
