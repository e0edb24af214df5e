//! Scenario: injected faults: dead and bad tokens, error rates, latency, GOAWAY and dropped
//! connections, changed at run time.

mod common;

use std::time::{Duration, Instant};

use clarion_sim::apns::Faults;
use common::{Apns, alert, now_secs, push, send, token};

#[tokio::test]
async fn unregistered_token_is_410_with_timestamp_and_bad_token_is_400() {
    let apns = Apns::start(|_| {});
    let mut faults = Faults::default();
    faults.unregistered_tokens.insert(token(1));
    faults.bad_device_tokens.insert(token(2));
    apns.sim.set_faults(faults);
    let client = apns.client().await;
    let jwt = apns.jwt(0);

    let a = send(&client, push(&token(1), &jwt), alert(1))
        .await
        .expect("send");
    assert_eq!(a.status, 410);
    let body = a.json();
    assert_eq!(body["reason"], "Unregistered");
    let ts = body["timestamp"].as_u64().expect("timestamp in ms");
    assert!(ts.abs_diff(now_secs() * 1000) < 60_000, "{ts}");
    assert!(a.apns_id.is_some());

    let a = send(&client, push(&token(2), &jwt), alert(2))
        .await
        .expect("send");
    assert_eq!(
        (a.status, a.reason().as_deref()),
        (400, Some("BadDeviceToken"))
    );
    assert_eq!(
        send(&client, push(&token(3), &jwt), alert(3))
            .await
            .expect("send")
            .status,
        200
    );
    assert_eq!(
        apns.sim.ledger().count(1),
        0,
        "rejected pushes are not in the ledger"
    );
    assert_eq!(apns.sim.ledger().count(3), 1);
}

#[tokio::test]
async fn error_rates_are_deterministic_per_seed_and_can_be_cleared() {
    let apns = Apns::start(|_| {});
    let client = apns.client().await;
    let jwt = apns.jwt(0);
    let faults = Faults {
        too_many_requests_rate: 0.2,
        internal_error_rate: 0.2,
        unavailable_rate: 0.2,
        seed: 42,
        ..Faults::default()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        apns.sim.set_faults(faults.clone());
        let mut statuses = Vec::new();
        for seq in 0..200 {
            statuses.push(
                send(&client, push(&token(seq), &jwt), alert(seq))
                    .await
                    .expect("send")
                    .status,
            );
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1], "same seed, same answers");
    for status in [200, 429, 500, 503] {
        let n = runs[0].iter().filter(|s| **s == status).count();
        assert!(n > 20, "status {status} seen {n} times");
    }
    let stats = apns.sim.stats();
    assert!(
        stats
            .by_reason
            .get("TooManyRequests")
            .is_some_and(|n| *n > 20)
    );
    assert!(
        stats
            .by_reason
            .get("ServiceUnavailable")
            .is_some_and(|n| *n > 20)
    );

    apns.sim.set_faults(Faults::default());
    for seq in 0..20 {
        assert_eq!(
            send(&client, push(&token(seq), &jwt), alert(seq))
                .await
                .expect("send")
                .status,
            200
        );
    }
}

#[tokio::test]
async fn latency_is_added_to_each_answer() {
    let apns = Apns::start(|_| {});
    apns.sim.set_faults(Faults {
        latency_us: 80_000,
        jitter_us: 20_000,
        ..Faults::default()
    });
    let client = apns.client().await;
    let started = Instant::now();
    let a = send(&client, push(&token(1), &apns.jwt(0)), alert(1))
        .await
        .expect("send");
    let took = started.elapsed();
    assert_eq!(a.status, 200);
    assert!(took >= Duration::from_millis(80), "{took:?}");
    assert!(took < Duration::from_millis(1000), "{took:?}");
}

#[tokio::test]
async fn goaway_after_n_requests_sends_the_client_away() {
    let apns = Apns::start(|_| {});
    apns.sim.set_faults(Faults {
        goaway_after_requests: Some(3),
        ..Faults::default()
    });
    let client = apns.client().await;
    let jwt = apns.jwt(0);
    for seq in 0..3 {
        assert_eq!(
            send(&client, push(&token(seq), &jwt), alert(seq))
                .await
                .expect("send")
                .status,
            200
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        send(&client, push(&token(9), &jwt), alert(9))
            .await
            .is_err(),
        "connection is going away"
    );
    assert_eq!(apns.sim.stats().goaways, 1);
    // A new connection works.
    let client = apns.client().await;
    assert_eq!(
        send(&client, push(&token(9), &jwt), alert(9))
            .await
            .expect("send")
            .status,
        200
    );
    assert_eq!(apns.sim.stats().connections, 2);
}

#[tokio::test]
async fn dropped_connection_leaves_the_request_unanswered() {
    let apns = Apns::start(|_| {});
    apns.sim.set_faults(Faults {
        drop_after_requests: Some(2),
        ..Faults::default()
    });
    let client = apns.client().await;
    let jwt = apns.jwt(0);
    assert_eq!(
        send(&client, push(&token(1), &jwt), alert(1))
            .await
            .expect("send")
            .status,
        200
    );
    assert!(
        send(&client, push(&token(2), &jwt), alert(2))
            .await
            .is_err()
    );
    let stats = apns.sim.stats();
    assert_eq!(stats.dropped_connections, 1);
    assert_eq!(stats.requests, 1, "the dropped request was never answered");

    apns.sim.set_faults(Faults {
        drop_rate: 1.0,
        ..Faults::default()
    });
    let client = apns.client().await;
    assert!(
        send(&client, push(&token(3), &jwt), alert(3))
            .await
            .is_err()
    );
    assert_eq!(apns.sim.stats().dropped_connections, 2);
}

#[tokio::test]
async fn refused_connections_close_the_listener_until_cleared() {
    let apns = Apns::start(|_| {});
    let client = apns.client().await;
    let jwt = apns.jwt(0);
    assert_eq!(
        send(&client, push(&token(1), &jwt), alert(1))
            .await
            .expect("send")
            .status,
        200
    );
    apns.sim.set_faults(Faults {
        refuse_connections: true,
        ..Faults::default()
    });
    // The open connection is closed at its next request, unanswered.
    assert!(
        send(&client, push(&token(2), &jwt), alert(2))
            .await
            .is_err()
    );
    // New connections are refused by the kernel once the listener has noticed (within 20 ms).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpStream::connect(apns.sim.addr()).await {
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
                break;
            }
            Ok(_) => assert!(Instant::now() < deadline, "still accepting connections"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    apns.sim.set_faults(Faults::default());
    // Listening again on the same address.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(apns.sim.addr())
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "not listening again");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let client = apns.client().await;
    assert_eq!(
        send(&client, push(&token(3), &jwt), alert(3))
            .await
            .expect("send")
            .status,
        200
    );
    assert_eq!(apns.sim.ledger().count(2), 0);
    assert_eq!(apns.sim.ledger().count(3), 1);
}
