//! Shard-side group commit: everything the shard wants written (accepted notifications, user
//! changes, delivery state changes) accumulates in one pending batch; one task hands it to the
//! storage thread as soon as someone waits on it, without waiting for the batches before it to
//! be durable (up to [`MAX_BATCHES_IN_FLIGHT`]), and another runs each batch's waiters (queue
//! the deliveries, answer 202) once it is durable, in the order the batches were handed over.
//! Nothing is answered before it is durable.
//!
//! Handing over without waiting keeps the storage thread's next group queued while it syncs
//! the last: the storage thread takes every batch queued behind an fsync as one group with one
//! fsync, and starts it as soon as the last is synced, not after this executor has woken to
//! answer the last group and handed over the next (two hand-offs between threads per group,
//! each a wake-up on a CPU that is often idle: `docs/single-requests.md`).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use clarion_shards::{Committed, WriteBatch};
use tracing::error;
use uuid::Uuid;

use super::answer::NotifyReplyTo;
use super::command::{NotifyReply, Reply, Upsert};
use super::error::ShardError;
use super::probe::bump;
use super::{DeliveryRef, Engine};

/// The deliveries a new notification queues once durable: inline for the usual one or two
/// devices, so accepting a notification allocates no list for them.
pub type Deliveries = smallvec::SmallVec<[DeliveryRef; 2]>;

/// What to do once a batch is durable (or failed).
pub enum Waiter {
    /// A new notification: queue its deliveries, answer 202.
    Accepted {
        id: Uuid,
        reply: NotifyReplyTo,
        deliveries: Deliveries,
    },
    /// A repeated idempotency key found in the dedup cache: answer with the notification that
    /// holds it once everything before is durable (the original's write, or its lost claim).
    Duplicate {
        dedup_key: u128,
        reply: NotifyReplyTo,
    },
    /// A user or device change.
    Upsert {
        reply: Reply<Upsert>,
        result: Upsert,
    },
    /// A change answered once it is durable: a device's removal, a step of a dead-letter
    /// replay or purge.
    Durable { reply: Reply<()> },
}

/// Work to start once everything added before it has been handed to the storage thread: a
/// read of the log that must see those writes (a backlog scan, a status read).
pub type AfterWrites = Box<dyn FnOnce()>;

#[derive(Default)]
pub struct Pending {
    pub batch: WriteBatch,
    pub waiters: Vec<Waiter>,
    pub after: Vec<AfterWrites>,
}

/// How long lazy writes (state changes with nobody waiting) gather before they are handed to
/// the storage thread; a durable write arriving meanwhile ends the wait at once.
const LAZY_COALESCE: std::time::Duration = std::time::Duration::from_millis(2);

/// Most durable batches handed to the storage thread and not yet answered. Each is what arrived
/// in one pass of the commit loop; the bound keeps a slow disk from holding more than this many
/// here (the pending batch gathers meanwhile, as it did with one batch in flight).
pub const MAX_BATCHES_IN_FLIGHT: usize = 8;

/// A durable batch handed over (or refused), with the waiters to run once it is durable.
struct InFlight {
    durable: Result<clarion_shards::Durable, clarion_shards::Error>,
    waiters: Vec<Waiter>,
}

#[derive(Default)]
pub struct Committer {
    pending: RefCell<Pending>,
    pub(super) wake: crate::sync::LocalNotify,
    /// Notified when a write with a waiter (someone to answer) is added.
    urgent: crate::sync::LocalNotify,
    /// Durable batches handed over, oldest first, until their waiters have run.
    in_flight: RefCell<VecDeque<InFlight>>,
    /// Batches handed over whose waiters have not run (those in `in_flight` and the one being
    /// answered).
    unanswered: Cell<usize>,
    /// Notified when a batch is handed over (for the answering task).
    handed: crate::sync::LocalNotify,
    /// Notified when a batch's waiters have run: room for another (the commit loop waits)...
    room: crate::sync::LocalNotify,
    /// ... and one fewer for shutdown's final flush to wait on (each notify wakes one waiter).
    answered: crate::sync::LocalNotify,
}

