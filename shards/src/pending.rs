//! The pending index: one key per delivery that still has to be attempted, in the log's
//! `pending` keyspace, ordered by channel and then by when it is due. It is the shard's
//! backlog: the channel queues in memory are bounded windows onto it, refilled in due order
//! ([`ShardLog::scan_pending`](crate::ShardLog::scan_pending)), so a provider outage grows the
//! disk, not the memory. A retry moves its key to the new due time; a delivery's key is removed
//! in the same batch as the update that settles it.
//!
//! Key layout (27 bytes, every field big-endian so byte order is due order):
//! `channel (u8) ++ due_ms (u64) ++ notification id (16) ++ delivery index (u16)`. The value is
//! empty: the notification record holds everything else.

use uuid::Uuid;

use crate::error::Error;
use crate::record::{Channel, NotificationRecord};

/// Length of an encoded [`PendingKey`].
pub const PENDING_KEY_LEN: usize = 1 + 8 + 16 + 2;

/// One delivery waiting in the backlog of its channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PendingKey {
    /// The channel whose backlog holds it (sorts first).
    pub channel: Channel,
    /// When the delivery is due: its notification's accept time, or its next attempt's time.
    pub due_ms: u64,
    /// The notification the delivery belongs to.
    pub notification: Uuid,
    /// The delivery's index within the notification.
    pub index: u16,
}

impl PendingKey {
    /// The key's bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; PENDING_KEY_LEN] {
        let mut k = [0u8; PENDING_KEY_LEN];
        k[0] = channel_byte(self.channel);
        k[1..9].copy_from_slice(&self.due_ms.to_be_bytes());
        k[9..25].copy_from_slice(self.notification.as_bytes());
        k[25..].copy_from_slice(&self.index.to_be_bytes());
        k
    }

    /// Reads a key written by [`PendingKey::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let k: &[u8; PENDING_KEY_LEN] = bytes.try_into().map_err(|_| {
            Error::corrupt(format!(
                "pending key: expected {PENDING_KEY_LEN} bytes, found {}",
                bytes.len()
            ))
        })?;
        let channel = Channel::ALL
            .iter()
            .copied()
            .find(|c| channel_byte(*c) == k[0])
            .ok_or_else(|| Error::corrupt(format!("pending key: unknown channel {}", k[0])))?;
        let mut due = [0u8; 8];
        due.copy_from_slice(&k[1..9]);
        let mut id = [0u8; 16];
        id.copy_from_slice(&k[9..25]);
        Ok(PendingKey {
            channel,
            due_ms: u64::from_be_bytes(due),
            notification: Uuid::from_bytes(id),
            index: u16::from_be_bytes([k[25], k[26]]),
        })
    }

    /// The keys of `n`'s deliveries still to attempt, each due when its next attempt is (or
    /// when it was accepted): the backlog of a notification found open without one.
    #[must_use]
    pub fn for_open_deliveries(n: &NotificationRecord) -> Vec<PendingKey> {
        (0u16..)
            .zip(&n.deliveries)
            .filter(|(_, d)| !d.state.is_terminal())
            .map(|(index, d)| PendingKey {
                channel: d.channel,
                due_ms: d.next_attempt_at_ms.unwrap_or(n.accepted_at_ms),
                notification: n.id,
                index,
            })
            .collect()
    }

    /// The first key of `channel`'s backlog.
    #[must_use]
    pub fn channel_start(channel: Channel) -> [u8; PENDING_KEY_LEN] {
        let mut k = [0u8; PENDING_KEY_LEN];
        k[0] = channel_byte(channel);
        k
    }

    /// The last possible key of `channel` due at or before `due_ms`.
    #[must_use]
    pub fn due_end(channel: Channel, due_ms: u64) -> [u8; PENDING_KEY_LEN] {
        let mut k = [0xFFu8; PENDING_KEY_LEN];
        k[0] = channel_byte(channel);
        k[1..9].copy_from_slice(&due_ms.to_be_bytes());
        k
    }

    /// The last possible key of `channel`.
    #[must_use]
    pub fn channel_end(channel: Channel) -> [u8; PENDING_KEY_LEN] {
        Self::due_end(channel, u64::MAX)
    }
}

/// The channel's byte in a key: its dense index, which never changes for a channel once its
/// backlogs exist on disk (new channels are appended).
fn channel_byte(channel: Channel) -> u8 {
    // Channel::COUNT is far below 256.
    channel.index() as u8
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(due_ms: u64, id: u128, index: u16) -> PendingKey {
        PendingKey {
            channel: Channel::Apns,
            due_ms,
            notification: Uuid::from_u128(id),
            index,
        }
    }

    #[test]
    fn a_key_decodes_to_itself() {
        let k = key(1_700_000_000_123, 0xABCD, 7);
        assert_eq!(PendingKey::decode(&k.encode()).unwrap(), k);
    }

    #[test]
    fn byte_order_is_due_order_then_id_then_index() {
        let keys = [
            key(5, 9, 0),
            key(6, 1, 3),
            key(6, 2, 0),
            key(6, 2, 1),
            key(256, 0, 0),
        ];
        for pair in keys.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(pair[0].encode() < pair[1].encode());
        }
    }

    #[test]
    fn range_bounds_enclose_the_channel_and_due_time() {
        let k = key(1000, u128::MAX, u16::MAX);
        assert!(PendingKey::channel_start(Channel::Apns) <= k.encode());
        assert!(k.encode() <= PendingKey::due_end(Channel::Apns, 1000));
        assert!(key(1001, 0, 0).encode() > PendingKey::due_end(Channel::Apns, 1000));
        assert!(k.encode() <= PendingKey::channel_end(Channel::Apns));
    }

    #[test]
    fn malformed_keys_are_corrupt_not_panics() {
        assert!(PendingKey::decode(&[]).is_err());
        assert!(PendingKey::decode(&[0u8; PENDING_KEY_LEN + 1]).is_err());
        let mut bad = key(1, 1, 1).encode();
        bad[0] = 0xEE;
        assert!(PendingKey::decode(&bad).is_err());
    }
}
