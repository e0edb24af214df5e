//! Records written before format 3 still read: version 2 users (devices without
//! `registered_at_ms`, read as registered when created), version 2 notifications and delivery
//! updates (unchanged in 3), and version 1 users without the field.

use super::tests::{rich_notifications, rich_users, sample_notification};
use super::*;

/// How earlier builds encoded a user: `[2][v2 body]`.
fn user_v2(u: &UserRecord) -> Vec<u8> {
    let mut out = vec![RECORD_FORMAT_V2];
    codec::encode_user_v2(&mut out, u);
    out
}

/// `u` as a build of format 3 reads it from version 2: each device registered when created.
fn registered_when_created(mut u: UserRecord) -> UserRecord {
    for d in &mut u.devices {
        d.registered_at_ms = d.created_at_ms;
    }
    u
}

#[test]
fn v2_users_still_decode_registered_when_created() {
    for u in rich_users() {
        let decoded = UserRecord::decode(&user_v2(&u)).unwrap();
        assert_eq!(decoded, registered_when_created(u));
    }
    // A literal v2 user as an earlier build stored it: "u", no contacts, one active device
    // "t" created at 300 (varint 0xac 0x02) with no reason, updated at 9.
    let stored = [2, 1, b'u', 0, 0, 0, 0, 1, 0, 1, b't', 1, 0xac, 0x02, 0, 9];
    let u = UserRecord::decode(&stored).unwrap();
    let device = DeviceRecord {
        platform: Platform::Ios,
        token: "t".into(),
        active: true,
        created_at_ms: 300,
        registered_at_ms: 300,
        deactivated_reason: None,
    };
    let expected = UserRecord {
        user_id: "u".into(),
        devices: vec![device],
        updated_at_ms: 9,
        ..UserRecord::default()
    };
    assert_eq!(u, expected);
    assert_eq!(user_v2(&expected), stored, "the test's v2 encoder is v2");
    // Written again, it is version 3, with the registration time after the creation time.
    let v3 = expected.encode();
    assert_eq!(
        v3,
        [
            3, 1, b'u', 0, 0, 0, 0, 1, 0, 1, b't', 1, 0xac, 0x02, 0xac, 0x02, 0, 9
        ]
    );
    assert_eq!(UserRecord::decode(&v3).unwrap(), expected);
}

#[test]
fn v2_notifications_and_delivery_updates_still_decode() {
    for n in rich_notifications() {
        let mut bytes = n.encode();
        bytes[0] = RECORD_FORMAT_V2;
        assert_eq!(NotificationRecord::decode(&bytes).unwrap(), n);
    }
    let n = sample_notification();
    let mut settled = n.deliveries[0].clone();
    settled.state = DeliveryState::Sent;
    settled.attempts = 2;
    let mut update = settled.encode_update();
    update[0] = RECORD_FORMAT_V2;
    let mut d = n.deliveries[0].clone();
    d.apply_update(&update).unwrap();
    assert_eq!(d, settled);
}

#[test]
fn v1_users_read_registered_when_created() {
    let mut bytes = vec![RECORD_FORMAT_JSON];
    bytes.extend_from_slice(
        br#"{"user_id":"u","devices":[{"platform":"ios","token":"t","active":true,"created_at_ms":5,"deactivated_reason":null}],"updated_at_ms":9}"#,
    );
    let u = UserRecord::decode(&bytes).unwrap();
    assert_eq!(
        (u.devices[0].created_at_ms, u.devices[0].registered_at_ms),
        (5, 5)
    );
}

#[test]
fn truncated_v2_and_v3_users_are_corrupt_and_name_the_field() {
    for bytes in [user_v2(&rich_users()[0]), rich_users()[0].encode()] {
        for len in 0..bytes.len() {
            assert!(
                matches!(
                    UserRecord::decode(&bytes[..len]),
                    Err(Error::Corrupt { .. })
                ),
                "v{} prefix of {len} bytes",
                bytes[0]
            );
        }
    }
    // A v3 device cut right after its creation time: its registration time is missing.
    let cut = [3, 1, b'u', 0, 0, 0, 0, 1, 0, 1, b't', 1, 0xac, 0x02, 0, 9];
    let what = match UserRecord::decode(&cut) {
        Err(Error::Corrupt { what }) => what,
        other => panic!("{other:?}"),
    };
    assert!(what.contains("user record (v3)"), "{what}");
    assert!(what.contains("device."), "{what}");
}
