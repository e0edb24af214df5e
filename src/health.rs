//! Every shard's health, readable from any core: each shard writes only its own slot (when it
//! starts serving, when its log fails), and `GET /healthz` on any core reads them all, so a
//! load balancer asking any core hears about every shard. The hot path never touches the
//! shared slots: the engine reads its own `FailedFlag`, a `Cell`, on every command, and the flag
//! writes the shared slot only when it changes.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// What one shard is doing, as health reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardState {
    /// Not yet serving: recovering its log, joining the mesh, binding the port.
    Starting,
    Serving,
    /// Its log failed (poisoned): it refuses writes until the server is restarted.
    Failed,
}

impl ShardState {
    pub fn name(self) -> &'static str {
        match self {
            ShardState::Starting => "starting",
            ShardState::Serving => "serving",
            ShardState::Failed => "failed",
        }
    }

    fn from_u8(v: u8) -> ShardState {
        match v {
            1 => ShardState::Serving,
            2 => ShardState::Failed,
            _ => ShardState::Starting,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            ShardState::Starting => 0,
            ShardState::Serving => 1,
            ShardState::Failed => 2,
        }
    }
}

/// Whether the process takes traffic, as `GET /readyz` tells a load balancer: set by the main
/// thread when every shard serves, and when SIGTERM starts the drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Recovering, starting channels, binding: `503 starting`.
    Starting,
    /// `200`.
    Ready,
    /// SIGTERM came: `503 draining` while the listeners keep serving for the drain delay.
    Draining,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Ready => "ready",
            Phase::Draining => "draining",
        }
    }
}

/// One slot per shard, shared by all of them, and the process's [`Phase`].
#[derive(Debug, Clone)]
pub struct ShardsHealth {
    slots: Arc<[AtomicU8]>,
    phase: Arc<AtomicU8>,
}

impl ShardsHealth {
    pub fn new(shards: usize) -> ShardsHealth {
        ShardsHealth {
            slots: (0..shards).map(|_| AtomicU8::new(0)).collect(),
            phase: Arc::new(AtomicU8::new(0)),
        }
    }

    /// Every shard serves: ready, unless the drain has begun (it is never undone).
    pub fn set_ready(&self) {
        let _ = self
            .phase
            .compare_exchange(0, 1, Ordering::Release, Ordering::Relaxed);
    }

    pub fn set_draining(&self) {
        self.phase.store(2, Ordering::Release);
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            _ => Phase::Draining,
        }
    }

    /// Sets a shard's state; a failed shard stays failed.
    pub fn set(&self, shard: usize, state: ShardState) {
        if let Some(slot) = self.slots.get(shard) {
            let _ = slot.fetch_update(Ordering::Release, Ordering::Acquire, |now| {
                (ShardState::from_u8(now) != ShardState::Failed).then_some(state.as_u8())
            });
        }
    }

    /// Every shard's state, in shard order.
    pub fn states(&self) -> Vec<ShardState> {
        self.slots
            .iter()
            .map(|s| ShardState::from_u8(s.load(Ordering::Acquire)))
            .collect()
    }

    /// The slot of one shard, for its engine's `FailedFlag`.
    pub fn slot(&self, shard: usize) -> ShardSlot {
        ShardSlot {
            health: self.clone(),
            shard,
        }
    }
}

/// One shard's slot in `ShardsHealth`.
#[derive(Debug, Clone)]
pub struct ShardSlot {
    health: ShardsHealth,
    shard: usize,
}

impl ShardSlot {
    pub fn set(&self, state: ShardState) {
        self.health.set(self.shard, state);
    }
}

/// The engine's "my log failed" flag, used like a `Cell<bool>`: read locally on every command,
/// and published to the shard's health slot when set.
#[derive(Debug)]
pub struct FailedFlag {
    failed: Cell<bool>,
    slot: ShardSlot,
}

impl FailedFlag {
    pub fn new(slot: ShardSlot) -> FailedFlag {
        FailedFlag {
            failed: Cell::new(false),
            slot,
        }
    }

    pub fn get(&self) -> bool {
        self.failed.get()
    }

    pub fn set(&self, failed: bool) {
        if failed && !self.failed.get() {
            self.slot.set(ShardState::Failed);
        }
        self.failed.set(failed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_shard_shows_in_every_copy_and_stays_failed() {
        let health = ShardsHealth::new(3);
        let reader = health.clone();
        assert_eq!(reader.states(), [ShardState::Starting; 3]);
        for shard in 0..3 {
            health.set(shard, ShardState::Serving);
        }
        let flag = FailedFlag::new(health.slot(1));
        assert!(!flag.get());
        flag.set(true);
        assert!(flag.get());
        assert_eq!(
            reader.states(),
            [ShardState::Serving, ShardState::Failed, ShardState::Serving]
        );
        health.set(1, ShardState::Serving);
        assert_eq!(reader.states()[1], ShardState::Failed);
    }

    #[test]
    fn the_phase_goes_from_starting_to_ready_to_draining_and_never_back() {
        let health = ShardsHealth::new(1);
        let reader = health.clone();
        assert_eq!(reader.phase(), Phase::Starting);
        health.set_ready();
        assert_eq!(reader.phase(), Phase::Ready);
        health.set_draining();
        assert_eq!(reader.phase(), Phase::Draining);
        health.set_ready();
        assert_eq!(reader.phase(), Phase::Draining);
    }
}
