//! Tests of the shard log where time and faults matter: lazy writes synced on time under a steady
//! stream, writes handed to the OS per group (so a process crash loses none), corrupt records
//! quarantined at recovery, damaged journal tails cut back to their last good batch.

use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use tempfile::TempDir;

use super::fold::delivery_update_key;
use super::*;
use crate::ids::IdGenerator;
use crate::record::{Channel, DeliveryRecord, NotificationContent, NotificationRecord, UserRecord};

const NOW: u64 = 1_700_000_000_000;

fn config(dir: &TempDir, fsync: bool) -> LogConfig {
    LogConfig {
        dir: dir.path().join("shard-00"),
        shard: 0,
        fsync,
        dedup_window_ms: 60_000,
    }
}

/// Whether any file under `dir` holds `needle` (what the OS has, whatever fjall still buffers).
fn on_disk(dir: &std::path::Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let path = e.path();
        if path.is_dir() {
            on_disk(&path, needle)
        } else {
            std::fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        }
    })
}

#[test]
fn lazy_writes_in_a_steady_stream_are_synced_within_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(config(&dir, true), NOW).unwrap();
    let before = log.stats().fsyncs;
    let started = Instant::now();
    let mut first_sync = None;
    // One lazy write every 5 ms for 400 ms: the timer used to restart at each, so none synced.
    for i in 0..80u32 {
        let mut b = WriteBatch::new();
        b.put(Keyspace::Users, format!("u{i}"), b"v");
        log.submit_nowait(b).unwrap();
        if first_sync.is_none() && log.stats().fsyncs > before {
            first_sync = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let first = first_sync.expect("a steady stream of lazy writes was never synced");
    assert!(
        first <= LAZY_SYNC_INTERVAL + Duration::from_millis(150),
        "first fsync after {first:?}"
    );
    let synced = log.stats().fsyncs - before;
    assert!(synced >= 2, "{synced} fsyncs in 400 ms of lazy writes");
    log.join().unwrap();
}

#[test]
fn without_fsync_an_acknowledged_write_is_already_in_the_os() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(config(&dir, false), NOW).unwrap();
    let mut b = WriteBatch::new();
    b.put(Keyspace::Users, "u", b"durable-marker-0123456789");
    block_on(log.submit(b).unwrap()).unwrap();
    assert!(
        on_disk(&dir.path().join("shard-00"), b"durable-marker-0123456789"),
        "an acknowledged write is still in fjall's buffer"
    );
    assert_eq!(log.stats().fsyncs, 0, "fsync off");
    log.join().unwrap();
}

#[test]
fn a_lazy_write_is_in_the_os_once_its_group_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(config(&dir, true), NOW).unwrap();
    let mut b = WriteBatch::new();
    b.put(Keyspace::Users, "u", b"lazy-marker-0123456789");
    log.submit_nowait(b).unwrap();
    // A read is answered after every group before it.
    block_on(log.get(Keyspace::Meta, META_FORMAT).unwrap()).unwrap();
    assert!(
        on_disk(&dir.path().join("shard-00"), b"lazy-marker-0123456789"),
        "a lazy write is still in fjall's buffer"
    );
    log.join().unwrap();
}

fn notification(id: uuid::Uuid) -> NotificationRecord {
    NotificationRecord {
        id,
        user_id: "alice".into(),
        idempotency_key: format!("key-{id}"),
        accepted_at_ms: NOW,
        content: NotificationContent::default(),
        deliveries: vec![DeliveryRecord::new_queued(id, Channel::Apns, "token", NOW)],
    }
}

