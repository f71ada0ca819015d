//! Zeros written ahead of the frames under `Always`.
//!
//! ext4 and XFS keep a preallocated segment as unwritten extents: the first
//! write into each block makes the next `fdatasync` commit the journal to
//! mark it written. A group commit of a few KiB reaches a new block at
//! nearly every sync, so each paid that commit (8 KiB writes + `fdatasync`:
//! 365 us each, against 218 us into a range written before;
//! docs/PERFORMANCE.md). Zeros
//! written just past the frames mark a whole range at one sync
//! ([`StorageFile::zero_ahead`](crate::storage::StorageFile::zero_ahead)).
//! The range starts at a page and doubles up to a MiB, so that a handle that
//! appends one event (a CLI call) writes one page more, not a MiB.

/// The first range a handle zeroes in a segment.
const FIRST_BYTES: u64 = 4 << 10;
/// The largest range: one sync per MiB of frames carries the zeros.
const MAX_BYTES: u64 = 1 << 20;

/// How far the data area of the active segment is zeroed ahead.
#[derive(Debug)]
pub(super) struct ZeroAhead {
    /// The data area from the frames to here holds zeros written ahead.
    zeroed_at: u64,
    /// The size of the next range.
    next_bytes: u64,
}

impl ZeroAhead {
    /// Nothing zeroed yet; frames end at `end`.
    pub(super) fn new(end: u64) -> ZeroAhead {
        ZeroAhead {
            zeroed_at: end,
            next_bytes: FIRST_BYTES,
        }
    }

    /// Frames are about to be written up to `end`: the range to zero first,
    /// if they end past the zeros. It starts at `end`, so no frame is ever
    /// overwritten, and stops at `limit` (where the trailer goes).
    pub(super) fn before_write(&mut self, end: u64, limit: u64) -> Option<(u64, u64)> {
        if end <= self.zeroed_at {
            return None;
        }
        let to = end.saturating_add(self.next_bytes).min(limit);
        self.zeroed_at = to.max(end);
        self.next_bytes = (self.next_bytes * 2).min(MAX_BYTES);
        (to > end).then(|| (end, to - end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_start_after_the_frames_double_and_stop_at_the_limit() {
        let limit = 8 << 20;
        let mut z = ZeroAhead::new(4096);
        assert_eq!(z.before_write(4096, limit), None, "nothing written");
        assert_eq!(z.before_write(4396, limit), Some((4396, 4 << 10)));
        assert_eq!(z.before_write(4396 + 4096, limit), None, "inside the zeros");
        let end = 4396 + (4 << 10) + 1;
        assert_eq!(z.before_write(end, limit), Some((end, 8 << 10)));
        let mut end = end + (8 << 10);
        let mut sizes = Vec::new();
        while let Some((at, len)) = z.before_write(end + 1, limit) {
            assert_eq!(at, end + 1, "never below the frames' end");
            sizes.push(len);
            end = at + len;
        }
        assert_eq!(
            &sizes[..8],
            &[
                16 << 10,
                32 << 10,
                64 << 10,
                128 << 10,
                256 << 10,
                512 << 10,
                1 << 20,
                1 << 20
            ]
        );
        assert_eq!(end, limit, "the last range stops at the limit");
        assert_eq!(z.before_write(limit, limit), None);
    }

    #[test]
    fn a_write_past_the_zeros_is_never_zeroed_over() {
        let mut z = ZeroAhead::new(4096);
        // One large write that ends far past the zeroed range.
        assert_eq!(z.before_write(3 << 20, 8 << 20), Some((3 << 20, 4 << 10)));
        // A write ending at the limit leaves nothing to zero.
        let mut z = ZeroAhead::new(4096);
        assert_eq!(z.before_write(8 << 20, 8 << 20), None);
        assert_eq!(z.before_write(8 << 20, 8 << 20), None);
    }
}
