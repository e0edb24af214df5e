//! A browser's push subscription (`PushSubscription.toJSON()`): its endpoint on a push service
//! and the keys its messages are encrypted to (RFC 8291). Checked when registered, stored in a
//! canonical JSON form, and addressed by an id derived from the endpoint.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::agreement::{ECDH_P256, EphemeralPrivateKey, UnparsedPublicKey, agree_ephemeral};
use ring::digest::{SHA256, digest};
use ring::rand::SystemRandom;
use serde_json::{Map, Value, json};

use crate::channels::rules::{RuleError, TargetPolicy};

/// The longest endpoint taken (push services' are a few hundred bytes).
pub const MAX_ENDPOINT_BYTES: usize = 2048;
/// An uncompressed P-256 point: `0x04 || x || y`.
pub const P256DH_BYTES: usize = 65;
/// The subscription's authentication secret (RFC 8291 section 3.2).
pub const AUTH_BYTES: usize = 16;
/// What a web device id starts with.
pub const DEVICE_ID_PREFIX: &str = "web-";
/// Hex digits after the prefix: 128 bits of the endpoint's SHA-256.
const DEVICE_ID_HEX: usize = 32;

/// A checked subscription, as stored and as the sender reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub endpoint: String,
    /// The user agent's public key, an uncompressed P-256 point.
    pub p256dh: [u8; P256DH_BYTES],
    pub auth: [u8; AUTH_BYTES],
}

fn bad(field: &'static str, code: &'static str, message: impl Into<String>) -> RuleError {
    RuleError::new(field, code, message)
}

fn str_field<'a>(
    m: &'a Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<&'a str, RuleError> {
    match m.get(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(bad(field, "missing_field", "is required")),
        Some(_) => Err(bad(field, "invalid_type", "must be a string")),
    }
}

fn base64url<const N: usize>(raw: &str, field: &'static str) -> Result<[u8; N], RuleError> {
    // Browsers send base64url without padding; some libraries add it.
    let bytes = URL_SAFE_NO_PAD
        .decode(raw.trim_end_matches('='))
        .map_err(|e| bad(field, "invalid_key", format!("not base64url: {e}")))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        bad(
            field,
            "invalid_key",
            format!("must be {N} bytes, got {}", b.len()),
        )
    })
}

/// Whether `point` is on P-256: an ECDH with a throwaway key accepts it (ring checks the point).
fn on_curve(point: &[u8]) -> bool {
    let rng = SystemRandom::new();
    let Ok(mine) = EphemeralPrivateKey::generate(&ECDH_P256, &rng) else {
        return false;
    };
    agree_ephemeral(mine, &UnparsedPublicKey::new(&ECDH_P256, point), |_| ()).is_ok()
}

/// Checks an endpoint: an absolute `https` URL with a host, or `http://127.0.0.1` when the
/// policy allows it.
fn check_endpoint(raw: &str, policy: TargetPolicy) -> Result<(), RuleError> {
    const FIELD: &str = "subscription.endpoint";
    if raw.len() > MAX_ENDPOINT_BYTES {
        return Err(bad(
            FIELD,
            "too_long",
            format!("at most {MAX_ENDPOINT_BYTES} bytes, got {}", raw.len()),
        ));
    }
    let uri: http::Uri = raw
        .parse()
        .map_err(|e| bad(FIELD, "invalid_endpoint", format!("not a URL: {e}")))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(bad(FIELD, "invalid_endpoint", "must be an absolute URL"));
    };
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return Err(bad(
            FIELD,
            "invalid_endpoint",
            "must name a host, without user information",
        ));
    }
    match scheme {
        "https" => Ok(()),
        "http" if policy.allow_insecure_loopback && authority.host() == "127.0.0.1" => Ok(()),
        "http" if authority.host() == "127.0.0.1" => Err(bad(
            FIELD,
            "invalid_endpoint",
            "must be https (http://127.0.0.1 only with [webpush] allow_insecure_loopback = true)",
        )),
        _ => Err(bad(FIELD, "invalid_endpoint", "must be an https URL")),
    }
}

