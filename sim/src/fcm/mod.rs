//! An FCM HTTP v1 simulator: Google's OAuth 2.0 token endpoint and FCM's send endpoint on one
//! HTTPS origin (HTTP/2 over TLS, a self-signed certificate for 127.0.0.1).
//!
//! - `POST /token` takes `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=..`,
//!   checks the assertion as Google does (RS256 signature against the service account's public
//!   key, `iss` the account, `scope` firebase.messaging, `aud` the token URI, `iat` not in the
//!   future, `exp` after now and at most an hour after `iat`), and issues a bearer token that
//!   lasts [`FcmSimConfig::token_lifetime`] (`{"access_token","expires_in","token_type"}`), or
//!   answers `400 {"error":"invalid_grant",..}`.
//! - `POST /v1/projects/{project}/messages:send` checks the bearer token (`401
//!   UNAUTHENTICATED` when unknown or expired), the project, and the message's shape (exactly a
//!   `token` target, `data` values strings only, `android.priority` `HIGH`/`NORMAL`,
//!   `android.ttl` like `"3600s"`), and answers `200 {"name":"projects/{p}/messages/{n}"}` or
//!   FCM's error body with its `FcmError` detail.
//!
//! Faults, set at run time: tokens answered `404 UNREGISTERED` or `403 SENDER_ID_MISMATCH`, an
//! outage (`503 UNAVAILABLE`, optional `retry-after`), quota refusals (`429 QUOTA_EXCEEDED`),
//! and a fixed latency.

mod fast;
mod server;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::apns::SimError;

/// The service account key the built-in simulator (`clarion serve --simulate`) signs with. Not
/// a secret: it is published here so that the simulator can check assertions; never use it with
/// Google.
pub const SIMULATOR_SERVICE_ACCOUNT_KEY_PEM: &str =
    include_str!("simulator_service_account_key.pem");
/// The built-in simulator's service account.
pub const SIMULATOR_CLIENT_EMAIL: &str = "clarion-simulator@simulated.iam.gserviceaccount.com";
/// The built-in simulator's project.
pub const SIMULATOR_PROJECT_ID: &str = "clarion-simulator";
/// Messages the simulator keeps for inspection (the oldest go first).
pub const RECENT_CAPACITY: usize = 10_000;

/// What the simulator accepts and how it answers.
#[derive(Clone, Debug)]
pub struct FcmSimConfig {
    pub listen: SocketAddr,
    pub project_id: String,
    pub client_email: String,
    /// The service account's public key: an RSA `RSAPublicKey` in DER (ring's
    /// `RsaKeyPair::public_key()` form).
    pub public_key_der: Vec<u8>,
    /// How long an access token lasts (Google: an hour).
    pub token_lifetime: Duration,
    pub faults: FcmFaults,
}

/// Faults in force.
#[derive(Clone, Debug, Default)]
pub struct FcmFaults {
    /// Answered `404 UNREGISTERED`.
    pub unregistered: HashSet<String>,
    /// Answered `403 SENDER_ID_MISMATCH`.
    pub sender_mismatch: HashSet<String>,
    /// Every send answered `503 UNAVAILABLE`.
    pub outage: bool,
    /// Every send answered `429 QUOTA_EXCEEDED`.
    pub quota_exceeded: bool,
    /// `retry-after` seconds on 503 and 429 answers.
    pub retry_after_s: Option<u64>,
    /// Added before each send is answered.
    pub latency: Duration,
}

/// A message the simulator accepted.
#[derive(Clone, Debug, PartialEq)]
pub struct FcmMessage {
    pub token: String,
    /// The whole `message` object as received.
    pub message: Value,
}

/// Counters since start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FcmSimStats {
    pub tokens_issued: u64,
    pub assertions_refused: u64,
    pub sends: u64,
    pub accepted: u64,
    pub unauthenticated: u64,
    pub invalid: u64,
    /// Answers by status.
    pub by_status: std::collections::BTreeMap<u16, u64>,
}

pub(crate) struct State {
    pub(crate) cfg: FcmSimConfig,
    /// `https://<bound address>/token`: what an assertion's `aud` must say.
    pub(crate) token_uri: String,
    pub(crate) faults: FcmFaults,
    /// Access token -> when it expires.
    pub(crate) tokens: HashMap<String, std::time::Instant>,
    /// Accepted messages' tokens and request bodies (parsed when asked for: cloning every
    /// message's JSON was a tenth of the simulator's time).
    pub(crate) recent: std::collections::VecDeque<(String, bytes::Bytes)>,
    pub(crate) per_token: HashMap<String, u64>,
    pub(crate) stats: FcmSimStats,
    pub(crate) next_id: u64,
    /// Load-test receipts (`lt_seq`/`lt_ts` in `data`) and end-to-end latency.
    pub(crate) ledger: crate::apns::Ledger,
}

pub(crate) type Shared = Arc<Mutex<State>>;

