//! `[storage] fsync = false`: the server says loudly at start what a `202` then means, and a
//! `kill -9` right after the last `202` loses none of what was accepted (each commit is handed to
//! the OS before it is answered; only an OS crash or power loss could lose it).
mod common;

use clarion_sim::apns::Faults;
use serde_json::json;

const NOTIFICATIONS: u64 = 50;

#[test]
fn without_fsync_start_warns_and_a_kill_9_loses_nothing_accepted() {
    // A provider that answers nothing for a while, so every delivery is still open at the kill.
    let faults = Faults {
        latency_us: 5_000_000,
        ..Faults::default()
    };
    let mut h = common::start(1, faults, "[storage]\nfsync = false\n");
    let log = h.server.log();
    assert!(
        log.contains("WARN") && log.contains("fsync = false") && log.contains("power loss"),
        "no warning at start: {log}"
    );
    h.register("nofsync", &[common::token(1)]);
    let mut ids = Vec::new();
    for seq in 0..NOTIFICATIONS {
        let r = h.notify(
            json!({"user_id": "nofsync", "idempotency_key": format!("nf{seq}"),
                                "body": "hello", "data": {"lt_seq": seq}}),
        );
        assert_eq!(r.status, 202, "{}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    h.server.kill9();
    h.sim.set_faults(Faults::default());
    h.server.spawn();
    for id in &ids {
        h.status(id);
    }
    let ledger = common::wait_for(std::time::Duration::from_secs(30), || {
        let l = h.sim.ledger();
        (0..NOTIFICATIONS).all(|s| l.count(s) >= 1).then_some(l)
    });
    assert!(
        ledger.is_some(),
        "every accepted notification is delivered after the restart"
    );
}
