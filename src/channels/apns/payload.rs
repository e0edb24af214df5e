//! APNs payload encoding: the JSON body Apple expects (`{"aps":{...}, <custom keys>}`), written in
//! one pass into a per-thread scratch buffer and copied out at its exact size (one allocation,
//! none when only the size is wanted), and the payload size limits.

use bytes::Bytes;
use clarion_shards::JsonObject;
use std::cell::RefCell;
use std::fmt;

/// Apple rejects larger payloads with `413 PayloadTooLarge` (all push types but VoIP).
pub const MAX_PAYLOAD_BYTES: usize = 4096;
/// VoIP pushes may carry up to 5 KiB.
pub const MAX_VOIP_PAYLOAD_BYTES: usize = 5120;
/// The top-level key Apple reserves for its own dictionary.
pub const RESERVED_KEY: &str = "aps";
/// Room the scratch buffer keeps between payloads: the largest payload any push type allows.
const SCRATCH_BYTES: usize = MAX_VOIP_PAYLOAD_BYTES;

thread_local! {
    /// Where payloads are written on this thread (each executor has its own).
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(SCRATCH_BYTES));
}

/// What goes into one notification's payload; `data` keys land at the top level.
#[derive(Debug, Clone, Copy)]
pub struct PayloadFields<'a> {
    pub title: Option<&'a str>,
    pub body: Option<&'a str>,
    pub category: Option<&'a str>,
    pub data: &'a JsonObject,
}

/// Why a payload cannot be built. Retrying never helps: the notification itself must change.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadError {
    /// A custom data key collides with Apple's own dictionary.
    ReservedKey { key: String },
    /// The encoded payload is larger than APNs accepts.
    TooLarge { size: usize, limit: usize },
    /// serde_json refused a value (cannot happen for `serde_json::Value`; kept rather than panic).
    Unencodable { reason: String },
}

impl PayloadError {
    /// Whether sending the same notification again could succeed: never.
    pub fn retry_can_help(&self) -> bool {
        false
    }
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadError::ReservedKey { key } => write!(f, "data key {key:?} is reserved by APNs"),
            PayloadError::TooLarge { size, limit } => {
                write!(f, "APNs payload is {size} bytes, the limit is {limit}")
            }
            PayloadError::Unencodable { reason } => write!(f, "APNs payload: {reason}"),
        }
    }
}

impl std::error::Error for PayloadError {}

/// Encodes `{"aps":{"alert":{"title":..,"body":..},"category":..}, <data...>}`. Only the fields
/// given appear; `alert` is omitted when neither title nor body is set.
pub fn encode_payload(fields: &PayloadFields<'_>) -> Result<Bytes, PayloadError> {
    with_encoded(fields, Bytes::copy_from_slice)
}

/// The size [`encode_payload`] would return, or its error, without keeping the bytes.
pub fn payload_size(fields: &PayloadFields<'_>) -> Result<usize, PayloadError> {
    with_encoded(fields, <[u8]>::len)
}

/// Encodes into this thread's scratch buffer and hands the checked payload to `f`.
pub(crate) fn with_encoded<T>(
    fields: &PayloadFields<'_>,
    f: impl FnOnce(&[u8]) -> T,
) -> Result<T, PayloadError> {
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut out) => {
            out.clear();
            let result = write_payload(fields, &mut out).map(|()| f(&out));
            // A huge data object (refused as too large) must not stay allocated.
            if out.capacity() > SCRATCH_BYTES {
                *out = Vec::with_capacity(SCRATCH_BYTES);
            }
            result
        }
        // Only if `f` encoded another payload itself; not worth failing for.
        Err(_) => {
            let mut out = Vec::new();
            write_payload(fields, &mut out).map(|()| f(&out))
        }
    })
}

fn write_payload(fields: &PayloadFields<'_>, out: &mut Vec<u8>) -> Result<(), PayloadError> {
    if fields.data.contains_key(RESERVED_KEY) {
        return Err(PayloadError::ReservedKey {
            key: RESERVED_KEY.to_owned(),
        });
    }
    out.extend_from_slice(b"{\"aps\":{");
    let mut aps_empty = true;
    if fields.title.is_some() || fields.body.is_some() {
        out.extend_from_slice(b"\"alert\":{");
        let mut alert_empty = true;
        for (key, value) in [("title", fields.title), ("body", fields.body)] {
            if let Some(value) = value {
                field(out, &mut alert_empty, key, value)?;
            }
        }
        out.push(b'}');
        aps_empty = false;
    }
    if let Some(category) = fields.category {
        field(out, &mut aps_empty, "category", category)?;
    }
    if fields.title.is_none() && fields.body.is_none() {
        // No alert: a background push, which Apple only delivers with content-available.
        if !aps_empty {
            out.push(b',');
        }
        out.extend_from_slice(b"\"content-available\":1");
    }
    out.push(b'}');
    // The data's members, already compact JSON, become top-level members beside `aps`.
    if !fields.data.is_empty() {
        out.push(b',');
        out.extend_from_slice(fields.data.members().as_bytes());
    }
    out.push(b'}');
    if out.len() > MAX_PAYLOAD_BYTES {
        return Err(PayloadError::TooLarge {
            size: out.len(),
            limit: MAX_PAYLOAD_BYTES,
        });
    }
    Ok(())
}

/// Writes `"key":"value"`, preceded by a comma unless it is the object's first member.
fn field(out: &mut Vec<u8>, first: &mut bool, key: &str, value: &str) -> Result<(), PayloadError> {
    if !std::mem::take(first) {
        out.push(b',');
    }
    json(out, key)?;
    out.push(b':');
    json(out, value)
}

