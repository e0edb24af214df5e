//! APNs sender configuration: the caller's [`ApnsConfig`], its validation into an [`Endpoint`],
//! the timing constants every bound in this module hangs on, and [`ApnsError`] for set-up faults.

use std::fmt;
use std::time::Duration;

/// Apple's production push host; the sandbox is `https://api.sandbox.push.apple.com`.
pub const DEFAULT_ENDPOINT: &str = "https://api.push.apple.com";
/// APNs listens on 443 (and 2197); 443 when the endpoint names no port.
pub const DEFAULT_PORT: u16 = 443;
/// Persistent connections per shard unless configured: two keep a shard sending while one reconnects.
pub const DEFAULT_CONNECTIONS: usize = 2;
/// More connections per shard than this looks like abuse to Apple and buys nothing: each one
/// multiplexes hundreds of streams once APNs raises `SETTINGS_MAX_CONCURRENT_STREAMS`.
/// (Matches the bound `src/config.rs` puts on `apns.connections`.)
pub const MAX_CONNECTIONS_PER_SHARD: usize = 64;
/// Apple's team and key identifiers are exactly ten characters.
pub const APPLE_ID_LEN: usize = 10;

/// Longest a single `send()` may take, queueing for a stream and a connection included; past it the
/// caller gets `Retry` and the stream is reset. APNs answers in milliseconds when healthy.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest TCP connect + TLS + HTTP/2 handshake before the attempt counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection idle this long is checked with an HTTP/2 PING (Apple's advice: PING, do not churn).
pub const PING_IDLE_INTERVAL: Duration = Duration::from_secs(60);
/// A PING unanswered this long means the connection is dead: it is closed and replaced.
pub const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// First reconnect delay; doubled per consecutive failure, with jitter.
pub const RECONNECT_BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Reconnect delays stop growing here: Apple treats rapid reconnects as abuse, and an outage
/// longer than this is still probed twice a minute.
pub const RECONNECT_BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A connection that lived this long (or answered one request) was healthy: the next reconnect
/// starts again from the base delay instead of continuing the backoff.
pub const STABLE_CONNECTION_AGE: Duration = Duration::from_secs(60);
/// `close()` waits this long for in-flight sends before dropping the connections under them.
pub const CLOSE_GRACE: Duration = REQUEST_TIMEOUT;

/// What a shard needs to talk to APNs. Build one per process and clone it into each shard.
#[derive(Clone)]
pub struct ApnsConfig {
    /// `https://host[:port]`; the port defaults to 443.
    pub endpoint: String,
    /// The 10-character Apple team id (`iss` of the provider token).
    pub team_id: String,
    /// The 10-character id of the signing key (`kid` of the provider token).
    pub key_id: String,
    /// The `.p8` file's contents: a PKCS#8 PEM P-256 private key.
    pub key_pem: Vec<u8>,
    /// The app's bundle id, sent as `apns-topic`.
    pub topic: String,
    /// Persistent connections per shard.
    pub connections: usize,
    /// Extra trusted roots in PEM (simulators, test sinks), trusted besides webpki-roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl Default for ApnsConfig {
    fn default() -> Self {
        ApnsConfig {
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            team_id: String::new(),
            key_id: String::new(),
            key_pem: Vec::new(),
            topic: String::new(),
            connections: DEFAULT_CONNECTIONS,
            ca_pem: None,
        }
    }
}

impl fmt::Debug for ApnsConfig {
    // The signing key stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApnsConfig")
            .field("endpoint", &self.endpoint)
            .field("team_id", &self.team_id)
            .field("key_id", &self.key_id)
            .field(
                "key_pem",
                &format_args!("<{} bytes redacted>", self.key_pem.len()),
            )
            .field("topic", &self.topic)
            .field("connections", &self.connections)
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| p.len()))
            .finish()
    }
}

/// A set-up fault found by [`ApnsSender::new`](super::ApnsSender::new). None of them goes away by
/// retrying: the configuration has to change.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApnsError {
    /// A field of [`ApnsConfig`] is malformed.
    InvalidConfig { field: &'static str, reason: String },
    /// The `.p8` key could not be read as a PKCS#8 P-256 private key.
    InvalidKey { reason: String },
    /// `ca_pem` held no usable certificate.
    InvalidCaPem { reason: String },
}

impl ApnsError {
    /// Whether trying again unchanged could succeed: never for configuration faults.
    pub fn retry_can_help(&self) -> bool {
        false
    }
}

impl fmt::Display for ApnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApnsError::InvalidConfig { field, reason } => write!(f, "apns.{field}: {reason}"),
            ApnsError::InvalidKey { reason } => write!(f, "apns key: {reason}"),
            ApnsError::InvalidCaPem { reason } => write!(f, "apns ca_pem: {reason}"),
        }
    }
}

impl std::error::Error for ApnsError {}

