//! Web Push (RFC 8030 delivery, RFC 8291 encryption, RFC 8292 VAPID): browser push. What is
//! here is Web Push's own: the browser's subscription (`subscription.rs`), the message's
//! plaintext and limits (`payload.rs`) and its rules for the API (`rules.rs`); requests go
//! through the shared HTTP/2 client (`crate::h2client`).

mod payload;
mod rules;
mod subscription;

pub use payload::{MAX_PLAINTEXT_BYTES, MAX_TOPIC_CHARS, PayloadError, is_topic};
pub use rules::WebPushRules;
pub use subscription::{
    AUTH_BYTES, DEVICE_ID_PREFIX, MAX_ENDPOINT_BYTES, P256DH_BYTES, Subscription, device_id,
};
