//! Tests of the shard log against real files in a temporary directory: durability across reopen,
//! recovery (backlog, format upgrades, dedup window), group commit, sweep, back-pressure, poisoning.

use futures_lite::future::block_on;
use tempfile::TempDir;
use uuid::Uuid;

use super::recovery::open_with_capacity;
use super::*;
use crate::ids::{IdGenerator, uuid_floor_for_ms};
use crate::record::{
    Channel, DeliveryRecord, DeliveryState, NotificationContent, NotificationRecord, UserRecord,
};

const NOW: u64 = 1_700_000_000_000;
const WINDOW: u64 = 60_000;

fn config(dir: &TempDir, fsync: bool) -> LogConfig {
    LogConfig {
        dir: dir.path().join("shard-00"),
        shard: 0,
        fsync,
        dedup_window_ms: WINDOW,
    }
}

fn notification(id: Uuid, accepted_at_ms: u64, state: DeliveryState) -> NotificationRecord {
    let mut d = DeliveryRecord::new_queued(id, Channel::Apns, "token", accepted_at_ms);
    d.state = state;
    NotificationRecord {
        id,
        user_id: format!("user-{}", id.as_u128() % 7),
        idempotency_key: format!("key-{id}"),
        accepted_at_ms,
        content: NotificationContent {
            title: Some("hello".into()),
            ..NotificationContent::default()
        },
        deliveries: vec![d],
    }
}

/// Writes notifications as the engine accepts them: each with a backlog key per unfinished
/// delivery, due when it was accepted.
fn write(log: &ShardLog, records: &[NotificationRecord]) {
    let mut b = WriteBatch::new();
    for r in records {
        b.put_notification(r);
        for key in pending_keys(r) {
            b.put_pending(&key);
        }
    }
    block_on(log.submit(b).unwrap()).unwrap();
}

/// Writes notifications as format 1 and 2 logs held them: no backlog keys.
fn write_without_backlog(log: &ShardLog, records: &[NotificationRecord]) {
    let mut b = WriteBatch::new();
    for r in records {
        b.put_notification(r);
    }
    block_on(log.submit(b).unwrap()).unwrap();
}

fn pending_keys(r: &NotificationRecord) -> Vec<crate::PendingKey> {
    crate::PendingKey::for_open_deliveries(r)
}

/// Every delivery in the APNs backlog, with its notification.
fn backlog(log: &ShardLog) -> Vec<(crate::PendingKey, NotificationRecord)> {
    let scan = block_on(
        log.scan_pending(Channel::Apns, None, u64::MAX, SCAN_PENDING_MAX)
            .unwrap(),
    )
    .unwrap();
    assert!(scan.complete);
    scan.items
        .into_iter()
        .map(|(k, slot)| (k, scan.records[slot.unwrap()].clone()))
        .collect()
}

fn reopen(dir: &TempDir, now_ms: u64) -> Result<(ShardLog, Recovered), Error> {
    open(config(dir, true), now_ms)
}

#[test]
fn write_then_reopen_recovers_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (log, rec) = reopen(&dir, NOW).unwrap();
    assert_eq!(
        rec,
        Recovered {
            backlog: vec![0; Channel::COUNT],
            recent_complete: true,
            dedup: rec.dedup.clone(),
            ..Recovered::default()
        },
        "a new log recovers nothing"
    );
    let user = UserRecord {
        user_id: "alice".into(),
        email: Some("a@example.com".into()),
        updated_at_ms: NOW,
        ..UserRecord::default()
    };
    let mut ids = IdGenerator::new(0, 1);
    let open_one = notification(ids.next(NOW), NOW, DeliveryState::Queued);
    let done_one = notification(ids.next(NOW), NOW, DeliveryState::Sent);
    let mut b = WriteBatch::new();
    b.put_user(&user);
    block_on(log.submit(b).unwrap()).unwrap();
    write(&log, &[open_one.clone(), done_one.clone()]);
    log.join().unwrap();

    let (log, rec) = reopen(&dir, NOW + 1).unwrap();
    assert_eq!(rec.users, vec![user]);
    assert_eq!(
        rec.backlog,
        vec![1, 0, 0],
        "the unfinished one's delivery waits"
    );
    assert_eq!(
        backlog(&log),
        vec![(pending_keys(&open_one)[0], open_one.clone())]
    );
    let recent_ids: Vec<Uuid> = rec.recent.iter().map(|r| r.2).collect();
    assert_eq!(recent_ids, vec![open_one.id, done_one.id]);
    assert_eq!(rec.recent[0].0, open_one.user_id);
    assert_eq!(rec.recent[0].1, open_one.idempotency_key);
    assert_eq!(rec.recent[0].3, NOW);
    let stored = block_on(
        log.get(Keyspace::Notifications, open_one.id.as_bytes().to_vec())
            .unwrap(),
    );
    assert_eq!(stored.unwrap(), Some(open_one.encode()));
    log.join().unwrap();
}

