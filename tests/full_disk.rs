//! The data directory's file system fills up under load (a small tmpfs the test mounts): the
//! shard answers `503` with `Retry-After` and poisons its log instead of writing past the failed
//! write; nothing is answered `202` after it; once space returns and the server restarts, every
//! notification answered `202` before the fault is there and delivered, and nothing is corrupt.
mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use clarion_sim::apns::Faults;
use common::disk::Mount;
use serde_json::json;

/// The file system: room for the server's start with a ballast file filling the rest.
const FS_BYTES: u64 = 64 << 20;
/// What the ballast leaves free for the load to fill: a few hundred notifications.
const HEADROOM: u64 = 256 << 10;
/// A bound on the load, whatever happens.
const MAX_REQUESTS: u64 = 20_000;
const USERS: u64 = 20;
const SHARDS: u32 = 2;

#[test]
fn a_full_disk_answers_503_poisons_the_log_and_loses_nothing_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let mount = Mount::tmpfs(&dir.path().join("data"), FS_BYTES);
    let mut h = common::start_in(dir, SHARDS as usize, |c| c.faults = Faults::default(), "");
    for u in 0..USERS {
        h.register(&format!("full{u}"), &[common::token(u)]);
    }
    let free = mount.available();
    let mut ballast = std::fs::File::create(mount.path.join("ballast")).unwrap();
    let chunk = vec![0x42u8; 1 << 20];
    let mut left = free.saturating_sub(HEADROOM);
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        ballast.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    ballast.sync_all().unwrap();
    drop(ballast);

    // Load until the disk is full: every answer is a 202 or, once the user's shard has met the
    // fault, a 503. Each shard has its own log, so each fails on its own.
    let mut accepted = BTreeMap::new();
    let mut refused = [0u32; SHARDS as usize];
    let started = Instant::now();
    for seq in 0..MAX_REQUESTS {
        let user = format!("full{}", seq % USERS);
        let shard = clarion_shards::shard_for_user(&user, SHARDS) as usize;
        let r = h.notify(
            json!({"user_id": user, "idempotency_key": format!("f{seq}"),
                                "body": "x".repeat(200), "data": {"lt_seq": seq}}),
        );
        match r.status {
            202 if refused[shard] == 0 => {
                accepted.insert(seq, r.body["id"].as_str().unwrap().to_string());
            }
            202 => panic!(
                "202 for {seq} from shard {shard} after it refused: its log wrote past a failed write"
            ),
            503 => {
                assert_eq!(r.header("retry-after"), Some("1"), "{:?}", r.headers);
                assert_eq!(r.body["error"]["code"], "unavailable", "{}", r.body);
                refused[shard] += 1;
                if refused.iter().all(|&n| n >= 20) {
                    break;
                }
            }
            s => panic!("unexpected {s}: {}", r.body),
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the disk never filled"
        );
    }
    assert!(
        refused.iter().all(|&n| n >= 20),
        "{} accepted, refused per shard {refused:?}",
        accepted.len()
    );
    assert!(
        accepted.len() > 100,
        "the load got going: {}",
        accepted.len()
    );
    let log = h.server.log();
    assert!(log.contains("poisoning the log"), "{log}");

    // Space returns; a restart recovers everything accepted, and nothing is corrupt.
    std::fs::remove_file(mount.path.join("ballast")).unwrap();
    h.server.kill9();
    h.server.spawn();
    for id in accepted.values() {
        h.status(id);
    }
    let ledger = common::wait_for(Duration::from_secs(30), || {
        let l = h.sim.ledger();
        accepted.keys().all(|s| l.count(*s) > 0).then_some(l)
    });
    assert!(
        ledger.is_some(),
        "every notification accepted before the fault is delivered"
    );
    let log = h.server.log();
    // A write cut short by ENOSPC can leave a last batch whose checksum fails: it held nothing
    // acknowledged (every accepted one is delivered, above), and it is cut back and reported.
    assert!(!log.contains("moved to quarantine"), "{log}");
    let r = h.notify(json!({"user_id": "full0", "idempotency_key": "after", "body": "x"}));
    assert_eq!(r.status, 202, "the shard writes again: {}", r.body);
    eprintln!(
        "accepted {} before the disk filled, refused per shard after: {refused:?}",
        accepted.len()
    );
    drop(h);
    drop(mount);
}
