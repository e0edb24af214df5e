//! Two shards, a mesh channel of one slot, and enough concurrent batch traffic that commands
//! for the other shard keep filling it: nothing deadlocks, nothing is lost, every item of
//! every batch is answered in order and delivered.
mod common;

use std::time::Duration;

use clarion_sim::apns::Faults;
use serde_json::{Value, json};

const USERS: u64 = 400;
const THREADS: u64 = 6;
const BATCHES: u64 = 8;
const PER_BATCH: u64 = 250;

#[test]
fn full_mesh_channels_neither_deadlock_nor_lose() {
    let h = common::start(
        2,
        Faults::default(),
        "\n[tuning]\nmesh_channel_capacity = 1",
    );
    for u in 0..USERS {
        h.register(&format!("x{u}"), &[common::token(1000 + u)]);
    }
    let owners: std::collections::HashSet<u32> = (0..USERS)
        .map(|u| clarion_shards::shard_for_user(&format!("x{u}"), 2))
        .collect();
    assert_eq!(owners.len(), 2, "users span both shards");
    let addr = h.server.addr;
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                let c = common::http::Client::new(addr, common::API_KEY);
                let mut ids = Vec::new();
                for b in 0..BATCHES {
                    let items: Vec<Value> = (0..PER_BATCH)
                        .map(|i| {
                            let seq = (t * BATCHES + b) * PER_BATCH + i;
                            json!({"user_id": format!("x{}", seq % USERS), "idempotency_key": format!("m{seq}"),
                                   "body": "mesh", "data": {"lt_seq": seq}})
                        })
                        .collect();
                    let body = json!({"notifications": items});
                    // Admission control may refuse a batch with `503 overloaded` and
                    // `Retry-After` when the machine is busy: a client sends it again (the
                    // idempotency keys make that safe), a bounded number of times.
                    let mut r = c.call("POST", "/v1/notifications/batch", Some(body.clone()));
                    for _ in 0..10 {
                        if r.status != 503 || r.body["error"]["code"] != "overloaded" {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_secs(1));
                        r = c.call("POST", "/v1/notifications/batch", Some(body.clone()));
                    }
                    assert_eq!(r.status, 200, "{}", r.body);
                    let res = r.body["results"].as_array().unwrap();
                    assert_eq!(res.len() as u64, PER_BATCH);
                    for (i, item) in res.iter().enumerate() {
                        assert_eq!(item["status"], 202, "{item}");
                        let id = item["id"].as_str().unwrap().to_string();
                        // Each shard answers its part of a batch at once: every result must
                        // still be the one for the item at its position.
                        if b == 0 {
                            let seq = t * BATCHES * PER_BATCH + i as u64;
                            let s = c.call("GET", &format!("/v1/notifications/{id}"), None);
                            assert_eq!(s.status, 200, "{}", s.body);
                            assert_eq!(s.body["idempotency_key"], format!("m{seq}"), "result {i}");
                            assert_eq!(s.body["user_id"], format!("x{}", seq % USERS), "result {i}");
                        }
                        ids.push(id);
                    }
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in threads {
        ids.extend(t.join().expect("sender thread"));
    }
    let total = THREADS * BATCHES * PER_BATCH;
    assert_eq!(ids.len() as u64, total);
    let uniq: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(
        uniq.len() as u64,
        total,
        "every notification got its own id"
    );
    h.assert_each_delivered_once(total, Duration::from_secs(60));
}
