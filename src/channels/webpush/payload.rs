//! What a Web Push message carries before it is encrypted: a JSON object with the
//! notification's `id`, `title`, `body` and `data`, which a service worker reads to show it;
//! and the limits of RFC 8291 (one record of 4096 bytes: 3993 bytes of plaintext) and RFC 8030
//! (a `Topic` of at most 32 base64url characters).

use std::fmt;

use clarion_shards::NotificationContent;
use uuid::Uuid;

/// The most plaintext one `aes128gcm` record of 4096 bytes carries: 4096 minus the header
/// (86 bytes: salt 16, record size 4, key id length 1, key id 65), the padding delimiter (1)
/// and the AEAD tag (16).
pub const MAX_PLAINTEXT_BYTES: usize = 3993;
/// RFC 8030 section 5.4: a topic is at most 32 characters of the URL-safe base64 alphabet.
pub const MAX_TOPIC_CHARS: usize = 32;

/// Why a message cannot be built. Retrying never helps: the notification itself must change.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadError {
    TooLarge {
        size: usize,
        limit: usize,
    },
    /// `collapse_id` cannot be a `Topic`.
    BadTopic {
        topic: String,
    },
    /// The stored `data` is not a JSON object (a corrupt record).
    BadData {
        reason: String,
    },
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadError::TooLarge { size, limit } => {
                write!(
                    f,
                    "Web Push plaintext is {size} bytes, the limit is {limit}"
                )
            }
            PayloadError::BadTopic { topic } => write!(
                f,
                "collapse_id {topic:?} cannot be a Web Push Topic: at most {MAX_TOPIC_CHARS} characters of A-Z, a-z, 0-9, `-` and `_`"
            ),
            PayloadError::BadData { reason } => write!(f, "Web Push data: {reason}"),
        }
    }
}

/// Whether `topic` can travel as RFC 8030's `Topic` header.
#[must_use]
pub fn is_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC_CHARS
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The plaintext for notification `id`: `{"id":..,"title":..,"body":..,"data":{..}}` (title and
/// body only when present), checked against the record's room.
pub fn encode(id: Uuid, content: &NotificationContent) -> Result<Vec<u8>, PayloadError> {
    if let Some(t) = content.collapse_id.as_deref().filter(|t| !is_topic(t)) {
        return Err(PayloadError::BadTopic {
            topic: t.to_string(),
        });
    }
    // `data` goes in as the compact JSON text it is kept as: its numbers keep the client's
    // digits (a trip through `f64` can change the last one), and nothing is built twice.
    let data = content.data.as_str();
    let bad = |e: serde_json::Error| PayloadError::BadData {
        reason: e.to_string(),
    };
    serde_json::from_str::<serde::de::IgnoredAny>(data).map_err(bad)?;
    let mut out = Vec::with_capacity(64 + data.len());
    out.extend_from_slice(br#"{"id":""#);
    out.extend_from_slice(
        id.hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer())
            .as_bytes(),
    );
    out.push(b'"');
    for (name, text) in [("title", &content.title), ("body", &content.body)] {
        if let Some(t) = text {
            out.extend_from_slice(format!(r#","{name}":"#).as_bytes());
            serde_json::to_writer(&mut out, t).map_err(bad)?;
        }
    }
    out.extend_from_slice(br#","data":"#);
    out.extend_from_slice(data.as_bytes());
    out.push(b'}');
    if out.len() > MAX_PLAINTEXT_BYTES {
        return Err(PayloadError::TooLarge {
            size: out.len(),
            limit: MAX_PLAINTEXT_BYTES,
        });
    }
    Ok(out)
}

/// Whether `content` makes a Web Push message within its limits (every id encodes at the
/// same length).
pub fn check(content: &NotificationContent) -> Result<(), PayloadError> {
    encode(Uuid::nil(), content).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clarion_shards::JsonObject;
    use serde_json::Value;

    #[test]
    fn the_plaintext_carries_id_title_body_and_data() {
        let c = NotificationContent {
            title: Some("Hi".into()),
            body: Some("there".into()),
            data: JsonObject::parse(r#"{"n":1}"#).unwrap(),
            ..NotificationContent::default()
        };
        let id = Uuid::from_u128(7);
        let v: Value = serde_json::from_slice(&encode(id, &c).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": id.to_string(), "title": "Hi", "body": "there", "data": {"n": 1}})
        );
    }

    #[test]
    fn data_keeps_the_clients_digits() {
        // Found by `fuzz_single_notification`: through `f64` this came out as
        // -1.218040843843662e-8, one unit in the last place away.
        let text = r#"{"a":-1.2180408438436621e-8,"t":"é\n"}"#;
        let c = NotificationContent {
            data: JsonObject::parse(text).unwrap(),
            ..NotificationContent::default()
        };
        let plain = String::from_utf8(encode(Uuid::nil(), &c).unwrap()).unwrap();
        assert!(
            plain.ends_with(&format!(r#","data":{}}}"#, c.data.as_str())),
            "{plain}"
        );
        assert!(plain.contains("-1.2180408438436621e-8"), "{plain}");
    }

    #[test]
    fn limits_are_the_record_and_the_topic() {
        let mut c = NotificationContent {
            body: Some("x".repeat(3900)),
            ..NotificationContent::default()
        };
        assert!(check(&c).is_ok());
        c.body = Some("x".repeat(MAX_PLAINTEXT_BYTES));
        assert!(matches!(check(&c), Err(PayloadError::TooLarge { .. })));
        c.body = None;
        c.collapse_id = Some("a".repeat(32));
        assert!(check(&c).is_ok());
        for bad in ["a".repeat(33), "has space".into(), "dot.ted".into()] {
            c.collapse_id = Some(bad);
            assert!(matches!(check(&c), Err(PayloadError::BadTopic { .. })));
        }
    }
}
