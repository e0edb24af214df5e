//! Fuzz targets for request parsing: a single notification, a batch, a user profile, a
//! device registration and a dead-letter selection (a replay's or purge's body, and the list's
//! query string), each from arbitrary bytes.
//!
//! Each target panics only if the parser is wrong: any body must give a value or a 400 whose
//! code is machine-readable and whose message names the field; an accepted notification must
//! meet every limit and render a valid payload for every channel; and a notification must get the same
//! answer alone, as a batch item, and as an item of a batch that takes the field-by-field path.
//! `cargo test` runs every target on generated and mutated bodies for a fixed number of cases
//! (`fuzz/tests.rs`, which also bounds the memory a body may take); the libFuzzer crate in
//! `fuzz/` runs them for as long as wanted (see docs/fuzzing.md). Compiled for tests, and as a
//! public module with the `fuzz` feature.

use serde_json::Value;
use serde_json::value::RawValue;

use super::dead_letters::{MAX_DELIVERY_IDS, MAX_LIST_LIMIT, parse_list_query, parse_selection};
use super::error::ApiError;
use super::notifications::{
    MAX_BATCH, MAX_COLLAPSE_ID, MAX_TTL_SECONDS, parse_batch, parse_single,
};
use super::users::{parse_device, parse_profile};
use super::validate;
use crate::channels::rules::TargetPolicy;
use crate::engine::command::NewNotification;
use clarion_shards::Platform;

#[cfg(test)]
mod tests;

/// Longest error message any body may produce: errors quote at most a short, length-checked
/// value, so that a huge field never comes back (or reaches a log) in full.
const MAX_ERROR_MESSAGE: usize = 1024;

/// A 400 with a snake_case code and a message that starts with the field it names.
fn check_error(e: &ApiError) {
    assert_eq!(e.status, 400, "{e:?}");
    assert!(
        !e.code.is_empty() && e.code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
        "{e:?}"
    );
    assert!(
        !e.message.is_empty() && e.message.len() <= MAX_ERROR_MESSAGE,
        "{} bytes of message: {:.200}",
        e.message.len(),
        e.message
    );
    if let Some(field) = &e.field {
        assert!(e.message.starts_with(&format!("{field}: ")), "{e:?}");
    }
}

/// Every limit an accepted notification must meet, and a payload every channel can render.
fn check_notification(n: &NewNotification) {
    assert!(validate::user_id("user_id", &n.user_id).is_ok(), "{n:?}");
    let key = &n.idempotency_key;
    assert!(
        (1..=validate::MAX_IDEMPOTENCY_KEY).contains(&key.len()),
        "{n:?}"
    );
    assert!(!key.bytes().any(|b| b.is_ascii_control()), "{n:?}");
    let c = &n.content;
    let len = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    assert!(
        len(&c.title) <= 1024 && len(&c.body) <= 4096 && len(&c.category) <= 64,
        "{n:?}"
    );
    assert!(
        c.collapse_id
            .as_ref()
            .is_none_or(|s| (1..=MAX_COLLAPSE_ID).contains(&s.len()))
    );
    assert!(
        c.ttl_seconds
            .is_none_or(|t| u64::from(t) <= MAX_TTL_SECONDS),
        "{n:?}"
    );
    assert!(
        c.title.is_some() || c.body.is_some() || !c.data.is_empty(),
        "{n:?}"
    );
    // What a channel's rules accept (the owning shard asks them), its payload carries.
    for rules in crate::channels::rules::all() {
        if rules.check_content(c).is_ok() {
            rules.assert_renders(c);
        }
    }
}

/// A known difference between the parse paths, left to the owner of `notifications.rs`: the
/// field-by-field path checks that `data` is an object before any other field is validated,
/// the one-pass path after, so `{"data":true}` is refused for its missing `user_id` alone (or
/// in a well-typed batch) and for its `data` beside a badly typed item. Both refuse it.
fn data_type_checked_first(item: &ApiError, prefix: &str) -> bool {
    item.code == "invalid_type" && item.field.as_deref() == Some(&format!("{prefix}data"))
}

/// A number too large for a double (`1e999`): the streaming batch parser refuses the whole
/// body as invalid JSON where it meets it, the field-by-field path refuses the item it sits in
/// for its type. Both refuse it with a 400.
fn out_of_range(a: &ApiError, b: &ApiError) -> bool {
    [a, b]
        .iter()
        .any(|e| e.code == "invalid_json" && e.message.contains("number out of range"))
}

/// Two answers to the same notification are the same: equal values, or the same error.
fn assert_same(
    alone: &Result<NewNotification, ApiError>,
    item: &Result<NewNotification, ApiError>,
    prefix: &str,
    what: &str,
) {
    match (alone, item) {
        (Ok(a), Ok(b)) => {
            assert_eq!(
                (&a.user_id, &a.idempotency_key, &a.content),
                (&b.user_id, &b.idempotency_key, &b.content),
                "{what}"
            );
        }
        (Err(a), Err(b)) if !data_type_checked_first(b, prefix) && !out_of_range(a, b) => {
            let field = a.field.as_ref().map(|f| format!("{prefix}{f}"));
            assert_eq!(
                (a.code, field),
                (b.code, b.field.clone()),
                "{what}: {a:?} vs {b:?}"
            );
        }
        (Err(_), Err(_)) => {}
        _ => panic!("{what}: {alone:?} alone, {item:?} as a batch item"),
    }
}

