//! Fuzz targets for what a shard reads back from its log: the record decoders (`record.rs`,
//! `record/codec.rs`), notification data (`record/json_object.rs`) and the fold of a notification
//! with its delivery updates (`log/fold.rs`).
//!
//! Each target takes arbitrary bytes and panics only if the code under test is wrong: any input
//! must give a value or a clear [`Error::Corrupt`], and whatever decodes must re-encode to a
//! record that decodes to itself. `cargo test` runs every target on random and mutated inputs
//! for a fixed number of cases (`fuzz/tests.rs`, which also bounds the memory each input may
//! take); the libFuzzer crate in `fuzz/` runs them for as long as wanted (see docs/fuzzing.md).
//! Compiled for tests, and as a public module with the `fuzz` feature.

use std::collections::BTreeMap;

use arbitrary::Unstructured;
use uuid::Uuid;

use crate::error::Error;
use crate::log::fold::{Stored, delivery_update_key, fold};
use crate::record::{
    Channel, DeliveryEvent, DeliveryRecord, DeliveryState, JsonObject, JsonObjectError,
    NotificationContent, NotificationRecord, Priority, UserRecord,
};

#[cfg(test)]
mod tests;

/// Asserts that `e` is a corrupt-record error that names the kind of record.
fn assert_corrupt(e: &Error, kind: &str) {
    match e {
        Error::Corrupt { what } => assert!(what.contains(kind), "{kind}: {what}"),
        other => panic!("{kind}: not a corrupt-record error: {other:?}"),
    }
}

/// `NotificationRecord::decode` (v1 JSON and v2 binary): a value that round-trips, or `Corrupt`.
pub fn notification_record(data: &[u8]) {
    match NotificationRecord::decode(data) {
        Ok(n) => {
            let again = NotificationRecord::decode(&n.encode());
            assert_eq!(again.ok().as_ref(), Some(&n), "re-encoded record differs");
        }
        Err(e) => assert_corrupt(&e, "notification"),
    }
}

/// `UserRecord::decode`: a value that round-trips, or `Corrupt`.
pub fn user_record(data: &[u8]) {
    match UserRecord::decode(data) {
        Ok(u) => {
            let again = UserRecord::decode(&u.encode());
            assert_eq!(again.ok().as_ref(), Some(&u), "re-encoded record differs");
        }
        Err(e) => assert_corrupt(&e, "user"),
    }
}

/// A delivery as accept makes it, with some history, to apply updates to.
fn base_delivery() -> DeliveryRecord {
    DeliveryRecord {
        id: Uuid::from_u128(7),
        channel: Channel::Apns,
        target: "ab".repeat(32),
        state: DeliveryState::Retrying,
        attempts: 1,
        next_attempt_at_ms: Some(1_700_000_000_500),
        history: vec![DeliveryEvent {
            at_ms: 1_700_000_000_000,
            state: DeliveryState::Queued,
            attempt: 0,
            reason: None,
        }],
    }
}

/// `DeliveryRecord::apply_update`: all or nothing. A good update replaces the progress (and
/// its re-encoding does the same); a bad one is `Corrupt` and changes nothing.
pub fn delivery_update(data: &[u8]) {
    let before = base_delivery();
    let mut d = before.clone();
    match d.apply_update(data) {
        Ok(()) => {
            assert_eq!(
                (d.id, d.channel, &d.target),
                (before.id, before.channel, &before.target)
            );
            let mut again = before;
            if let Err(e) = again.apply_update(&d.encode_update()) {
                panic!("a re-encoded update does not apply: {e}");
            }
            assert_eq!(again, d, "re-encoded update differs");
        }
        Err(e) => {
            assert_corrupt(&e, "delivery update");
            assert_eq!(d, before, "a failed update changed the delivery");
        }
    }
}

