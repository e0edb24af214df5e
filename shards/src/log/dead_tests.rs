//! Tests of dead letters in the log, against real files: listing newest first with filters and
//! a resumable position, finding letters by delivery id with their notifications, the retention
//! sweep keeping a dead letter's notification until the letter goes, and a format 4 log's dead
//! deliveries getting their letters when it is opened.

use futures_lite::future::block_on;
use tempfile::TempDir;
use uuid::Uuid;

use super::*;
use crate::dead::{DeadFilter, DeadKey, DeadLetter, DeadReason, DeadSelection};
use crate::ids::{IdGenerator, uuid_floor_for_ms};
use crate::record::{
    Channel, DeliveryEvent, DeliveryRecord, DeliveryState, NotificationContent, NotificationRecord,
};

const NOW: u64 = 1_700_000_000_000;

fn reopen(dir: &TempDir) -> ShardLog {
    let config = LogConfig {
        dir: dir.path().join("shard-00"),
        shard: 0,
        fsync: true,
        dedup_window_ms: 60_000,
    };
    open(config, NOW).unwrap().0
}

/// A notification whose one delivery on `channel` died at `dead_at_ms`.
fn dead_notification(id: Uuid, channel: Channel, dead_at_ms: u64) -> NotificationRecord {
    let mut d = DeliveryRecord::new_queued(Uuid::from_u128(id.as_u128() ^ 1), channel, "tok", NOW);
    d.state = DeliveryState::Dead;
    d.attempts = 8;
    d.history.push(DeliveryEvent {
        at_ms: dead_at_ms,
        state: DeliveryState::Dead,
        attempt: 8,
        reason: Some("retries exhausted: 503".into()),
    });
    NotificationRecord {
        id,
        user_id: "alice".into(),
        idempotency_key: format!("k-{id}"),
        accepted_at_ms: NOW,
        content: NotificationContent::default(),
        deliveries: vec![d],
    }
}

fn letter_of(n: &NotificationRecord, reason: DeadReason) -> (DeadKey, DeadLetter) {
    let d = &n.deliveries[0];
    (
        DeadKey {
            dead_at_ms: d.history.last().unwrap().at_ms,
            notification: n.id,
            index: 0,
        },
        DeadLetter {
            delivery_id: d.id,
            user_id: n.user_id.clone(),
            channel: d.channel,
            target: d.target.clone(),
            reason,
            error: "retries exhausted: 503".into(),
            attempts: d.attempts,
        },
    )
}

/// Writes the notifications with their letters, as the engine settles a delivery dead.
fn write_dead(log: &ShardLog, items: &[(NotificationRecord, DeadReason)]) {
    let mut b = WriteBatch::new();
    for (n, reason) in items {
        b.put_notification(n);
        let (k, l) = letter_of(n, *reason);
        b.put_dead(&k, &l);
    }
    block_on(log.submit(b).unwrap()).unwrap();
}

fn scan(log: &ShardLog, sel: DeadSelection, below: Option<DeadKey>, limit: usize) -> DeadScan {
    block_on(log.scan_dead(sel, below, limit, false).unwrap()).unwrap()
}

fn times(s: &DeadScan) -> Vec<u64> {
    s.items.iter().map(|(k, _)| k.dead_at_ms).collect()
}

