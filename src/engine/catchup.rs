//! A channel's catch-up yields to the other channels' live traffic.
//!
//! When a provider comes back after an outage, its channel has a backlog to drain (a quarter
//! of a million deliveries after a minute at 8,000/s). Drained at full speed it takes all the CPU
//! the shard can get, and the channels that never went down pay for it: on the 2-core test
//! machine their p99 went from 10–12 ms to 55–107 ms for the seconds of the drain. A lane is
//! *catching up* while more than [`CATCH_UP_BACKLOG`] of its deliveries wait; while one is and
//! another channel of the shard is sending live traffic, the catching-up lane's sends are paced
//! by a rate this module adapts to how late the shard's executor runs: a probe task asks to wake
//! every [`PROBE_TICK`] and measures how late it wakes, which is how long any other task (an
//! accept, a live channel's send) waits for the executor. A window of probes with more than
//! [`LATE_SHARE`] of them late over [`LATE_AFTER`] cuts the rate (multiplicative decrease), a
//! calm one raises it (additive increase), as TCP's congestion control does. With no other
//! channel live, or no lane catching up, nothing is paced: a single channel's backlog drains
//! at the channel's full rate (`[delivery] catch_up_yields = false` turns the pacing off).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::Engine;

/// A lane with more deliveries than this waiting is catching up: more than the most a
/// sender has in flight (4,096), so a live channel's own in-flight work never counts.
pub const CATCH_UP_BACKLOG: u64 = 4_096;
/// How often the probe asks to wake.
pub const PROBE_TICK: Duration = Duration::from_millis(5);
/// A probe that wakes later than this is late: above the executor's normal jitter (well under
/// a millisecond), well below the latency the pacing protects (a live channel's p99 of about
/// 10 ms here). At 2 ms (with [`LATE_SHARE`] at 10%) the live channels' p99 was 1.5 times the
/// calm run's during a catch-up; at 1 ms and 5%, 1.05 times, the backlog drained as fast.
pub const LATE_AFTER: Duration = Duration::from_millis(1);
/// Probes per window (100 ms): how often the rate moves.
pub const WINDOW_PROBES: u32 = 20;
/// A window is congested when more than this share of its probes came late.
pub const LATE_SHARE: f64 = 0.05;
/// A catch-up starts at this rate (per second per shard) and climbs while the executor keeps
/// up: a backlog's first second at full speed is the second the live channels would notice.
pub const START_RATE: f64 = 2_000.0;
/// The catch-up rate never goes below this (deliveries per second per shard), so a backlog
/// always drains: 216,000 over two shards in under two minutes at worst.
pub const MIN_RATE: f64 = 1_000.0;
/// The highest paced rate (per second per shard): about half of what a shard sends at most
/// here. A calm window above it lifts the pacing altogether.
pub const PACED_MAX: f64 = 20_000.0;
/// Additive increase per calm window (per second per shard).
pub const RATE_STEP: f64 = 500.0;
/// Multiplicative decrease per congested window.
pub const RATE_CUT: f64 = 0.7;
/// Sends a catching-up lane may make at once after a pause (the pacer's burst).
pub const BURST: f64 = 16.0;
/// A channel counts as live while it sent (not catching up) within this.
pub const LIVE_WITHIN: Duration = Duration::from_secs(1);

/// Whether a lane with `backlog` deliveries waiting is catching up.
pub fn catching_up(backlog: u64) -> bool {
    backlog > CATCH_UP_BACKLOG
}

/// The shard's catch-up pacing: the adapted rate and the pacer's clock.
pub struct CatchUp {
    enabled: bool,
    /// Deliveries per second a catching-up lane may start, per shard.
    rate: Cell<f64>,
    /// The pacer's theoretical arrival time (GCRA), in µs since `epoch`.
    tat_us: Cell<f64>,
    epoch: Instant,
    /// Per channel: when it last started a send while not catching up.
    live_at: Vec<Cell<Option<Instant>>>,
    /// Sends delayed by the pacing (for `/v1/stats`).
    pub paced: Cell<u64>,
    /// Windows that cut the rate.
    pub cuts: Cell<u64>,
}

impl CatchUp {
    pub fn new(channels: usize, enabled: bool) -> CatchUp {
        CatchUp {
            enabled,
            rate: Cell::new(START_RATE),
            tat_us: Cell::new(0.0),
            epoch: Instant::now(),
            live_at: (0..channels).map(|_| Cell::new(None)).collect(),
            paced: Cell::new(0),
            cuts: Cell::new(0),
        }
    }

    /// The current catch-up rate, per second (infinite: not paced).
    pub fn rate(&self) -> f64 {
        self.rate.get()
    }

    /// Before a send of `channel`, whose lane has `backlog` waiting: how long to wait first, or
    /// `None` to send now (the send's slot is then taken).
    pub fn delay(&self, channel: usize, backlog: u64, now: Instant) -> Option<Duration> {
        if !catching_up(backlog) {
            if let Some(at) = self.live_at.get(channel) {
                at.set(Some(now));
            }
            return None;
        }
        if !self.enabled || !self.others_live(channel, now) {
            return None;
        }
        let rate = self.rate.get();
        if rate.is_infinite() {
            return None;
        }
        let interval = 1e6 / rate;
        let now_us = now.duration_since(self.epoch).as_secs_f64() * 1e6;
        let tat = self.tat_us.get().max(now_us);
        let ahead = tat - now_us;
        if ahead > interval * BURST {
            self.paced.set(self.paced.get() + 1);
            return Some(Duration::from_micros((ahead - interval * BURST) as u64 + 1));
        }
        self.tat_us.set(tat + interval);
        None
    }

