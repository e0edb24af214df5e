//! The send endpoint's fast check: the message shapes Clarion sends (`token`, `notification`,
//! `data` of strings, `android` with `priority`, `ttl` and `collapse_key`) are checked while
//! borrowed from the body. Anything else, valid or not (other fields, a repeated field, a
//! non-string `data` value), falls to the full check in `server.rs`, which gives FCM's error
//! messages; an accepted message is accepted by both.
//!
//! Written by hand because the full check's `serde_json::Value` parse, one allocation per key
//! and value, was the FCM simulator's largest cost in the 45/45/10 mix bench.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::lt_keys::DataKeys;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body<'a> {
    #[serde(borrow)]
    message: Message<'a>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Message<'a> {
    #[serde(borrow)]
    token: Cow<'a, str>,
    #[serde(default, rename = "notification")]
    _notification: Option<IgnoredAny>,
    #[serde(default)]
    data: Option<DataKeys>,
    #[serde(default, borrow)]
    android: Option<Android<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Android<'a> {
    #[serde(default, borrow)]
    priority: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    ttl: Option<Cow<'a, str>>,
    #[serde(default, rename = "collapse_key")]
    _collapse_key: Option<IgnoredAny>,
}

/// What the send path keeps of an accepted message.
pub(crate) struct Accepted {
    pub(crate) token: String,
    pub(crate) seq: Option<u64>,
    pub(crate) ts: Option<u64>,
}

/// FCM's registration token alphabet and length.
pub(crate) fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 4096
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-'))
}

/// `"3600s"`, `"0.5s"`: a non-negative duration in seconds.
pub(crate) fn valid_ttl(ttl: &str) -> bool {
    ttl.strip_suffix('s')
        .is_some_and(|n| n.parse::<f64>().is_ok_and(|x| x >= 0.0))
}

/// The message, when it has one of the shapes above and passes every check; `None` sends it
/// to the full check.
pub(crate) fn check(body: &[u8]) -> Option<Accepted> {
    let Body { message } = serde_json::from_slice(body).ok()?;
    let data = message.data.unwrap_or(DataKeys {
        all_strings: true,
        ..DataKeys::default()
    });
    let android_ok = message.android.as_ref().is_none_or(|a| {
        a.priority
            .as_deref()
            .is_none_or(|p| matches!(p, "HIGH" | "NORMAL"))
            && a.ttl.as_deref().is_none_or(valid_ttl)
    });
    (valid_token(&message.token) && data.all_strings && android_ok).then(|| Accepted {
        token: message.token.into_owned(),
        seq: data.seq,
        ts: data.ts,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_clarion_sends_and_passes_the_rest_on() {
        let ok = br#"{"message":{"token":"abc:DEF_1-2","notification":{"title":"t","body":"b"},"data":{"lt_seq":"7","lt_ts":"9","k":"v"},"android":{"priority":"HIGH","ttl":"3600s","collapse_key":"c"}}}"#;
        let a = check(ok).unwrap();
        assert_eq!(
            (a.token.as_str(), a.seq, a.ts),
            ("abc:DEF_1-2", Some(7), Some(9))
        );
        assert!(check(br#"{"message":{"token":"t"}}"#).is_some());
        for refused in [
            &br#"{"message":{"token":"t","data":{"n":1}}}"#[..],
            br#"{"message":{"token":"t","topic":"x"}}"#,
            br#"{"message":{"token":"bad token"}}"#,
            br#"{"message":{"token":""}}"#,
            br#"{"message":{"token":"t","android":{"priority":"URGENT"}}}"#,
            br#"{"message":{"token":"t","android":{"ttl":"10"}}}"#,
            br#"{"message":{"token":"t","android":{"direct_boot_ok":true}}}"#,
            br#"{"message":{"token":"t"},"validate_only":true}"#,
            br#"{"message":{"token":"t","token":"u"}}"#,
            b"not json",
        ] {
            assert!(
                check(refused).is_none(),
                "{}",
                String::from_utf8_lossy(refused)
            );
        }
    }
}