impl Subscription {
    /// Checks a registration's `subscription` object: the endpoint, and each key's encoding,
    /// length and (for `p256dh`) membership of P-256. `expirationTime` (which browsers send,
    /// usually `null`) is allowed and not kept.
    pub fn parse(raw: &Value, policy: TargetPolicy) -> Result<Subscription, RuleError> {
        let Value::Object(m) = raw else {
            return Err(bad(
                "subscription",
                "invalid_type",
                "must be an object (PushSubscription.toJSON())",
            ));
        };
        if let Some(k) = m
            .keys()
            .find(|k| !matches!(k.as_str(), "endpoint" | "keys" | "expirationTime"))
        {
            return Err(bad(
                "subscription",
                "unknown_field",
                format!("unknown field {k:?}; expected endpoint, keys, expirationTime"),
            ));
        }
        match m.get("expirationTime") {
            None | Some(Value::Null | Value::Number(_)) => {}
            Some(_) => {
                return Err(bad(
                    "subscription.expirationTime",
                    "invalid_type",
                    "must be a number or null",
                ));
            }
        }
        let endpoint = str_field(m, "endpoint", "subscription.endpoint")?;
        check_endpoint(endpoint, policy)?;
        let keys = match m.get("keys") {
            Some(Value::Object(k)) => k,
            None | Some(Value::Null) => {
                return Err(bad("subscription.keys", "missing_field", "is required"));
            }
            Some(_) => {
                return Err(bad(
                    "subscription.keys",
                    "invalid_type",
                    "must be an object",
                ));
            }
        };
        if let Some(k) = keys
            .keys()
            .find(|k| !matches!(k.as_str(), "p256dh" | "auth"))
        {
            return Err(bad(
                "subscription.keys",
                "unknown_field",
                format!("unknown field {k:?}; expected p256dh, auth"),
            ));
        }
        let p256dh: [u8; P256DH_BYTES] = base64url(
            str_field(keys, "p256dh", "subscription.keys.p256dh")?,
            "subscription.keys.p256dh",
        )?;
        if p256dh[0] != 0x04 || !on_curve(&p256dh) {
            return Err(bad(
                "subscription.keys.p256dh",
                "invalid_key",
                "not an uncompressed point on P-256",
            ));
        }
        let auth = base64url(
            str_field(keys, "auth", "subscription.keys.auth")?,
            "subscription.keys.auth",
        )?;
        Ok(Subscription {
            endpoint: endpoint.to_string(),
            p256dh,
            auth,
        })
    }

    /// The stored form: `{"endpoint":..,"keys":{"p256dh":..,"auth":..}}`, keys in base64url
    /// without padding.
    #[must_use]
    pub fn to_target(&self) -> String {
        json!({
            "endpoint": self.endpoint,
            "keys": {
                "p256dh": URL_SAFE_NO_PAD.encode(self.p256dh),
                "auth": URL_SAFE_NO_PAD.encode(self.auth),
            }
        })
        .to_string()
    }

    /// Reads a stored target back (no curve check: it was checked when registered).
    pub fn from_target(target: &str) -> Result<Subscription, String> {
        let v: Value =
            serde_json::from_str(target).map_err(|e| format!("stored subscription: {e}"))?;
        let endpoint = v["endpoint"]
            .as_str()
            .ok_or("stored subscription: no endpoint")?;
        let key = |k: &str| {
            v["keys"][k]
                .as_str()
                .ok_or(format!("stored subscription: no {k}"))
        };
        let p256dh = base64url(key("p256dh")?, "p256dh").map_err(|e| e.message)?;
        let auth = base64url(key("auth")?, "auth").map_err(|e| e.message)?;
        Ok(Subscription {
            endpoint: endpoint.to_string(),
            p256dh,
            auth,
        })
    }
}