/// A notification's answer alone, as the only item of a batch, and beside an item whose
/// wrong type sends the batch down the field-by-field path.
fn check_single_against_batches(text: &str, alone: &Result<NewNotification, ApiError>) {
    let fast = parse_batch(format!(r#"{{"notifications":[{text}]}}"#).as_bytes());
    let slow = parse_batch(format!(r#"{{"notifications":[{text},{{"body":7}}]}}"#).as_bytes());
    for (items, what) in [(fast, "one-item batch"), (slow, "field-by-field batch")] {
        match items {
            Ok(items) => assert_same(alone, &items[0], "notifications[0].", what),
            Err(e) => panic!("{what} refused whole: {e:?}"),
        }
    }
}

/// `POST /v1/notifications`.
pub fn single_notification(body: &[u8]) {
    let result = parse_single(body);
    match &result {
        Ok(n) => check_notification(n),
        Err(e) => check_error(e),
    }
    // Only a JSON object can be placed in a batch as is.
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    if matches!(serde_json::from_str::<Value>(text), Ok(Value::Object(_))) {
        check_single_against_batches(text, &result);
    }
}

/// `POST /v1/notifications/batch`: items in order, each with its own answer, the same as the
/// item's answer alone.
pub fn batch(body: &[u8]) {
    let items = match parse_batch(body) {
        Ok(items) => items,
        Err(e) => return check_error(&e),
    };
    assert!(
        (1..=MAX_BATCH).contains(&items.len()),
        "{} items",
        items.len()
    );
    for (i, item) in items.iter().enumerate() {
        match item {
            Ok(n) => check_notification(n),
            Err(e) => {
                check_error(e);
                let field = e.field.as_deref().unwrap_or_default();
                assert!(field.starts_with(&format!("notifications[{i}]")), "{e:?}");
            }
        }
    }
    #[derive(serde::Deserialize)]
    struct Texts<'a> {
        #[serde(borrow)]
        notifications: Vec<&'a RawValue>,
    }
    let Ok(texts) = serde_json::from_slice::<Texts<'_>>(body) else {
        return;
    };
    if texts.notifications.len() != items.len() {
        return;
    }
    for (i, (text, item)) in texts.notifications.iter().zip(&items).enumerate() {
        if text.get().trim_start().starts_with('{') {
            let alone = parse_single(text.get().as_bytes());
            assert_same(&alone, item, &format!("notifications[{i}]."), "batch item");
        }
    }
}

/// `PUT /v1/users/{id}`: every field given is valid, or the error names it.
pub fn user_profile(body: &[u8]) {
    match parse_profile(body) {
        Ok(p) => {
            let fields = [
                (
                    "email",
                    &p.email,
                    validate::email as fn(&str, &str) -> Result<(), ApiError>,
                ),
                ("phone", &p.phone, validate::phone_e164),
                ("locale", &p.locale, validate::locale),
                ("timezone", &p.timezone, validate::timezone),
            ];
            for (name, value, check) in fields {
                if let Some(v) = value {
                    assert!(check(name, v).is_ok(), "{name} {v:?}");
                }
            }
        }
        Err(e) => check_error(&e),
    }
}

/// `POST /v1/users/{id}/devices`: a device whose target its platform's rules take again as
/// it is stored (canonical) and whose id they derive from it, or an error naming the field.
pub fn device(body: &[u8]) {
    match parse_device(body, TargetPolicy::default()) {
        Ok(d) => {
            let rules = crate::channels::rules::of(d.platform.channel());
            let stored = match rules.target_field() {
                "token" => Value::from(d.token.as_str()),
                _ => serde_json::from_str(&d.token).unwrap_or_default(),
            };
            let again = rules.target(&stored, TargetPolicy::default());
            assert_eq!(again.as_deref(), Ok(d.token.as_str()), "{d:?}");
            assert_eq!(rules.device_id(&d.token), d.device_id, "{d:?}");
            assert_eq!(
                rules.device_id_form(&d.device_id).as_deref(),
                Some(d.device_id.as_str())
            );
            if d.platform == Platform::Ios {
                assert!(d.token.len() == 64, "{d:?}");
                assert!(
                    d.token
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                    "{d:?}"
                );
            }
        }
        Err(e) => check_error(&e),
    }
}

/// `POST /v1/dead-letters/replay` and `DELETE /v1/dead-letters` (the body), and
/// `GET /v1/dead-letters` (the same bytes as a query string): delivery ids within their bound,
/// or a filter that says something, or an error naming the field.
pub fn dead_letter_selection(body: &[u8]) {
    match parse_selection(body) {
        Ok(clarion_shards::DeadSelection::Ids(ids)) => {
            assert!((1..=MAX_DELIVERY_IDS).contains(&ids.len()), "{ids:?}");
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "sorted, once each");
        }
        Ok(clarion_shards::DeadSelection::Filter(_)) => {}
        Err(e) if e.code == "empty_selection" => assert_eq!(e.status, 400),
        Err(e) => check_error(&e),
    }
    let query = String::from_utf8_lossy(body);
    match parse_list_query(Some(&query)) {
        Ok(q) => assert!((1..=MAX_LIST_LIMIT).contains(&q.limit), "{q:?}"),
        Err(e) => check_error(&e),
    }
}
