//! [`ShardError`]: why a shard did not do what a command asked, in the engine's own terms. The
//! engine knows nothing of HTTP; `api/error.rs` maps each to a status, a code and a message.

use std::fmt;

/// Why a command failed on its shard. `retry_can_help` separates the transient (overload,
/// storage trouble, a shard that did not answer) from the permanent (a missing user, a limit).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardError {
    /// The user is not registered on its shard.
    UserNotFound { user_id: String },
    /// The user has no device with this id.
    DeviceNotFound { user_id: String, device_id: String },
    /// A notification would reach more devices than one notification may.
    TooManyDeliveries { user_id: String, active: usize },
    /// A new device past `[contacts] max_devices_per_user`, with no deactivated one to drop.
    DeviceLimit { user_id: String, devices: usize },
    /// A device's channel has no sender on this server.
    ChannelMissing { channel: &'static str },
    /// The notification's content does not render for the channel of one of the user's
    /// active devices (too large for it, a key it reserves): `field`, `code` and `message`
    /// as the channel's rules say.
    ContentRefused {
        field: &'static str,
        code: &'static str,
        message: String,
    },
    /// The shard's log is not keeping up: too many accepts wait for their fsync.
    LogBehind,
    /// Too many commands wait to be forwarded to the owning shard.
    PeerBusy,
    /// Storage (or the shard) cannot take the command now; `why` says what, for the client.
    Unavailable { why: &'static str },
    /// A stored record does not decode; the server log names it.
    CorruptRecord,
    /// A shard number that does not exist.
    NoSuchShard,
    /// The owning shard went away (or stopped) without answering.
    Unanswered,
}

impl ShardError {
    /// Whether the same command could succeed later unchanged.
    pub fn retry_can_help(&self) -> bool {
        matches!(
            self,
            ShardError::LogBehind
                | ShardError::PeerBusy
                | ShardError::Unavailable { .. }
                | ShardError::Unanswered
        )
    }
}

impl fmt::Display for ShardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardError::UserNotFound { user_id } => write!(
                f,
                "user `{user_id}` is not registered (PUT /v1/users/{user_id} first)"
            ),
            ShardError::DeviceNotFound { user_id, device_id } => {
                write!(f, "user `{user_id}` has no device `{device_id}`")
            }
            ShardError::TooManyDeliveries { user_id, active } => write!(
                f,
                "user `{user_id}` has {active} active devices; one notification reaches at most {}",
                clarion_shards::MAX_DELIVERIES_PER_NOTIFICATION
            ),
            ShardError::DeviceLimit { user_id, devices } => write!(
                f,
                "user `{user_id}` already has {devices} active devices, the most allowed ([contacts] max_devices_per_user); remove one first (DELETE /v1/users/{user_id}/devices/{{token}})"
            ),
            ShardError::ContentRefused { message, .. } => f.write_str(message),
            ShardError::ChannelMissing { channel } => {
                write!(f, "the {channel} channel is not configured on this server")
            }
            ShardError::LogBehind => write!(f, "this shard's log is not keeping up; retry later"),
            ShardError::PeerBusy => write!(f, "too many requests waiting for another shard"),
            ShardError::Unavailable { why } => f.write_str(why),
            ShardError::CorruptRecord => write!(
                f,
                "the stored record could not be read; the server log names it"
            ),
            ShardError::NoSuchShard => write!(f, "no such shard"),
            ShardError::Unanswered => write!(f, "the shard did not answer; retry"),
        }
    }
}

impl std::error::Error for ShardError {}