#[test]
fn a_format_2_log_gets_its_backlog_from_the_notifications_open_after_its_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = reopen(&dir, NOW).unwrap();
    let mut ids = IdGenerator::new(0, 2);
    let old = NOW - 10 * WINDOW;
    let finished_before = notification(ids.next(old), old, DeliveryState::Failed);
    let stale_before = notification(ids.next(old + 1), old + 1, DeliveryState::Retrying);
    let mark = ids.next(old + 2);
    let open_after = notification(ids.next(old + 3), old + 3, DeliveryState::Retrying);
    let finished_after = notification(ids.next(old + 4), old + 4, DeliveryState::Dead);
    write_without_backlog(
        &log,
        &[
            finished_before,
            stale_before,
            open_after.clone(),
            finished_after,
        ],
    );
    let mut b = WriteBatch::new();
    b.put(Keyspace::Meta, META_WATERMARK, mark.as_bytes())
        .put(Keyspace::Meta, META_FORMAT, [2]);
    block_on(log.submit(b).unwrap()).unwrap();
    log.join().unwrap();

    let (log, rec) = reopen(&dir, NOW).unwrap();
    assert_eq!(
        rec.backlog,
        vec![1, 0, 0],
        "only the one open after the watermark"
    );
    assert_eq!(
        backlog(&log),
        vec![(pending_keys(&open_after)[0], open_after)]
    );
    let meta = |key: &[u8]| block_on(log.get(Keyspace::Meta, key.to_vec()).unwrap()).unwrap();
    assert_eq!(meta(META_FORMAT), Some(vec![LOG_FORMAT_VERSION]));
    assert_eq!(meta(META_WATERMARK), None, "no longer kept");
    assert!(
        rec.recent.is_empty(),
        "all accepted long before the dedup window"
    );
    log.join().unwrap();
}

#[test]
fn recent_covers_exactly_the_dedup_window() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = reopen(&dir, NOW).unwrap();
    let mut ids = IdGenerator::new(0, 3);
    let times = [
        NOW - 2 * WINDOW,
        NOW - WINDOW - 1,
        NOW - WINDOW,
        NOW - WINDOW / 2,
        NOW,
    ];
    let records: Vec<_> = times
        .iter()
        .map(|&t| notification(ids.next(t), t, DeliveryState::Sent))
        .collect();
    write(&log, &records);
    log.join().unwrap();

    let (log, rec) = reopen(&dir, NOW).unwrap();
    let got: Vec<u64> = rec.recent.iter().map(|r| r.3).collect();
    // A key lives for [accepted, accepted + window): one accepted a whole window ago is out.
    assert_eq!(got, vec![NOW - WINDOW / 2, NOW]);
    assert!(rec.recent_complete);
    assert_eq!(rec.backlog, vec![0, 0, 0]);
    log.join().unwrap();
}

