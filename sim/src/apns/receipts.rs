//! The receipt log: when asked for ([`super::SimConfig::receipt_log`]), every accepted push that
//! carries an `lt_seq` is kept as a [`Receipt`]: seq, device token, arrival time, and the
//! connection with the time it was made (which client process sent it, when clients are
//! restarted). A test can so check delivery per device and explain each duplicate, which the
//! per-seq [`super::Ledger`] cannot. Off by default: it grows with every push, up to
//! [`MAX_RECEIPTS`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Receipts kept at most (about 100 bytes each): a test run's worth, far past any bounded test.
/// Later receipts are counted in [`ReceiptLog::dropped`] and not kept.
pub const MAX_RECEIPTS: usize = 8 << 20;

/// One accepted push with a load-test seq.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub seq: u64,
    /// The device token of the request's path.
    pub token: String,
    /// Arrival (before any injected latency), unix milliseconds.
    pub at_ms: u64,
    /// The connection that carried it, numbered from 1 in accept order.
    pub connection: u64,
    /// When that connection's TLS handshake completed, unix milliseconds: which client process
    /// sent the push, when clients are restarted.
    pub connected_at_ms: u64,
}

/// Receipts in arrival order.
#[derive(Default)]
pub(crate) struct ReceiptLog {
    entries: Mutex<Vec<Receipt>>,
    dropped: AtomicU64,
}

impl ReceiptLog {
    /// Records a push; `connection` is `(number, handshake completed at unix ms)`.
    pub(crate) fn record(&self, seq: u64, token: &str, at_ms: u64, connection: (u64, u64)) {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if e.len() >= MAX_RECEIPTS {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        e.push(Receipt {
            seq,
            token: token.to_owned(),
            at_ms,
            connection: connection.0,
            connected_at_ms: connection.1,
        });
    }

    /// The receipts from index `from` on (all of them from 0), in arrival order.
    pub(crate) fn since(&self, from: usize) -> Vec<Receipt> {
        let e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.get(from..).map(<[Receipt]>::to_vec).unwrap_or_default()
    }

    /// Receipts not kept because the log was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub(crate) fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.dropped.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_receipts_in_order_and_reads_from_an_index() {
        let log = ReceiptLog::default();
        log.record(1, "a", 10, (1, 5));
        log.record(1, "b", 11, (1, 5));
        log.record(2, "a", 12, (2, 9));
        let all = log.since(0);
        assert_eq!(all.len(), 3);
        assert_eq!(
            (all[1].seq, all[1].token.as_str(), all[1].at_ms),
            (1, "b", 11)
        );
        assert_eq!(log.since(2).len(), 1);
        assert!(log.since(9).is_empty());
        log.clear();
        assert!(log.since(0).is_empty());
        assert_eq!(log.dropped(), 0);
    }
}