/// Every `(key, value)` of fjall keyspace `name` in the closed log at `dir`.
fn raw_entries(dir: &std::path::Path, name: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = fjall::Database::builder(dir).open().unwrap();
    let ks = db
        .keyspace(name, fjall::KeyspaceCreateOptions::default)
        .unwrap();
    ks.iter()
        .map(|g| {
            let (k, v) = g.into_inner().unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

#[test]
fn corrupt_records_are_quarantined_with_their_bytes_and_recovery_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir, true);
    let (log, _) = open(cfg.clone(), NOW).unwrap();
    let mut ids = IdGenerator::new(0, 1);
    let (a, b, c) = (
        notification(ids.next(NOW)),
        notification(ids.next(NOW)),
        notification(ids.next(NOW)),
    );
    let alice = UserRecord {
        user_id: "alice".into(),
        ..UserRecord::default()
    };
    let mut batch = WriteBatch::new();
    batch.put_user(&alice);
    batch.put(Keyspace::Users, "bob", vec![9, b'{', b'}']);
    batch.put_notification(&a);
    batch.put_notification(&c);
    // b's record does not decode; its update goes with it. a's update does not decode.
    batch.put(
        Keyspace::Notifications,
        b.id.as_bytes().as_slice(),
        b"\x02\xff\xff",
    );
    let b_update = b.deliveries[0].encode_update();
    batch.put(
        Keyspace::Notifications,
        delivery_update_key(b.id, 0).as_slice(),
        b_update.clone(),
    );
    batch.put(
        Keyspace::Notifications,
        delivery_update_key(a.id, 0).as_slice(),
        b"\x02\x99",
    );
    block_on(log.submit(batch).unwrap()).unwrap();
    log.join().unwrap();

    let (log, rec) = open(cfg.clone(), NOW).expect("a corrupt record no longer stops recovery");
    assert_eq!(rec.users, vec![alice]);
    assert_eq!(
        rec.open,
        vec![a.clone(), c.clone()],
        "a keeps its state before the bad update"
    );
    assert_eq!(log.stats().quarantined, 4);
    assert!(
        block_on(log.get_notification(b.id).unwrap())
            .unwrap()
            .is_none()
    );
    log.join().unwrap();

    let held = raw_entries(&cfg.dir, "quarantine");
    let originals: Vec<(Vec<u8>, Vec<u8>)> = held
        .iter()
        .map(|(k, v)| (k[..k.len() - 8].to_vec(), v.clone()))
        .collect();
    let q = |ks: &str, key: &[u8]| [ks.as_bytes(), b"\0", key].concat();
    for expected in [
        (q("users", b"bob"), vec![9, b'{', b'}']),
        (
            q("notifications", b.id.as_bytes()),
            b"\x02\xff\xff".to_vec(),
        ),
        (q("notifications", &delivery_update_key(b.id, 0)), b_update),
        (
            q("notifications", &delivery_update_key(a.id, 0)),
            b"\x02\x99".to_vec(),
        ),
    ] {
        assert!(
            originals.contains(&expected),
            "{expected:?} not in {originals:?}"
        );
    }

    // Moved, not copied: the next start finds nothing new, and still counts what is held.
    let (log, rec) = open(cfg, NOW).unwrap();
    assert_eq!(rec.open.len(), 2);
    assert_eq!(log.stats().quarantined, 4);
    log.join().unwrap();
}

#[test]
fn a_corrupt_watermark_is_quarantined_and_recovery_scans_everything() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir, true);
    let (log, _) = open(cfg.clone(), NOW).unwrap();
    let old = notification(IdGenerator::new(0, 2).next(NOW - 3_600_000));
    let mut batch = WriteBatch::new();
    batch.put_notification(&old);
    batch.put(Keyspace::Meta, META_WATERMARK, b"short");
    block_on(log.submit(batch).unwrap()).unwrap();
    log.join().unwrap();
    let (log, rec) = open(cfg, NOW).unwrap();
    assert_eq!(rec.watermark, None);
    assert_eq!(rec.open, vec![old], "found by a full scan");
    assert_eq!(log.stats().quarantined, 1);
    log.join().unwrap();
}

#[test]
fn a_sweep_quarantines_a_corrupt_record_below_the_recovery_scan() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir, true);
    let (log, _) = open(cfg.clone(), NOW).unwrap();
    let mut ids = IdGenerator::new(0, 3);
    let old = ids.next(NOW - 3_600_000);
    let mark = ids.next(NOW);
    let mut batch = WriteBatch::new();
    batch.put(
        Keyspace::Notifications,
        old.as_bytes().as_slice(),
        b"\x02\xff",
    );
    batch.put_watermark(mark);
    block_on(log.submit(batch).unwrap()).unwrap();
    log.join().unwrap();
    // Below the watermark and the dedup window: recovery does not read it, the sweep does.
    let (log, _) = open(cfg, NOW).unwrap();
    assert_eq!(log.stats().quarantined, 0);
    let swept = block_on(log.sweep(*mark.as_bytes()).unwrap()).unwrap();
    assert_eq!(swept, 0);
    assert_eq!(log.stats().quarantined, 1);
    let again = block_on(log.sweep(*mark.as_bytes()).unwrap());
    assert_eq!(again.unwrap(), 0, "the sweep is not stuck on it");
    assert_eq!(log.stats().quarantined, 1);
    log.join().unwrap();
}
