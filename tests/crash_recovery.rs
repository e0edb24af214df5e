//! `kill -9` in the middle of a load, then restart: every notification answered 202 before the
//! crash is delivered. Re-sends are allowed only for deliveries in flight at the crash: each is
//! received at most twice, and they are counted.
mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clarion_sim::apns::Faults;
use serde_json::json;

const USERS: u64 = 100;
const SENDERS: u64 = 4;

#[test]
fn everything_acknowledged_before_kill_9_is_delivered() {
    // A slow provider (4 streams per connection, 500 ms each) so a backlog is queued and in
    // flight when the kill lands, whatever the machine's speed.
    let mut h = common::start_with(
        2,
        |c| {
            c.faults = Faults {
                latency_us: 500_000,
                ..Faults::default()
            };
            c.max_concurrent_streams = 4;
        },
        "",
    );
    for u in 0..USERS {
        h.register(&format!("user{u}"), &[common::token(u)]);
    }
    let accepted = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let addr = h.server.addr;
    let threads: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (accepted, stop, next) = (accepted.clone(), stop.clone(), next.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    let body = json!({"user_id": format!("user{}", seq % USERS), "idempotency_key": format!("crash-{seq}"),
                                      "body": "crash test", "data": {"lt_seq": seq}});
                    let bytes = serde_json::to_vec(&body).unwrap();
                    let r = common::http::Client::new(addr, common::API_KEY).try_raw(
                        "POST",
                        "/v1/notifications",
                        Some(&bytes),
                    );
                    match r {
                        Ok(resp) if resp.status == 202 => {
                            accepted.lock().unwrap().insert(seq);
                        }
                        Ok(_) => {}
                        Err(_) => break, // the server is gone
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    h.server.kill9();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let accepted: HashSet<u64> = accepted.lock().unwrap().clone();
    assert!(
        accepted.len() > 100,
        "the load got going: {} accepted",
        accepted.len()
    );
    std::thread::sleep(Duration::from_millis(100)); // let requests the simulator holds finish
    let before_restart = h.sim.ledger();
    let delivered_before: usize = accepted
        .iter()
        .filter(|s| before_restart.count(**s) > 0)
        .count();
    assert!(
        delivered_before < accepted.len(),
        "some accepted notifications were still undelivered at the kill ({delivered_before} of {})",
        accepted.len()
    );

    // The provider recovers its speed, so the restarted server drains the backlog quickly.
    h.sim.set_faults(Faults::default());
    h.server.spawn();
    let ledger = common::wait_for(Duration::from_secs(60), || {
        let l = h.sim.ledger();
        accepted.iter().all(|s| l.count(*s) > 0).then_some(l)
    });
    let ledger = ledger.unwrap_or_else(|| {
        let l = h.sim.ledger();
        let lost: Vec<_> = accepted
            .iter()
            .filter(|s| l.count(**s) == 0)
            .take(20)
            .collect();
        panic!(
            "lost after restart (first 20): {lost:?}\n{}",
            h.server.log()
        )
    });
    let duplicated: Vec<u64> = accepted
        .iter()
        .copied()
        .filter(|s| ledger.count(*s) > 1)
        .collect();
    eprintln!(
        "accepted {} | delivered before the crash {} | re-sent after restart (in flight at the crash) {}",
        accepted.len(),
        delivered_before,
        duplicated.len()
    );
    assert!(
        duplicated.iter().all(|s| ledger.count(*s) == 2),
        "a delivery is re-sent at most once per crash"
    );
    assert!(
        duplicated.len() <= accepted.len() - delivered_before + 4096,
        "only deliveries in flight at the crash may be re-sent"
    );
}
