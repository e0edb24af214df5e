//! Web Push's rules for the API: a device is a browser's subscription (checked and stored by
//! `subscription.rs`), addressed by an id derived from its endpoint; the plaintext's room and
//! the topic's shape (`payload.rs`).

use clarion_shards::{Channel, NotificationContent, Platform};
use serde_json::{Value, json};

use super::payload::{self, PayloadError};
use super::subscription::{self, Subscription};
use crate::channels::rules::{ChannelRules, RuleError, TargetPolicy};

pub struct WebPushRules;

impl ChannelRules for WebPushRules {
    fn channel(&self) -> Channel {
        Channel::Webpush
    }

    fn platform(&self) -> Platform {
        Platform::Web
    }

    fn target_field(&self) -> &'static str {
        "subscription"
    }

    fn target(&self, raw: &Value, policy: TargetPolicy) -> Result<String, RuleError> {
        Subscription::parse(raw, policy).map(|s| s.to_target())
    }

    fn device_id(&self, target: &str) -> String {
        // A stored target always reads back; were it not to, its bytes still give a stable id.
        let endpoint = Subscription::from_target(target).map(|s| s.endpoint);
        subscription::device_id(endpoint.as_deref().unwrap_or(target))
    }

    fn device_id_form(&self, raw: &str) -> Option<String> {
        subscription::is_device_id(raw).then(|| raw.to_string())
    }

    fn describe(&self, target: &str) -> Value {
        match Subscription::from_target(target) {
            Ok(s) => json!({ "endpoint": s.endpoint }),
            Err(_) => json!({}),
        }
    }

    fn check_content(&self, content: &NotificationContent) -> Result<(), RuleError> {
        payload::check(content).map_err(|e| match e {
            PayloadError::BadTopic { .. } => {
                RuleError::new("collapse_id", "invalid_topic", format!("webpush: {e}"))
            }
            _ => RuleError::new("body", "payload_too_large", format!("webpush: {e}")),
        })
    }

    #[cfg(any(test, feature = "fuzz"))]
    fn assert_renders(&self, c: &NotificationContent) {
        let id = uuid::Uuid::nil();
        let plain = match payload::encode(id, c) {
            Ok(p) => p,
            Err(e) => panic!("accepted, but its Web Push message cannot be built: {e}: {c:?}"),
        };
        let v: Value = match serde_json::from_slice(&plain) {
            Ok(v) => v,
            Err(e) => panic!("Web Push plaintext is not JSON: {e}"),
        };
        assert_eq!(v["title"].as_str(), c.title.as_deref());
        assert_eq!(v["body"].as_str(), c.body.as_deref());
        // `data` as stored, digit for digit.
        #[derive(serde::Deserialize)]
        struct Plain<'a> {
            #[serde(borrow)]
            data: &'a serde_json::value::RawValue,
        }
        let raw: Plain<'_> = match serde_json::from_slice(&plain) {
            Ok(p) => p,
            Err(e) => panic!("Web Push plaintext has no data: {e}"),
        };
        assert_eq!(raw.data.get(), c.data.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::webpush::subscription::tests::{AUTH, UA_PUBLIC};

    #[test]
    fn a_subscription_is_stored_canonically_and_addressed_by_its_endpoint() {
        let raw = json!({"endpoint": "https://push.example.net/p/1", "expirationTime": null, "keys": {"p256dh": UA_PUBLIC, "auth": format!("{AUTH}==")}});
        let target = WebPushRules.target(&raw, TargetPolicy::default()).unwrap();
        let id = WebPushRules.device_id(&target);
        assert_eq!(id, subscription::device_id("https://push.example.net/p/1"));
        assert_eq!(WebPushRules.device_id_form(&id), Some(id.clone()));
        assert_eq!(WebPushRules.device_id_form("abc"), None);
        assert_eq!(
            WebPushRules.describe(&target),
            json!({"endpoint": "https://push.example.net/p/1"})
        );
    }

    #[test]
    fn a_bad_topic_names_collapse_id() {
        let c = NotificationContent {
            collapse_id: Some("x".repeat(40)),
            ..NotificationContent::default()
        };
        let e = WebPushRules.check_content(&c).unwrap_err();
        assert_eq!((e.field, e.code), ("collapse_id", "invalid_topic"));
    }
}