/// The id of the subscription whose endpoint is `endpoint`: `web-` and the first 128 bits of
/// its SHA-256 in hex. Stable for as long as the browser keeps the subscription (a new
/// subscription has a new endpoint, and so a new id).
#[must_use]
pub fn device_id(endpoint: &str) -> String {
    let hash = digest(&SHA256, endpoint.as_bytes());
    let mut id = String::with_capacity(DEVICE_ID_PREFIX.len() + DEVICE_ID_HEX);
    id.push_str(DEVICE_ID_PREFIX);
    for b in &hash.as_ref()[..DEVICE_ID_HEX / 2] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// Whether `raw` has the shape of a web device id.
#[must_use]
pub fn is_device_id(raw: &str) -> bool {
    raw.strip_prefix(DEVICE_ID_PREFIX).is_some_and(|hex| {
        hex.len() == DEVICE_ID_HEX
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// RFC 8291 appendix A's user agent public key and authentication secret.
    pub const UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    pub const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

    fn sub(endpoint: &str, p256dh: &str, auth: &str) -> Value {
        json!({"endpoint": endpoint, "expirationTime": null, "keys": {"p256dh": p256dh, "auth": auth}})
    }

    fn parse(v: &Value) -> Result<Subscription, RuleError> {
        Subscription::parse(v, TargetPolicy::default())
    }

    #[test]
    fn a_browser_subscription_is_checked_stored_and_read_back() {
        let s = parse(&sub("https://push.example.net/push/abc", UA_PUBLIC, AUTH)).unwrap();
        assert_eq!(s.endpoint, "https://push.example.net/push/abc");
        assert_eq!(s.p256dh[0], 4);
        let stored = s.to_target();
        assert_eq!(Subscription::from_target(&stored).unwrap(), s);
        // Padded base64url is taken too, and stored without padding.
        let padded = parse(&sub(
            "https://push.example.net/push/abc",
            UA_PUBLIC,
            &format!("{AUTH}=="),
        ))
        .unwrap();
        assert_eq!(padded.to_target(), stored);
    }

    #[test]
    fn each_part_is_named_when_wrong() {
        let ep = "https://push.example.net/x";
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!("x"), "subscription", "invalid_type"),
            (
                json!({"keys": {"p256dh": UA_PUBLIC, "auth": AUTH}}),
                "subscription.endpoint",
                "missing_field",
            ),
            (
                sub("ftp://push.example.net/x", UA_PUBLIC, AUTH),
                "subscription.endpoint",
                "invalid_endpoint",
            ),
            (
                sub("http://push.example.net/x", UA_PUBLIC, AUTH),
                "subscription.endpoint",
                "invalid_endpoint",
            ),
            (
                sub("http://127.0.0.1:8080/x", UA_PUBLIC, AUTH),
                "subscription.endpoint",
                "invalid_endpoint",
            ),
            (
                sub("/relative", UA_PUBLIC, AUTH),
                "subscription.endpoint",
                "invalid_endpoint",
            ),
            (
                sub("https://u:p@push.example.net/x", UA_PUBLIC, AUTH),
                "subscription.endpoint",
                "invalid_endpoint",
            ),
            (
                sub(
                    &format!("https://p.example/{}", "a".repeat(MAX_ENDPOINT_BYTES)),
                    UA_PUBLIC,
                    AUTH,
                ),
                "subscription.endpoint",
                "too_long",
            ),
            (
                json!({"endpoint": ep}),
                "subscription.keys",
                "missing_field",
            ),
            (
                json!({"endpoint": ep, "keys": {"p256dh": UA_PUBLIC}}),
                "subscription.keys.auth",
                "missing_field",
            ),
            (
                json!({"endpoint": ep, "keys": {"p256dh": UA_PUBLIC, "auth": AUTH, "x": 1}}),
                "subscription.keys",
                "unknown_field",
            ),
            (
                json!({"endpoint": ep, "keys": {"p256dh": UA_PUBLIC, "auth": AUTH}, "other": 1}),
                "subscription",
                "unknown_field",
            ),
            (
                json!({"endpoint": ep, "expirationTime": "soon", "keys": {"p256dh": UA_PUBLIC, "auth": AUTH}}),
                "subscription.expirationTime",
                "invalid_type",
            ),
            (
                sub(ep, "not base64!", AUTH),
                "subscription.keys.p256dh",
                "invalid_key",
            ),
            (
                sub(ep, &UA_PUBLIC[..60], AUTH),
                "subscription.keys.p256dh",
                "invalid_key",
            ),
            (
                sub(ep, UA_PUBLIC, "AAAA"),
                "subscription.keys.auth",
                "invalid_key",
            ),
        ];
        for (v, field, code) in cases {
            let e = parse(&v).unwrap_err();
            assert_eq!((e.field, e.code), (field, code), "{v}: {}", e.message);
        }
    }

    #[test]
    fn a_point_off_the_curve_is_refused() {
        let mut p = URL_SAFE_NO_PAD.decode(UA_PUBLIC).unwrap();
        p[64] ^= 1; // y no longer matches x
        let off = URL_SAFE_NO_PAD.encode(&p);
        let e = parse(&sub("https://p.example/x", &off, AUTH)).unwrap_err();
        assert_eq!(
            (e.field, e.code),
            ("subscription.keys.p256dh", "invalid_key")
        );
        p[0] = 2; // compressed form: not taken
        let e = parse(&sub(
            "https://p.example/x",
            &URL_SAFE_NO_PAD.encode(&p[..33]),
            AUTH,
        ))
        .unwrap_err();
        assert_eq!(e.field, "subscription.keys.p256dh");
    }

    #[test]
    fn loopback_http_only_when_allowed() {
        let v = sub("http://127.0.0.1:9999/push/1", UA_PUBLIC, AUTH);
        let allow = TargetPolicy {
            allow_insecure_loopback: true,
        };
        assert!(Subscription::parse(&v, allow).is_ok());
        let other = sub("http://localhost:9999/push/1", UA_PUBLIC, AUTH);
        assert!(Subscription::parse(&other, allow).is_err());
    }

    #[test]
    fn the_device_id_is_stable_and_recognised() {
        let a = device_id("https://push.example.net/push/abc");
        assert_eq!(a, device_id("https://push.example.net/push/abc"));
        assert_ne!(a, device_id("https://push.example.net/push/abd"));
        assert!(a.starts_with("web-") && a.len() == 36, "{a}");
        assert!(is_device_id(&a));
        assert!(!is_device_id("web-XYZ"));
        assert!(!is_device_id(&a.to_uppercase()));
    }
}
