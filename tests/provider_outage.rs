//! A provider outage costs time, not notifications: with APNs answering 503 to everything, the
//! server keeps accepting far more than its in-memory windows hold (the backlog waits in the
//! log), the channel's circuit breaker opens so waiting deliveries spend no attempts, and when
//! APNs recovers the backlog drains, every notification delivered once, none dead. Also across
//! a restart in the middle of the outage, and with TTLs: what outlived its TTL is `expired`,
//! never sent late.
mod common;

use std::time::Duration;

use clarion_sim::apns::Faults;
use serde_json::{Value, json};

/// Deliveries each lane holds in memory per shard: far below the backlog the tests build.
const WINDOW: u64 = 32;
const USERS: u64 = 40;

fn outage() -> Faults {
    Faults {
        unavailable_rate: 1.0,
        seed: 11,
        ..Faults::default()
    }
}

/// Two shards, tiny windows, and few attempts: an outage that spent attempts would kill
/// deliveries.
fn start() -> common::Harness {
    let h = common::start(
        2,
        outage(),
        &format!("max_attempts = 3\n\n[tuning]\nlane_window = {WINDOW}\n"),
    );
    for u in 0..USERS {
        h.register(&format!("user{u}"), &[common::token(u)]);
    }
    h
}

/// Accepts `count` notifications in batches of 100, numbered from `first` (their `lt_seq`).
fn accept(h: &common::Harness, first: u64, count: u64, ttl_seconds: Option<u32>) {
    let c = h.client();
    let mut seq = first;
    while seq < first + count {
        let n = (first + count - seq).min(100);
        let items: Vec<Value> = (seq..seq + n)
            .map(|s| {
                let mut item = json!({"user_id": format!("user{}", s % USERS),
                    "idempotency_key": format!("outage-{s}"), "body": "waiting out an outage",
                    "data": {"lt_seq": s}});
                if let Some(ttl) = ttl_seconds {
                    item["ttl_seconds"] = json!(ttl);
                }
                item
            })
            .collect();
        let body = serde_json::to_vec(&json!({ "notifications": items })).unwrap();
        let r = c
            .try_raw("POST", "/v1/notifications/batch", Some(&body))
            .unwrap_or_else(|e| panic!("batch at {seq}: {e}\n{}", h.server.log()));

        assert_eq!(r.status, 200, "{}", r.body);
        for (i, res) in r.body["results"].as_array().unwrap().iter().enumerate() {
            assert_eq!(res["status"], 202, "item {i}: {res}");
        }
        seq += n;
    }
}

fn stats(h: &common::Harness) -> Value {
    let r = h.client().call("GET", "/v1/stats", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["total"].clone()
}

fn n(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// Waits until the breaker has opened and the whole backlog waits, then checks that memory
/// holds only the windows.
fn wait_for_backlog(h: &common::Harness, backlog: u64) -> Value {
    let s = common::wait_for(Duration::from_secs(20), || {
        let s = stats(h);
        (n(&s, "breakers_open") >= 1 && n(&s, "backlog") == backlog).then_some(s)
    })
    .unwrap_or_else(|| panic!("no open breaker with the whole backlog: {}", stats(h)));
    // Per shard: a window, and in flight at most a window more (which comes back to it).
    let resident = n(&s, "queue_depth") + n(&s, "in_flight");
    assert!(resident <= 2 * 2 * WINDOW, "windows bounded: {s}");
    assert!(
        n(&s, "open_notifications") <= resident,
        "notifications in memory only for resident deliveries: {s}"
    );
    assert!(
        resident < backlog,
        "most of the backlog is on disk only: {s}"
    );
    assert_eq!(n(&s, "dead"), 0, "{s}");
    s
}

/// Lets APNs recover and waits until every one of `seqs` is received, each exactly once.
fn recover_and_drain(h: &common::Harness, seqs: std::ops::Range<u64>) {
    h.sim.set_faults(Faults::default());
    let ledger = common::wait_for(Duration::from_secs(60), || {
        let l = h.sim.ledger();
        seqs.clone().all(|s| l.count(s) > 0).then_some(l)
    })
    .unwrap_or_else(|| panic!("backlog not drained: {}\n{}", stats(h), h.server.log()));
    let twice: Vec<u64> = seqs.clone().filter(|s| ledger.count(*s) != 1).collect();
    assert!(twice.is_empty(), "received other than once: {twice:?}");
}

#[test]
fn an_outage_backlog_waits_in_the_log_and_drains_once_the_provider_is_back() {
    const COUNT: u64 = 1_000;
    let h = start();
    accept(&h, 0, COUNT, None);
    let during = wait_for_backlog(&h, COUNT);
    assert!(n(&during, "breaker_opened") >= 1, "{during}");
    assert!(
        n(&during, "backlog_scans") >= 2,
        "the windows were refilled from the log: {during}"
    );
    // Waiting out several probe intervals spends nothing.
    std::thread::sleep(Duration::from_millis(2500));
    let later = stats(&h);
    assert_eq!(n(&later, "dead"), 0, "{later}");
    assert!(
        n(&later, "retried") <= 2 * 16,
        "only failures before the breaker opened spent attempts: {later}"
    );
    assert!(n(&later, "deferred") > 0, "{later}");

    recover_and_drain(&h, 0..COUNT);
    let after = common::wait_for(Duration::from_secs(10), || {
        let s = stats(&h);
        (n(&s, "backlog") == 0 && n(&s, "breakers_open") == 0).then_some(s)
    })
    .unwrap_or_else(|| panic!("backlog not empty: {}", stats(&h)));
    assert_eq!(n(&after, "sent"), COUNT, "{after}");
    assert_eq!(n(&after, "dead") + n(&after, "failed"), 0, "{after}");
    assert!(
        h.server.log().contains("provider answering again"),
        "the recovery is logged"
    );
}

#[test]
fn a_backlog_survives_a_restart_in_the_middle_of_the_outage() {
    const COUNT: u64 = 300;
    let mut h = start();
    accept(&h, 0, COUNT, None);
    wait_for_backlog(&h, COUNT);
    assert!(h.server.terminate().success());
    let shutdown_spent = h.sim.stats();
    h.server.spawn();
    let after_restart = stats(&h);
    assert_eq!(
        n(&after_restart, "recovered_deliveries"),
        COUNT,
        "{after_restart}"
    );
    wait_for_backlog(&h, COUNT);
    recover_and_drain(&h, 0..COUNT);
    // No delivery went dead: neither the outage nor the shutdown spent its attempts.
    let s = stats(&h);
    assert_eq!(
        n(&s, "dead"),
        0,
        "{s} (simulator before restart: {shutdown_spent:?})"
    );
}

#[test]
fn deliveries_whose_ttl_ran_out_during_the_outage_expire_unsent() {
    let h = start();
    accept(&h, 0, 100, Some(1));
    accept(&h, 100, 100, Some(3600));
    wait_for_backlog(&h, 200);
    std::thread::sleep(Duration::from_millis(1500));
    h.sim.set_faults(Faults::default());
    let s = common::wait_for(Duration::from_secs(30), || {
        let s = stats(&h);
        (n(&s, "backlog") == 0).then_some(s)
    })
    .unwrap_or_else(|| panic!("backlog not drained: {}", stats(&h)));
    assert_eq!(n(&s, "expired"), 100, "{s}");
    assert_eq!(n(&s, "sent"), 100, "{s}");
    let ledger = h.sim.ledger();
    assert!((0..100).all(|s| ledger.count(s) == 0), "nothing sent late");
    assert!((100..200).all(|s| ledger.count(s) == 1));
}
