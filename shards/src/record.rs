//! The records a shard stores in its log (users with their devices, notifications with their
//! deliveries) and their on-disk encoding: one format-version byte, then the record.
//!
//! Record format versions (the first byte of every stored value; each value carries its own, so
//! one log may hold both and no migration is needed):
//!
//! - **1**: `[1][JSON]`, the serde_json form of the record. Written by earlier builds; still read.
//! - **2**: `[2][binary]`, the compact encoding in `record/codec.rs` (varints, raw UUIDs, tag
//!   bytes; `content.data` kept as JSON text). A notification is encoded once, at accept; each
//!   time one of its deliveries settles only that delivery's progress is logged, as a delivery
//!   update (about 30 bytes instead of the whole notification again). For a typical
//!   notification v2 is ~6x faster to encode, ~3x faster to decode and a quarter to a third of
//!   the JSON's size (`encode_timing` test). Written by earlier builds; still read.
//! - **3**: `[3][binary]`, version 2 with each device's `registered_at_ms` (when its token was
//!   last registered) after its `created_at_ms`; notifications and delivery updates are
//!   unchanged. A device read from version 1 or 2 takes its `created_at_ms`
//!   as its `registered_at_ms`. Written by earlier builds; still read.
//! - **4**: `[4][binary]`, version 3 with each device's `device_id` (when it differs from the
//!   token: a browser subscription's) and `deactivated_at_ms`; notifications and delivery
//!   updates are unchanged. What [`RECORD_FORMAT_VERSION`] says `encode` writes, for users,
//!   notifications and delivery updates alike. A device read from an earlier version (iOS
//!   only) takes its token as its `device_id`, and no `deactivated_at_ms`.
//!
//! This is the *record* format; the *log* format ([`crate::LOG_FORMAT_VERSION`], checked when a
//! log is opened) is separate and unchanged by record versions.

mod codec;
#[cfg(test)]
mod format_history_tests;
mod json_object;

pub use json_object::{JsonObject, JsonObjectError};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::error::Error;

/// The version byte [`UserRecord::encode`] and [`NotificationRecord::encode`] write. Decoding
/// also reads every older version (see the module doc); bump it only with a reader for the old.
pub const RECORD_FORMAT_VERSION: u8 = 4;

/// Version 1: the record as JSON. Read, no longer written.
const RECORD_FORMAT_JSON: u8 = 1;

/// Version 2: binary, devices without `registered_at_ms`. Read, no longer written.
const RECORD_FORMAT_V2: u8 = 2;

/// Version 3: binary, devices without `device_id` and `deactivated_at_ms`. Read, no longer
/// written.
const RECORD_FORMAT_V3: u8 = 3;

/// Most deliveries one notification may have: a delivery's index within its notification is a
/// `u16` in the log's delivery-update keys.
pub const MAX_DELIVERIES_PER_NOTIFICATION: usize = 1 << 16;

/// A user's contact points and devices, owned by the user's shard.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub user_id: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub locale: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub devices: Vec<DeviceRecord>,
    pub updated_at_ms: u64,
}

/// One registered push target of a user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub platform: Platform,
    pub token: String,
    pub active: bool,
    /// When the token was first registered.
    pub created_at_ms: u64,
    /// When the token was last registered (again), or reactivated: never before
    /// `created_at_ms`. A provider that says the token died at some time is believed only if
    /// that is not before this (the app may have been reinstalled since and kept its token).
    /// Records of formats 1 and 2 have no such field and read it as `created_at_ms`.
    #[serde(default)]
    pub registered_at_ms: u64,
    /// Why the device was deactivated (the provider's reason, such as APNs' "Unregistered"
    /// or FCM's "UNREGISTERED").
    #[serde(default)]
    pub deactivated_reason: Option<String>,
    /// When it was deactivated (unix ms); `None` while active, and for devices deactivated
    /// by builds before record format 4.
    #[serde(default)]
    pub deactivated_at_ms: Option<u64>,
    /// How the API addresses the device (`DELETE /v1/users/{id}/devices/{device_id}`): the
    /// token itself for iOS and Android, an id derived from the subscription's endpoint for a
    /// browser. Records before format 4 (iOS only) read it as the token.
    #[serde(default)]
    pub device_id: String,
}

