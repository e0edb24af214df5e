//! [`WriteBatch`]: the unit a shard hands to its storage thread — puts and deletes across the
//! log's keyspaces that become durable together, plus typed helpers for the records we store.
//! Records are encoded straight into one buffer per batch, so a group commit of thousands of
//! records makes a handful of allocations, not one per record.

use std::ops::Range;

use uuid::Uuid;

use super::Keyspace;
use super::claims::{Claim, DedupClaim, entry_key, entry_value};
use crate::dead::{DeadKey, DeadLetter, id_key};
use crate::pending::PendingKey;
use crate::record::{DeliveryRecord, NotificationRecord, UserRecord};

/// One put (`value: Some`, its bytes in the batch's value buffer) or delete (`value: None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Op {
    pub(crate) ks: Keyspace,
    pub(crate) key: LogKey,
    pub(crate) value: Option<Range<usize>>,
}

/// Keys up to this long (notification ids, delivery updates, most user ids) live inside the op.
const INLINE_KEY_BYTES: usize = 30;

/// A key as handed to the storage thread: inline when short, so the two writes of every
/// notification allocate no key (fjall copies keys into its own representation anyway).
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum LogKey {
    Inline {
        len: u8,
        bytes: [u8; INLINE_KEY_BYTES],
    },
    Heap(Box<[u8]>),
}

impl LogKey {
    fn new(key: &[u8]) -> LogKey {
        let mut bytes = [0u8; INLINE_KEY_BYTES];
        match (bytes.get_mut(..key.len()), u8::try_from(key.len())) {
            (Some(inline), Ok(len)) => {
                inline.copy_from_slice(key);
                LogKey::Inline { len, bytes }
            }
            _ => LogKey::Heap(key.into()),
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            LogKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            LogKey::Heap(key) => key,
        }
    }
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_slice())
    }
}

/// Writes that are applied atomically and in order, and acknowledged together.
///
/// Submitted batches are group-committed: many of them share one fjall batch and one fsync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub(crate) ops: Vec<Op>,
    /// Every put's value, one after another ([`Op::value`] ranges index it).
    values: Vec<u8>,
    key_bytes: usize,
    /// Dedup claims, in op order, each guarding a range of `ops` (`log/claims.rs`).
    pub(crate) claims: Vec<Claim>,
}

