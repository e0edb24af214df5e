//! Records written by earlier formats still read: version 3 users (devices without
//! `device_id`, read as addressed by their token, and without `deactivated_at_ms`), version 2
//! users (devices without `registered_at_ms`, read as registered when created), version 2 and
//! 3 notifications and delivery updates (unchanged since 2), and version 1 users.

use super::tests::{rich_notifications, rich_users, sample_notification};
use super::*;

/// How earlier builds encoded a user: `[2][v2 body]`.
fn user_v2(u: &UserRecord) -> Vec<u8> {
    let mut out = vec![RECORD_FORMAT_V2];
    codec::encode_user_v2(&mut out, u);
    out
}

/// How builds of format 3 encoded a user: `[3][v3 body]`.
fn user_v3(u: &UserRecord) -> Vec<u8> {
    let mut out = vec![RECORD_FORMAT_V3];
    codec::encode_user_v3(&mut out, u);
    out
}

/// `u` as this build reads it from version 3: each device addressed by its token (before
/// format 4 every device was an iPhone's), with no deactivation time.
fn as_v3_read(mut u: UserRecord) -> UserRecord {
    for d in &mut u.devices {
        d.device_id.clone_from(&d.token);
        d.deactivated_at_ms = None;
    }
    u
}

/// `u` as this build reads it from version 2: as from 3, and each device registered when
/// created.
fn registered_when_created(u: UserRecord) -> UserRecord {
    let mut u = as_v3_read(u);
    for d in &mut u.devices {
        d.registered_at_ms = d.created_at_ms;
    }
    u
}

#[test]
fn v3_users_still_decode_addressed_by_their_token() {
    for u in rich_users() {
        let decoded = UserRecord::decode(&user_v3(&u)).unwrap();
        assert_eq!(decoded, as_v3_read(u));
    }
    // A literal v3 user as an earlier build stored it: one device "t" created at 300 and
    // registered again at 300, no reason.
    let stored = [
        3, 1, b'u', 0, 0, 0, 0, 1, 0, 1, b't', 1, 0xac, 0x02, 0xac, 0x02, 0, 9,
    ];
    let u = UserRecord::decode(&stored).unwrap();
    assert_eq!(u.devices[0].device_id, "t");
    assert_eq!(u.devices[0].deactivated_at_ms, None);
    assert_eq!(user_v3(&u), stored, "the test's v3 encoder is v3");
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
        deactivated_at_ms: None,
        device_id: "t".into(),
    };
    let expected = UserRecord {
        user_id: "u".into(),
        devices: vec![device],
        updated_at_ms: 9,
        ..UserRecord::default()
    };
    assert_eq!(u, expected);
    assert_eq!(user_v2(&expected), stored, "the test's v2 encoder is v2");
    // Written again, it is version 4: no id of its own (its token is its id) after the
    // token, the registration time after the creation time, no deactivation time.
    let v4 = expected.encode();
    assert_eq!(
        v4,
        [
            4, 1, b'u', 0, 0, 0, 0, 1, 0, 1, b't', 0, 1, 0xac, 0x02, 0xac, 0x02, 0, 0, 9
        ]
    );
    assert_eq!(UserRecord::decode(&v4).unwrap(), expected);
}

#[test]
fn v2_and_v3_notifications_and_delivery_updates_still_decode() {
    for version in [RECORD_FORMAT_V2, RECORD_FORMAT_V3] {
        for n in rich_notifications() {
            let mut bytes = n.encode();
            bytes[0] = version;
            assert_eq!(NotificationRecord::decode(&bytes).unwrap(), n);
        }
        let n = sample_notification();
        let mut settled = n.deliveries[0].clone();
        settled.state = DeliveryState::Sent;
        settled.attempts = 2;
        let mut update = settled.encode_update();
        update[0] = version;
        let mut d = n.deliveries[0].clone();
        d.apply_update(&update).unwrap();
        assert_eq!(d, settled);
    }
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
    assert_eq!(u.devices[0].device_id, "t", "addressed by its token");
}

#[test]
fn truncated_users_of_every_version_are_corrupt_and_name_the_field() {
    let u = &rich_users()[0];
    for bytes in [user_v2(u), user_v3(u), u.encode()] {
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
    // A v4 device cut right after its reason: its deactivation time is missing.
    let cut = [
        4, 1, b'u', 0, 0, 0, 0, 1, 0, 1, b't', 0, 1, 0xac, 0x02, 0xac, 0x02, 0, 9,
    ];
    let what = match UserRecord::decode(&cut) {
        Err(Error::Corrupt { what }) => what,
        other => panic!("{other:?}"),
    };
    assert!(what.contains("user record (v4)"), "{what}");
}
