//! How fast a backlog drains once the provider is back, from the simulator's counters polled
//! every [`DRAIN_POLL`]:
//!
//! - the backlog is what was accepted before the provider recovered and not yet delivered
//!   (the server's `accepted` less the simulator's distinct seqs, read when the faults clear);
//! - the drain starts at the first push the simulator accepts after that (the breaker's probe;
//!   the wait before it is the breaker's backoff, reported apart) and ends when the simulator
//!   has seen as many distinct seqs as the server had accepted (deliveries go oldest first:
//!   the backlog keyspace is in due order and new deliveries queue behind it);
//! - its rate is every push the simulator accepted in that span per second (the intake that
//!   goes on meanwhile included), the channel's end-to-end delivery rate while it has work.
//!
//! [`DrainTracker`] is the pure part (fed observations, unit-tested); [`steady_rate`] is the
//! median of per-second rates from the one-second samples over the same span.

use std::time::Duration;

use serde::Serialize;

/// How often the simulator's counters are read while a backlog drains.
pub const DRAIN_POLL: Duration = Duration::from_millis(50);

/// A drain, measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DrainReport {
    /// Deliveries waiting when the provider recovered.
    pub backlog_at_recovery: u64,
    /// From the faults clearing to the first push accepted (the breaker's backoff), seconds.
    pub first_push_after_s: Option<f64>,
    /// From the first push until the backlog was delivered, seconds.
    pub drain_s: Option<f64>,
    /// Pushes the simulator accepted over the drain (new intake included).
    pub pushes: u64,
    /// `pushes / drain_s`: the end-to-end delivery rate while draining.
    pub rate_per_s: Option<f64>,
    /// `backlog_at_recovery / drain_s`: how fast the backlog itself went.
    pub backlog_rate_per_s: Option<f64>,
    /// Median of the one-second samples' push rates over the drain.
    pub median_second_rate_per_s: Option<f64>,
    /// Whether it was all delivered before the timeout.
    pub done: bool,
}

/// Follows one drain. Times are seconds on any one clock.
#[derive(Clone, Debug)]
pub struct DrainTracker {
    t_clear: f64,
    pushes_at_clear: u64,
    backlog: u64,
    target_distinct: u64,
    first: Option<(f64, u64)>,
    end: Option<(f64, u64)>,
}

impl DrainTracker {
    /// At `t`, the faults cleared; the simulator had accepted `pushes` and seen `distinct`
    /// seqs, and the server had accepted `accepted` notifications (one delivery each).
    #[must_use]
    pub fn new(t: f64, pushes: u64, distinct: u64, accepted: u64) -> Self {
        DrainTracker {
            t_clear: t,
            pushes_at_clear: pushes,
            backlog: accepted.saturating_sub(distinct),
            target_distinct: accepted,
            first: None,
            end: (accepted <= distinct).then_some((t, pushes)),
        }
    }

    /// One reading; true once the backlog is delivered.
    pub fn observe(&mut self, t: f64, pushes: u64, distinct: u64) -> bool {
        if self.end.is_some() {
            return true;
        }
        if self.first.is_none() && pushes > self.pushes_at_clear {
            self.first = Some((t, pushes));
        }
        if distinct >= self.target_distinct {
            self.end = Some((t, pushes));
        }
        self.end.is_some()
    }

    /// When the drain began and ended (seconds), once it has.
    #[must_use]
    pub fn span(&self) -> Option<(f64, f64)> {
        Some((self.first?.0, self.end?.0))
    }

    #[must_use]
    pub fn report(&self) -> DrainReport {
        let mut r = DrainReport {
            backlog_at_recovery: self.backlog,
            first_push_after_s: self.first.map(|(t, _)| t - self.t_clear),
            done: self.end.is_some(),
            ..DrainReport::default()
        };
        if let (Some((t0, p0)), Some((t1, p1))) = (self.first, self.end) {
            let span = (t1 - t0).max(f64::EPSILON);
            r.drain_s = Some(t1 - t0);
            r.pushes = p1 - p0;
            r.rate_per_s = Some(r.pushes as f64 / span);
            r.backlog_rate_per_s = Some(self.backlog as f64 / span);
        }
        r
    }
}

/// The median rate between consecutive `(t, cumulative pushes)` points lying in `from..=to`;
/// `None` with fewer than two such points.
#[must_use]
pub fn steady_rate(points: &[(f64, u64)], from: f64, to: f64) -> Option<f64> {
    let inside: Vec<&(f64, u64)> = points
        .iter()
        .filter(|(t, _)| (from..=to).contains(t))
        .collect();
    let mut rates: Vec<f64> = inside
        .windows(2)
        .filter(|w| w[1].0 > w[0].0)
        .map(|w| w[1].1.saturating_sub(w[0].1) as f64 / (w[1].0 - w[0].0))
        .collect();
    if rates.is_empty() {
        return None;
    }
    rates.sort_by(f64::total_cmp);
    Some(rates[rates.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_runs_from_the_first_push_to_the_last_backlogged_seq() {
        // Cleared at t=100 with 1,000 accepted and 200 delivered; the breaker's probe goes at
        // t=104; 1,000 pushes a second from there (new intake included).
        let mut d = DrainTracker::new(100.0, 200, 200, 1000);
        assert!(!d.observe(102.0, 200, 200), "still waiting for the probe");
        assert!(!d.observe(104.0, 201, 201));
        assert!(!d.observe(104.5, 701, 650));
        assert!(d.observe(105.0, 1201, 1001));
        assert!(d.observe(106.0, 2201, 2000), "stays done");
        let r = d.report();
        assert_eq!(r.backlog_at_recovery, 800);
        assert_eq!(r.first_push_after_s, Some(4.0));
        assert_eq!(r.drain_s, Some(1.0));
        assert_eq!(r.pushes, 1000);
        assert_eq!(r.rate_per_s, Some(1000.0));
        assert_eq!(r.backlog_rate_per_s, Some(800.0));
        assert!(r.done);
        assert_eq!(d.span(), Some((104.0, 105.0)));
    }

    #[test]
    fn an_undrained_backlog_reports_no_rate() {
        let mut d = DrainTracker::new(0.0, 0, 0, 10);
        assert!(!d.observe(1.0, 5, 5));
        let r = d.report();
        assert!(!r.done);
        assert_eq!((r.rate_per_s, r.first_push_after_s), (None, Some(1.0)));
        let empty = DrainTracker::new(0.0, 7, 10, 10);
        assert!(empty.report().done, "nothing waiting is drained at once");
    }

    #[test]
    fn steady_rate_is_the_median_second() {
        let pts = [
            (0.0, 0),
            (1.0, 100),
            (2.0, 1100),
            (3.0, 2100),
            (4.0, 2200),
            (9.0, 9999),
        ];
        assert_eq!(steady_rate(&pts, 0.0, 4.0), Some(1000.0));
        assert_eq!(steady_rate(&pts, 0.5, 1.5), None);
    }
}