#[test]
fn group_commit_coalesces_fsyncs() {
    const BATCHES: u64 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = reopen(&dir, NOW).unwrap();
    let mut ids = IdGenerator::new(0, 4);
    let batches: Vec<WriteBatch> = (0..BATCHES)
        .map(|i| {
            let mut b = WriteBatch::new();
            b.put_notification(&notification(
                ids.next(NOW + i),
                NOW + i,
                DeliveryState::Queued,
            ));
            b
        })
        .collect();
    let waiters: Vec<Durable> = batches
        .into_iter()
        .map(|b| log.submit(b).unwrap())
        .collect();
    for w in waiters {
        block_on(w).unwrap();
    }
    let s = log.stats();
    assert_eq!(s.batches, BATCHES);
    assert_eq!(s.records, BATCHES);
    assert!(s.fsyncs >= 1);
    // Typically 2-3 fsyncs; generous so a loaded CI box cannot make this flaky.
    assert!(s.fsyncs * 4 <= BATCHES, "expected coalescing, got {s:?}");
    assert_eq!(s.fsync_latency.count(), s.fsyncs, "every fsync is timed");
    assert_eq!(
        s.write_latency.count(),
        s.commits,
        "every commit's write is timed"
    );
    assert!(s.max_batch_records > 10, "{s:?}");
    assert!(s.bytes > BATCHES * 100);
    // What was written sits in the memtables (far below a rotation's size): counted at least
    // as its key and value bytes, nothing sealed yet.
    assert!(s.memtable_bytes >= s.bytes, "{s:?}");
    assert_eq!(s.sealed_memtables, 0, "{s:?}");
    log.join().unwrap();
}

#[test]
fn sweep_deletes_only_finished_records_below_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = reopen(&dir, NOW).unwrap();
    let mut ids = IdGenerator::new(0, 5);
    let old = NOW - WINDOW;
    let mut records = Vec::new();
    for (i, state) in [
        DeliveryState::Sent,
        DeliveryState::Retrying,
        DeliveryState::Failed,
        DeliveryState::Queued,
        DeliveryState::Dead,
    ]
    .into_iter()
    .enumerate()
    {
        records.push(notification(ids.next(old + i as u64), old, state));
    }
    let newer_finished = notification(ids.next(NOW), NOW, DeliveryState::Sent);
    records.push(newer_finished.clone());
    write(&log, &records);

    let swept = block_on(log.sweep(uuid_floor_for_ms(NOW)).unwrap()).unwrap();
    assert_eq!(swept, 3);
    let present = |r: &NotificationRecord| {
        block_on(
            log.get(Keyspace::Notifications, r.id.as_bytes().to_vec())
                .unwrap(),
        )
        .unwrap()
        .is_some()
    };
    let kept: Vec<bool> = records.iter().map(present).collect();
    assert_eq!(kept, vec![false, true, false, true, false, true]);
    assert_eq!(
        block_on(log.sweep(uuid_floor_for_ms(NOW)).unwrap()).unwrap(),
        0
    );
    assert_eq!(log.stats().swept, 3);
    log.join().unwrap();
}

#[test]
fn another_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = reopen(&dir, NOW).unwrap();
    let mut b = WriteBatch::new();
    b.put(Keyspace::Meta, META_FORMAT, vec![LOG_FORMAT_VERSION + 1]);
    block_on(log.submit(b).unwrap()).unwrap();
    log.join().unwrap();
    let err = reopen(&dir, NOW).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedFormat { found, supported: LOG_FORMAT_VERSION } if found == LOG_FORMAT_VERSION + 1),
        "{err:?}"
    );
}

#[test]
fn full_queue_is_busy_and_retryable() {
    let (log, rx) = ShardLog::detached(2);
    assert!(log.submit(WriteBatch::new()).is_ok());
    assert!(log.submit_nowait(WriteBatch::new()).is_ok());
    let err = log.submit(WriteBatch::new()).unwrap_err();
    assert!(matches!(err, Error::Busy) && err.is_retryable());
    assert!(matches!(log.get(Keyspace::Meta, "x"), Err(Error::Busy)));
    assert_eq!(log.stats().queued, 2);
    drop(rx);
    assert!(matches!(log.barrier(), Err(Error::Closed)));
}

