//! The FCM simulator against a raw HTTP/2 client: Google's token endpoint takes only a correctly
//! signed RS256 assertion with the account's `iss`, the messaging `scope`, the token URI as
//! `aud` and at most an hour of life; the send endpoint takes only a live bearer token, the
//! configured project and a message FCM would take (one target, string `data`), answering as
//! FCM does.
mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use clarion_sim::fcm::{
    self, FcmSimConfig, FcmSimHandle, SIMULATOR_CLIENT_EMAIL, SIMULATOR_SERVICE_ACCOUNT_KEY_PEM,
};
use h2::client::SendRequest;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

fn start(lifetime: Duration) -> FcmSimHandle {
    let mut cfg = FcmSimConfig::builtin("127.0.0.1:0".parse().unwrap()).unwrap();
    cfg.token_lifetime = lifetime;
    fcm::start(cfg).unwrap()
}

fn sign(claims: &Value) -> String {
    let der = rustls_pki_types::PrivateKeyDer::from_pem_slice(
        SIMULATOR_SERVICE_ACCOUNT_KEY_PEM.as_bytes(),
    )
    .unwrap();
    let key = RsaKeyPair::from_pkcs8(der.secret_der()).unwrap();
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "typ": "JWT"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn claims(sim: &FcmSimHandle, iat: u64, exp: u64) -> Value {
    json!({"iss": SIMULATOR_CLIENT_EMAIL, "scope": SCOPE, "aud": sim.token_uri(), "iat": iat, "exp": exp})
}

async fn connect(sim: &FcmSimHandle) -> SendRequest<Bytes> {
    common::connect_h2(sim.addr(), sim.ca_pem()).await
}

async fn post(
    client: &SendRequest<Bytes>,
    sim: &FcmSimHandle,
    path: &str,
    auth: Option<&str>,
    body: String,
) -> (u16, Value) {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
    common::post_json(
        client,
        &format!("https://{}{path}", sim.addr()),
        &headers,
        body.into_bytes(),
    )
    .await
}

fn grant(assertion: &str) -> String {
    format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
    )
}

fn message(token: &str) -> String {
    json!({"message": {"token": token, "notification": {"title": "t"}, "data": {"k": "v"}, "android": {"priority": "HIGH", "ttl": "60s"}}}).to_string()
}

#[tokio::test]
async fn only_a_well_signed_short_lived_assertion_gets_a_token() {
    let sim = start(Duration::from_secs(3600));
    let c = connect(&sim).await;
    let now = common::now_secs();
    let (status, body) = post(
        &c,
        &sim,
        "/token",
        None,
        grant(&sign(&claims(&sim, now, now + 3600))),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["token_type"].as_str(), body["expires_in"].as_u64()),
        (Some("Bearer"), Some(3600))
    );
    assert!(body["access_token"].as_str().unwrap().starts_with("ya29."));

    // A character in the middle of the signature changed (the last one's low bits are unused).
    let mut tampered = sign(&claims(&sim, now, now + 3600)).into_bytes();
    let at = tampered.len() - 40;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let mut wrong_aud = claims(&sim, now, now + 3600);
    wrong_aud["aud"] = json!("https://oauth2.googleapis.com/token");
    let mut wrong_iss = claims(&sim, now, now + 3600);
    wrong_iss["iss"] = json!("someone@else.iam.gserviceaccount.com");
    let mut wrong_scope = claims(&sim, now, now + 3600);
    wrong_scope["scope"] = json!("https://www.googleapis.com/auth/cloud-platform.read-only");
    for (what, assertion) in [
        ("tampered signature", tampered),
        ("wrong aud", sign(&wrong_aud)),
        ("wrong iss", sign(&wrong_iss)),
        ("wrong scope", sign(&wrong_scope)),
        ("over an hour", sign(&claims(&sim, now, now + 3601))),
        ("expired", sign(&claims(&sim, now - 7200, now - 3600))),
        ("not a JWT", "abc".into()),
    ] {
        let (status, body) = post(&c, &sim, "/token", None, grant(&assertion)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{what}: {body}"
        );
    }
    let (status, body) = post(&c, &sim, "/token", None, "grant_type=password".into()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    assert_eq!(sim.stats().tokens_issued, 1);
}

#[tokio::test]
async fn sends_need_a_live_token_the_project_and_a_valid_message() {
    let sim = start(Duration::from_secs(1));
    let c = connect(&sim).await;
    let now = common::now_secs();
    let (_, body) = post(
        &c,
        &sim,
        "/token",
        None,
        grant(&sign(&claims(&sim, now, now + 3600))),
    )
    .await;
    let bearer = format!("Bearer {}", body["access_token"].as_str().unwrap());
    let path = "/v1/projects/clarion-simulator/messages:send";

    let (status, body) = post(&c, &sim, path, Some(&bearer), message("tok-1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "projects/clarion-simulator/messages/1");

    let (status, body) = post(
        &c,
        &sim,
        "/v1/projects/other/messages:send",
        Some(&bearer),
        message("tok-1"),
    )
    .await;
    assert_eq!(
        (status, body["error"]["status"].as_str()),
        (403, Some("PERMISSION_DENIED"))
    );
    let with_number = json!({"message": {"token": "tok-1", "data": {"n": 7}}}).to_string();
    let (status, body) = post(&c, &sim, path, Some(&bearer), with_number).await;
    assert_eq!(
        (status, body["error"]["status"].as_str()),
        (400, Some("INVALID_ARGUMENT")),
        "{body}"
    );
    let two_targets = json!({"message": {"token": "tok-1", "topic": "news"}}).to_string();
    let (status, _) = post(&c, &sim, path, Some(&bearer), two_targets).await;
    assert_eq!(status, 400);
    let (status, body) = post(&c, &sim, path, Some(&bearer), message("bad token!")).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("registration token"),
        "{body}"
    );

    let (status, body) = post(&c, &sim, path, None, message("tok-1")).await;
    assert_eq!(
        (status, body["error"]["status"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
    let (status, _) = post(
        &c,
        &sim,
        path,
        Some("Bearer ya29.made-up"),
        message("tok-1"),
    )
    .await;
    assert_eq!(status, 401);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, _) = post(&c, &sim, path, Some(&bearer), message("tok-1")).await;
    assert_eq!(status, 401, "the token expired");
    assert_eq!(sim.received("tok-1"), 1);
}
