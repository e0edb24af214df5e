//! What the simulator counted: requests by status and by reason, connections, GOAWAYs, drops,
//! refused streams ([`SimStats`]), and the last [`RECENT_CAPACITY`] accepted pushes exactly as
//! they arrived ([`ReceivedPush`]), so tests can assert on headers and payloads.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderValue;
use serde::{Deserialize, Serialize};

use super::reason::Reason;
use super::request::PushHead;

/// Accepted pushes kept for inspection; older ones are forgotten.
pub const RECENT_CAPACITY: usize = 1000;
/// Every status the simulator answers, for its per-status counters.
const STATUSES: [u16; 10] = [200, 400, 403, 404, 405, 410, 413, 429, 500, 503];

/// Now, in unix milliseconds.
pub(crate) fn unix_ms() -> u64 {
    unix_ns() / 1_000_000
}

/// Now, in unix nanoseconds.
pub(crate) fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A snapshot of the simulator's counters since start or the last reset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SimStats {
    /// Requests answered or dropped.
    pub requests: u64,
    /// Requests answered 200.
    pub accepted: u64,
    /// Answers by HTTP status (statuses never answered are left out).
    pub by_status: BTreeMap<u16, u64>,
    /// Error answers by reason.
    pub by_reason: BTreeMap<String, u64>,
    /// TLS connections accepted.
    pub connections: u64,
    /// TLS handshakes that failed.
    pub tls_failures: u64,
    /// ECDSA verifications of provider tokens (cache misses).
    pub jwt_verifications: u64,
    /// GOAWAY frames sent by the `goaway_after_requests` fault.
    pub goaways: u64,
    /// Connections closed abruptly by a drop fault.
    pub dropped_connections: u64,
    /// Streams refused (`REFUSED_STREAM`) for exceeding the advertised concurrency.
    pub refused_streams: u64,
    /// Accepted payloads that carried `lt_seq` (duplicates included).
    pub ledger_receipts: u64,
    /// Distinct `lt_seq` values received.
    pub ledger_distinct: u64,
}

/// One accepted push as it arrived.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceivedPush {
    pub token: String,
    /// The `apns-id` echoed (the request's, or the one generated for it).
    pub apns_id: String,
    /// Whether the request carried its own `apns-id`.
    pub apns_id_from_request: bool,
    pub topic: String,
    pub push_type: Option<String>,
    pub priority: Option<u8>,
    pub expiration: Option<String>,
    pub collapse_id: Option<String>,
    /// The JSON payload exactly as sent.
    pub payload: String,
    pub received_unix_ms: u64,
    /// Which connection (numbered from 1 in accept order) carried it.
    pub connection: u64,
}

impl ReceivedPush {
    /// The payload parsed as JSON.
    pub fn payload_json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.payload).ok()
    }
}

/// The live counters behind [`SimStats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    by_status: [AtomicU64; STATUSES.len()],
    by_reason: [AtomicU64; Reason::ALL.len()],
    pub(crate) connections: AtomicU64,
    pub(crate) tls_failures: AtomicU64,
    pub(crate) goaways: AtomicU64,
    pub(crate) dropped_connections: AtomicU64,
    pub(crate) refused_streams: AtomicU64,
}

