//! The FCM channel over real sockets (issue 13, item 2): the server signs an RS256 assertion
//! with a service account's key, exchanges it at the account's `token_uri` for an access token
//! (one exchange for the whole process, refreshed before it expires), and sends each delivery
//! to `/v1/projects/{p}/messages:send` over HTTP/2 + TLS; the simulator checks the assertion,
//! the bearer token and the message's shape. Tokens FCM calls gone are deactivated with its
//! reason; a `503` with `retry-after` is waited out and then delivered, none lost.
mod common;

use std::time::{Duration, Instant};

use clarion_sim::apns::Faults;
use clarion_sim::fcm::{self, FcmFaults, FcmSimConfig, FcmSimHandle};
use serde_json::json;

struct Fcm {
    h: common::Harness,
    sim: FcmSimHandle,
}

/// The server (2 shards) with APNs as the common harness sets it up and FCM live against the
/// simulator, whose access tokens last `token_lifetime`.
fn start(token_lifetime: Duration, faults: FcmFaults) -> Fcm {
    let mut cfg = FcmSimConfig::builtin("127.0.0.1:0".parse().unwrap()).unwrap();
    cfg.project_id = "clarion-test".into();
    cfg.token_lifetime = token_lifetime;
    cfg.faults = faults;
    let sim = fcm::start(cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let extra = common::fcm_section(&sim, dir.path());
    let h = common::start_in(dir, 2, |c| c.faults = Faults::default(), &extra);
    Fcm { h, sim }
}

impl Fcm {
    fn android(&self, user: &str, tokens: &[&str]) {
        self.h.register(user, &[]);
        for t in tokens {
            self.h
                .add_device(user, json!({"platform": "android", "token": t}));
        }
    }
}

#[test]
fn a_message_is_delivered_with_a_token_from_the_service_account() {
    let f = start(Duration::from_secs(3600), FcmFaults::default());
    f.android("ann", &["fcm-token:A1"]);
    let id = f.h.notify_accepted(
        "ann",
        "n1",
        json!({"data": {"order": 42, "s": "x"}, "priority": "normal", "ttl_seconds": 600, "collapse_id": "orders"}),
    );
    let s = f.h.wait_finished(&id, Duration::from_secs(20));
    let d = &s["deliveries"][0];
    assert_eq!(
        (d["channel"].as_str(), d["state"].as_str()),
        (Some("fcm"), Some("sent")),
        "{s}"
    );
    assert_eq!(d["device_id"], "fcm-token:A1");
    let got = f.sim.recent();
    assert_eq!(got.len(), 1);
    let m = &got[0].message;
    assert_eq!(m["token"], "fcm-token:A1");
    assert_eq!(m["notification"], json!({"title": "Hi", "body": "there"}));
    assert_eq!(
        m["data"],
        json!({"order": "42", "s": "x"}),
        "FCM takes strings only"
    );
    assert_eq!(
        m["android"],
        json!({"priority": "NORMAL", "ttl": "600s", "collapse_key": "orders"})
    );
    // A second notification on the other shard's users reuses the process's token.
    f.android("bob", &["fcm-token:B1"]);
    let id = f.h.notify_accepted("bob", "n2", json!({}));
    f.h.wait_finished(&id, Duration::from_secs(20));
    let stats = f.sim.stats();
    assert_eq!(
        stats.tokens_issued, 1,
        "one exchange for every shard: {stats:?}"
    );
    assert_eq!(
        (stats.assertions_refused, stats.unauthenticated),
        (0, 0),
        "{stats:?}"
    );
    let modes = f.h.client().call("GET", "/healthz", None).body;
    assert_eq!(modes["channels"]["fcm"], "live", "{modes}");
    // Counted per channel, summed over the shards.
    let stats = f.h.client().call("GET", "/v1/stats", None).body;
    let fcm = &stats["total"]["by_channel"]["fcm"];
    assert_eq!(
        (fcm["accepted"].as_u64(), fcm["sent"].as_u64()),
        (Some(2), Some(2)),
        "{stats}"
    );
    assert_eq!(
        (fcm["queue_depth"].as_u64(), fcm["in_flight"].as_u64()),
        (Some(0), Some(0)),
        "{stats}"
    );
    assert_eq!(
        stats["total"]["by_channel"]["apns"]["accepted"], 0,
        "{stats}"
    );
}

#[test]
fn gone_tokens_are_deactivated_with_fcms_reason() {
    let faults = FcmFaults {
        unregistered: ["gone-1".to_string()].into(),
        sender_mismatch: ["other-sender".to_string()].into(),
        ..FcmFaults::default()
    };
    let f = start(Duration::from_secs(3600), faults);
    f.android("cat", &["gone-1", "other-sender", "fine-1"]);
    let id = f.h.notify_accepted("cat", "n1", json!({}));
    let s = f.h.wait_finished(&id, Duration::from_secs(20));
    let state = |device: &str| {
        common::delivery(&s, device)["state"]
            .as_str()
            .map(str::to_string)
    };
    assert_eq!(state("gone-1").as_deref(), Some("failed"), "{s}");
    assert_eq!(state("other-sender").as_deref(), Some("failed"), "{s}");
    assert_eq!(state("fine-1").as_deref(), Some("sent"), "{s}");
    let user = f.h.client().call("GET", "/v1/users/cat", None).body;
    let device = |id: &str| common::device(&user, id).clone();
    assert_eq!(
        device("gone-1")["deactivated_reason"],
        "UNREGISTERED",
        "{user}"
    );
    assert_eq!(
        device("other-sender")["deactivated_reason"],
        "SENDER_ID_MISMATCH",
        "{user}"
    );
    assert_eq!(device("fine-1")["active"], true);
    let stats = f.h.client().call("GET", "/v1/stats", None).body;
    let fcm = &stats["total"]["by_channel"]["fcm"];
    assert_eq!(
        (
            fcm["failed"].as_u64(),
            fcm["deactivated"].as_u64(),
            fcm["sent"].as_u64()
        ),
        (Some(2), Some(2), Some(1)),
        "{stats}"
    );
    // The next notification skips the deactivated devices.
    let id = f.h.notify_accepted("cat", "n2", json!({}));
    let s = f.h.wait_finished(&id, Duration::from_secs(20));
    assert_eq!(s["deliveries"].as_array().unwrap().len(), 1, "{s}");
}

#[test]
fn an_outage_with_retry_after_is_waited_out_and_nothing_is_lost() {
    let faults = FcmFaults {
        outage: true,
        retry_after_s: Some(1),
        ..FcmFaults::default()
    };
    let f = start(Duration::from_secs(3600), faults);
    let tokens: Vec<String> = (0..20).map(|i| format!("dev-{i}")).collect();
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    f.android("dan", &refs);
    let ids: Vec<String> = (0..5)
        .map(|i| f.h.notify_accepted("dan", &format!("n{i}"), json!({})))
        .collect();
    common::wait_for(Duration::from_secs(10), || {
        (f.sim.stats().by_status.get(&503).copied().unwrap_or(0) >= 10).then_some(())
    })
    .expect("FCM is tried and answers 503");
    std::thread::sleep(Duration::from_secs(2));
    for id in &ids {
        let s = f.h.status(id);
        assert!(
            s["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["state"] != "sent" && d["state"] != "dead" && d["state"] != "failed"),
            "{s}"
        );
    }
    let mut faults = f.sim.faults();
    faults.outage = false;
    f.sim.set_faults(faults);
    f.h.wait_all_sent(&ids, Duration::from_secs(60));
    for t in &tokens {
        assert_eq!(
            f.sim.received(t),
            5,
            "{t}: each of the 5 notifications once"
        );
    }
}

#[test]
fn short_lived_tokens_are_refreshed_under_load_without_a_failed_send() {
    // Tokens last 6 s, so they are refreshed every 4.5 s through a 20-second load.
    let f = start(Duration::from_secs(6), FcmFaults::default());
    f.android("eve", &["steady-1"]);
    let started = Instant::now();
    let mut ids = Vec::new();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(20) {
        ids.push(f.h.notify_accepted("eve", &format!("n{n}"), json!({})));
        n += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    for id in &ids {
        let s = f.h.wait_finished(id, Duration::from_secs(20));
        let d = &s["deliveries"][0];
        assert_eq!(
            (d["state"].as_str(), d["attempts"].as_u64()),
            (Some("sent"), Some(1)),
            "{s}"
        );
    }
    let stats = f.sim.stats();
    assert_eq!(
        stats.unauthenticated, 0,
        "no send went out with an expired token: {stats:?}"
    );
    // Tokens at about 0, 4.5, 9, 13.5 and 18 s: one exchange per refresh for the process.
    assert!(
        (4..=6).contains(&stats.tokens_issued),
        "refreshed before each expiry, once for the process: {stats:?}"
    );
    assert_eq!(f.sim.received("steady-1"), ids.len() as u64);
}
