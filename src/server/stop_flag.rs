//! A stop flag that the server's background threads (archiving,
//! witnessing) sleep on between their runs.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// Set once to stop a background thread; cloned into it.
#[derive(Debug, Clone, Default)]
pub(crate) struct StopFlag(Arc<(Mutex<bool>, Condvar)>);

impl StopFlag {
    /// Whether it is set.
    pub(crate) fn is_set(&self) -> bool {
        *self.0 .0.lock()
    }

    /// Sleeps up to `period`, less when it is set meanwhile; returns
    /// whether it is set.
    pub(crate) fn wait(&self, period: Duration) -> bool {
        let (stopped, wake) = &*self.0;
        let mut stopped = stopped.lock();
        if !*stopped {
            wake.wait_for(&mut stopped, period);
        }
        *stopped
    }

    /// Sets it and wakes the sleeper.
    pub(crate) fn set(&self) {
        let (stopped, wake) = &*self.0;
        *stopped.lock() = true;
        wake.notify_all();
    }
}
