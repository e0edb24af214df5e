//! Sending: one loop per channel takes deliveries from its lane's window, as its breaker
//! admits, and runs each attempt as its own task (bounded by the sender's in-flight limit).
//! Each provider answer moves the delivery through the state machine and is written to the
//! log with the delivery's backlog key (removed, or moved to the retry's due time); a dead
//! token is deactivated. A provider-level failure while the breaker is open spends nothing:
//! the delivery goes back to the head of the window.

use std::rc::Rc;
use std::time::Duration;

use clarion_shards::{DeadKey, DeadLetter, DeadReason, DeliveryState, Verdict};
use tracing::{debug, info, warn};

use super::breaker::{Admit, BreakerState};
use super::probe::bump;
use super::{DeliveryRef, Engine, now_ms};
use crate::channels::SendJob;

/// Longest the send loop waits on a closed-off provider before it looks at its breaker again.
const BREAKER_RECHECK: Duration = Duration::from_millis(500);

/// The send loop of one channel.
pub async fn run_channel(engine: Rc<Engine>, channel: usize) {
    let Some(sender) = engine.senders[channel].clone() else {
        return;
    };
    let lane = &engine.lanes[channel];
    // In flight at most what the sender can use and the window holds: deliveries in flight
    // come back to the window when the provider fails, so the lane's memory stays within twice
    // its window.
    let in_flight = sender.max_in_flight().min(lane.capacity());
    let slots = Rc::new(glommio::sync::Semaphore::new(in_flight as u64));
    while !engine.stopping.is_set() {
        if lane.is_empty() {
            futures_lite::future::or(lane.ready.wait(), engine.stopping.wait()).await;
            continue;
        }
        let admit = lane.breaker.borrow_mut().admit(now_ms());
        let probe = match admit {
            Admit::Send => false,
            Admit::Probe => true,
            Admit::WaitUntil(at) => {
                if engine.give_up_held(lane) > 0 {
                    futures_lite::future::yield_now().await;
                    continue;
                }
                let wait =
                    Duration::from_millis(at.saturating_sub(now_ms()).max(1)).min(BREAKER_RECHECK);
                let woken = futures_lite::future::or(lane.ready.wait(), engine.stopping.wait());
                futures_lite::future::or(glommio::timer::sleep(wait), woken).await;
                continue;
            }
        };
        // A channel catching up on a backlog waits its turn while the others are live.
        if !probe {
            let paced =
                engine
                    .catch_up
                    .delay(channel, lane.backlog.get(), std::time::Instant::now());
            if let Some(wait) = paced {
                futures_lite::future::or(glommio::timer::sleep(wait), engine.stopping.wait()).await;
                continue;
            }
        }
        let Ok(permit) = slots.acquire_static_permit(1).await else {
            break;
        };
        let attempt = match lane.pop() {
            Some(d) if !engine.stopping.is_set() => {
                start_attempt(&engine, d, &*sender).map(|f| (d, f))
            }
            Some(d) => {
                // Stopping: it stays in the backlog for the next start.
                lane.push_front(d);
                None
            }
            None => None,
        };
        let Some((d, fut)) = attempt else {
            if probe {
                lane.breaker.borrow_mut().cancel_probe(now_ms());
            }
            drop(permit);
            continue;
        };
        engine.in_flight.set(engine.in_flight.get() + 1);
        bump(&lane.counts.in_flight);
        let e = engine.clone();
        glommio::spawn_local(async move {
            let started = std::time::Instant::now();
            let result = fut.await;
            e.probe.metrics.provider_request[d.channel.index()].record(started.elapsed());
            e.in_flight.set(e.in_flight.get() - 1);
            let running = &e.lanes[d.channel.index()].counts.in_flight;
            running.set(running.get().saturating_sub(1));
            e.complete_attempt(d, result);
            drop(permit);
        })
        .detach();
    }
}

/// Builds the provider request for a resident delivery, or settles it without sending
/// (expired), or lets it go (already settled).
fn start_attempt(
    engine: &Rc<Engine>,
    d: DeliveryRef,
    sender: &dyn crate::channels::ChannelSender,
) -> Option<crate::channels::SendFuture> {
    let now = now_ms();
    let st = engine.state.borrow();
    let live = st
        .open
        .get(&d.notification)
        .and_then(|o| Some((o, o.record.deliveries.get(d.index as usize)?)))
        .filter(|(_, del)| !del.state.is_terminal());
    let Some((open, del)) = live else {
        drop(st);
        engine.drop_stale(&d.pending_key(), "its delivery is settled");
        engine.unresident(&d);
        return None;
    };
    let rec = &open.record;
    if let Some(ttl) = rec.content.ttl_seconds {
        if now > rec.accepted_at_ms + u64::from(ttl) * 1000 {
            drop(st);
            engine.settle(d, Verdict::Expired);
            return None;
        }
    }
    bump(&engine.probe.attempts);
    let job = SendJob {
        notification_id: rec.id,
        delivery_id: del.id,
        target: &del.target,
        content: &rec.content,
        accepted_at_ms: rec.accepted_at_ms,
    };
    Some(sender.send(&job))
}