/// `JsonObject::parse` against `serde_json::Value`: accepted exactly when the text is a JSON
/// object with no key twice (refused otherwise with a reason that fits), kept compact, with the
/// same content, and `contains_key` exact.
pub fn json_object(data: &[u8]) {
    use serde_json::Value;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let tree = serde_json::from_str::<Value>(text);
    match JsonObject::parse(text) {
        Ok(o) => {
            let Ok(Value::Object(map)) = tree else {
                panic!("accepted what serde_json reads as {tree:?}");
            };
            assert_eq!(o.to_map().ok().as_ref(), Some(&map), "content changed");
            assert_eq!(
                JsonObject::parse(o.as_str()).as_ref(),
                Ok(&o),
                "not compact"
            );
            assert_eq!(o.is_empty(), map.is_empty());
            for key in map.keys().map(String::as_str).chain(["aps", "a", ""]) {
                assert_eq!(
                    o.contains_key(key),
                    map.contains_key(key),
                    "contains_key({key:?})"
                );
            }
        }
        // A key twice is reported as soon as its object ends, even if the text goes wrong later.
        Err(JsonObjectError::DuplicateKey { .. }) => {
            assert!(
                !matches!(tree, Ok(ref v) if !v.is_object()),
                "duplicate key in {tree:?}"
            );
        }
        Err(JsonObjectError::NotAnObject { got }) => {
            assert!(
                !matches!(tree, Ok(Value::Object(_))),
                "an object refused as {got}"
            );
        }
        Err(e) => {
            assert!(tree.is_err(), "refused what serde_json reads: {e}");
        }
    }
}

/// A fold's answer for one notification: its record (if stored) and the keys it occupies.
type Folded = (Option<NotificationRecord>, Vec<Vec<u8>>);

/// Notifications of a fold input share these few ids, so that updates meet their records.
const FOLD_IDS: u128 = 3;
/// Most entries in one fold input: enough to interleave several notifications and updates.
const FOLD_MAX_ENTRIES: u32 = 12;

fn fold_id(u: &mut Unstructured<'_>) -> Uuid {
    let n = u.int_in_range(1..=FOLD_IDS).unwrap_or(1);
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | n)
}

fn fold_state(u: &mut Unstructured<'_>) -> DeliveryState {
    use DeliveryState::*;
    *u.choose(&[
        Queued, Retrying, Sent, Delivered, Failed, Expired, Suppressed, Dead,
    ])
    .unwrap_or(&Queued)
}

fn fold_notification(u: &mut Unstructured<'_>, id: Uuid) -> NotificationRecord {
    let deliveries = u.int_in_range(1..=4u8).unwrap_or(1);
    NotificationRecord {
        id,
        user_id: "u".into(),
        idempotency_key: format!("k{}", u.int_in_range(0..=9u8).unwrap_or(0)),
        accepted_at_ms: 1_700_000_000_000,
        content: NotificationContent {
            body: Some("b".into()),
            priority: Priority::Normal,
            ..NotificationContent::default()
        },
        deliveries: (0..deliveries)
            .map(|i| DeliveryRecord {
                id: Uuid::from_u128(id.as_u128() + u128::from(i) + 1),
                channel: Channel::Apns,
                target: format!("t{i}"),
                state: DeliveryState::Queued,
                attempts: 0,
                next_attempt_at_ms: None,
                history: Vec::new(),
            })
            .collect(),
    }
}

/// An update's progress: the update record's value.
fn fold_update(u: &mut Unstructured<'_>) -> Vec<u8> {
    let state = fold_state(u);
    let attempts = u.int_in_range(0..=5u32).unwrap_or(0);
    DeliveryRecord {
        state,
        attempts,
        next_attempt_at_ms: u.arbitrary::<Option<u64>>().unwrap_or(None),
        history: vec![DeliveryEvent {
            at_ms: 1,
            state,
            attempt: attempts,
            reason: u.arbitrary::<bool>().unwrap_or(false).then(|| "503".into()),
        }],
        ..base_delivery()
    }
    .encode_update()
}

/// Sometimes flips a byte of `value` or cuts it short.
fn fold_mutate(u: &mut Unstructured<'_>, value: &mut Vec<u8>) {
    if value.is_empty() || !u.ratio(1, 10u8).unwrap_or(false) {
        return;
    }
    let at = u.choose_index(value.len()).unwrap_or(0);
    if u.arbitrary::<bool>().unwrap_or(false) {
        value.truncate(at);
    } else {
        value[at] = u.arbitrary::<u8>().unwrap_or(0);
    }
}

