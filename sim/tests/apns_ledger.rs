//! Scenario: the load-test ledger counts every accepted `lt_seq` (duplicates visible) and
//! measures end-to-end latency from `lt_ts`; the control endpoint serves the same data to a
//! load generator in another process and takes fault plans and resets.

mod common;

use bytes::Bytes;
use clarion_sim::apns::{Faults, SimControl};
use common::{Apns, alert, now_ns, push, send, token};

fn timed(seq: u64, ts_ns: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"aps":{{"alert":"x"}},"lt_seq":{seq},"lt_ts":{ts_ns}}}"#
    ))
}

#[tokio::test]
async fn ledger_counts_duplicates_and_measures_end_to_end_latency() {
    let apns = Apns::start(|_| {});
    let client = apns.client().await;
    let jwt = apns.jwt(0);
    let sent_at = now_ns() - 25_000_000; // intended 25 ms ago
    for seq in [1u64, 2, 2, 3, 3, 3] {
        let a = send(&client, push(&token(seq), &jwt), timed(seq, sent_at))
            .await
            .expect("send");
        assert_eq!(a.status, 200);
    }
    // Without lt_ts: counted, not timed. Without lt_seq: neither.
    send(&client, push(&token(4), &jwt), alert(4))
        .await
        .expect("send");
    send(
        &client,
        push(&token(5), &jwt),
        Bytes::from_static(b"{\"aps\":{}}"),
    )
    .await
    .expect("send");

    let ledger = apns.sim.ledger();
    assert_eq!(ledger.entries(), vec![(1, 1), (2, 2), (3, 3), (4, 1)]);
    assert_eq!(
        (ledger.distinct(), ledger.receipts(), ledger.duplicated()),
        (4, 7, 2)
    );
    let e2e = ledger.e2e_us();
    assert_eq!(e2e.len(), 6);
    assert!(
        e2e.min() >= 25_000,
        "at least the 25 ms head start: {}",
        e2e.min()
    );
    assert!(e2e.max() < 5_000_000, "{}", e2e.max());

    let stats = apns.sim.stats();
    assert_eq!((stats.ledger_receipts, stats.ledger_distinct), (7, 4));
    apns.sim.reset();
    assert_eq!(apns.sim.ledger().distinct(), 0);
    assert_eq!(apns.sim.stats().requests, 0);
    assert!(apns.sim.recent().is_empty());
}

#[tokio::test]
async fn control_endpoint_serves_stats_ledger_recent_and_takes_faults() {
    let apns = Apns::start(|c| c.control_listen = Some("127.0.0.1:0".parse().expect("addr")));
    let control = SimControl::new(apns.sim.control_addr().expect("control addr"));
    let client = apns.client().await;
    let jwt = apns.jwt(0);
    for seq in 10..20u64 {
        send(&client, push(&token(seq), &jwt), timed(seq, now_ns()))
            .await
            .expect("send");
    }
    send(&client, push(&token(15), &jwt), timed(15, now_ns()))
        .await
        .expect("send");

    let stats = control.stats().await.expect("stats");
    assert_eq!(stats, apns.sim.stats());
    assert_eq!(stats.accepted, 11);

    let ledger = control.ledger(None).await.expect("ledger");
    assert_eq!(ledger.entries(), apns.sim.ledger().entries());
    assert_eq!(ledger.count(15), 2);
    assert_eq!(ledger.e2e_us().len(), 11);
    let part = control.ledger(Some(12..14)).await.expect("ledger range");
    assert_eq!(part.entries(), vec![(12, 1), (13, 1)]);

    let recent = control.recent().await.expect("recent");
    assert_eq!(recent.len(), 11);
    assert_eq!(recent[0].token, token(10));

    let mut faults = Faults::default();
    faults.unregistered_tokens.insert(token(99));
    control.set_faults(&faults).await.expect("set faults");
    assert_eq!(apns.sim.faults(), faults);
    let a = send(&client, push(&token(99), &jwt), alert(99))
        .await
        .expect("send");
    assert_eq!(a.status, 410);
    let bad = Faults {
        drop_rate: 2.0,
        ..Faults::default()
    };
    assert!(
        control.set_faults(&bad).await.is_err(),
        "invalid faults are refused"
    );

    control.reset().await.expect("reset");
    assert_eq!(control.stats().await.expect("stats").requests, 0);
}
