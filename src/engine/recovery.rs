//! Rebuilding a shard from its log on start (users, the dedup window, open notifications back
//! into queues and retry timers), and the housekeeping that bounds memory and disk: dedup
//! expiry, idle token buckets, and the retention sweep of finished notifications.

use std::rc::Rc;
use std::time::Duration;

use clarion_shards::{DeliveryState, Recovered, uuid_floor_for_ms};
use tracing::{info, warn};

use super::probe::bump;
use super::{DeliveryRef, Engine, now_ms};

/// Housekeeping runs at a quarter of the shorter window (retention, dedup), within these bounds:
/// with the defaults (days, hours) that is once a minute.
const HOUSEKEEPING_MIN: Duration = Duration::from_millis(100);
const HOUSEKEEPING_MAX: Duration = Duration::from_secs(60);

fn housekeeping_interval(cfg: &super::EngineConfig) -> Duration {
    let shorter = cfg.retention_ms.min(cfg.dedup_window_ms);
    Duration::from_millis(shorter / 4).clamp(HOUSEKEEPING_MIN, HOUSEKEEPING_MAX)
}
/// Recovered deliveries beyond a queue's room are spread over the timer this many ms apart.
const RECOVERY_SPREAD_MS: u64 = 1;

impl Engine {
    /// Installs what the log recovered. Call before `start`.
    pub fn restore(self: &Rc<Self>, rec: Recovered) {
        let now = now_ms();
        let mut st = self.state.borrow_mut();
        for u in rec.users {
            st.users.insert(u.user_id.clone(), u);
        }
        for (user_id, key, id, at) in rec.recent {
            st.dedup
                .insert(clarion_shards::dedup_key(&user_id, &key), id, at);
        }
        st.last_watermark = rec.watermark;
        let mut queued = 0u64;
        let mut overflow = 0u64;
        let mut timers = self.timers.borrow_mut();
        for n in rec.open {
            if n.is_finished() {
                continue;
            }
            for (i, d) in n.deliveries.iter().enumerate() {
                // Accept never makes more than MAX_DELIVERIES_PER_NOTIFICATION deliveries.
                let Ok(index) = u16::try_from(i) else { break };
                let r = DeliveryRef {
                    notification: n.id,
                    index,
                    channel: d.channel,
                };
                match d.state {
                    DeliveryState::Retrying => {
                        timers.insert(d.next_attempt_at_ms.unwrap_or(now), r);
                    }
                    s if s.is_terminal() => continue,
                    _ => {
                        if self.queues[d.channel.index()].try_push(r).is_err() {
                            overflow += 1;
                            timers.insert(now + overflow * RECOVERY_SPREAD_MS, r);
                        }
                    }
                }
                queued += 1;
                bump(&self.probe.recovered_deliveries);
            }
            st.open_order.insert(n.id);
            st.open.insert(n.id, Box::new(n));
        }
        info!(
            shard = self.cfg.shard,
            users = st.users.len(),
            dedup = st.dedup.len(),
            open = st.open.len(),
            deliveries = queued,
            "shard recovered from its log"
        );
    }
}

/// Periodic housekeeping for one shard.
pub async fn run_housekeeping(engine: Rc<Engine>) {
    let every = housekeeping_interval(&engine.cfg);
    loop {
        futures_lite::future::or(glommio::timer::sleep(every), engine.stopping.wait()).await;
        if engine.stopping.is_set() {
            return;
        }
        let now = now_ms();
        {
            let mut st = engine.state.borrow_mut();
            st.dedup.expire(now);
            st.buckets.evict_full(now);
        }
        // Never sweep past the watermark: nothing open may be removed.
        let mut cutoff = uuid_floor_for_ms(now.saturating_sub(engine.cfg.retention_ms));
        if let Some(first_open) = engine.state.borrow().open_order.first() {
            cutoff = cutoff.min(*first_open.as_bytes());
        }
        match engine.log.sweep(cutoff) {
            Ok(f) => match f.await {
                Ok(n) if n > 0 => info!(shard = engine.cfg.shard, removed = n, "retention sweep"),
                Ok(_) => {}
                Err(e) => warn!(shard = engine.cfg.shard, error = %e, "retention sweep failed"),
            },
            Err(e) => warn!(shard = engine.cfg.shard, error = %e, "retention sweep not queued"),
        }
    }
}
