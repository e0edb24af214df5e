//! `POST /v1/notifications` and `POST /v1/notifications/batch`: parsing and validating
//! notifications (fields, sizes, and the rendered APNs payload's size) into shard commands.

use clarion_shards::{JsonObject, JsonObjectError, NotificationContent, Priority};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::batch;
use super::error::ApiError;
use super::fields::{Fields, parse_object};
use super::validate;
use crate::engine::command::NewNotification;

/// Most notifications in one batch request: bounds a request's memory and its time on a shard.
pub const MAX_BATCH: usize = 1000;
/// Longest time-to-live: APNs and FCM both keep a message at most about four weeks.
pub const MAX_TTL_SECONDS: u64 = 28 * 86_400;
/// APNs limit on `apns-collapse-id`.
pub const MAX_COLLAPSE_ID: usize = 64;

const FIELDS: &[&str] = &[
    "user_id",
    "idempotency_key",
    "title",
    "body",
    "data",
    "category",
    "priority",
    "ttl_seconds",
    "collapse_id",
];

/// One notification's fields as sent, typed but not yet validated. Well-formed requests are
/// deserialized straight into it (the fast path); anything serde refuses is read again field by
/// field (`Fields`) so the error names the field. Both paths share `validate`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotification {
    user_id: Option<String>,
    idempotency_key: Option<String>,
    title: Option<String>,
    body: Option<String>,
    /// Kept as its JSON text: checked once here, never parsed into a tree.
    data: Option<Box<RawValue>>,
    category: Option<String>,
    priority: Option<String>,
    ttl_seconds: Option<u64>,
    collapse_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    /// Read one by one and refused at item `MAX_BATCH + 1` (then the body is read again by
    /// `batch::item_texts` for the error).
    #[serde(deserialize_with = "batch::at_most_max_batch")]
    notifications: Vec<RawNotification>,
}

