//! The Web Push channel over real sockets (issue 13, item 3): a browser subscription from the
//! push service simulator is registered; each delivery is encrypted for it (RFC 8291) and sent
//! with a VAPID token for the push service's origin (RFC 8292) over HTTP/2 + TLS; the
//! simulator checks the token and decrypts the message as the browser would. `404` and `410`
//! deactivate the subscription with the push service's reason (the other answers are unit
//! tests of `channels/webpush/response.rs`); a `503` outage with
//! `retry-after` is waited out, then every message arrives once. The VAPID key is generated
//! once, kept in the data directory, served at `GET /v1/webpush/vapid-public-key` without a
//! key, and the same after a restart.
mod common;

use std::time::Duration;

use clarion_sim::apns::Faults;
use clarion_sim::webpush::{self, Protocol, WebPushFaults, WebPushSimHandle};
use serde_json::{Value, json};

struct Web {
    h: common::Harness,
    sim: WebPushSimHandle,
}

fn start(faults: WebPushFaults) -> Web {
    start_as(faults, Protocol::H2)
}

/// The server with Web Push live against a push service speaking `protocol` (a plain `http`
/// one taken with `allow_insecure_loopback`).
fn start_as(faults: WebPushFaults, protocol: Protocol) -> Web {
    let sim = webpush::start_as("127.0.0.1:0".parse().unwrap(), faults, protocol).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut extra = common::webpush_section(&sim, dir.path());
    if protocol == Protocol::PlainHttp1 {
        extra.push_str("allow_insecure_loopback = true\n");
    }
    let h = common::start_in(dir, 2, |c| c.faults = Faults::default(), &extra);
    Web { h, sim }
}

impl Web {
    /// Registers `n` browser subscriptions for `user`; their simulator ids and device ids.
    fn browsers(&self, user: &str, n: usize) -> Vec<(String, String)> {
        self.h.register(user, &[]);
        (0..n)
            .map(|_| {
                let s = self.sim.subscribe().unwrap();
                let id = self
                    .h
                    .add_device(user, json!({"platform": "web", "subscription": s.json}));
                (s.id, id)
            })
            .collect()
    }
}

#[test]
fn a_message_is_encrypted_for_the_browser_and_signed_for_the_push_service() {
    let w = start(WebPushFaults::default());
    let subs = w.browsers("ann", 1);
    let id = w.h.notify_accepted(
        "ann",
        "n1",
        json!({"data": {"url": "/orders/42"}, "priority": "normal", "ttl_seconds": 600, "collapse_id": "order-42"}),
    );
    let s = w.h.wait_finished(&id, Duration::from_secs(20));
    let d = &s["deliveries"][0];
    assert_eq!(
        (d["channel"].as_str(), d["state"].as_str()),
        (Some("webpush"), Some("sent")),
        "{s}"
    );
    assert_eq!(d["device_id"], subs[0].1.as_str());
    let got = w.sim.recent();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    let plain: Value = serde_json::from_str(&m.plaintext).unwrap();
    assert_eq!(
        plain,
        json!({"id": id, "title": "Hi", "body": "there", "data": {"url": "/orders/42"}}),
        "decrypted by the simulator with the subscription's keys"
    );
    assert_eq!(
        (m.ttl, m.urgency.as_deref(), m.topic.as_deref()),
        (600, Some("normal"), Some("order-42"))
    );
    assert_eq!(m.vapid_sub, "mailto:ops@example.com");

    // The public key web apps subscribe with, without an API key, is the one that signed.
    let r = common::http::Client::new(w.h.server.addr, "no-key").call(
        "GET",
        "/v1/webpush/vapid-public-key",
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["public_key"], m.vapid_key.as_str());
    let modes = w.h.client().call("GET", "/healthz", None).body;
    assert_eq!(modes["channels"]["webpush"], "live", "{modes}");
    assert!(
        w.h.server.log().contains("protocol=\"HTTP/2\""),
        "a push service offering h2 is reached over HTTP/2"
    );
    let stats = w.h.client().call("GET", "/v1/stats", None).body;
    let web = &stats["total"]["by_channel"]["webpush"];
    assert_eq!(
        (web["accepted"].as_u64(), web["sent"].as_u64()),
        (Some(1), Some(1)),
        "{stats}"
    );
}

