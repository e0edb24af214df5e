//! Waiting on one executor: [`Signal`], a broadcast wake-up for tasks that wait for a condition
//! on shared `Cell` state, and [`within`], a timeout for any future.

use futures_lite::future;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Wakes every waiting task when state they watch may have changed; each re-checks its own
/// condition. Single-threaded: `Rc` it between the tasks of one executor.
#[derive(Default)]
pub(crate) struct Signal {
    /// One slot per waiting future; a future that stops waiting (ready, timed out, dropped)
    /// frees its slot, so this never outgrows the number of concurrent waiters.
    wakers: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
    /// Bumped by every notify, which empties all slots: a registration from an older
    /// generation is void.
    generation: Cell<u64>,
}

impl Signal {
    /// Wakes every task waiting on this signal.
    pub(crate) fn notify(&self) {
        self.generation.set(self.generation.get() + 1);
        self.free.borrow_mut().clear();
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }

    /// Resolves with the first `Some` that `check` returns, re-checking after each notify.
    pub(crate) fn wait_for<T, F: FnMut() -> Option<T> + Unpin>(&self, check: F) -> Wait<'_, F> {
        Wait {
            signal: self,
            check,
            slot: None,
        }
    }

    /// Resolves once `condition` holds.
    pub(crate) async fn wait_until(&self, mut condition: impl FnMut() -> bool + Unpin) {
        self.wait_for(|| condition().then_some(())).await
    }

    pub(crate) fn register(&self, slot: &mut Option<(usize, u64)>, waker: &Waker) {
        let generation = self.generation.get();
        let mut wakers = self.wakers.borrow_mut();
        match *slot {
            Some((index, g)) if g == generation => match &mut wakers[index] {
                Some(w) if w.will_wake(waker) => {}
                entry => *entry = Some(waker.clone()),
            },
            _ => {
                let index = match self.free.borrow_mut().pop() {
                    Some(index) => {
                        wakers[index] = Some(waker.clone());
                        index
                    }
                    None => {
                        wakers.push(Some(waker.clone()));
                        wakers.len() - 1
                    }
                };
                *slot = Some((index, generation));
            }
        }
    }

    pub(crate) fn deregister(&self, slot: &mut Option<(usize, u64)>) {
        if let Some((index, generation)) = slot.take() {
            if generation == self.generation.get() {
                self.wakers.borrow_mut()[index] = None;
                self.free.borrow_mut().push(index);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn registered(&self) -> usize {
        self.wakers.borrow().iter().flatten().count()
    }
}

/// The future of [`Signal::wait_for`].
pub(crate) struct Wait<'a, F> {
    signal: &'a Signal,
    check: F,
    slot: Option<(usize, u64)>,
}

impl<T, F: FnMut() -> Option<T> + Unpin> Future for Wait<'_, F> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        if let Some(value) = (this.check)() {
            this.signal.deregister(&mut this.slot);
            return Poll::Ready(value);
        }
        this.signal.register(&mut this.slot, cx.waker());
        Poll::Pending
    }
}

impl<F> Drop for Wait<'_, F> {
    fn drop(&mut self) {
        self.signal.deregister(&mut self.slot);
    }
}

/// Runs `fut` for at most `limit`; `None` if the time ran out first (`fut` is then dropped).
pub(crate) async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    use crate::channels::apns::tests::on_executor as run;

    #[test]
    fn waiters_wake_when_their_condition_turns_true() {
        let woken = run(|| async {
            let signal = Rc::new(Signal::default());
            let value = Rc::new(Cell::new(0));
            let waiters: Vec<_> = (1..=3)
                .map(|wanted| {
                    let (signal, value) = (signal.clone(), value.clone());
                    glommio::spawn_local(async move {
                        signal
                            .wait_for(|| (value.get() >= wanted).then_some(wanted))
                            .await
                    })
                })
                .collect();
            glommio::yield_if_needed().await;
            for v in 1..=3 {
                glommio::timer::sleep(Duration::from_millis(1)).await;
                value.set(v);
                signal.notify();
            }
            let mut woken = Vec::new();
            for w in waiters {
                woken.push(w.await);
            }
            assert_eq!(signal.registered(), 0, "no waker left behind");
            woken
        });
        assert_eq!(woken, vec![1, 2, 3]);
    }

    #[test]
    fn waiters_that_give_up_leave_no_waker_behind() {
        let (during, after) = run(|| async {
            let signal = Rc::new(Signal::default());
            let waiters: Vec<_> = (0..100)
                .map(|_| {
                    let signal = signal.clone();
                    glommio::spawn_local(async move {
                        within(Duration::from_millis(20), signal.wait_until(|| false)).await
                    })
                })
                .collect();
            glommio::timer::sleep(Duration::from_millis(5)).await;
            let during = signal.registered();
            for w in waiters {
                assert_eq!(w.await, None);
            }
            (during, signal.registered())
        });
        assert_eq!((during, after), (100, 0));
    }

    #[test]
    fn within_returns_the_value_or_none_on_timeout() {
        let (fast, slow) = run(|| async {
            let fast = within(Duration::from_secs(5), async { 7 }).await;
            let slow = within(
                Duration::from_millis(10),
                glommio::timer::sleep(Duration::from_secs(5)),
            )
            .await;
            (fast, slow)
        });
        assert_eq!((fast, slow), (Some(7), None));
    }
}