pub(crate) fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    match shared.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The public key (DER `RSAPublicKey`) of a PKCS#8 PEM RSA private key.
pub fn public_key_der(private_pem: &str) -> Result<Vec<u8>, SimError> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::PrivateKeyDer::from_pem_slice(private_pem.as_bytes())
        .map_err(|e| SimError::Config(format!("service account key: {e}")))?;
    let key = ring::signature::RsaKeyPair::from_pkcs8(der.secret_der())
        .map_err(|e| SimError::Config(format!("service account key: {e}")))?;
    Ok(ring::signature::KeyPair::public_key(&key).as_ref().to_vec())
}

impl FcmSimConfig {
    /// The built-in simulator's configuration: its published key, a one-hour token.
    pub fn builtin(listen: SocketAddr) -> Result<FcmSimConfig, SimError> {
        Ok(FcmSimConfig {
            listen,
            project_id: SIMULATOR_PROJECT_ID.into(),
            client_email: SIMULATOR_CLIENT_EMAIL.into(),
            public_key_der: public_key_der(SIMULATOR_SERVICE_ACCOUNT_KEY_PEM)?,
            token_lifetime: Duration::from_secs(3600),
            faults: FcmFaults::default(),
        })
    }
}

/// A running FCM simulator; dropping it stops it.
pub struct FcmSimHandle {
    shared: Shared,
    origin: crate::https::Origin,
}

/// Starts the simulator on its own thread and returns once it listens.
pub fn start(cfg: FcmSimConfig) -> Result<FcmSimHandle, SimError> {
    let shared: Shared = Arc::new(Mutex::new(State {
        faults: cfg.faults.clone(),
        cfg: cfg.clone(),
        token_uri: String::new(),
        tokens: HashMap::new(),
        recent: std::collections::VecDeque::new(),
        per_token: HashMap::new(),
        stats: FcmSimStats::default(),
        next_id: 1,
        ledger: crate::apns::Ledger::default(),
    }));
    let protocol = crate::https::Protocol::H2;
    let origin = crate::https::serve(
        "fcm-sim",
        cfg.listen,
        shared.clone(),
        server::handle,
        protocol,
    )?;
    lock(&shared).token_uri = format!("https://{}/token", origin.addr);
    Ok(FcmSimHandle { shared, origin })
}

impl FcmSimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.origin.addr
    }

    /// `https://127.0.0.1:port`: the FCM endpoint.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.origin.addr)
    }

    /// The token URI a service account for this simulator names.
    pub fn token_uri(&self) -> String {
        format!("https://{}/token", self.origin.addr)
    }

    /// The self-signed certificate, to trust as an extra root.
    pub fn ca_pem(&self) -> &str {
        &self.origin.ca_pem
    }

    /// A service account key file for this simulator, signing with `private_pem`.
    pub fn service_account_json(&self, private_pem: &str) -> String {
        let cfg = &lock(&self.shared).cfg;
        serde_json::json!({
            "type": "service_account",
            "project_id": cfg.project_id,
            "private_key_id": "simulator-key-1",
            "private_key": private_pem,
            "client_email": cfg.client_email,
            "token_uri": self.token_uri(),
        })
        .to_string()
    }

    pub fn faults(&self) -> FcmFaults {
        lock(&self.shared).faults.clone()
    }

    pub fn set_faults(&self, faults: FcmFaults) {
        lock(&self.shared).faults = faults;
    }

    /// Turns the outage (every send `503`) on or off from another thread (a load harness's
    /// timer).
    pub fn outage_switch(&self) -> impl Fn(bool) + Send + Sync + 'static {
        let shared = self.shared.clone();
        move |on| lock(&shared).faults.outage = on
    }

    pub fn stats(&self) -> FcmSimStats {
        lock(&self.shared).stats.clone()
    }

    /// The most recent accepted messages, oldest first.
    pub fn recent(&self) -> Vec<FcmMessage> {
        let raw: Vec<(String, bytes::Bytes)> = lock(&self.shared).recent.iter().cloned().collect();
        raw.into_iter()
            .map(|(token, body)| FcmMessage {
                token,
                message: serde_json::from_slice::<Value>(&body)
                    .map(|v| v["message"].clone())
                    .unwrap_or(Value::Null),
            })
            .collect()
    }

    /// The load-test ledger over `range` of seqs (the latency histogram whole).
    pub fn ledger_range(&self, range: std::ops::Range<u64>) -> crate::apns::Ledger {
        lock(&self.shared).ledger.restricted_to(range)
    }

    /// Clears the counters, the ledger and the recent messages.
    pub fn reset(&self) {
        let mut s = lock(&self.shared);
        s.stats = FcmSimStats::default();
        s.ledger = crate::apns::Ledger::default();
        s.recent.clear();
        s.per_token.clear();
    }

    /// How many messages were accepted for `token`.
    pub fn received(&self, token: &str) -> u64 {
        lock(&self.shared)
            .per_token
            .get(token)
            .copied()
            .unwrap_or(0)
    }
}
