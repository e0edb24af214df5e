//! An APNs `410 Unregistered` carries the time Apple found the token invalid. A device whose
//! token was registered with us again after that time (the app reinstalled, keeping its token)
//! stays active; one last registered before it is deactivated. The re-registration survives a
//! restart (it is written to the log, not kept in memory only).
mod common;

use std::time::Duration;

use clarion_sim::apns::Faults;
use serde_json::{Value, json};

fn targets(status: &Value) -> Vec<(String, String)> {
    status["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let target = d["device_id"].as_str().unwrap().to_string();
            (target, d["state"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn a_410_deactivates_only_a_token_not_registered_again_after_apples_timestamp() {
    let old = common::token(4101);
    let back = common::token(4102);
    let mut h = common::start(1, Faults::default(), "");
    h.register("erin", &[old.clone(), back.clone()]);

    // Apple's timestamp for both tokens: the time the simulator's faults are installed, after
    // both registrations.
    h.unregister(&[&old, &back]);

    // The app comes back with the same token: registering an active token again succeeds as
    // an update and moves its registration time past Apple's timestamp.
    let r = h.client().call(
        "POST",
        "/v1/users/erin/devices",
        Some(json!({"platform": "ios", "token": back})),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // Answered only once durable: a kill -9 now loses nothing of it.
    h.server.kill9();
    h.server.spawn();

    let r = h.notify(json!({"user_id": "erin", "idempotency_key": "a", "title": "t"}));
    assert_eq!(r.status, 202, "{}", r.body);
    let s = h.wait_finished(r.body["id"].as_str().unwrap(), Duration::from_secs(20));
    let mut got = targets(&s);
    got.sort();
    let mut want = vec![
        (old.clone(), "failed".to_string()),
        (back.clone(), "failed".to_string()),
    ];
    want.sort();
    assert_eq!(got, want, "both sends were refused: {s}");
    assert!(
        s["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["history"].to_string().contains("410 Unregistered")),
        "{s}"
    );
    let stats = h.client().call("GET", "/v1/stats", None).body;
    assert_eq!(stats["total"]["deactivated_tokens"], 1, "{stats}");
    assert_eq!(stats["total"]["reregistered_tokens_kept"], 1, "{stats}");

    // Apple has the reinstalled app's token again: only it gets the next notification.
    h.sim.set_faults(Faults::default());
    let r = h.notify(json!({"user_id": "erin", "idempotency_key": "b", "title": "t2"}));
    assert_eq!(r.status, 202, "{}", r.body);
    let s = h.wait_finished(r.body["id"].as_str().unwrap(), Duration::from_secs(20));
    assert_eq!(
        targets(&s),
        [(back.clone(), "sent".to_string())],
        "the token registered again stays active, the other does not: {s}"
    );
    let sim = h.sim.stats();
    assert_eq!(
        (sim.by_status.get(&410), sim.accepted),
        (Some(&2), 1),
        "two 410s, then one push to the token registered again, none to the other: {sim:?}"
    );
}
