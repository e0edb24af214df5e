//! One notification per request from many connections at once, each sent twice at the same
//! moment (a client retrying before its first answer came back), on two shards: the original
//! and its retry may be accepted by different shards' connections and land in the same or in
//! different commit batches, with several batches handed to the storage thread before the
//! first is durable (`engine/committer.rs`). Both answers name the same notification, only one
//! says it is a replay, and each is delivered exactly once.
mod common;

use std::time::Duration;

use clarion_sim::apns::Faults;
use serde_json::json;

const USERS: u64 = 50;
/// Sender threads, each sending its keys one after the other.
const THREADS: u64 = 8;
/// Keys each thread sends, each twice at once.
const KEYS_PER_THREAD: u64 = 60;

#[test]
fn a_retry_racing_its_original_gets_the_same_id_and_one_delivery() {
    let h = common::start(2, Faults::default(), "");
    for u in 0..USERS {
        h.register(&format!("r{u}"), &[common::token(2000 + u)]);
    }
    let addr = h.server.addr;
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                let client = common::http::Client::new(addr, common::API_KEY);
                let mut pairs = Vec::new();
                for k in 0..KEYS_PER_THREAD {
                    let seq = t * KEYS_PER_THREAD + k;
                    let body = json!({"user_id": format!("r{}", seq % USERS),
                        "idempotency_key": format!("race{seq}"), "body": "race",
                        "data": {"lt_seq": seq}});
                    let (a, b) = std::thread::scope(|s| {
                        let retry = s
                            .spawn(|| client.call("POST", "/v1/notifications", Some(body.clone())));
                        let a = client.call("POST", "/v1/notifications", Some(body.clone()));
                        (a, retry.join().expect("retry thread"))
                    });
                    pairs.push((seq, a, b));
                }
                pairs
            })
        })
        .collect();
    let mut originals = Vec::new();
    for t in threads {
        for (seq, a, b) in t.join().expect("sender thread") {
            assert_eq!(a.status, 202, "{seq}: {}", a.body);
            assert_eq!(b.status, 202, "{seq}: {}", b.body);
            assert_eq!(
                a.body["id"], b.body["id"],
                "{seq}: both answers name one notification"
            );
            let replayed = [&a, &b]
                .iter()
                .filter(|r| r.body["duplicate"] == true)
                .count();
            assert_eq!(
                replayed, 1,
                "{seq}: exactly one is the replay: {} / {}",
                a.body, b.body
            );
            originals.push(seq);
        }
    }
    let total = THREADS * KEYS_PER_THREAD;
    assert_eq!(originals.len() as u64, total);
    h.assert_each_delivered_once(total, Duration::from_secs(60));
}
