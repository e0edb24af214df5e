//! The simulator's two endpoints: their checks and answers (served by `crate::https`).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use serde_json::{Value, json};

use super::fast::{Accepted, valid_token, valid_ttl};
use super::{RECENT_CAPACITY, Shared, lock};

/// The scope the send endpoint requires.
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// Request bodies past this are refused (FCM's own limit is far below).
const MAX_BODY: usize = 64 * 1024;
/// Clock skew allowed on an assertion's `iat`.
const SKEW_S: u64 = 60;

fn answer(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    r
}

/// FCM's error body: `{"error":{"code","message","status","details":[FcmError]}}`.
fn fcm_error(
    status: StatusCode,
    grpc_status: &str,
    error_code: Option<&str>,
    message: &str,
) -> Response<Full<Bytes>> {
    let details = error_code.map_or(json!([]), |c| json!([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": c}]));
    answer(
        status,
        &json!({"error": {"code": status.as_u16(), "message": message, "status": grpc_status, "details": details}}),
    )
}

pub(crate) async fn handle(shared: Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return fcm_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "INVALID_ARGUMENT",
                None,
                "Request payload too large",
            );
        }
    };
    let path = parts.uri.path().to_string();
    let response = if parts.method != http::Method::POST {
        fcm_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "INVALID_ARGUMENT",
            None,
            "POST only",
        )
    } else if path == "/token" {
        token(&shared, &body)
    } else if let Some(project) = path
        .strip_prefix("/v1/projects/")
        .and_then(|p| p.strip_suffix("/messages:send"))
    {
        let latency = lock(&shared).faults.latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        send(
            &shared,
            project,
            parts.headers.get(http::header::AUTHORIZATION),
            &body,
        )
    } else {
        fcm_error(StatusCode::NOT_FOUND, "NOT_FOUND", None, "no such method")
    };
    *lock(&shared)
        .stats
        .by_status
        .entry(response.status().as_u16())
        .or_default() += 1;
    response
}

fn form_value<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    body.split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

fn invalid_grant(shared: &Shared, why: &str) -> Response<Full<Bytes>> {
    lock(shared).stats.assertions_refused += 1;
    answer(
        StatusCode::BAD_REQUEST,
        &json!({"error": "invalid_grant", "error_description": why}),
    )
}

/// `POST /token`: the JWT bearer grant.
fn token(shared: &Shared, body: &[u8]) -> Response<Full<Bytes>> {
    let body = String::from_utf8_lossy(body);
    if form_value(&body, "grant_type")
        != Some("urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer")
    {
        return answer(
            StatusCode::BAD_REQUEST,
            &json!({"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}),
        );
    }
    let Some(jwt) = form_value(&body, "assertion") else {
        return invalid_grant(shared, "no assertion");
    };
    let (cfg_email, public, lifetime, token_uri) = {
        let s = lock(shared);
        (
            s.cfg.client_email.clone(),
            s.cfg.public_key_der.clone(),
            s.cfg.token_lifetime,
            s.token_uri.clone(),
        )
    };
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, c, sig] = parts[..] else {
        return invalid_grant(shared, "not a JWT");
    };
    let decode = |s: &str| {
        URL_SAFE_NO_PAD
            .decode(s)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    };
    let (Some(header), Some(claims), Ok(signature)) =
        (decode(h), decode(c), URL_SAFE_NO_PAD.decode(sig))
    else {
        return invalid_grant(shared, "malformed JWT");
    };
    if header["alg"] != "RS256" {
        return invalid_grant(shared, "alg must be RS256");
    }
    let key = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public);
    if key
        .verify(format!("{h}.{c}").as_bytes(), &signature)
        .is_err()
    {
        return invalid_grant(shared, "Invalid JWT Signature.");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap_or(0),
        claims["exp"].as_u64().unwrap_or(0),
    );
    if claims["iss"] != cfg_email.as_str() {
        return invalid_grant(shared, "Invalid issuer");
    }
    if claims["scope"]
        .as_str()
        .is_none_or(|s| !s.split(' ').any(|x| x == SCOPE))
    {
        return invalid_grant(shared, "Invalid scope");
    }
    if claims["aud"].as_str() != Some(token_uri.as_str()) {
        return invalid_grant(shared, "Invalid audience");
    }
    if iat > now + SKEW_S || exp <= now || exp > iat + 3600 {
        return invalid_grant(
            shared,
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.",
        );
    }
    let mut s = lock(shared);
    s.stats.tokens_issued += 1;
    let n = s.stats.tokens_issued;
    let access = format!(
        "ya29.sim-{n}-{}",
        URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, jwt.as_bytes()))
    );
    let now_i = Instant::now();
    s.tokens.retain(|_, until| *until > now_i);
    s.tokens.insert(access.clone(), now_i + lifetime);
    answer(
        StatusCode::OK,
        &json!({"access_token": access, "expires_in": lifetime.as_secs().max(1), "token_type": "Bearer"}),
    )
}

