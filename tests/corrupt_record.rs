//! A stored record that does not decode (a notification, a delivery update, a user) no longer
//! stops the server from starting: each is moved with its raw bytes into the log's quarantine,
//! reported on an error line naming its key, and counted in `GET /v1/stats`; everything else is
//! recovered and served.
mod common;

use std::time::Duration;

use clarion_shards::{Keyspace, LogConfig, WriteBatch};
use clarion_sim::apns::Faults;
use serde_json::json;

#[test]
fn corrupt_records_are_quarantined_reported_and_the_server_starts() {
    let mut h = common::start(1, Faults::default(), "");
    h.register("kept", &[common::token(1)]);
    h.register("damaged", &[common::token(2)]);
    let notify = |h: &common::Harness, seq: u64| {
        let r = h.notify(
            json!({"user_id": "kept", "idempotency_key": format!("q{seq}"),
                                "body": "hi", "data": {"lt_seq": seq}}),
        );
        assert_eq!(r.status, 202, "{}", r.body);
        uuid::Uuid::parse_str(r.body["id"].as_str().unwrap()).unwrap()
    };
    let settled = notify(&h, 0);
    let broken = notify(&h, 1);
    let intact = notify(&h, 2);
    for id in [settled, broken, intact] {
        h.wait_finished(&id.to_string(), Duration::from_secs(10));
    }
    assert!(h.server.terminate().success(), "{}", h.server.log());

    // Damage three records in place, as a bad disk sector or a buggy build would.
    let config = LogConfig {
        dir: h.dir.path().join("data/shards/00"),
        shard: 0,
        fsync: true,
        dedup_window_ms: 86_400_000,
    };
    let (log, _) = clarion_shards::open(config, 0).expect("the log opens before the damage");
    let mut b = WriteBatch::new();
    b.put(Keyspace::Notifications, broken.as_bytes(), b"\x02\xff\xff");
    let update_key = [settled.as_bytes().as_slice(), &0u16.to_be_bytes()].concat();
    b.put(Keyspace::Notifications, &update_key, b"\x02\x99");
    b.put(Keyspace::Users, "damaged", b"\x09{}");
    futures_lite::future::block_on(log.submit(b).unwrap()).unwrap();
    log.join().unwrap();

    h.server.spawn();
    let log = h.server.log();
    let reports: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("moved to quarantine"))
        .collect();
    // The broken notification's delivery update goes with it: 4 entries in all.
    assert_eq!(reports.len(), 4, "one error line per record: {log}");
    for key in [
        format!("notifications/{broken}:"),
        format!("notifications/{broken}/delivery-0: the record of its notification is corrupt"),
        format!("notifications/{settled}/delivery-0"),
        "users/damaged".to_string(),
    ] {
        assert!(
            reports.iter().any(|l| l.contains(&key)),
            "{key} not reported: {reports:?}"
        );
    }
    let stats = h.client().call("GET", "/v1/stats", None);
    assert_eq!(stats.status, 200, "{}", stats.body);
    assert_eq!(stats.body["total"]["log_quarantined"], 4, "{}", stats.body);

    // The rest is served: the intact notification as it was, the one whose update was lost is
    // open again (delivered again: at least once), the quarantined ones are gone from the API.
    assert_eq!(h.status(&intact.to_string())["state"], "finished");
    h.wait_finished(&settled.to_string(), Duration::from_secs(10));
    let r = h
        .client()
        .call("GET", &format!("/v1/notifications/{broken}"), None);
    assert_eq!(r.status, 404, "{}", r.body);
    let r = h.notify(json!({"user_id": "damaged", "idempotency_key": "q3", "body": "hi"}));
    assert_eq!(r.status, 404, "the quarantined user is unknown: {}", r.body);
    notify(&h, 4);
}
