//! Dead letters on one shard: a delivery that dies (its attempts ran out, or it sat behind a
//! configuration fault past `[delivery] config_fault_dead_after_seconds`) gets a letter in the
//! log's `dead` keyspace in the batch that settles it (`clarion_shards::dead`), and this module
//! lists, replays and purges them.
//!
//! A replay resets the delivery (state `queued`, attempts 0, a `queued` event added to its
//! history) and puts it back in its channel's backlog, removing its letter in the same batch.
//! Replays and purges on a shard run one at a time, each chunk durable before the next scan, so
//! a letter replayed twice is queued once: the second replay no longer finds it.

use std::collections::HashMap;
use std::rc::Rc;

use clarion_shards::{
    DeadFilter, DeadKey, DeadLetter, DeadScan, DeadSelection, DeliveryEvent, DeliveryRecord,
    DeliveryState, NotificationRecord, Verdict,
};
use futures_channel::oneshot;
use tracing::{info, warn};
use uuid::Uuid;

use super::committer::Waiter;
use super::error::ShardError;
use super::lane::Lane;
use super::probe::bump;
use super::{DeliveryRef, Engine, now_ms};

/// Letters one replay or purge step reads, changes and makes durable before it reads on:
/// bounds the memory of a replay of millions, and how long one commit takes.
pub const REPLAY_CHUNK: usize = 1024;

/// The history reason of a replayed delivery's new `queued` event.
const REPLAYED: &str = "replayed from the dead letters";

/// Deliveries given up in one pass of a channel's send loop (see [`Engine::give_up_held`]),
/// so a large backlog behind a configuration fault does not hold the executor.
const GIVE_UP_PER_PASS: usize = 1024;

/// One letter of a replay step: its key and delivery id, and, when it is replayed, the reset
/// delivery and its place in the backlog.
type LetterStep = (DeadKey, Uuid, Option<(DeliveryRecord, DeliveryRef)>);

/// A page of one shard's dead letters, newest first.
#[derive(Debug, Default)]
pub struct DeadPage {
    pub items: Vec<(DeadKey, DeadLetter)>,
    /// Everything above this key was examined; nothing at or below it (`None`: the shard's
    /// range was read to its end).
    pub resume: Option<DeadKey>,
}

impl Engine {
    /// Up to `limit` letters the filter matches below `below`, newest first.
    pub(super) async fn list_dead(
        self: Rc<Self>,
        filter: DeadFilter,
        below: Option<DeadKey>,
        limit: usize,
    ) -> Result<DeadPage, ShardError> {
        let scan = self
            .scan_dead(DeadSelection::Filter(filter), below, limit, false)
            .await?;
        Ok(DeadPage {
            items: scan.items,
            resume: scan.resume,
        })
    }

    /// Puts every letter `selection` picks back in its channel's backlog; the count replayed.
    pub(super) async fn replay_dead(
        self: Rc<Self>,
        selection: DeadSelection,
    ) -> Result<u64, ShardError> {
        let total = self
            .in_durable_steps(selection, true, |e, scan, done| e.replay_chunk(scan, done))
            .await?;
        if total > 0 {
            info!(
                shard = self.cfg.shard,
                replayed = total,
                "dead letters replayed"
            );
        }
        Ok(total)
    }

    /// Deletes every letter `selection` picks (the deliveries stay `dead` in their
    /// notifications, which the retention sweep may now remove); the count purged.
    pub(super) async fn purge_dead(
        self: Rc<Self>,
        selection: DeadSelection,
    ) -> Result<u64, ShardError> {
        let total = self
            .in_durable_steps(selection, false, |e, scan, done| {
                e.committer.add(
                    |b| {
                        for (key, letter) in &scan.items {
                            b.delete_dead(key, letter.delivery_id);
                        }
                    },
                    Some(Waiter::Durable { reply: done }),
                );
                scan.items.len() as u64
            })
            .await?;
        self.probe.purged.set(self.probe.purged.get() + total);
        if total > 0 {
            info!(
                shard = self.cfg.shard,
                purged = total,
                "dead letters purged"
            );
        }
        Ok(total)
    }

