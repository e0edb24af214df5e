//! The simulator's endpoints: subscriptions handed out, and each message's checks, decryption
//! and answer (served by `crate::https`).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::agreement::{self, ECDH_P256, PrivateKey, agree};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, KeyType, Salt};
use ring::rand::SecureRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use serde_json::{Value, json};

use super::{
    Keys, MAX_SUBSCRIPTIONS, RECENT_CAPACITY, Shared, SimSubscription, WebPushMessage, lock,
};
use crate::apns::SimError;

/// The largest message body a push service takes (RFC 8030 section 7.2: at least 4096).
const MAX_BODY: usize = 4096;
/// Push services refuse VAPID tokens that live longer than this.
const MAX_TOKEN_LIFE_S: u64 = 24 * 3600;

fn answer(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r
}

/// autopush's error body.
fn error(status: StatusCode, errno: u32, message: &str) -> Response<Full<Bytes>> {
    answer(
        status,
        &json!({"code": status.as_u16(), "errno": errno, "error": status.canonical_reason(), "message": message}),
    )
}

/// A new subscription with a fresh P-256 key and auth secret.
pub(crate) fn subscribe(shared: &Shared) -> Result<SimSubscription, SimError> {
    let rng = ring::rand::SystemRandom::new();
    let secret = PrivateKey::generate(&ECDH_P256)
        .map_err(|_| SimError::Key("no P-256 key generated".into()))?;
    let public = secret
        .compute_public_key()
        .map_err(|_| SimError::Key("no P-256 public key".into()))?
        .as_ref()
        .to_vec();
    let mut auth = [0u8; 16];
    rng.fill(&mut auth)
        .map_err(|_| SimError::Key("no randomness".into()))?;
    let mut s = lock(shared);
    if s.subs.len() >= MAX_SUBSCRIPTIONS {
        return Err(SimError::Config("too many subscriptions".into()));
    }
    let id = format!("s{}", s.next_id);
    s.next_id += 1;
    let json = json!({
        "endpoint": format!("{}/push/{id}", s.origin),
        "expirationTime": null,
        "keys": {"p256dh": URL_SAFE_NO_PAD.encode(&public), "auth": URL_SAFE_NO_PAD.encode(auth)},
    });
    s.subs.insert(
        id.clone(),
        Arc::new(Keys {
            secret,
            public,
            auth,
        }),
    );
    s.stats.subscriptions += 1;
    Ok(SimSubscription { id, json })
}

pub(crate) async fn handle(shared: Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY + 1).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::from(vec![0; MAX_BODY + 1]),
    };
    let path = parts.uri.path();
    let response = if parts.method != http::Method::POST {
        error(StatusCode::METHOD_NOT_ALLOWED, 0, "POST only")
    } else if path == "/subscribe" {
        match subscribe(&shared) {
            Ok(s) => answer(StatusCode::CREATED, &s.json),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, 0, &e.to_string()),
        }
    } else if let Some(id) = path.strip_prefix("/push/") {
        let latency = lock(&shared).faults.latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        push(&shared, id, &parts.headers, &body)
    } else {
        error(StatusCode::NOT_FOUND, 102, "no such endpoint")
    };
    *lock(&shared)
        .stats
        .by_status
        .entry(response.status().as_u16())
        .or_default() += 1;
    response
}

#[derive(Clone)]
pub(crate) struct Vapid {
    key: String,
    sub: String,
}

/// Checks `Authorization: vapid t=<jwt>, k=<key>` for this origin, verifying each distinct
/// value once: a sender reuses its token for hours, and push services cache what they
/// verified as APNs does (the signature check was a tenth of the simulator's time).
fn check_vapid_cached(
    cache: &mut std::collections::HashMap<String, (u64, Vapid)>,
    headers: &http::HeaderMap,
    origin: &str,
) -> Result<Vapid, String> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("no Authorization")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if let Some((exp, v)) = cache.get(value)
        && *exp > now
    {
        return Ok(v.clone());
    }
    let (exp, v) = check_vapid(value, origin)?;
    if cache.len() >= MAX_VERIFIED_TOKENS {
        cache.clear();
    }
    cache.insert(value.to_string(), (exp, v.clone()));
    Ok(v)
}

