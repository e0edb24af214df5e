//! FCM sender configuration: [`FcmConfig`] (the project, its service account and the
//! connection bounds) and [`FcmError`] for set-up faults.

use std::fmt;

use super::service_account::ServiceAccount;

/// Google's FCM host.
pub const DEFAULT_ENDPOINT: &str = "https://fcm.googleapis.com";
/// Persistent connections per shard unless configured.
pub const DEFAULT_CONNECTIONS: usize = 2;
/// More connections per shard than this buys nothing: each multiplexes the server's stream
/// limit (100 on FCM) of requests.
pub const MAX_CONNECTIONS_PER_SHARD: usize = 64;
/// FCM's default quota: 600,000 messages a minute per project.
pub const DEFAULT_QUOTA_PER_MINUTE: u64 = 600_000;

/// What a shard needs to talk to FCM. Built once per process and cloned into each shard.
#[derive(Clone)]
pub struct FcmConfig {
    pub project_id: String,
    /// `https://host[:port]`.
    pub endpoint: String,
    pub account: ServiceAccount,
    /// Persistent connections per shard (to the send endpoint).
    pub connections: usize,
    /// The project's quota, shared out across the shards.
    pub quota_per_minute: u64,
    /// Extra trusted roots in PEM, for the endpoint and the token URI.
    pub ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for FcmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FcmConfig")
            .field("project_id", &self.project_id)
            .field("endpoint", &self.endpoint)
            .field("account", &self.account)
            .field("connections", &self.connections)
            .field("quota_per_minute", &self.quota_per_minute)
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .finish()
    }
}

/// A set-up fault: none goes away by retrying; the configuration has to change.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FcmError {
    /// The service account key file is unusable.
    ServiceAccount { reason: String },
    /// A field of [`FcmConfig`] is malformed.
    InvalidConfig { field: &'static str, reason: String },
    /// The HTTP/2 client refused the endpoint or the extra roots.
    Client { reason: String },
}

impl fmt::Display for FcmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FcmError::ServiceAccount { reason } => write!(f, "FCM service account: {reason}"),
            FcmError::InvalidConfig { field, reason } => write!(f, "FCM {field}: {reason}"),
            FcmError::Client { reason } => write!(f, "FCM client: {reason}"),
        }
    }
}

impl std::error::Error for FcmError {}

impl From<crate::h2client::Error> for FcmError {
    fn from(e: crate::h2client::Error) -> Self {
        FcmError::Client {
            reason: e.to_string(),
        }
    }
}

/// Checks the fields a shard relies on.
pub fn validate(c: &FcmConfig) -> Result<(), FcmError> {
    let ok_id = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if !ok_id(&c.project_id) {
        return Err(FcmError::InvalidConfig {
            field: "project_id",
            reason: format!(
                "{:?} is not a Firebase project id (lowercase letters, digits, `-`)",
                c.project_id
            ),
        });
    }
    if !(1..=MAX_CONNECTIONS_PER_SHARD).contains(&c.connections) {
        return Err(FcmError::InvalidConfig {
            field: "connections",
            reason: format!("must be between 1 and {MAX_CONNECTIONS_PER_SHARD}"),
        });
    }
    if c.quota_per_minute == 0 {
        return Err(FcmError::InvalidConfig {
            field: "quota_per_minute",
            reason: "must be at least 1".into(),
        });
    }
    Ok(())
}
