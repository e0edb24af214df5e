//! A repeated idempotency key within the dedup window answers with the original id and sends
//! nothing; the dedup set survives a restart.
mod common;

use std::time::Duration;

use clarion_sim::apns::Faults;
use serde_json::json;

#[test]
fn repeated_key_sends_once_even_across_restart() {
    let mut h = common::start(2, Faults::default(), "");
    let tok = common::token(7);
    h.register("bob", std::slice::from_ref(&tok));
    let body = json!({"user_id": "bob", "idempotency_key": "k-1", "body": "hello"});
    let first = h.notify(body.clone());
    assert_eq!(first.status, 202, "{}", first.body);
    let id = first.body["id"].as_str().unwrap().to_string();
    assert!(first.body.get("duplicate").is_none());
    let again = h.notify(body.clone());
    assert_eq!(again.status, 202);
    assert_eq!(again.body["id"], id.as_str());
    assert_eq!(again.body["duplicate"], true);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    // The same key for another user is a different notification.
    h.register("carol", &[common::token(8)]);
    let other = h.notify(json!({"user_id": "carol", "idempotency_key": "k-1", "body": "hello"}));
    assert_ne!(other.body["id"], id.as_str());

    h.wait_finished(&id, Duration::from_secs(20));
    h.server.terminate();
    h.server.spawn();
    let after = h.notify(body);
    assert_eq!(
        after.body["id"],
        id.as_str(),
        "dedup survives restart: {}",
        after.body
    );
    assert_eq!(after.body["duplicate"], true);
    std::thread::sleep(Duration::from_millis(500));
    let to_bob = h.sim.recent().iter().filter(|p| p.token == tok).count();
    assert_eq!(to_bob, 1, "one push for three requests with one key");
}
