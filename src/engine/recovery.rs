//! Rebuilding a shard from its log on start (users, the newest idempotency keys, the backlogs'
//! sizes),
//! and the housekeeping that bounds memory and disk: dedup
//! expiry, idle token buckets, and the retention sweep of finished notifications.

use std::rc::Rc;
use std::time::Duration;

use clarion_shards::{Recovered, uuid_floor_for_ms};
use tracing::{info, warn};

use super::{Engine, now_ms};

/// Housekeeping runs at a quarter of the shorter window (retention, dedup), within these bounds:
/// with the defaults (days, hours) that is once a minute.
const HOUSEKEEPING_MIN: Duration = Duration::from_millis(100);
const HOUSEKEEPING_MAX: Duration = Duration::from_secs(60);

fn housekeeping_interval(cfg: &super::EngineConfig) -> Duration {
    let shorter = cfg.retention_ms.min(cfg.dedup_window_ms);
    Duration::from_millis(shorter / 4).clamp(HOUSEKEEPING_MIN, HOUSEKEEPING_MAX)
}

impl Engine {
    /// Installs what the log recovered. Call before `start`. Open deliveries stay in the log's
    /// backlog: the lanes read them as they drain (every lane starts spilled).
    pub fn restore(self: &Rc<Self>, rec: Recovered) {
        let mut st = self.state.borrow_mut();
        for u in rec.users {
            st.users.insert(u.user_id.clone(), u);
        }
        // Keys older than those read back may be on disk only: until they leave the window,
        // a new key is checked there.
        if let (false, Some(oldest)) = (rec.recent_complete, rec.recent.first()) {
            st.dedup.note_missing(oldest.3);
        }
        for (user_id, key, id, at) in rec.recent {
            st.dedup
                .insert(self.dedup_hasher.key(&user_id, &key), id, at);
        }
        let mut waiting = 0;
        for (lane, &n) in self.lanes.iter().zip(&rec.backlog) {
            lane.backlog.set(n);
            waiting += n;
        }
        self.probe.recovered_deliveries.set(waiting);
        info!(
            shard = self.cfg.shard,
            users = st.users.len(),
            dedup = st.dedup.len(),
            backlog = waiting,
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
        // The sweep keeps every unfinished notification, however old.
        let cutoff = uuid_floor_for_ms(now.saturating_sub(engine.cfg.retention_ms));
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