impl Committer {
    /// Adds writes (and optionally a waiter) to the next batch.
    pub fn add(&self, f: impl FnOnce(&mut WriteBatch), waiter: Option<Waiter>) {
        let mut p = self.pending.borrow_mut();
        f(&mut p.batch);
        let urgent = waiter.is_some();
        if let Some(w) = waiter {
            p.waiters.push(w);
        }
        drop(p);
        self.wake.notify();
        if urgent {
            self.urgent.notify();
        }
    }

    /// Runs `f` as soon as every write added before it has been handed to the storage thread
    /// (without waiting for them to be durable), so a log request it makes sees them.
    pub fn after_writes(&self, f: AfterWrites) {
        self.pending.borrow_mut().after.push(f);
        self.wake.notify();
        self.urgent.notify();
    }

    fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending.borrow_mut())
    }

    pub fn is_idle(&self) -> bool {
        let p = self.pending.borrow();
        p.batch.is_empty()
            && p.waiters.is_empty()
            && p.after.is_empty()
            && self.unanswered.get() == 0
    }

    fn has_waiters(&self) -> bool {
        let p = self.pending.borrow();
        !p.waiters.is_empty() || !p.after.is_empty()
    }
}

/// The commit loop: hands each batch over as soon as someone waits on it, up to
/// [`MAX_BATCHES_IN_FLIGHT`] not yet answered; [`answer`] runs their waiters in order.
pub async fn run(engine: Rc<Engine>) {
    glommio::spawn_local(answer(engine.clone())).detach();
    let c = &engine.committer;
    loop {
        c.wake.wait().await;
        if !c.has_waiters() && !engine.stop_committing.get() {
            // Only lazy writes so far: let more gather, unless someone starts waiting.
            futures_lite::future::or(glommio::timer::sleep(LAZY_COALESCE), c.urgent.wait()).await;
        }
        while c.unanswered.get() >= MAX_BATCHES_IN_FLIGHT {
            c.room.wait().await;
        }
        hand_over(&engine).await;
        if engine.stopped_committing() && c.is_idle() {
            break;
        }
    }
}

/// Runs each handed-over batch's waiters once it is durable, oldest first (waiters complete in
/// the order they were added: a repeated key's answer reads what its original's left).
async fn answer(engine: Rc<Engine>) {
    let c = &engine.committer;
    loop {
        let next = c.in_flight.borrow_mut().pop_front();
        // Never ends on its own: a batch handed over after shutdown's flush is still answered.
        let Some(InFlight { durable, waiters }) = next else {
            c.handed.wait().await;
            continue;
        };
        let result = match durable {
            Ok(durable) => durable.await,
            Err(e) => Err(e),
        };
        bump(&engine.probe.commits);
        match result {
            Ok(committed) => {
                for w in waiters {
                    complete(&engine, w, &committed);
                }
            }
            Err(e) => {
                if !engine.failed.get() {
                    error!(shard = engine.cfg.shard, error = %e, "log write failed: the shard stops accepting until restarted");
                }
                engine.failed.set(true);
                for w in waiters {
                    fail(&engine, w);
                }
            }
        }
        c.unanswered.set(c.unanswered.get() - 1);
        c.room.notify();
        c.answered.notify();
    }
}

/// Longest the commit loop waits before retrying when the storage thread's queue is full.
const BUSY_RETRY: std::time::Duration = std::time::Duration::from_millis(1);

/// Commits whatever is pending now and waits until every batch handed over is answered
/// (shutdown's final flush).
pub async fn commit_once(engine: &Rc<Engine>) {
    hand_over(engine).await;
    let c = &engine.committer;
    while c.unanswered.get() > 0 {
        c.answered.wait().await;
    }
}