impl DeviceRecord {
    /// Whether a provider's word that this token stopped being valid at `unregistered_at_ms`
    /// (unix ms; `None` when it gave no time) ends this registration: yes, unless the token was
    /// registered again after that time (the app reinstalled, keeping its token).
    #[must_use]
    pub fn is_unregistered_by(&self, unregistered_at_ms: Option<u64>) -> bool {
        unregistered_at_ms.is_none_or(|at| self.registered_at_ms <= at)
    }
}

/// A device platform. Each platform is reached through exactly one [`Channel`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Ios,
    Android,
    Web,
}

impl Platform {
    /// Every platform, each reached through its own channel.
    pub const ALL: &'static [Platform] = &[Platform::Ios, Platform::Android, Platform::Web];

    /// The channel that delivers to this platform.
    #[must_use]
    pub fn channel(&self) -> Channel {
        match self {
            Platform::Ios => Channel::Apns,
            Platform::Android => Channel::Fcm,
            Platform::Web => Channel::Webpush,
        }
    }

    /// The platform's name in the API: `ios`, `android` or `web`.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Platform::Ios => "ios",
            Platform::Android => "android",
            Platform::Web => "web",
        }
    }
}

/// A delivery channel: one provider protocol, one sender, one queue per shard.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Apns,
    Fcm,
    Webpush,
}

impl Channel {
    /// Every channel, in [`Channel::index`] order.
    pub const ALL: &'static [Channel] = &[Channel::Apns, Channel::Fcm, Channel::Webpush];
    /// Number of channels: the length of per-channel arrays (`[T; Channel::COUNT]`).
    pub const COUNT: usize = Self::ALL.len();

    /// The channel's name in metrics labels, logs and JSON.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Channel::Apns => "apns",
            Channel::Fcm => "fcm",
            Channel::Webpush => "webpush",
        }
    }

    /// Dense index in `0..Channel::COUNT`, for per-channel arrays.
    #[must_use]
    pub fn index(&self) -> usize {
        match self {
            Channel::Apns => 0,
            Channel::Fcm => 1,
            Channel::Webpush => 2,
        }
    }
}

/// Delivery priority as understood by the providers (APNs 10 vs 5, FCM high vs normal).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    #[default]
    High,
    Normal,
}

/// What the client asked us to send, channel-independent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NotificationContent {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub data: JsonObject,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub priority: Priority,
    #[serde(default)]
    pub ttl_seconds: Option<u32>,
    #[serde(default)]
    pub collapse_id: Option<String>,
}

/// An accepted notification and every delivery it fanned out to. Keyed in the log by `id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NotificationRecord {
    /// Time-ordered UUIDv7 from the owning shard's `IdGenerator`.
    pub id: Uuid,
    pub user_id: String,
    pub idempotency_key: String,
    pub accepted_at_ms: u64,
    pub content: NotificationContent,
    #[serde(default)]
    pub deliveries: Vec<DeliveryRecord>,
}

impl NotificationRecord {
    /// True when every delivery is in a terminal state (vacuously true with no deliveries):
    /// nothing more will happen to this notification, so retention may delete it.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.deliveries.iter().all(|d| d.state.is_terminal())
    }
}

/// One (target, channel) delivery of a notification and its history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub id: Uuid,
    pub channel: Channel,
    /// Device token, phone number or address, depending on the channel.
    pub target: String,
    pub state: DeliveryState,
    pub attempts: u32,
    #[serde(default)]
    pub next_attempt_at_ms: Option<u64>,
    #[serde(default)]
    pub history: Vec<DeliveryEvent>,
}

/// Where a delivery is in its life. See `state.rs` for the transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Queued,
    Retrying,
    Sent,
    Delivered,
    Failed,
    Expired,
    Suppressed,
    Dead,
}

