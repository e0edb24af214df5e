//! Tests of the whole sender over real sockets: an [`FakeApns`](fake_apns::FakeApns) server
//! thread speaking TLS + HTTP/2 on 127.0.0.1:0, a client glommio executor running an
//! [`ApnsSender`], one scenario family per file, and the helpers they share.
#![allow(clippy::unwrap_used)]

mod concurrency;
mod delivery;
mod fake_apns;
mod frame_tap;
mod hpack;
mod recovery;

use super::{ApnsConfig, ApnsNotification, ApnsSender, PushType};
use crate::h2client::Tuning;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use fake_apns::FakeApns;
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

pub(crate) const TEAM_ID: &str = "TEAM123456";
pub(crate) const KEY_ID: &str = "KEY1234567";
pub(crate) const TOPIC: &str = "com.example.clarion";
pub(crate) const TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
pub(crate) const PAYLOAD: &[u8] = br#"{"aps":{"alert":{"title":"Hi","body":"There"}}}"#;

/// A signing key like Apple's `.p8`, with its public half for checking signatures.
pub(crate) struct SigningKey {
    pub(crate) pem: String,
    pub(crate) public: Vec<u8>,
}

impl SigningKey {
    pub(crate) fn generate() -> SigningKey {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        SigningKey {
            pem: key.serialize_pem(),
            public: key.public_key_raw().to_vec(),
        }
    }

    /// Checks `authorization` is `bearer <ES256 JWT signed by this key>`; returns the claims.
    pub(crate) fn verify(&self, authorization: &str) -> serde_json::Value {
        let jwt = authorization.strip_prefix("bearer ").expect("bearer token");
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3, "{jwt}");
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "ES256", "kid": KEY_ID}));
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.public)
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("JWT signature verifies with the team key");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
    }
}

/// A sender configuration pointing at `server`, trusting its self-signed certificate.
pub(crate) fn config(server: &FakeApns, key: &SigningKey, connections: usize) -> ApnsConfig {
    ApnsConfig {
        endpoint: format!("https://127.0.0.1:{}", server.port),
        team_id: TEAM_ID.into(),
        key_id: KEY_ID.into(),
        key_pem: key.pem.clone().into_bytes(),
        topic: TOPIC.into(),
        connections,
        ca_pem: Some(server.ca_pem.clone().into_bytes()),
    }
}

/// Production timings, but reconnect backoff short enough for tests.
pub(crate) fn quick() -> Tuning {
    Tuning {
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(200),
        request_timeout: Duration::from_secs(10),
        ..Tuning::default()
    }
}

pub(crate) fn sender(config: ApnsConfig, tuning: Tuning) -> Rc<ApnsSender> {
    Rc::new(ApnsSender::with_tuning(Rc::new(config), 0, tuning).unwrap())
}

pub(crate) fn notification(delivery_id: u128) -> ApnsNotification<'static> {
    ApnsNotification {
        delivery_id: uuid::Uuid::from_u128(delivery_id),
        device_token: TOKEN,
        push_type: PushType::Alert,
        priority: 10,
        expiration_unix_s: 0,
        collapse_id: None,
        payload: Bytes::from_static(PAYLOAD),
    }
}

/// Runs `f` on a fresh glommio executor thread (1 MiB of I/O memory) and returns its result.
pub(crate) fn on_executor<T, Fut>(f: impl FnOnce() -> Fut + Send + 'static) -> T
where
    T: Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("apns-client")
        .io_memory(1 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

/// Polls `condition` every few milliseconds until it holds or `limit` passes.
pub(crate) async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if condition() {
            return true;
        }
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    condition()
}
