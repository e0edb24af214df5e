//! The APNs channel: maps a delivery onto an APNs request (payload, push type, priority,
//! expiration, collapse id, `apns-id` = delivery id) and the `ApnsSender`'s outcome onto a
//! `SendResult`.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use clarion_shards::{Channel, Priority};
use futures_util::FutureExt;

use super::{ChannelSender, SendFuture, SendJob, SendResult};
use crate::apns::{ApnsNotification, ApnsSender, PayloadFields, PushType, SendOutcome};

/// Expiration used when a notification has no `ttl_seconds`: APNs keeps it about four weeks.
pub const DEFAULT_TTL_SECONDS: u64 = 28 * 86_400;
/// In-flight APNs requests per shard: enough to fill several HTTP/2 connections' streams.
pub const MAX_IN_FLIGHT: usize = 4096;
/// A configuration fault (bad key, wrong team) is retried this much later, not hammered.
pub const CONFIG_FAULT_RETRY_MS: u64 = 60_000;

pub struct ApnsChannel {
    sender: Rc<ApnsSender>,
}

impl ApnsChannel {
    pub fn new(sender: ApnsSender) -> ApnsChannel {
        ApnsChannel {
            sender: Rc::new(sender),
        }
    }

    pub fn sender(&self) -> &Rc<ApnsSender> {
        &self.sender
    }
}

impl ChannelSender for ApnsChannel {
    fn channel(&self) -> Channel {
        Channel::Apns
    }

    fn send(&self, job: &SendJob<'_>) -> SendFuture {
        let c = job.content;
        let fields = PayloadFields {
            title: c.title.as_deref(),
            body: c.body.as_deref(),
            category: c.category.as_deref(),
            data: &c.data,
        };
        let payload = match self.sender.encode_payload(&fields) {
            Ok(p) => p,
            Err(e) => {
                let reason = format!("payload: {e}");
                return Box::pin(async move {
                    SendResult::Permanent {
                        reason,
                        deactivate: false,
                        unregistered_at_ms: None,
                    }
                });
            }
        };
        let alert = c.title.is_some() || c.body.is_some();
        let push_type = if alert {
            PushType::Alert
        } else {
            PushType::Background
        };
        let priority = match (alert, c.priority) {
            (true, Priority::High) => 10,
            _ => 5,
        };
        let ttl = c.ttl_seconds.map_or(DEFAULT_TTL_SECONDS, u64::from);
        // Encoded here, while the record is borrowed: the future then owns only the request.
        let prepared = self.sender.prepare(&ApnsNotification {
            delivery_id: job.delivery_id,
            device_token: job.target,
            push_type,
            priority,
            expiration_unix_s: job.accepted_at_ms / 1000 + ttl,
            collapse_id: c.collapse_id.as_deref(),
            payload,
        });
        // `map`, not an `async` block awaiting it: that would hold the send future twice.
        Box::pin(self.sender.send_prepared(prepared).map(map_outcome))
    }

    fn max_in_flight(&self) -> usize {
        MAX_IN_FLIGHT
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = ()>>> {
        let sender = self.sender.clone();
        Box::pin(async move { sender.close().await })
    }
}

fn map_outcome(o: SendOutcome) -> SendResult {
    match o {
        SendOutcome::Sent { .. } => SendResult::Sent,
        SendOutcome::Retry {
            reason,
            retry_after,
        } => SendResult::Retry {
            reason,
            retry_after_ms: retry_after.map(|d| d.as_millis() as u64),
        },
        SendOutcome::Unavailable {
            reason,
            retry_after,
        } => SendResult::Unavailable {
            reason,
            retry_after_ms: retry_after.map(|d| d.as_millis() as u64),
        },
        SendOutcome::Permanent {
            reason,
            deactivate_token,
            unregistered_at_ms,
        } => SendResult::Permanent {
            reason,
            deactivate: deactivate_token,
            unregistered_at_ms,
        },
        SendOutcome::ConfigFault { reason } => SendResult::ConfigFault { reason },
        #[allow(unreachable_patterns)]
        other => SendResult::Unavailable {
            reason: format!("{other:?}"),
            retry_after_ms: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gone_tokens_unregistration_time_reaches_the_engine() {
        let gone = SendOutcome::Permanent {
            reason: "410 Unregistered".into(),
            deactivate_token: true,
            unregistered_at_ms: Some(1_700_000_000_000),
        };
        assert_eq!(
            map_outcome(gone),
            SendResult::Permanent {
                reason: "410 Unregistered".into(),
                deactivate: true,
                unregistered_at_ms: Some(1_700_000_000_000),
            }
        );
    }
}