    /// Runs `step` on the letters `selection` picks, [`REPLAY_CHUNK`] at a time, each step's
    /// writes durable (`step` answers on the reply it is given) before the next scan; one
    /// such run at a time on the shard. Returns the sum of what the steps counted.
    async fn in_durable_steps(
        self: &Rc<Self>,
        selection: DeadSelection,
        with_records: bool,
        mut step: impl FnMut(&Self, DeadScan, super::command::Reply<()>) -> u64,
    ) -> Result<u64, ShardError> {
        let turn = self.dead_letters_turn.acquire_permit(1).await;
        let _turn = turn.map_err(|_| ShardError::Unavailable {
            why: "shutting down",
        })?;
        let mut total = 0;
        let mut below = None;
        loop {
            let scan = self
                .scan_dead(selection.clone(), below, REPLAY_CHUNK, with_records)
                .await?;
            let resume = scan.resume;
            let (done, durable) = oneshot::channel();
            total += step(self, scan, done);
            durable.await.unwrap_or(Err(ShardError::Unanswered))?;
            match (&selection, resume) {
                (DeadSelection::Filter(_), Some(k)) => below = Some(k),
                _ => return Ok(total),
            }
        }
    }

    /// A scan of the letters, issued behind every write added so far (so a delivery that just
    /// died is found).
    async fn scan_dead(
        self: &Rc<Self>,
        selection: DeadSelection,
        below: Option<DeadKey>,
        limit: usize,
        with_records: bool,
    ) -> Result<DeadScan, ShardError> {
        let (tx, rx) = oneshot::channel();
        let e = self.clone();
        self.committer.after_writes(Box::new(move || {
            let _ = tx.send(e.log.scan_dead(selection, below, limit, with_records));
        }));
        let read = match rx.await {
            Ok(Ok(reply)) => reply.await,
            Ok(Err(e)) => Err(e),
            Err(_) => Err(clarion_shards::Error::Closed),
        };
        read.map_err(|e| {
            tracing::error!(shard = self.cfg.shard, error = %e, "dead letter read failed");
            ShardError::Unavailable {
                why: "storage is unavailable on this shard; retry later",
            }
        })
    }

