//! Scenario: the ledger phase accounts for every accepted notification. A stand-in API
//! accepts notifications and a relay pushes them to the APNs simulator, losing some,
//! duplicating one and pushing one that was never accepted; the report must name each exactly,
//! through the in-process handle and through the control endpoint.

mod common;

use std::time::Duration;

use bytes::Bytes;
use clarion_loadtest::load::{LoadConfig, Protocol, SimLink, run_async};
use common::fake_api::{API_KEY, Accepted, Behaviour, FakeApi};
use common::{Apns, push, send, token};
use tokio::sync::mpsc;

/// Seqs below this are the first run, where the relay misbehaves.
const FIRST_RUN: u64 = 100;

fn payload(seq: u64, ts: Option<u64>) -> Bytes {
    let ts = ts.map_or(String::new(), |t| format!(r#","lt_ts":{t}"#));
    Bytes::from(format!(r#"{{"aps":{{"alert":"x"}},"lt_seq":{seq}{ts}}}"#))
}

/// Pushes accepted notifications to the simulator: in the first run it drops every seq ending
/// in 3, sends seq 5 twice, and sends the rejected seq 7 when it sees 6.
async fn spawn_relay(apns: &Apns) -> mpsc::UnboundedSender<Accepted> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Accepted>();
    let jwt = apns.jwt(0);
    let client = apns.client().await;
    tokio::spawn(async move {
        while let Some(Accepted { seq, lt_ts: ts, .. }) = rx.recv().await {
            let mut seqs = vec![seq];
            if seq < FIRST_RUN {
                match seq {
                    s if s % 10 == 3 => seqs.clear(),
                    5 => seqs.push(5),
                    6 => seqs.push(7),
                    _ => {}
                }
            }
            for s in seqs {
                let a = send(&client, push(&token(s), &jwt), payload(s, ts))
                    .await
                    .expect("push");
                assert_eq!(a.status, 200);
            }
        }
    });
    tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_names_lost_duplicated_and_unexpected_notifications() {
    let apns = Apns::start(|c| c.control_listen = Some("127.0.0.1:0".parse().expect("addr")));
    let relay = spawn_relay(&apns).await;
    let api = FakeApi::start(Behaviour {
        reject: [7].into(),
        accepted: Some(relay),
        ..Behaviour::default()
    })
    .await;
    let cfg = LoadConfig {
        target: api.addr,
        api_key: API_KEY.into(),
        protocol: Protocol::H2,
        users: 10,
        rate: 200.0,
        duration: Duration::from_millis(500),
        drain_timeout: Duration::from_secs(2),
        ..LoadConfig::default()
    };
    let r = run_async(&cfg, SimLink::InProcess(&apns.sim))
        .await
        .expect("run");
    assert_eq!(r.scheduled, FIRST_RUN);
    assert_eq!(r.accepted, 99, "seq 7 was rejected");
    let l = r.ledger.expect("ledger checked");
    assert_eq!(l.accepted, 99);
    assert_eq!(l.lost, 10);
    assert_eq!(l.lost_sample, vec![3, 13, 23, 33, 43, 53, 63, 73, 83, 93]);
    assert_eq!(l.received, 89);
    assert_eq!((l.duplicated, l.duplicated_sample.clone()), (1, vec![5]));
    assert_eq!((l.unexpected, l.unexpected_sample.clone()), (1, vec![7]));
    assert!(!l.drained);
    assert!(
        l.waited >= Duration::from_secs(2),
        "waited the drain timeout: {:?}",
        l.waited
    );
    let e2e = r.e2e_latency_us.expect("e2e histogram");
    assert_eq!(
        e2e.len(),
        91,
        "every push that carried lt_ts, duplicates included"
    );

    // A second run continues the sequence and reads the ledger over the control endpoint.
    let control = apns.sim.control_addr().expect("control");
    let cfg = LoadConfig {
        seq_start: r.next_seq,
        register: false,
        drain_timeout: Duration::from_secs(10),
        ..cfg
    };
    let r2 = run_async(&cfg, SimLink::Control(control))
        .await
        .expect("second run");
    assert!(r2.registration.is_none());
    assert_eq!(r2.next_seq, 2 * FIRST_RUN);
    let l2 = r2.ledger.expect("ledger checked");
    assert_eq!(
        (
            l2.accepted,
            l2.received,
            l2.lost,
            l2.duplicated,
            l2.unexpected
        ),
        (100, 100, 0, 0, 0)
    );
    assert!(l2.drained);
    assert!(l2.waited < Duration::from_secs(5));
    assert_eq!(
        r2.e2e_latency_us.expect("e2e").len(),
        100,
        "the sim was reset before the run"
    );
}
