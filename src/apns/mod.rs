//! APNs (Apple Push Notification service) sender: delivers push notifications over persistent
//! HTTP/2 + TLS connections with token (JWT) authentication. Each shard owns one [`ApnsSender`];
//! nothing in here is shared between shards (`Rc`/`Cell` inside, no locks or atomics).
//!
//! # Layout
//! - `config.rs`: [`ApnsConfig`], endpoint parsing, [`ApnsError`], the timing constants.
//! - `payload.rs`: [`encode_payload`], the JSON body and its size limits.
//! - `notification.rs`: [`ApnsNotification`] and [`PushType`].
//! - `request.rs`: local checks and [`RequestEncoder`] (path and headers).
//! - `response.rs`: [`SendOutcome`] and the status/reason table.
//! - `jwt.rs`: the provider token and its refresh policy.
//! - `tls.rs`: rustls set-up, resolution off the executor, TCP + TLS with ALPN `h2`.
//! - `connection.rs`: one h2 connection, its driver, PING health check and round trip.
//! - `pool.rs`: the shard's connections, reconnect backoff, handing out free streams.
//! - `sender.rs`: [`ApnsSender`] and [`ApnsStats`].
//! - `wait.rs`: single-executor wake-ups and timeouts.
//! - `wait_queue.rs`: the line of requests waiting for a free stream.
//! - `tests/`: an in-process TLS + HTTP/2 APNs stand-in and one scenario per file.

mod config;
mod connection;
mod deadline;
mod jwt;
mod notification;
mod payload;
mod pool;
mod request;
mod response;
mod sender;
mod tls;
mod wait_queue;

#[cfg(test)]
pub(crate) mod tests;

pub use config::{
    APPLE_ID_LEN, ApnsConfig, ApnsError, CLOSE_GRACE, CONNECT_TIMEOUT, DEFAULT_CONNECTIONS,
    DEFAULT_ENDPOINT, DEFAULT_PORT, MAX_CONNECTIONS_PER_SHARD, PING_IDLE_INTERVAL, PING_TIMEOUT,
    RECONNECT_BACKOFF_BASE, RECONNECT_BACKOFF_CAP, REQUEST_TIMEOUT, STABLE_CONNECTION_AGE,
};
pub use jwt::{TOKEN_MIN_REFRESH_INTERVAL, TOKEN_REFRESH_AGE};
pub use notification::{ApnsNotification, PushType};
pub use payload::{
    MAX_PAYLOAD_BYTES, MAX_VOIP_PAYLOAD_BYTES, PayloadError, PayloadFields, RESERVED_KEY,
    encode_payload, payload_size,
};
pub use request::{MAX_COLLAPSE_ID_BYTES, MAX_DEVICE_TOKEN_HEX_DIGITS, RequestEncoder};
pub use response::{MAX_RETRY_AFTER, SendOutcome};
pub use sender::{ApnsSender, ApnsStats, PreparedNotification};
