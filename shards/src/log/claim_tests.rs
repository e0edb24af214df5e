//! Tests of dedup claims against a real log: a claim loses to a live key on disk or earlier in
//! its group and writes nothing; an expired key is taken over; the sweep deletes a notification's
//! entry only while it is still that notification's; an older log gets its window's keys; and
//! recovery reads back at most the newest `DEDUP_CACHE_KEYS`.

use futures_lite::future::block_on;
use tempfile::TempDir;
use uuid::Uuid;

use super::claims::{entry_key, entry_value};
use super::*;
use crate::dedup::{DEDUP_CACHE_KEYS, DedupHasher};
use crate::ids::{IdGenerator, uuid_floor_for_ms};
use crate::record::{Channel, DeliveryRecord, DeliveryState, NotificationRecord};

const NOW: u64 = 1_700_000_000_000;
const WINDOW: u64 = 60_000;

fn open_log(dir: &TempDir, now_ms: u64) -> (ShardLog, Recovered) {
    open(
        LogConfig {
            dir: dir.path().join("shard-00"),
            shard: 0,
            fsync: true,
            dedup_window_ms: WINDOW,
        },
        now_ms,
    )
    .unwrap()
}

fn notification(
    id: Uuid,
    user: &str,
    key: &str,
    at: u64,
    state: DeliveryState,
) -> NotificationRecord {
    let mut d = DeliveryRecord::new_queued(id, Channel::Apns, "token", at);
    d.state = state;
    NotificationRecord {
        id,
        user_id: user.into(),
        idempotency_key: key.into(),
        accepted_at_ms: at,
        content: crate::record::NotificationContent::default(),
        deliveries: vec![d],
    }
}

/// Accepts `records` as the engine does, each under its claim; returns what the write reported.
fn accept(
    log: &ShardLog,
    h: &DedupHasher,
    records: &[&NotificationRecord],
    check: bool,
) -> Committed {
    let mut b = WriteBatch::new();
    for n in records {
        let claim = DedupClaim {
            hash: h.key(&n.user_id, &n.idempotency_key),
            id: n.id,
            at_ms: n.accepted_at_ms,
            check,
        };
        b.claimed(claim, |b| {
            b.put_notification(n);
            for k in crate::PendingKey::for_open_deliveries(n) {
                b.put_pending(&k);
            }
        });
    }
    block_on(log.submit(b).unwrap()).unwrap()
}

fn stored(log: &ShardLog, id: Uuid) -> Option<NotificationRecord> {
    block_on(log.get_notification(id).unwrap()).unwrap()
}

fn entry(log: &ShardLog, h: &DedupHasher, n: &NotificationRecord) -> Option<(Uuid, u64)> {
    let key = entry_key(h.key(&n.user_id, &n.idempotency_key)).to_vec();
    block_on(log.get(Keyspace::Dedup, key).unwrap())
        .unwrap()
        .map(|v| claims::decode_entry(&v).unwrap())
}

fn backlog_len(log: &ShardLog) -> usize {
    block_on(
        log.scan_pending(Channel::Apns, None, u64::MAX, SCAN_PENDING_MAX)
            .unwrap(),
    )
    .unwrap()
    .items
    .len()
}

