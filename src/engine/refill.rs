//! The refill of a channel's window from its backlog in the log: one task per channel that
//! scans the `pending` keyspace in due order when the window has room and something on disk
//! is due (see `lane.rs` for why the scans see every key), and takes what it finds into the
//! window with each notification cached in memory.

use std::rc::Rc;
use std::time::Duration;

use clarion_shards::{Channel, PendingKey, PendingScan};
use tracing::warn;

use super::lane::{Lane, ScanTicket};
use super::{DeliveryRef, Engine, OpenNotification, now_ms};

/// Longest the refill sleeps with nothing to do before it looks again (a due time noted or a
/// spill wakes it sooner).
const REFILL_IDLE: Duration = Duration::from_millis(500);
/// Wait after a failed scan (the log busy or failing) before trying again.
const REFILL_RETRY: Duration = Duration::from_millis(100);

/// The refill loop of one channel.
pub async fn run_refill(engine: Rc<Engine>, channel: usize) {
    let lane = &engine.lanes[channel];
    while !engine.stopping.is_set() {
        let now = now_ms();
        if engine.failed.get() || !lane.wants_scan(now) {
            // A due time still ahead wakes it then; one already passed waits for the window
            // to drain (the send loop's pops wake it).
            let wait = match lane.next_due_ms() {
                Some(t) if t > now => Duration::from_millis(t - now).min(REFILL_IDLE),
                _ => REFILL_IDLE,
            };
            let woken = futures_lite::future::or(lane.refill.wait(), engine.stopping.wait());
            futures_lite::future::or(glommio::timer::sleep(wait), woken).await;
            continue;
        }
        let ticket = lane.begin_scan(now);
        match scan(&engine, lane.channel, &ticket, now).await {
            Ok(found) => engine.take_scan(lane, &ticket, found),
            Err(e) => {
                warn!(shard = engine.cfg.shard, channel = lane.channel.as_str(), error = %e, "backlog scan failed; retrying");
                lane.abandon_scan(&ticket);
                glommio::timer::sleep(REFILL_RETRY).await;
            }
        }
    }
}

/// Issues the scan behind every write added so far, and waits for it.
async fn scan(
    engine: &Rc<Engine>,
    channel: Channel,
    ticket: &ScanTicket,
    until_ms: u64,
) -> Result<PendingScan, clarion_shards::Error> {
    let (tx, rx) = futures_channel::oneshot::channel();
    let (e, after, limit) = (engine.clone(), ticket.after, ticket.limit);
    engine.committer.after_writes(Box::new(move || {
        let _ = tx.send(e.log.scan_pending(channel, after, until_ms, limit));
    }));
    match rx.await {
        Ok(Ok(reply)) => reply.await,
        Ok(Err(e)) => Err(e),
        Err(_) => Err(clarion_shards::Error::Closed),
    }
}

impl Engine {
    /// Takes a scan's deliveries into the window: skips resident ones and those settled while
    /// it ran, caches each notification (the copy in memory wins: it is at least as new), and
    /// removes keys whose delivery is settled or whose notification is gone. A notification
    /// the scan read before one of its deliveries changed, and that memory no longer holds,
    /// ends the scan there: the next one reads on from it with a fresh copy.
    fn take_scan(&self, lane: &Lane, ticket: &ScanTicket, found: PendingScan) {
        let mut records: Vec<_> = found.records.into_iter().map(Some).collect();
        let mut last = None;
        let mut complete = found.complete;
        // Evicted after the loop: a later item may need the same notification.
        let mut settled = Vec::new();
        for (key, slot) in found.items {
            let d = DeliveryRef {
                notification: key.notification,
                index: key.index,
                channel: key.channel,
                due_ms: key.due_ms,
            };
            if self.is_resident(&d) || lane.removed_during_scan(&d) {
                last = Some(key);
                continue;
            }
            let mut st = self.state.borrow_mut();
            if !st.open.contains_key(&d.notification) {
                let stale = slot
                    .and_then(|i| records.get(i)?.as_ref())
                    .is_some_and(|r| {
                        (0..r.deliveries.len()).any(|i| {
                            u16::try_from(i).is_ok_and(|index| {
                                lane.removed_during_scan(&DeliveryRef { index, ..d })
                            })
                        })
                    });
                if stale {
                    complete = false;
                    break;
                }
                last = Some(key);
                let Some(record) = slot.and_then(|i| records.get_mut(i)?.take()) else {
                    drop(st);
                    self.drop_stale(&key, "its notification is missing");
                    continue;
                };
                st.open.insert(
                    d.notification,
                    OpenNotification {
                        record: Box::new(record),
                        resident: 0,
                    },
                );
            }
            last = Some(key);
            let live = st.open.get(&d.notification).is_some_and(|o| {
                o.record
                    .deliveries
                    .get(usize::from(d.index))
                    .is_some_and(|x| !x.state.is_terminal() && x.channel == d.channel)
            });
            drop(st);
            if !live {
                self.drop_stale(&key, "its delivery is settled");
                settled.push(d.notification);
                continue;
            }
            lane.push_back(d);
            self.make_resident(&d);
        }
        lane.end_scan(ticket, last, complete, found.next_due_ms);
        for id in settled {
            self.evict_if_idle(id);
        }
    }

    /// Removes a backlog key that points at nothing to send.
    pub(super) fn drop_stale(&self, key: &PendingKey, why: &str) {
        warn!(shard = self.cfg.shard, notification = %key.notification, index = key.index, why, "stale backlog key removed");
        let lane = &self.lanes[key.channel.index()];
        lane.backlog.set(lane.backlog.get().saturating_sub(1));
        lane.key_removed(&DeliveryRef {
            notification: key.notification,
            index: key.index,
            channel: key.channel,
            due_ms: key.due_ms,
        });
        self.committer.add(
            |b| {
                b.delete_pending(key);
            },
            None,
        );
    }
}
