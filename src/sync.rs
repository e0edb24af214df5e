//! Single-threaded wake-up primitives for tasks on one glommio executor: `LocalNotify` (wakes
//! the one task that waits for work) and `Latch` (set once, wakes every waiter; used for stop).
//! Neither is `Send`: shard state never leaves its core.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

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
#[derive(Default, Clone)]
pub struct Latch {
    inner: Rc<LatchInner>,
}

#[derive(Default)]
struct LatchInner {
    set: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
}

impl Latch {
    pub fn set(&self) {
        self.inner.set.set(true);
        for w in self.inner.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    pub fn is_set(&self) -> bool {
        self.inner.set.get()
    }

    pub fn wait(&self) -> LatchWait {
        LatchWait {
            inner: self.inner.clone(),
        }
    }
}

pub struct LatchWait {
    inner: Rc<LatchInner>,
}

impl Future for LatchWait {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.inner.set.get() {
            Poll::Ready(())
        } else {
            self.inner.wakers.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        }
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
}
