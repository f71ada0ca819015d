//! A segment checked in two halves at once, when a thread is spare for it:
//! each frame is checked against the hash stored in the frame before it, so
//! the second half starts from a valid frame near the middle and the first
//! half stops there, with the same result as one pass.

use std::sync::Arc;

use super::segment_check::SegmentCheck;
use super::MAX_REPORTED_PROBLEMS;
use crate::error::{Error, Result};
use crate::format::frame::{FRAME_ALIGN, MAX_FRAME_BYTES};
use crate::format::segment::{Scanner, Step, HEADER_BYTES};
use crate::hash::chain::ChainHash;
use crate::storage::{read_full_at, StorageFile};

impl SegmentCheck {
    /// Checks the frames in two halves at once: this thread from the start
    /// up to and including the frame at `split`, another from the frame
    /// after it, starting from that frame's stored hash and seq, which is
    /// where checking the frame at `split` leaves this one. Returns the
    /// offset where the data ends. If this half never meets a frame at
    /// `split` (it lies inside a frame, or damage skips it), this half
    /// checks the rest itself and the other's work is dropped.
    pub(super) fn frames_in_halves(
        &mut self,
        file: Arc<dyn StorageFile>,
        limit: u64,
        split: SplitPoint,
    ) -> Result<u64> {
        let file_c = file.clone();
        let (first, second) = std::thread::scope(|scope| {
            let file_b = file.clone();
            let name = self.r.name.clone();
            // The other half reads the same layout (the header's version).
            let header = self.r.header;
            let second = scope.spawn(move || {
                let mut rest = SegmentCheck::new(&name, 0, split.seq, None);
                rest.r.header = header;
                rest.head = split.hash;
                rest.expected_seq = split.seq.saturating_add(1);
                let end = rest.frames(file_b, split.end, limit, None)?;
                Ok((rest, end.0))
            });
            let first = self.frames(file, HEADER_BYTES, limit, Some(split.at));
            (first, second.join())
        });
        let (end, met) = first?;
        // A panic in the other half is a bug: it goes on as one here.
        let second: Result<(SegmentCheck, u64)> =
            second.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        if !met {
            return Ok(end);
        }
        let (rest, end) = second?;
        self.absorb(rest);
        // The other half built no index (its blocks depend on where this
        // half's last block starts): index its frames by reading them again.
        if let Some(index) = &mut self.r.index {
            if index.extend_from(file_c, &self.r.name, limit).is_err() {
                self.r.index = None;
            }
        }
        Ok(end)
    }

    /// Appends what checking the frames after this half found.
    fn absorb(&mut self, rest: SegmentCheck) {
        for p in rest.r.problems {
            if self.r.problems.len() < MAX_REPORTED_PROBLEMS {
                self.r.problems.push(p);
            }
        }
        self.r.records += rest.r.records;
        if rest.r.last_seq.is_some() {
            self.r.last_seq = rest.r.last_seq;
            self.r.last_hash = rest.r.last_hash;
        }
        self.tail = rest.tail;
        self.r.events.extend(rest.r.events);
        if let Some((first, seq, offset)) = rest.r.first_received {
            self.note_received(first, seq, offset);
        }
        if rest.r.last_received.is_some() {
            self.r.last_received = rest.r.last_received;
        }
        self.min_ts = match (self.min_ts, rest.min_ts) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max_ts = self.max_ts.max(rest.max_ts);
        self.expected_seq = rest.expected_seq;
        self.head = rest.head;
    }
}

/// Where a segment's frames are split between two threads: a valid frame
/// near the middle of the data area.
#[derive(Debug, Clone, Copy)]
pub(super) struct SplitPoint {
    /// The frame's offset.
    pub(super) at: u64,
    /// Just past it, where the second half starts.
    pub(super) end: u64,
    pub(super) seq: u64,
    pub(super) hash: ChainHash,
}

