//! The simulator's configuration: [`SimConfig`] (identity, limits, threads), [`Faults`] (what
//! to break, changeable at run time) and [`SimError`], the error type of the simulator library.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `SETTINGS_MAX_CONCURRENT_STREAMS` once a connection's first request succeeded. Real APNs
/// raises to somewhere between 500 and 1500.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 1000;
/// `SETTINGS_MAX_CONCURRENT_STREAMS` on a new connection, as APNs does with token auth.
pub const DEFAULT_INITIAL_MAX_CONCURRENT_STREAMS: u32 = 1;
/// APNs answers `TooManyProviderTokenUpdates` when a connection's token changes more often than
/// this.
pub const DEFAULT_TOKEN_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(20 * 60);
/// A provider token whose `iat` is older than this is `ExpiredProviderToken`.
pub const PROVIDER_TOKEN_MAX_AGE_SECS: u64 = 60 * 60;

/// What the simulator is and how it behaves. `Default` gives a loopback listener on an
/// ephemeral port and the limits APNs uses; `public_key_pem` must still be filled in.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Where the APNs (HTTP/2 over TLS) endpoint listens. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// The 10-character team id every provider token's `iss` must carry.
    pub team_id: String,
    /// The 10-character key id every provider token's header `kid` must carry.
    pub key_id: String,
    /// The key's public half as an SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub public_key_pem: String,
    /// The bundle id accepted in `apns-topic` (plus the push-type suffixes, e.g. `.voip`).
    pub topic: String,
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` after a connection's first successful request.
    pub max_concurrent_streams: u32,
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` on a new connection.
    pub initial_max_concurrent_streams: u32,
    /// Faults injected from the start; see [`crate::apns::SimHandle::set_faults`].
    pub faults: Faults,
    /// Tokio worker threads; 1 (the default) runs the simulator on one current-thread runtime.
    pub worker_threads: usize,
    /// Where the plain HTTP/1.1 control endpoint listens, if anywhere.
    pub control_listen: Option<SocketAddr>,
    /// Per connection: a different, newer provider token (by `iat`) within this interval of the
    /// connection's current token is answered `429 TooManyProviderTokenUpdates` and the
    /// connection keeps its current token. The first token on a connection, and tokens on other
    /// connections, are not limited. `None` turns the check off.
    pub token_refresh_min_interval: Option<Duration>,
    /// Keep every accepted push's `(lt_seq, token, arrival)` for
    /// [`crate::apns::SimHandle::receipts`]: per-device checks in tests. Default off.
    pub receipt_log: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            team_id: "TEAMLOAD01".to_string(),
            key_id: "KEYLOAD001".to_string(),
            public_key_pem: String::new(),
            topic: "com.clarion.loadtest".to_string(),
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            initial_max_concurrent_streams: DEFAULT_INITIAL_MAX_CONCURRENT_STREAMS,
            faults: Faults::default(),
            worker_threads: 1,
            control_listen: None,
            token_refresh_min_interval: Some(DEFAULT_TOKEN_REFRESH_MIN_INTERVAL),
            receipt_log: false,
        }
    }
}

impl SimConfig {
    /// A default config for this identity and public key (SPKI PEM).
    pub fn new(team_id: &str, key_id: &str, public_key_pem: &str, topic: &str) -> Self {
        SimConfig {
            team_id: team_id.to_string(),
            key_id: key_id.to_string(),
            public_key_pem: public_key_pem.to_string(),
            topic: topic.to_string(),
            ..SimConfig::default()
        }
    }

    /// Checks the limits and the faults; the key is checked when the simulator starts.
    pub fn validate(&self) -> Result<(), SimError> {
        if self.max_concurrent_streams == 0 || self.initial_max_concurrent_streams == 0 {
            return Err(SimError::Config(
                "max concurrent streams must be at least 1".into(),
            ));
        }
        if self.initial_max_concurrent_streams > self.max_concurrent_streams {
            return Err(SimError::Config(
                "initial_max_concurrent_streams exceeds max_concurrent_streams".into(),
            ));
        }
        if self.topic.is_empty() || self.team_id.is_empty() || self.key_id.is_empty() {
            return Err(SimError::Config(
                "topic, team_id and key_id are required".into(),
            ));
        }
        self.faults.validate()
    }
}

