//! Validation of one APNs request, in the order the simulator applies it: method, path,
//! `apns-id`, duplicate headers, provider token, topic, push type, priority, expiration,
//! collapse id, device token; then, once the body is in, empty, size and JSON shape.
//!
//! Choices where APNs documents nothing: a missing `apns-push-type` is `alert` and a missing
//! `apns-priority` is accepted for any push type (only an explicit `10` with `background` is
//! `BadPriority`); `apns-topic` may be the bundle id or the bundle id plus the push type's
//! suffix (`.voip`, `.complication`, ...); `lt_seq`/`lt_ts` are read as numbers or digit strings.

use std::fmt;

use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request};
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

use super::faults::SplitMix64;
use super::headers::{HeaderScan, Slot};
use super::jwt::{ConnTokenCache, TokenVerifier};
use super::reason::Reason;

/// APNs payload limit for every push type but VoIP.
pub const MAX_PAYLOAD_BYTES: usize = 4096;
/// APNs payload limit for VoIP pushes.
pub const MAX_VOIP_PAYLOAD_BYTES: usize = 5120;
/// Longest `apns-collapse-id` APNs accepts.
pub const MAX_COLLAPSE_ID_BYTES: usize = 64;
/// Length of a device token in hex.
const DEVICE_TOKEN_HEX_LEN: usize = 64;
const PATH_PREFIX: &str = "/3/device/";
/// Push types and the `apns-topic` suffix each may carry.
const PUSH_TYPES: [(&str, &str); 11] = [
    ("alert", ""),
    ("background", ""),
    ("location", ".location-query"),
    ("voip", ".voip"),
    ("complication", ".complication"),
    ("fileprovider", ".pushkit.fileprovider"),
    ("mdm", ""),
    ("liveactivity", ".push-type.liveactivity"),
    ("pushtotalk", ".voip-ptt"),
    ("widgets", ".push-type.widgets"),
    ("controls", ".push-type.controls"),
];

/// The validated headers of a push request, kept as the request's own (reference-counted)
/// values: turned into text only for the few pushes anyone reads back.
#[derive(Clone, Debug)]
pub(crate) struct PushHead {
    /// `/3/device/<token>`.
    path: PathAndQuery,
    topic: HeaderValue,
    pub(crate) push_type: Option<&'static str>,
    pub(crate) priority: Option<u8>,
    expiration: Option<HeaderValue>,
    collapse_id: Option<HeaderValue>,
    pub(crate) payload_limit: usize,
}

impl PushHead {
    /// An alert push to `token` on topic `t` with an expiration, as `validate_head` would keep.
    #[cfg(test)]
    pub(crate) fn example(token: &str) -> PushHead {
        PushHead {
            path: PathAndQuery::try_from(format!("{PATH_PREFIX}{token}"))
                .unwrap_or_else(|_| PathAndQuery::from_static("/")),
            topic: HeaderValue::from_static("t"),
            push_type: Some("alert"),
            priority: Some(10),
            expiration: Some(HeaderValue::from_static("1700000000")),
            collapse_id: None,
            payload_limit: MAX_PAYLOAD_BYTES,
        }
    }

    pub(crate) fn token(&self) -> &str {
        self.path
            .path()
            .strip_prefix(PATH_PREFIX)
            .unwrap_or_default()
    }
    pub(crate) fn topic(&self) -> &str {
        text(&self.topic)
    }
    pub(crate) fn expiration(&self) -> Option<&str> {
        self.expiration.as_ref().map(text)
    }
    pub(crate) fn collapse_id(&self) -> Option<&str> {
        self.collapse_id.as_ref().map(text)
    }
}

/// A header value `validate_head` already read as visible ASCII.
fn text(v: &HeaderValue) -> &str {
    v.to_str().unwrap_or_default()
}

/// The `apns-id` to echo: the request's own when well-formed, else a new lowercase UUID;
/// `Err` carries the new id when the request's was malformed (`BadMessageId`).
pub(crate) fn resolve_apns_id(
    h: &HeaderScan,
    rng: &mut SplitMix64,
) -> Result<HeaderValue, HeaderValue> {
    let new = |rng: &mut SplitMix64| {
        // 36 lowercase hex digits and hyphens: always a valid header value.
        HeaderValue::from_str(&new_apns_id(rng)).unwrap_or(HeaderValue::from_static(""))
    };
    match h.get(Slot::ApnsId) {
        Some(id) if id.to_str().is_ok_and(is_uuid) => Ok(id.clone()),
        Some(_) => Err(new(rng)),
        None => Ok(new(rng)),
    }
}