#[test]
fn letters_list_newest_first_filtered_and_resumable() {
    let dir = tempfile::tempdir().unwrap();
    let log = reopen(&dir);
    let mut ids = IdGenerator::new(0, 1);
    let items: Vec<_> = (0..6u64)
        .map(|i| {
            let channel = if i % 2 == 0 {
                Channel::Fcm
            } else {
                Channel::Webpush
            };
            let reason = if i == 4 {
                DeadReason::ConfigFault
            } else {
                DeadReason::RetriesExhausted
            };
            (dead_notification(ids.next(NOW), channel, NOW + i), reason)
        })
        .collect();
    write_dead(&log, &items);

    let all = scan(
        &log,
        DeadSelection::Filter(DeadFilter::default()),
        None,
        100,
    );
    assert_eq!(
        times(&all),
        vec![NOW + 5, NOW + 4, NOW + 3, NOW + 2, NOW + 1, NOW]
    );
    assert_eq!(all.resume, None);
    assert_eq!(
        all.items[0].1,
        letter_of(&items[5].0, DeadReason::RetriesExhausted).1
    );

    let fcm = DeadFilter {
        channel: Some(Channel::Fcm),
        ..DeadFilter::default()
    };
    let page = scan(&log, DeadSelection::Filter(fcm.clone()), None, 2);
    assert_eq!(times(&page), vec![NOW + 4, NOW + 2]);
    let rest = scan(&log, DeadSelection::Filter(fcm), page.resume, 2);
    assert_eq!(times(&rest), vec![NOW]);
    assert_eq!(rest.resume, None);

    let window = DeadFilter {
        since_ms: Some(NOW + 1),
        until_ms: Some(NOW + 4),
        ..DeadFilter::default()
    };
    assert_eq!(
        times(&scan(&log, DeadSelection::Filter(window), None, 100)),
        vec![NOW + 3, NOW + 2, NOW + 1]
    );
    let config = DeadFilter {
        reason: Some(DeadReason::ConfigFault),
        ..DeadFilter::default()
    };
    assert_eq!(
        times(&scan(&log, DeadSelection::Filter(config), None, 100)),
        vec![NOW + 4]
    );

    // By delivery id, with the notifications for a replay; an id without a letter is skipped.
    let wanted = vec![
        items[1].0.deliveries[0].id,
        Uuid::from_u128(77),
        items[3].0.deliveries[0].id,
    ];
    let by_id = block_on(
        log.scan_dead(DeadSelection::Ids(wanted), None, 100, true)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(times(&by_id), vec![NOW + 1, NOW + 3]);
    let mut got: Vec<Uuid> = by_id.records.iter().map(|r| r.id).collect();
    got.sort();
    assert_eq!(got, vec![items[1].0.id, items[3].0.id]);
    log.join().unwrap();
}

#[test]
fn the_sweep_keeps_a_dead_letters_notification_until_the_letter_goes() {
    let dir = tempfile::tempdir().unwrap();
    let log = reopen(&dir);
    let mut ids = IdGenerator::new(0, 2);
    let old = NOW - 1000;
    let kept = dead_notification(ids.next(old), Channel::Fcm, old);
    let mut unlisted = dead_notification(ids.next(old), Channel::Fcm, old);
    unlisted.deliveries[0].id = Uuid::from_u128(5);
    write_dead(&log, &[(kept.clone(), DeadReason::RetriesExhausted)]);
    let mut b = WriteBatch::new();
    b.put_notification(&unlisted);
    block_on(log.submit(b).unwrap()).unwrap();

    let present = |n: &NotificationRecord| {
        block_on(log.get_notification(n.id).unwrap())
            .unwrap()
            .is_some()
    };
    assert_eq!(
        block_on(log.sweep(uuid_floor_for_ms(NOW)).unwrap()).unwrap(),
        1
    );
    assert!(present(&kept), "its dead letter keeps it");
    assert!(
        !present(&unlisted),
        "a dead delivery without a letter (purged) is swept"
    );

    let (k, l) = letter_of(&kept, DeadReason::RetriesExhausted);
    let mut b = WriteBatch::new();
    b.delete_dead(&k, l.delivery_id);
    block_on(log.submit(b).unwrap()).unwrap();
    assert_eq!(
        block_on(log.sweep(uuid_floor_for_ms(NOW)).unwrap()).unwrap(),
        1
    );
    assert!(!present(&kept));
    assert!(
        scan(&log, DeadSelection::Filter(DeadFilter::default()), None, 10)
            .items
            .is_empty()
    );
    log.join().unwrap();
}

#[test]
fn a_format_4_log_gets_a_letter_for_each_dead_delivery_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let log = reopen(&dir);
    let mut ids = IdGenerator::new(0, 3);
    let dead = dead_notification(ids.next(NOW), Channel::Webpush, NOW + 7);
    let mut sent = dead_notification(ids.next(NOW), Channel::Fcm, NOW);
    sent.deliveries[0].state = DeliveryState::Sent;
    let mut b = WriteBatch::new();
    b.put_notification(&dead).put_notification(&sent);
    b.put(Keyspace::Meta, META_FORMAT, vec![4]);
    block_on(log.submit(b).unwrap()).unwrap();
    log.join().unwrap();

    let log = reopen(&dir);
    let all = scan(&log, DeadSelection::Filter(DeadFilter::default()), None, 10);
    assert_eq!(
        all.items,
        vec![letter_of(&dead, DeadReason::RetriesExhausted)]
    );
    let format = block_on(log.get(Keyspace::Meta, META_FORMAT).unwrap()).unwrap();
    assert_eq!(format, Some(vec![LOG_FORMAT_VERSION]));
    log.join().unwrap();
}

#[test]
fn a_capped_sweep_goes_on_where_the_last_stopped_and_starts_over_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = reopen(&dir);
    log.set_sweep_cap(3).unwrap();
    let mut ids = IdGenerator::new(0, 4);
    let old = NOW - 1000;
    // Kept ones (a dead letter each) first, then finished ones: a sweep that read from the
    // start every time would never get past the kept ones with a cap of 3.
    let kept: Vec<_> = (0..3)
        .map(|_| dead_notification(ids.next(old), Channel::Fcm, old))
        .collect();
    let items: Vec<_> = kept
        .iter()
        .map(|n| (n.clone(), DeadReason::RetriesExhausted))
        .collect();
    write_dead(&log, &items);
    let mut finished = Vec::new();
    let mut b = WriteBatch::new();
    for _ in 0..5 {
        let mut n = dead_notification(ids.next(old), Channel::Fcm, old);
        n.deliveries[0].state = DeliveryState::Sent;
        b.put_notification(&n);
        finished.push(n);
    }
    block_on(log.submit(b).unwrap()).unwrap();

    let sweep = || block_on(log.sweep(uuid_floor_for_ms(NOW)).unwrap()).unwrap();
    assert_eq!(sweep(), 0, "the first three are kept");
    assert_eq!(sweep(), 3, "the next goes on from the fourth");
    assert_eq!(sweep(), 2, "then the rest, reaching the end");
    assert_eq!(sweep(), 0, "starts over: the kept ones again");
    let present = |n: &NotificationRecord| {
        block_on(log.get_notification(n.id).unwrap())
            .unwrap()
            .is_some()
    };
    assert!(kept.iter().all(present));
    assert!(!finished.iter().any(present));
    log.join().unwrap();
}
