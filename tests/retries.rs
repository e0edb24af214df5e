//! 429 and 503 from APNs are retried with backoff and then delivered; the history shows each
//! retry with the provider's reason; the same apns-id is used on every attempt.
mod common;

use std::time::Duration;

use clarion_sim::apns::Faults;
use serde_json::json;

#[test]
fn throttling_and_unavailability_are_retried_then_delivered() {
    let faults = Faults {
        too_many_requests_rate: 0.5,
        unavailable_rate: 0.5,
        seed: 7,
        ..Faults::default()
    };
    let h = common::start(1, faults, "max_attempts = 30");
    let tok = common::token(3);
    h.register("erin", std::slice::from_ref(&tok));
    let r = h.notify(json!({"user_id": "erin", "idempotency_key": "x", "body": "retry me"}));
    assert_eq!(r.status, 202);
    let id = r.body["id"].as_str().unwrap().to_string();
    // Every request fails until the provider recovers.
    std::thread::sleep(Duration::from_millis(600));
    let mid = h.status(&id);
    assert_eq!(mid["deliveries"][0]["state"], "retrying", "{mid}");
    h.sim.set_faults(Faults::default());
    let s = h.wait_finished(&id, Duration::from_secs(20));
    let d = &s["deliveries"][0];
    assert_eq!(d["state"], "sent", "{s}");
    let hist = d["history"].as_array().unwrap();
    let retries: Vec<&serde_json::Value> =
        hist.iter().filter(|e| e["state"] == "retrying").collect();
    assert!(!retries.is_empty(), "{d}");
    for e in &retries {
        let reason = e["reason"].as_str().unwrap();
        assert!(reason.contains("429") || reason.contains("503"), "{reason}");
    }
    assert!(d["attempts"].as_u64().unwrap() >= 2);
    let ids: Vec<String> = h
        .sim
        .recent()
        .into_iter()
        .filter(|p| p.token == tok)
        .map(|p| p.apns_id)
        .collect();
    assert!(!ids.is_empty());
    assert!(
        ids.iter().all(|x| Some(x.as_str()) == d["id"].as_str()),
        "same apns-id on every attempt"
    );
    let stats = h.sim.stats();
    let failed = stats.by_status.get(&429).copied().unwrap_or(0)
        + stats.by_status.get(&503).copied().unwrap_or(0);
    assert!(
        failed >= 2,
        "the simulator answered 429/503 before the success: {stats:?}"
    );
}
