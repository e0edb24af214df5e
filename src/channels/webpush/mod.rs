//! Web Push (RFC 8030 delivery, RFC 8291 encryption, RFC 8292 VAPID): browser push over the
//! shared HTTP/2 client, or the HTTP/1.1 one where a push service offers only that, a pool per
//! push-service origin. What is here is Web Push's own: the
//! browser's subscription, the message's plaintext and its encryption, the VAPID key and
//! tokens, and the meaning of a push service's answers.
//!
//! # Layout
//! - `channel.rs`: [`WebPushChannel`], the `ChannelSender`.
//! - `rules.rs`: [`WebPushRules`], subscriptions and limits for the API.
//! - `subscription.rs`: a subscription checked, stored and read back; its `device_id`.
//! - `payload.rs`: the plaintext a service worker reads, and the limits.
//! - `encrypt.rs`: RFC 8291 `aes128gcm` encryption (the RFC's example is its test).
//! - `vapid.rs`: the key pair (configured, or generated once and kept) and the ES256 tokens.
//! - `response.rs`: RFC 8030 answers, each a [`clarion_shards::Verdict`].
//! - `origins.rs`: how each push-service origin is reached (HTTP/2 or HTTP/1.1, learned by
//!   ALPN on first use), a pool per origin, bounded.
//! - `sender.rs`: [`WebPushSender`]: the request, over the origin's pool; the counters.

mod channel;
mod encrypt;
mod origins;
mod payload;
mod response;
mod rules;
mod sender;
mod subscription;
mod vapid;

pub use channel::{MAX_IN_FLIGHT, WebPushChannel};
pub use encrypt::{EncryptError, HEADER_BYTES, RECORD_SIZE, encrypt};
pub use origins::{H1_CONNECTIONS_PER_ORIGIN, MAX_ORIGINS_PER_SHARD};
pub use payload::{MAX_PLAINTEXT_BYTES, MAX_TOPIC_CHARS, PayloadError, is_topic};
pub use rules::WebPushRules;
pub use sender::{DEFAULT_TTL_SECONDS, WebPushConfig, WebPushSender, WebPushStats};
pub use subscription::{
    AUTH_BYTES, DEVICE_ID_PREFIX, MAX_ENDPOINT_BYTES, P256DH_BYTES, Subscription, device_id,
};
pub use vapid::{GENERATED_KEY_FILE, VapidKey};
