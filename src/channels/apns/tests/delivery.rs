//! Scenarios where APNs answers: the request on the wire (path, every header, a JWT that
//! verifies), Apple's answers mapped to outcomes, the provider-token retry, and a graceful close.

use super::fake_apns::{FakeApns, Options, Reply};
use super::*;
use clarion_shards::Verdict;
use std::collections::BTreeMap;

const ID: u128 = 0x0F8FAD5B_D9CB_469F_A165_70867728950E;
const ID_TEXT: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

#[test]
fn a_send_arrives_with_every_header_and_a_jwt_that_verifies() {
    let server = FakeApns::start(Options::script(|_| Reply::ok()));
    let key = SigningKey::generate();
    let config = config(&server, &key, 1);
    let (outcomes, stats) = on_executor(move || async move {
        let sender = sender(config, quick());
        let alert = ApnsNotification {
            collapse_id: Some("orders-42"),
            expiration_unix_s: 1_700_000_000,
            ..notification(ID)
        };
        let background = ApnsNotification {
            push_type: PushType::Background,
            priority: 10,
            ..notification(ID + 1)
        };
        let outcomes = vec![sender.send(alert).await, sender.send(background).await];
        (outcomes, sender.stats())
    });
    assert_eq!(outcomes[0], Verdict::Sent);
    assert!(matches!(outcomes[1], Verdict::Sent));

    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    let first = &seen[0];
    assert_eq!(first.method, "POST");
    assert_eq!(
        first.uri,
        format!("https://127.0.0.1:{}/3/device/{TOKEN}", server.port)
    );
    let header = |name: &str| first.headers.get(name).map(String::as_str);
    assert_eq!(header("apns-topic"), Some(TOPIC));
    assert_eq!(header("apns-push-type"), Some("alert"));
    assert_eq!(header("apns-priority"), Some("10"));
    assert_eq!(header("apns-expiration"), Some("1700000000"));
    assert_eq!(header("apns-id"), Some(ID_TEXT));
    assert_eq!(header("apns-collapse-id"), Some("orders-42"));
    assert_eq!(first.body, PAYLOAD);
    let claims = key.verify(header("authorization").unwrap());
    assert_eq!(claims["iss"], TEAM_ID);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        now.abs_diff(claims["iat"].as_u64().unwrap()) < 60,
        "{claims}"
    );

    let second = &seen[1];
    assert_eq!(second.headers["apns-push-type"], "background");
    assert_eq!(
        second.headers["apns-priority"], "5",
        "background pushes go with priority 5"
    );
    assert!(!second.headers.contains_key("apns-collapse-id"));
    assert_eq!(
        second.headers["authorization"], first.headers["authorization"],
        "token reused"
    );

    assert_eq!(
        (stats.sends.requests, stats.sends.sent, stats.in_flight),
        (2, 2, 0)
    );
    assert_eq!(stats.sends.by_status, BTreeMap::from([(200, 2)]));
    assert_eq!(
        (
            stats.connections_open,
            stats.reconnects,
            stats.jwt_refreshes
        ),
        (1, 0, 0)
    );
}

#[test]
fn apples_refusals_become_permanent_outcomes_and_dead_tokens_are_deactivated() {
    let replies = [
        Reply::error(410, "Unregistered"),
        Reply::error(400, "BadDeviceToken"),
        Reply::error(400, "BadTopic"),
        Reply::error(413, "PayloadTooLarge"),
    ];
    let server = FakeApns::start(Options::script(move |i| replies[i].clone()));
    let config = config(&server, &SigningKey::generate(), 1);
    let (outcomes, stats) = on_executor(move || async move {
        let sender = sender(config, quick());
        let mut outcomes = Vec::new();
        for i in 0..4 {
            outcomes.push(sender.send(notification(ID + i)).await);
        }
        (outcomes, sender.stats())
    });
    let permanent = |reason: &str, deactivate: bool| Verdict::Permanent {
        reason: reason.into(),
        deactivate: deactivate.then(|| reason.split_once(' ').unwrap().1.to_string()),
        unregistered_at_ms: None,
    };
    assert_eq!(
        outcomes,
        vec![
            Verdict::Permanent {
                reason: "410 Unregistered".into(),
                deactivate: Some("Unregistered".into()),
                unregistered_at_ms: Some(1_700_000_000_000),
            },
            permanent("400 BadDeviceToken", true),
            permanent("400 BadTopic", false),
            permanent("413 PayloadTooLarge", false),
        ]
    );
    assert_eq!(stats.sends.permanent_failures, 4);
    assert_eq!(
        stats.sends.by_status,
        BTreeMap::from([(400, 2), (410, 1), (413, 1)])
    );
}