impl Engine {
    /// Applies an attempt's verdict, through the channel's breaker.
    pub(super) fn complete_attempt(self: &Rc<Self>, d: DeliveryRef, verdict: Verdict) {
        let lane = &self.lanes[d.channel.index()];
        let was = lane.breaker.borrow().state();
        let settled = match verdict {
            Verdict::Unavailable { .. } => self.provider_failed(d, verdict),
            Verdict::ConfigFault { ref reason } => {
                bump(&self.probe.config_faults);
                if lane.config_fault_since.get().is_none() {
                    lane.config_fault_since.set(Some(now_ms()));
                }
                if *lane.config_fault_reason.borrow() != *reason {
                    *lane.config_fault_reason.borrow_mut() = reason.clone();
                }
                warn!(shard = self.cfg.shard, channel = d.channel.as_str(), %reason, "provider configuration fault: check credentials");
                self.provider_failed(d, verdict)
            }
            Verdict::Permanent {
                ref deactivate,
                unregistered_at_ms,
                ..
            } => {
                lane.breaker.borrow_mut().on_answer();
                lane.config_fault_since.set(None);
                if let Some(why) = deactivate {
                    self.deactivate_target(d, why, unregistered_at_ms);
                }
                Some(verdict)
            }
            // The provider answered about this delivery.
            other => {
                lane.breaker.borrow_mut().on_answer();
                lane.config_fault_since.set(None);
                Some(other)
            }
        };
        let now = lane.breaker.borrow().state();
        if now != was {
            self.breaker_changed(d.channel, was, now);
        }
        if let Some(verdict) = settled {
            self.settle(d, verdict);
        }
    }

    /// A provider-level failure: `verdict` applies to the delivery (an attempt spent) while
    /// the provider as a whole answers; otherwise (breaker open, a configuration fault, or
    /// stopping) it goes back unspent (`None`).
    fn provider_failed(&self, d: DeliveryRef, verdict: Verdict) -> Option<Verdict> {
        let lane = &self.lanes[d.channel.index()];
        let charged = if matches!(verdict, Verdict::ConfigFault { .. }) {
            lane.breaker.borrow_mut().on_config_fault(now_ms());
            false
        } else {
            lane.breaker.borrow_mut().on_failure(now_ms()) && !self.stopping.is_set()
        };
        if charged {
            return Some(verdict);
        }
        bump(&self.probe.deferred);
        if self.stopping.is_set() {
            // It stays in the backlog, unspent, for the next start.
            self.unresident(&d);
        } else {
            lane.push_front(d);
        }
        None
    }

    fn breaker_changed(
        &self,
        channel: clarion_shards::Channel,
        was: BreakerState,
        now: BreakerState,
    ) {
        let lane = &self.lanes[channel.index()];
        match now {
            BreakerState::Open { .. } if was == BreakerState::Closed => warn!(
                shard = self.cfg.shard,
                channel = channel.as_str(),
                backlog = lane.backlog.get(),
                "provider failing as a whole: sending stopped, probing; deliveries wait in the backlog"
            ),
            BreakerState::Closed => {
                info!(
                    shard = self.cfg.shard,
                    channel = channel.as_str(),
                    backlog = lane.backlog.get(),
                    "provider answering again: the backlog drains"
                );
                lane.ready.notify();
            }
            _ => {}
        }
    }

