//! The FCM HTTP v1 message body: `{"message":{"token":..,"notification":{..},"data":{..},
//! "android":{..}}}`, and the size and key rules FCM holds it to. FCM takes `data` values as
//! strings only: a string is sent as it is, any other JSON value as its compact JSON text.

use std::fmt;

use clarion_shards::{JsonObject, NotificationContent, Priority};
use serde_json::{Map, Value, json};

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

/// `data` as FCM takes it: every value a string.
fn string_data(data: &JsonObject) -> Result<Map<String, Value>, MessageError> {
    let map = data.to_map().map_err(|e| MessageError::BadData {
        reason: e.to_string(),
    })?;
    let mut out = Map::with_capacity(map.len());
    for (k, v) in map {
        if is_reserved(&k) {
            return Err(MessageError::ReservedKey { key: k });
        }
        let text = match v {
            Value::String(s) => s,
            other => other.to_string(),
        };
        out.insert(k, Value::String(text));
    }
    Ok(out)
}

/// The payload FCM measures: `notification` (when there is a title or body) and `data`.
fn payload(content: &NotificationContent) -> Result<Map<String, Value>, MessageError> {
    let mut m = Map::new();
    if content.title.is_some() || content.body.is_some() {
        let mut n = Map::new();
        if let Some(t) = &content.title {
            n.insert("title".into(), json!(t));
        }
        if let Some(b) = &content.body {
            n.insert("body".into(), json!(b));
        }
        m.insert("notification".into(), Value::Object(n));
    }
    if !content.data.is_empty() {
        m.insert("data".into(), Value::Object(string_data(&content.data)?));
    }
    Ok(m)
}

fn checked_payload(content: &NotificationContent) -> Result<Map<String, Value>, MessageError> {
    let m = payload(content)?;
    let size = Value::Object(m.clone()).to_string().len();
    if size > MAX_MESSAGE_BYTES {
        return Err(MessageError::TooLarge {
            size,
            limit: MAX_MESSAGE_BYTES,
        });
    }
    Ok(m)
}

/// Whether `content` makes an FCM message within its limits.
pub fn check(content: &NotificationContent) -> Result<(), MessageError> {
    checked_payload(content).map(drop)
}

/// The request body for one device: `priority` to `android.priority` (`HIGH`/`NORMAL`),
/// `ttl_seconds` to `android.ttl` (`"3600s"`), `collapse_id` to `android.collapse_key`.
pub fn encode(token: &str, content: &NotificationContent) -> Result<Vec<u8>, MessageError> {
    let mut message = checked_payload(content)?;
    message.insert("token".into(), json!(token));
    let mut android = Map::new();
    let priority = match content.priority {
        Priority::High => "HIGH",
        Priority::Normal => "NORMAL",
    };
    android.insert("priority".into(), json!(priority));
    if let Some(ttl) = content.ttl_seconds {
        android.insert("ttl".into(), json!(format!("{ttl}s")));
    }
    if let Some(c) = &content.collapse_id {
        android.insert("collapse_key".into(), json!(c));
    }
    message.insert("android".into(), Value::Object(android));
    let body = json!({ "message": Value::Object(message) });
    serde_json::to_vec(&body).map_err(|e| MessageError::BadData {
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
