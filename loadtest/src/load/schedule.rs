//! The open-loop schedule: when each request is *intended* to go out, fixed before the run and
//! independent of how fast the server answers (the wrk2 approach). A piecewise-constant rate
//! (a base rate, with optional bursts of a higher rate for `length` every `every`) is
//! integrated exactly, so request `k` is sent at the instant the expected count reaches `k`.

use std::time::Duration;

/// Periodic bursts: from `every`, `2 * every`, ... the rate is `rate` for `length`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Burst {
    /// Requests (or notifications, see `LoadConfig::rate`) per second during a burst.
    pub rate: f64,
    /// Time between burst starts; the first burst starts at `every`.
    pub every: Duration,
    /// How long each burst lasts; shorter than `every`.
    pub length: Duration,
}

impl Burst {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err("burst rate must be positive".into());
        }
        if self.length.is_zero() || self.length >= self.every {
            return Err("burst length must be positive and shorter than its period".into());
        }
        Ok(())
    }
}

/// Intended send offsets from the start of a phase, in order.
#[derive(Clone, Debug)]
pub struct Schedule {
    base_rate: f64,
    burst: Option<Burst>,
    end: f64,
    /// Segment number: 0 is `[0, every)`; for p >= 1, `2p - 1` is burst p and `2p` the base
    /// rate after it. Without bursts there is only segment 0, up to the end.
    seg: u64,
    seg_start: f64,
    seg_end: f64,
    seg_rate: f64,
    /// Expected event count at `seg_start`.
    count_at_seg_start: f64,
    next_k: u64,
}

impl Schedule {
    /// Events at `rate` per second for `duration`, shaped by `burst`. `rate` must be positive.
    pub fn new(rate: f64, duration: Duration, burst: Option<Burst>) -> Self {
        let mut s = Schedule {
            base_rate: rate,
            burst,
            end: duration.as_secs_f64(),
            seg: 0,
            seg_start: 0.0,
            seg_end: 0.0,
            seg_rate: rate,
            count_at_seg_start: 0.0,
            next_k: 0,
        };
        s.enter_segment(0, 0.0);
        s
    }

    /// Sets up segment `seg`, at whose start `count` events were expected.
    fn enter_segment(&mut self, seg: u64, count: f64) {
        self.seg = seg;
        self.count_at_seg_start = count;
        let (start, end, rate) = match self.burst {
            None => (0.0, f64::INFINITY, self.base_rate),
            Some(b) => {
                let every = b.every.as_secs_f64();
                let len = b.length.as_secs_f64();
                let p = seg.div_ceil(2) as f64;
                match seg {
                    0 => (0.0, every, self.base_rate),
                    s if s % 2 == 1 => (p * every, p * every + len, b.rate),
                    _ => (p * every + len, (p + 1.0) * every, self.base_rate),
                }
            }
        };
        self.seg_start = start;
        self.seg_end = end.min(self.end);
        self.seg_rate = rate;
    }

    /// The number of events this schedule yields in all.
    pub fn total(&self) -> u64 {
        self.clone().count() as u64
    }
}

impl Iterator for Schedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        loop {
            let k = self.next_k as f64;
            let t = self.seg_start + (k - self.count_at_seg_start) / self.seg_rate;
            if t < self.seg_end {
                self.next_k += 1;
                return Some(Duration::from_secs_f64(t.max(0.0)));
            }
            if self.seg_end >= self.end {
                return None;
            }
            let count = self.count_at_seg_start + (self.seg_end - self.seg_start) * self.seg_rate;
            self.enter_segment(self.seg + 1, count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(d: Duration) -> f64 {
        d.as_secs_f64()
    }

    #[test]
    fn constant_rate_is_evenly_spaced_and_counts_rate_times_duration() {
        let times: Vec<Duration> = Schedule::new(100.0, Duration::from_secs(2), None).collect();
        assert_eq!(times.len(), 200);
        assert_eq!(times[0], Duration::ZERO);
        for w in times.windows(2) {
            assert!((secs(w[1]) - secs(w[0]) - 0.01).abs() < 1e-9);
        }
        assert!(secs(times[199]) < 2.0);
    }

    #[test]
    fn bursts_raise_the_rate_only_inside_their_window() {
        let burst = Burst {
            rate: 1000.0,
            every: Duration::from_secs(1),
            length: Duration::from_millis(200),
        };
        let times: Vec<f64> = Schedule::new(100.0, Duration::from_secs(3), Some(burst))
            .map(secs)
            .collect();
        // 0..1 s at 100/s, then per second: 200 ms at 1000/s + 800 ms at 100/s.
        let expected = 100.0 + 2.0 * (200.0 + 80.0);
        assert!(
            (times.len() as f64 - expected).abs() <= 1.0,
            "{}",
            times.len()
        );
        let in_burst = times.iter().filter(|t| (1.0..1.2).contains(*t)).count();
        let after = times.iter().filter(|t| (1.2..2.0).contains(*t)).count();
        assert!((199..=201).contains(&in_burst), "{in_burst}");
        assert!((79..=81).contains(&after), "{after}");
        assert!(times.windows(2).all(|w| w[1] > w[0]), "strictly increasing");
        let gap = times
            .iter()
            .zip(&times[1..])
            .find(|(a, _)| (1.05..1.1).contains(*a));
        let (a, b) = gap.expect("a gap inside the burst");
        assert!((b - a - 0.001).abs() < 1e-9);
    }

    #[test]
    fn total_matches_iteration_and_validation_catches_bad_bursts() {
        let s = Schedule::new(33.3, Duration::from_millis(1500), None);
        assert_eq!(s.total(), 50);
        let bad = Burst {
            rate: 10.0,
            every: Duration::from_secs(1),
            length: Duration::from_secs(1),
        };
        assert!(bad.validate().is_err());
        let ok = Burst {
            rate: 10.0,
            every: Duration::from_secs(2),
            length: Duration::from_secs(1),
        };
        assert!(ok.validate().is_ok());
    }
}