/// Checks a message as FCM does; the error message on failure.
fn check_message(m: &Value) -> Result<String, String> {
    let Some(obj) = m.as_object() else {
        return Err("message must be an object".into());
    };
    let targets = ["token", "topic", "condition"]
        .iter()
        .filter(|k| obj.contains_key(**k))
        .count();
    if targets != 1 {
        return Err("Exactly one of token, topic or condition must be set".into());
    }
    let token = m["token"]
        .as_str()
        .ok_or("message.token must be a string")?;
    if !valid_token(token) {
        return Err("The registration token is not a valid FCM registration token".into());
    }
    if let Some(data) = obj.get("data") {
        let d = data.as_object().ok_or("message.data must be a map")?;
        if let Some((k, _)) = d.iter().find(|(_, v)| !v.is_string()) {
            return Err(format!(
                "Invalid value at 'message.data[0].value' ({k}): must be a string"
            ));
        }
    }
    if let Some(a) = obj.get("android") {
        if let Some(p) = a.get("priority")
            && !matches!(p.as_str(), Some("HIGH" | "NORMAL"))
        {
            return Err("Invalid value at 'message.android.priority'".into());
        }
        if let Some(t) = a.get("ttl")
            && !t.as_str().is_some_and(valid_ttl)
        {
            return Err("Invalid value at 'message.android.ttl'".into());
        }
    }
    Ok(token.to_string())
}

/// The full check of a send's body, for what [`super::fast::check`] passes on: FCM's error
/// message when it is refused.
fn full_check(body: &[u8]) -> Result<Accepted, String> {
    let parsed: Value =
        serde_json::from_slice(body).map_err(|e| format!("Invalid JSON payload received. {e}"))?;
    let token = check_message(&parsed["message"])?;
    let (seq, ts) = crate::lt_keys::read(&parsed["message"]["data"]);
    Ok(Accepted { token, seq, ts })
}

/// `POST /v1/projects/{project}/messages:send`.
fn send(
    shared: &Shared,
    project: &str,
    auth: Option<&http::HeaderValue>,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let mut s = lock(shared);
    s.stats.sends += 1;
    let bearer = auth
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let valid = bearer
        .and_then(|b| s.tokens.get(b))
        .is_some_and(|until| *until > Instant::now());
    if !valid {
        s.stats.unauthenticated += 1;
        return fcm_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            None,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        );
    }
    if project != s.cfg.project_id {
        return fcm_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            None,
            "Permission 'cloudmessaging.messages.create' denied on resource",
        );
    }
    let retry_after = s.faults.retry_after_s;
    let with_retry_after = |mut r: Response<Full<Bytes>>| {
        if let Some(sec) = retry_after {
            r.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(sec));
        }
        r
    };
    if s.faults.outage {
        return with_retry_after(fcm_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            Some("UNAVAILABLE"),
            "The service is currently unavailable.",
        ));
    }
    if s.faults.quota_exceeded {
        return with_retry_after(fcm_error(
            StatusCode::TOO_MANY_REQUESTS,
            "RESOURCE_EXHAUSTED",
            Some("QUOTA_EXCEEDED"),
            "Quota exceeded for quota metric 'Send requests'.",
        ));
    }
    let accepted = match super::fast::check(body).map_or_else(|| full_check(body), Ok) {
        Ok(a) => a,
        Err(why) => {
            s.stats.invalid += 1;
            return fcm_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                &why,
            );
        }
    };
    let token = accepted.token;
    if s.faults.unregistered.contains(&token) {
        return fcm_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            Some("UNREGISTERED"),
            "Requested entity was not found.",
        );
    }
    if s.faults.sender_mismatch.contains(&token) {
        return fcm_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            Some("SENDER_ID_MISMATCH"),
            "SenderId mismatch",
        );
    }
    s.stats.accepted += 1;
    s.ledger
        .record_seq(accepted.seq, accepted.ts, crate::lt_keys::now_ns());
    if let Some(n) = s.per_token.get_mut(&token) {
        *n += 1;
    } else {
        s.per_token.insert(token.clone(), 1);
    }
    if s.recent.len() >= RECENT_CAPACITY {
        s.recent.pop_front();
    }
    s.recent.push_back((token, Bytes::copy_from_slice(body)));
    let id = s.next_id;
    s.next_id += 1;
    let name = format!("projects/{project}/messages/{id}");
    drop(s);
    answer(StatusCode::OK, &json!({"name": name}))
}
