//! Register a user and an iPhone, send a notification, and see it arrive at the APNs simulator
//! over HTTP/2 + TLS with a valid provider JWT, the right headers and payload; the status
//! endpoint then shows the delivery as sent, with its history.
mod common;

use std::time::Duration;

use clarion_sim::apns::Faults;
use serde_json::json;

#[test]
fn register_send_receive_and_status() {
    let h = common::start(1, Faults::default(), "");
    let tok = common::token(1);
    h.register("alice", std::slice::from_ref(&tok));
    let r = h.notify(json!({
        "user_id": "alice", "idempotency_key": "order-42",
        "title": "Order shipped", "body": "Your order is on the way",
        "data": {"order_id": "42", "n": 7}, "category": "ORDER", "priority": "high",
        "ttl_seconds": 3600, "collapse_id": "order-42"
    }));
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();

    let status = h.wait_finished(&id, Duration::from_secs(20));
    let d = &status["deliveries"][0];
    assert_eq!(d["state"], "sent", "{status}");
    assert_eq!(d["channel"], "apns");
    assert_eq!(d["device_id"], tok);
    assert_eq!(common::history_states(d), ["queued", "sent"]);
    let delivery_id = d["id"].as_str().unwrap().to_string();

    let got = common::wait_for(Duration::from_secs(5), || {
        h.sim.recent().into_iter().find(|p| p.token == tok)
    })
    .expect("the simulator received the push");
    assert_eq!(got.apns_id, delivery_id, "apns-id is the delivery id");
    assert!(got.apns_id_from_request);
    assert_eq!(got.topic, common::TOPIC);
    assert_eq!(got.push_type.as_deref(), Some("alert"));
    assert_eq!(got.priority, Some(10));
    assert_eq!(got.collapse_id.as_deref(), Some("order-42"));
    let exp: u64 = got.expiration.as_deref().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        exp > now + 3500 && exp <= now + 3600,
        "apns-expiration is accept time + ttl"
    );
    let payload = got.payload_json().unwrap();
    assert_eq!(payload["aps"]["alert"]["title"], "Order shipped");
    assert_eq!(payload["aps"]["alert"]["body"], "Your order is on the way");
    assert_eq!(payload["aps"]["category"], "ORDER");
    assert_eq!(
        payload["order_id"], "42",
        "data entries are top-level custom keys"
    );
    assert_eq!(payload["n"], 7);
    // The simulator checked the JWT signature, kid, iss and age; a 200 means it verified.
    let stats = h.sim.stats();
    assert_eq!(
        stats.by_status.get(&200).copied().unwrap_or(0),
        1,
        "{stats:?}"
    );
}

/// `GET /v1/stats` counts the accept and shows how long the log's commits took to write and to
/// fsync, as cumulative buckets (the log's share of accept latency).
#[test]
fn stats_show_the_logs_commit_latency() {
    let h = common::start(2, Faults::default(), "");
    h.register("bob", &[common::token(2)]);
    let r = h.notify(json!({"user_id": "bob", "idempotency_key": "s1", "body": "b"}));
    assert_eq!(r.status, 202, "{}", r.body);
    let stats = h.client().call("GET", "/v1/stats", None).body;
    assert_eq!(stats["total"]["accepted"], 1, "{stats}");
    let fsync = &stats["total"]["log_fsync"];
    let count = fsync["count"].as_u64().expect("a count");
    assert!(count >= 1, "a 202 waited for at least one fsync: {fsync}");
    let buckets = fsync["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.last().unwrap()[0], "+Inf");
    assert_eq!(
        buckets.last().unwrap()[1],
        count,
        "the last bucket counts all"
    );
    let cumulative: Vec<u64> = buckets.iter().map(|b| b[1].as_u64().unwrap()).collect();
    assert!(cumulative.windows(2).all(|w| w[0] <= w[1]), "{fsync}");
    assert!(fsync["max_micros"].is_u64(), "{fsync}");
    let per_shard: u64 = stats["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["log_fsync"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(per_shard, count, "the total sums the shards");
    let write = &stats["total"]["log_write"];
    assert!(
        write["count"].as_u64().unwrap() >= count,
        "every fsync follows a commit's write: {write}"
    );
    assert_eq!(write["buckets"].as_array().unwrap().len(), buckets.len());
}