/// Distinct VAPID authorizations whose verification the simulator remembers.
const MAX_VERIFIED_TOKENS: usize = 1024;

/// Verifies one `Authorization` value; its `exp` and what it says.
fn check_vapid(value: &str, origin: &str) -> Result<(u64, Vapid), String> {
    let rest = value.strip_prefix("vapid ").ok_or("not the vapid scheme")?;
    let mut t = None;
    let mut k = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("t=") {
            t = Some(v);
        } else if let Some(v) = part.strip_prefix("k=") {
            k = Some(v);
        }
    }
    let (t, k) = (t.ok_or("no t=")?, k.ok_or("no k=")?);
    let key = URL_SAFE_NO_PAD
        .decode(k)
        .map_err(|_| "k= is not base64url")?;
    let parts: Vec<&str> = t.split('.').collect();
    let [h, c, sig] = parts[..] else {
        return Err("t= is not a JWT".into());
    };
    let header: Value = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("bad JWT header")?;
    if header["alg"] != "ES256" {
        return Err("alg must be ES256".into());
    }
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| "bad signature encoding")?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &key)
        .verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| "the signature does not verify with k=")?;
    let claims: Value = URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("bad JWT claims")?;
    if claims["aud"] != origin {
        return Err(format!("aud must be {origin}"));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let exp = claims["exp"].as_u64().ok_or("no exp")?;
    if exp <= now || exp > now + MAX_TOKEN_LIFE_S {
        return Err("exp must be in the future and within 24 hours".into());
    }
    let sub = claims["sub"].as_str().unwrap_or("");
    if !(sub.starts_with("mailto:") || sub.starts_with("https:")) {
        return Err("sub must be a mailto: or https: URL".into());
    }
    Ok((
        exp,
        Vapid {
            key: k.to_string(),
            sub: sub.to_string(),
        },
    ))
}

struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand<const N: usize>(prk: &ring::hkdf::Prk, info: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    if let Ok(okm) = prk.expand(info, Len(N)) {
        let _ = okm.fill(&mut out);
    }
    out
}

/// Decrypts an `aes128gcm` body as the browser holding `keys` would (RFC 8291).
fn decrypt(keys: &Keys, body: &[u8]) -> Result<Vec<u8>, String> {
    if body.len() < 21 {
        return Err("shorter than the header".into());
    }
    let salt = &body[..16];
    let idlen = usize::from(body[20]);
    let rest = &body[21..];
    if idlen != 65 || rest.len() < idlen + 17 {
        return Err("the key id must be a 65-byte P-256 key".into());
    }
    let (as_public, ciphertext) = rest.split_at(idlen);
    let prk = agree(
        &keys.secret,
        agreement::UnparsedPublicKey::new(&ECDH_P256, as_public),
        "bad sender key",
        |shared| Ok(Salt::new(HKDF_SHA256, &keys.auth).extract(shared)),
    )?;
    let ikm: [u8; 32] = expand(&prk, &[b"WebPush: info\0", &keys.public, as_public]);
    let prk = Salt::new(HKDF_SHA256, salt).extract(&ikm);
    let cek: [u8; 16] = expand(&prk, &[b"Content-Encoding: aes128gcm\0"]);
    let nonce: [u8; 12] = expand(&prk, &[b"Content-Encoding: nonce\0"]);
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &cek).map_err(|_| "bad key")?);
    let mut buf = ciphertext.to_vec();
    let plain = key
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
        .map_err(|_| "does not decrypt with the subscription's keys")?;
    // Plaintext, the last-record delimiter 0x02, then zero padding.
    let end = plain.iter().rposition(|b| *b != 0).ok_or("no delimiter")?;
    if plain[end] != 2 {
        return Err("the record does not end with the last-record delimiter".into());
    }
    Ok(plain[..end].to_vec())
}