#[test]
fn tiny_queue_on_a_real_log_still_completes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open_with_capacity(config(&dir, true), NOW, 1).unwrap();
    let mut ids = IdGenerator::new(0, 7);
    let mut accepted = Vec::new();
    let mut busy = 0;
    for i in 0..200 {
        let mut b = WriteBatch::new();
        b.put_notification(&notification(ids.next(NOW + i), NOW, DeliveryState::Queued));
        match log.submit(b) {
            Ok(d) => accepted.push(d),
            Err(Error::Busy) => busy += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(busy > 0, "a 1-slot queue must push back");
    let n = accepted.len() as u64;
    for d in accepted {
        block_on(d).unwrap();
    }
    assert_eq!(log.stats().batches, n);
    log.join().unwrap();
}

#[test]
fn reads_see_earlier_writes_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(config(&dir, false), NOW).unwrap();
    let mut b = WriteBatch::new();
    b.put(Keyspace::Users, "k", b"v1");
    log.submit_nowait(b).unwrap();
    let first = log.get(Keyspace::Users, "k").unwrap();
    let mut b = WriteBatch::new();
    b.delete(Keyspace::Users, "k");
    log.submit_nowait(b).unwrap();
    let second = log.get(Keyspace::Users, "k").unwrap();
    assert_eq!(block_on(first).unwrap(), Some(b"v1".to_vec()));
    assert_eq!(block_on(second).unwrap(), None);
    block_on(log.barrier().unwrap()).unwrap();
    assert_eq!(log.stats().fsyncs, 0, "fsync off");
    assert_eq!(log.stats().fsync_latency.count(), 0);
    log.join().unwrap();
}

#[test]
fn failed_commit_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = reopen(&dir, NOW).unwrap();
    let mut b = WriteBatch::new();
    b.put(Keyspace::Users, "a", b"1");
    block_on(log.submit(b.clone()).unwrap()).unwrap();
    log.fail_next_commit().unwrap();
    let err = block_on(log.submit(b.clone()).unwrap()).unwrap_err();
    assert!(matches!(err, Error::Storage(_)), "{err:?}");
    assert!(log.stats().poisoned);
    assert!(matches!(log.submit(b.clone()), Err(Error::Poisoned)));
    assert!(matches!(log.barrier(), Err(Error::Poisoned)));
    assert!(!Error::Poisoned.is_retryable());
    // Reads still work after poisoning.
    let v = block_on(log.get(Keyspace::Users, "a").unwrap()).unwrap();
    assert_eq!(v, Some(b"1".to_vec()));
    assert!(matches!(log.join(), Err(Error::Poisoned)));
}

#[test]
fn failed_fsync_fails_its_group_and_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = reopen(&dir, NOW).unwrap();
    let mut b = WriteBatch::new();
    b.put(Keyspace::Users, "a", b"1");
    block_on(log.submit(b.clone()).unwrap()).unwrap();
    let s = log.stats();
    assert_eq!((s.write_latency.count(), s.fsync_latency.count()), (1, 1));
    log.fail_next_sync().unwrap();
    // The write itself goes into fjall; its fsync fails, so its waiter hears of it.
    let err = block_on(log.submit(b.clone()).unwrap()).unwrap_err();
    assert!(
        matches!(err, Error::Storage(ref m) if m.contains("fsync")),
        "{err:?}"
    );
    let s = log.stats();
    assert!(s.poisoned);
    assert_eq!(
        s.write_latency.count(),
        2,
        "the write succeeded and was timed"
    );
    assert_eq!(s.fsync_latency.count(), 1, "a failed fsync is not timed");
    assert!(matches!(log.submit(b), Err(Error::Poisoned)));
    assert!(matches!(log.join(), Err(Error::Poisoned)));
}

#[test]
fn shutdown_flushes_then_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = reopen(&dir, NOW).unwrap();
    let mut ids = IdGenerator::new(0, 8);
    let n = notification(ids.next(NOW), NOW, DeliveryState::Queued);
    let mut b = WriteBatch::new();
    b.put_notification(&n).put_pending(&pending_keys(&n)[0]);
    log.submit_nowait(b).unwrap();
    block_on(log.shutdown().unwrap()).unwrap();
    // The thread has stopped; new requests fail (Closed once the queue is gone).
    let late = log.barrier().map(block_on);
    assert!(
        matches!(late, Err(Error::Closed) | Ok(Err(Error::Closed))),
        "{late:?}"
    );
    log.join().unwrap();
    let (log, rec) = reopen(&dir, NOW).unwrap();
    assert_eq!(rec.backlog, vec![1, 0, 0]);
    assert_eq!(backlog(&log), vec![(pending_keys(&n)[0], n)]);
    log.join().unwrap();
}

