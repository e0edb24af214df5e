//! A user's devices over the API: `[contacts] max_devices_per_user` bounds them (the oldest
//! deactivated devices make room; all active at the limit is `422 too_many_devices` naming
//! `token`), and `DELETE /v1/users/{user_id}/devices/{device_id}` removes one durably.
mod common;

use std::time::Duration;

use clarion_sim::apns::Faults;
use serde_json::{Value, json};

/// The targets a finished notification's deliveries went to, sorted.
fn targets(status: &Value) -> Vec<String> {
    let mut t: Vec<String> = status["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap().to_string())
        .collect();
    t.sort();
    t
}

fn sorted(tokens: &[&String]) -> Vec<String> {
    let mut t: Vec<String> = tokens.iter().map(|s| (*s).clone()).collect();
    t.sort();
    t
}

#[test]
fn the_device_limit_prunes_deactivated_devices_then_refuses() {
    let gone = common::token(410);
    let (a, b, c) = (common::token(1), common::token(2), common::token(3));
    let h = common::start(
        2,
        Faults::default(),
        "[contacts]\nmax_devices_per_user = 3\n",
    );
    h.register("erin", &[gone.clone(), a.clone(), b.clone()]);
    // Apple found `gone` unregistered after it was registered with us.
    h.unregister(&[&gone]);
    let client = h.client();
    let add = |token: &str| {
        client.call(
            "POST",
            "/v1/users/erin/devices",
            Some(json!({"platform": "ios", "token": token})),
        )
    };

    // At the limit with every device active: refused, naming the field.
    let r = add(&c);
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "too_many_devices");
    assert_eq!(r.body["error"]["field"], "token");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_devices_per_user"),
        "{}",
        r.body
    );
    // Registering a token the user already has is not a new device: still fine at the limit.
    assert_eq!(add(&a).status, 200);

    // APNs answers 410 for `gone`: it is deactivated, and then makes room for `c`.
    let r = h.notify(json!({"user_id": "erin", "idempotency_key": "n1", "title": "t"}));
    assert_eq!(r.status, 202, "{}", r.body);
    let s = h.wait_finished(r.body["id"].as_str().unwrap(), Duration::from_secs(20));
    assert_eq!(targets(&s), sorted(&[&gone, &a, &b]));
    let r = add(&c);
    assert_eq!(r.status, 201, "{}", r.body);

    // `gone` was dropped, not just skipped: re-registering it is a new device again, and with
    // a, b and c active that is over the limit.
    let r = add(&gone);
    assert_eq!(r.status, 422, "{}", r.body);
    let r = h.notify(json!({"user_id": "erin", "idempotency_key": "n2", "title": "t"}));
    let s = h.wait_finished(r.body["id"].as_str().unwrap(), Duration::from_secs(20));
    assert_eq!(targets(&s), sorted(&[&a, &b, &c]));
}

#[test]
fn a_removed_device_gets_nothing_more_also_after_a_restart() {
    let (a, b) = (common::token(11), common::token(12));
    let mut h = common::start(2, Faults::default(), "");
    h.register("fay", &[a.clone(), b.clone()]);
    let client = h.client();

    let r = client.call("DELETE", &format!("/v1/users/fay/devices/{a}"), None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(r.body, Value::Null, "no body");
    let r = client.call("DELETE", &format!("/v1/users/fay/devices/{a}"), None);
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "device_not_found");
    let r = client.call("DELETE", &format!("/v1/users/nobody/devices/{a}"), None);
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "user_not_found");
    // No platform's device id has a dot in it.
    let r = client.call("DELETE", "/v1/users/fay/devices/not.a.token", None);
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["field"], "device_id");
    assert_eq!(r.body["error"]["code"], "invalid_device_id");
    // Tokens match as registered, whatever the case of the hex digits in the path.
    let r = client.call(
        "DELETE",
        &format!("/v1/users/fay/devices/{}", b.to_ascii_uppercase()),
        None,
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let r = client.call(
        "POST",
        "/v1/users/fay/devices",
        Some(json!({"platform": "ios", "token": b})),
    );
    assert_eq!(r.status, 201, "registered again: {}", r.body);

    h.server.terminate();
    h.server.spawn();
    let r = h.notify(json!({"user_id": "fay", "idempotency_key": "n", "title": "t"}));
    assert_eq!(r.status, 202, "{}", r.body);
    let s = h.wait_finished(r.body["id"].as_str().unwrap(), Duration::from_secs(20));
    assert_eq!(
        targets(&s),
        [b.as_str()],
        "the removal survived the restart"
    );
}
