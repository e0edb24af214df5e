//! The Web Push simulator's refusals against a raw HTTP/2 client, as a push service answers
//! them: no or a bad VAPID token `401`, a token for another origin or past 24 hours `401`, no
//! `TTL` or another `Content-Encoding` `400`, a body that does not decrypt with the
//! subscription's keys `400`, an unknown subscription `404`, and `POST /subscribe` handing out
//! `PushSubscription.toJSON()`-shaped subscriptions.
mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use clarion_sim::webpush::{self, WebPushFaults, WebPushSimHandle};
use h2::client::SendRequest;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

fn vapid(key: &EcdsaKeyPair, aud: &str, exp: u64) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#),
        URL_SAFE_NO_PAD
            .encode(json!({"aud": aud, "exp": exp, "sub": "mailto:t@example.com"}).to_string())
    );
    let sig = key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
    format!(
        "vapid t={input}.{}, k={}",
        URL_SAFE_NO_PAD.encode(sig.as_ref()),
        URL_SAFE_NO_PAD.encode(key.public_key().as_ref())
    )
}

fn key() -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.as_ref(), &rng).unwrap()
}

async fn connect(sim: &WebPushSimHandle) -> SendRequest<Bytes> {
    common::connect_h2(sim.addr(), sim.ca_pem()).await
}

async fn post(
    c: &SendRequest<Bytes>,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Value) {
    common::post_json(c, uri, headers, body).await
}

/// What is tried, with which headers, and the status a push service answers.
type Case<'a> = (&'a str, Vec<(&'a str, String)>, u16);

#[tokio::test]
async fn a_push_service_refuses_what_it_cannot_take() {
    let sim = webpush::start("127.0.0.1:0".parse().unwrap(), WebPushFaults::default()).unwrap();
    let c = connect(&sim).await;
    let (status, sub) = post(&c, &format!("{}/subscribe", sim.origin()), &[], vec![]).await;
    assert_eq!(status, 201);
    let endpoint = sub["endpoint"].as_str().unwrap().to_string();
    assert!(
        endpoint.starts_with(&format!("{}/push/", sim.origin())),
        "{sub}"
    );
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(sub["keys"]["p256dh"].as_str().unwrap())
            .unwrap()
            .len(),
        65
    );
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(sub["keys"]["auth"].as_str().unwrap())
            .unwrap()
            .len(),
        16
    );

    let k = key();
    let now = common::now_secs();
    let good = vapid(&k, &sim.origin(), now + 3600);
    let base = [("ttl", "60"), ("content-encoding", "aes128gcm")];
    let with = |auth: &str| {
        let mut h: Vec<(&str, String)> = base.iter().map(|(a, b)| (*a, b.to_string())).collect();
        h.push(("authorization", auth.to_string()));
        h
    };
    let cases: Vec<Case> = vec![
        (
            "no authorization",
            base.iter().map(|(a, b)| (*a, b.to_string())).collect(),
            401,
        ),
        (
            "another origin",
            with(&vapid(&k, "https://elsewhere.example", now + 3600)),
            401,
        ),
        (
            "past 24 hours",
            with(&vapid(&k, &sim.origin(), now + 25 * 3600)),
            401,
        ),
        ("expired", with(&vapid(&k, &sim.origin(), now - 10)), 401),
        (
            "signed by another key",
            with(&good.replace(
                &URL_SAFE_NO_PAD.encode(k.public_key().as_ref()),
                &URL_SAFE_NO_PAD.encode(key().public_key().as_ref()),
            )),
            401,
        ),
        (
            "no TTL",
            vec![
                ("content-encoding", "aes128gcm".into()),
                ("authorization", good.clone()),
            ],
            400,
        ),
        (
            "aesgcm",
            vec![
                ("ttl", "60".into()),
                ("content-encoding", "aesgcm".into()),
                ("authorization", good.clone()),
            ],
            400,
        ),
        ("undecryptable", with(&good), 400),
    ];
    for (what, headers, expected) in cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(a, b)| (*a, b.as_str())).collect();
        let (status, body) = post(&c, &endpoint, &h, vec![7; 200]).await;
        assert_eq!(status, expected, "{what}: {body}");
    }
    let h: Vec<(&str, &str)> = vec![
        ("ttl", "60"),
        ("content-encoding", "aes128gcm"),
        ("authorization", good.as_str()),
    ];
    let (status, _) = post(
        &c,
        &format!("{}/push/nobody", sim.origin()),
        &h,
        vec![7; 200],
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = post(&c, &endpoint, &h, vec![7; 5000]).await;
    assert_eq!(status, 413);
    let stats = sim.stats();
    assert_eq!(
        (stats.accepted, stats.vapid_refused, stats.undecryptable),
        (0, 5, 1),
        "{stats:?}"
    );
}