#[test]
fn lazy_writes_wait_for_the_next_durable_write_or_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = reopen(&dir, NOW).unwrap();
    let mut ids = IdGenerator::new(0, 5);
    let before = log.stats().fsyncs;
    // A lazy write alone is committed at once but not fsynced at once...
    let mut b = WriteBatch::new();
    b.put_notification(&notification(ids.next(NOW), NOW, DeliveryState::Sent));
    log.submit_nowait(b).unwrap();
    let read = block_on(log.get(Keyspace::Meta, "format").unwrap());
    assert!(read.is_ok());
    assert_eq!(
        log.stats().fsyncs,
        before,
        "no fsync for a lazy write by itself"
    );
    // ...and is synced within the interval.
    std::thread::sleep(LAZY_SYNC_INTERVAL * 3);
    assert_eq!(
        log.stats().fsyncs,
        before + 1,
        "the lazy write was synced by the timer"
    );
    // A lazy write followed by a durable one: one fsync covers both.
    let mut b = WriteBatch::new();
    let lazy = notification(ids.next(NOW), NOW, DeliveryState::Sent);
    b.put_notification(&lazy);
    log.submit_nowait(b).unwrap();
    let durable = notification(ids.next(NOW), NOW, DeliveryState::Queued);
    write(&log, std::slice::from_ref(&durable));
    let after = log.stats().fsyncs;
    assert!(
        after <= before + 3,
        "lazy + durable took at most one or two fsyncs"
    );
    std::thread::sleep(LAZY_SYNC_INTERVAL * 3);
    assert_eq!(
        log.stats().fsyncs,
        after,
        "nothing left unsynced after the durable write"
    );
    drop(log);
    let (_, rec) = reopen(&dir, NOW).unwrap();
    assert!(
        rec.recent.iter().any(|r| r.2 == lazy.id),
        "the lazy write is on disk"
    );
}

/// The delivery of `n` as it is after `state` (what the engine logs as a delivery update).
fn settled(n: &NotificationRecord, state: DeliveryState, at_ms: u64) -> DeliveryRecord {
    let mut d = n.deliveries[0].clone();
    d.state = state;
    d.attempts += 1;
    d.history.push(crate::record::DeliveryEvent {
        at_ms,
        state,
        attempt: d.attempts,
        reason: (state == DeliveryState::Retrying).then(|| "TooManyRequests".to_string()),
    });
    d
}

#[test]
fn delivery_updates_are_read_back_and_recovered_without_rewriting_the_notification() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = reopen(&dir, NOW).unwrap();
    let mut ids = IdGenerator::new(0, 9);
    let retrying = notification(ids.next(NOW), NOW, DeliveryState::Queued);
    let sent = notification(ids.next(NOW), NOW, DeliveryState::Queued);
    write(&log, &[retrying.clone(), sent.clone()]);
    let retry_update = settled(&retrying, DeliveryState::Retrying, NOW + 5);
    let sent_update = settled(&sent, DeliveryState::Sent, NOW + 6);
    let mut b = WriteBatch::new();
    b.put_delivery_update(retrying.id, 0, &retry_update)
        .put_delivery_update(sent.id, 0, &sent_update)
        .delete_pending(&pending_keys(&sent)[0]);
    let update_bytes = b.bytes();
    assert!(
        update_bytes < sent.encode().len() + crate::pending::PENDING_KEY_LEN,
        "two updates ({update_bytes} B) are smaller than one notification"
    );
    log.submit_nowait(b).unwrap();

    // Read back (in order with the lazy write before it), updates applied.
    let got = block_on(log.get_notification(sent.id).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(got.deliveries[0], sent_update);
    assert_eq!(got.content, sent.content);
    assert_eq!(
        block_on(log.get_notification(Uuid::from_u128(7)).unwrap()).unwrap(),
        None
    );
    log.join().unwrap();

    // After a restart the sent one is finished and the retrying one waits, with its history.
    let (log, rec) = reopen(&dir, NOW + 10).unwrap();
    assert_eq!(rec.backlog, vec![1, 0, 0]);
    let waiting = backlog(&log);
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].1.id, retrying.id);
    assert_eq!(waiting[0].1.deliveries[0], retry_update);
    assert_eq!(rec.recent.len(), 2, "both keep their idempotency keys");
    log.join().unwrap();
}

