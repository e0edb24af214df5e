//! The disk under the data directory starts failing its writes, so the group commit's fsync
//! returns EIO (an ext4 image on a loop device the test shrinks under the mounted file system:
//! a real kernel I/O error, no fault hook in the server). The shard answers `503` with
//! `Retry-After`, poisons its log and answers nothing `202` after; once the disk is back (and
//! checked with e2fsck) and the server restarted, everything acknowledged before is there and
//! delivered.
mod common;

use std::time::Duration;

use clarion_sim::apns::Faults;
use common::disk::Mount;
use serde_json::json;

const FS_BYTES: u64 = 128 << 20;
/// The device keeps only its first block (the superblock): every write-back after it fails.
const FAILING_DEVICE_BYTES: u64 = 4096;
const BEFORE: u64 = 30;
const AFTER: u64 = 20;

#[test]
fn a_failing_fsync_answers_503_poisons_the_log_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut mount = Mount::ext4(
        &dir.path().join("disk.img"),
        &dir.path().join("data"),
        FS_BYTES,
    );
    let mut h = common::start_in(dir, 1, |c| c.faults = Faults::default(), "");
    h.register("eio", &[common::token(3)]);
    let notify = |h: &common::Harness, seq: u64| {
        h.notify(
            json!({"user_id": "eio", "idempotency_key": format!("e{seq}"),
                        "body": "hi", "data": {"lt_seq": seq}}),
        )
    };
    let mut accepted = Vec::new();
    for seq in 0..BEFORE {
        let r = notify(&h, seq);
        assert_eq!(r.status, 202, "{}", r.body);
        accepted.push(r.body["id"].as_str().unwrap().to_string());
    }

    mount.limit_device(FAILING_DEVICE_BYTES);
    for seq in BEFORE..BEFORE + AFTER {
        let r = notify(&h, seq);
        assert_eq!(r.status, 503, "{seq} after the disk failed: {}", r.body);
        assert_eq!(r.header("retry-after"), Some("1"), "{:?}", r.headers);
        assert_eq!(r.body["error"]["code"], "unavailable", "{}", r.body);
    }
    let log = h.server.log();
    assert!(
        log.contains("shard log fsync failed; poisoning the log"),
        "the failure is the fsync's: {log}"
    );

    h.server.kill9();
    mount.limit_device(0);
    mount.fsck_and_remount();
    h.server.spawn();
    for id in &accepted {
        h.status(id);
    }
    let delivered = common::wait_for(Duration::from_secs(30), || {
        let l = h.sim.ledger();
        (0..BEFORE).all(|s| l.count(s) > 0).then_some(())
    });
    assert!(
        delivered.is_some(),
        "everything acknowledged before the fault is delivered"
    );
    let r = notify(&h, BEFORE + AFTER);
    assert_eq!(r.status, 202, "the shard writes again: {}", r.body);
    drop(h);
    drop(mount);
}