/// A random (version 4) lowercase UUID.
pub(crate) fn new_apns_id(rng: &mut SplitMix64) -> String {
    let (hi, lo) = (rng.next_u64(), rng.next_u64());
    let hi = (hi & !0xf000) | 0x4000;
    let lo = (lo & !(0xc << 60)) | (0x8 << 60);
    let mut out = [0u8; 36];
    let mut at = 0;
    for (value, digits) in [
        (hi >> 32, 8),
        ((hi >> 16) & 0xffff, 4),
        (hi & 0xffff, 4),
        (lo >> 48, 4),
        (lo & 0xffff_ffff_ffff, 12),
    ] {
        if at > 0 {
            out[at] = b'-';
            at += 1;
        }
        for i in (0..digits).rev() {
            out[at] = HEX_DIGITS[((value >> (4 * i)) & 0xf) as usize];
            at += 1;
        }
    }
    out.iter().map(|b| char::from(*b)).collect()
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Checks everything that can be checked before the body arrives.
pub(crate) fn validate_head<B>(
    req: &Request<B>,
    h: &HeaderScan,
    topic: &str,
    verifier: &TokenVerifier,
    tokens: &mut ConnTokenCache,
    now_secs: u64,
) -> Result<PushHead, Reason> {
    if req.method() != Method::POST {
        return Err(Reason::MethodNotAllowed);
    }
    let token = req
        .uri()
        .path()
        .strip_prefix(PATH_PREFIX)
        .ok_or(Reason::BadPath)?;
    if token.is_empty() {
        return Err(Reason::MissingDeviceToken);
    }
    if h.get(Slot::ApnsId)
        .is_some_and(|v| !v.to_str().is_ok_and(is_uuid))
    {
        return Err(Reason::BadMessageId);
    }
    if h.duplicated() {
        return Err(Reason::DuplicateHeaders);
    }
    verifier.check(
        h.get(Slot::Authorization).map(|v| v.as_bytes()),
        tokens,
        now_secs,
    )?;
    let topic_value = header_str(h, Slot::Topic, Reason::BadTopic)?.ok_or(Reason::MissingTopic)?;
    let (push_type, suffix) = match header_str(h, Slot::PushType, Reason::InvalidPushType)? {
        None => (None, ""),
        Some(t) => PUSH_TYPES
            .iter()
            .find(|(name, _)| *name == t)
            .map(|(name, suffix)| (Some(*name), *suffix))
            .ok_or(Reason::InvalidPushType)?,
    };
    if topic_value.is_empty()
        || !topic_value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b".-_".contains(&c))
    {
        return Err(Reason::BadTopic);
    }
    let allowed = topic_value == topic
        || (!suffix.is_empty()
            && topic_value
                .strip_prefix(topic)
                .is_some_and(|rest| rest == suffix));
    if !allowed {
        return Err(Reason::TopicDisallowed);
    }
    let priority = match header_str(h, Slot::Priority, Reason::BadPriority)? {
        None => None,
        Some(p) => match p.parse::<u8>() {
            Ok(v @ (1 | 5 | 10)) => Some(v),
            _ => return Err(Reason::BadPriority),
        },
    };
    if push_type == Some("background") && priority == Some(10) {
        return Err(Reason::BadPriority);
    }
    let expiration = header_str(h, Slot::Expiration, Reason::BadExpirationDate)?;
    if expiration.is_some_and(|e| e.parse::<i64>().is_err()) {
        return Err(Reason::BadExpirationDate);
    }
    let collapse_id = header_str(h, Slot::CollapseId, Reason::BadCollapseId)?;
    if collapse_id.is_some_and(|c| c.len() > MAX_COLLAPSE_ID_BYTES) {
        return Err(Reason::BadCollapseId);
    }
    if token.len() != DEVICE_TOKEN_HEX_LEN || !token.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(Reason::BadDeviceToken);
    }
    let payload_limit = match push_type {
        Some("voip") => MAX_VOIP_PAYLOAD_BYTES,
        _ => MAX_PAYLOAD_BYTES,
    };
    let value = |slot| h.get(slot).cloned();
    Ok(PushHead {
        path: req.uri().path_and_query().cloned().ok_or(Reason::BadPath)?,
        topic: value(Slot::Topic).ok_or(Reason::MissingTopic)?,
        push_type,
        priority,
        expiration: value(Slot::Expiration),
        collapse_id: value(Slot::CollapseId),
        payload_limit,
    })
}