/// The load-test keys of a decrypted message's `data`, read without building a `Value`.
#[derive(serde::Deserialize)]
struct Plaintext {
    #[serde(default)]
    data: Option<crate::lt_keys::DataKeys>,
}

fn push(
    shared: &Shared,
    id: &str,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let mut s = lock(shared);
    s.stats.messages += 1;
    if s.faults.gone.contains(id) {
        return error(StatusCode::GONE, 106, "Subscription is no longer valid");
    }
    if s.faults.not_found.contains(id) || !s.subs.contains_key(id) {
        return error(StatusCode::NOT_FOUND, 102, "Subscription not found");
    }
    if s.faults.outage {
        let mut r = error(StatusCode::SERVICE_UNAVAILABLE, 201, "Service Unavailable");
        if let Some(sec) = s.faults.retry_after_s {
            r.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(sec));
        }
        return r;
    }
    let origin = s.origin.clone();
    let vapid = match check_vapid_cached(&mut s.verified, headers, &origin) {
        Ok(v) => v,
        Err(why) => {
            s.stats.vapid_refused += 1;
            return error(
                StatusCode::UNAUTHORIZED,
                109,
                &format!("Invalid VAPID: {why}"),
            );
        }
    };
    let Some(ttl) = headers
        .get("ttl")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return error(StatusCode::BAD_REQUEST, 111, "Missing TTL header");
    };
    if headers
        .get(http::header::CONTENT_ENCODING)
        .map(|v| v.as_bytes())
        != Some(b"aes128gcm")
    {
        return error(
            StatusCode::BAD_REQUEST,
            110,
            "Content-Encoding must be aes128gcm",
        );
    }
    if body.len() > MAX_BODY {
        return error(StatusCode::PAYLOAD_TOO_LARGE, 104, "Payload too large");
    }
    let header_str = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let urgency = header_str("urgency");
    if urgency
        .as_deref()
        .is_some_and(|u| !matches!(u, "very-low" | "low" | "normal" | "high"))
    {
        return error(StatusCode::BAD_REQUEST, 112, "Invalid Urgency");
    }
    let topic = header_str("topic");
    if topic.as_deref().is_some_and(|t| {
        t.len() > 32
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }) {
        return error(StatusCode::BAD_REQUEST, 113, "Invalid Topic");
    }
    let Some(keys) = s.subs.get(id).cloned() else {
        return error(StatusCode::NOT_FOUND, 102, "Subscription not found");
    };
    // Decrypted outside the lock: the ECDH is most of a message's cost here.
    drop(s);
    let decrypted = decrypt(&keys, body);
    let mut s = lock(shared);
    let plaintext = match decrypted {
        Ok(p) => p,
        Err(why) => {
            s.stats.undecryptable += 1;
            return error(
                StatusCode::BAD_REQUEST,
                110,
                &format!("Undecryptable: {why}"),
            );
        }
    };
    s.stats.accepted += 1;
    let keys = serde_json::from_slice::<Plaintext>(&plaintext)
        .ok()
        .and_then(|p| p.data)
        .unwrap_or_default();
    s.ledger
        .record_seq(keys.seq, keys.ts, crate::lt_keys::now_ns());
    *s.per_sub.entry(id.to_string()).or_default() += 1;
    if s.recent.len() >= RECENT_CAPACITY {
        s.recent.pop_front();
    }
    s.recent.push_back(WebPushMessage {
        subscription: id.to_string(),
        plaintext: String::from_utf8_lossy(&plaintext).into_owned(),
        ttl,
        urgency,
        topic,
        vapid_key: vapid.key,
        vapid_sub: vapid.sub,
    });
    let n = s.stats.accepted;
    let location = format!("{}/message/{n}", s.origin);
    drop(s);
    let mut r = answer(StatusCode::CREATED, &json!({}));
    if let Ok(v) = http::HeaderValue::from_str(&location) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}
