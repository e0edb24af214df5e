//! Single-threaded wake-up primitives for tasks on one glommio executor: `LocalNotify` (wakes
//! the one task that waits for work) and `Latch` (set once, wakes every waiter; used for stop).
//! Neither is `Send`: shard state never leaves its core.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::task::{Poll, Waker};

use crate::wait::Signal;

/// Wakes a single waiting task; a notification sent while nobody waits is kept until the next wait.
#[derive(Default)]
pub struct LocalNotify {
    pending: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl LocalNotify {
    pub fn notify(&self) {
        self.pending.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Resolves once `notify` has been called since the last wait returned.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.pending.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

/// A one-way flag: once set it stays set, and every waiter wakes.
///
/// A wait holds one waker registration however often it is polled (a connection task polls its
/// stop wait beside the connection on every wake-up), and frees it when it ends or is dropped.
#[derive(Default, Clone)]
pub struct Latch {
    inner: Rc<LatchInner>,
}

#[derive(Default)]
struct LatchInner {
    set: Cell<bool>,
    signal: Signal,
}

impl Latch {
    pub fn set(&self) {
        self.inner.set.set(true);
        self.inner.signal.notify();
    }

    pub fn is_set(&self) -> bool {
        self.inner.set.get()
    }

    /// Resolves once the latch is set.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        let set = &self.inner.set;
        self.inner.signal.wait_until(move || set.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_is_remembered_and_latch_wakes_all() {
        futures_lite::future::block_on(async {
            let n = LocalNotify::default();
            n.notify();
            n.wait().await; // returns at once: the notification was kept
            let l = Latch::default();
            assert!(!l.is_set());
            let w1 = l.wait();
            let w2 = l.wait();
            l.set();
            w1.await;
            w2.await;
            assert!(l.is_set());
        });
    }

    /// Counts its own clones: `Arc::strong_count` is the number of wakers alive.
    struct CountingWaker;
    impl std::task::Wake for CountingWaker {
        fn wake(self: std::sync::Arc<Self>) {}
    }

    #[test]
    fn a_latch_wait_polled_again_and_again_holds_one_waker() {
        let counter = std::sync::Arc::new(CountingWaker);
        let waker = Waker::from(counter.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let latch = Latch::default();
        let mut wait = std::pin::pin!(latch.wait());
        for _ in 0..100_000 {
            assert!(wait.as_mut().poll(&mut cx).is_pending());
        }
        // Ours, the `waker` above and the one the wait registered.
        assert_eq!(std::sync::Arc::strong_count(&counter), 3);
        assert_eq!(latch.inner.signal.registered(), 1);
        let other_wait = latch.wait();
        drop(other_wait); // never polled: nothing registered
        latch.set();
        assert!(wait.as_mut().poll(&mut cx).is_ready());
        assert_eq!(
            std::sync::Arc::strong_count(&counter),
            2,
            "no waker kept after set"
        );
        assert_eq!(latch.inner.signal.registered(), 0);
    }

    /// The crash this guards against: a connection task waits for stop beside its connection and
    /// is woken for every frame. glommio counts a task's wakers in an `i16`; when each wake-up
    /// left one more waker in the latch, the 32,768th panicked the shard.
    #[test]
    fn a_task_woken_50_000_times_while_waiting_on_a_latch_runs_on() {
        let (woken, dropped_wait_left) = crate::channels::apns::tests::on_executor(|| async {
            let latch = Latch::default();
            let woken = futures_lite::future::or(
                async {
                    for _ in 0..50_000 {
                        futures_lite::future::yield_now().await;
                    }
                    50_000
                },
                async {
                    latch.wait().await;
                    0
                },
            )
            .await;
            (woken, latch.inner.signal.registered())
        });
        assert_eq!((woken, dropped_wait_left), (50_000, 0));
    }
}