impl Counters {
    pub(crate) fn count_answer(&self, reason: Option<Reason>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let status = reason.map_or(200, Reason::status);
        if let Some(i) = STATUSES.iter().position(|s| *s == status) {
            self.by_status[i].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(r) = reason {
            self.by_reason[r.index()].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> SimStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let by_status: BTreeMap<u16, u64> = STATUSES
            .iter()
            .zip(&self.by_status)
            .filter(|(_, c)| get(c) > 0)
            .map(|(s, c)| (*s, get(c)))
            .collect();
        let by_reason = Reason::ALL
            .iter()
            .zip(&self.by_reason)
            .filter(|(_, c)| get(c) > 0)
            .map(|(r, c)| (r.as_str().to_string(), get(c)))
            .collect();
        SimStats {
            requests: get(&self.requests),
            accepted: by_status.get(&200).copied().unwrap_or(0),
            by_status,
            by_reason,
            connections: get(&self.connections),
            tls_failures: get(&self.tls_failures),
            goaways: get(&self.goaways),
            dropped_connections: get(&self.dropped_connections),
            refused_streams: get(&self.refused_streams),
            ..SimStats::default()
        }
    }

    pub(crate) fn reset(&self) {
        let all = [
            &self.requests,
            &self.connections,
            &self.tls_failures,
            &self.goaways,
            &self.dropped_connections,
            &self.refused_streams,
        ];
        for c in all
            .into_iter()
            .chain(&self.by_status)
            .chain(&self.by_reason)
        {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// One accepted push as received: the request's own header values and payload bytes, shared
/// with the request rather than copied (a [`ReceivedPush`] is made only when read).
#[derive(Clone, Debug)]
pub(crate) struct RawPush {
    pub(crate) head: PushHead,
    pub(crate) apns_id: HeaderValue,
    pub(crate) apns_id_from_request: bool,
    pub(crate) payload: Bytes,
    pub(crate) received_unix_ms: u64,
    pub(crate) connection: u64,
}

impl RawPush {
    fn to_received(&self) -> ReceivedPush {
        let head = &self.head;
        ReceivedPush {
            token: head.token().to_owned(),
            apns_id: self.apns_id.to_str().unwrap_or_default().to_owned(),
            apns_id_from_request: self.apns_id_from_request,
            topic: head.topic().to_owned(),
            push_type: head.push_type.map(str::to_owned),
            priority: head.priority,
            expiration: head.expiration().map(str::to_owned),
            collapse_id: head.collapse_id().map(str::to_owned),
            payload: String::from_utf8_lossy(&self.payload).into_owned(),
            received_unix_ms: self.received_unix_ms,
            connection: self.connection,
        }
    }
}

/// The last [`RECENT_CAPACITY`] accepted pushes, as received (turned into text only when read,
/// as few are ever read).
#[derive(Default)]
pub(crate) struct RecentLog {
    pushes: Mutex<VecDeque<RawPush>>,
}

impl RecentLog {
    pub(crate) fn push(&self, p: RawPush) {
        let mut q = self.pushes.lock().unwrap_or_else(|e| e.into_inner());
        let evicted = if q.len() >= RECENT_CAPACITY {
            q.pop_front()
        } else {
            None
        };
        q.push_back(p);
        drop(q);
        drop(evicted); // freed outside the lock
    }

    pub(crate) fn snapshot(&self) -> Vec<ReceivedPush> {
        self.pushes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(RawPush::to_received)
            .collect()
    }

    pub(crate) fn clear(&self) {
        self.pushes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(n: u64) -> RawPush {
        RawPush {
            head: PushHead::example(&format!("{n:064x}")),
            apns_id: HeaderValue::from_static("0f8fad5b-d9cb-469f-a165-70867728950e"),
            apns_id_from_request: true,
            payload: Bytes::from_static(b"{\"aps\":{}}"),
            received_unix_ms: n,
            connection: 1,
        }
    }

    #[test]
    fn counters_split_by_status_and_reason_and_reset() {
        let c = Counters::default();
        c.count_answer(None);
        c.count_answer(None);
        c.count_answer(Some(Reason::Unregistered));
        c.count_answer(Some(Reason::BadTopic));
        let s = c.snapshot();
        assert_eq!((s.requests, s.accepted), (4, 2));
        assert_eq!(s.by_status.get(&410), Some(&1));
        assert_eq!(s.by_status.get(&400), Some(&1));
        assert_eq!(s.by_reason.get("BadTopic"), Some(&1));
        assert!(!s.by_status.contains_key(&503));
        c.reset();
        assert_eq!(c.snapshot(), SimStats::default());
    }

    #[test]
    fn recent_log_keeps_only_the_newest() {
        let log = RecentLog::default();
        for n in 0..(RECENT_CAPACITY as u64 + 5) {
            log.push(push(n));
        }
        let s = log.snapshot();
        assert_eq!(s.len(), RECENT_CAPACITY);
        assert_eq!(s[0].payload, "{\"aps\":{}}");
        assert_eq!(s[0].received_unix_ms, 5);
        // Read back as text, field by field.
        let expected = ReceivedPush {
            token: format!("{:064x}", 5),
            apns_id: "0f8fad5b-d9cb-469f-a165-70867728950e".into(),
            apns_id_from_request: true,
            topic: "t".into(),
            push_type: Some("alert".into()),
            priority: Some(10),
            expiration: Some("1700000000".into()),
            collapse_id: None,
            payload: "{\"aps\":{}}".into(),
            received_unix_ms: 5,
            connection: 1,
        };
        assert_eq!(s[0], expected);
        assert_eq!(
            s.last().map(|p| p.received_unix_ms),
            Some(RECENT_CAPACITY as u64 + 4)
        );
    }
}
