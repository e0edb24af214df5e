//! [`WaitQueue`]: a first-come-first-served line of tasks waiting for a resource on one
//! executor (here: a free HTTP/2 stream), woken one at a time so a freed stream costs one task
//! poll, not one per waiter; a woken waiter that gives up passes its turn on.
//!
//! First come, first served strictly: a newcomer does not take the resource past anyone
//! waiting, and a woken waiter that finds nothing (someone else got there first) keeps its place
//! at the front rather than joining the back. Without that, under a sustained overload, a waiter
//! could lose its turn again and again: some APNs sends waited 21 s for a stream while the line
//! moved on in about one.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Abandoned places are swept out once they are this many and over half of the line, so a long
/// outage in which waiters time out cannot grow the line without bound.
const SWEEP_MIN_ABANDONED: usize = 64;

/// One waiter's place in line, shared between the line and the waiting future.
#[derive(Default)]
struct Place {
    waker: RefCell<Option<Waker>>,
    /// Woken for its turn: the waiter must use it or pass it on. It keeps its place in line
    /// until it does, so nobody behind it can take the turn meanwhile.
    woken: Cell<bool>,
    /// The waiter stopped waiting while still in line.
    abandoned: Cell<bool>,
}

#[derive(Default)]
pub(crate) struct WaitQueue {
    line: RefCell<VecDeque<Rc<Place>>>,
    abandoned: Cell<usize>,
}

impl WaitQueue {
    /// Wakes the longest-waiting task not woken yet, if any.
    pub(crate) fn wake_one(&self) {
        let line = self.line.borrow();
        let next = line
            .iter()
            .find(|p| !p.abandoned.get() && !p.woken.get())
            .cloned();
        drop(line);
        if let Some(place) = next {
            place.woken.set(true);
            if let Some(waker) = place.waker.borrow_mut().take() {
                waker.wake();
            }
        }
    }

    /// Wakes every waiting task (each re-checks and waits on in its place if it finds nothing).
    pub(crate) fn wake_all(&self) {
        let places: Vec<Rc<Place>> = self.line.borrow().iter().cloned().collect();
        for place in places {
            if place.abandoned.get() || place.woken.replace(true) {
                continue;
            }
            if let Some(waker) = place.waker.borrow_mut().take() {
                waker.wake();
            }
        }
    }

    /// Resolves with the first `Some` from `check`, which runs when this waiter is first in
    /// line: at once if nobody waits, then whenever its turn comes. Whoever frees the resource
    /// calls [`wake_one`](Self::wake_one).
    pub(crate) fn wait_for<T, F: FnMut() -> Option<T> + Unpin>(&self, check: F) -> InLine<'_, F> {
        InLine {
            queue: self,
            check,
            place: None,
        }
    }

    /// True when `place` is the first place still waiting (abandoned ones aside).
    fn is_first(&self, place: &Rc<Place>) -> bool {
        self.line
            .borrow()
            .iter()
            .find(|p| !p.abandoned.get())
            .is_some_and(|p| Rc::ptr_eq(p, place))
    }

    /// Takes `place` out of the line (it got what it waited for).
    fn leave(&self, place: &Rc<Place>) {
        let mut line = self.line.borrow_mut();
        if let Some(at) = line.iter().position(|p| Rc::ptr_eq(p, place)) {
            line.remove(at);
        }
    }

    /// Nobody is in line (abandoned places aside).
    fn is_idle(&self) -> bool {
        self.line.borrow().len() == self.abandoned.get()
    }

    fn abandon(&self, place: &Place) {
        place.abandoned.set(true);
        place.waker.borrow_mut().take();
        let abandoned = self.abandoned.get() + 1;
        self.abandoned.set(abandoned);
        let len = self.line.borrow().len();
        if abandoned >= SWEEP_MIN_ABANDONED && abandoned * 2 > len {
            self.line.borrow_mut().retain(|p| !p.abandoned.get());
            self.abandoned.set(0);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.line.borrow().len() - self.abandoned.get()
    }
}

/// The future of [`WaitQueue::wait_for`].
pub(crate) struct InLine<'a, F> {
    queue: &'a WaitQueue,
    check: F,
    place: Option<Rc<Place>>,
}

