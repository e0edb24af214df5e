//! What the ingress asks of a shard: the commands that cross the mesh to the owning shard, each
//! carrying its own reply channel. Inputs here are already validated.

use clarion_shards::{
    DeadFilter, DeadKey, DeadSelection, NotificationContent, NotificationRecord, Platform,
    UserRecord,
};
use futures_channel::oneshot;
use uuid::Uuid;

use super::answer::BatchReply;
use super::dead::DeadPage;
use super::error::ShardError;
use super::probe::ProbeSnapshot;

/// Where a shard sends one command's answer.
pub type Reply<T> = oneshot::Sender<Result<T, ShardError>>;

/// A user's contact profile (PUT replaces it; devices are kept).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserProfile {
    pub email: Option<String>,
    pub phone: Option<String>,
    pub locale: Option<String>,
    pub timezone: Option<String>,
}

/// A device to register: its platform, its target in the canonical form its channel sends to
/// (a token, or a browser's subscription), and the id the API addresses it by.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDevice {
    pub platform: Platform,
    pub token: String,
    pub device_id: String,
}

#[derive(Debug, Clone)]
pub struct NewNotification {
    pub user_id: String,
    pub idempotency_key: String,
    pub content: NotificationContent,
}

/// A shard's answer to a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyReply {
    /// Durable in the owner's log; deliveries are queued.
    Accepted(Uuid),
    /// The idempotency key was seen within the dedup window: the original id, nothing sent.
    Duplicate(Uuid),
}

/// Whether a PUT/POST created the resource or updated an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    Created,
    Updated,
}

/// A command for the shard that owns a user (or a notification id).
#[derive(Debug)]
pub enum ShardCmd {
    PutUser {
        user_id: String,
        profile: UserProfile,
        reply: Reply<Upsert>,
    },
    AddDevice {
        user_id: String,
        device: NewDevice,
        reply: Reply<Upsert>,
    },
    /// Removes a device from its user (answered once durable): the first device whose
    /// `device_id` is one of `device_ids` (the path's id in each platform's canonical form).
    RemoveDevice {
        user_id: String,
        device_ids: Vec<String>,
        reply: Reply<()>,
    },
    /// A user's profile and devices.
    GetUser {
        user_id: String,
        reply: Reply<UserRecord>,
    },
    Notify {
        notification: NewNotification,
        reply: Reply<NotifyReply>,
    },
    /// The items of one batch request that this shard owns, each with its position in the
    /// request; answered with one message once every item is settled.
    NotifyBatch {
        items: Vec<(u32, NewNotification)>,
        reply: BatchReply,
    },
    GetNotification {
        id: Uuid,
        reply: Reply<Option<NotificationRecord>>,
    },
    /// The shard's counters, for `GET /v1/stats` (summed across shards by the caller).
    Stats { reply: Reply<ProbeSnapshot> },
    /// Up to `limit` of the shard's dead letters that `filter` matches, newest first, below
    /// `below` (a page's cursor).
    ListDead {
        filter: DeadFilter,
        below: Option<DeadKey>,
        limit: usize,
        reply: Reply<DeadPage>,
    },
    /// Queues the dead deliveries `selection` picks again; answers how many.
    ReplayDead {
        selection: DeadSelection,
        reply: Reply<u64>,
    },
    /// Deletes the dead letters `selection` picks; answers how many.
    PurgeDead {
        selection: DeadSelection,
        reply: Reply<u64>,
    },
}

impl ShardCmd {
    /// Notifications this command carries (1 for any other command): what a forwarding buffer
    /// counts against its bound.
    pub fn weight(&self) -> usize {
        match self {
            ShardCmd::NotifyBatch { items, .. } => items.len().max(1),
            _ => 1,
        }
    }

    /// Answers the command with an error without running it (overload, shutdown).
    pub fn reject(self, err: ShardError) {
        // A closed reply channel means the client went away; nothing to do.
        let _ = match self {
            ShardCmd::PutUser { reply, .. } | ShardCmd::AddDevice { reply, .. } => {
                reply.send(Err(err)).map_err(drop)
            }
            ShardCmd::RemoveDevice { reply, .. } => reply.send(Err(err)).map_err(drop),
            ShardCmd::GetUser { reply, .. } => reply.send(Err(err)).map_err(drop),
            ShardCmd::Notify { reply, .. } => reply.send(Err(err)).map_err(drop),
            ShardCmd::NotifyBatch { items, reply } => {
                let answers = items.iter().map(|(i, _)| (*i, Err(err.clone()))).collect();
                reply.send(answers).map_err(drop)
            }
            ShardCmd::GetNotification { reply, .. } => reply.send(Err(err)).map_err(drop),
            ShardCmd::Stats { reply } => reply.send(Err(err)).map_err(drop),
            ShardCmd::ListDead { reply, .. } => reply.send(Err(err)).map_err(drop),
            ShardCmd::ReplayDead { reply, .. } | ShardCmd::PurgeDead { reply, .. } => {
                reply.send(Err(err)).map_err(drop)
            }
        };
    }
}
