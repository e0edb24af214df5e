//! A channel's circuit breaker: it tells a provider that is failing as a whole (connections
//! refused, TLS failures, timeouts, 5xx across many devices) from one that answers about each
//! delivery, so that an outage costs deliveries time, not attempts.
//!
//! ```text
//!   Closed ── half or more of the last 64 sends failed, at least 16 ──▶ Open
//!   Open ──── probe interval passed ────────────────────────────────▶ HalfOpen (one probe)
//!   HalfOpen ─ the provider answered ───────────────────────────────▶ Closed
//!   HalfOpen ─ the probe failed too ────────────────────────────────▶ Open, interval doubled
//! ```
//!
//! While it is open, the channel sends nothing but the probe; a provider-level failure then
//! spends no attempt of the delivery it hit (the delivery goes back to the head of its queue).
//! While it is closed, a provider-level failure is about the delivery it hit and counts.
//! One breaker per channel per shard, owned by the shard's core like the rest of its state.

use std::time::Duration;

/// Sends remembered, as the bits of a `u64`: a window long enough that a few unlucky failures
/// among healthy traffic never open the breaker, short enough that an outage opens it within
/// a few dozen sends.
const OUTCOME_WINDOW: u32 = u64::BITS;
/// Provider-level failures needed in the window before the breaker can open, so that a quiet
/// channel's first few timeouts are treated as the deliveries' own.
const MIN_FAILURES_TO_OPEN: u32 = 16;
/// First wait before probing an open provider; it doubles with each failed probe.
pub const PROBE_INTERVAL_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between probes: an outage is noticed to be over within a minute.
pub const PROBE_INTERVAL_MAX: Duration = Duration::from_secs(60);

/// Where the breaker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Sending normally.
    Closed,
    /// Not sending until `probe_at_ms`.
    Open { probe_at_ms: u64 },
    /// One probe is out; nothing else is sent until it answers.
    HalfOpen,
}

/// What the channel may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Send.
    Send,
    /// Send this one as the probe.
    Probe,
    /// Send nothing before this time (or before the probe answers).
    WaitUntil(u64),
}

/// The breaker of one channel on one shard.
#[derive(Debug)]
pub struct Breaker {
    state: BreakerState,
    /// The last sends' outcomes, newest in bit 0: 1 = provider-level failure.
    outcomes: u64,
    /// How many of the bits in `outcomes` are real (up to [`OUTCOME_WINDOW`]).
    recorded: u32,
    interval: Duration,
    /// Times the breaker opened, since start.
    opened: u64,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: BreakerState::Closed,
            outcomes: 0,
            recorded: 0,
            interval: PROBE_INTERVAL_FIRST,
            opened: 0,
        }
    }
}

impl Breaker {
    /// The state now.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Times the breaker has opened.
    pub fn opened(&self) -> u64 {
        self.opened
    }

    /// Whether the channel may send at `now_ms`. A `Probe` answer moves the breaker to
    /// half-open: the caller must report the probe's outcome.
    pub fn admit(&mut self, now_ms: u64) -> Admit {
        match self.state {
            BreakerState::Closed => Admit::Send,
            BreakerState::Open { probe_at_ms } if now_ms >= probe_at_ms => {
                self.state = BreakerState::HalfOpen;
                Admit::Probe
            }
            BreakerState::Open { probe_at_ms } => Admit::WaitUntil(probe_at_ms),
            BreakerState::HalfOpen => Admit::WaitUntil(now_ms.saturating_add(self.ms())),
        }
    }

    /// The probe `admit` allowed was not sent after all (nothing to send): probe again at once
    /// with the next delivery.
    pub fn cancel_probe(&mut self, now_ms: u64) {
        if self.state == BreakerState::HalfOpen {
            self.state = BreakerState::Open {
                probe_at_ms: now_ms,
            };
        }
    }

    /// The provider answered about a delivery (sent, refused it, throttled that device): it is
    /// up. Closes the breaker if it was open.
    pub fn on_answer(&mut self) {
        if self.state != BreakerState::Closed {
            self.close();
        }
        self.push(false);
    }

    /// A send failed at the provider level. Returns whether the failure counts against the
    /// delivery: only while the breaker stays closed, i.e. while the provider as a whole is
    /// still answering.
    pub fn on_failure(&mut self, now_ms: u64) -> bool {
        match self.state {
            BreakerState::Closed => {
                self.push(true);
                let failures = self.outcomes.count_ones();
                if failures >= MIN_FAILURES_TO_OPEN && failures * 2 >= self.recorded {
                    self.open(now_ms);
                    false
                } else {
                    true
                }
            }
            BreakerState::HalfOpen => {
                // The probe failed: wait twice as long before the next.
                self.interval = (self.interval * 2).min(PROBE_INTERVAL_MAX);
                self.open(now_ms);
                false
            }
            BreakerState::Open { .. } => false,
        }
    }

