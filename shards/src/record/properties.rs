//! Property tests of the record encoding: for arbitrary records, decoding what `encode` wrote
//! (and what format 1 wrote, JSON) gives the record back, a delivery update carries exactly a
//! delivery's progress, and any bytes (random, or an encoding damaged anywhere) decode to a
//! value or to `Corrupt`, never a panic.

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value};

use super::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

/// Any text, including the empty string, control characters and astral planes.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "\\PC{0,12}",
        1 => any::<String>(),
        1 => "[a-z0-9\\-]{0,300}",
    ]
}

fn state() -> impl Strategy<Value = DeliveryState> {
    use DeliveryState::*;
    prop::sample::select(vec![
        Queued, Retrying, Sent, Delivered, Failed, Expired, Suppressed, Dead,
    ])
}

/// Notification data: JSON objects with nested values of every kind.
fn data() -> impl Strategy<Value = JsonObject> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map(text(), value, 0..5)
        .prop_map(|m| JsonObject::from_map(&m.into_iter().collect::<Map<String, Value>>()))
}

fn event() -> impl Strategy<Value = DeliveryEvent> {
    (
        any::<u64>(),
        state(),
        any::<u32>(),
        prop::option::of(text()),
    )
        .prop_map(|(at_ms, state, attempt, reason)| DeliveryEvent {
            at_ms,
            state,
            attempt,
            reason,
        })
}

fn delivery() -> impl Strategy<Value = DeliveryRecord> {
    (
        uuid(),
        text(),
        state(),
        any::<u32>(),
        any::<Option<u64>>(),
        prop::collection::vec(event(), 0..4),
    )
        .prop_map(
            |(id, target, state, attempts, next_attempt_at_ms, history)| DeliveryRecord {
                id,
                channel: Channel::Apns,
                target,
                state,
                attempts,
                next_attempt_at_ms,
                history,
            },
        )
}

fn content() -> impl Strategy<Value = NotificationContent> {
    (
        prop::option::of(text()),
        prop::option::of(text()),
        data(),
        prop::option::of(text()),
        prop::sample::select(vec![Priority::High, Priority::Normal]),
        any::<Option<u32>>(),
        prop::option::of(text()),
    )
        .prop_map(
            |(title, body, data, category, priority, ttl_seconds, collapse_id)| {
                NotificationContent {
                    title,
                    body,
                    data,
                    category,
                    priority,
                    ttl_seconds,
                    collapse_id,
                }
            },
        )
}

fn notification() -> impl Strategy<Value = NotificationRecord> {
    (
        uuid(),
        text(),
        text(),
        any::<u64>(),
        content(),
        prop::collection::vec(delivery(), 0..4),
    )
        .prop_map(
            |(id, user_id, idempotency_key, accepted_at_ms, content, deliveries)| {
                NotificationRecord {
                    id,
                    user_id,
                    idempotency_key,
                    accepted_at_ms,
                    content,
                    deliveries,
                }
            },
        )
}

fn device() -> impl Strategy<Value = DeviceRecord> {
    (
        (0..Platform::ALL.len(), text(), prop::option::of(text())),
        any::<bool>(),
        any::<u64>(),
        any::<u64>(),
        prop::option::of(text()),
        prop::option::of(any::<u64>()),
    )
        .prop_map(
            // Registered again at or after it was first registered, as the shard records it;
            // addressed by its token unless it has an id of its own (a browser's).
            |(
                (platform, token, own_id),
                active,
                created_at_ms,
                later,
                deactivated_reason,
                deactivated_at_ms,
            )| {
                DeviceRecord {
                    platform: Platform::ALL[platform],
                    // A device id is never empty (the API derives one from every target).
                    device_id: own_id
                        .filter(|id| !id.is_empty())
                        .unwrap_or_else(|| token.clone()),
                    token,
                    active,
                    created_at_ms,
                    registered_at_ms: created_at_ms.saturating_add(later % (1 << 40)),
                    deactivated_reason,
                    deactivated_at_ms,
                }
            },
        )
}

fn user() -> impl Strategy<Value = UserRecord> {
    (
        text(),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::collection::vec(device(), 0..4),
        any::<u64>(),
    )
        .prop_map(
            |(user_id, email, phone, locale, timezone, devices, updated_at_ms)| UserRecord {
                user_id,
                email,
                phone,
                locale,
                timezone,
                devices,
                updated_at_ms,
            },
        )
}

