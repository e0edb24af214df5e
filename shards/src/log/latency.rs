//! How long the storage thread's group commits take, in two parts: writing a batch into fjall
//! (its journal and memtables: where waits on fjall's locks show) and the `fdatasync` after it
//! (the disk). Each is a fixed-bucket histogram (Prometheus style: cumulative when read), kept in
//! atomics that only the shard's storage thread writes, plus the sum and the longest. A client
//! waits for both in every `202`, so they are the log's share of accept latency, readable beside
//! the load test's own histograms.

use std::sync::atomic::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};

use serde::Serialize;

/// Upper bounds (inclusive, microseconds) of the histogram's buckets; one more bucket counts
/// everything slower than the last.
pub const LATENCY_BUCKETS_MICROS: [u64; 16] = [
    20, 50, 100, 200, 300, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000,
    500_000, 1_000_000,
];

const BUCKETS: usize = LATENCY_BUCKETS_MICROS.len() + 1;

/// The storage thread's side: records each duration.
#[derive(Debug, Default)]
pub(crate) struct LatencyHistogram {
    counts: [AtomicU64; BUCKETS],
    sum_micros: AtomicU64,
    max_micros: AtomicU64,
}

impl LatencyHistogram {
    pub(crate) fn record(&self, micros: u64) {
        let i = LATENCY_BUCKETS_MICROS.partition_point(|&bound| bound < micros);
        // Release, read with Acquire: a reader that sees this count also sees whatever the
        // storage thread recorded before it (a commit's write before its fsync).
        self.counts[i].fetch_add(1, Release);
        self.sum_micros.fetch_add(micros, Relaxed);
        self.max_micros.fetch_max(micros, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> LogLatency {
        LogLatency {
            counts: std::array::from_fn(|i| self.counts[i].load(Acquire)),
            sum_micros: self.sum_micros.load(Relaxed),
            max_micros: self.max_micros.load(Relaxed),
        }
    }
}

/// A snapshot of [`LatencyHistogram`]: per-bucket counts (bucket `i` holds durations up to
/// `LATENCY_BUCKETS_MICROS[i]`, the last one everything slower), summable across shards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogLatency {
    pub counts: [u64; BUCKETS],
    pub sum_micros: u64,
    pub max_micros: u64,
}

/// [`LogLatency`] as the stats API shows it: cumulative counts per upper bound, as a
/// Prometheus histogram has them (`le` in microseconds, `"+Inf"` last).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LogLatencyView {
    pub count: u64,
    pub sum_micros: u64,
    pub max_micros: u64,
    pub buckets: Vec<(String, u64)>,
}

impl LogLatency {
    /// Adds another shard's snapshot (the max is the larger one).
    pub fn add(&mut self, o: &LogLatency) {
        for (a, b) in self.counts.iter_mut().zip(o.counts) {
            *a += b;
        }
        self.sum_micros += o.sum_micros;
        self.max_micros = self.max_micros.max(o.max_micros);
    }

    /// Durations recorded.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Durations longer than `micros` (which should be one of the bucket bounds).
    #[must_use]
    pub fn slower_than(&self, micros: u64) -> u64 {
        let i = LATENCY_BUCKETS_MICROS.partition_point(|&bound| bound <= micros);
        self.counts[i..].iter().sum()
    }

    /// The cumulative form the stats API serializes.
    #[must_use]
    pub fn view(&self) -> LogLatencyView {
        let mut running = 0;
        let mut buckets = Vec::with_capacity(BUCKETS);
        for (i, c) in self.counts.iter().enumerate() {
            running += c;
            let le = LATENCY_BUCKETS_MICROS
                .get(i)
                .map_or_else(|| "+Inf".to_string(), u64::to_string);
            buckets.push((le, running));
        }
        LogLatencyView {
            count: running,
            sum_micros: self.sum_micros,
            max_micros: self.max_micros,
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_into_the_bucket_whose_bound_is_inclusive() {
        let h = LatencyHistogram::default();
        for micros in [0, 100, 101, 999, 1_000, 1_001, 2_000_000] {
            h.record(micros);
        }
        let s = h.snapshot();
        assert_eq!(s.counts[0], 1, "0 is at most 20 µs");
        assert_eq!(s.counts[2], 1, "100 is at most 100 µs");
        assert_eq!(s.counts[3], 1, "101 goes to the 200 µs bucket");
        assert_eq!(s.counts[6], 2, "999 and 1000 are at most 1 ms");
        assert_eq!(s.counts[7], 1, "1001 goes to the 2 ms bucket");
        assert_eq!(s.counts[BUCKETS - 1], 1, "2 s is past the last bound");
        assert_eq!(s.count(), 7);
        assert_eq!(s.max_micros, 2_000_000);
        assert_eq!(s.sum_micros, 2_003_201);
        assert_eq!(s.slower_than(1_000), 2);
        assert_eq!(s.slower_than(100), 5);
    }

    #[test]
    fn adds_across_shards_and_reads_cumulative() {
        let (a, b) = (LatencyHistogram::default(), LatencyHistogram::default());
        a.record(150);
        a.record(7_000);
        b.record(150);
        b.record(60_000);
        let mut total = a.snapshot();
        total.add(&b.snapshot());
        assert_eq!(total.count(), 4);
        assert_eq!(total.max_micros, 60_000);
        let view = total.view();
        assert_eq!(view.count, 4);
        assert_eq!(view.buckets.len(), BUCKETS);
        assert_eq!(view.buckets[3], ("200".to_string(), 2));
        assert_eq!(view.buckets[9], ("10000".to_string(), 3));
        assert_eq!(view.buckets[11], ("50000".to_string(), 3));
        assert_eq!(view.buckets[12], ("100000".to_string(), 4));
        assert_eq!(view.buckets[BUCKETS - 1], ("+Inf".to_string(), 4));
    }
}
