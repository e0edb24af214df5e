//! Finished notifications stay queryable for the retention period and are then removed; an
//! idempotency key is remembered for the dedup window and then forgotten (so the same key
//! later is a new notification). Short windows here; the defaults are 7 days and 24 hours.
mod common;

use std::time::Duration;

use clarion_sim::apns::Faults;
use serde_json::json;

#[test]
fn finished_records_expire_after_retention_and_keys_after_the_dedup_window() {
    let h = common::start(
        2,
        Faults::default(),
        "\n[storage]\nretention_seconds = 2\ndedup_window_seconds = 1",
    );
    h.register("ret", &[common::token(9)]);
    let body = json!({"user_id": "ret", "idempotency_key": "once", "body": "hi"});
    let r = h.notify(body.clone());
    assert_eq!(r.status, 202);
    let id = r.body["id"].as_str().unwrap().to_string();
    h.wait_finished(&id, Duration::from_secs(10));
    assert_eq!(
        h.notify(body.clone()).body["id"],
        id.as_str(),
        "within the window: the same id"
    );

    let c = h.client();
    let gone = common::wait_for(Duration::from_secs(15), || {
        (c.call("GET", &format!("/v1/notifications/{id}"), None)
            .status
            == 404)
            .then_some(())
    });
    assert!(
        gone.is_some(),
        "the finished notification was removed after retention"
    );
    let again = h.notify(body);
    assert_eq!(again.status, 202);
    assert_ne!(
        again.body["id"],
        id.as_str(),
        "after the window the key is new again"
    );
    assert!(again.body.get("duplicate").is_none());
}