/// Faults to inject. `Default` injects none. Serialized as JSON for `POST /faults`; missing
/// fields take their default. Rates are probabilities in `0..=1`, drawn per request from a
/// generator seeded with `seed` (restarted by every `set_faults`), so a test that sends
/// requests one at a time sees the same faults on every run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Device tokens answered `410 Unregistered` with a timestamp.
    pub unregistered_tokens: BTreeSet<String>,
    /// Device tokens answered `400 BadDeviceToken`.
    pub bad_device_tokens: BTreeSet<String>,
    /// Share of valid requests answered `429 TooManyRequests`.
    pub too_many_requests_rate: f64,
    /// Share of valid requests answered `500 InternalServerError`.
    pub internal_error_rate: f64,
    /// Share of valid requests answered `503 ServiceUnavailable`.
    pub unavailable_rate: f64,
    /// Added to every response, without holding up other requests.
    pub latency_us: u64,
    /// Extra uniform random latency in `0..=jitter_us`.
    pub jitter_us: u64,
    /// After this many requests on a connection, send GOAWAY (NO_ERROR, graceful): requests
    /// already accepted are answered, the client must reconnect for more.
    pub goaway_after_requests: Option<u64>,
    /// Close a connection abruptly (no GOAWAY, no answer) on its Nth request.
    pub drop_after_requests: Option<u64>,
    /// Share of requests on which the connection is closed abruptly instead of answered.
    pub drop_rate: f64,
    /// The provider is unreachable: the listening socket is closed (new connections are
    /// refused by the kernel) and every open connection is closed abruptly at its next request.
    /// Cleared, the simulator listens on the same address again.
    pub refuse_connections: bool,
    /// Seed of the fault generator.
    pub seed: u64,
}

impl Faults {
    /// Rates must lie in `0..=1` and the three status rates must not add up past 1.
    pub fn validate(&self) -> Result<(), SimError> {
        let rates = [
            ("too_many_requests_rate", self.too_many_requests_rate),
            ("internal_error_rate", self.internal_error_rate),
            ("unavailable_rate", self.unavailable_rate),
            ("drop_rate", self.drop_rate),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(SimError::Config(format!("{name} must be within 0..=1")));
            }
        }
        let sum = self.too_many_requests_rate + self.internal_error_rate + self.unavailable_rate;
        if sum > 1.0 {
            return Err(SimError::Config("status fault rates add up past 1".into()));
        }
        if self.goaway_after_requests == Some(0) || self.drop_after_requests == Some(0) {
            return Err(SimError::Config(
                "*_after_requests must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Errors of the simulator library.
#[derive(Debug)]
#[non_exhaustive]
pub enum SimError {
    /// A key could not be parsed, generated or used.
    Key(String),
    /// The TLS certificate or configuration could not be built.
    Tls(String),
    /// A socket or file operation failed.
    Io(std::io::Error),
    /// The configuration is inconsistent.
    Config(String),
    /// The simulator's runtime or thread could not start.
    Runtime(String),
    /// A ledger, histogram or control-endpoint answer could not be encoded or decoded.
    Decode(String),
}

impl std::fmt::Display for SimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SimError::Key(m) => write!(f, "apns simulator key: {m}"),
            SimError::Tls(m) => write!(f, "apns simulator tls: {m}"),
            SimError::Io(e) => write!(f, "apns simulator i/o: {e}"),
            SimError::Config(m) => write!(f, "apns simulator config: {m}"),
            SimError::Runtime(m) => write!(f, "apns simulator runtime: {m}"),
            SimError::Decode(m) => write!(f, "apns simulator decode: {m}"),
        }
    }
}

impl std::error::Error for SimError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SimError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for SimError {
    fn from(e: std::io::Error) -> Self {
        SimError::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_faults_are_valid_and_inject_nothing() {
        let f = Faults::default();
        assert!(f.validate().is_ok());
        assert!(f.unregistered_tokens.is_empty());
        assert_eq!(
            f.too_many_requests_rate + f.internal_error_rate + f.unavailable_rate,
            0.0
        );
    }

    #[test]
    fn out_of_range_rates_are_rejected() {
        let f = Faults {
            drop_rate: 1.5,
            ..Faults::default()
        };
        assert!(f.validate().is_err());
        let f = Faults {
            internal_error_rate: 0.6,
            unavailable_rate: 0.6,
            ..Faults::default()
        };
        assert!(f.validate().is_err());
    }

    #[test]
    fn faults_parse_from_partial_json() {
        let f: Faults =
            serde_json::from_str(r#"{"unavailable_rate":0.25,"seed":7}"#).expect("json");
        assert_eq!(f.unavailable_rate, 0.25);
        assert_eq!(f.seed, 7);
        assert!(serde_json::from_str::<Faults>(r#"{"nonsense":1}"#).is_err());
    }

    #[test]
    fn config_rejects_initial_above_max() {
        let mut c = SimConfig::new("T", "K", "pem", "com.x");
        c.initial_max_concurrent_streams = 10;
        c.max_concurrent_streams = 5;
        assert!(c.validate().is_err());
        c.max_concurrent_streams = 10;
        assert!(c.validate().is_ok());
    }
}
