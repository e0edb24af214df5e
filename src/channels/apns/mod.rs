//! APNs (Apple Push Notification service) sender: delivers push notifications over the shared
//! HTTP/2 client (`crate::h2client`: TLS, pooled connections, stream limits, deadlines) with
//! token (JWT) authentication. What is here is APNs' own: its wire format, its provider token,
//! and the meaning of its answers. Each shard owns one [`ApnsSender`]; nothing in here is
//! shared between shards (`Rc`/`Cell` inside, no locks or atomics).
//!
//! # Layout
//! - `channel.rs`: [`ApnsChannel`] (the `ChannelSender`) and [`ApnsRules`] (the API's rules).
//! - `config.rs`: [`ApnsConfig`], its validation, [`ApnsError`].
//! - `payload.rs`: [`encode_payload`], the JSON body and its size limits.
//! - `notification.rs`: [`ApnsNotification`] and [`PushType`].
//! - `request.rs`: local checks and [`RequestEncoder`] (path and headers).
//! - `response.rs`: APNs' status/reason table, each row a [`clarion_shards::Verdict`].
//! - `jwt.rs`: the provider token and its refresh policy.
//! - `sender.rs`: [`ApnsSender`] and [`ApnsStats`]: a request through the pool, the 403
//!   token retry, the counters.
//! - `tests/`: an in-process TLS + HTTP/2 APNs stand-in and one scenario per file.

mod channel;
mod config;
mod jwt;
mod notification;
mod payload;
mod request;
mod response;
mod sender;

#[cfg(test)]
pub(crate) mod tests;

pub use channel::{
    ApnsChannel, ApnsRules, DEFAULT_TTL_SECONDS, DEVICE_TOKEN_HEX_CHARS, MAX_IN_FLIGHT,
};
pub use config::{
    APPLE_ID_LEN, ApnsConfig, ApnsError, DEFAULT_CONNECTIONS, DEFAULT_ENDPOINT,
    MAX_CONNECTIONS_PER_SHARD,
};
pub use jwt::{TOKEN_MIN_REFRESH_INTERVAL, TOKEN_REFRESH_AGE};
pub use notification::{ApnsNotification, PushType};
pub use payload::{
    MAX_PAYLOAD_BYTES, MAX_VOIP_PAYLOAD_BYTES, PayloadError, PayloadFields, RESERVED_KEY,
    encode_payload, payload_size,
};
pub use request::{MAX_COLLAPSE_ID_BYTES, MAX_DEVICE_TOKEN_HEX_DIGITS, RequestEncoder};
pub use response::MAX_RETRY_AFTER;
pub use sender::{ApnsSender, ApnsStats, PreparedNotification};
