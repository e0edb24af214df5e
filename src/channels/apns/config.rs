//! APNs sender configuration: the caller's [`ApnsConfig`], its validation, and [`ApnsError`]
//! for set-up faults. (The endpoint's parsing and the connection timings are the shared HTTP/2
//! client's, `crate::h2client`.)

use std::fmt;

/// Apple's production push host; the sandbox is `https://api.sandbox.push.apple.com`.
pub const DEFAULT_ENDPOINT: &str = "https://api.push.apple.com";
/// Persistent connections per shard unless configured: two keep a shard sending while one reconnects.
pub const DEFAULT_CONNECTIONS: usize = 2;
/// More connections per shard than this looks like abuse to Apple and buys nothing: each one
/// multiplexes hundreds of streams once APNs raises `SETTINGS_MAX_CONCURRENT_STREAMS`.
/// (Matches the bound `src/config.rs` puts on `apns.connections`.)
pub const MAX_CONNECTIONS_PER_SHARD: usize = 64;
/// Apple's team and key identifiers are exactly ten characters.
pub const APPLE_ID_LEN: usize = 10;

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

impl From<crate::h2client::Error> for ApnsError {
    fn from(e: crate::h2client::Error) -> ApnsError {
        match e {
            crate::h2client::Error::InvalidCaPem { reason } => ApnsError::InvalidCaPem { reason },
            other => ApnsError::InvalidConfig {
                field: "endpoint",
                reason: other.to_string(),
            },
        }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