/// The first valid frame at or after the middle of the data (up to
/// `data_end`, a hint: [`data_end_hint`]), looking no further than one
/// largest frame. Any valid-looking frame will do (it may even lie inside a
/// record): the first half only stops there if it meets a frame at that
/// offset itself.
pub(super) fn find_split(
    file: &Arc<dyn StorageFile>,
    name: &str,
    limit: u64,
    data_end: u64,
) -> Result<Option<SplitPoint>> {
    let data_end = data_end.clamp(HEADER_BYTES, limit);
    let middle = (HEADER_BYTES + data_end) / 2 / FRAME_ALIGN as u64 * FRAME_ALIGN as u64;
    let search_end = limit.min(middle + MAX_FRAME_BYTES as u64);
    let mut scan = Scanner::new(file.clone(), name, middle, limit);
    let mut at = middle;
    while at < search_end {
        scan.seek(at);
        if let Step::Frame { frame, .. } = scan.next_step()? {
            return Ok(Some(SplitPoint {
                at,
                end: at + frame.padded_len() as u64,
                seq: frame.seq,
                hash: frame.hash,
            }));
        }
        at += FRAME_ALIGN as u64;
    }
    Ok(None)
}

/// Bytes probed at each step of [`data_end_hint`]'s search. Valid frames
/// hold no run of zeros this long (a record's texts and context hold no
/// NUL; a frame's zeros are a few high bytes of its lengths and seq and at
/// most seven bytes of padding), and the preallocated space after the data
/// is all zeros.
const PROBE_BYTES: usize = 64;

