//! How long the storage thread's group-commit `fdatasync`s take: a fixed-bucket histogram
//! (Prometheus style: cumulative when read), kept in atomics that only the shard's storage thread
//! writes, plus their sum and the longest. A client waits for one of these in every `202`, so
//! this is the disk's share of accept latency, readable beside the load test's own histograms.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// Upper bounds (inclusive, microseconds) of the histogram's buckets; one more bucket counts
/// everything slower than the last.
pub const FSYNC_BUCKETS_MICROS: [u64; 14] = [
    100, 200, 300, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000,
    1_000_000,
];

const BUCKETS: usize = FSYNC_BUCKETS_MICROS.len() + 1;

/// The storage thread's side: records each fsync's duration.
#[derive(Debug, Default)]
pub(crate) struct FsyncHistogram {
    counts: [AtomicU64; BUCKETS],
    sum_micros: AtomicU64,
    max_micros: AtomicU64,
}

impl FsyncHistogram {
    pub(crate) fn record(&self, micros: u64) {
        let i = FSYNC_BUCKETS_MICROS.partition_point(|&bound| bound < micros);
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(micros, Relaxed);
        self.max_micros.fetch_max(micros, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> FsyncLatency {
        FsyncLatency {
            counts: std::array::from_fn(|i| self.counts[i].load(Relaxed)),
            sum_micros: self.sum_micros.load(Relaxed),
            max_micros: self.max_micros.load(Relaxed),
        }
    }
}

/// A snapshot of [`FsyncHistogram`]: per-bucket counts (bucket `i` holds durations up to
/// `FSYNC_BUCKETS_MICROS[i]`, the last one everything slower), summable across shards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsyncLatency {
    pub counts: [u64; BUCKETS],
    pub sum_micros: u64,
    pub max_micros: u64,
}

/// [`FsyncLatency`] as the stats API shows it: cumulative counts per upper bound, as a
/// Prometheus histogram has them (`le` in microseconds, `"+Inf"` last).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FsyncLatencyView {
    pub count: u64,
    pub sum_micros: u64,
    pub max_micros: u64,
    pub buckets: Vec<(String, u64)>,
}

impl FsyncLatency {
    /// Adds another shard's snapshot (the max is the larger one).
    pub fn add(&mut self, o: &FsyncLatency) {
        for (a, b) in self.counts.iter_mut().zip(o.counts) {
            *a += b;
        }
        self.sum_micros += o.sum_micros;
        self.max_micros = self.max_micros.max(o.max_micros);
    }

    /// fsyncs recorded.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// fsyncs that took longer than `micros` (which should be one of the bucket bounds).
    #[must_use]
    pub fn slower_than(&self, micros: u64) -> u64 {
        let i = FSYNC_BUCKETS_MICROS.partition_point(|&bound| bound <= micros);
        self.counts[i..].iter().sum()
    }

    /// The cumulative form the stats API serializes.
    #[must_use]
    pub fn view(&self) -> FsyncLatencyView {
        let mut running = 0;
        let mut buckets = Vec::with_capacity(BUCKETS);
        for (i, c) in self.counts.iter().enumerate() {
            running += c;
            let le = FSYNC_BUCKETS_MICROS
                .get(i)
                .map_or_else(|| "+Inf".to_string(), u64::to_string);
            buckets.push((le, running));
        }
        FsyncLatencyView {
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
        let h = FsyncHistogram::default();
        for micros in [0, 100, 101, 999, 1_000, 1_001, 2_000_000] {
            h.record(micros);
        }
        let s = h.snapshot();
        assert_eq!(s.counts[0], 2, "0 and 100 are at most 100 µs");
        assert_eq!(s.counts[1], 1, "101 goes to the 200 µs bucket");
        assert_eq!(s.counts[4], 2, "999 and 1000 are at most 1 ms");
        assert_eq!(s.counts[5], 1, "1001 goes to the 2 ms bucket");
        assert_eq!(s.counts[BUCKETS - 1], 1, "2 s is past the last bound");
        assert_eq!(s.count(), 7);
        assert_eq!(s.max_micros, 2_000_000);
        assert_eq!(s.sum_micros, 2_003_201);
        assert_eq!(s.slower_than(1_000), 2);
        assert_eq!(s.slower_than(100), 5);
    }

    #[test]
    fn adds_across_shards_and_reads_cumulative() {
        let (a, b) = (FsyncHistogram::default(), FsyncHistogram::default());
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
        assert_eq!(view.buckets[1], ("200".to_string(), 2));
        assert_eq!(view.buckets[7], ("10000".to_string(), 3));
        assert_eq!(view.buckets[9], ("50000".to_string(), 3));
        assert_eq!(view.buckets[10], ("100000".to_string(), 4));
        assert_eq!(view.buckets[BUCKETS - 1], ("+Inf".to_string(), 4));
    }
}
