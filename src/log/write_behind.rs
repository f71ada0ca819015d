//! Write-behind: a thread that writes the buffered frames after a delay or when the buffer fills.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::*;

impl Inner {
    pub(super) fn write_behind(&self) -> Option<WriteBehind> {
        match self.options.durability {
            Durability::Always => None,
            _ if self.options.read_only => None,
            _ => self.options.write_behind,
        }
    }

    /// The most the write buffer holds while the writer keeps up: up to the
    /// point where appends wait for it, plus one batch small enough to be
    /// buffered (under Always, a few waiting appenders' batches).
    pub(super) fn steady_buffer_bytes(&self) -> usize {
        self.write_behind()
            .map_or(4 * DIRECT_WRITE_BYTES, |wb| wb.full_bytes())
            + DIRECT_WRITE_BYTES
    }

    /// Tells the write-behind thread about a buffer just started (arm the
    /// delay) or just filled (write now).
    pub(super) fn wake_write_behind(&self, started: bool, full: bool) {
        let mut state = self.behind.lock();
        if started {
            state.since.get_or_insert_with(Instant::now);
        }
        state.full |= full;
        self.behind_wake.notify_one();
    }

    /// After an append: wakes the write-behind thread when it has work.
    pub(super) fn after_append(&self, appended: &Appended) {
        if appended.started_buffer || appended.filled_buffer {
            self.wake_write_behind(appended.started_buffer, appended.filled_buffer);
        }
    }

    /// The write-behind thread: writes the buffer once it is full, or once
    /// its oldest frame has waited `max_delay`. A failed write poisons the
    /// handle (appenders see it), and the thread ends.
    pub(super) fn run_write_behind(&self, wb: WriteBehind) {
        let mut state = self.behind.lock();
        while !self.closing.load(Ordering::SeqCst) {
            let due = match state.since {
                None if !state.full => {
                    self.behind_wake.wait(&mut state);
                    continue;
                }
                None => Instant::now(),
                Some(since) => since + wb.max_delay,
            };
            if !state.full && Instant::now() < due {
                self.behind_wake.wait_until(&mut state, due);
                continue;
            }
            // Cleared before the buffer is taken: a frame appended after the
            // take arms the delay again.
            *state = BehindState::default();
            drop(state);
            let result = self.write_pending_released(self.writer.lock());
            if result.is_err() {
                return;
            }
            self.request_batch_flush();
            state = self.behind.lock();
        }
    }
}