impl DeliveryState {
    /// Terminal states never change again; every delivery ends in exactly one of them.
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        !matches!(self, DeliveryState::Queued | DeliveryState::Retrying)
    }

    /// The state's name in metrics labels, logs and JSON.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            DeliveryState::Queued => "queued",
            DeliveryState::Retrying => "retrying",
            DeliveryState::Sent => "sent",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
            DeliveryState::Expired => "expired",
            DeliveryState::Suppressed => "suppressed",
            DeliveryState::Dead => "dead",
        }
    }
}

/// One entry in a delivery's history: the state it entered, when, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryEvent {
    pub at_ms: u64,
    pub state: DeliveryState,
    pub attempt: u32,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Splits off the version byte; no bytes at all is [`Error::Corrupt`].
fn split_version<'a>(kind: &str, bytes: &'a [u8]) -> Result<(u8, &'a [u8]), Error> {
    match bytes.split_first() {
        None => Err(Error::corrupt(format!("{kind} record is empty"))),
        Some((&v, rest)) => Ok((v, rest)),
    }
}

fn decode_json<T: DeserializeOwned>(kind: &str, json: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(json)
        .map_err(|e| Error::corrupt(format!("{kind} record: bad JSON: {e}")))
}

fn unknown_version(kind: &str, v: u8) -> Error {
    Error::corrupt(format!(
        "{kind} record: unknown format version {v} \
         (this build reads {RECORD_FORMAT_JSON} to {RECORD_FORMAT_VERSION})"
    ))
}

impl UserRecord {
    /// `[RECORD_FORMAT_VERSION][binary]` (format version 4, see the module doc).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 64 * self.devices.len());
        self.encode_into(&mut out);
        out
    }

    /// [`UserRecord::encode`], appended to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(RECORD_FORMAT_VERSION);
        codec::encode_user(out, self);
    }

    /// Inverse of [`UserRecord::encode`], and reader of version 1 (JSON) and 2 records;
    /// unknown version, truncated or malformed bytes are [`Error::Corrupt`].
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        match split_version("user", bytes)? {
            (v @ (RECORD_FORMAT_V2 | RECORD_FORMAT_V3 | RECORD_FORMAT_VERSION), body) => {
                codec::decode_user(body, v)
            }
            (RECORD_FORMAT_JSON, json) => {
                let mut user: UserRecord = decode_json("user", json)?;
                for d in &mut user.devices {
                    // Absent before version 3 (read as 0): registered when created.
                    d.registered_at_ms = d.registered_at_ms.max(d.created_at_ms);
                    // Absent before version 4 (iOS only): addressed by the token.
                    if d.device_id.is_empty() {
                        d.device_id.clone_from(&d.token);
                    }
                }
                Ok(user)
            }
            (v, _) => Err(unknown_version("user", v)),
        }
    }
}

impl DeliveryRecord {
    /// This delivery's progress (state, attempts, next attempt, history) as a delivery update
    /// record, `[RECORD_FORMAT_VERSION][binary]`: what is logged when a delivery settles, instead
    /// of rewriting the whole notification. Its id, channel and target are in the notification.
    #[must_use]
    pub fn encode_update(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 24 * self.history.len());
        self.encode_update_into(&mut out);
        out
    }

    /// [`DeliveryRecord::encode_update`], appended to `out`.
    pub fn encode_update_into(&self, out: &mut Vec<u8>) {
        out.push(RECORD_FORMAT_VERSION);
        codec::encode_progress(out, self);
    }

    /// Replaces this delivery's progress with a stored delivery update (see
    /// [`DeliveryRecord::encode_update`]). Malformed bytes are [`Error::Corrupt`] and change
    /// nothing.
    pub fn apply_update(&mut self, bytes: &[u8]) -> Result<(), Error> {
        match split_version("delivery update", bytes)? {
            // Delivery updates exist from record format 2 on, the same in 2, 3 and 4.
            (v @ (RECORD_FORMAT_V2 | RECORD_FORMAT_V3 | RECORD_FORMAT_VERSION), body) => {
                codec::decode_progress_into(body, v, self)
            }
            (v, _) => Err(unknown_version("delivery update", v)),
        }
    }
}