/// The `(key, value)` entries a fold input describes: notifications (v2 and v1 JSON, some
/// under another id's key), delivery updates, raw keys and values, and sometimes mutated.
fn fold_entries(u: &mut Unstructured<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let count = u.int_in_range(0..=FOLD_MAX_ENTRIES).unwrap_or(0);
    let mut entries = Vec::new();
    for _ in 0..count {
        let id = fold_id(u);
        // Mostly good entries, so that most inputs fold; a bad one makes the whole fold fail.
        let (key, mut value) = match u.int_in_range(0..=99u8).unwrap_or(0) {
            0..=39 => (id.as_bytes().to_vec(), fold_notification(u, id).encode()),
            40..=84 => {
                let index = u.int_in_range(0..=2u16).unwrap_or(0);
                (delivery_update_key(id, index).to_vec(), fold_update(u))
            }
            85..=92 => {
                let mut json = vec![1];
                let n = fold_notification(u, id);
                json.extend_from_slice(serde_json::to_string(&n).unwrap_or_default().as_bytes());
                (id.as_bytes().to_vec(), json)
            }
            93..=95 => {
                let other = fold_id(u);
                (other.as_bytes().to_vec(), fold_notification(u, id).encode())
            }
            _ => {
                let len = u.int_in_range(0..=20usize).unwrap_or(0);
                let key = u.bytes(len).unwrap_or_default().to_vec();
                let len = u.int_in_range(0..=64usize).unwrap_or(0);
                (key, u.bytes(len).unwrap_or_default().to_vec())
            }
        };
        fold_mutate(u, &mut value);
        entries.push((key, value));
    }
    entries
}

/// What the fold of key-ordered, distinct `entries` must give: each notification with the
/// updates that follow it applied in order, updates without their notification on their own, or
/// an error if any entry is bad. Built from the decoders alone, without `fold`.
fn fold_model(entries: &[(Vec<u8>, Vec<u8>)]) -> Option<Vec<Folded>> {
    let mut out: Vec<Folded> = Vec::new();
    for (key, value) in entries {
        match key.len() {
            16 => {
                let n = NotificationRecord::decode(value).ok()?;
                if n.id.as_bytes()[..] != key[..] {
                    return None;
                }
                out.push((Some(n), vec![key.clone()]));
            }
            18 => {
                let follows = out
                    .last()
                    .is_some_and(|(_, keys)| keys[0][..16] == key[..16]);
                if !follows {
                    out.push((None, Vec::new()));
                }
                let (record, keys) = out.last_mut()?;
                if let Some(n) = record {
                    let index = usize::from(u16::from_be_bytes([key[16], key[17]]));
                    n.deliveries.get_mut(index)?.apply_update(value).ok()?;
                }
                keys.push(key.clone());
            }
            _ => return None,
        }
    }
    Some(out)
}

/// `log::fold` over entries as the notifications keyspace holds them (in key order, each key
/// once) matches [`fold_model`]; over entries in any order it still ends without panicking.
pub fn notification_fold(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut entries = fold_entries(&mut u);
    let in_key_order = u.arbitrary::<bool>().unwrap_or(true);
    if in_key_order {
        // A keyspace holds each key once, with its last value.
        let ordered: BTreeMap<_, _> = entries.into_iter().collect();
        entries = ordered.into_iter().collect();
    }
    let folded = fold(entries.iter().map(|(k, v)| Ok::<_, Error>((k, v))))
        .take(entries.len() + 1)
        .collect::<Result<Vec<Stored>, Error>>();
    if let Err(e) = &folded {
        assert_corrupt(e, "notifications/");
    }
    if !in_key_order {
        return;
    }
    let Ok(stored) = folded else { return };
    let model = fold_model(&entries);
    // Entries that do not decode are set aside (for quarantine) rather than failing the
    // fold: the model, which stops at the first, must have found one too.
    if stored.iter().any(|s| !s.corrupt.is_empty()) {
        assert_eq!(
            model, None,
            "fold set entries aside the model reads: {entries:?}"
        );
        return;
    }
    let got = stored
        .into_iter()
        .map(|s| (s.record, s.keys))
        .collect::<Vec<_>>();
    assert_eq!(Some(got), model, "entries {entries:?}");
}