    fn others_live(&self, channel: usize, now: Instant) -> bool {
        self.live_at.iter().enumerate().any(|(i, at)| {
            i != channel
                && at
                    .get()
                    .is_some_and(|t| now.saturating_duration_since(t) <= LIVE_WITHIN)
        })
    }

    /// No lane is catching up: the next catch-up starts again from [`START_RATE`].
    pub fn lift(&self) {
        self.rate.set(START_RATE);
    }

    /// One window of probes: `late` of `probes` woke late. Moves the rate.
    pub fn window(&self, late: u32, probes: u32) {
        let rate = self.rate.get();
        let next = if f64::from(late) > f64::from(probes) * LATE_SHARE {
            self.cuts.set(self.cuts.get() + 1);
            (rate.min(PACED_MAX) * RATE_CUT).max(MIN_RATE)
        } else if rate + RATE_STEP > PACED_MAX {
            f64::INFINITY
        } else {
            rate + RATE_STEP
        };
        self.rate.set(next);
    }
}

/// How often the probe looks while no lane is catching up.
const IDLE_LOOK: Duration = Duration::from_millis(100);

/// The probe: while some lane is catching up, wakes every [`PROBE_TICK`], counts late
/// wake-ups, and moves the rate once per window; otherwise it looks every [`IDLE_LOOK`] and the
/// pacing is lifted.
pub async fn run_probe(engine: Rc<Engine>) {
    let (mut late, mut probes) = (0u32, 0u32);
    while !engine.stopping.is_set() {
        let catching_up = engine.lanes.iter().any(|l| catching_up(l.backlog.get()));
        if !catching_up {
            (late, probes) = (0, 0);
            engine.catch_up.lift();
            let woken = engine.stopping.wait();
            futures_lite::future::or(glommio::timer::sleep(IDLE_LOOK), woken).await;
            continue;
        }
        let asked = Instant::now();
        glommio::timer::sleep(PROBE_TICK).await;
        probes += 1;
        if asked.elapsed() > PROBE_TICK + LATE_AFTER {
            late += 1;
        }
        if probes >= WINDOW_PROBES {
            engine.catch_up.window(late, probes);
            (late, probes) = (0, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_alone_or_not_catching_up_is_never_paced() {
        let c = CatchUp::new(3, true);
        c.window(20, 20); // congested
        let now = Instant::now();
        assert_eq!(c.delay(1, CATCH_UP_BACKLOG, now), None, "not catching up");
        for _ in 0..1_000 {
            assert_eq!(c.delay(1, 1_000_000, now), None, "no other channel live");
        }
        let off = CatchUp::new(3, false);
        off.window(20, 20);
        assert_eq!(off.delay(0, 10, now), None);
        for _ in 0..1_000 {
            assert_eq!(off.delay(1, 1_000_000, now), None, "pacing off");
        }
    }

    #[test]
    fn a_catching_up_lane_is_paced_at_the_adapted_rate_while_another_is_live() {
        let c = CatchUp::new(3, true);
        let now = Instant::now();
        assert_eq!(c.delay(0, 10, now), None, "apns sends live");
        assert_eq!(c.rate(), START_RATE, "a catch-up starts slow");
        for _ in 0..200 {
            c.window(0, WINDOW_PROBES);
        }
        assert!(
            c.rate().is_infinite(),
            "and is unpaced once calm long enough"
        );
        for _ in 0..1_000 {
            assert_eq!(c.delay(1, 1_000_000, now), None);
        }
        for _ in 0..10 {
            c.window(5, 20);
        }
        let rate = c.rate();
        assert!((MIN_RATE..PACED_MAX).contains(&rate), "cut: {rate}");
        let sent = (0..1_000)
            .take_while(|_| c.delay(1, 1_000_000, now).is_none())
            .count();
        assert!(
            sent >= BURST as usize && sent <= BURST as usize + 2,
            "a burst, then paced: {sent}"
        );
        let wait = c.delay(1, 1_000_000, now).unwrap();
        assert!(wait <= Duration::from_secs_f64(2.0 / rate), "{wait:?}");
        // The other channel's last live send is too old: unpaced again.
        assert_eq!(
            c.delay(1, 1_000_000, now + LIVE_WITHIN + Duration::from_millis(1)),
            None
        );
    }

    #[test]
    fn the_rate_falls_to_its_floor_under_congestion_and_climbs_back_when_calm() {
        let c = CatchUp::new(2, true);
        for _ in 0..100 {
            c.window(WINDOW_PROBES, WINDOW_PROBES);
        }
        assert_eq!(c.rate(), MIN_RATE);
        assert_eq!(c.cuts.get(), 100);
        c.window(1, WINDOW_PROBES);
        assert_eq!(c.rate(), MIN_RATE + RATE_STEP, "5% late is still calm");
        c.window(2, WINDOW_PROBES);
        assert_eq!(
            c.rate(),
            ((MIN_RATE + RATE_STEP) * RATE_CUT).max(MIN_RATE),
            "10% is not"
        );
        for _ in 0..1_000 {
            c.window(0, WINDOW_PROBES);
        }
        assert!(c.rate().is_infinite(), "unpaced again");
        c.lift();
        assert_eq!(c.rate(), START_RATE, "the next catch-up starts slow again");
    }
}
