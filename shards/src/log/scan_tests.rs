//! The backlog page's forward pass (`log/scan.rs`) against the one-notification read
//! (`ShardLog::get_notification`): the same records, updates folded in, for ids close
//! together, far apart (a seek), missing, and asked in an order other than their ids'.

use futures_lite::future::block_on;

use super::*;
use crate::ids::IdGenerator;
use crate::pending::PendingKey;
use crate::record::{
    Channel, DeliveryRecord, DeliveryState, NotificationContent, NotificationRecord,
};

const NOW: u64 = 1_700_000_000_000;

fn notification(id: uuid::Uuid, devices: usize) -> NotificationRecord {
    NotificationRecord {
        id,
        user_id: "user".into(),
        idempotency_key: format!("key-{id}"),
        accepted_at_ms: NOW,
        content: NotificationContent {
            title: Some(format!("hello {id}")),
            ..NotificationContent::default()
        },
        deliveries: (0..devices)
            .map(|i| DeliveryRecord::new_queued(id, Channel::Apns, format!("t{i}"), NOW))
            .collect(),
    }
}

fn open_log(dir: &std::path::Path, fsync: bool) -> ShardLog {
    let cfg = LogConfig {
        dir: dir.join("shard-00"),
        shard: 0,
        fsync,
        dedup_window_ms: 60_000,
    };
    open(cfg, NOW).unwrap().0
}

#[test]
fn a_page_reads_the_same_records_as_single_reads_whatever_lies_between_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), false);
    let mut ids = IdGenerator::new(0, 1);
    let all: Vec<NotificationRecord> = (0..400)
        .map(|i| notification(ids.next(NOW), 1 + i % 3))
        .collect();
    // In the backlog: a dense run, one far ahead of it (more than a step), a sparse tail.
    let chosen: Vec<usize> = (0..20)
        .chain([120, 121, 200])
        .chain((210..400).step_by(7))
        .collect();
    let mut b = WriteBatch::new();
    for r in &all {
        b.put_notification(r);
    }
    let mut expected_keys = Vec::new();
    for (n, &i) in chosen.iter().enumerate() {
        let r = &all[i];
        // Due times run against the ids for the first run, so the page asks out of id order.
        let due = if i < 20 {
            NOW + 100 - i as u64
        } else {
            NOW + 200 + n as u64
        };
        for index in 0..r.deliveries.len() {
            let key = PendingKey {
                channel: Channel::Apns,
                due_ms: due,
                notification: r.id,
                index: u16::try_from(index).unwrap(),
            };
            b.put_pending(&key);
            expected_keys.push(key);
        }
        // Some have a settled delivery: the page must fold its update in.
        if n % 4 == 0 {
            let mut d = r.deliveries[0].clone();
            d.state = DeliveryState::Sent;
            d.attempts = 1;
            b.put_delivery_update(r.id, 0, &d);
        }
    }
    // A key whose notification is not there.
    let ghost = PendingKey {
        channel: Channel::Apns,
        due_ms: NOW + 150,
        notification: ids.next(NOW),
        index: 0,
    };
    b.put_pending(&ghost);
    expected_keys.push(ghost);
    block_on(log.submit(b).unwrap()).unwrap();
    expected_keys.sort_by_key(PendingKey::encode);

    let scan = block_on(
        log.scan_pending(Channel::Apns, None, u64::MAX, SCAN_PENDING_MAX)
            .unwrap(),
    )
    .unwrap();
    assert!(scan.complete);
    let keys: Vec<PendingKey> = scan.items.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, expected_keys, "every key, in due order");
    let mut distinct = std::collections::HashSet::new();
    for (key, slot) in &scan.items {
        let single = block_on(log.get_notification(key.notification).unwrap()).unwrap();
        let paged = slot.map(|s| &scan.records[s]);
        assert_eq!(paged, single.as_ref(), "{key:?}");
        if key.notification == ghost.notification {
            assert!(paged.is_none());
        } else {
            distinct.insert(key.notification);
        }
    }
    assert_eq!(
        scan.records.len(),
        distinct.len(),
        "each notification read once"
    );
    assert_eq!(distinct.len(), chosen.len());
    let settled = scan
        .records
        .iter()
        .filter(|r| r.deliveries[0].state == DeliveryState::Sent)
        .count();
    assert_eq!(settled, chosen.len().div_ceil(4), "updates folded in");

    // Paged with a limit, the pages add up to the same.
    let mut after = None;
    let mut paged = Vec::new();
    loop {
        let page = block_on(log.scan_pending(Channel::Apns, after, u64::MAX, 7).unwrap()).unwrap();
        for (k, slot) in &page.items {
            let single = block_on(log.get_notification(k.notification).unwrap()).unwrap();
            assert_eq!(slot.map(|s| &page.records[s]), single.as_ref());
            paged.push(*k);
        }
        after = page.items.last().map(|(k, _)| *k);
        if page.complete {
            break;
        }
    }
    assert_eq!(paged, expected_keys);
}

#[test]
fn a_page_sees_exactly_what_was_queued_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), true);
    let mut ids = IdGenerator::new(0, 1);
    let accept = |n: &NotificationRecord| {
        let mut b = WriteBatch::new();
        b.put_notification(n);
        for key in PendingKey::for_open_deliveries(n) {
            b.put_pending(&key);
        }
        b
    };
    for round in 0..50 {
        let before = notification(ids.next(NOW), 1);
        let after = notification(ids.next(NOW), 1);
        // Lazy and durable writes around the page, queued back to back: whatever groups the
        // storage thread forms, the page holds the one before and not the one after.
        log.submit_nowait(accept(&before)).unwrap();
        let page = log
            .scan_pending(Channel::Apns, None, u64::MAX, SCAN_PENDING_MAX)
            .unwrap();
        let later = log.submit(accept(&after)).unwrap();
        let page = block_on(page).unwrap();
        let seen: Vec<uuid::Uuid> = page.records.iter().map(|r| r.id).collect();
        assert!(
            seen.contains(&before.id),
            "round {round}: the earlier write"
        );
        assert!(
            !seen.contains(&after.id),
            "round {round}: not the later one"
        );
        block_on(later).unwrap();
    }
    log.join().unwrap();
}