impl<T, F: FnMut() -> Option<T> + Unpin> Future for InLine<'_, F> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        let Some(place) = &this.place else {
            // A newcomer takes the resource at once only when nobody is waiting for it.
            if this.queue.is_idle() {
                if let Some(value) = (this.check)() {
                    return Poll::Ready(value);
                }
            }
            let place = Rc::new(Place::default());
            *place.waker.borrow_mut() = Some(cx.waker().clone());
            this.queue.line.borrow_mut().push_back(place.clone());
            this.place = Some(place);
            return Poll::Pending;
        };
        // Woken for our turn, or polled for another reason while first in line: try.
        if place.woken.get() || this.queue.is_first(place) {
            if let Some(value) = (this.check)() {
                this.queue.leave(place);
                this.place = None;
                return Poll::Ready(value);
            }
            // Nothing after all (someone got there first): wait on, keeping the place.
            place.woken.set(false);
        }
        *place.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<F> Drop for InLine<'_, F> {
    fn drop(&mut self) {
        if let Some(place) = self.place.take() {
            if place.woken.get() {
                // Our turn came but we are leaving: give it to the next in line.
                self.queue.leave(&place);
                self.queue.wake_one();
            } else {
                self.queue.abandon(&place);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wait::within;
    use std::time::Duration;

    use crate::h2client::on_executor as run;

    /// `n` waiters for a counter of free units; returns the order in which they got one.
    async fn contend(
        queue: Rc<WaitQueue>,
        free: Rc<Cell<usize>>,
        n: usize,
    ) -> Vec<glommio::task::JoinHandle<usize>> {
        let mut handles = Vec::new();
        for i in 0..n {
            let (queue, free) = (queue.clone(), free.clone());
            let task = async move {
                queue
                    .wait_for(|| (free.get() > 0).then(|| free.set(free.get() - 1)))
                    .await;
                i
            };
            handles.push(glommio::spawn_local(task).detach());
            glommio::yield_if_needed().await;
        }
        glommio::timer::sleep(Duration::from_millis(5)).await;
        handles
    }

    #[test]
    fn each_freed_unit_wakes_the_longest_waiter() {
        let order = run(|| async {
            let (queue, free) = (Rc::new(WaitQueue::default()), Rc::new(Cell::new(0)));
            let handles = contend(queue.clone(), free.clone(), 5).await;
            assert_eq!(queue.len(), 5);
            let mut order = Vec::new();
            for handle in handles {
                free.set(free.get() + 1);
                queue.wake_one();
                order.push(handle.await.unwrap());
            }
            assert_eq!(queue.len(), 0);
            order
        });
        assert_eq!(order, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_woken_waiter_that_leaves_passes_its_turn_on() {
        use futures_lite::future::{block_on, poll_once};
        let queue = WaitQueue::default();
        let free = Cell::new(0);
        let mut leaver = Box::pin(queue.wait_for(|| None::<()>));
        let mut stayer = Box::pin(queue.wait_for(|| (free.get() > 0).then_some(())));
        assert_eq!(block_on(poll_once(leaver.as_mut())), None);
        assert_eq!(block_on(poll_once(stayer.as_mut())), None);
        assert_eq!(queue.len(), 2);
        queue.wake_one();
        free.set(1);
        assert_eq!(
            queue.len(),
            2,
            "woken, the leaver keeps its place until it acts"
        );
        drop(leaver);
        assert_eq!(queue.len(), 1, "its turn went on to the stayer");
        assert_eq!(block_on(poll_once(stayer.as_mut())), Some(()));
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn a_newcomer_does_not_pass_the_line_and_a_woken_waiter_keeps_the_front() {
        use futures_lite::future::{block_on, poll_once};
        let queue = WaitQueue::default();
        let free = Cell::new(0);
        let take = || (free.get() > 0).then(|| free.set(free.get() - 1));
        let mut first = Box::pin(queue.wait_for(take));
        let mut second = Box::pin(queue.wait_for(take));
        assert_eq!(block_on(poll_once(first.as_mut())), None);
        assert_eq!(block_on(poll_once(second.as_mut())), None);
        // A unit frees up and the first in line is woken, but before it runs a newcomer asks.
        free.set(1);
        queue.wake_one();
        let mut newcomer = Box::pin(queue.wait_for(take));
        assert_eq!(
            block_on(poll_once(newcomer.as_mut())),
            None,
            "someone is waiting: the newcomer joins the line"
        );
        assert_eq!(block_on(poll_once(first.as_mut())), Some(()));
        // Now someone takes a freed unit behind the queue's back; the woken waiter finds nothing
        // and must keep its place ahead of the newcomer.
        free.set(1);
        queue.wake_one();
        free.set(0);
        assert_eq!(block_on(poll_once(second.as_mut())), None);
        free.set(1);
        queue.wake_one();
        assert_eq!(
            block_on(poll_once(newcomer.as_mut())),
            None,
            "not the newcomer's turn"
        );
        assert_eq!(
            block_on(poll_once(second.as_mut())),
            Some(()),
            "the front kept its turn"
        );
        free.set(1);
        queue.wake_one();
        assert_eq!(block_on(poll_once(newcomer.as_mut())), Some(()));
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn abandoned_places_are_swept() {
        let left = run(|| async {
            let queue = Rc::new(WaitQueue::default());
            for _ in 0..200 {
                let queue = queue.clone();
                glommio::spawn_local(async move {
                    within(Duration::from_millis(1), queue.wait_for(|| None::<()>)).await
                })
                .detach();
            }
            glommio::timer::sleep(Duration::from_millis(30)).await;
            queue.len()
        });
        assert!(left < SWEEP_MIN_ABANDONED * 2, "{left} places left");
    }
}
