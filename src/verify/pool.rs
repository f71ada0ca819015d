//! Runs the segment checks on the verifier's threads and hands the results
//! over in log order.
//!
//! Each thread takes the next segment as soon as it is free, so no thread
//! waits for the slowest segment of a batch; but never one `window` or more
//! past the next to be linked, so memory stays bounded by the window, not
//! the log.

use std::collections::BTreeMap;

use parking_lot::{Condvar, Mutex};

use crate::error::Result;

struct State<T> {
    /// The next job to hand out.
    next: usize,
    /// Jobs handed over to `consume` so far.
    consumed: usize,
    /// Finished jobs waiting for their turn.
    done: BTreeMap<usize, std::thread::Result<Result<T>>>,
    /// Set when the caller stops early (an error or a panic).
    stop: bool,
}

/// Runs `work(0) .. work(count - 1)` on up to `threads` threads and calls
/// `consume` with each result in order, on the calling thread. Stops at the
/// first error (of `work` or `consume`) and returns it; a panic in `work`
/// goes on as a panic here.
pub(super) fn in_order<T: Send>(
    count: usize,
    threads: usize,
    window: usize,
    work: impl Fn(usize) -> Result<T> + Sync,
    mut consume: impl FnMut(T) -> Result<()>,
) -> Result<()> {
    if threads <= 1 || count <= 1 {
        for i in 0..count {
            consume(work(i)?)?;
        }
        return Ok(());
    }
    let window = window.max(1);
    let state = Mutex::new(State {
        next: 0,
        consumed: 0,
        done: BTreeMap::new(),
        stop: false,
    });
    let changed = Condvar::new();
    let outcome = std::thread::scope(|scope| {
        for _ in 0..threads.min(count) {
            scope.spawn(|| loop {
                let i = {
                    let mut s = state.lock();
                    loop {
                        if s.stop || s.next >= count {
                            return;
                        }
                        if s.next < s.consumed + window {
                            break;
                        }
                        changed.wait(&mut s);
                    }
                    s.next += 1;
                    s.next - 1
                };
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(i)));
                state.lock().done.insert(i, result);
                changed.notify_all();
            });
        }
        let mut outcome = Ok(Ok(()));
        for i in 0..count {
            let result = {
                let mut s = state.lock();
                loop {
                    if let Some(r) = s.done.remove(&i) {
                        s.consumed = i + 1;
                        break r;
                    }
                    changed.wait(&mut s);
                }
            };
            changed.notify_all();
            match result {
                Ok(Ok(value)) => {
                    if let Err(e) = consume(value) {
                        outcome = Ok(Err(e));
                        break;
                    }
                }
                Ok(Err(e)) => {
                    outcome = Ok(Err(e));
                    break;
                }
                Err(panic) => {
                    outcome = Err(panic);
                    break;
                }
            }
        }
        // Threads waiting for room in the window must not wait for ever.
        state.lock().stop = true;
        changed.notify_all();
        outcome
    });
    // A panic in a check is a bug: it goes on as one here.
    outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

#[cfg(test)]
mod tests {
    use super::in_order;
    use crate::error::Error;

    #[test]
    fn results_come_in_order_whatever_the_threads() {
        for threads in [1, 2, 3, 8] {
            for window in [1, 2, 5] {
                let mut seen = Vec::new();
                in_order(
                    20,
                    threads,
                    window,
                    |i| {
                        // Uneven work, so that later jobs finish first.
                        let spin = (20 - i) * 2000;
                        Ok((0..spin).fold(i, |a, b| std::hint::black_box(a ^ b))
                            ^ (0..spin).fold(0, |a, b| a ^ b))
                    },
                    |v| {
                        seen.push(v);
                        Ok(())
                    },
                )
                .unwrap();
                assert_eq!(
                    seen,
                    (0..20).collect::<Vec<_>>(),
                    "{threads} threads, window {window}"
                );
            }
        }
    }

    #[test]
    fn the_first_error_in_order_stops_the_run() {
        for threads in [1, 2, 4] {
            let mut seen = Vec::new();
            let r = in_order(
                30,
                threads,
                4,
                |i| {
                    if i == 7 || i == 20 {
                        Err(Error::InvalidOptions(format!("job {i}")))
                    } else {
                        Ok(i)
                    }
                },
                |v| {
                    seen.push(v);
                    Ok(())
                },
            );
            match r {
                Err(Error::InvalidOptions(m)) => assert_eq!(m, "job 7"),
                other => panic!("{other:?}"),
            }
            assert_eq!(seen, (0..7).collect::<Vec<_>>());
        }
    }

    #[test]
    #[should_panic(expected = "job 3 panics")]
    fn a_panic_in_a_job_goes_on_as_a_panic() {
        let _ = in_order(
            10,
            2,
            2,
            |i| {
                assert!(i != 3, "job 3 panics");
                Ok(i)
            },
            |_| Ok(()),
        );
    }
}
