//! [`Pace`]: a shard's share of the FCM project's quota, as a GCRA (the generic cell rate
//! algorithm, a token bucket kept as one timestamp). Each send *reserves* its slot when it
//! asks and sleeps at most once, until that slot.
//!
//! Hand-written because the bucket it replaces (take a token or sleep until one is due, then
//! try again) woke every waiting send at each token: with a backlog draining against the
//! default quota, 2,000 sends in flight per shard each woke every millisecond, and the intake
//! and the other channels slowed to a crawl (accept p99 131 ms against 14 ms; see
//! docs/performance-history.md). `governor` checks without reserving, so its waiters would
//! also wake together.

use std::cell::Cell;
use std::time::Duration;

/// One shard's pace: at most `per_minute` sends a minute, bursting up to a second's worth.
#[derive(Debug)]
pub struct Pace {
    /// Nanoseconds between two sends at the full rate.
    interval_ns: u64,
    /// How far ahead of the steady schedule a burst may run.
    tolerance_ns: u64,
    /// The theoretical arrival time of the next send (ns since the pace's epoch).
    tat_ns: Cell<u64>,
}

impl Pace {
    pub fn new(per_minute: u64) -> Pace {
        let per_minute = per_minute.max(1);
        let interval_ns = (60_000_000_000 / per_minute).max(1);
        // A second's worth of sends, at least one.
        let burst = per_minute.div_ceil(60).max(1);
        Pace {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(burst - 1),
            tat_ns: Cell::new(0),
        }
    }

    /// Reserves the next slot for a send asking at `now_ns`; how long it must wait for it.
    pub fn reserve(&self, now_ns: u64) -> Duration {
        let tat = self.tat_ns.get().max(now_ns);
        self.tat_ns.set(tat.saturating_add(self.interval_ns));
        Duration::from_nanos(tat.saturating_sub(now_ns.saturating_add(self.tolerance_ns)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_then_each_send_waits_for_its_own_slot() {
        // 1,000 a second: a burst of 1,000, then one every millisecond.
        let p = Pace::new(60_000);
        let now = 5_000_000_000;
        for _ in 0..1000 {
            assert_eq!(p.reserve(now), Duration::ZERO);
        }
        assert_eq!(p.reserve(now), Duration::from_millis(1));
        assert_eq!(p.reserve(now), Duration::from_millis(2));
        // Each waiter was given a different slot: none wakes to find the token taken.
        // A millisecond later one slot more has come: the next send waits 2 ms, not 3.
        assert_eq!(p.reserve(now + 1_000_000), Duration::from_millis(2));
    }

    #[test]
    fn an_idle_pace_refills_to_a_full_burst() {
        let p = Pace::new(120);
        assert_eq!(p.reserve(0), Duration::ZERO);
        assert_eq!(p.reserve(0), Duration::ZERO);
        assert_eq!(p.reserve(0), Duration::from_millis(500));
        let idle = 10_000_000_000;
        assert_eq!(p.reserve(idle), Duration::ZERO);
        assert_eq!(p.reserve(idle), Duration::ZERO);
        assert_eq!(p.reserve(idle), Duration::from_millis(500));
    }
}
