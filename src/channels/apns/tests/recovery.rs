//! Scenarios where something goes wrong between us and APNs: server errors retried by the
//! caller, `503 Shutdown` and GOAWAY replacing the connection, a stalled stream timing out, a
//! peer that stops answering PINGs, and a server that will not speak HTTP/2.

use super::fake_apns::{Action, FakeApns, Options, Reply};
use super::*;
use clarion_shards::Verdict;

fn unavailable(reason: &str) -> Verdict {
    Verdict::Unavailable {
        reason: reason.into(),
        retry_after_ms: None,
    }
}

#[test]
fn service_unavailable_is_a_retry_and_the_callers_retry_goes_through_with_the_same_id() {
    let server = FakeApns::start(Options::script(|i| match i {
        0 => Reply::error(503, "ServiceUnavailable").header("retry-after", "2"),
        _ => Reply::ok(),
    }));
    let config = config(&server, &SigningKey::generate(), 1);
    let outcomes = on_executor(move || async move {
        let sender = sender(config, quick());
        vec![
            sender.send(notification(7)).await,
            sender.send(notification(7)).await,
        ]
    });
    let expected = Verdict::Unavailable {
        reason: "503 ServiceUnavailable".into(),
        retry_after_ms: Some(2000),
    };
    assert_eq!(outcomes[0], expected);
    assert!(matches!(outcomes[1], Verdict::Sent));
    let seen = server.seen();
    assert_eq!(seen[0].headers["apns-id"], seen[1].headers["apns-id"]);
    assert_eq!(
        seen[0].connection, seen[1].connection,
        "a plain 503 keeps the connection"
    );
}

#[test]
fn shutdown_503_replaces_the_connection() {
    let server = FakeApns::start(Options::script(|i| match i {
        0 => Reply::error(503, "Shutdown"),
        _ => Reply::ok(),
    }));
    let config = config(&server, &SigningKey::generate(), 1);
    let watch = server.watch();
    let (outcomes, stats, old_closed) = on_executor(move || async move {
        let sender = sender(config, quick());
        let outcomes = vec![
            sender.send(notification(1)).await,
            sender.send(notification(2)).await,
        ];
        let old_closed =
            eventually(Duration::from_secs(5), || watch.connections_closed() == 1).await;
        (outcomes, sender.stats(), old_closed)
    });
    assert!(
        old_closed,
        "the retired connection was closed while the sender lived"
    );
    assert_eq!(outcomes[0], unavailable("503 Shutdown"));
    assert!(matches!(outcomes[1], Verdict::Sent));
    let seen = server.seen();
    assert_ne!(seen[0].connection, seen[1].connection);
    assert_eq!(
        (
            stats.reconnects,
            stats.connections_lost,
            stats.connections_open
        ),
        (1, 1, 1)
    );
}

#[test]
fn goaway_mid_stream_is_a_retry_and_the_next_send_reconnects() {
    let server = FakeApns::start(Options::script(|i| match i {
        0 => Reply::doing(Action::AbruptGoaway),
        _ => Reply::ok(),
    }));
    let config = config(&server, &SigningKey::generate(), 1);
    let (outcomes, stats) = on_executor(move || async move {
        let sender = sender(config, quick());
        (
            vec![
                sender.send(notification(1)).await,
                sender.send(notification(2)).await,
            ],
            sender.stats(),
        )
    });
    assert_eq!(outcomes[0], unavailable("connection lost"));
    assert!(matches!(outcomes[1], Verdict::Sent), "{:?}", outcomes[1]);
    assert_eq!(server.connections(), 2);
    assert_eq!(
        (
            stats.connections_lost,
            stats.reconnects,
            stats.connections_open
        ),
        (1, 1, 1)
    );
    assert_eq!(stats.sends.retries, 1);
}

#[test]
fn a_refused_stream_is_sent_again_at_once() {
    let server = FakeApns::start(Options::script(|i| match i {
        0 => Reply::doing(Action::Refuse),
        _ => Reply::ok(),
    }));
    let config = config(&server, &SigningKey::generate(), 1);
    let (outcome, stats) = on_executor(move || async move {
        let sender = sender(config, quick());
        (sender.send(notification(5)).await, sender.stats())
    });
    assert!(matches!(outcome, Verdict::Sent), "{outcome:?}");
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].headers["apns-id"], seen[1].headers["apns-id"]);
    assert_eq!(
        seen[0].connection, seen[1].connection,
        "a refusal keeps the connection"
    );
    assert_eq!(
        (stats.sends.requests, stats.sends.sent, stats.sends.retries),
        (1, 1, 0)
    );
}

