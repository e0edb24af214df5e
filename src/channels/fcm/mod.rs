//! FCM (Firebase Cloud Messaging, HTTP v1): Android push over the shared HTTP/2 client
//! (`crate::h2client`). What is here is FCM's own: its message format, its OAuth 2.0 access
//! tokens from a service account, and the meaning of its answers. Each shard owns one
//! [`FcmSender`]; the shards share only the access token ([`SharedTokens`], touched when a
//! token nears its refresh time, never per send).
//!
//! # Layout
//! - `channel.rs`: [`FcmChannel`], the `ChannelSender`.
//! - `rules.rs`: [`FcmRules`], registration tokens and the message's limits for the API.
//! - `message.rs`: the request body and its size and reserved-key rules.
//! - `config.rs`: [`FcmConfig`], its validation, [`FcmError`].
//! - `service_account.rs`: the service account key file.
//! - `oauth.rs`: the RS256 assertion, the token exchange and the shared token slot.
//! - `pace.rs`: [`pace::Pace`], the shard's share of the project's quota (each send reserves a slot).
//! - `response.rs`: FCM's answers, each a [`clarion_shards::Verdict`].
//! - `sender.rs`: [`FcmSender`]: pacing, the request, the 401 token retry, the counters.

mod channel;
mod config;
mod message;
mod oauth;
mod pace;
mod response;
mod rules;
mod sender;
mod service_account;

pub use channel::{FcmChannel, MAX_IN_FLIGHT};
pub use config::{
    DEFAULT_CONNECTIONS, DEFAULT_ENDPOINT, DEFAULT_QUOTA_PER_MINUTE, FcmConfig, FcmError,
    MAX_CONNECTIONS_PER_SHARD, validate,
};
pub use message::{
    MAX_MESSAGE_BYTES, MessageError, RESERVED_DATA_KEYS, RESERVED_DATA_PREFIXES, encode,
    is_reserved,
};
pub use oauth::{SCOPE, SharedTokens};
pub use rules::{FcmRules, MAX_TOKEN_CHARS};
pub use sender::{FcmSender, FcmStats};
pub use service_account::ServiceAccount;
