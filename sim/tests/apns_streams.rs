//! Scenario: like APNs with token auth, a new connection allows one stream at a time until its
//! first request succeeds, then raises `SETTINGS_MAX_CONCURRENT_STREAMS`.

mod common;

use std::time::{Duration, Instant};

use clarion_sim::apns::Faults;
use common::{Apns, alert, push, send, token};

async fn wait_for_limit(client: &h2::client::SendRequest<bytes::Bytes>, want: usize) -> usize {
    for _ in 0..200 {
        if client.current_max_send_streams() == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    client.current_max_send_streams()
}

#[tokio::test]
async fn limit_starts_at_one_and_rises_after_the_first_success() {
    let apns = Apns::start(|c| c.max_concurrent_streams = 700);
    let client = apns.client().await;
    assert_eq!(client.current_max_send_streams(), 1);

    // A failed request does not raise it.
    let a = send(&client, push(&token(1), &apns.jwt(7200)), alert(1))
        .await
        .expect("send");
    assert_eq!(a.status, 403);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(client.current_max_send_streams(), 1);

    let a = send(&client, push(&token(1), &apns.jwt(0)), alert(2))
        .await
        .expect("send");
    assert_eq!(a.status, 200);
    assert_eq!(wait_for_limit(&client, 700).await, 700);

    // Each new connection starts over.
    let second = apns.client().await;
    assert_eq!(second.current_max_send_streams(), 1);
    assert_eq!(client.current_max_send_streams(), 700);
}

#[tokio::test]
async fn raised_limit_really_allows_concurrent_requests() {
    let apns = Apns::start(|_| {});
    apns.sim.set_faults(Faults {
        latency_us: 100_000,
        ..Faults::default()
    });
    let client = apns.client().await;
    let jwt = apns.jwt(0);
    assert_eq!(
        send(&client, push(&token(1), &jwt), alert(0))
            .await
            .expect("first")
            .status,
        200
    );
    wait_for_limit(&client, 1000).await;

    let started = Instant::now();
    let mut tasks = Vec::new();
    for seq in 1..=40u64 {
        let client = client.clone();
        let jwt = jwt.clone();
        tasks.push(tokio::spawn(async move {
            send(&client, push(&token(seq), &jwt), alert(seq)).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join").expect("send").status, 200);
    }
    let took = started.elapsed();
    // 40 requests x 100 ms one at a time would take 4 s.
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert_eq!(apns.sim.stats().refused_streams, 0);
}

#[tokio::test]
async fn equal_initial_and_max_advertises_max_from_the_start() {
    let apns = Apns::start(|c| {
        c.initial_max_concurrent_streams = 64;
        c.max_concurrent_streams = 64;
    });
    let client = apns.client().await;
    assert_eq!(client.current_max_send_streams(), 64);
    assert_eq!(
        send(&client, push(&token(1), &apns.jwt(0)), alert(1))
            .await
            .expect("send")
            .status,
        200
    );
}
