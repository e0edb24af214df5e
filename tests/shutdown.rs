//! SIGTERM stops accepting, lets in-flight sends finish within the grace period, flushes, and
//! exits 0; whatever was accepted is delivered, before the stop or after the next start.
mod common;

use std::time::Duration;

use clarion_sim::apns::Faults;
use serde_json::json;

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let faults = Faults {
        latency_us: 300_000,
        ..Faults::default()
    };
    let mut h = common::start(2, faults, "");
    for u in 0..20 {
        h.register(&format!("s{u}"), &[common::token(500 + u)]);
    }
    let mut ids = Vec::new();
    for seq in 0..60u64 {
        let r = h.notify(
            json!({"user_id": format!("s{}", seq % 20), "idempotency_key": format!("t{seq}"),
                                "body": "bye", "data": {"lt_seq": seq}}),
        );
        assert_eq!(r.status, 202);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    let status = h.server.terminate();
    assert!(
        status.success(),
        "clean exit on SIGTERM: {status}\n{}",
        h.server.log()
    );
    assert!(
        h.server.log().contains("shard stopped"),
        "{}",
        h.server.log()
    );
    h.server.spawn();
    common::wait_for(Duration::from_secs(30), || {
        let l = h.sim.ledger();
        (0..60).all(|s| l.count(s) >= 1).then_some(())
    })
    .expect("all accepted notifications delivered across the restart");
    for id in &ids {
        let s = h.status(id);
        assert!(
            s["state"] == "finished" || s["state"] == "in_progress",
            "{s}"
        );
    }
}
