//! The ledger phase: after the load, poll the APNs simulator (in-process or through its
//! control endpoint) until every accepted seq arrived as often as expected or the drain
//! timeout passes, then account for each seq: received, lost, short, duplicated, unexpected.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use clarion_sim::apns::{Ledger, SimControl, SimHandle};
use clarion_sim::fcm::FcmSimHandle;
use clarion_sim::webpush::WebPushSimHandle;

/// How often the simulator's ledger is read while waiting for deliveries.
const LEDGER_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Seqs listed by number in a report, per category.
const SAMPLE_SEQS: usize = 10;

/// Where the load generator reads what the APNs simulator received.
#[derive(Clone, Copy)]
pub enum SimLink<'a> {
    /// No simulator: the ledger phase is skipped.
    None,
    /// A simulator in this process.
    InProcess(&'a SimHandle),
    /// A simulator's control endpoint (`apns-sim --control ADDR`).
    Control(SocketAddr),
    /// The APNs, FCM and Web Push simulators in this process (a platform mix): their ledgers
    /// read as one.
    Mix {
        apns: &'a SimHandle,
        fcm: Option<&'a FcmSimHandle>,
        webpush: Option<&'a WebPushSimHandle>,
    },
}

impl SimLink<'_> {
    /// Clears the simulator's counters, ledger and recent pushes.
    pub async fn reset(&self) -> anyhow::Result<()> {
        match self {
            SimLink::None => Ok(()),
            SimLink::InProcess(h) => {
                h.reset();
                Ok(())
            }
            SimLink::Control(addr) => Ok(SimControl::new(*addr).reset().await?),
            SimLink::Mix { apns, fcm, webpush } => {
                apns.reset();
                fcm.iter().for_each(|f| f.reset());
                webpush.iter().for_each(|w| w.reset());
                Ok(())
            }
        }
    }

    async fn ledger(&self, range: Range<u64>) -> anyhow::Result<Option<Ledger>> {
        Ok(match self {
            SimLink::None => None,
            SimLink::InProcess(h) => Some(h.ledger_range(range)),
            SimLink::Control(addr) => Some(SimControl::new(*addr).ledger(Some(range)).await?),
            SimLink::Mix { apns, fcm, webpush } => {
                let mut all = apns.ledger_range(range.clone());
                if let Some(f) = fcm {
                    all.merge(&f.ledger_range(range.clone()));
                }
                if let Some(w) = webpush {
                    all.merge(&w.ledger_range(range));
                }
                Some(all)
            }
        })
    }
}

/// Every accepted notification accounted for.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LedgerReport {
    /// Notifications answered 202.
    pub accepted: u64,
    /// Pushes expected per accepted notification (devices per user).
    pub expected_per_seq: u32,
    /// Accepted seqs the simulator received at least once.
    pub received: u64,
    /// Accepted seqs never received.
    pub lost: u64,
    /// Accepted seqs received fewer times than expected (but at least once).
    pub short: u64,
    /// Seqs received more times than expected.
    pub duplicated: u64,
    /// Seqs of this run received although never answered 202 (e.g. the answer was lost).
    pub unexpected: u64,
    /// Whether every accepted seq arrived before the drain timeout.
    pub drained: bool,
    #[serde(with = "super::serde_secs")]
    pub waited: Duration,
    pub lost_sample: Vec<u64>,
    pub duplicated_sample: Vec<u64>,
    pub unexpected_sample: Vec<u64>,
}

/// Accounts for `accepted` (sorted, distinct seqs) against `ledger` over this run's `range`.
pub fn compare(
    accepted: &[u64],
    ledger: &Ledger,
    range: Range<u64>,
    expected: u32,
) -> LedgerReport {
    let mut r = LedgerReport {
        accepted: accepted.len() as u64,
        expected_per_seq: expected,
        ..LedgerReport::default()
    };
    for &seq in accepted {
        match ledger.count(seq) {
            0 => {
                r.lost += 1;
                if r.lost_sample.len() < SAMPLE_SEQS {
                    r.lost_sample.push(seq);
                }
            }
            n => {
                r.received += 1;
                if n < expected {
                    r.short += 1;
                }
            }
        }
    }
    for (seq, count) in ledger.entries() {
        if !range.contains(&seq) {
            continue;
        }
        if count > expected {
            r.duplicated += 1;
            if r.duplicated_sample.len() < SAMPLE_SEQS {
                r.duplicated_sample.push(seq);
            }
        }
        if accepted.binary_search(&seq).is_err() {
            r.unexpected += 1;
            if r.unexpected_sample.len() < SAMPLE_SEQS {
                r.unexpected_sample.push(seq);
            }
        }
    }
    r.drained = r.lost == 0 && r.short == 0;
    r
}

/// Polls until drained or `drain_timeout`; `None` when there is no simulator to ask.
pub(crate) async fn await_ledger(
    link: SimLink<'_>,
    accepted: &[u64],
    range: Range<u64>,
    expected: u32,
    drain_timeout: Duration,
) -> anyhow::Result<Option<(LedgerReport, Histogram<u64>)>> {
    let started = Instant::now();
    loop {
        let Some(ledger) = link.ledger(range.clone()).await? else {
            return Ok(None);
        };
        let mut report = compare(accepted, &ledger, range.clone(), expected);
        if report.drained || started.elapsed() >= drain_timeout {
            report.waited = started.elapsed();
            return Ok(Some((report, ledger.e2e_us().clone())));
        }
        tokio::time::sleep(LEDGER_POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clarion_sim::apns::LedgerWire;

    fn ledger(entries: &[(u64, u32)]) -> Ledger {
        let wire = LedgerWire {
            counts: entries
                .iter()
                .map(|(s, c)| [*s, 1, u64::from(*c)])
                .collect(),
            receipts: entries.iter().map(|(_, c)| u64::from(*c)).sum(),
            e2e_hist: String::new(),
        };
        Ledger::from_wire(&wire).expect("ledger")
    }

    #[test]
    fn every_seq_lands_in_exactly_the_right_bucket() {
        // Accepted 100..110. 103 lost, 105 twice, 107 never accepted but seen, 300 is another run.
        let accepted: Vec<u64> = (100..110).filter(|s| *s != 107).collect();
        let seen: Vec<(u64, u32)> = (100..110)
            .filter(|s| *s != 103)
            .map(|s| (s, if s == 105 { 2 } else { 1 }))
            .chain([(300, 1)])
            .collect();
        let r = compare(&accepted, &ledger(&seen), 100..110, 1);
        assert_eq!(r.accepted, 9);
        assert_eq!(r.received, 8);
        assert_eq!(r.lost, 1);
        assert_eq!(r.lost_sample, vec![103]);
        assert_eq!(r.duplicated, 1);
        assert_eq!(r.duplicated_sample, vec![105]);
        assert_eq!(r.unexpected, 1);
        assert_eq!(r.unexpected_sample, vec![107]);
        assert!(!r.drained);
        assert_eq!(r.received + r.lost, r.accepted);
    }

    #[test]
    fn multi_device_fanout_expects_several_receipts_per_seq() {
        let accepted = vec![1, 2, 3];
        let r = compare(&accepted, &ledger(&[(1, 2), (2, 1), (3, 3)]), 0..10, 2);
        assert_eq!((r.received, r.short, r.duplicated, r.lost), (3, 1, 1, 0));
        assert!(!r.drained);
        let r = compare(&accepted, &ledger(&[(1, 2), (2, 2), (3, 2)]), 0..10, 2);
        assert!(r.drained);
        assert_eq!(r.duplicated, 0);
    }
}