/// Where to connect, parsed once from [`ApnsConfig::endpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// Host name or IP literal without brackets: the TLS server name and what DNS resolves.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `:authority` of every request, as written in the endpoint.
    pub(crate) authority: http::uri::Authority,
}

impl Endpoint {
    pub(crate) fn parse(endpoint: &str) -> Result<Endpoint, ApnsError> {
        let bad = |reason: String| ApnsError::InvalidConfig {
            field: "endpoint",
            reason,
        };
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|e| bad(format!("{endpoint:?} is not a URI: {e}")))?;
        match uri.scheme_str() {
            Some("https") => {}
            other => return Err(bad(format!("scheme must be https, got {other:?}"))),
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad(format!(
                "{endpoint:?} must be https://host[:port] with no path"
            )));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| bad(format!("{endpoint:?} names no host")))?;
        if authority.as_str().contains('@') {
            return Err(bad("user info is not allowed".to_owned()));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad(format!("{endpoint:?} names no host")));
        }
        Ok(Endpoint {
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(DEFAULT_PORT),
            authority,
        })
    }
}

/// Checks the fields that do not need parsing elsewhere.
pub(crate) fn validate(config: &ApnsConfig) -> Result<(), ApnsError> {
    for (field, value) in [("team_id", &config.team_id), ("key_id", &config.key_id)] {
        if value.len() != APPLE_ID_LEN || !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ApnsError::InvalidConfig {
                field,
                reason: format!("must be {APPLE_ID_LEN} ASCII letters or digits, got {value:?}"),
            });
        }
    }
    if config.topic.is_empty() || !config.topic.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApnsError::InvalidConfig {
            field: "topic",
            reason: format!("must be a bundle id, got {:?}", config.topic),
        });
    }
    if config.connections == 0 || config.connections > MAX_CONNECTIONS_PER_SHARD {
        return Err(ApnsError::InvalidConfig {
            field: "connections",
            reason: format!(
                "must be 1..={MAX_CONNECTIONS_PER_SHARD}, got {}",
                config.connections
            ),
        });
    }
    Ok(())
}

/// The timings a sender runs with: the constants above, shortened by tests.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) ping_idle_interval: Duration,
    pub(crate) ping_timeout: Duration,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_cap: Duration,
    pub(crate) stable_connection_age: Duration,
    pub(crate) close_grace: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            request_timeout: REQUEST_TIMEOUT,
            connect_timeout: CONNECT_TIMEOUT,
            ping_idle_interval: PING_IDLE_INTERVAL,
            ping_timeout: PING_TIMEOUT,
            backoff_base: RECONNECT_BACKOFF_BASE,
            backoff_cap: RECONNECT_BACKOFF_CAP,
            stable_connection_age: STABLE_CONNECTION_AGE,
            close_grace: CLOSE_GRACE,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_defaults_to_port_443() {
        let e = Endpoint::parse(DEFAULT_ENDPOINT).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("api.push.apple.com", 443));
        assert_eq!(e.authority.as_str(), "api.push.apple.com");
    }

    #[test]
    fn endpoint_keeps_explicit_port_and_ip_literals() {
        let e = Endpoint::parse("https://127.0.0.1:8443").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 8443));
        let e = Endpoint::parse("https://[::1]:2197/").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 2197));
    }

    #[test]
    fn endpoint_rejects_plain_http_paths_and_garbage() {
        for bad in [
            "http://api.push.apple.com",
            "https://h/3/device",
            "api.push.apple.com",
            "",
        ] {
            assert!(
                matches!(
                    Endpoint::parse(bad),
                    Err(ApnsError::InvalidConfig {
                        field: "endpoint",
                        ..
                    })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn validate_checks_ids_topic_and_connections() {
        let ok = ApnsConfig {
            team_id: "ABCDE12345".into(),
            key_id: "KEY1234567".into(),
            topic: "com.example.app".into(),
            ..ApnsConfig::default()
        };
        assert_eq!(validate(&ok), Ok(()));
        let short = ApnsConfig {
            team_id: "ABC".into(),
            ..ok.clone()
        };
        assert!(matches!(
            validate(&short),
            Err(ApnsError::InvalidConfig {
                field: "team_id",
                ..
            })
        ));
        let none = ApnsConfig {
            connections: 0,
            ..ok.clone()
        };
        assert!(matches!(
            validate(&none),
            Err(ApnsError::InvalidConfig {
                field: "connections",
                ..
            })
        ));
        let topic = ApnsConfig {
            topic: "a b".into(),
            ..ok
        };
        assert!(matches!(
            validate(&topic),
            Err(ApnsError::InvalidConfig { field: "topic", .. })
        ));
    }

    #[test]
    fn debug_redacts_the_key() {
        let c = ApnsConfig {
            key_pem: b"-----BEGIN PRIVATE KEY-----secret".to_vec(),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("secret"));
    }
}
