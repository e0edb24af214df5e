//! A per-user frequency cap (`[caps] per_user_per_hour`): notifications over the cap are
//! accepted and recorded with every delivery `suppressed` (reason given), never sent and never
//! silently dropped; other users are not affected.
mod common;

use std::time::Duration;

use clarion_sim::apns::Faults;
use serde_json::json;

#[test]
fn over_the_cap_is_suppressed_and_recorded() {
    let h = common::start(1, Faults::default(), "\n[caps]\nper_user_per_hour = 2");
    let tok = common::token(31);
    h.register("capped", std::slice::from_ref(&tok));
    h.register("other", &[common::token(32)]);
    let mut ids = Vec::new();
    for i in 0..3 {
        let r =
            h.notify(json!({"user_id": "capped", "idempotency_key": format!("c{i}"), "body": "b"}));
        assert_eq!(r.status, 202, "{}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    let states: Vec<String> = ids
        .iter()
        .map(|id| {
            h.wait_finished(id, Duration::from_secs(10))["deliveries"][0]["state"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(states, ["sent", "sent", "suppressed"]);
    let third = h.status(&ids[2]);
    let reason = third["deliveries"][0]["history"].to_string();
    assert!(reason.contains("frequency_cap"), "{third}");
    let r = h.notify(json!({"user_id": "other", "idempotency_key": "o1", "body": "b"}));
    let s = h.wait_finished(r.body["id"].as_str().unwrap(), Duration::from_secs(10));
    assert_eq!(s["deliveries"][0]["state"], "sent", "the cap is per user");
    std::thread::sleep(Duration::from_millis(200));
    let to_capped = h.sim.recent().iter().filter(|p| p.token == tok).count();
    assert_eq!(to_capped, 2, "the suppressed one was never sent");
    let stats = h.client().call("GET", "/v1/stats", None).body;
    assert_eq!(stats["total"]["suppressed"], 1, "{stats}");
}
