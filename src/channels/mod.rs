//! The channel and sender abstraction: a `ChannelSender` turns one delivery of a notification
//! into a provider request and reports a `SendResult` the delivery state machine understands.
//! APNs is the first; FCM, Web Push, SMS and email slot in beside it.

pub mod apns;

use std::future::Future;
use std::pin::Pin;

use clarion_shards::{Channel, NotificationContent};
use uuid::Uuid;

/// What a sender needs to know about one delivery attempt (borrowed from the shard's record;
/// the sender copies what it keeps into the returned future).
pub struct SendJob<'a> {
    pub delivery_id: Uuid,
    pub target: &'a str,
    pub content: &'a NotificationContent,
    pub accepted_at_ms: u64,
}

/// A provider's answer, in the terms of the delivery state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendResult {
    Sent,
    /// The provider answered about this delivery, transiently (a device throttled): retry
    /// later; it spends an attempt.
    Retry {
        reason: String,
        retry_after_ms: Option<u64>,
    },
    /// The provider did not answer about this delivery: it could not be reached (connection
    /// refused, TLS failure, timeout, connection lost) or failed as a service (5xx). Fed to the
    /// channel's circuit breaker; spends an attempt only while the provider otherwise answers.
    Unavailable {
        reason: String,
        retry_after_ms: Option<u64>,
    },
    /// Permanent: the delivery fails; `deactivate` says the target (device token) is dead.
    /// `unregistered_at_ms` is when the provider last found it dead (unix ms), if it said: a
    /// device registered with us after that has come back and stays active.
    Permanent {
        reason: String,
        deactivate: bool,
        unregistered_at_ms: Option<u64>,
    },
    /// Our credentials or setup are wrong: alert, keep the delivery, retry much later.
    ConfigFault {
        reason: String,
    },
}

pub type SendFuture = Pin<Box<dyn Future<Output = SendResult>>>;

/// One provider channel's sender, owned by one shard.
pub trait ChannelSender {
    fn channel(&self) -> Channel;
    /// Starts one attempt; the future owns what it needs.
    fn send(&self, job: &SendJob<'_>) -> SendFuture;
    /// How many attempts this sender can usefully have in flight at once.
    fn max_in_flight(&self) -> usize;
    /// Stops taking work and closes connections after in-flight requests finish.
    fn close(&self) -> Pin<Box<dyn Future<Output = ()>>>;
}