#[test]
fn sweep_deletes_a_notification_with_its_updates_and_leaves_no_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = reopen(&dir, NOW).unwrap();
    let mut ids = IdGenerator::new(0, 10);
    let old = NOW - 10 * WINDOW;
    let done = notification(ids.next(old), old, DeliveryState::Queued);
    let open_one = notification(ids.next(old + 1), old + 1, DeliveryState::Queued);
    write(&log, &[done.clone(), open_one.clone()]);
    let mut b = WriteBatch::new();
    b.put_delivery_update(done.id, 0, &settled(&done, DeliveryState::Sent, old + 2))
        .put_delivery_update(
            open_one.id,
            0,
            &settled(&open_one, DeliveryState::Retrying, old + 2),
        );
    block_on(log.submit(b).unwrap()).unwrap();

    let swept = block_on(log.sweep(uuid_floor_for_ms(NOW)).unwrap()).unwrap();
    assert_eq!(swept, 1, "only the finished one");
    assert_eq!(
        block_on(log.get_notification(done.id).unwrap()).unwrap(),
        None
    );
    let update_key = super::fold::delivery_update_key(done.id, 0).to_vec();
    assert_eq!(
        block_on(log.get(Keyspace::Notifications, update_key).unwrap()).unwrap(),
        None,
        "its update went with it"
    );
    let kept = block_on(log.get_notification(open_one.id).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(kept.deliveries[0].state, DeliveryState::Retrying);

    // An update whose notification is gone (an interrupted deletion) is garbage for the sweep.
    let orphan = ids.next(old + 3);
    let mut b = WriteBatch::new();
    b.put_delivery_update(orphan, 0, &settled(&done, DeliveryState::Sent, old + 3));
    block_on(log.submit(b).unwrap()).unwrap();
    assert_eq!(
        block_on(log.sweep(uuid_floor_for_ms(NOW)).unwrap()).unwrap(),
        0
    );
    let orphan_key = super::fold::delivery_update_key(orphan, 0).to_vec();
    assert_eq!(
        block_on(log.get(Keyspace::Notifications, orphan_key).unwrap()).unwrap(),
        None
    );
    log.join().unwrap();
}

#[test]
fn a_format_1_log_opens_and_is_upgraded_with_its_backlog_and_idempotency_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = reopen(&dir, NOW).unwrap();
    let n = notification(
        IdGenerator::new(0, 11).next(NOW),
        NOW,
        DeliveryState::Queued,
    );
    write_without_backlog(&log, std::slice::from_ref(&n));
    let mut b = WriteBatch::new();
    b.put(Keyspace::Meta, META_FORMAT, vec![1]);
    block_on(log.submit(b).unwrap()).unwrap();
    log.join().unwrap();

    let (log, rec) = reopen(&dir, NOW).unwrap();
    assert_eq!(rec.backlog, vec![1, 0, 0]);
    assert_eq!(backlog(&log), vec![(pending_keys(&n)[0], n.clone())]);
    let format = block_on(log.get(Keyspace::Meta, META_FORMAT).unwrap()).unwrap();
    assert_eq!(format, Some(vec![LOG_FORMAT_VERSION]));
    assert_eq!(LOG_FORMAT_VERSION, 5);
    let key = claims::entry_key(rec.dedup.key(&n.user_id, &n.idempotency_key));
    let entry = block_on(log.get(Keyspace::Dedup, key.to_vec()).unwrap()).unwrap();
    assert_eq!(entry, Some(claims::entry_value(n.id, NOW).to_vec()));
    log.join().unwrap();
}

/// Writes keys `0..n` (big-endian u32) with `value(i)` into `ks` and flushes them to a table.
fn write_to_a_table(ks: &fjall::Keyspace, n: u32, value: impl Fn(u32) -> Vec<u8>) {
    for i in 0..n {
        ks.insert(i.to_be_bytes(), value(i)).unwrap();
    }
    ks.rotate_memtable_and_wait().unwrap();
    assert!(ks.table_count() >= 1);
}

