//! In-shard queues for a single-threaded executor: [`BoundedQueue`] (the per-channel delivery
//! queue: many producers on the shard's core, one async consumer, a hard bound) and
//! [`RetryTimers`] (deliveries waiting for their next attempt time).
//!
//! Both use plain `Cell`/`RefCell` interior mutability: they are `!Sync` on purpose, because shard
//! state is only ever touched by its own core.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// Most slots a [`BoundedQueue`] allocates up front; beyond this it grows on demand (up to its
/// capacity), so a generous bound does not cost its full memory while the queue is short.
const PREALLOCATED_SLOTS: usize = 1024;

/// A FIFO with a fixed capacity and one async consumer.
///
/// `try_push` never waits: a full queue hands the item back so the caller can answer 429/503.
/// The consumer awaits [`BoundedQueue::pop`]; its waker is stored and woken by the next push or
/// by [`BoundedQueue::close`]. Only one consumer may wait at a time (a second one replaces the
/// first one's waker).
pub struct BoundedQueue<T> {
    items: RefCell<VecDeque<T>>,
    capacity: usize,
    waker: Cell<Option<Waker>>,
    closed: Cell<bool>,
}

impl<T> BoundedQueue<T> {
    /// An empty queue holding at most `capacity` items (0 makes every push fail).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        BoundedQueue {
            items: RefCell::new(VecDeque::with_capacity(capacity.min(PREALLOCATED_SLOTS))),
            capacity,
            waker: Cell::new(None),
            closed: Cell::new(false),
        }
    }

    /// Appends `item`, or gives it back if the queue is full or closed.
    pub fn try_push(&self, item: T) -> Result<(), T> {
        if self.closed.get() {
            return Err(item);
        }
        {
            let mut items = self.items.borrow_mut();
            if items.len() >= self.capacity {
                return Err(item);
            }
            items.push_back(item);
        }
        self.wake();
        Ok(())
    }

    /// Removes the oldest item without waiting.
    pub fn pop_now(&self) -> Option<T> {
        self.items.borrow_mut().pop_front()
    }

    /// Waits for the oldest item. Returns `None` only once the queue is closed *and* drained, so
    /// a consumer loop `while let Some(x) = q.pop().await` finishes everything queued before close.
    pub async fn pop(&self) -> Option<T> {
        poll_fn(|cx| {
            if let Some(item) = self.pop_now() {
                return Poll::Ready(Some(item));
            }
            if self.closed.get() {
                return Poll::Ready(None);
            }
            self.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    /// Stops accepting pushes and wakes the consumer; items already queued can still be popped.
    pub fn close(&self) {
        self.closed.set(true);
        self.wake();
    }

    /// Whether [`BoundedQueue::close`] was called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Items queued now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.items.borrow().len()
    }

    /// True when nothing is queued.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound given at construction.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many more items fit.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.capacity.saturating_sub(self.len())
    }

    fn wake(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

impl<T> std::fmt::Debug for BoundedQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedQueue")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .field("closed", &self.closed.get())
            .finish_non_exhaustive()
    }
}

/// Identifies one scheduled timer, for [`RetryTimers::cancel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerKey {
    at_ms: u64,
    seq: u64,
}

impl TimerKey {
    /// When the timer is due.
    #[must_use]
    pub fn at_ms(&self) -> u64 {
        self.at_ms
    }
}

/// Items due at a millisecond, popped in (time, insertion) order. Bounded by whoever inserts:
/// every retrying delivery holds exactly one timer.
#[derive(Debug)]
pub struct RetryTimers<T> {
    timers: BTreeMap<TimerKey, T>,
    next_seq: u64,
}

