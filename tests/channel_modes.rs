//! A channel delivers to a simulator only when told to, and says which mode it runs in: with
//! no `[apns]` section APNs is `off` (its deliveries are accepted and held as a configuration
//! fault, none spent or sent), and with `mode = "simulator"` the built-in simulator delivers.
//! Both show in the log, in `/healthz` and in `GET /v1/stats`.

mod common;

use std::time::Duration;

use common::{Server, token, wait_for};
use serde_json::{Value, json};

fn register(c: &common::http::Client, user: &str) {
    let r = c.call("PUT", &format!("/v1/users/{user}"), Some(json!({})));
    assert!(r.status == 200 || r.status == 201, "{}", r.body);
    let r = c.call(
        "POST",
        &format!("/v1/users/{user}/devices"),
        Some(json!({"platform": "ios", "token": token(1)})),
    );
    assert!(r.status == 200 || r.status == 201, "{}", r.body);
}

fn notify(c: &common::http::Client, user: &str) -> String {
    let r = c.call(
        "POST",
        "/v1/notifications",
        Some(json!({"user_id": user, "idempotency_key": "k1", "title": "Hi"})),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

fn modes(c: &common::http::Client) -> (Value, Value) {
    let health = c.call("GET", "/healthz", None);
    assert_eq!(health.status, 200, "{}", health.body);
    let stats = c.call("GET", "/v1/stats", None);
    assert_eq!(stats.status, 200, "{}", stats.body);
    (health.body["channels"].clone(), stats.body)
}

#[test]
fn without_credentials_apns_is_off_and_holds_its_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), 2, "");
    let c = server.client();
    let (health, stats) = modes(&c);
    let all_off = json!({"apns": "off", "fcm": "off", "webpush": "off"});
    assert_eq!(health, all_off);
    assert_eq!(stats["channels"], all_off);
    assert!(
        server.log().contains("APNs is off"),
        "the log says so: {}",
        server.log()
    );

    register(&c, "u1");
    let id = notify(&c, "u1");
    // The attempt ends in a configuration fault; the delivery waits, its attempts unspent.
    let total = wait_for(Duration::from_secs(20), || {
        let s = c.call("GET", "/v1/stats", None).body["total"].clone();
        (s["config_faults"].as_u64().unwrap_or(0) >= 1).then_some(s)
    })
    .expect("a configuration fault is counted");
    assert_eq!(total["sent"], 0, "{total}");
    assert_eq!(total["dead"], 0, "{total}");
    assert_eq!(total["backlog"], 1, "held in the backlog: {total}");
    let status = c.call("GET", &format!("/v1/notifications/{id}"), None).body;
    let delivery = &status["deliveries"][0];
    assert_ne!(delivery["state"], "sent", "{status}");
    assert_ne!(delivery["state"], "dead", "{status}");
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn simulator_mode_delivers_to_the_built_in_simulator_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), 2, "[apns]\nmode = \"simulator\"\n");
    let c = server.client();
    let (health, stats) = modes(&c);
    let modes_now = json!({"apns": "simulator", "fcm": "off", "webpush": "off"});
    assert_eq!(health, modes_now);
    assert_eq!(stats["channels"], modes_now);
    assert!(
        server.log().contains("built-in simulator"),
        "{}",
        server.log()
    );

    register(&c, "u1");
    let id = notify(&c, "u1");
    let status = wait_for(Duration::from_secs(20), || {
        let s = c.call("GET", &format!("/v1/notifications/{id}"), None).body;
        (s["deliveries"][0]["state"] == "sent").then_some(s)
    });
    assert!(status.is_some(), "delivered to the simulator");
    assert_eq!(server.terminate().code(), Some(0));
}
