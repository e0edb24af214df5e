//! The load-test ledger: how many times each `lt_seq` was accepted by the simulator (so losses
//! and duplicates are visible) and the end-to-end latency histogram (`now - lt_ts`, in µs).
//!
//! On the wire (`GET /ledger`) it is [`LedgerWire`]: counts run-length encoded as
//! `[first_seq, run_length, count]` triples over consecutive seqs with the same count (a clean
//! run of a million seqs is one triple), the histogram as base64 of HdrHistogram's V2 format.

use std::collections::BTreeMap;
use std::ops::Range;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::config::SimError;
use super::request::LoadTestKeys;
use crate::histogram::{decode_base64_v2, encode_base64_v2, latency_histogram};

/// Seqs per page of [`SeqCounts`].
const PAGE: u64 = 4096;

/// Receipt counts by seq, in pages of [`PAGE`] consecutive seqs. Seqs are dense integers, so this
/// is both smaller than a hash map and free of its growth step, which rehashed every entry at
/// once and stalled the simulator for tens of milliseconds at a million seqs.
#[derive(Clone, Debug, Default)]
struct SeqCounts {
    pages: BTreeMap<u64, Box<[u32]>>,
    distinct: u64,
}

impl SeqCounts {
    fn slot(&mut self, seq: u64) -> &mut u32 {
        let page = self
            .pages
            .entry(seq / PAGE)
            .or_insert_with(|| vec![0; PAGE as usize].into_boxed_slice());
        &mut page[(seq % PAGE) as usize]
    }

    fn add(&mut self, seq: u64, n: u32) {
        let slot = self.slot(seq);
        let first = *slot == 0;
        *slot = slot.saturating_add(n);
        if first && n > 0 {
            self.distinct += 1;
        }
    }

    fn get(&self, seq: u64) -> u32 {
        self.pages
            .get(&(seq / PAGE))
            .map_or(0, |p| p[(seq % PAGE) as usize])
    }

    /// `(seq, count)` for every seq received, ascending.
    fn iter(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.pages.iter().flat_map(|(page, counts)| {
            counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(move |(i, c)| (page * PAGE + i as u64, *c))
        })
    }
}

/// Receipts per seq, and end-to-end latency.
#[derive(Clone, Debug)]
pub struct Ledger {
    counts: SeqCounts,
    receipts: u64,
    e2e_us: Histogram<u64>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            counts: SeqCounts::default(),
            receipts: 0,
            e2e_us: latency_histogram(),
        }
    }
}

/// The JSON form of a [`Ledger`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerWire {
    /// `[first_seq, run_length, count]` over ascending seqs.
    pub counts: Vec<[u64; 3]>,
    /// Receipts in all (sum of counts).
    pub receipts: u64,
    /// Base64 of the V2-serialized end-to-end histogram (µs).
    pub e2e_hist: String,
}

impl Ledger {
    /// Records one accepted payload's load-test keys at unix time `now_ns`.
    pub(crate) fn record(&mut self, keys: LoadTestKeys, now_ns: u64) {
        if let Some(seq) = keys.seq {
            self.counts.add(seq, 1);
            self.receipts += 1;
        }
        if let Some(ts) = keys.ts_ns {
            self.e2e_us
                .saturating_record(now_ns.saturating_sub(ts) / 1_000);
        }
    }

    /// Records a message of another simulator (FCM, Web Push) whose data carried `lt_seq` and
    /// `lt_ts` (read as numbers or digit strings by the caller).
    pub(crate) fn record_seq(&mut self, seq: Option<u64>, ts_ns: Option<u64>, now_ns: u64) {
        self.record(LoadTestKeys { seq, ts_ns }, now_ns);
    }

    /// Adds `other`'s receipts and latencies (the ledgers of several simulators, one per
    /// channel, as one).
    pub fn merge(&mut self, other: &Ledger) {
        for (seq, c) in other.counts.iter() {
            self.counts.add(seq, c);
        }
        self.receipts += other.receipts;
        let _ = self.e2e_us.add(&other.e2e_us);
    }

    /// How many times `seq` was received.
    pub fn count(&self, seq: u64) -> u32 {
        self.counts.get(seq)
    }

    /// Distinct seqs received.
    pub fn distinct(&self) -> u64 {
        self.counts.distinct
    }

    /// Receipts in all, duplicates included.
    pub fn receipts(&self) -> u64 {
        self.receipts
    }

