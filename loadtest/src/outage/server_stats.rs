//! The server's own counters, from the `total` of its `GET /v1/stats`: what it accepted,
//! delivered, gave up on (dead, expired), what waits (backlog, windows, in flight) and its
//! circuit breakers. The outage runs read them every second and at the end.

use http::Method;
use serde::{Deserialize, Serialize};

use crate::load::client::ApiClient;

/// The counters of `/v1/stats` the outage runs use (summed over shards).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerCounters {
    pub accepted: u64,
    pub duplicates: u64,
    pub attempts: u64,
    pub sent: u64,
    pub retried: u64,
    pub failed: u64,
    pub dead: u64,
    pub expired: u64,
    /// Refused `503 overloaded` because the shard's log was not keeping up.
    pub rejected_overload: u64,
    /// Refused `503 overloaded` by admission control (more body bytes in service than the
    /// core's adaptive limit).
    pub shed_overload: u64,
    /// Deliveries still to attempt, in the logs (windows and in flight included).
    pub backlog: u64,
    /// The part of it ready in memory (the lanes' windows).
    pub queue_depth: u64,
    pub in_flight: u64,
    /// Notifications held in memory for resident deliveries.
    pub open_notifications: u64,
    pub backlog_scans: u64,
    pub deferred: u64,
    pub breaker_opened: u64,
    pub breakers_open: u64,
    /// Bytes in the logs' memtables (active and sealed), and sealed memtables waiting.
    pub log_memtable_bytes: u64,
    pub log_sealed_memtables: u64,
}

/// `total` of a `/v1/stats` answer.
pub fn parse(body: &[u8]) -> Option<ServerCounters> {
    #[derive(Deserialize)]
    struct Stats {
        total: ServerCounters,
    }
    serde_json::from_slice::<Stats>(body).ok().map(|s| s.total)
}

/// Reads the server's counters; `None` when it does not answer 200 with them.
pub(crate) async fn fetch(client: &ApiClient) -> Option<ServerCounters> {
    let resp = client
        .send(Method::GET, "/v1/stats", Default::default())
        .await
        .ok()?;
    (resp.status == 200).then(|| parse(&resp.body)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_total_and_ignores_the_rest() {
        let body = br#"{"shards":[{"accepted":1}],"total":{"accepted":10,"dead":1,"expired":2,
            "backlog":7,"breakers_open":1,"log_write":{"buckets":[]},"new_counter":5}}"#;
        let c = parse(body).expect("parsed");
        assert_eq!((c.accepted, c.dead, c.expired, c.backlog), (10, 1, 2, 7));
        assert_eq!(c.breakers_open, 1);
        assert_eq!(c.sent, 0, "absent counters read as 0");
        assert_eq!(parse(b"{}"), None);
    }
}