    /// Our credentials or setup were refused, or the channel is off: a fault of the channel as
    /// a whole, never of one delivery, so it opens the breaker at once (a probe's fault doubles
    /// the wait, like any failed probe) and never counts against the delivery.
    pub fn on_config_fault(&mut self, now_ms: u64) {
        self.push(true);
        match self.state {
            BreakerState::Open { .. } => {}
            BreakerState::HalfOpen => {
                self.interval = (self.interval * 2).min(PROBE_INTERVAL_MAX);
                self.open(now_ms);
            }
            BreakerState::Closed => self.open(now_ms),
        }
    }

    fn open(&mut self, now_ms: u64) {
        if self.state == BreakerState::Closed {
            self.opened += 1;
        }
        self.state = BreakerState::Open {
            probe_at_ms: now_ms.saturating_add(self.ms()),
        };
    }

    fn close(&mut self) {
        self.state = BreakerState::Closed;
        self.outcomes = 0;
        self.recorded = 0;
        self.interval = PROBE_INTERVAL_FIRST;
    }

    fn push(&mut self, failed: bool) {
        self.outcomes = (self.outcomes << 1) | u64::from(failed);
        self.recorded = (self.recorded + 1).min(OUTCOME_WINDOW);
    }

    fn ms(&self) -> u64 {
        u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_fault_opens_it_at_once() {
        let mut b = Breaker::default();
        b.on_config_fault(0);
        assert_eq!(b.state(), BreakerState::Open { probe_at_ms: 1000 });
        b.on_config_fault(10);
        assert_eq!(
            b.state(),
            BreakerState::Open { probe_at_ms: 1000 },
            "a late answer leaves it"
        );
        assert_eq!(b.admit(1000), Admit::Probe);
        b.on_config_fault(1000);
        assert_eq!(
            b.state(),
            BreakerState::Open { probe_at_ms: 3000 },
            "the probe failed: twice as long"
        );
        assert_eq!(b.opened(), 1);
    }

    #[test]
    fn scattered_failures_among_answers_keep_it_closed_and_count() {
        let mut b = Breaker::default();
        for i in 0..1000 {
            if i % 3 == 0 {
                assert!(b.on_failure(i), "a failure while healthy is the delivery's");
            } else {
                b.on_answer();
            }
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.opened(), 0);
    }

    #[test]
    fn an_outage_opens_it_after_sixteen_failures_and_then_nothing_counts() {
        let mut b = Breaker::default();
        for i in 0..15 {
            assert!(b.on_failure(i));
        }
        assert!(
            !b.on_failure(15),
            "the failure that opens it does not count"
        );
        assert_eq!(b.state(), BreakerState::Open { probe_at_ms: 1015 });
        assert!(
            !b.on_failure(16),
            "in-flight failures after it opened do not count"
        );
        assert_eq!(b.admit(500), Admit::WaitUntil(1015));
        assert_eq!(b.opened(), 1);
    }

    #[test]
    fn probes_back_off_and_an_answer_closes_it() {
        let mut b = Breaker::default();
        for i in 0..16 {
            b.on_failure(i);
        }
        let mut at = 15 + 1000;
        let mut expected_interval = 1000;
        for _ in 0..10 {
            assert_eq!(b.admit(at), Admit::Probe);
            assert_eq!(b.state(), BreakerState::HalfOpen);
            assert!(
                matches!(b.admit(at), Admit::WaitUntil(_)),
                "one probe at a time"
            );
            assert!(!b.on_failure(at), "a failed probe does not count");
            expected_interval = (expected_interval * 2).min(60_000);
            assert_eq!(
                b.state(),
                BreakerState::Open {
                    probe_at_ms: at + expected_interval
                }
            );
            at += expected_interval;
        }
        assert_eq!(expected_interval, 60_000, "the interval is capped");
        assert_eq!(b.admit(at), Admit::Probe);
        b.on_answer();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(at), Admit::Send);
        // Back to the first interval and an empty window: it takes a new run of failures.
        for i in 0..15 {
            assert!(b.on_failure(at + i));
        }
        assert!(!b.on_failure(at + 15));
        assert_eq!(
            b.state(),
            BreakerState::Open {
                probe_at_ms: at + 15 + 1000
            }
        );
        assert_eq!(b.opened(), 2);
    }

    #[test]
    fn a_probe_not_sent_lets_the_next_delivery_probe() {
        let mut b = Breaker::default();
        for i in 0..16 {
            b.on_failure(i);
        }
        assert_eq!(b.admit(2000), Admit::Probe);
        b.cancel_probe(2000);
        assert_eq!(b.admit(2000), Admit::Probe);
        assert_eq!(b.opened(), 1);
    }

    #[test]
    fn it_opens_when_half_the_window_fails() {
        let mut b = Breaker::default();
        for _ in 0..64 {
            b.on_answer();
        }
        // Alternating answers and failures: 31 failures among the last 64 sends.
        for i in 0..31 {
            b.on_answer();
            assert!(b.on_failure(i));
        }
        assert_eq!(b.state(), BreakerState::Closed);
        // One more failure makes it 32 of 64: half.
        assert!(!b.on_failure(100));
        assert!(matches!(b.state(), BreakerState::Open { .. }));
    }
}
