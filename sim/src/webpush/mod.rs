//! A Web Push service simulator (RFC 8030 over HTTP/2 + TLS, a self-signed certificate for
//! 127.0.0.1): it hands out subscriptions whose private keys it keeps, and for every message
//! checks what a push service checks (the VAPID token of RFC 8292: ES256 with the `k=` key,
//! `aud` this origin, `exp` in the future and within 24 hours, a `sub`; a `TTL` header;
//! `Content-Encoding: aes128gcm`; at most 4096 bytes), then decrypts it as the browser would
//! (RFC 8291) and records the plaintext. Answers `201 Created` with a `Location`, `404`/`410`
//! for subscriptions told to be gone, `413`, `400`, `401`, and `503` during an outage.
//!
//! - `POST /subscribe`: a new subscription, as `PushSubscription.toJSON()` gives it.
//! - `POST /push/{id}`: a message for subscription `id`.

mod server;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::apns::SimError;
pub use crate::https::Protocol;

/// Messages kept for inspection (the oldest go first).
pub const RECENT_CAPACITY: usize = 10_000;
/// Subscriptions the simulator holds.
pub const MAX_SUBSCRIPTIONS: usize = 1_000_000;

/// Faults in force.
#[derive(Clone, Debug, Default)]
pub struct WebPushFaults {
    /// Subscription ids answered `410 Gone`.
    pub gone: HashSet<String>,
    /// Subscription ids answered `404 Not Found`.
    pub not_found: HashSet<String>,
    /// Every message answered `503`.
    pub outage: bool,
    pub retry_after_s: Option<u64>,
    pub latency: Duration,
}

/// A message the simulator accepted and decrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebPushMessage {
    pub subscription: String,
    pub plaintext: String,
    pub ttl: u64,
    pub urgency: Option<String>,
    pub topic: Option<String>,
    /// The VAPID public key (`k=`) the message was sent with.
    pub vapid_key: String,
    pub vapid_sub: String,
}

/// Counters since start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebPushSimStats {
    pub subscriptions: u64,
    pub messages: u64,
    pub accepted: u64,
    pub vapid_refused: u64,
    pub undecryptable: u64,
    pub by_status: std::collections::BTreeMap<u16, u64>,
}

/// One subscription's secrets.
pub(crate) struct Keys {
    pub(crate) secret: aws_lc_rs::agreement::PrivateKey,
    pub(crate) public: Vec<u8>,
    pub(crate) auth: [u8; 16],
}

pub(crate) struct State {
    pub(crate) origin: String,
    pub(crate) subs: HashMap<String, std::sync::Arc<Keys>>,
    pub(crate) faults: WebPushFaults,
    pub(crate) recent: VecDeque<WebPushMessage>,
    pub(crate) per_sub: HashMap<String, u64>,
    pub(crate) stats: WebPushSimStats,
    pub(crate) next_id: u64,
    /// Load-test receipts (`lt_seq`/`lt_ts` in the plaintext's `data`) and end-to-end latency.
    pub(crate) ledger: crate::apns::Ledger,
    /// VAPID authorizations already verified, with their `exp`.
    pub(crate) verified: HashMap<String, (u64, server::Vapid)>,
}

pub(crate) type Shared = Arc<Mutex<State>>;

pub(crate) fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    match shared.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// A subscription the simulator made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimSubscription {
    pub id: String,
    /// `PushSubscription.toJSON()`: `{"endpoint","expirationTime","keys":{"p256dh","auth"}}`.
    pub json: serde_json::Value,
}

/// A running Web Push simulator; dropping it stops it.
pub struct WebPushSimHandle {
    shared: Shared,
    origin: crate::https::Origin,
    protocol: Protocol,
}

/// Starts the simulator on `listen` (its own thread) and returns once it listens.
pub fn start(listen: SocketAddr, faults: WebPushFaults) -> Result<WebPushSimHandle, SimError> {
    start_as(listen, faults, Protocol::H2)
}

/// [`start`], the push service speaking `protocol`: HTTP/2 over TLS as the real ones do, or
/// HTTP/1.1 over TLS or plain TCP as some test servers do.
pub fn start_as(
    listen: SocketAddr,
    faults: WebPushFaults,
    protocol: Protocol,
) -> Result<WebPushSimHandle, SimError> {
    let shared: Shared = Arc::new(Mutex::new(State {
        origin: String::new(),
        subs: HashMap::new(),
        faults,
        recent: VecDeque::new(),
        per_sub: HashMap::new(),
        stats: WebPushSimStats::default(),
        next_id: 1,
        ledger: crate::apns::Ledger::default(),
        verified: HashMap::new(),
    }));
    let origin = crate::https::serve(
        "webpush-sim",
        listen,
        shared.clone(),
        server::handle,
        protocol,
    )?;
    lock(&shared).origin = format!("{}://{}", protocol.scheme(), origin.addr);
    Ok(WebPushSimHandle {
        shared,
        origin,
        protocol,
    })
}

impl WebPushSimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.origin.addr
    }

    /// `https://127.0.0.1:port` (`http://` when it speaks plain HTTP/1.1).
    pub fn origin(&self) -> String {
        format!("{}://{}", self.protocol.scheme(), self.origin.addr)
    }

    pub fn ca_pem(&self) -> &str {
        &self.origin.ca_pem
    }

    /// A new subscription (what `POST /subscribe` answers).
    pub fn subscribe(&self) -> Result<SimSubscription, SimError> {
        server::subscribe(&self.shared)
    }

    /// [`WebPushSimHandle::subscribe`] for another thread (the load generator's workers).
    pub fn subscriber(
        &self,
    ) -> impl Fn() -> Result<SimSubscription, SimError> + Send + Sync + 'static {
        let shared = self.shared.clone();
        move || server::subscribe(&shared)
    }

    pub fn faults(&self) -> WebPushFaults {
        lock(&self.shared).faults.clone()
    }

    pub fn set_faults(&self, faults: WebPushFaults) {
        lock(&self.shared).faults = faults;
    }

    pub fn stats(&self) -> WebPushSimStats {
        lock(&self.shared).stats.clone()
    }

    /// The most recent accepted messages, oldest first.
    pub fn recent(&self) -> Vec<WebPushMessage> {
        lock(&self.shared).recent.iter().cloned().collect()
    }

    /// The load-test ledger over `range` of seqs (the latency histogram whole).
    pub fn ledger_range(&self, range: std::ops::Range<u64>) -> crate::apns::Ledger {
        lock(&self.shared).ledger.restricted_to(range)
    }

    /// Clears the counters (but not the subscriptions), the ledger and the recent messages.
    pub fn reset(&self) {
        let mut s = lock(&self.shared);
        let subscriptions = s.stats.subscriptions;
        s.stats = WebPushSimStats {
            subscriptions,
            ..WebPushSimStats::default()
        };
        s.ledger = crate::apns::Ledger::default();
        s.recent.clear();
        s.per_sub.clear();
    }

    /// Messages accepted for subscription `id`.
    pub fn received(&self, id: &str) -> u64 {
        lock(&self.shared).per_sub.get(id).copied().unwrap_or(0)
    }
}