impl<T> Default for RetryTimers<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> RetryTimers<T> {
    /// No timers.
    #[must_use]
    pub fn new() -> Self {
        RetryTimers {
            timers: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Schedules `item` at `at_ms`. Items at the same ms come out in insertion order.
    pub fn insert(&mut self, at_ms: u64, item: T) -> TimerKey {
        let key = TimerKey {
            at_ms,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        self.timers.insert(key, item);
        key
    }

    /// Removes a timer before it fires.
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        self.timers.remove(&key)
    }

    /// When the earliest timer is due, to sleep until then.
    #[must_use]
    pub fn next_due_ms(&self) -> Option<u64> {
        self.timers.first_key_value().map(|(k, _)| k.at_ms)
    }

    /// Removes and returns every item due at or before `now_ms`, earliest first.
    /// O(log n + due).
    pub fn pop_due(&mut self, now_ms: u64) -> Vec<T> {
        let later = match now_ms.checked_add(1) {
            Some(next) => self.timers.split_off(&TimerKey {
                at_ms: next,
                seq: 0,
            }),
            None => BTreeMap::new(),
        };
        let due = std::mem::replace(&mut self.timers, later);
        due.into_values().collect()
    }

    /// Timers scheduled.
    #[must_use]
    pub fn len(&self) -> usize {
        self.timers.len()
    }

    /// True when no timers are scheduled.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.timers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;
    use std::pin::pin;

    #[test]
    fn bounded_queue_is_fifo_and_bounded() {
        let q = BoundedQueue::new(2);
        assert_eq!(q.capacity(), 2);
        assert_eq!(q.try_push(1), Ok(()));
        assert_eq!(q.try_push(2), Ok(()));
        assert_eq!(q.try_push(3), Err(3));
        assert_eq!((q.len(), q.remaining()), (2, 0));
        assert_eq!(q.pop_now(), Some(1));
        assert_eq!(q.remaining(), 1);
        assert_eq!(q.pop_now(), Some(2));
        assert_eq!(q.pop_now(), None);
        assert!(q.is_empty());
        assert_eq!(BoundedQueue::new(0).try_push(1), Err(1));
    }

    #[test]
    fn pop_waits_and_is_woken_by_push() {
        let q = BoundedQueue::new(4);
        let mut fut = pin!(q.pop());
        assert_eq!(
            future::block_on(future::poll_once(&mut fut)),
            None,
            "pending"
        );
        assert!(q.waker.take().is_some(), "consumer waker stored");
        // Re-poll to store the waker again, then push: the stored waker is consumed by the wake.
        assert_eq!(future::block_on(future::poll_once(&mut fut)), None);
        q.try_push(7).unwrap();
        assert!(q.waker.take().is_none(), "push woke the consumer");
        assert_eq!(future::block_on(fut), Some(7));
    }

    #[test]
    fn close_drains_then_ends() {
        let q = BoundedQueue::new(4);
        q.try_push(1).unwrap();
        q.try_push(2).unwrap();
        q.close();
        assert!(q.is_closed());
        assert_eq!(q.try_push(3), Err(3));
        assert_eq!(future::block_on(q.pop()), Some(1));
        assert_eq!(future::block_on(q.pop()), Some(2));
        assert_eq!(future::block_on(q.pop()), None);
    }

    #[test]
    fn close_wakes_a_waiting_consumer() {
        let q: BoundedQueue<u8> = BoundedQueue::new(1);
        let mut fut = pin!(q.pop());
        assert_eq!(future::block_on(future::poll_once(&mut fut)), None);
        q.close();
        assert_eq!(future::block_on(fut), None);
    }

    #[test]
    fn timers_pop_in_time_then_insertion_order() {
        let mut t = RetryTimers::new();
        assert_eq!(t.next_due_ms(), None);
        t.insert(30, "c");
        t.insert(10, "a1");
        t.insert(20, "b");
        t.insert(10, "a2");
        assert_eq!(t.next_due_ms(), Some(10));
        assert!(t.pop_due(9).is_empty());
        assert_eq!(t.pop_due(20), vec!["a1", "a2", "b"]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.next_due_ms(), Some(30));
        assert_eq!(t.pop_due(u64::MAX), vec!["c"]);
        assert!(t.is_empty());
    }

    #[test]
    fn timers_can_be_cancelled() {
        let mut t = RetryTimers::new();
        let k = t.insert(5, 1);
        t.insert(5, 2);
        assert_eq!(k.at_ms(), 5);
        assert_eq!(t.cancel(k), Some(1));
        assert_eq!(t.cancel(k), None);
        assert_eq!(t.pop_due(5), vec![2]);
    }
}