impl WriteBatch {
    /// An empty batch (submitting one is a barrier).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value` in `ks`.
    pub fn put(
        &mut self,
        ks: Keyspace,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> &mut Self {
        self.put_with(ks, key, |out| out.extend_from_slice(value.as_ref()))
    }

    /// Sets `key` in `ks` to what `encode` appends to the batch's value buffer.
    fn put_with(
        &mut self,
        ks: Keyspace,
        key: impl AsRef<[u8]>,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> &mut Self {
        let key = key.as_ref();
        self.key_bytes += key.len();
        let start = self.values.len();
        encode(&mut self.values);
        self.ops.push(Op {
            ks,
            key: LogKey::new(key),
            value: Some(start..self.values.len()),
        });
        self
    }

    /// Removes `key` from `ks`.
    pub fn delete(&mut self, ks: Keyspace, key: impl AsRef<[u8]>) -> &mut Self {
        let key = key.as_ref();
        self.key_bytes += key.len();
        self.ops.push(Op {
            ks,
            key: LogKey::new(key),
            value: None,
        });
        self
    }

    /// The value `op` (one of this batch's) puts, `None` for a delete.
    pub(crate) fn value(&self, op: &Op) -> Option<&[u8]> {
        op.value.clone().and_then(|r| self.values.get(r))
    }

    /// Stores `user` under its user id.
    pub fn put_user(&mut self, user: &UserRecord) -> &mut Self {
        self.put_with(Keyspace::Users, user.user_id.as_bytes(), |out| {
            user.encode_into(out);
        })
    }

    /// Stores `notification` under its 16 id bytes: once, when it is accepted. Later changes to
    /// its deliveries are [`WriteBatch::put_delivery_update`]s; writing the whole record again
    /// would be overlaid by the older updates stored after it when read back.
    pub fn put_notification(&mut self, notification: &NotificationRecord) -> &mut Self {
        self.put_with(Keyspace::Notifications, notification.id.as_bytes(), |out| {
            notification.encode_into(out);
        })
    }

    /// Stores delivery `index`'s progress within notification `id` (a delivery update: what
    /// changes when a delivery settles, without rewriting the notification).
    pub fn put_delivery_update(
        &mut self,
        id: Uuid,
        index: u16,
        delivery: &DeliveryRecord,
    ) -> &mut Self {
        self.put_with(
            Keyspace::Notifications,
            super::fold::delivery_update_key(id, index),
            |out| delivery.encode_update_into(out),
        )
    }

    /// Adds a delivery to its channel's backlog (see `pending.rs`).
    pub fn put_pending(&mut self, key: &PendingKey) -> &mut Self {
        self.put(Keyspace::Pending, key.encode(), [])
    }

    /// Removes a delivery from its channel's backlog: it settled, or moved to another due time.
    pub fn delete_pending(&mut self, key: &PendingKey) -> &mut Self {
        self.delete(Keyspace::Pending, key.encode())
    }

    /// Keeps delivery `delivery_id`'s dead letter under `key` (with the key that finds it by
    /// delivery id, `dead.rs`).
    pub fn put_dead(&mut self, key: &DeadKey, letter: &DeadLetter) -> &mut Self {
        self.put_with(Keyspace::Dead, key.encode(), |out| {
            out.extend_from_slice(&letter.encode());
        });
        self.put(Keyspace::Dead, id_key(letter.delivery_id), key.body())
    }

    /// Removes a dead letter and the key that finds it by delivery id: replayed or purged.
    pub fn delete_dead(&mut self, key: &DeadKey, delivery_id: Uuid) -> &mut Self {
        self.delete(Keyspace::Dead, key.encode());
        self.delete(Keyspace::Dead, id_key(delivery_id))
    }

    /// Writes what `f` adds only if `claim` wins (its key is not taken within the window),
    /// together with the key's `dedup` entry; a lost claim writes none of it and is reported
    /// back in the write's [`Committed`](super::Committed). Only for a batch someone waits on
    /// ([`ShardLog::submit`](super::ShardLog::submit)): a lazy write's lost claim has nobody to
    /// tell.
    pub fn claimed(&mut self, claim: DedupClaim, f: impl FnOnce(&mut Self)) -> &mut Self {
        let start = self.ops.len();
        f(self);
        self.put(
            Keyspace::Dedup,
            entry_key(claim.hash),
            entry_value(claim.id, claim.at_ms),
        );
        let end = self.ops.len();
        self.claims.push(Claim {
            claim,
            ops: start..end,
        });
        self
    }

    /// Number of puts and deletes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when the batch holds no writes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Key and value bytes in the batch.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.key_bytes + self.values.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::NotificationContent;

    #[test]
    fn put_and_delete_record_ops_in_order() {
        let mut b = WriteBatch::new();
        assert!(b.is_empty());
        b.put(Keyspace::Users, "u1", b"v")
            .delete(Keyspace::Users, "u2");
        assert_eq!(b.len(), 2);
        assert_eq!(b.bytes(), 2 + 1 + 2);
        assert_eq!(
            (b.ops[0].ks, b.ops[0].key.as_slice(), b.value(&b.ops[0])),
            (Keyspace::Users, &b"u1"[..], Some(&b"v"[..]))
        );
        assert_eq!(b.ops[1].key.as_slice(), b"u2");
        assert_eq!(b.value(&b.ops[1]), None);
    }

    #[test]
    fn keys_are_kept_whole_inline_or_on_the_heap() {
        let long = vec![7u8; 200];
        for key in [
            &b""[..],
            b"k",
            &[1u8; INLINE_KEY_BYTES],
            &[2u8; INLINE_KEY_BYTES + 1],
            &long,
        ] {
            let k = LogKey::new(key);
            assert_eq!(k.as_slice(), key);
            assert_eq!(
                matches!(k, LogKey::Inline { .. }),
                key.len() <= INLINE_KEY_BYTES,
                "{} bytes",
                key.len()
            );
        }
    }

    #[test]
    fn typed_helpers_use_the_documented_keys() {
        let id = Uuid::from_u128(0x0123_4567_89ab_7def_8123_4567_89ab_cdef);
        let n = NotificationRecord {
            id,
            user_id: "u".into(),
            idempotency_key: "k".into(),
            accepted_at_ms: 1,
            content: NotificationContent::default(),
            deliveries: vec![],
        };
        let user = UserRecord {
            user_id: "alice".into(),
            ..UserRecord::default()
        };
        let mut b = WriteBatch::new();
        let pending = PendingKey {
            channel: crate::Channel::Apns,
            due_ms: 5,
            notification: id,
            index: 1,
        };
        b.put_notification(&n).put_user(&user).put_pending(&pending);
        assert_eq!(b.ops[0].ks, Keyspace::Notifications);
        assert_eq!(b.ops[0].key.as_slice(), id.as_bytes());
        assert_eq!(b.value(&b.ops[0]), Some(n.encode().as_slice()));
        assert_eq!(
            (b.ops[1].ks, b.ops[1].key.as_slice()),
            (Keyspace::Users, &b"alice"[..])
        );
        assert_eq!(
            (b.ops[2].ks, b.ops[2].key.as_slice()),
            (Keyspace::Pending, &pending.encode()[..])
        );
        assert_eq!(b.value(&b.ops[2]), Some(&[][..]));
        // Every value is the record's own encoding, however many share the batch's buffer.
        assert_eq!(b.value(&b.ops[1]), Some(user.encode().as_slice()));
        let d = crate::record::DeliveryRecord::new_queued(id, crate::Channel::Apns, "t", 1);
        b.put_delivery_update(id, 3, &d);
        assert_eq!(
            b.ops[3].key.as_slice(),
            super::super::fold::delivery_update_key(id, 3)
        );
        assert_eq!(b.value(&b.ops[3]), Some(d.encode_update().as_slice()));
        assert_eq!(b.value(&b.ops[0]), Some(n.encode().as_slice()));
        let keys = 16 + 5 + crate::pending::PENDING_KEY_LEN + 18;
        assert_eq!(b.bytes(), keys + b.values.len());
    }
}