#[test]
fn the_vapid_key_is_kept_across_restarts() {
    let mut w = start(WebPushFaults::default());
    let key = |w: &Web| {
        w.h.client()
            .call("GET", "/v1/webpush/vapid-public-key", None)
            .body["public_key"]
            .clone()
    };
    let before = key(&w);
    assert!(before.as_str().is_some_and(|k| k.len() == 87), "{before}");
    assert!(
        w.h.dir
            .path()
            .join("data")
            .join("webpush-vapid.pem")
            .is_file()
    );
    w.h.server.terminate();
    w.h.server.spawn();
    assert_eq!(key(&w), before, "every subscription is bound to it");
    w.browsers("bo", 1);
    let id = w.h.notify_accepted("bo", "n1", json!({}));
    w.h.wait_finished(&id, Duration::from_secs(20));
    assert_eq!(w.sim.stats().vapid_refused, 0);
}

#[test]
fn gone_subscriptions_are_deactivated_with_the_push_services_reason() {
    let w = start(WebPushFaults::default());
    let subs = w.browsers("cy", 3);
    let mut faults = w.sim.faults();
    faults.gone.insert(subs[0].0.clone());
    faults.not_found.insert(subs[1].0.clone());
    w.sim.set_faults(faults);
    let id = w.h.notify_accepted("cy", "n1", json!({}));
    let s = w.h.wait_finished(&id, Duration::from_secs(20));
    let state = |device: &str| common::delivery(&s, device)["state"].clone();
    assert_eq!(state(&subs[0].1), "failed", "{s}");
    assert_eq!(state(&subs[1].1), "failed", "{s}");
    assert_eq!(state(&subs[2].1), "sent", "{s}");
    let user = w.h.client().call("GET", "/v1/users/cy", None).body;
    let reason = |device: &str| common::device(&user, device)["deactivated_reason"].clone();
    assert_eq!(reason(&subs[0].1), "Gone", "{user}");
    assert_eq!(reason(&subs[1].1), "Not Found", "{user}");
    assert_eq!(reason(&subs[2].1), Value::Null);
    assert_eq!(w.sim.received(&subs[2].0), 1);
}

#[test]
fn an_outage_with_retry_after_is_waited_out_and_nothing_is_lost() {
    let faults = WebPushFaults {
        outage: true,
        retry_after_s: Some(1),
        ..WebPushFaults::default()
    };
    let w = start(faults);
    let subs = w.browsers("dan", 10);
    let ids: Vec<String> = (0..4)
        .map(|i| w.h.notify_accepted("dan", &format!("n{i}"), json!({})))
        .collect();
    common::wait_for(Duration::from_secs(10), || {
        (w.sim.stats().by_status.get(&503).copied().unwrap_or(0) >= 10).then_some(())
    })
    .expect("the push service is tried and answers 503");
    let mut faults = w.sim.faults();
    faults.outage = false;
    w.sim.set_faults(faults);
    w.h.wait_all_sent(&ids, Duration::from_secs(60));
    for (sim_id, _) in &subs {
        assert_eq!(
            w.sim.received(sim_id),
            4,
            "each of the 4 notifications once"
        );
    }
}

/// A push service that offers only HTTP/1.1 (by ALPN over TLS, or a plain `http` test server on
/// loopback) gets the same messages over HTTP/1.1 keep-alive connections: each decrypted by the
/// simulator with its VAPID token checked, a `410` deactivating, none sent twice.
#[test]
fn push_services_that_speak_only_http1_are_sent_to_over_http1() {
    for protocol in [Protocol::Http1, Protocol::PlainHttp1] {
        let w = start_as(WebPushFaults::default(), protocol);
        let subs = w.browsers("hal", 4);
        let mut faults = w.sim.faults();
        faults.gone.insert(subs[0].0.clone());
        w.sim.set_faults(faults);
        let ids: Vec<String> = (0..25)
            .map(|i| {
                w.h.notify_accepted("hal", &format!("n{i}"), json!({"data": {"i": i}}))
            })
            .collect();
        for id in &ids {
            let s = w.h.wait_finished(id, Duration::from_secs(30));
            let sent = s["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["state"] == "sent")
                .count();
            assert!(sent >= 3, "{protocol:?}: {s}");
        }
        for (sim_id, _) in &subs[1..] {
            assert_eq!(w.sim.received(sim_id), 25, "{protocol:?}: each once");
        }
        let user = w.h.client().call("GET", "/v1/users/hal", None).body;
        let gone = common::device(&user, &subs[0].1).clone();
        assert_eq!(gone["deactivated_reason"], "Gone", "{protocol:?}: {user}");
        let m = w.sim.recent().pop().unwrap();
        assert!(
            m.plaintext.contains("\"title\":\"Hi\""),
            "{protocol:?}: {}",
            m.plaintext
        );
        assert_eq!(w.sim.stats().vapid_refused, 0, "{protocol:?}");
        assert!(
            w.h.server.log().contains("protocol=\"HTTP/1.1\""),
            "{protocol:?}: the log says how the push service is reached"
        );
    }
}
