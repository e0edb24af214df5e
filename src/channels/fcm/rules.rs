//! FCM's rules for the API: registration tokens (1 to 4096 characters of `[A-Za-z0-9_:-]`,
//! addressed by themselves) and the message's size and reserved `data` keys.

use clarion_shards::{Channel, NotificationContent, Platform};
use serde_json::Value;

use super::message::{self, MessageError};
use crate::channels::rules::{ChannelRules, RuleError, TargetPolicy, token_str};

/// The longest FCM registration token taken (real ones are about 150 to 200 characters).
pub const MAX_TOKEN_CHARS: usize = 4096;

pub struct FcmRules;

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-')
}

impl ChannelRules for FcmRules {
    fn channel(&self) -> Channel {
        Channel::Fcm
    }

    fn platform(&self) -> Platform {
        Platform::Android
    }

    fn target_field(&self) -> &'static str {
        "token"
    }

    /// 1 to 4096 characters of `[A-Za-z0-9_:-]`, stored as they are (FCM tokens are
    /// case-sensitive).
    fn target(&self, raw: &Value, _: TargetPolicy) -> Result<String, RuleError> {
        let raw = token_str(raw)?;
        if raw.is_empty() || raw.len() > MAX_TOKEN_CHARS || !raw.bytes().all(is_token_char) {
            return Err(RuleError::new(
                "token",
                "invalid_token",
                format!(
                    "an FCM registration token is 1 to {MAX_TOKEN_CHARS} characters of A-Z, a-z, 0-9, `_`, `:` and `-`; got {} characters",
                    raw.len()
                ),
            ));
        }
        Ok(raw.to_string())
    }

    fn check_content(&self, content: &NotificationContent) -> Result<(), RuleError> {
        message::check(content).map_err(|e| match e {
            MessageError::ReservedKey { .. } => {
                RuleError::new("data", "reserved_key", format!("fcm: {e}"))
            }
            _ => RuleError::new("body", "payload_too_large", format!("fcm: {e}")),
        })
    }

    #[cfg(any(test, feature = "fuzz"))]
    fn assert_renders(&self, c: &NotificationContent) {
        let body = match message::encode("token", c) {
            Ok(b) => b,
            Err(e) => panic!("accepted, but its FCM message cannot be built: {e}: {c:?}"),
        };
        let v: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => panic!("FCM message is not JSON: {e}"),
        };
        let m = &v["message"];
        assert_eq!(m["notification"]["title"].as_str(), c.title.as_deref());
        assert_eq!(m["notification"]["body"].as_str(), c.body.as_deref());
        // Each value as stored: a string as it is, anything else as its compact JSON text
        // (numbers keep their digits; they are not reread as doubles).
        let raw: std::collections::BTreeMap<String, Box<serde_json::value::RawValue>> =
            serde_json::from_str(c.data.as_str()).unwrap_or_default();
        for (k, v) in &raw {
            let sent = m["data"][k].as_str().unwrap_or_default();
            let expect =
                serde_json::from_str::<String>(v.get()).unwrap_or_else(|_| v.get().to_string());
            assert_eq!(sent, expect, "data key {k:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(raw: &str) -> Result<String, RuleError> {
        FcmRules.target(&Value::from(raw), TargetPolicy::default())
    }

    #[test]
    fn a_registration_token_is_kept_as_it_is() {
        let t = "dGVzdA:APA91b-Hx_yz";
        assert_eq!(target(t).unwrap(), t);
        assert_eq!(FcmRules.device_id(t), t);
        assert_eq!(target(&"a".repeat(MAX_TOKEN_CHARS)).unwrap().len(), 4096);
        for bad in [
            "",
            "has space",
            "slash/",
            "ünï",
            &"a".repeat(MAX_TOKEN_CHARS + 1),
        ] {
            let e = target(bad).unwrap_err();
            assert_eq!((e.field, e.code), ("token", "invalid_token"), "{bad}");
            assert_eq!(FcmRules.device_id_form(bad), None);
        }
    }

    #[test]
    fn reserved_data_keys_and_size_are_named() {
        let mut c = NotificationContent {
            data: clarion_shards::JsonObject::parse(r#"{"google.x":"1"}"#).unwrap(),
            ..NotificationContent::default()
        };
        let e = FcmRules.check_content(&c).unwrap_err();
        assert_eq!((e.field, e.code), ("data", "reserved_key"));
        c.data = clarion_shards::JsonObject::empty();
        c.body = Some("x".repeat(5000));
        let e = FcmRules.check_content(&c).unwrap_err();
        assert_eq!((e.field, e.code), ("body", "payload_too_large"));
        assert!(e.message.starts_with("fcm: "), "{}", e.message);
    }
}
