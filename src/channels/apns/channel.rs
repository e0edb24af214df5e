//! The APNs channel as the engine and the API see it: its rules (a device token is 64 hex characters; the payload Apple
//! accepts is at most 4 KiB) and its sender, which maps a delivery onto an APNs request (payload, push type, priority,
//! expiration, collapse id, `apns-id` = delivery id); the `ApnsSender` answers in
//! [`Verdict`]s.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use clarion_shards::{Channel, NotificationContent, Platform, Priority, Verdict};

use super::{ApnsNotification, ApnsSender, PayloadFields, PushType, payload_size};
use crate::channels::rules::{ChannelRules, RuleError, TargetPolicy, token_str};
use crate::channels::{ChannelSender, SendFuture, SendJob};
use serde_json::Value;

/// Expiration used when a notification has no `ttl_seconds`: APNs keeps it about four weeks.
pub const DEFAULT_TTL_SECONDS: u64 = 28 * 86_400;
/// In-flight APNs requests per shard: enough to fill several HTTP/2 connections' streams.
pub const MAX_IN_FLIGHT: usize = 4096;

pub struct ApnsChannel {
    sender: Rc<ApnsSender>,
}

impl ApnsChannel {
    pub fn new(sender: ApnsSender) -> ApnsChannel {
        ApnsChannel {
            sender: Rc::new(sender),
        }
    }

    pub fn sender(&self) -> &Rc<ApnsSender> {
        &self.sender
    }
}

impl ChannelSender for ApnsChannel {
    fn channel(&self) -> Channel {
        Channel::Apns
    }

    fn send(&self, job: &SendJob<'_>) -> SendFuture {
        let c = job.content;
        let fields = PayloadFields {
            title: c.title.as_deref(),
            body: c.body.as_deref(),
            category: c.category.as_deref(),
            data: &c.data,
        };
        let payload = match self.sender.encode_payload(&fields) {
            Ok(p) => p,
            Err(e) => {
                let reason = format!("payload: {e}");
                return Box::pin(async move { Verdict::permanent(reason) });
            }
        };
        let alert = c.title.is_some() || c.body.is_some();
        let push_type = if alert {
            PushType::Alert
        } else {
            PushType::Background
        };
        let priority = match (alert, c.priority) {
            (true, Priority::High) => 10,
            _ => 5,
        };
        let ttl = c.ttl_seconds.map_or(DEFAULT_TTL_SECONDS, u64::from);
        // Encoded here, while the record is borrowed: the future then owns only the request.
        let prepared = self.sender.prepare(&ApnsNotification {
            delivery_id: job.delivery_id,
            device_token: job.target,
            push_type,
            priority,
            expiration_unix_s: job.accepted_at_ms / 1000 + ttl,
            collapse_id: c.collapse_id.as_deref(),
            payload,
        });
        Box::pin(self.sender.send_prepared(prepared))
    }

    fn max_in_flight(&self) -> usize {
        MAX_IN_FLIGHT
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = ()>>> {
        let sender = self.sender.clone();
        Box::pin(async move { sender.close().await })
    }
}

/// APNs' rules for the API: device tokens and the payload's size.
pub struct ApnsRules;

/// Characters in the device tokens iOS issues: 32 bytes in hex.
pub const DEVICE_TOKEN_HEX_CHARS: usize = 64;

fn fields(c: &NotificationContent) -> PayloadFields<'_> {
    PayloadFields {
        title: c.title.as_deref(),
        body: c.body.as_deref(),
        category: c.category.as_deref(),
        data: &c.data,
    }
}

impl ChannelRules for ApnsRules {
    fn channel(&self) -> Channel {
        Channel::Apns
    }

    fn platform(&self) -> Platform {
        Platform::Ios
    }

    fn platform_name(&self) -> &'static str {
        "ios"
    }

    fn target_field(&self) -> &'static str {
        "token"
    }

    /// 64 hex characters, stored lowercased.
    fn target(&self, raw: &Value, _: TargetPolicy) -> Result<String, RuleError> {
        let raw = token_str(raw)?;
        if raw.len() != DEVICE_TOKEN_HEX_CHARS || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RuleError::new(
                "token",
                "invalid_token",
                format!(
                    "an APNs device token is {DEVICE_TOKEN_HEX_CHARS} hexadecimal characters, got {} characters",
                    raw.len()
                ),
            ));
        }
        Ok(raw.to_ascii_lowercase())
    }

    fn check_content(&self, content: &NotificationContent) -> Result<(), RuleError> {
        payload_size(&fields(content))
            .map(drop)
            .map_err(|e| RuleError::new("body", "payload_too_large", format!("apns: {e}")))
    }

    #[cfg(any(test, feature = "fuzz"))]
    fn assert_renders(&self, c: &NotificationContent) {
        use super::{RESERVED_KEY, encode_payload};
        use clarion_shards::JsonObject;
        assert!(!c.data.contains_key(RESERVED_KEY), "{c:?}");
        let payload = match encode_payload(&fields(c)) {
            Ok(p) => p,
            Err(e) => panic!("accepted, but its APNs payload cannot be built: {e}: {c:?}"),
        };
        let text = std::str::from_utf8(&payload).unwrap_or_default();
        let payload = match JsonObject::parse(text).map(|o| o.to_map()) {
            Ok(Ok(map)) => map,
            other => panic!("payload {text:?} is not one JSON object: {other:?}"),
        };
        let data = c.data.to_map().unwrap_or_default();
        assert_eq!(payload.len(), data.len() + 1, "{text}");
        for (k, v) in &data {
            assert_eq!(payload.get(k), Some(v), "data key {k:?} in {text}");
        }
        let aps = &payload[RESERVED_KEY];
        assert_eq!(aps["alert"]["title"].as_str(), c.title.as_deref(), "{text}");
        assert_eq!(aps["alert"]["body"].as_str(), c.body.as_deref(), "{text}");
        assert_eq!(aps["category"].as_str(), c.category.as_deref(), "{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_device_token_is_64_hex_characters_stored_lowercased() {
        let target = |t: &str| ApnsRules.target(&Value::from(t), TargetPolicy::default());
        let t = "A".repeat(64);
        assert_eq!(target(&t).unwrap(), "a".repeat(64));
        assert_eq!(ApnsRules.device_id(&target(&t).unwrap()), "a".repeat(64));
        for bad in [
            "g".repeat(64),
            "a".repeat(63),
            "a".repeat(65),
            String::new(),
        ] {
            assert_eq!(ApnsRules.device_id_form(&bad), None);
            let e = target(&bad).unwrap_err();
            assert_eq!((e.field, e.code), ("token", "invalid_token"), "{bad}");
        }
        let e = ApnsRules
            .target(&json!(12), TargetPolicy::default())
            .unwrap_err();
        assert_eq!((e.field, e.code), ("token", "invalid_type"));
    }

    #[test]
    fn content_past_4_kib_is_too_large_naming_the_channel() {
        let mut c = NotificationContent {
            body: Some("x".repeat(3000)),
            ..NotificationContent::default()
        };
        assert!(ApnsRules.check_content(&c).is_ok());
        c.body = Some("x".repeat(5000));
        let e = ApnsRules.check_content(&c).unwrap_err();
        assert_eq!((e.field, e.code), ("body", "payload_too_large"));
        assert!(e.message.starts_with("apns: "), "{}", e.message);
    }
}