    /// Resets each scanned dead delivery and queues it again, its letter removed, in one batch
    /// answered on `done` once durable; returns how many were replayed. A letter whose delivery
    /// is missing or no longer dead is only removed.
    fn replay_chunk(&self, scan: DeadScan, done: super::command::Reply<()>) -> u64 {
        let now = now_ms();
        let mut records: HashMap<Uuid, NotificationRecord> =
            scan.records.into_iter().map(|r| (r.id, r)).collect();
        // Each letter with, when it is replayed, its reset delivery and its backlog place.
        let mut updates: Vec<LetterStep> = Vec::with_capacity(scan.items.len());
        let mut st = self.state.borrow_mut();
        for (key, letter) in scan.items {
            let index = usize::from(key.index);
            // The copy in memory wins (it is at least as new); it is reset in place.
            let del = match st.open.get_mut(&key.notification) {
                Some(open) => open.record.deliveries.get_mut(index),
                None => records
                    .get_mut(&key.notification)
                    .and_then(|r| r.deliveries.get_mut(index)),
            };
            let Some(del) = del.filter(|d| d.state == DeliveryState::Dead) else {
                warn!(shard = self.cfg.shard, notification = %key.notification, index = key.index, "a dead letter whose delivery is not dead (or missing): letter removed");
                updates.push((key, letter.delivery_id, None));
                continue;
            };
            del.state = DeliveryState::Queued;
            del.attempts = 0;
            del.next_attempt_at_ms = None;
            del.history.push(DeliveryEvent {
                at_ms: now,
                state: DeliveryState::Queued,
                attempt: 0,
                reason: Some(REPLAYED.to_string()),
            });
            let lane = &self.lanes[del.channel.index()];
            let d = DeliveryRef {
                notification: key.notification,
                index: key.index,
                channel: del.channel,
                due_ms: lane.place(now),
            };
            updates.push((key, letter.delivery_id, Some((del.clone(), d))));
        }
        drop(st);
        self.committer.add(
            |b| {
                for (key, delivery_id, replay) in &updates {
                    b.delete_dead(key, *delivery_id);
                    if let Some((del, d)) = replay {
                        b.put_delivery_update(key.notification, key.index, del);
                        b.put_pending(&d.pending_key());
                    }
                }
            },
            Some(Waiter::Durable { reply: done }),
        );
        let queued: Vec<DeliveryRef> = updates
            .iter()
            .filter_map(|(_, _, r)| r.as_ref().map(|(_, d)| *d))
            .collect();
        let replayed = queued.len() as u64;
        for d in &queued {
            // A scan out now may have read the notification before this reset: it must not
            // take its stale copy (`refill.rs`), whichever lane it scans for.
            for lane in &self.lanes {
                lane.key_removed(d);
            }
            let lane = &self.lanes[d.channel.index()];
            lane.backlog.set(lane.backlog.get() + 1);
            bump(&lane.counts.replayed);
            lane.note_due(d.due_ms);
        }
        self.probe
            .replayed
            .set(self.probe.replayed.get() + replayed);
        replayed
    }

    /// Gives up deliveries at the head of `lane`'s window that have sat behind a configuration
    /// fault (the channel answering nothing else) longer than `config_fault_dead_after`, counted
    /// from when the fault began or the delivery was queued (accepted, or last replayed),
    /// whichever is later: each goes `dead` with a letter, without an attempt. Returns how many.
    pub(super) fn give_up_held(self: &Rc<Self>, lane: &Lane) -> usize {
        let limit = self.cfg.config_fault_dead_after_ms;
        let now = now_ms();
        let Some(since) = lane.config_fault_since.get() else {
            return 0;
        };
        if now.saturating_sub(since) < limit {
            return 0;
        }
        let mut given_up = 0;
        // Deliveries not held long enough yet go back to the head, in order, after the pass.
        let mut young = Vec::new();
        for _ in 0..GIVE_UP_PER_PASS.min(lane.len()) {
            let Some(d) = lane.pop() else { break };
            let times = self.state.borrow().open.get(&d.notification).map(|o| {
                let ttl = o.record.content.ttl_seconds;
                let accepted = o.record.accepted_at_ms;
                // Queued since it was accepted, or since it was last replayed.
                let queued = o
                    .record
                    .deliveries
                    .get(usize::from(d.index))
                    .and_then(|del| {
                        let queued = |e: &&DeliveryEvent| e.state == DeliveryState::Queued;
                        del.history.iter().rev().find(queued)
                    })
                    .map_or(accepted, |e| e.at_ms);
                (queued, ttl.map(|t| accepted + u64::from(t) * 1000))
            });
            let Some((queued, expires)) = times else {
                self.drop_stale(&d.pending_key(), "its notification is not in memory");
                self.unresident(&d);
                continue;
            };
            if expires.is_some_and(|t| now > t) {
                self.settle(d, Verdict::Expired);
                continue;
            }
            if now.saturating_sub(queued.max(since)) < limit {
                young.push(d);
                continue;
            }
            let reason = lane.config_fault_reason.borrow().clone();
            self.settle(
                d,
                Verdict::GiveUp {
                    reason: format!("configuration fault for over {} s: {reason}", limit / 1000),
                },
            );
            given_up += 1;
        }
        for d in young.into_iter().rev() {
            lane.push_front(d);
        }
        given_up
    }
}
