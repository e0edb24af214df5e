//! APNs 410 Unregistered and 400 BadDeviceToken fail the delivery permanently with the
//! provider's reason and deactivate the device: later notifications do not go to it.
mod common;

use std::time::Duration;

use clarion_sim::apns::Faults;
use serde_json::json;

#[test]
fn unregistered_and_bad_tokens_are_deactivated() {
    let gone = common::token(410);
    let bad = common::token(400);
    let good = common::token(200);
    let mut faults = Faults::default();
    faults.bad_device_tokens.insert(bad.clone());
    let h = common::start(1, faults, "");
    h.register("dave", &[gone.clone(), bad.clone(), good.clone()]);
    // Apple found `gone` unregistered after it was registered with us.
    h.unregister(&[&gone]);

    let r = h.notify(json!({"user_id": "dave", "idempotency_key": "a", "title": "t"}));
    assert_eq!(r.status, 202);
    let s = h.wait_finished(r.body["id"].as_str().unwrap(), Duration::from_secs(20));
    let by_target = |t: &str| common::delivery(&s, t).clone();
    let d = by_target(&gone);
    assert_eq!(d["state"], "failed", "{s}");
    assert!(d["history"].to_string().contains("410 Unregistered"), "{d}");
    let d = by_target(&bad);
    assert_eq!(d["state"], "failed");
    assert!(d["history"].to_string().contains("BadDeviceToken"), "{d}");
    assert_eq!(by_target(&good)["state"], "sent");

    let r = h.notify(json!({"user_id": "dave", "idempotency_key": "b", "title": "t2"}));
    let s = h.wait_finished(r.body["id"].as_str().unwrap(), Duration::from_secs(20));
    let targets: Vec<&str> = s["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        targets,
        [good.as_str()],
        "only the live device gets later notifications"
    );
}