/// `bytes` with a few bytes changed, inserted or removed, or cut short.
fn damage(mut bytes: Vec<u8>, edits: Vec<(Index, u8, u8)>) -> Vec<u8> {
    for (at, byte, op) in edits {
        match op % 4 {
            0 if !bytes.is_empty() => {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            1 => bytes.insert(at.index(bytes.len() + 1), byte),
            2 if !bytes.is_empty() => {
                bytes.remove(at.index(bytes.len()));
            }
            _ => bytes.truncate(at.index(bytes.len() + 1)),
        }
    }
    bytes
}

fn edits() -> impl Strategy<Value = Vec<(Index, u8, u8)>> {
    prop::collection::vec((any::<Index>(), any::<u8>(), any::<u8>()), 1..4)
}

/// `[1]` then the record's JSON: how format-1 records are stored.
fn json_v1<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![RECORD_FORMAT_JSON];
    out.extend_from_slice(serde_json::to_string(value).expect("json").as_bytes());
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn notification_round_trips(n in notification()) {
        let bytes = n.encode();
        prop_assert_eq!(bytes[0], RECORD_FORMAT_VERSION);
        prop_assert_eq!(NotificationRecord::decode(&bytes).ok(), Some(n.clone()));
        prop_assert_eq!(NotificationRecord::decode(&json_v1(&n)).ok(), Some(n.clone()));
        let mut appended = vec![9, 9];
        n.encode_into(&mut appended);
        prop_assert_eq!(&appended[2..], &bytes[..]);
    }

    #[test]
    fn user_round_trips(u in user()) {
        let bytes = u.encode();
        prop_assert_eq!(UserRecord::decode(&bytes).ok(), Some(u.clone()));
        prop_assert_eq!(UserRecord::decode(&json_v1(&u)).ok(), Some(u));
    }

    /// An update carries the progress of one delivery onto another with the same identity,
    /// leaving its id, channel and target alone.
    #[test]
    fn delivery_update_carries_progress(settled in delivery(), accepted in delivery()) {
        let mut d = accepted.clone();
        d.apply_update(&settled.encode_update()).expect("apply");
        let expected = DeliveryRecord {
            id: accepted.id,
            channel: accepted.channel,
            target: accepted.target,
            ..settled
        };
        prop_assert_eq!(d, expected);
    }

    /// Damaged encodings of any record decode to a value or to `Corrupt`; a value re-encodes
    /// to itself.
    #[test]
    fn damaged_records_decode_or_are_corrupt(
        n in notification(),
        u in user(),
        edits in edits(),
        json in any::<bool>(),
    ) {
        let damaged = damage(if json { json_v1(&n) } else { n.encode() }, edits.clone());
        match NotificationRecord::decode(&damaged) {
            Ok(back) => prop_assert_eq!(NotificationRecord::decode(&back.encode()).ok(), Some(back)),
            Err(e) => prop_assert!(matches!(e, Error::Corrupt { .. }), "{e:?}"),
        }
        let damaged = damage(if json { json_v1(&u) } else { u.encode() }, edits.clone());
        match UserRecord::decode(&damaged) {
            Ok(back) => prop_assert_eq!(UserRecord::decode(&back.encode()).ok(), Some(back)),
            Err(e) => prop_assert!(matches!(e, Error::Corrupt { .. }), "{e:?}"),
        }
        let update = damage(n.deliveries.first().map_or(vec![2, 0, 0, 0, 0], DeliveryRecord::encode_update), edits);
        if let Some(d) = n.deliveries.first() {
            let mut d = d.clone();
            let before = d.clone();
            if d.apply_update(&update).is_err() {
                prop_assert_eq!(d, before);
            }
        }
    }

    /// Arbitrary bytes after any version byte: a value or `Corrupt`, never a panic.
    #[test]
    fn arbitrary_bytes_decode_or_are_corrupt(
        version in prop_oneof![Just(1u8), Just(2u8), any::<u8>()],
        body in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut bytes = vec![version];
        bytes.extend_from_slice(&body);
        for e in [
            NotificationRecord::decode(&bytes).err(),
            UserRecord::decode(&bytes).err(),
            NotificationRecord::decode(&body).err(),
        ]
        .into_iter()
        .flatten()
        {
            prop_assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
        }
    }
}