#[test]
fn a_claim_on_a_live_key_loses_and_writes_nothing_of_its_notification() {
    let dir = tempfile::tempdir().unwrap();
    let (log, rec) = open_log(&dir, NOW);
    let mut ids = IdGenerator::new(0, 1);
    let first = notification(
        ids.next(NOW),
        "alice",
        "order-1",
        NOW,
        DeliveryState::Queued,
    );
    let retry = notification(
        ids.next(NOW + 10),
        "alice",
        "order-1",
        NOW + 10,
        DeliveryState::Queued,
    );
    let other = notification(
        ids.next(NOW + 10),
        "alice",
        "order-2",
        NOW + 10,
        DeliveryState::Queued,
    );
    assert!(accept(&log, &rec.dedup, &[&first], true).lost.is_empty());
    let committed = accept(&log, &rec.dedup, &[&retry, &other], true);
    assert_eq!(
        committed.lost,
        vec![LostClaim {
            hash: rec.dedup.key("alice", "order-1"),
            claimed: retry.id,
            existing: first.id,
            existing_at_ms: NOW,
        }]
    );
    assert_eq!(committed.lost_claim(retry.id).unwrap().existing, first.id);
    assert!(
        stored(&log, retry.id).is_none(),
        "the lost claim's notification is not written"
    );
    assert!(
        stored(&log, other.id).is_some(),
        "the batch's other notification is"
    );
    assert_eq!(
        backlog_len(&log),
        2,
        "first and other: the retry queued nothing"
    );
    assert_eq!(entry(&log, &rec.dedup, &first), Some((first.id, NOW)));
    let stats = log.stats();
    assert_eq!((stats.claims_checked, stats.claims_lost), (3, 1));
    log.join().unwrap();
}

#[test]
fn two_claims_of_one_key_in_one_group_cannot_both_win() {
    let dir = tempfile::tempdir().unwrap();
    let (log, rec) = open_log(&dir, NOW);
    let mut ids = IdGenerator::new(0, 1);
    let a = notification(ids.next(NOW), "bob", "k", NOW, DeliveryState::Queued);
    let b = notification(ids.next(NOW), "bob", "k", NOW, DeliveryState::Queued);
    // Even unchecked (the cache said "new"): the group's own claims are always consulted.
    let committed = accept(&log, &rec.dedup, &[&a, &b], false);
    assert_eq!(committed.lost.len(), 1);
    assert_eq!(committed.lost[0].claimed, b.id);
    assert_eq!(committed.lost[0].existing, a.id);
    assert!(stored(&log, b.id).is_none());
    assert_eq!(
        log.stats().claims_checked,
        0,
        "unchecked claims read nothing"
    );
    log.join().unwrap();
}

#[test]
fn a_key_out_of_its_window_is_taken_over_and_the_sweep_keeps_the_new_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (log, rec) = open_log(&dir, NOW);
    let mut ids = IdGenerator::new(0, 1);
    let old = notification(ids.next(NOW), "carol", "k", NOW, DeliveryState::Sent);
    let later = NOW + WINDOW;
    let new = notification(ids.next(later), "carol", "k", later, DeliveryState::Sent);
    assert!(accept(&log, &rec.dedup, &[&old], true).lost.is_empty());
    assert!(
        accept(&log, &rec.dedup, &[&new], true).lost.is_empty(),
        "a window later the key is free"
    );
    assert_eq!(entry(&log, &rec.dedup, &new), Some((new.id, later)));
    // Sweeping the old notification must not take the new one's key with it.
    let swept = block_on(log.sweep(uuid_floor_for_ms(later)).unwrap()).unwrap();
    assert_eq!(swept, 1);
    assert!(stored(&log, old.id).is_none());
    assert_eq!(entry(&log, &rec.dedup, &new), Some((new.id, later)));
    // Sweeping the new one deletes its entry.
    let swept = block_on(log.sweep(uuid_floor_for_ms(later + 1)).unwrap()).unwrap();
    assert_eq!(swept, 1);
    assert_eq!(entry(&log, &rec.dedup, &new), None);
    log.join().unwrap();
}

#[test]
fn claims_hold_across_a_restart_and_recovery_warms_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (log, rec) = open_log(&dir, NOW);
    let secret_hasher = rec.dedup.clone();
    let mut ids = IdGenerator::new(0, 1);
    let first = notification(ids.next(NOW), "dave", "k", NOW, DeliveryState::Queued);
    accept(&log, &rec.dedup, &[&first], true);
    log.join().unwrap();

    let (log, rec) = open_log(&dir, NOW + 5);
    assert_eq!(rec.dedup, secret_hasher, "the secret is kept in the log");
    assert_eq!(rec.recent, vec![("dave".into(), "k".into(), first.id, NOW)]);
    assert!(rec.recent_complete);
    let retry = notification(
        ids.next(NOW + 5),
        "dave",
        "k",
        NOW + 5,
        DeliveryState::Queued,
    );
    let committed = accept(&log, &rec.dedup, &[&retry], true);
    assert_eq!(committed.lost[0].existing, first.id);
    log.join().unwrap();
}

