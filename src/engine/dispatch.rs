//! Sending: one loop per channel takes queued deliveries and runs each attempt as its own task
//! (bounded by the sender's in-flight limit); each provider answer moves the delivery through
//! the state machine, is written to the log, and schedules a retry, deactivates a dead token,
//! or closes the notification. A timer loop moves due retries back into the queues.

use std::rc::Rc;
use std::time::Duration;

use clarion_shards::{DeliveryState, Outcome};
use tracing::warn;

use super::probe::bump;
use super::{DeliveryRef, Engine, now_ms};
use crate::channels::{SendJob, SendResult};

/// Longest the timer loop sleeps before looking again (new timers also wake it).
const TIMER_MAX_SLEEP: Duration = Duration::from_millis(500);
/// A delivery that finds its queue full when its retry falls due waits this much longer.
const REQUEUE_DELAY_MS: u64 = 200;

/// The send loop of one channel.
pub async fn run_channel(engine: Rc<Engine>, channel: usize) {
    let Some(sender) = engine.senders[channel].clone() else {
        return;
    };
    let slots = Rc::new(glommio::sync::Semaphore::new(sender.max_in_flight() as u64));
    while let Some(d) = engine.queues[channel].pop().await {
        let Ok(permit) = slots.acquire_static_permit(1).await else {
            break;
        };
        let Some(fut) = start_attempt(&engine, d, &*sender) else {
            drop(permit);
            continue;
        };
        engine.in_flight.set(engine.in_flight.get() + 1);
        let e = engine.clone();
        glommio::spawn_local(async move {
            let result = fut.await;
            e.in_flight.set(e.in_flight.get() - 1);
            e.complete_attempt(d, result);
            drop(permit);
        })
        .detach();
    }
}

/// Builds the provider request for a delivery, or settles it without sending (expired).
fn start_attempt(
    engine: &Rc<Engine>,
    d: DeliveryRef,
    sender: &dyn crate::channels::ChannelSender,
) -> Option<crate::channels::SendFuture> {
    let now = now_ms();
    let st = engine.state.borrow();
    let rec = st.open.get(&d.notification)?;
    let del = rec.deliveries.get(d.index as usize)?;
    if del.state.is_terminal() {
        return None;
    }
    if let Some(ttl) = rec.content.ttl_seconds {
        if now > rec.accepted_at_ms + u64::from(ttl) * 1000 {
            drop(st);
            engine.settle(d, Outcome::Expired);
            return None;
        }
    }
    bump(&engine.probe.attempts);
    let job = SendJob {
        delivery_id: del.id,
        target: &del.target,
        content: &rec.content,
        accepted_at_ms: rec.accepted_at_ms,
    };
    Some(sender.send(&job))
}

impl Engine {
    /// Applies a provider answer.
    pub(super) fn complete_attempt(self: &Rc<Self>, d: DeliveryRef, result: SendResult) {
        let outcome = match result {
            SendResult::Sent => Outcome::Sent,
            SendResult::Retry {
                reason,
                retry_after_ms,
            } => Outcome::Retryable {
                reason,
                retry_after_ms,
            },
            SendResult::Permanent { reason, deactivate } => {
                if deactivate {
                    self.deactivate_target(d, &reason);
                }
                Outcome::Permanent { reason }
            }
            SendResult::ConfigFault { reason } => {
                bump(&self.probe.config_faults);
                warn!(shard = self.cfg.shard, %reason, "provider configuration fault: check credentials");
                Outcome::Retryable {
                    reason: format!("configuration fault: {reason}"),
                    retry_after_ms: Some(crate::channels::apns::CONFIG_FAULT_RETRY_MS),
                }
            }
        };
        self.settle(d, outcome);
    }

    /// Moves a delivery to its next state, logs it, and schedules or closes.
    pub(super) fn settle(self: &Rc<Self>, d: DeliveryRef, outcome: Outcome) {
        let now = now_ms();
        let mut guard = self.state.borrow_mut();
        let st = &mut *guard;
        let Some(mut entry) = st.open.occupied(d.notification) else {
            return;
        };
        let rec = entry.get_mut();
        let Some(del) = rec.deliveries.get_mut(d.index as usize) else {
            return;
        };
        let new_state = match del.apply(outcome, now, &self.cfg.retry, &mut st.jitter) {
            Ok(s) => s,
            Err(e) => {
                warn!(shard = self.cfg.shard, error = %e, "ignored outcome for a settled delivery");
                return;
            }
        };
        let next_at = del.next_attempt_at_ms;
        match new_state {
            DeliveryState::Sent | DeliveryState::Delivered => bump(&self.probe.sent),
            DeliveryState::Retrying => bump(&self.probe.retried),
            DeliveryState::Failed => bump(&self.probe.failed),
            DeliveryState::Dead => bump(&self.probe.dead),
            DeliveryState::Expired => bump(&self.probe.expired),
            DeliveryState::Suppressed => bump(&self.probe.suppressed),
            _ => {}
        }
        // Log only this delivery's progress (a delivery update), encoded from the shard's copy.
        self.committer.add(
            |b| {
                b.put_delivery_update(d.notification, d.index, del);
            },
            None,
        );
        if rec.is_finished() {
            entry.remove();
            st.open_order.remove(&d.notification);
        }
        drop(guard);
        if new_state == DeliveryState::Retrying {
            self.timers.borrow_mut().insert(next_at.unwrap_or(now), d);
            self.timer_wake.notify();
        }
    }

    /// A permanent answer that says the token is dead: stop sending to that device.
    fn deactivate_target(&self, d: DeliveryRef, reason: &str) {
        let mut st = self.state.borrow_mut();
        let Some(rec) = st.open.get(&d.notification) else {
            return;
        };
        let user_id = rec.user_id.clone();
        let Some(target) = rec
            .deliveries
            .get(d.index as usize)
            .map(|x| x.target.clone())
        else {
            return;
        };
        let Some(user) = st.users.get_mut(&user_id) else {
            return;
        };
        let mut changed = false;
        for dev in user
            .devices
            .iter_mut()
            .filter(|x| x.active && x.token == target)
        {
            dev.active = false;
            dev.deactivated_reason = Some(reason.to_string());
            changed = true;
        }
        if changed {
            user.updated_at_ms = now_ms();
            let record = user.clone();
            drop(st);
            bump(&self.probe.deactivated_tokens);
            self.committer.add(
                |b| {
                    b.put_user(&record);
                },
                None,
            );
        }
    }
}

/// Moves due retries back into their queues.
pub async fn run_timers(engine: Rc<Engine>) {
    while !engine.stopping.is_set() {
        let next = engine.timers.borrow().next_due_ms();
        match next {
            None => engine.timer_wake.wait().await,
            Some(at) => {
                let now = now_ms();
                if at > now {
                    let wait = Duration::from_millis(at - now).min(TIMER_MAX_SLEEP);
                    futures_lite::future::or(glommio::timer::sleep(wait), engine.timer_wake.wait())
                        .await;
                    continue;
                }
                let due = engine.timers.borrow_mut().pop_due(now);
                for d in due {
                    if let Err(d) = engine.queues[d.channel.index()].try_push(d) {
                        engine.timers.borrow_mut().insert(now + REQUEUE_DELAY_MS, d);
                    }
                }
            }
        }
    }
}
