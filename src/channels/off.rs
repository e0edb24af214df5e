//! A channel that is off: neither credentials nor simulator mode were configured for it. Its
//! sender sends nothing and answers every attempt with a configuration fault, so the channel's
//! breaker opens, its deliveries wait in the backlog with their attempts unspent, and the fault
//! shows in the log and in `config_faults` until an operator configures the channel and
//! restarts.

use std::future::Future;
use std::pin::Pin;

use clarion_shards::{Channel, Verdict};

use super::{ChannelSender, SendFuture, SendJob};

/// Attempts an off channel lets the dispatcher start at once: each ends at once in a fault,
/// and the breaker stops them after a few.
pub const OFF_MAX_IN_FLIGHT: usize = 16;

pub struct OffChannel {
    channel: Channel,
    reason: String,
}

impl OffChannel {
    /// `hint` says what to configure (the section and its keys).
    pub fn new(channel: Channel, hint: &str) -> OffChannel {
        OffChannel {
            channel,
            reason: format!(
                "{} is off: no credentials and not in simulator mode ({hint})",
                channel.as_str()
            ),
        }
    }
}

impl ChannelSender for OffChannel {
    fn channel(&self) -> Channel {
        self.channel
    }

    fn send(&self, _job: &SendJob<'_>) -> SendFuture {
        let reason = self.reason.clone();
        Box::pin(async move { Verdict::ConfigFault { reason } })
    }

    fn max_in_flight(&self) -> usize {
        OFF_MAX_IN_FLIGHT
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clarion_shards::NotificationContent;

    #[test]
    fn every_attempt_is_a_configuration_fault_naming_what_to_set() {
        let off = OffChannel::new(
            Channel::Apns,
            "set [apns] key_file, or mode = \"simulator\"",
        );
        let content = NotificationContent::default();
        let job = SendJob {
            notification_id: uuid::Uuid::nil(),
            delivery_id: uuid::Uuid::nil(),
            target: "00",
            content: &content,
            accepted_at_ms: 0,
        };
        let answer = futures_lite::future::block_on(off.send(&job));
        match answer {
            Verdict::ConfigFault { reason } => {
                assert!(reason.starts_with("apns is off"), "{reason}");
                assert!(reason.contains("[apns] key_file"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
