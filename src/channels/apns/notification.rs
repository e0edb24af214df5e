//! What the caller hands the sender for one delivery attempt: [`ApnsNotification`] and its
//! [`PushType`], with the per-type rules Apple attaches (priority, payload limit).

use super::payload::{MAX_PAYLOAD_BYTES, MAX_VOIP_PAYLOAD_BYTES};
use bytes::Bytes;

/// `apns-push-type`: what the notification does on the device.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushType {
    Alert,
    /// Silent content update; APNs requires priority 5, which the encoder forces.
    Background,
    Location,
    Voip,
    Complication,
    FileProvider,
    Mdm,
    LiveActivity,
    PushToTalk,
}

impl PushType {
    /// The header value Apple expects.
    pub fn as_str(self) -> &'static str {
        match self {
            PushType::Alert => "alert",
            PushType::Background => "background",
            PushType::Location => "location",
            PushType::Voip => "voip",
            PushType::Complication => "complication",
            PushType::FileProvider => "fileprovider",
            PushType::Mdm => "mdm",
            PushType::LiveActivity => "liveactivity",
            PushType::PushToTalk => "pushtotalk",
        }
    }

    /// The largest payload APNs accepts for this push type.
    pub fn payload_limit(self) -> usize {
        match self {
            PushType::Voip => MAX_VOIP_PAYLOAD_BYTES,
            _ => MAX_PAYLOAD_BYTES,
        }
    }
}

/// One delivery attempt's worth of notification.
#[derive(Debug, Clone)]
pub struct ApnsNotification<'a> {
    /// Sent as `apns-id` (lowercase, hyphenated), the same on every attempt.
    pub delivery_id: uuid::Uuid,
    /// Hex device token.
    pub device_token: &'a str,
    pub push_type: PushType,
    /// 10 (immediate), 5 (power-considerate) or 1; background pushes always go with 5.
    pub priority: u8,
    /// Unix seconds until which APNs keeps retrying delivery; 0 = deliver now or never.
    pub expiration_unix_s: u64,
    pub collapse_id: Option<&'a str>,
    /// JSON body from [`encode_payload`](super::encode_payload).
    pub payload: Bytes,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn push_types_use_apples_header_values() {
        let all = [
            (PushType::Alert, "alert"),
            (PushType::Background, "background"),
            (PushType::Location, "location"),
            (PushType::Voip, "voip"),
            (PushType::Complication, "complication"),
            (PushType::FileProvider, "fileprovider"),
            (PushType::Mdm, "mdm"),
            (PushType::LiveActivity, "liveactivity"),
            (PushType::PushToTalk, "pushtotalk"),
        ];
        for (push_type, header) in all {
            assert_eq!(push_type.as_str(), header);
            // Every value must be a valid static header value.
            assert!(http::HeaderValue::from_str(header).is_ok());
        }
    }

    #[test]
    fn only_voip_gets_the_larger_payload_limit() {
        assert_eq!(PushType::Voip.payload_limit(), 5120);
        assert_eq!(PushType::Alert.payload_limit(), 4096);
        assert_eq!(PushType::Background.payload_limit(), 4096);
        assert_eq!(PushType::LiveActivity.payload_limit(), 4096);
    }
}
