//! `/readyz` and the drain behind a load balancer: `503 starting` until every shard serves,
//! `200` then; on SIGTERM `503 draining` at once while the listeners keep serving requests for
//! `[server] drain_delay_ms`, then a clean exit. `/healthz` (alive) stays `200` while draining.
mod common;

use std::time::{Duration, Instant};

use clarion_sim::apns::Faults;
use serde_json::json;

#[test]
fn readyz_turns_503_at_sigterm_while_requests_are_served_for_the_drain_delay() {
    let mut h = common::start(2, Faults::default(), "[server]\ndrain_delay_ms = 1500\n");
    let c = h.client();
    let r = c.call("GET", "/readyz", None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "ready");
    h.register("d1", &[common::token(1)]);

    let sent_at = Instant::now();
    h.server.signal(libc::SIGTERM);
    let r = common::wait_for(Duration::from_secs(2), || {
        let r = c.call("GET", "/readyz", None);
        (r.status == 503).then_some(r)
    })
    .expect("/readyz turns 503 after SIGTERM");
    assert_eq!(r.body["status"], "draining", "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "draining");
    assert!(
        sent_at.elapsed() < Duration::from_millis(1000),
        "503 came only after {:?}",
        sent_at.elapsed()
    );
    // Still alive, and still serving: a notification sent while draining is accepted and sent.
    assert_eq!(c.call("GET", "/healthz", None).status, 200);
    let r = h.notify(json!({"user_id": "d1", "idempotency_key": "while-draining", "body": "hi"}));
    assert_eq!(r.status, 202, "{:?}", r.body);
    let status = h.server.wait_exit();
    assert!(status.success(), "clean exit: {status}\n{}", h.server.log());
    assert!(
        sent_at.elapsed() >= Duration::from_millis(1500),
        "the listeners closed after {:?}, before the drain delay",
        sent_at.elapsed()
    );
    let log = h.server.log();
    assert!(log.contains("draining"), "{log}");
    assert!(log.contains("ready"), "{log}");
}