#[test]
fn a_format_3_log_gets_the_keys_of_its_window_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open_log(&dir, NOW);
    let mut ids = IdGenerator::new(0, 1);
    let outside = notification(
        ids.next(NOW - WINDOW),
        "erin",
        "old",
        NOW - WINDOW,
        DeliveryState::Sent,
    );
    let inside = notification(
        ids.next(NOW - 1),
        "erin",
        "new",
        NOW - 1,
        DeliveryState::Queued,
    );
    let mut b = WriteBatch::new();
    for n in [&outside, &inside] {
        b.put_notification(n);
    }
    b.put(Keyspace::Meta, META_FORMAT, vec![3]);
    b.delete(Keyspace::Meta, META_DEDUP_SECRET);
    block_on(log.submit(b).unwrap()).unwrap();
    log.join().unwrap();

    let (log, rec) = open_log(&dir, NOW);
    assert_eq!(entry(&log, &rec.dedup, &inside), Some((inside.id, NOW - 1)));
    assert_eq!(
        entry(&log, &rec.dedup, &outside),
        None,
        "out of the window: no entry"
    );
    let retry = notification(ids.next(NOW), "erin", "new", NOW, DeliveryState::Queued);
    assert_eq!(
        accept(&log, &rec.dedup, &[&retry], true).lost[0].existing,
        inside.id
    );
    log.join().unwrap();
}

#[test]
fn recovery_reads_back_at_most_the_newest_cache_full_of_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (log, rec) = open_log(&dir, NOW);
    let mut ids = IdGenerator::new(0, 1);
    let total = DEDUP_CACHE_KEYS + 100;
    let records: Vec<NotificationRecord> = (0..total)
        .map(|i| {
            let at = NOW - WINDOW / 2 + (i / 1000) as u64;
            notification(
                ids.next(at),
                "frank",
                &format!("k{i}"),
                at,
                DeliveryState::Sent,
            )
        })
        .collect();
    for chunk in records.chunks(4096) {
        let refs: Vec<&NotificationRecord> = chunk.iter().collect();
        accept(&log, &rec.dedup, &refs, false);
    }
    log.join().unwrap();

    let (log, rec) = open_log(&dir, NOW);
    assert_eq!(rec.recent.len(), DEDUP_CACHE_KEYS);
    assert!(
        !rec.recent_complete,
        "older keys of the window stay on disk only"
    );
    assert_eq!(rec.recent.last().unwrap().2, records[total - 1].id);
    assert_eq!(rec.recent[0].2, records[total - DEDUP_CACHE_KEYS].id);
    // The oldest, not read back, is still a duplicate on disk.
    let retry = notification(ids.next(NOW), "frank", "k0", NOW, DeliveryState::Queued);
    assert_eq!(
        accept(&log, &rec.dedup, &[&retry], true).lost[0].existing,
        records[0].id
    );
    log.join().unwrap();
}

#[test]
fn a_format_4_log_without_its_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open_log(&dir, NOW);
    let mut b = WriteBatch::new();
    b.delete(Keyspace::Meta, META_DEDUP_SECRET);
    block_on(log.submit(b).unwrap()).unwrap();
    log.join().unwrap();
    let err = open(
        LogConfig {
            dir: dir.path().join("shard-00"),
            shard: 0,
            fsync: true,
            dedup_window_ms: WINDOW,
        },
        NOW,
    )
    .unwrap_err();
    assert!(err.to_string().contains("dedup_secret"), "{err}");
}

#[test]
fn entry_values_are_as_documented() {
    let id = Uuid::from_u128(42);
    let v = entry_value(id, 7);
    assert_eq!(&v[..16], id.as_bytes());
    assert_eq!(&v[16..], &7u64.to_be_bytes());
}
