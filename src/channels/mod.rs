//! The channel and sender abstraction: a `ChannelSender` turns one delivery of a notification
//! into a provider request and answers in the delivery state machine's own terms, a
//! [`Verdict`].
//! APNs is the first; FCM, Web Push, SMS and email slot in beside it.

pub mod apns;
pub mod fcm;
pub mod off;
pub mod rules;
pub mod sending;
pub mod webpush;

use std::future::Future;
use std::pin::Pin;

use clarion_shards::{Channel, NotificationContent, Verdict};
use uuid::Uuid;

/// What a sender needs to know about one delivery attempt (borrowed from the shard's record;
/// the sender copies what it keeps into the returned future).
pub struct SendJob<'a> {
    /// The notification's id (what a browser's service worker is shown).
    pub notification_id: Uuid,
    pub delivery_id: Uuid,
    pub target: &'a str,
    pub content: &'a NotificationContent,
    pub accepted_at_ms: u64,
}

/// An attempt in flight; it ends in the attempt's [`Verdict`].
pub type SendFuture = Pin<Box<dyn Future<Output = Verdict>>>;

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