    /// Moves a resident delivery to its next state, logs it with its backlog key removed (or
    /// moved to the retry's due time), and lets it go from memory.
    pub(super) fn settle(self: &Rc<Self>, d: DeliveryRef, verdict: Verdict) {
        let now = now_ms();
        let lane = &self.lanes[d.channel.index()];
        let mut guard = self.state.borrow_mut();
        let st = &mut *guard;
        let Some(open) = st.open.get_mut(&d.notification) else {
            return;
        };
        let accepted_at_ms = open.record.accepted_at_ms;
        let Some(del) = open.record.deliveries.get_mut(d.index as usize) else {
            return;
        };
        let dead_reason = if matches!(verdict, Verdict::GiveUp { .. }) {
            DeadReason::ConfigFault
        } else {
            DeadReason::RetriesExhausted
        };
        let new_state = match del.apply(verdict, now, &self.cfg.retry, &mut st.jitter) {
            Ok(s) => s,
            Err(e) => {
                warn!(shard = self.cfg.shard, error = %e, "ignored outcome for a settled delivery");
                return;
            }
        };
        let counts = &lane.counts;
        match new_state {
            DeliveryState::Sent | DeliveryState::Delivered => {
                bump(&self.probe.sent);
                bump(&counts.sent);
                self.probe.metrics.end_to_end[d.channel.index()]
                    .record_micros(now.saturating_sub(accepted_at_ms) * 1000);
            }
            DeliveryState::Retrying => {
                bump(&self.probe.retried);
                bump(&counts.retried);
            }
            DeliveryState::Failed => {
                bump(&self.probe.failed);
                bump(&counts.failed);
            }
            DeliveryState::Dead => {
                bump(&self.probe.dead);
                bump(&counts.dead);
            }
            DeliveryState::Expired => {
                bump(&self.probe.expired);
                bump(&counts.expired);
            }
            DeliveryState::Suppressed => bump(&self.probe.suppressed),
            _ => {}
        }
        let retry = (new_state == DeliveryState::Retrying).then(|| DeliveryRef {
            due_ms: lane.place(del.next_attempt_at_ms.unwrap_or(now)),
            ..d
        });
        let del = &*del;
        let letter = (new_state == DeliveryState::Dead).then(|| {
            let key = DeadKey {
                dead_at_ms: now,
                notification: d.notification,
                index: d.index,
            };
            (key, DeadLetter::of(&open.record.user_id, del, dead_reason))
        });
        self.committer.add(
            |b| {
                b.put_delivery_update(d.notification, d.index, del);
                if let Some((key, letter)) = &letter {
                    b.put_dead(key, letter);
                }
                b.delete_pending(&d.pending_key());
                if let Some(r) = &retry {
                    b.put_pending(&r.pending_key());
                }
            },
            None,
        );
        if new_state.is_terminal() {
            lane.backlog.set(lane.backlog.get().saturating_sub(1));
        }
        lane.key_removed(&d);
        drop(guard);
        self.unresident(&d);
        if let Some(r) = retry {
            lane.note_due(r.due_ms);
        }
    }

    /// Whether a delivery is in a window or being sent.
    pub(super) fn is_resident(&self, d: &DeliveryRef) -> bool {
        self.state
            .borrow()
            .resident
            .contains(&(d.notification, d.index))
    }

    /// Marks a delivery resident (it entered a window); its notification is in `open`.
    pub(super) fn make_resident(&self, d: &DeliveryRef) {
        let mut st = self.state.borrow_mut();
        if st.resident.insert((d.notification, d.index)) {
            if let Some(open) = st.open.get_mut(&d.notification) {
                open.resident += 1;
            }
        }
    }

    /// A delivery left memory (settled, or left in the backlog); its notification goes too once
    /// none of its deliveries is resident.
    pub(super) fn unresident(&self, d: &DeliveryRef) {
        let mut st = self.state.borrow_mut();
        if st.resident.remove(&(d.notification, d.index)) {
            if let Some(open) = st.open.get_mut(&d.notification) {
                open.resident = open.resident.saturating_sub(1);
            }
        }
        drop(st);
        self.evict_if_idle(d.notification);
    }

    /// Drops a notification from memory when none of its deliveries is resident: the log has
    /// it, and the backlog has its open deliveries.
    pub(super) fn evict_if_idle(&self, id: uuid::Uuid) {
        let mut st = self.state.borrow_mut();
        if st.open.get(&id).is_some_and(|o| o.resident == 0) {
            st.open.remove(&id);
        }
    }

    /// A permanent answer that says the token is dead: stop sending to that device, unless the
    /// device registered the token again after the time the provider says it died
    /// (`unregistered_at_ms`, APNs' `410` timestamp): then the app was reinstalled and keeps its
    /// token. Without that time, the device is deactivated.
    fn deactivate_target(&self, d: DeliveryRef, reason: &str, unregistered_at_ms: Option<u64>) {
        let mut st = self.state.borrow_mut();
        let Some(open) = st.open.get(&d.notification) else {
            return;
        };
        let user_id = open.record.user_id.clone();
        let Some((channel, target)) = open
            .record
            .deliveries
            .get(d.index as usize)
            .map(|x| (x.channel, x.target.clone()))
        else {
            return;
        };
        let Some(user) = st.users.get_mut(&user_id) else {
            return;
        };
        let mut changed = false;
        let now = now_ms();
        for dev in user
            .devices
            .iter_mut()
            .filter(|x| x.active && x.platform.channel() == channel && x.token == target)
        {
            if !dev.is_unregistered_by(unregistered_at_ms) {
                bump(&self.probe.reregistered_tokens_kept);
                debug!(
                    shard = self.cfg.shard,
                    notification = %d.notification,
                    delivery = d.index,
                    registered_at_ms = dev.registered_at_ms,
                    unregistered_at_ms,
                    "token registered again after the provider found it unregistered: kept active"
                );
                continue;
            }
            dev.active = false;
            dev.deactivated_reason = Some(reason.to_string());
            dev.deactivated_at_ms = Some(now);
            changed = true;
        }
        if changed {
            user.updated_at_ms = now;
            let record = user.clone();
            drop(st);
            bump(&self.probe.deactivated_tokens);
            bump(&self.lanes[channel.index()].counts.deactivated);
            self.committer.add(
                |b| {
                    b.put_user(&record);
                },
                None,
            );
        }
    }
}
