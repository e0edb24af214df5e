//! The records a shard stores in its log (users with their devices, notifications with their
//! deliveries) and their on-disk encoding: one format-version byte followed by JSON.
//!
//! JSON keeps records readable with any tool and lets fields be added with `#[serde(default)]`;
//! the version byte is there for the day the encoding itself has to change.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::error::Error;

/// The first byte of every stored value. Bump it only with a reader for the old version.
pub const RECORD_FORMAT_VERSION: u8 = 1;

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
    pub created_at_ms: u64,
    /// Why the device was deactivated (for example the provider's "Unregistered").
    #[serde(default)]
    pub deactivated_reason: Option<String>,
}

/// A device platform. Each platform is reached through exactly one [`Channel`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Ios,
}

impl Platform {
    /// The channel that delivers to this platform.
    #[must_use]
    pub fn channel(&self) -> Channel {
        match self {
            Platform::Ios => Channel::Apns,
        }
    }
}

/// A delivery channel: one provider protocol, one sender, one queue per shard.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Apns,
}

impl Channel {
    /// Every channel, in [`Channel::index`] order.
    pub const ALL: &'static [Channel] = &[Channel::Apns];
    /// Number of channels: the length of per-channel arrays (`[T; Channel::COUNT]`).
    pub const COUNT: usize = Self::ALL.len();

    /// The channel's name in metrics labels, logs and JSON.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Channel::Apns => "apns",
        }
    }

    /// Dense index in `0..Channel::COUNT`, for per-channel arrays.
    #[must_use]
    pub fn index(&self) -> usize {
        match self {
            Channel::Apns => 0,
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
    pub data: serde_json::Map<String, serde_json::Value>,
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

fn encode_record<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(RECORD_FORMAT_VERSION);
    if let Err(e) = serde_json::to_writer(&mut out, value) {
        // Derived Serialize impls over strings, numbers and string-keyed maps cannot fail.
        unreachable!("record serialization cannot fail: {e}");
    }
    out
}

fn decode_record<T: DeserializeOwned>(kind: &str, bytes: &[u8]) -> Result<T, Error> {
    match bytes.split_first() {
        None => Err(Error::corrupt(format!("{kind} record is empty"))),
        Some((&RECORD_FORMAT_VERSION, json)) => serde_json::from_slice(json)
            .map_err(|e| Error::corrupt(format!("{kind} record: bad JSON: {e}"))),
        Some((&v, _)) => Err(Error::corrupt(format!(
            "{kind} record: unknown format version {v} (this build reads {RECORD_FORMAT_VERSION})"
        ))),
    }
}

impl UserRecord {
    /// `[RECORD_FORMAT_VERSION][JSON]`.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        encode_record(self)
    }

    /// Inverse of [`UserRecord::encode`]; unknown version or bad JSON is [`Error::Corrupt`].
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        decode_record("user", bytes)
    }
}

impl NotificationRecord {
    /// `[RECORD_FORMAT_VERSION][JSON]`.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        encode_record(self)
    }

    /// Inverse of [`NotificationRecord::encode`]; unknown version or bad JSON is
    /// [`Error::Corrupt`].
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        decode_record("notification", bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_notification() -> NotificationRecord {
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
                data,
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
        assert_eq!(bytes[0], RECORD_FORMAT_VERSION);
        assert_eq!(bytes[1], b'{');
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
                deactivated_reason: Some("Unregistered".into()),
            }],
            updated_at_ms: 9,
            ..UserRecord::default()
        };
        assert_eq!(UserRecord::decode(&u.encode()).ok(), Some(u));
    }

    #[test]
    fn enums_are_snake_case_in_json() {
        let json = String::from_utf8(sample_notification().encode()[1..].to_vec()).unwrap();
        assert!(json.contains(r#""channel":"apns""#), "{json}");
        assert!(json.contains(r#""state":"retrying""#), "{json}");
        assert!(json.contains(r#""priority":"normal""#), "{json}");
    }

    #[test]
    fn missing_optional_fields_take_defaults() {
        let mut bytes = vec![RECORD_FORMAT_VERSION];
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
        let e = UserRecord::decode(&[2, b'{', b'}'])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown format version 2"), "{e}");
        let e = UserRecord::decode(&[RECORD_FORMAT_VERSION, b'{']).unwrap_err();
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
}