impl NotificationRecord {
    /// `[RECORD_FORMAT_VERSION][binary]` (format version 4, see the module doc).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_size_hint());
        self.encode_into(&mut out);
        out
    }

    /// [`NotificationRecord::encode`], appended to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(RECORD_FORMAT_VERSION);
        codec::encode_notification(out, self);
    }

    /// Inverse of [`NotificationRecord::encode`], and reader of version 1 (JSON) and 2 records;
    /// unknown version, truncated or malformed bytes are [`Error::Corrupt`].
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        match split_version("notification", bytes)? {
            (v @ (RECORD_FORMAT_V2 | RECORD_FORMAT_V3 | RECORD_FORMAT_VERSION), body) => {
                codec::decode_notification(body, v)
            }
            (RECORD_FORMAT_JSON, json) => decode_json("notification", json),
            (v, _) => Err(unknown_version("notification", v)),
        }
    }

    /// A capacity that usually fits the whole encoding, so `encode` allocates once.
    fn encoded_size_hint(&self) -> usize {
        let c = &self.content;
        let strings = [&c.title, &c.body, &c.category, &c.collapse_id]
            .iter()
            .map(|s| s.as_ref().map_or(0, String::len))
            .sum::<usize>();
        let deliveries = self
            .deliveries
            .iter()
            .map(|d| 48 + d.target.len() + 32 * d.history.len())
            .sum::<usize>();
        96 + self.user_id.len()
            + self.idempotency_key.len()
            + strings
            + c.data.as_str().len()
            + deliveries
    }
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;

    /// How earlier builds encoded a record: `[1][JSON]`, exactly as their `encode` did.
    fn json_v1<T: Serialize>(value: &T) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.push(RECORD_FORMAT_JSON);
        serde_json::to_writer(&mut out, value).unwrap();
        out
    }

    pub(super) fn sample_notification() -> NotificationRecord {
        let mut data = serde_json::Map::new();
        data.insert("order".into(), serde_json::json!(12345));
        NotificationRecord {
            id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
            user_id: "user-1".into(),
            idempotency_key: "k-1".into(),
            accepted_at_ms: 1_700_000_000_000,
            content: NotificationContent {
                title: Some("Order shipped".into()),
                body: Some("On its way".into()),
                data: JsonObject::from_map(&data),
                category: Some("orders".into()),
                priority: Priority::Normal,
                ttl_seconds: Some(3600),
                collapse_id: None,
            },
            deliveries: vec![DeliveryRecord {
                id: Uuid::from_u128(2),
                channel: Channel::Apns,
                target: "abcd".into(),
                state: DeliveryState::Retrying,
                attempts: 1,
                next_attempt_at_ms: Some(1_700_000_000_500),
                history: vec![DeliveryEvent {
                    at_ms: 1_700_000_000_000,
                    state: DeliveryState::Queued,
                    attempt: 0,
                    reason: None,
                }],
            }],
        }
    }

    #[test]
    fn notification_round_trips_with_version_byte() {
        let n = sample_notification();
        let bytes = n.encode();
        assert_eq!(RECORD_FORMAT_VERSION, 4);
        assert_eq!(bytes[0], RECORD_FORMAT_VERSION);
        assert_eq!(&bytes[1..17], n.id.as_bytes(), "v2 starts with the raw id");
        assert_eq!(NotificationRecord::decode(&bytes).ok(), Some(n));
    }

    #[test]
    fn user_round_trips() {
        let u = UserRecord {
            user_id: "u".into(),
            email: Some("u@example.com".into()),
            devices: vec![DeviceRecord {
                platform: Platform::Ios,
                token: "t".into(),
                active: false,
                created_at_ms: 5,
                registered_at_ms: 7,
                deactivated_reason: Some("Unregistered".into()),
                deactivated_at_ms: Some(8),
                device_id: "t".into(),
            }],
            updated_at_ms: 9,
            ..UserRecord::default()
        };
        assert_eq!(UserRecord::decode(&u.encode()).ok(), Some(u));
    }

    #[test]
    fn a_token_registered_after_its_unregistration_outlives_it() {
        let d = DeviceRecord {
            platform: Platform::Ios,
            token: "t".into(),
            active: true,
            created_at_ms: 1_000,
            registered_at_ms: 5_000,
            deactivated_reason: None,
            deactivated_at_ms: None,
            device_id: "t".into(),
        };
        assert!(d.is_unregistered_by(None), "no time: unregistered");
        assert!(d.is_unregistered_by(Some(5_001)));
        assert!(
            d.is_unregistered_by(Some(5_000)),
            "the same ms is not after"
        );
        assert!(!d.is_unregistered_by(Some(4_999)), "registered again since");
        assert!(
            !d.is_unregistered_by(Some(1_000)),
            "its first registration does not count"
        );
    }

    #[test]
    fn enums_are_snake_case_in_json() {
        let json = String::from_utf8(json_v1(&sample_notification())[1..].to_vec()).unwrap();
        assert!(json.contains(r#""channel":"apns""#), "{json}");
        assert!(json.contains(r#""state":"retrying""#), "{json}");
        assert!(json.contains(r#""priority":"normal""#), "{json}");
    }

    #[test]
    fn missing_optional_fields_take_defaults() {
        let mut bytes = vec![RECORD_FORMAT_JSON];
        bytes.extend_from_slice(br#"{"user_id":"u","updated_at_ms":1}"#);
        let u = UserRecord::decode(&bytes).unwrap();
        assert!(u.devices.is_empty());
        assert_eq!(u.email, None);
        assert_eq!(NotificationContent::default().priority, Priority::High);
    }

    #[test]
    fn bad_bytes_are_corrupt_and_say_why() {
        let e = NotificationRecord::decode(&[]).unwrap_err().to_string();
        assert!(e.contains("notification record is empty"), "{e}");
        let e = UserRecord::decode(&[5, b'{', b'}'])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown format version 5"), "{e}");
        assert!(e.contains("reads 1 to 4"), "{e}");
        let e = UserRecord::decode(&[RECORD_FORMAT_JSON, b'{']).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }));
        assert!(e.to_string().contains("user record: bad JSON"), "{e}");
    }

    #[test]
    fn finished_means_all_deliveries_terminal() {
        let mut n = sample_notification();
        assert!(!n.is_finished());
        n.deliveries[0].state = DeliveryState::Dead;
        assert!(n.is_finished());
        n.deliveries.clear();
        assert!(n.is_finished());
    }

    #[test]
    fn terminal_states_and_channel_tables() {
        use DeliveryState::*;
        for s in [Queued, Retrying] {
            assert!(!s.is_terminal());
        }
        for s in [Sent, Delivered, Failed, Expired, Suppressed, Dead] {
            assert!(s.is_terminal(), "{}", s.as_str());
        }
        for (i, c) in Channel::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        assert_eq!(Channel::COUNT, Channel::ALL.len());
        assert_eq!(Platform::Ios.channel().as_str(), "apns");
    }

    const ALL_STATES: [DeliveryState; 8] = [
        DeliveryState::Queued,
        DeliveryState::Retrying,
        DeliveryState::Sent,
        DeliveryState::Delivered,
        DeliveryState::Failed,
        DeliveryState::Expired,
        DeliveryState::Suppressed,
        DeliveryState::Dead,
    ];

    /// Every enum variant, every Option both ways, unicode, nested data, long histories.
    pub(super) fn rich_notifications() -> Vec<NotificationRecord> {
        let mut data = serde_json::Map::new();
        data.insert(
            "ünï".into(),
            serde_json::json!({"a": [1, 2.5, null, true], "b": "\"q\"\n"}),
        );
        data.insert("big".into(), serde_json::json!("x".repeat(100_000)));
        data.insert("n".into(), serde_json::json!(u64::MAX));
        let history = |n: usize| {
            (0..n)
                .map(|i| DeliveryEvent {
                    at_ms: 1_700_000_000_000 + i as u64,
                    state: ALL_STATES[i % ALL_STATES.len()],
                    attempt: i as u32,
                    reason: (i % 2 == 0).then(|| format!("reason {i} ✉️")),
                })
                .collect::<Vec<_>>()
        };
        let delivery = |i: usize, state, next| DeliveryRecord {
            id: Uuid::from_u128(u128::MAX - i as u128),
            channel: Channel::Apns,
            target: format!("tok-{i}-日本"),
            state,
            attempts: u32::MAX - i as u32,
            next_attempt_at_ms: next,
            history: history(i * 37),
        };
        let full = NotificationRecord {
            id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
            user_id: "üser-1 😀".into(),
            idempotency_key: String::new(),
            accepted_at_ms: u64::MAX,
            content: NotificationContent {
                title: Some("Tïtle\0with nul".into()),
                body: Some("b".repeat(70_000)),
                data: JsonObject::from_map(&data),
                category: Some(String::new()),
                priority: Priority::High,
                ttl_seconds: Some(u32::MAX),
                collapse_id: Some("c".into()),
            },
            deliveries: ALL_STATES
                .iter()
                .enumerate()
                .map(|(i, &s)| delivery(i, s, (i % 2 == 1).then_some(i as u64 * 1000)))
                .collect(),
        };
        let bare = NotificationRecord {
            id: Uuid::nil(),
            user_id: String::new(),
            idempotency_key: "k".into(),
            accepted_at_ms: 0,
            content: NotificationContent::default(),
            deliveries: Vec::new(),
        };
        let mut normal = sample_notification();
        normal.content.priority = Priority::Normal;
        normal.content.collapse_id = Some("col".into());
        vec![full, bare, normal, sample_notification()]
    }

    pub(super) fn rich_users() -> Vec<UserRecord> {
        let device = |i: u64, active| DeviceRecord {
            platform: Platform::ALL[i as usize % Platform::ALL.len()],
            token: format!("tøken-{i}"),
            active,
            created_at_ms: u64::MAX / 20 * i,
            registered_at_ms: u64::MAX / 20 * i + 1000 * i,
            deactivated_reason: (!active).then(|| "Unregistered".into()),
            deactivated_at_ms: (!active).then_some(u64::MAX / 20 * i + 2000 * i),
            // A browser's device id is derived from its endpoint, not its token.
            device_id: if i % 3 == 2 {
                format!("web-{i}")
            } else {
                format!("tøken-{i}")
            },
        };
        vec![
            UserRecord {
                user_id: "ü".into(),
                email: Some("u@example.com".into()),
                phone: Some("+1 555".into()),
                locale: Some("fr-CA".into()),
                timezone: Some("America/Montréal".into()),
                devices: (0..20).map(|i| device(i, i % 3 == 0)).collect(),
                updated_at_ms: u64::MAX,
            },
            UserRecord::default(),
        ]
    }

    #[test]
    fn v4_round_trips_rich_records() {
        for n in rich_notifications() {
            let bytes = n.encode();
            assert_eq!(bytes[0], 4);
            assert_eq!(NotificationRecord::decode(&bytes).unwrap(), n);
        }
        for u in rich_users() {
            let bytes = u.encode();
            assert_eq!(bytes[0], 4);
            assert_eq!(UserRecord::decode(&bytes).unwrap(), u);
        }
    }

    #[test]
    fn v1_json_records_still_decode() {
        for n in rich_notifications() {
            assert_eq!(NotificationRecord::decode(&json_v1(&n)).unwrap(), n);
        }
        for u in rich_users() {
            assert_eq!(UserRecord::decode(&json_v1(&u)).unwrap(), u);
        }
        // A literal v1 record as an earlier build stored it.
        let stored = br#"{"id":"01900000-0000-7000-8000-000000000001","user_id":"user-1","idempotency_key":"k-1","accepted_at_ms":1700000000000,"content":{"title":"Order shipped","body":"On its way","data":{"order":12345},"category":"orders","priority":"normal","ttl_seconds":3600,"collapse_id":null},"deliveries":[{"id":"00000000-0000-0000-0000-000000000002","channel":"apns","target":"abcd","state":"retrying","attempts":1,"next_attempt_at_ms":1700000000500,"history":[{"at_ms":1700000000000,"state":"queued","attempt":0,"reason":null}]}]}"#;
        let mut bytes = vec![1];
        bytes.extend_from_slice(stored);
        assert_eq!(
            NotificationRecord::decode(&bytes).unwrap(),
            sample_notification()
        );
    }

    #[test]
    fn every_truncation_of_v2_is_corrupt() {
        let mut n = sample_notification();
        n.deliveries[0].history.push(DeliveryEvent {
            at_ms: 1_700_000_000_400,
            state: DeliveryState::Retrying,
            attempt: 1,
            reason: Some("503 ServiceUnavailable".into()),
        });
        let bytes = n.encode();
        for len in 0..bytes.len() {
            match NotificationRecord::decode(&bytes[..len]) {
                Err(Error::Corrupt { what }) => assert!(what.contains("notification"), "{what}"),
                other => panic!("prefix of {len}/{} bytes decoded: {other:?}", bytes.len()),
            }
        }
        let bytes = rich_users()[0].encode();
        for len in 0..bytes.len() {
            assert!(matches!(
                UserRecord::decode(&bytes[..len]),
                Err(Error::Corrupt { .. })
            ));
        }
        // And one byte too many is as bad as one too few.
        let mut long = n.encode();
        long.push(0);
        let e = NotificationRecord::decode(&long).unwrap_err().to_string();
        assert!(e.contains("trailing bytes"), "{e}");
    }

    #[test]
    fn malformed_v2_fields_are_named() {
        let bytes = sample_notification().encode();
        let what = |bytes: &[u8]| match NotificationRecord::decode(bytes) {
            Err(Error::Corrupt { what }) => what,
            other => panic!("{other:?}"),
        };
        // Byte 17 is user_id's length: claim far more than there is.
        let mut b = bytes.clone();
        b[17] = 0x7f;
        assert!(what(&b).contains("user_id"), "{}", what(&b));
        // A varint that never ends.
        let mut b = bytes[..18].to_vec();
        b.extend_from_slice(&[0xff; 20]);
        assert!(what(&b).contains("malformed"), "{}", what(&b));
        // Invalid UTF-8 in user_id ("user-1" starts at byte 18).
        let mut b = bytes.clone();
        b[18] = 0xff;
        assert!(what(&b).contains("user_id"), "{}", what(&b));
        // A huge deliveries count in an otherwise tiny record must not allocate it.
        let mut bare = rich_notifications()[1].encode();
        let count = bare.len() - 1;
        bare.truncate(count);
        bare.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(what(&bare).contains("deliveries count"), "{}", what(&bare));
        // Unknown enum tag and bad presence byte.
        let mut tags = rich_notifications()[1].encode();
        let priority = tags.len() - 4; // priority, ttl None, collapse None, 0 deliveries
        tags[priority] = 9;
        assert!(what(&tags).contains("content.priority"), "{}", what(&tags));
        tags[priority] = 0;
        tags[priority + 1] = 2;
        assert!(
            what(&tags).contains("content.ttl_seconds"),
            "{}",
            what(&tags)
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        // xorshift: deterministic, no dependency.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let valid = sample_notification().encode();
        for round in 0..20_000 {
            let len = (next() % 96) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 {
                // Mutate a valid record instead, to get past the first fields.
                bytes = valid.clone();
                for _ in 0..1 + next() % 4 {
                    let i = (next() as usize) % bytes.len();
                    bytes[i] = next() as u8;
                }
            } else if let Some(b) = bytes.first_mut() {
                *b = 2 + u8::from(round % 4 == 1);
            }
            let _ = NotificationRecord::decode(&bytes);
            let _ = UserRecord::decode(&bytes);
        }
    }

    #[test]
    fn v2_is_much_smaller_than_json() {
        for n in [sample_notification(), settled_notification()] {
            let (v2, v1) = (n.encode().len(), json_v1(&n).len());
            assert!(v2 * 100 < v1 * 70, "v2 {v2} bytes vs JSON {v1} bytes");
        }
        let u = &rich_users()[0];
        assert!(u.encode().len() * 100 < json_v1(u).len() * 70);
    }

    /// The typical record at its second write: delivered after one retry.
    fn settled_notification() -> NotificationRecord {
        let mut n = sample_notification();
        let d = &mut n.deliveries[0];
        d.state = DeliveryState::Delivered;
        d.target = "a1b2".repeat(16); // a 64-hex-digit APNs device token
        d.attempts = 2;
        d.next_attempt_at_ms = None;
        for (at, state, attempt, reason) in [
            (
                300,
                DeliveryState::Retrying,
                1,
                Some("503 ServiceUnavailable"),
            ),
            (900, DeliveryState::Delivered, 2, None),
        ] {
            d.history.push(DeliveryEvent {
                at_ms: 1_700_000_000_000 + at,
                state,
                attempt,
                reason: reason.map(String::from),
            });
        }
        n
    }

    /// `cargo test --release -p clarion-shards -- --ignored --nocapture encode_timing`
    #[test]
    #[ignore = "timing report, run by hand in release mode"]
    fn encode_timing() {
        use std::hint::black_box;
        use std::time::Instant;
        const N: u32 = 200_000;
        for (name, n) in [
            ("accepted", sample_notification()),
            ("settled", settled_notification()),
        ] {
            let time = |f: &dyn Fn() -> Vec<u8>| {
                let start = Instant::now();
                for _ in 0..N {
                    black_box(f());
                }
                start.elapsed().as_nanos() / u128::from(N)
            };
            let v1 = time(&|| json_v1(black_box(&n)));
            let v2 = time(&|| black_box(&n).encode());
            let (b1, b2) = (json_v1(&n), n.encode());
            let d1 = time(&|| {
                black_box(NotificationRecord::decode(black_box(&b1)).unwrap());
                Vec::new()
            });
            let d2 = time(&|| {
                black_box(NotificationRecord::decode(black_box(&b2)).unwrap());
                Vec::new()
            });
            println!(
                "{name}: v1 JSON {} B, encode {v1} ns, decode {d1} ns | v2 {} B, encode {v2} ns, decode {d2} ns",
                b1.len(),
                b2.len()
            );
        }
    }

    #[test]
    fn delivery_update_roundtrips_progress_and_rejects_garbage_unchanged() {
        let n = sample_notification();
        let mut settled = n.deliveries[0].clone();
        settled.state = DeliveryState::Retrying;
        settled.attempts = 3;
        settled.next_attempt_at_ms = Some(1_700_000_009_000);
        settled.history.push(DeliveryEvent {
            at_ms: 1_700_000_001_000,
            state: DeliveryState::Retrying,
            attempt: 3,
            reason: Some("ServiceUnavailable".into()),
        });
        let bytes = settled.encode_update();
        assert_eq!(bytes[0], RECORD_FORMAT_VERSION);
        assert!(bytes.len() < n.encode().len() / 2, "{} bytes", bytes.len());
        let mut d = n.deliveries[0].clone();
        d.apply_update(&bytes).expect("apply");
        assert_eq!(d, settled);

        let before = d.clone();
        for bad in [
            &[][..],
            &[9, 0][..],
            &bytes[..bytes.len() - 1],
            &[2, 200][..],
        ] {
            assert!(d.apply_update(bad).is_err(), "{bad:?}");
            assert_eq!(d, before, "a failed update changes nothing");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(d.apply_update(&trailing).is_err());
    }
}