#[test]
fn an_expired_provider_token_is_re_signed_and_retried_within_one_send() {
    let server = FakeApns::start(Options::script(|i| match i {
        0 => Reply::error(403, "ExpiredProviderToken"),
        _ => Reply::ok(),
    }));
    let key = SigningKey::generate();
    let config = config(&server, &key, 1);
    let (outcome, stats) = on_executor(move || async move {
        let sender = sender(config, quick());
        (sender.send(notification(ID)).await, sender.stats())
    });
    assert_eq!(outcome, Verdict::Sent);
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_ne!(
        seen[0].headers["authorization"], seen[1].headers["authorization"],
        "a fresh token"
    );
    key.verify(&seen[1].headers["authorization"]);
    assert_eq!(seen[0].headers["apns-id"], seen[1].headers["apns-id"]);
    assert_eq!(
        (stats.sends.requests, stats.sends.sent, stats.jwt_refreshes),
        (1, 1, 1)
    );
    assert_eq!(stats.sends.by_status, BTreeMap::from([(200, 1), (403, 1)]));
}

#[test]
fn provider_token_faults_that_survive_one_retry_are_config_faults() {
    let server = FakeApns::start(Options::script(|i| match i {
        0 | 1 => Reply::error(403, "InvalidProviderToken"),
        _ => Reply::error(403, "BadCertificateEnvironment"),
    }));
    let config = config(&server, &SigningKey::generate(), 1);
    let (outcomes, stats) = on_executor(move || async move {
        let sender = sender(config, quick());
        (
            vec![
                sender.send(notification(ID)).await,
                sender.send(notification(ID + 1)).await,
            ],
            sender.stats(),
        )
    });
    assert_eq!(
        outcomes[0],
        Verdict::ConfigFault {
            reason: "403 InvalidProviderToken".into()
        }
    );
    assert_eq!(
        outcomes[1],
        Verdict::ConfigFault {
            reason: "403 BadCertificateEnvironment".into()
        }
    );
    let seen = server.seen();
    assert_eq!(
        seen.len(),
        3,
        "one retry for InvalidProviderToken, none for the rest"
    );
    assert_eq!(
        seen[0].headers["authorization"], seen[1].headers["authorization"],
        "a young token is not re-signed"
    );
    assert_eq!((stats.sends.config_faults, stats.jwt_refreshes), (2, 0));
}

#[test]
fn close_lets_running_sends_finish_then_refuses_and_closes_the_connections() {
    let server = FakeApns::start(Options::script(|_| {
        Reply::ok().after(Duration::from_millis(200))
    }));
    let config = config(&server, &SigningKey::generate(), 2);
    let (running, after, stats) = on_executor(move || async move {
        let sender = sender(config, quick());
        let task = glommio::spawn_local({
            let sender = sender.clone();
            async move { sender.send(notification(ID)).await }
        });
        assert!(
            eventually(Duration::from_secs(5), || sender.stats().connections_open
                == 2)
            .await
        );
        assert_eq!(sender.stats().in_flight, 1);
        sender.close().await;
        let after = sender.send(notification(ID + 1)).await;
        (task.await, after, sender.stats())
    });
    assert_eq!(running, Verdict::Sent);
    assert_eq!(
        after,
        Verdict::Unavailable {
            reason: "sender closed".into(),
            retry_after_ms: None
        }
    );
    assert_eq!(
        (
            stats.connections_open,
            stats.connections_lost,
            stats.in_flight
        ),
        (0, 0, 0)
    );
    assert_eq!(server.seen().len(), 1);
    let closed = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        server.connections_closed() == 2
    });
    assert!(
        closed,
        "both connections closed by the client, {} of 2",
        server.connections_closed()
    );
}
