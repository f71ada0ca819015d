//! Archiving a replicated log's sealed segments as whole objects, with the
//! archive's own machinery ([`archive_sealed`]: `<base>.seg`, `<base>.idx`
//! and a manifest under the workspace's prefix), so that a rebuild reads one
//! object per sealed segment rather than its pieces.
//!
//! Only segments whose trailer is in a piece written before a head this
//! writer published are archived: a new holder, which republishes the head
//! before it lists pieces, then sees the same seal, so an archived segment
//! is never one the new holder continues differently. The uploader sends
//! the newest such segment's base; this thread hard-links the sealed
//! segments up to it into `<dir>.archive/` (sealed files never change; the
//! active segment stays out), archives that directory, and then (the
//! manifest naming them written) deletes the pieces of the segments it
//! archived.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::pieces::{parse_piece_file_name, piece_dir};
use super::uploader::Shared;
use crate::archive::{archive_sealed, ArchiveOptions, ArchiveTarget, Bucket};
use crate::format::segment;
use crate::index;

/// The archiving thread and the channel that feeds it.
#[derive(Debug)]
pub(super) struct Archiver {
    send: Option<Sender<u64>>,
    thread: Option<JoinHandle<()>>,
}

impl Archiver {
    /// Starts the thread for the log in `dir`, archiving to `target`.
    pub(super) fn start(dir: PathBuf, target: ArchiveTarget, shared: Arc<Shared>) -> Archiver {
        let (send, receive) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("chainlog-archive".into())
            .spawn(move || run(&dir, &target, &shared, &receive))
            .ok();
        Archiver {
            send: Some(send),
            thread,
        }
    }

    /// Archives the sealed segments up to the one starting at `base`.
    pub(super) fn archive_up_to(&self, base: u64) {
        if let Some(send) = &self.send {
            let _ = send.send(base);
        }
    }

    /// Lets the thread finish what it was asked, and waits for it.
    pub(super) fn finish(&mut self) {
        self.send = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(dir: &Path, target: &ArchiveTarget, shared: &Shared, receive: &Receiver<u64>) {
    while let Ok(mut base) = receive.recv() {
        // Only the newest request matters.
        while let Ok(newer) = receive.try_recv() {
            base = base.max(newer);
        }
        let result = stage(dir, base).and_then(|staging| {
            let outcome = archive_sealed(&staging, target, &ArchiveOptions::default())
                .map_err(|e| e.to_string())?;
            // The manifest names them now: their pieces are not needed.
            delete_pieces(target, &outcome.uploaded_segments)?;
            Ok(outcome)
        });
        let mut state = shared.state.lock();
        match result {
            Ok(outcome) => {
                state.archived_segments += outcome.uploaded_segments.len() as u64;
                state.archive_error = None;
            }
            Err(e) => state.archive_error = Some(e),
        }
    }
}

/// Deletes the pieces of the segments starting at `bases`.
fn delete_pieces(target: &ArchiveTarget, bases: &[u64]) -> Result<(), String> {
    if bases.is_empty() {
        return Ok(());
    }
    let bucket = Bucket::connect(target, true).map_err(|e| e.to_string())?;
    for &base in bases {
        let dir = piece_dir(base);
        for (name, _) in bucket.list(&dir).map_err(|e| e.to_string())? {
            if parse_piece_file_name(&name).is_some() {
                bucket
                    .delete(&format!("{dir}/{name}"))
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

/// `<dir>.archive`: where the segments to archive are linked.
pub(super) fn staging_dir(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!("{name}.archive"))
}

/// Hard-links the segments of `dir` up to `base` (sealed) and their
/// indexes into `<dir>.archive/`; returns that directory.
fn stage(dir: &Path, base: u64) -> Result<PathBuf, String> {
    let staging = staging_dir(dir);
    std::fs::create_dir_all(&staging)
        .map_err(|e| format!("creating {}: {e}", staging.display()))?;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let seg = segment::parse_file_name(&file);
        let idx = file
            .strip_suffix(".idx")
            .and_then(|stem| stem.parse::<u64>().ok());
        let Some(of) = seg.or(idx) else { continue };
        if of > base || (idx.is_some() && index::file_name(of) != file) {
            continue;
        }
        let to = staging.join(&file);
        if to.exists() {
            continue;
        }
        std::fs::hard_link(entry.path(), &to)
            .map_err(|e| format!("linking {} into {}: {e}", file, staging.display()))?;
    }
    Ok(staging)
}