#[test]
fn a_graceful_goaway_loses_nothing() {
    let server = FakeApns::start(Options::script(|i| match i {
        0 => Reply::doing(Action::GracefulGoaway).after(Duration::from_millis(150)),
        _ => Reply::ok().after(Duration::from_millis(20)),
    }));
    let config = config(&server, &SigningKey::generate(), 1);
    let outcomes = on_executor(move || async move {
        let sender = sender(config, quick());
        let first = glommio::spawn_local({
            let sender = sender.clone();
            async move { sender.send(notification(1)).await }
        });
        // Sends that start while the connection drains must find their way to a new one.
        glommio::timer::sleep(Duration::from_millis(50)).await;
        let later: Vec<_> = (2..6)
            .map(|i| {
                let sender = sender.clone();
                glommio::spawn_local(async move { sender.send(notification(i)).await })
            })
            .collect();
        let mut outcomes = vec![first.await];
        for task in later {
            outcomes.push(task.await);
        }
        outcomes
    });
    assert!(
        outcomes.iter().all(|o| matches!(o, Verdict::Sent)),
        "{outcomes:?}"
    );
    assert!(server.connections() >= 2, "a new connection took over");
}

#[test]
fn a_stalled_request_times_out_as_a_retry_without_losing_the_connection() {
    let server = FakeApns::start(Options::script(|i| match i {
        0 => Reply::ok().after(Duration::from_secs(5)),
        _ => Reply::ok(),
    }));
    let config = config(&server, &SigningKey::generate(), 1);
    let tuning = Tuning {
        request_timeout: Duration::from_millis(300),
        ..quick()
    };
    let (outcomes, elapsed, stats) = on_executor(move || async move {
        let sender = sender(config, tuning);
        let start = std::time::Instant::now();
        let first = sender.send(notification(1)).await;
        let elapsed = start.elapsed();
        (
            vec![first, sender.send(notification(2)).await],
            elapsed,
            sender.stats(),
        )
    });
    assert_eq!(outcomes[0], unavailable("request timed out"));
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert!(matches!(outcomes[1], Verdict::Sent));
    assert_eq!(
        (
            stats.sends.timeouts,
            stats.connections_lost,
            stats.in_flight
        ),
        (1, 0, 0)
    );
}

#[test]
fn a_peer_that_stops_answering_pings_is_replaced() {
    let server = FakeApns::start(Options::script(|_| Reply::ok()));
    let config = config(&server, &SigningKey::generate(), 1);
    let tuning = Tuning {
        ping_idle_interval: Duration::from_millis(100),
        ping_timeout: Duration::from_millis(200),
        ..quick()
    };
    // The client thread tells this one when to silence the server's PONGs and when to stop.
    let (flip_tx, flip_rx) = std::sync::mpsc::channel::<bool>();
    let (lost_tx, lost_rx) = std::sync::mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        on_executor(move || async move {
            let sender = sender(config, tuning);
            let first = sender.send(notification(1)).await;
            flip_tx.send(true).unwrap();
            let lost = eventually(Duration::from_secs(5), || {
                sender.stats().connections_lost >= 1
            })
            .await;
            flip_tx.send(false).unwrap();
            lost_tx.send(()).unwrap();
            glommio::timer::sleep(Duration::from_millis(50)).await;
            (
                first,
                lost,
                sender.send(notification(2)).await,
                sender.stats(),
            )
        })
    });
    assert!(flip_rx.recv().unwrap());
    server.drop_pongs(true);
    assert!(!flip_rx.recv().unwrap());
    server.drop_pongs(false);
    lost_rx.recv().unwrap();
    let (first, lost, second, stats) = client.join().unwrap();
    assert!(matches!(first, Verdict::Sent));
    assert!(lost, "the silent connection was detected");
    assert!(matches!(second, Verdict::Sent), "{second:?}");
    let seen = server.seen();
    assert_eq!((seen[0].connection, seen[1].connection), (0, 1));
    assert!(stats.reconnects >= 1);
}

#[test]
fn a_server_that_does_not_negotiate_h2_is_never_used() {
    let options = Options {
        offer_h2: false,
        ..Options::script(|_| Reply::ok())
    };
    let server = FakeApns::start(options);
    let config = config(&server, &SigningKey::generate(), 1);
    let tuning = Tuning {
        request_timeout: Duration::from_millis(500),
        ..quick()
    };
    let (outcome, stats) = on_executor(move || async move {
        let sender = sender(config, tuning);
        (sender.send(notification(1)).await, sender.stats())
    });
    assert_eq!(outcome, unavailable("request timed out"));
    assert!(stats.connect_failures >= 1, "{stats:?}");
    assert!(
        stats.connect_failures <= 12,
        "backoff paces the attempts: {stats:?}"
    );
    assert_eq!(stats.connections_open, 0);
    assert!(server.seen().is_empty());
}