/// Where the data of a segment probably ends: the trailer's `data_end` when
/// it has one in range, else the result of a binary search for the first
/// all-zero probe of [`PROBE_BYTES`] (to within 4 KiB). Only a hint for
/// balancing the two halves: where a split falls never changes a result.
pub(super) fn data_end_hint(
    file: &Arc<dyn StorageFile>,
    name: &str,
    limit: u64,
    trailer_data_end: Option<u64>,
) -> Result<u64> {
    if let Some(end) = trailer_data_end.filter(|e| (HEADER_BYTES..=limit).contains(e)) {
        return Ok(end);
    }
    let (mut data, mut zeros) = (HEADER_BYTES, limit);
    let mut probe = [0; PROBE_BYTES];
    while zeros.saturating_sub(data) > 4096 {
        let mid = (data + (zeros - data) / 2) / FRAME_ALIGN as u64 * FRAME_ALIGN as u64;
        let n = read_full_at(&**file, &mut probe, mid).map_err(|e| Error::io(name, e))?;
        if probe[..n].iter().all(|&b| b == 0) {
            zeros = mid;
        } else {
            data = mid;
        }
    }
    Ok(zeros)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::event::Timestamp;
    use crate::format::frame::{self, FrameError};
    use crate::format::segment::{self, data_end_limit, SegmentHeader};
    use crate::storage::sim::SimDisk;
    use crate::storage::Storage;
    use crate::verify::test_logs;
    use crate::verify::Problem;
    use crate::Event;

    type Damage<'a> = dyn Fn(&mut Vec<u8>) + 'a;

    /// What a check of a segment's frames found, for comparing two checks.
    type Found = (
        Vec<Problem>,
        u64,
        Option<u64>,
        Option<ChainHash>,
        Option<(u64, u64, Option<FrameError>)>,
        u64,
    );

    fn found(check: SegmentCheck, end: u64) -> Found {
        let r = check.r;
        (
            r.problems,
            r.records,
            r.last_seq,
            r.last_hash,
            check.tail,
            end,
        )
    }

    /// A one-segment log (unsealed, so that damage at its end is a torn tail).
    fn segment() -> (SegmentHeader, Vec<u8>) {
        let disk = SimDisk::new();
        let dir = Path::new(test_logs::DIR);
        let log = test_logs::small_segments(&disk);
        for i in 0..150 {
            let mut e = Event::new(Timestamp::from_unix_nanos(i), "test.event", "alice");
            e.context
                .insert("pad".into(), "x".repeat(i as usize * 7 % 400).into());
            log.append(&e).unwrap();
        }
        log.close().unwrap();
        let path = dir.join(segment::file_name(0));
        let image = disk.read_file(&path).unwrap();
        let file = disk.open(&path, false).unwrap();
        let header = segment::read_header(&*file, "s").unwrap();
        (header, image)
    }

    fn frame_offsets(image: &[u8], limit: u64) -> Vec<u64> {
        let mut at = HEADER_BYTES;
        let mut out = Vec::new();
        while let Ok(Some(f)) = frame::decode(&image[at as usize..limit as usize]) {
            out.push(at);
            at += f.padded_len() as u64;
        }
        out
    }

    fn check_serial(file: &Arc<dyn StorageFile>, h: &SegmentHeader, limit: u64) -> Found {
        let mut check = SegmentCheck::new("s", 0, h.base_seq, None);
        check.head = h.prev_hash;
        let (end, _) = check
            .frames(file.clone(), HEADER_BYTES, limit, None)
            .unwrap();
        found(check, end)
    }

    fn check_halves(
        file: &Arc<dyn StorageFile>,
        h: &SegmentHeader,
        limit: u64,
        split: SplitPoint,
    ) -> Found {
        let mut check = SegmentCheck::new("s", 0, h.base_seq, None);
        check.head = h.prev_hash;
        let end = check.frames_in_halves(file.clone(), limit, split).unwrap();
        found(check, end)
    }

    #[test]
    fn halves_agree_with_one_pass_wherever_the_split_falls() {
        let (h, clean) = segment();
        let limit = data_end_limit(h.segment_bytes);
        let offsets = frame_offsets(&clean, limit);
        assert!(offsets.len() > 100);
        let mid = offsets.len() / 2;
        // Damage: none; a bad CRC before, at and after the split; a zeroed
        // frame; a torn tail.
        let damages: Vec<Box<Damage<'_>>> = vec![
            Box::new(|_| {}),
            Box::new(|img| img[offsets[mid - 3] as usize + 60] ^= 1),
            Box::new(|img| img[offsets[mid] as usize + 60] ^= 1),
            Box::new(|img| img[offsets[mid + 1] as usize + 60] ^= 1),
            Box::new(|img| img[offsets[mid - 1] as usize..offsets[mid] as usize].fill(0)),
            Box::new(|img| {
                let last = offsets[offsets.len() - 1] as usize;
                img[last + 20..last + 30].fill(0xee);
            }),
        ];
        for (d, damage) in damages.iter().enumerate() {
            let mut image = clean.clone();
            damage(&mut image);
            let disk = SimDisk::new();
            let file = disk.create_new(Path::new("/s")).unwrap();
            file.write_all_at(&image, 0).unwrap();
            let serial = check_serial(&file, &h, limit);
            if d > 0 {
                assert!(
                    !serial.0.is_empty() || serial.4.is_some(),
                    "damage {d} unseen"
                );
            }
            // Splits at frames (met) and inside them (never met: the first
            // half checks everything), with the seq and hash a split search
            // would have read there.
            for at in [
                offsets[mid - 1],
                offsets[mid],
                offsets[mid] + 8,
                offsets[mid + 2] + 48,
            ] {
                let split = match frame::decode(&image[at as usize..limit as usize]) {
                    Ok(Some(f)) => SplitPoint {
                        at,
                        end: at + f.padded_len() as u64,
                        seq: f.seq,
                        hash: f.hash,
                    },
                    _ => SplitPoint {
                        at,
                        end: at + 8,
                        seq: 7,
                        hash: ChainHash([9; 32]),
                    },
                };
                assert_eq!(
                    check_halves(&file, &h, limit, split),
                    serial,
                    "damage {d}, split at {at}"
                );
            }
        }
    }

    #[test]
    fn the_split_falls_in_the_middle_of_the_data_not_of_the_segment() {
        let (h, image) = segment();
        let limit = data_end_limit(h.segment_bytes);
        let offsets = frame_offsets(&image, limit);
        let last = *offsets.last().unwrap();
        let end = last
            + frame::decode(&image[last as usize..])
                .unwrap()
                .unwrap()
                .padded_len() as u64;
        // The segment is far from full, so the middle of its capacity lies
        // past its data.
        assert!(end < (HEADER_BYTES + limit) / 2);
        let disk = SimDisk::new();
        let file = disk.create_new(Path::new("/s")).unwrap();
        file.write_all_at(&image, 0).unwrap();
        let hint = data_end_hint(&file, "s", limit, None).unwrap();
        assert!((end..=end + 4096).contains(&hint), "hint {hint}, end {end}");
        // A trailer's data end in range is taken as it is; one out of range
        // is not.
        assert_eq!(data_end_hint(&file, "s", limit, Some(end)).unwrap(), end);
        assert_eq!(
            data_end_hint(&file, "s", limit, Some(limit + 8)).unwrap(),
            hint
        );
        let split = find_split(&file, "s", limit, hint).unwrap().unwrap();
        let before = offsets.iter().filter(|&&o| o <= split.at).count();
        let third = offsets.len() / 3;
        assert!(
            (third..=2 * third).contains(&before),
            "{before} of {} frames before the split",
            offsets.len()
        );
    }
}
