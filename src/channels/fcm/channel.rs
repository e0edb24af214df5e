//! The FCM channel as the engine sees it: a [`ChannelSender`] over the shard's [`FcmSender`].

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use clarion_shards::Channel;

use super::sender::FcmSender;
use crate::channels::{ChannelSender, SendFuture, SendJob};

/// In-flight FCM requests per shard: FCM allows 100 streams per connection.
pub const MAX_IN_FLIGHT: usize = 2048;

pub struct FcmChannel {
    sender: Rc<FcmSender>,
}

impl FcmChannel {
    pub fn new(sender: FcmSender) -> FcmChannel {
        FcmChannel {
            sender: Rc::new(sender),
        }
    }
}

impl ChannelSender for FcmChannel {
    fn channel(&self) -> Channel {
        Channel::Fcm
    }

    fn send(&self, job: &SendJob<'_>) -> SendFuture {
        Box::pin(self.sender.send(job.target, job.content))
    }

    fn max_in_flight(&self) -> usize {
        MAX_IN_FLIGHT
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = ()>>> {
        let sender = self.sender.clone();
        Box::pin(async move { sender.close().await })
    }
}