#[test]
fn notification_tables_are_compressed_and_read_back() {
    let dir = TempDir::new().unwrap();
    let db = fjall::Database::builder(dir.path()).open().unwrap();
    let plain = db
        .keyspace("plain", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    let packed = db
        .keyspace("packed", || super::recovery::notifications_options(0))
        .unwrap();
    let value = |i: u32| {
        format!(
            "{{\"title\":\"Order shipped\",\"body\":\"Your order #{i} from ACME Store is on the way and should arrive by Friday.\",\"data\":{{\"order_id\":\"ord_{i:08}\"}}}}"
        )
    };
    for ks in [&plain, &packed] {
        // On disk, where the compression policy applies.
        write_to_a_table(ks, 5_000, |i| value(i).into_bytes());
    }
    assert!(
        packed.disk_space() * 2 < plain.disk_space(),
        "packed {} vs plain {} bytes",
        packed.disk_space(),
        plain.disk_space()
    );
    for i in [0u32, 2_500, 4_999] {
        let got = packed.get(i.to_be_bytes()).unwrap().unwrap();
        assert_eq!(&*got, value(i).as_bytes());
    }
}

#[test]
fn shards_get_different_memtable_sizes_within_the_spread() {
    use super::recovery::{MEMTABLE_BASE_BYTES, MEMTABLE_SPREAD_BYTES, memtable_bytes};
    assert_eq!(memtable_bytes(0), MEMTABLE_BASE_BYTES);
    let sizes: Vec<u64> = (0..64).map(memtable_bytes).collect();
    for (i, &a) in sizes.iter().enumerate() {
        assert!((MEMTABLE_BASE_BYTES..MEMTABLE_BASE_BYTES + MEMTABLE_SPREAD_BYTES).contains(&a));
        for &b in &sizes[i + 1..] {
            assert_ne!(a, b, "two shards share a memtable size");
        }
    }
    // Two shards (the common small machine) are at least a sixth apart, and not 3:2 or 4:3.
    let ratio = sizes[1] as f64 / sizes[0] as f64;
    assert!(ratio > 1.16 && (ratio - 1.5).abs() > 0.05 && (ratio - 4.0 / 3.0).abs() > 0.01);
}

/// A compaction's table writer holds 8 bytes per key of its whole output for a full filter:
/// tens of MiB at once while a 5-million backlog drained. `pending` is only read by range scans
/// and builds no filter; `notifications` partitions its filters below L0.
#[test]
fn backlog_tables_build_no_filter_and_notification_tables_partition_theirs() {
    use fjall::AbstractTree;
    let dir = TempDir::new().unwrap();
    let db = fjall::Database::builder(dir.path()).open().unwrap();
    let plain = db
        .keyspace("plain", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    let pending = db
        .keyspace("pending", super::recovery::pending_options)
        .unwrap();
    for ks in [&plain, &pending] {
        write_to_a_table(ks, 5_000, |_| Vec::new());
    }
    assert!(plain.tree.filter_size() > 0, "the control builds a filter");
    assert_eq!(pending.tree.filter_size(), 0);
    for i in [0u32, 4_999] {
        assert!(pending.contains_key(i.to_be_bytes()).unwrap());
    }

    let notifications = super::recovery::notifications_options(0);
    assert_eq!(
        notifications.filter_block_partitioning_policy,
        super::recovery::filters_partitioned_below_l0()
    );
    assert_eq!(
        &*super::recovery::filters_partitioned_below_l0(),
        &[false, true]
    );
}

/// A claim's point read in `dedup` loaded each L1 table's whole filter (past a block cache the
/// scans turn over): 10% of both cores in a drain. Below L0 its filters are partitioned, and a
/// lookup still finds what is there and skips what is not.
#[test]
fn dedup_tables_partition_their_filters_and_lookups_still_answer() {
    use fjall::AbstractTree;
    let dir = TempDir::new().unwrap();
    let db = fjall::Database::builder(dir.path()).open().unwrap();
    let options = super::recovery::dedup_options();
    assert_eq!(
        options.filter_block_partitioning_policy,
        super::recovery::filters_partitioned_below_l0()
    );
    let dedup = db
        .keyspace("dedup", super::recovery::dedup_options)
        .unwrap();
    write_to_a_table(&dedup, 20_000, |_| vec![1u8; 24]);
    // Below L0, where the partitioned filters apply.
    dedup.major_compact().unwrap();
    assert!(dedup.tree.filter_size() > 0);
    for i in [0u32, 9_999, 19_999] {
        assert!(dedup.contains_key(i.to_be_bytes()).unwrap(), "{i}");
    }
    for i in [20_000u32, u32::MAX] {
        assert!(!dedup.contains_key(i.to_be_bytes()).unwrap(), "{i}");
    }
}