fn json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), PayloadError> {
    serde_json::to_writer(out, value).map_err(|e| PayloadError::Unencodable {
        reason: e.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn obj(v: Value) -> JsonObject {
        JsonObject::parse(v.to_string()).unwrap()
    }

    fn parse(b: &Bytes) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn title_and_body_go_into_aps_alert_and_data_keys_to_the_top_level() {
        let data = obj(json!({"order_id": "ord_1", "n": 3, "nested": {"a": [1, 2]}}));
        let fields = PayloadFields {
            title: Some("Order shipped"),
            body: Some("It is on the way"),
            category: Some("ORDER"),
            data: &data,
        };
        let v = parse(&encode_payload(&fields).unwrap());
        assert_eq!(
            v,
            json!({
                "aps": {"alert": {"title": "Order shipped", "body": "It is on the way"}, "category": "ORDER"},
                "order_id": "ord_1", "n": 3, "nested": {"a": [1, 2]}
            })
        );
    }

    #[test]
    fn only_given_fields_appear() {
        let data = JsonObject::empty();
        let body_only = PayloadFields {
            title: None,
            body: Some("hi"),
            category: None,
            data: &data,
        };
        let bytes = encode_payload(&body_only).unwrap();
        assert_eq!(&bytes[..], br#"{"aps":{"alert":{"body":"hi"}}}"#);
        let category_only = PayloadFields {
            title: None,
            body: None,
            category: Some("C"),
            data: &data,
        };
        assert_eq!(
            &encode_payload(&category_only).unwrap()[..],
            br#"{"aps":{"category":"C","content-available":1}}"#
        );
        let nothing = PayloadFields {
            title: None,
            body: None,
            category: None,
            data: &data,
        };
        // Without an alert it is a background push: Apple needs content-available.
        assert_eq!(
            &encode_payload(&nothing).unwrap()[..],
            br#"{"aps":{"content-available":1}}"#
        );
    }

    #[test]
    fn strings_are_escaped() {
        let data = obj(json!({"quote\"key": "line\nbreak"}));
        let fields = PayloadFields {
            title: Some("say \"hi\" \\ ü"),
            body: None,
            category: None,
            data: &data,
        };
        let v = parse(&encode_payload(&fields).unwrap());
        assert_eq!(v["aps"]["alert"]["title"], "say \"hi\" \\ ü");
        assert_eq!(v["quote\"key"], "line\nbreak");
    }

    #[test]
    fn reserved_aps_key_is_rejected() {
        let data = obj(json!({"aps": {"badge": 1}}));
        let fields = PayloadFields {
            title: Some("t"),
            body: None,
            category: None,
            data: &data,
        };
        assert_eq!(
            encode_payload(&fields),
            Err(PayloadError::ReservedKey { key: "aps".into() })
        );
        assert!(!PayloadError::ReservedKey { key: "aps".into() }.retry_can_help());
    }

    #[test]
    fn size_limit_is_inclusive_at_exactly_4096_bytes() {
        let with_pad = |n: usize| {
            let data = obj(json!({"pad": "p".repeat(n)}));
            encode_payload(&PayloadFields {
                title: Some("t"),
                body: Some("b"),
                category: None,
                data: &data,
            })
        };
        let base = with_pad(0).unwrap().len();
        let exact = with_pad(MAX_PAYLOAD_BYTES - base).unwrap();
        assert_eq!(exact.len(), MAX_PAYLOAD_BYTES);
        assert_eq!(
            with_pad(MAX_PAYLOAD_BYTES - base + 1),
            Err(PayloadError::TooLarge {
                size: MAX_PAYLOAD_BYTES + 1,
                limit: MAX_PAYLOAD_BYTES
            })
        );
    }

    #[test]
    fn encoding_inside_an_encoding_uses_a_buffer_of_its_own() {
        let data = obj(json!({"k": "v"}));
        let fields = PayloadFields {
            title: Some("t"),
            body: None,
            category: None,
            data: &data,
        };
        // The scratch buffer is borrowed by the outer call while the inner one runs.
        let (outer, inner) = with_encoded(&fields, |outer| {
            (outer.to_vec(), encode_payload(&fields).unwrap())
        })
        .unwrap();
        assert_eq!(&inner[..], &outer[..]);
        assert_eq!(parse(&inner)["k"], "v");
    }

    #[test]
    fn payload_size_agrees_with_the_encoding_and_the_scratch_buffer_stays_bounded() {
        let cases = [
            obj(json!({"order_id": "ord_1", "q": "\"quoted\" \u{e9}"})),
            obj(json!({"aps": 1})),
            obj(json!({"pad": "p".repeat(3 * MAX_VOIP_PAYLOAD_BYTES)})),
            obj(json!({})),
        ];
        for data in &cases {
            let fields = PayloadFields {
                title: Some("Caf\u{e9} \"open\""),
                body: None,
                category: Some("C"),
                data,
            };
            let encoded = encode_payload(&fields);
            assert_eq!(
                payload_size(&fields),
                encoded.as_ref().map(Bytes::len).map_err(Clone::clone)
            );
            if let Ok(bytes) = encoded {
                // Copied out at its exact size, so the shared buffer is not held.
                assert_eq!(parse(&bytes)["aps"]["category"], "C");
            }
            // The 15 KB refusal above must not leave the thread's buffer that large.
            assert!(SCRATCH.with(|s| s.borrow().capacity()) <= SCRATCH_BYTES);
        }
    }
}
