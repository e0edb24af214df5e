//! Idempotency keys live on disk, with a bounded cache in front: after more accepts than the
//! cache holds, a retry of the oldest is still answered with its original id (found in the log's
//! `dedup` keyspace, nothing written), the cache stays at its bound, and after a restart (which
//! reads back only the newest keys) the same holds.
mod common;

use clarion_shards::DEDUP_CACHE_KEYS;
use clarion_sim::apns::Faults;
use serde_json::{Value, json};

const BATCH: usize = 1000;

/// Accepts `count` notifications for `user` with keys `k0`, `k1`, ...; returns their ids.
fn accept_many(h: &common::Harness, user: &str, count: usize) -> Vec<String> {
    let c = h.client();
    let mut ids = Vec::with_capacity(count);
    while ids.len() < count {
        let first = ids.len();
        let items: Vec<Value> = (first..(first + BATCH).min(count))
            .map(|i| json!({"user_id": user, "idempotency_key": format!("k{i}"), "body": "b"}))
            .collect();
        let r = c.call(
            "POST",
            "/v1/notifications/batch",
            Some(json!({ "notifications": items })),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        for item in r.body["results"].as_array().unwrap() {
            assert_eq!(item["status"], 202, "{item}");
            assert!(item.get("duplicate").is_none(), "{item}");
            ids.push(item["id"].as_str().unwrap().to_string());
        }
    }
    ids
}

fn stats(h: &common::Harness) -> Value {
    let r = h.client().call("GET", "/v1/stats", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["total"].clone()
}

fn retry(h: &common::Harness, user: &str, i: usize) -> common::http::Response {
    h.notify(json!({"user_id": user, "idempotency_key": format!("k{i}"), "body": "b"}))
}

#[test]
fn a_retry_older_than_the_cache_is_found_on_disk_also_after_a_restart() {
    let mut h = common::start(1, Faults::default(), "");
    // No devices: each notification is finished at once, so the test is about keys alone.
    h.register("quiet", &[]);
    let total = DEDUP_CACHE_KEYS + 2 * BATCH;
    let ids = accept_many(&h, "quiet", total);
    let s = stats(&h);
    assert_eq!(s["dedup_cached"], DEDUP_CACHE_KEYS, "{s}");
    assert_eq!(s["dedup_disk_duplicates"], 0, "{s}");
    assert!(
        s["dedup_disk_checks"].as_u64().unwrap() >= BATCH as u64,
        "once keys were evicted, new ones are checked on disk: {s}"
    );
    let accepted = s["accepted"].as_u64().unwrap();

    let again = retry(&h, "quiet", 0);
    assert_eq!(again.status, 202, "{}", again.body);
    assert_eq!(
        again.body["id"],
        ids[0].as_str(),
        "the original id, from disk"
    );
    assert_eq!(again.body["duplicate"], true);
    let s = stats(&h);
    assert_eq!(s["dedup_disk_duplicates"], 1, "{s}");
    assert_eq!(s["accepted"], accepted, "a duplicate is not an accept: {s}");
    // The key is back in the cache: the next retry needs no read.
    let third = retry(&h, "quiet", 0);
    assert_eq!(third.body["id"], ids[0].as_str());
    assert_eq!(stats(&h)["dedup_disk_duplicates"], 1);
    // A key never used is accepted as new.
    let new = retry(&h, "quiet", total);
    assert_eq!(new.status, 202);
    assert!(new.body.get("duplicate").is_none(), "{}", new.body);

    assert!(h.server.terminate().success(), "{}", h.server.log());
    h.server.spawn();
    let s = stats(&h);
    assert_eq!(
        s["dedup_cached"], DEDUP_CACHE_KEYS,
        "a restart reads back only the newest keys: {s}"
    );
    for i in [1, total - 1] {
        let r = retry(&h, "quiet", i);
        assert_eq!(r.status, 202, "{}", r.body);
        assert_eq!(r.body["id"], ids[i].as_str(), "key k{i} after the restart");
        assert_eq!(r.body["duplicate"], true);
    }
    let s = stats(&h);
    assert_eq!(
        s["dedup_disk_duplicates"], 1,
        "k1 came from disk, the newest from the cache: {s}"
    );
}