/// A header as text; a value that is not visible ASCII is answered with `unreadable`.
fn header_str<'a>(
    h: &HeaderScan<'a>,
    name: Slot,
    unreadable: Reason,
) -> Result<Option<&'a str>, Reason> {
    match h.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| unreadable),
    }
}

/// The load-test keys found in an accepted payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LoadTestKeys {
    pub(crate) seq: Option<u64>,
    pub(crate) ts_ns: Option<u64>,
}

/// Checks a complete body against the limit and the payload shape.
pub(crate) fn validate_payload(body: &[u8], limit: usize) -> Result<LoadTestKeys, Reason> {
    if body.is_empty() {
        return Err(Reason::PayloadEmpty);
    }
    if body.len() > limit {
        return Err(Reason::PayloadTooLarge);
    }
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Reason::BadPayload);
    }
    let probe: Probe = serde_json::from_slice(body).map_err(|_| Reason::BadPayload)?;
    if probe.aps.is_none() {
        return Err(Reason::BadPayload);
    }
    Ok(LoadTestKeys {
        seq: probe.lt_seq.and_then(|v| v.0),
        ts_ns: probe.lt_ts.and_then(|v| v.0),
    })
}

#[derive(Deserialize)]
struct Probe {
    aps: Option<ApsObject>,
    lt_seq: Option<LenientU64>,
    lt_ts: Option<LenientU64>,
}

/// Accepts only a JSON object, skipping its contents.
struct ApsObject;

impl<'de> Deserialize<'de> for ApsObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ApsObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("the aps dictionary")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<ApsObject, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(ApsObject)
            }
        }
        d.deserialize_map(V)
    }
}

/// A custom key that is a u64 when it is an unsigned number or a string of digits, and
/// ignored (None) when it is anything else.
struct LenientU64(Option<u64>);

impl<'de> Deserialize<'de> for LenientU64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Ok(LenientU64(match v {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_lowercase_v4_uuids() {
        let mut rng = SplitMix64::new(1);
        let id = new_apns_id(&mut rng);
        assert!(is_uuid(&id), "{id}");
        assert_eq!(id, id.to_lowercase());
        assert_eq!(&id[14..15], "4");
        assert_ne!(id, new_apns_id(&mut rng));
        assert!(!is_uuid("not-a-uuid"));
        assert!(is_uuid("EC1BF194-B3B2-424A-89A9-5A918A6E6B5D"));
    }

    #[test]
    fn generated_ids_match_the_formatted_layout() {
        let (mut a, mut b) = (SplitMix64::new(7), SplitMix64::new(7));
        for _ in 0..100 {
            let (hi, lo) = (b.next_u64(), b.next_u64());
            let hi = (hi & !0xf000) | 0x4000;
            let lo = (lo & !(0xc << 60)) | (0x8 << 60);
            let expected = format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                hi >> 32,
                (hi >> 16) & 0xffff,
                hi & 0xffff,
                lo >> 48,
                lo & 0xffff_ffff_ffff
            );
            assert_eq!(new_apns_id(&mut a), expected);
        }
    }

    #[test]
    fn payload_shape_and_limits() {
        assert_eq!(validate_payload(b"", 4096), Err(Reason::PayloadEmpty));
        let big = format!("{{\"aps\":{{}},\"x\":\"{}\"}}", "a".repeat(4096));
        assert_eq!(
            validate_payload(big.as_bytes(), 4096),
            Err(Reason::PayloadTooLarge)
        );
        assert!(validate_payload(big.as_bytes(), 5120).is_ok());
        for bad in [
            &b"nope"[..],
            b"[1]",
            b"{\"x\":1}",
            b"{\"aps\":[]}",
            b"{\"aps\":{}",
        ] {
            assert_eq!(validate_payload(bad, 4096), Err(Reason::BadPayload));
        }
    }

    #[test]
    fn load_test_keys_are_read_leniently() {
        let k = validate_payload(br#"{"aps":{"alert":"x"},"lt_seq":42,"lt_ts":"7"}"#, 4096);
        assert_eq!(
            k,
            Ok(LoadTestKeys {
                seq: Some(42),
                ts_ns: Some(7)
            })
        );
        let k = validate_payload(br#"{"aps":{},"lt_seq":{"a":1},"lt_ts":-1}"#, 4096);
        assert_eq!(k, Ok(LoadTestKeys::default()));
    }
}
