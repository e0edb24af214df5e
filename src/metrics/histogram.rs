//! Fixed-bucket latency histograms kept per shard in plain cells (recorded on the shard's own
//! core, read there for a snapshot), and their summable snapshots.

use std::cell::Cell;
use std::time::Duration;

use clarion_shards::log::{LATENCY_BUCKETS_MICROS, LogLatency};

/// Upper bounds (µs) for request-scale latencies (accept, provider requests, the log's writes
/// and fsyncs): 20 µs to 1 s, the log's own buckets.
pub const REQUEST_BUCKETS_MICROS: &[u64] = &LATENCY_BUCKETS_MICROS;

/// Upper bounds (µs) for end-to-end latency: from a millisecond to an hour, because a provider's
/// outage turns into a delay of minutes that capacity planners need to read, not a `+Inf`.
pub const END_TO_END_BUCKETS_MICROS: &[u64] = &[
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
    900_000_000,
    3_600_000_000,
];

/// One shard's histogram: a count per bucket (the last one past every bound) and the sum.
pub struct LocalHistogram {
    bounds: &'static [u64],
    counts: Box<[Cell<u64>]>,
    sum_micros: Cell<u64>,
}

impl LocalHistogram {
    pub fn new(bounds: &'static [u64]) -> LocalHistogram {
        LocalHistogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| Cell::new(0)).collect(),
            sum_micros: Cell::new(0),
        }
    }

    pub fn record(&self, d: Duration) {
        self.record_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn record_micros(&self, micros: u64) {
        let i = self.bounds.partition_point(|&b| b < micros);
        if let Some(c) = self.counts.get(i) {
            c.set(c.get() + 1);
        }
        self.sum_micros
            .set(self.sum_micros.get().saturating_add(micros));
    }

    pub fn snapshot(&self) -> Histogram {
        Histogram {
            bounds: self.bounds,
            counts: self.counts.iter().map(Cell::get).collect(),
            sum_micros: self.sum_micros.get(),
        }
    }
}

/// A histogram's counts per bucket (not cumulative) and sum, summable across shards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    pub bounds: &'static [u64],
    pub counts: Vec<u64>,
    pub sum_micros: u64,
}

impl Histogram {
    /// Adds another shard's snapshot of the same histogram (an empty default takes its shape).
    pub fn add(&mut self, o: &Histogram) {
        if self.counts.is_empty() {
            self.bounds = o.bounds;
            self.counts = vec![0; o.counts.len()];
        }
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.sum_micros = self.sum_micros.saturating_add(o.sum_micros);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl From<&LogLatency> for Histogram {
    fn from(l: &LogLatency) -> Histogram {
        Histogram {
            bounds: REQUEST_BUCKETS_MICROS,
            counts: l.counts.to_vec(),
            sum_micros: l.sum_micros,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive_and_snapshots_sum() {
        let h = LocalHistogram::new(REQUEST_BUCKETS_MICROS);
        h.record_micros(20);
        h.record_micros(21);
        h.record(Duration::from_secs(5));
        let s = h.snapshot();
        assert_eq!(s.counts.len(), REQUEST_BUCKETS_MICROS.len() + 1);
        assert_eq!(s.counts[0], 1, "20 µs is within the 20 µs bucket");
        assert_eq!(s.counts[1], 1);
        assert_eq!(*s.counts.last().unwrap(), 1, "past every bound");
        assert_eq!(s.sum_micros, 5_000_041);
        let mut total = Histogram::default();
        total.add(&s);
        total.add(&s);
        assert_eq!(total.count(), 6);
        assert_eq!(total.sum_micros, 10_000_082);
    }
}