    /// Seqs received more than once.
    pub fn duplicated(&self) -> u64 {
        self.counts.iter().filter(|(_, c)| *c > 1).count() as u64
    }

    /// `(seq, count)` in ascending seq order.
    pub fn entries(&self) -> Vec<(u64, u32)> {
        self.counts.iter().collect()
    }

    /// End-to-end latency (intended send time to arrival here), in microseconds.
    pub fn e2e_us(&self) -> &Histogram<u64> {
        &self.e2e_us
    }

    /// The same ledger with only the seqs in `range` (the histogram is kept whole).
    pub fn restricted_to(&self, range: Range<u64>) -> Ledger {
        let mut counts = SeqCounts::default();
        let mut receipts = 0;
        for (seq, c) in self.counts.iter().filter(|(s, _)| range.contains(s)) {
            counts.add(seq, c);
            receipts += u64::from(c);
        }
        Ledger {
            counts,
            receipts,
            e2e_us: self.e2e_us.clone(),
        }
    }

    pub fn to_wire(&self) -> Result<LedgerWire, SimError> {
        let mut runs: Vec<[u64; 3]> = Vec::new();
        for (seq, count) in self.entries() {
            match runs.last_mut() {
                Some([first, len, c]) if *first + *len == seq && *c == u64::from(count) => {
                    *len += 1
                }
                _ => runs.push([seq, 1, u64::from(count)]),
            }
        }
        let e2e_hist = encode_base64_v2(&self.e2e_us).map_err(SimError::Decode)?;
        Ok(LedgerWire {
            counts: runs,
            receipts: self.receipts,
            e2e_hist,
        })
    }

    pub fn from_wire(wire: &LedgerWire) -> Result<Ledger, SimError> {
        let mut counts = SeqCounts::default();
        for [first, len, count] in &wire.counts {
            let count = u32::try_from(*count).map_err(|_| SimError::Decode("count".into()))?;
            for seq in *first..first.saturating_add(*len) {
                counts.add(seq, count);
            }
        }
        let e2e_us = if wire.e2e_hist.is_empty() {
            latency_histogram()
        } else {
            decode_base64_v2(&wire.e2e_hist).map_err(SimError::Decode)?
        };
        Ok(Ledger {
            counts,
            receipts: wire.receipts,
            e2e_us,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seq: u64, ts_ns: Option<u64>) -> LoadTestKeys {
        LoadTestKeys {
            seq: Some(seq),
            ts_ns,
        }
    }

    #[test]
    fn counts_duplicates_and_records_latency() {
        let mut l = Ledger::default();
        l.record(keys(1, Some(1_000_000)), 3_000_000);
        l.record(keys(2, None), 0);
        l.record(keys(2, None), 0);
        l.record(
            LoadTestKeys {
                seq: None,
                ts_ns: Some(0),
            },
            5_000_000,
        );
        assert_eq!((l.count(1), l.count(2), l.count(3)), (1, 2, 0));
        assert_eq!((l.distinct(), l.receipts(), l.duplicated()), (2, 3, 1));
        assert_eq!(l.e2e_us().len(), 2);
        assert_eq!(l.e2e_us().min(), 2_000);
        assert!(l.e2e_us().equivalent(l.e2e_us().max(), 5_000));
    }

    #[test]
    fn wire_form_is_run_length_encoded_and_roundtrips() {
        let mut l = Ledger::default();
        for seq in 100..200 {
            l.record(keys(seq, Some(0)), 2_000_000);
        }
        l.record(keys(150, None), 0);
        l.record(keys(500, None), 0);
        let wire = l.to_wire().expect("wire");
        assert_eq!(
            wire.counts,
            vec![[100, 50, 1], [150, 1, 2], [151, 49, 1], [500, 1, 1]]
        );
        let json = serde_json::to_string(&wire).expect("json");
        let back = Ledger::from_wire(&serde_json::from_str(&json).expect("parse")).expect("decode");
        assert_eq!(back.entries(), l.entries());
        assert_eq!(back.receipts(), 102);
        assert_eq!(back.e2e_us().len(), 100);
    }

    #[test]
    fn restriction_keeps_only_the_range() {
        let mut l = Ledger::default();
        for seq in 0..10 {
            l.record(keys(seq, None), 0);
        }
        let r = l.restricted_to(3..5);
        assert_eq!(r.entries(), vec![(3, 1), (4, 1)]);
        assert_eq!(r.receipts(), 2);
    }
}
