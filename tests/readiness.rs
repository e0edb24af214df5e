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
    assert!(log.contains("clarion started: ready"), "{log}");
}

/// A request still arriving when the listeners close (a slow upload) is answered before the
/// shard stops: the stop waits for open connections to finish their requests.
#[test]
fn a_request_in_flight_at_the_stop_gets_its_answer() {
    use std::io::{Read, Write};
    let mut h = common::start(2, Faults::default(), "");
    h.register("slow", &[common::token(3)]);
    let body = serde_json::to_vec(&json!({"notifications": (0..50)
        .map(|i| json!({"user_id": "slow", "idempotency_key": format!("s{i}"), "body": "x".repeat(200)}))
        .collect::<Vec<_>>()}))
    .unwrap();
    let mut s = std::net::TcpStream::connect(h.server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST /v1/notifications/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        common::server::API_KEY,
        body.len()
    )
    .unwrap();
    let half = body.len() / 2;
    s.write_all(&body[..half]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    h.server.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    s.write_all(&body[half..]).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "answer: {answer}\n{}",
        h.server.log()
    );
    assert_eq!(answer.matches("\"status\":202").count(), 50, "{answer}");
    assert!(h.server.wait_exit().success(), "{}", h.server.log());
}
