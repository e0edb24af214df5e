//! The Web Push channel as the engine sees it: a [`ChannelSender`] over the shard's
//! [`WebPushSender`].

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use clarion_shards::Channel;

use super::sender::WebPushSender;
use crate::channels::{ChannelSender, SendFuture, SendJob};

/// In-flight Web Push requests per shard, over every origin.
pub const MAX_IN_FLIGHT: usize = 2048;

pub struct WebPushChannel {
    sender: Rc<WebPushSender>,
}

impl WebPushChannel {
    pub fn new(sender: WebPushSender) -> WebPushChannel {
        WebPushChannel {
            sender: Rc::new(sender),
        }
    }
}

impl ChannelSender for WebPushChannel {
    fn channel(&self) -> Channel {
        Channel::Webpush
    }

    fn send(&self, job: &SendJob<'_>) -> SendFuture {
        Box::pin(
            self.sender
                .send(job.notification_id, job.target, job.content),
        )
    }

    fn max_in_flight(&self) -> usize {
        MAX_IN_FLIGHT
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = ()>>> {
        let sender = self.sender.clone();
        Box::pin(async move { sender.close().await })
    }
}
