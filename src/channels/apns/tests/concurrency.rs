//! Scenarios about parallelism: the server's SETTINGS_MAX_CONCURRENT_STREAMS is obeyed while it
//! is 1 (as APNs starts) and followed when raised, requests beyond it wait with us (not inside
//! h2) so a lost connection fails only what was on it, and load spreads over the connections.

use super::fake_apns::{Action, FakeApns, Options, Reply};
use super::*;
use clarion_shards::Verdict;
use std::collections::BTreeSet;

const BURST: u128 = 12;

fn burst(sender: &Rc<ApnsSender>) -> Vec<glommio::task::JoinHandle<Verdict>> {
    (0..BURST)
        .map(|i| {
            let sender = sender.clone();
            glommio::spawn_local(async move { sender.send(notification(100 + i)).await }).detach()
        })
        .collect()
}

#[test]
fn one_stream_at_a_time_until_the_server_raises_the_limit_then_many() {
    let server = FakeApns::start(Options::script(|_| {
        Reply::ok().after(Duration::from_millis(50))
    }));
    let config = config(&server, &SigningKey::generate(), 1);
    let outcomes = on_executor(move || async move {
        let sender = sender(config, quick());
        let mut outcomes = Vec::new();
        for task in burst(&sender) {
            outcomes.push(task.await);
        }
        outcomes
    });
    assert!(
        outcomes.iter().all(|o| matches!(o, Some(Verdict::Sent))),
        "{outcomes:?}"
    );
    let seen = server.seen();
    assert_eq!(seen.len(), BURST as usize);
    assert_eq!(server.connections(), 1);
    let under_limit_one: Vec<_> = seen.iter().filter(|s| s.advertised == 1).collect();
    assert_eq!(
        under_limit_one.len(),
        2,
        "the first two arrive before the raise"
    );
    assert!(
        under_limit_one.iter().all(|s| s.concurrent == 1),
        "limit 1 obeyed: {seen:?}"
    );
    let peak = seen.iter().map(|s| s.concurrent).max().unwrap();
    assert!(peak >= 5, "concurrency rose after the raise, peak {peak}");
}

#[test]
fn load_spreads_over_every_configured_connection() {
    let server = FakeApns::start(Options::script(|_| {
        Reply::ok().after(Duration::from_millis(30))
    }));
    let config = config(&server, &SigningKey::generate(), 2);
    let (outcomes, stats) = on_executor(move || async move {
        let sender = sender(config, quick());
        let warm_up = sender.send(notification(1)).await;
        assert!(
            eventually(Duration::from_secs(5), || sender.stats().connections_open
                == 2)
            .await
        );
        let mut outcomes = vec![Some(warm_up)];
        for task in burst(&sender) {
            outcomes.push(task.await);
        }
        (outcomes, sender.stats())
    });
    assert!(
        outcomes.iter().all(|o| matches!(o, Some(Verdict::Sent))),
        "{outcomes:?}"
    );
    let connections: BTreeSet<usize> = server.seen().iter().map(|s| s.connection).collect();
    assert_eq!(connections.len(), 2, "both connections carried requests");
    assert_eq!(
        (stats.connections_open, stats.sends.sent),
        (2, BURST as u64 + 1)
    );
}

#[test]
fn requests_over_the_limit_wait_with_us_so_a_lost_connection_fails_only_its_own() {
    let options = Options {
        raised_streams: 1,
        ..Options::script(|i| match i {
            0 => Reply::doing(Action::AbruptGoaway),
            _ => Reply::ok().after(Duration::from_millis(5)),
        })
    };
    let server = FakeApns::start(options);
    let config = config(&server, &SigningKey::generate(), 1);
    let outcomes = on_executor(move || async move {
        let sender = sender(config, quick());
        let mut outcomes = Vec::new();
        for task in burst(&sender) {
            outcomes.push(task.await);
        }
        outcomes
    });
    let lost = outcomes
        .iter()
        .filter(
            |o| matches!(o, Some(Verdict::Unavailable { reason, .. }) if reason == "connection lost"),
        )
        .count();
    let sent = outcomes
        .iter()
        .filter(|o| matches!(o, Some(Verdict::Sent)))
        .count();
    assert_eq!((lost, sent), (1, BURST as usize - 1), "{outcomes:?}");
    let seen = server.seen();
    assert_eq!(seen.len(), BURST as usize, "nothing sent twice");
    assert!(seen.iter().all(|s| s.concurrent == 1));
}