/// Hands whatever is pending now to the storage thread, in the order it was added. A batch with
/// waiters goes to [`answer`], which runs them once it is durable (fsync); a batch of state
/// changes alone is a lazy write: not awaited, no fsync of its own, made durable by the next
/// durable batch or the log's lazy-sync interval.
async fn hand_over(engine: &Rc<Engine>) {
    let c = &engine.committer;
    let pending = c.take();
    if pending.batch.is_empty() && pending.waiters.is_empty() {
        for f in pending.after {
            f();
        }
        return;
    }
    let lazy = pending.waiters.is_empty() && !engine.stop_committing.get();
    let handed = if engine.failed.get() {
        Err(clarion_shards::Error::Poisoned)
    } else {
        hand_off(engine, pending.batch, lazy).await
    };
    // Reads issued now come after these writes in the storage thread's queue.
    for f in pending.after {
        f();
    }
    let durable = match handed {
        Ok(Some(durable)) => Ok(durable),
        Ok(None) => {
            // A lazy write: nobody to answer.
            bump(&engine.probe.commits);
            return;
        }
        Err(e) => Err(e),
    };
    c.unanswered.set(c.unanswered.get() + 1);
    c.in_flight.borrow_mut().push_back(InFlight {
        durable,
        waiters: pending.waiters,
    });
    c.handed.notify();
}

/// Hands a batch to the storage thread, waiting out a full queue; a durable batch comes back
/// with the future that resolves once it is durable.
async fn hand_off(
    engine: &Rc<Engine>,
    batch: WriteBatch,
    lazy: bool,
) -> Result<Option<clarion_shards::Durable>, clarion_shards::Error> {
    let mut batch = Some(batch);
    loop {
        let b = batch.take().unwrap_or_default();
        let attempt = if lazy {
            engine.log.submit_nowait_returning(b).map(|()| None)
        } else {
            engine.log.submit_returning(b).map(Some)
        };
        match attempt {
            Ok(durable) => return Ok(durable),
            Err((clarion_shards::Error::Busy, b)) => {
                batch = Some(b);
                glommio::timer::sleep(BUSY_RETRY).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

fn complete(engine: &Rc<Engine>, w: Waiter, committed: &Committed) {
    match w {
        Waiter::Accepted {
            id,
            reply,
            deliveries,
        } => {
            if let Some(lost) = committed.lost_claim(id) {
                engine.forget_duplicate(lost);
                reply.send(Ok(NotifyReply::Duplicate(lost.existing)));
                return;
            }
            engine.enqueue_accepted(id, deliveries);
            reply.send(Ok(NotifyReply::Accepted(id)));
        }
        Waiter::Duplicate { dedup_key, reply } => {
            // Waiters complete in order, so the original's outcome is in the cache by now: its
            // id, the id its lost claim found, or nothing when its write failed.
            let held = engine.state.borrow().dedup.get(dedup_key, super::now_ms());
            let answer = match held {
                Some(id) => Ok(NotifyReply::Duplicate(id)),
                None => Err(ShardError::Unavailable {
                    why: "the original request was not stored; retry",
                }),
            };
            reply.send(answer);
        }
        Waiter::Upsert { reply, result } => {
            let _ = reply.send(Ok(result));
        }
        Waiter::Durable { reply } => {
            let _ = reply.send(Ok(()));
        }
    }
}

fn fail(engine: &Rc<Engine>, w: Waiter) {
    let err = || ShardError::Unavailable {
        why: "storage failed; nothing was accepted",
    };
    match w {
        Waiter::Accepted { id, reply, .. } => {
            engine.forget_unaccepted(id);
            reply.send(Err(err()));
        }
        Waiter::Duplicate { reply, .. } => {
            reply.send(Err(err()));
        }
        Waiter::Upsert { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        Waiter::Durable { reply } => {
            let _ = reply.send(Err(err()));
        }
    }
}
