//! The machine limits a figure is shown beside: SHA-256 over the same bytes, sequential write, small write + fdatasync.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chainlog::storage::{FsStorage, Storage};
use sha2::{Digest, Sha256};

use crate::error::CliError;

/// An amount (bytes, operations, events) done in some seconds.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Rate {
    pub(super) amount: f64,
    pub(super) seconds: f64,
}

impl Rate {
    pub(super) fn per_s(&self) -> f64 {
        self.amount / self.seconds.max(1e-9)
    }
}

/// Runs each measurement once per round, in turn, and adds up each one's
/// amounts and times.
pub(super) fn interleave<const N: usize>(
    rounds: usize,
    mut slices: [&mut dyn FnMut(usize) -> Result<Rate, CliError>; N],
) -> Result<[Rate; N], CliError> {
    let mut totals = [Rate::default(); N];
    for round in 0..rounds {
        for (total, slice) in totals.iter_mut().zip(slices.iter_mut()) {
            let r = slice(round)?;
            total.amount += r.amount;
            total.seconds += r.seconds;
        }
    }
    Ok(totals)
}

/// SHA-256 of each record in turn, for about `budget`: bytes hashed.
pub(super) fn sha256_bytes(records: &[Vec<u8>], budget: Duration) -> Rate {
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut sink = 0u8;
    'outer: loop {
        for chunk in records.chunks(64) {
            for r in chunk {
                let digest = Sha256::digest(r);
                sink ^= digest[0];
                bytes += r.len() as u64;
            }
            if start.elapsed() >= budget {
                break 'outer;
            }
        }
    }
    std::hint::black_box(sink);
    Rate {
        amount: bytes as f64,
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// Writes `total` bytes in 1 MiB writes to a new file, then `fdatasync`.
pub(super) fn seq_write_bytes(path: &Path, total: u64) -> Result<Rate, CliError> {
    let io_err = |e| CliError::io(format!("writing {}", path.display()), e);
    let chunk: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(31) >> 3) as u8)
        .collect();
    let _ = fs::remove_file(path);
    settle(path.parent().unwrap_or(path));
    let mut file = File::create(path).map_err(io_err)?;
    let start = Instant::now();
    let mut written = 0;
    while written < total {
        file.write_all(&chunk).map_err(io_err)?;
        written += chunk.len() as u64;
    }
    file.sync_data().map_err(io_err)?;
    let seconds = start.elapsed().as_secs_f64();
    drop(file);
    let _ = fs::remove_file(path);
    Ok(Rate {
        amount: written as f64,
        seconds,
    })
}

/// Small writes at increasing offsets of a preallocated file, each followed
/// by `fdatasync`: what `Durability::Always` does per append, without the engine.
pub(super) struct RawFsync {
    pub(super) path: PathBuf,
    pub(super) file: Arc<dyn chainlog::storage::StorageFile>,
    pub(super) buf: Vec<u8>,
    pub(super) at: std::cell::Cell<u64>,
}

pub(super) const RAW_FSYNC_FILE_BYTES: u64 = 64 << 20;

impl RawFsync {
    pub(super) fn new(path: &Path, write_len: usize) -> Result<RawFsync, CliError> {
        let io_err = |e| CliError::io(format!("creating {}", path.display()), e);
        let file = FsStorage.create_new(path).map_err(io_err)?;
        file.allocate(RAW_FSYNC_FILE_BYTES).map_err(io_err)?;
        file.sync_data().map_err(io_err)?;
        Ok(RawFsync {
            path: path.to_path_buf(),
            file,
            buf: vec![0xa5; write_len.max(1)],
            at: std::cell::Cell::new(0),
        })
    }

    pub(super) fn run(&self, budget: Duration) -> Result<Rate, CliError> {
        let io_err = |e| CliError::io(format!("writing {}", self.path.display()), e);
        let stride = self.buf.len().div_ceil(8) as u64 * 8;
        let start = Instant::now();
        let mut ops = 0u64;
        while start.elapsed() < budget || ops < 3 {
            let mut at = self.at.get();
            if at + stride > RAW_FSYNC_FILE_BYTES {
                at = 0;
            }
            self.file.write_all_at(&self.buf, at).map_err(io_err)?;
            self.file.sync_data().map_err(io_err)?;
            self.at.set(at + stride);
            ops += 1;
        }
        Ok(Rate {
            amount: ops as f64,
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}

impl Drop for RawFsync {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Flushes the file system holding `dir` (`syncfs`), so that the writeback
/// and the discards of one measurement's removed files do not slow the next.
pub(super) fn settle(dir: &Path) {
    if let Ok(dir) = File::open(dir) {
        let _ = rustix::fs::syncfs(&dir);
    }
}