/// Only the `data` member of a notification object, as the text it was sent as.
#[derive(Deserialize)]
struct DataText {
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

/// `data` exactly as sent in the notification object `text`, so that the slow path checks and
/// keeps the same text the fast path would (a key twice is refused, numbers stay as written).
/// `None` when it cannot be picked out (no `data`, or `data` itself given twice); the parsed
/// map is then used.
fn data_text(text: &str) -> Option<Box<RawValue>> {
    serde_json::from_str::<DataText>(text).ok()?.data
}

/// The slow path: reads each field with its type checked, naming the field on error. `text` is
/// the object's JSON text, when known.
fn read_fields(
    map: serde_json::Map<String, Value>,
    text: Option<&str>,
) -> Result<RawNotification, ApiError> {
    let mut f = Fields::new(map);
    let raw = RawNotification {
        user_id: f.opt_str("user_id", usize::MAX)?,
        idempotency_key: f.opt_str("idempotency_key", usize::MAX)?,
        title: f.opt_str("title", usize::MAX)?,
        body: f.opt_str("body", usize::MAX)?,
        data: match f.opt_object("data")? {
            None => None,
            Some(m) => match text.and_then(data_text) {
                Some(raw) => Some(raw),
                None => Some(
                    RawValue::from_string(Value::Object(m).to_string())
                        .map_err(|e| ApiError::field("data", "invalid_json", e.to_string()))?,
                ),
            },
        },
        category: f.opt_str("category", usize::MAX)?,
        priority: f.opt_str("priority", usize::MAX)?,
        ttl_seconds: f.opt_u64("ttl_seconds", u64::MAX)?,
        collapse_id: f.opt_str("collapse_id", usize::MAX)?,
    };
    f.finish(FIELDS)?;
    Ok(raw)
}

fn required(key: &str, v: Option<String>, max: usize) -> Result<String, ApiError> {
    match optional(key, v, max)? {
        Some(s) if !s.is_empty() => Ok(s),
        Some(_) => Err(ApiError::field(key, "empty_field", "must not be empty")),
        None => Err(ApiError::field(key, "missing_field", "is required")),
    }
}

fn optional(key: &str, v: Option<String>, max: usize) -> Result<Option<String>, ApiError> {
    match v {
        Some(s) if s.len() > max => Err(ApiError::field(
            key,
            "too_long",
            format!("at most {max} bytes, got {}", s.len()),
        )),
        v => Ok(v),
    }
}

/// Parses one notification object, field by field (the slow path): `text` is its JSON text
/// when known, so `data` is taken as sent.
fn parse_notification(
    map: serde_json::Map<String, Value>,
    text: Option<&str>,
) -> Result<NewNotification, ApiError> {
    validate(read_fields(map, text)?)
}

/// Checks every field's length, format and the rendered payload's size.
fn validate(raw: RawNotification) -> Result<NewNotification, ApiError> {
    let user_id = required("user_id", raw.user_id, validate::MAX_USER_ID)?;
    validate::user_id("user_id", &user_id)?;
    let idempotency_key = required(
        "idempotency_key",
        raw.idempotency_key,
        validate::MAX_IDEMPOTENCY_KEY,
    )?;
    validate::idempotency_key("idempotency_key", &idempotency_key)?;
    let title = optional("title", raw.title, 1024)?;
    let body = optional("body", raw.body, 4096)?;
    let data = match raw.data {
        None => JsonObject::empty(),
        Some(raw) => JsonObject::parse(Box::<str>::from(raw)).map_err(|e| match e {
            JsonObjectError::NotAnObject { .. } => {
                ApiError::field("data", "invalid_type", e.to_string())
            }
            JsonObjectError::DuplicateKey { .. } => {
                ApiError::field("data", "duplicate_key", e.to_string())
            }
            _ => ApiError::field("data", "invalid_json", e.to_string()),
        })?,
    };
    let category = optional("category", raw.category, 64)?;
    let priority = match optional("priority", raw.priority, 16)?.as_deref() {
        None | Some("high") => Priority::High,
        Some("normal") => Priority::Normal,
        Some(other) => {
            return Err(ApiError::field(
                "priority",
                "invalid_priority",
                format!("`{other}` is not one of: high, normal"),
            ));
        }
    };
    let ttl_seconds = match raw.ttl_seconds {
        Some(v) if v > MAX_TTL_SECONDS => {
            return Err(ApiError::field(
                "ttl_seconds",
                "out_of_range",
                format!("must be an integer from 0 to {MAX_TTL_SECONDS}"),
            ));
        }
        v => v.map(|v| v as u32),
    };
    let collapse_id = optional("collapse_id", raw.collapse_id, MAX_COLLAPSE_ID)?;

    if title.is_none() && body.is_none() && data.is_empty() {
        return Err(ApiError::field(
            "body",
            "missing_field",
            "a notification needs a title, a body or data",
        ));
    }
    if data.contains_key("aps") {
        return Err(ApiError::field(
            "data",
            "reserved_key",
            "`aps` is reserved by APNs",
        ));
    }
    if collapse_id.as_deref() == Some("") {
        return Err(ApiError::field(
            "collapse_id",
            "empty_field",
            "must not be empty",
        ));
    }
    let content = NotificationContent {
        title,
        body,
        data,
        category,
        priority,
        ttl_seconds,
        collapse_id,
    };
    // Each channel's limits are checked by the owning shard, for the channels the user has
    // active devices on (`engine/accept.rs`); what no channel could carry is refused here.
    crate::channels::rules::fits_some_channel(&content).map_err(ApiError::rule)?;
    Ok(NewNotification {
        user_id,
        idempotency_key,
        content,
    })
}

/// Parses a single-notification request body.
pub fn parse_single(body: &[u8]) -> Result<NewNotification, ApiError> {
    match serde_json::from_slice::<RawNotification>(body) {
        Ok(raw) => validate(raw),
        Err(_) => parse_notification(parse_object(body)?, std::str::from_utf8(body).ok()),
    }
}

/// Parses a batch body into one result per item, in order: items that fail validation carry
/// their error (field names prefixed with `notifications[i].`), the rest go to their shards.
/// More than `MAX_BATCH` items is refused at the first one past it, before it is read.
pub fn parse_batch(body: &[u8]) -> Result<Vec<Result<NewNotification, ApiError>>, ApiError> {
    // Fast path: a well-typed batch deserializes in one pass, without a JSON value tree.
    if let Ok(batch) = serde_json::from_slice::<RawBatch>(body) {
        check_batch_size(batch.notifications.len())?;
        return Ok(batch
            .notifications
            .into_iter()
            .enumerate()
            .map(|(i, raw)| validate(raw).map_err(|e| e.in_item(&format!("notifications[{i}]."))))
            .collect());
    }
    // Otherwise each item is read from its own text, so the error names its field and no
    // value tree is ever built of more than one item.
    let texts = batch::item_texts(body)?;
    check_batch_size(texts.len())?;
    Ok(texts
        .iter()
        .enumerate()
        .map(|(i, text)| parse_item(text.get(), i))
        .collect())
}

/// One batch item from its JSON text: typed in one pass when it can be, else field by field.
fn parse_item(text: &str, i: usize) -> Result<NewNotification, ApiError> {
    if let Ok(raw) = serde_json::from_str::<RawNotification>(text) {
        return validate(raw).map_err(|e| e.in_item(&format!("notifications[{i}].")));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => parse_notification(m, Some(text))
            .map_err(|e| e.in_item(&format!("notifications[{i}]."))),
        _ => Err(ApiError::field(
            &format!("notifications[{i}]"),
            "invalid_type",
            "must be an object",
        )),
    }
}

fn check_batch_size(n: usize) -> Result<(), ApiError> {
    if n == 0 || n > MAX_BATCH {
        return Err(ApiError::field(
            "notifications",
            "invalid_batch_size",
            format!("must hold 1 to {MAX_BATCH} notifications, got {n}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_notification() {
        let n = parse_single(br#"{"user_id":"u1","idempotency_key":"k1","title":"Hi","body":"There","data":{"order":7},"category":"c","priority":"normal","ttl_seconds":60,"collapse_id":"c1"}"#).unwrap();
        assert_eq!(n.user_id, "u1");
        assert_eq!(n.content.priority, Priority::Normal);
        assert_eq!(n.content.ttl_seconds, Some(60));
        assert_eq!(n.content.data.to_map().unwrap()["order"], 7);
    }

    #[test]
    fn bad_fields_are_named() {
        let field = |b: &str| parse_single(b.as_bytes()).unwrap_err().field;
        assert_eq!(
            field(r#"{"idempotency_key":"k","body":"b"}"#).as_deref(),
            Some("user_id")
        );
        assert_eq!(
            field(r#"{"user_id":"u","body":"b"}"#).as_deref(),
            Some("idempotency_key")
        );
        assert_eq!(
            field(r#"{"user_id":"u","idempotency_key":"k"}"#).as_deref(),
            Some("body")
        );
        assert_eq!(
            field(r#"{"user_id":"u","idempotency_key":"k","body":"b","priority":"max"}"#)
                .as_deref(),
            Some("priority")
        );
        assert_eq!(
            field(r#"{"user_id":"u","idempotency_key":"k","body":"b","ttl_seconds":-1}"#)
                .as_deref(),
            Some("ttl_seconds")
        );
        assert_eq!(
            field(r#"{"user_id":"u","idempotency_key":"k","body":"b","data":{"aps":1}}"#)
                .as_deref(),
            Some("data")
        );
        let long = "x".repeat(65);
        assert_eq!(
            field(&format!(
                r#"{{"user_id":"u","idempotency_key":"k","body":"b","collapse_id":"{long}"}}"#
            ))
            .as_deref(),
            Some("collapse_id")
        );
        let big = "x".repeat(4000);
        let e = parse_single(format!(r#"{{"user_id":"u","idempotency_key":"k","body":"b","data":{{"big":"{big}","big2":"{big}"}}}}"#).as_bytes()).unwrap_err();
        assert_eq!(e.code, "payload_too_large");
    }

    #[test]
    fn data_is_checked_once_and_kept_compact() {
        let n = parse_single(
            br#"{"user_id":"u","idempotency_key":"k","data": { "a" : [1, 2] , "s" : "x y" } }"#,
        )
        .unwrap();
        assert_eq!(n.content.data.as_str(), r#"{"a":[1,2],"s":"x y"}"#);
        let err = |b: &str| parse_single(b.as_bytes()).unwrap_err();
        let dup = err(r#"{"user_id":"u","idempotency_key":"k","data":{"a":1,"a":2}}"#);
        assert_eq!(
            (dup.field.as_deref(), dup.code),
            (Some("data"), "duplicate_key")
        );
        let not_object = err(r#"{"user_id":"u","idempotency_key":"k","data":"text"}"#);
        assert_eq!(
            (not_object.field.as_deref(), not_object.code),
            (Some("data"), "invalid_type")
        );
        assert!(
            not_object.message.contains("got a string"),
            "{}",
            not_object.message
        );
        // A batch item the fast path refuses (a wrong type elsewhere) keeps its data too.
        let r = parse_batch(br#"{"notifications":[{"user_id":"u","idempotency_key":"k","data":{"z":1},"ttl_seconds":"x"},{"user_id":"u","idempotency_key":"k2","data":{"z":1}}]}"#).unwrap();
        assert_eq!(
            r[0].as_ref().unwrap_err().field.as_deref(),
            Some("notifications[0].ttl_seconds")
        );
        assert_eq!(r[1].as_ref().unwrap().content.data.as_str(), r#"{"z":1}"#);
        // ...and the slow path takes `data` as sent: a key twice is refused there too, whatever
        // the neighbouring items, and numbers are kept as written.
        let r = parse_batch(br#"{"notifications":[{"user_id":"u","idempotency_key":"k","data":{"a":1,"a":2}},{"user_id":"u","idempotency_key":"k2","data":{"n":123456789012345678901234567890,"f":1.0}},{"ttl_seconds":"x"}]}"#).unwrap();
        assert_eq!(r[0].as_ref().unwrap_err().code, "duplicate_key");
        assert_eq!(
            r[1].as_ref().unwrap().content.data.as_str(),
            r#"{"n":123456789012345678901234567890,"f":1.0}"#
        );
        let single = parse_single(
            br#"{"user_id":"u","user_id":"u","idempotency_key":"k","data":{"a":1,"a":2}}"#,
        );
        assert_eq!(single.unwrap_err().code, "duplicate_key");
    }

    #[test]
    fn batch_items_keep_their_order_and_errors() {
        let r = parse_batch(br#"{"notifications":[{"user_id":"u","idempotency_key":"a","body":"b"},{"user_id":"u","body":"b"}]}"#).unwrap();
        assert!(r[0].is_ok());
        assert_eq!(
            r[1].as_ref().unwrap_err().field.as_deref(),
            Some("notifications[1].idempotency_key")
        );
        assert_eq!(
            parse_batch(br#"{"notifications":[]}"#).unwrap_err().code,
            "invalid_batch_size"
        );
    }

    /// An 8 MiB body of `{},` is about 2.8 million items: the parser built every one of them
    /// (hundreds of MB) before it checked the 1,000-item limit. It now stops at item 1,001 on
    /// both paths: bytes past it are never read, not even when they are not JSON.
    #[test]
    fn an_8_mib_batch_of_empty_items_is_refused_at_item_1001() {
        let mut body = br#"{"notifications":["#.to_vec();
        while body.len() < 8 << 20 {
            body.extend_from_slice(b"{},");
        }
        body.extend_from_slice(b"{}]}");
        let mistyped = [
            br#"{"notifications":[{"ttl_seconds":"x"},"#.as_slice(),
            &b"{},".repeat(MAX_BATCH),
            b"not JSON",
        ]
        .concat();
        let garbage_after = [&body[..body.len() - 3], b"not JSON"].concat();
        for body in [body, mistyped, garbage_after] {
            let e = parse_batch(&body).unwrap_err();
            assert_eq!(
                (e.code, e.field.as_deref()),
                ("invalid_batch_size", Some("notifications"))
            );
            assert!(e.message.contains("more than 1000"), "{}", e.message);
        }
    }

    #[test]
    fn fast_and_field_by_field_paths_agree() {
        let body = br#"{"user_id":"u1","idempotency_key":"k1","title":"Hi","data":{"a":[1,2]},"priority":"normal","ttl_seconds":5,"collapse_id":"c"}"#;
        let fast = parse_single(body).unwrap();
        let slow = parse_notification(
            parse_object(body).unwrap(),
            Some(std::str::from_utf8(body).unwrap()),
        )
        .unwrap();
        assert_eq!(fast.user_id, slow.user_id);
        assert_eq!(fast.idempotency_key, slow.idempotency_key);
        assert_eq!(fast.content, slow.content);
        // Over-long values are caught by the shared validation on the fast path too.
        let long = format!(
            r#"{{"user_id":"u","idempotency_key":"k","body":"b","category":"{}"}}"#,
            "c".repeat(65)
        );
        assert_eq!(parse_single(long.as_bytes()).unwrap_err().code, "too_long");
        let big_ttl = br#"{"user_id":"u","idempotency_key":"k","body":"b","ttl_seconds":99999999}"#;
        assert_eq!(parse_single(big_ttl).unwrap_err().code, "out_of_range");
        // A badly typed item sends the batch down the slow path: its error is named, the rest parse.
        let r = parse_batch(br#"{"notifications":[{"user_id":"u","idempotency_key":"a","body":"b"},{"user_id":"u","idempotency_key":"b","body":7}]}"#).unwrap();
        assert!(r[0].is_ok());
        let e = r[1].as_ref().unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("invalid_type", Some("notifications[1].body"))
        );
    }
}
