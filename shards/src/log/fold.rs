//! Reading notifications back with their delivery updates folded in.
//!
//! The `notifications` keyspace holds, per notification, the record written at accept under its
//! 16 id bytes and one delivery update per settled delivery under the 18-byte key
//! `id ++ delivery index (u16, big-endian)` (see [`delivery_update_key`]). Keys sort so that a
//! notification's updates follow it directly, so one pass in key order sees each notification
//! and then its updates: [`fold`] turns that pass into whole, current records.

use uuid::Uuid;

use super::Keyspace;
use super::recovery::name_key;
use crate::error::Error;
use crate::record::NotificationRecord;

/// Length of a notification's key: its id.
pub(crate) const NOTIFICATION_KEY_LEN: usize = 16;
/// Length of a delivery update's key: the notification's id, then the delivery's index.
pub(crate) const UPDATE_KEY_LEN: usize = NOTIFICATION_KEY_LEN + 2;

/// The key of delivery `index`'s update within notification `id`.
#[must_use]
pub(crate) fn delivery_update_key(id: Uuid, index: u16) -> [u8; UPDATE_KEY_LEN] {
    let mut key = [0u8; UPDATE_KEY_LEN];
    key[..NOTIFICATION_KEY_LEN].copy_from_slice(id.as_bytes());
    key[NOTIFICATION_KEY_LEN..].copy_from_slice(&index.to_be_bytes());
    key
}

/// One notification as stored: its current record (updates applied) and every key it occupies.
/// `record` is `None` for updates whose notification is not there. The sweep deletes a
/// notification and its updates in one batch and nothing writes an update after that, so this
/// should never happen; it is tolerated (skipped by recovery, removed by the sweep) rather than
/// treated as corruption.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) record: Option<NotificationRecord>,
    pub(crate) keys: Vec<Vec<u8>>,
}

/// Every notification in `entries` (key-ordered `(key, value)` pairs of the `notifications`
/// keyspace), its delivery updates applied, as an iterator. A malformed key or record is
/// [`Error::Corrupt`] naming the key.
pub(crate) fn fold<I, K, V>(entries: I) -> Fold<I>
where
    I: Iterator<Item = Result<(K, V), Error>>,
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    Fold {
        entries,
        current: None,
    }
}

/// The iterator [`fold`] returns.
pub(crate) struct Fold<I> {
    entries: I,
    current: Option<Stored>,
}

impl<I, K, V> Iterator for Fold<I>
where
    I: Iterator<Item = Result<(K, V), Error>>,
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    type Item = Result<Stored, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Some(entry) = self.entries.next() else {
                return self.current.take().map(Ok);
            };
            match self.push(entry) {
                Ok(None) => {}
                Ok(Some(done)) => return Some(Ok(done)),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl<I> Fold<I> {
    /// Takes one entry; returns the previous notification once this entry starts another.
    fn push<K, V>(&mut self, entry: Result<(K, V), Error>) -> Result<Option<Stored>, Error>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let (key, value) = entry?;
        let (key, value) = (key.as_ref(), value.as_ref());
        let named = |e| name_key(Keyspace::Notifications, key, e);
        match key.len() {
            NOTIFICATION_KEY_LEN => {
                let n = NotificationRecord::decode(value).map_err(named)?;
                if n.id.as_bytes()[..] != key[..] {
                    return Err(named(Error::corrupt(format!("stored id {} differs", n.id))));
                }
                let next = Stored {
                    record: Some(n),
                    keys: vec![key.to_vec()],
                };
                Ok(self.current.replace(next))
            }
            UPDATE_KEY_LEN => {
                let same = self
                    .current
                    .as_ref()
                    .and_then(|s| s.keys.first())
                    .is_some_and(|k| k[..NOTIFICATION_KEY_LEN] == key[..NOTIFICATION_KEY_LEN]);
                let mut done = None;
                if !same {
                    done = self.current.replace(Stored {
                        record: None,
                        keys: Vec::new(),
                    });
                }
                if let Some(stored) = self.current.as_mut() {
                    if let Some(n) = stored.record.as_mut() {
                        let index = usize::from(u16::from_be_bytes([key[16], key[17]]));
                        let Some(d) = n.deliveries.get_mut(index) else {
                            let e = Error::corrupt(format!(
                                "update for delivery {index} of a notification with {}",
                                n.deliveries.len()
                            ));
                            return Err(named(e));
                        };
                        d.apply_update(value).map_err(named)?;
                    }
                    stored.keys.push(key.to_vec());
                }
                Ok(done)
            }
            n => Err(named(Error::corrupt(format!(
                "key of {n} bytes (expected {NOTIFICATION_KEY_LEN} or {UPDATE_KEY_LEN})"
            )))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Channel, DeliveryRecord, DeliveryState, NotificationContent};

    fn notification(n: u128, deliveries: usize) -> NotificationRecord {
        let id = Uuid::from_u128(n);
        NotificationRecord {
            id,
            user_id: "u".into(),
            idempotency_key: format!("k{n}"),
            accepted_at_ms: 1,
            content: NotificationContent::default(),
            deliveries: (0..deliveries)
                .map(|i| DeliveryRecord {
                    id: Uuid::from_u128(n * 100 + i as u128),
                    channel: Channel::Apns,
                    target: format!("t{i}"),
                    state: DeliveryState::Queued,
                    attempts: 0,
                    next_attempt_at_ms: None,
                    history: vec![],
                })
                .collect(),
        }
    }

    fn sent(d: &DeliveryRecord) -> Vec<u8> {
        let mut d = d.clone();
        d.state = DeliveryState::Sent;
        d.attempts = 1;
        d.encode_update()
    }

    fn collect(entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Vec<Stored>, Error> {
        fold(entries.into_iter().map(Ok)).collect()
    }

    #[test]
    fn updates_are_applied_to_the_notification_before_them() {
        let a = notification(1, 2);
        let b = notification(2, 1);
        let entries = vec![
            (a.id.as_bytes().to_vec(), a.encode()),
            (
                delivery_update_key(a.id, 1).to_vec(),
                sent(&a.deliveries[1]),
            ),
            (b.id.as_bytes().to_vec(), b.encode()),
            (
                delivery_update_key(b.id, 0).to_vec(),
                sent(&b.deliveries[0]),
            ),
        ];
        let out = collect(entries).expect("fold");
        assert_eq!(out.len(), 2);
        let ra = out[0].record.as_ref().expect("a");
        assert_eq!(ra.deliveries[0].state, DeliveryState::Queued);
        assert_eq!(ra.deliveries[1].state, DeliveryState::Sent);
        assert_eq!(
            ra.deliveries[1].target, "t1",
            "identity kept from the record"
        );
        assert_eq!(out[0].keys.len(), 2);
        assert!(out[1].record.as_ref().expect("b").is_finished());
    }

    #[test]
    fn updates_without_their_notification_are_reported_as_garbage() {
        let a = notification(1, 1);
        let b = notification(2, 1);
        let entries = vec![
            (
                delivery_update_key(a.id, 0).to_vec(),
                sent(&a.deliveries[0]),
            ),
            (b.id.as_bytes().to_vec(), b.encode()),
        ];
        let out = collect(entries).expect("fold");
        assert_eq!(out.len(), 2);
        assert!(out[0].record.is_none());
        assert_eq!(out[0].keys, vec![delivery_update_key(a.id, 0).to_vec()]);
        assert!(out[1].record.is_some());
    }

    #[test]
    fn bad_keys_and_out_of_range_updates_are_corrupt() {
        let a = notification(1, 1);
        let bad_len = vec![(vec![1, 2, 3], vec![2])];
        assert!(matches!(collect(bad_len), Err(Error::Corrupt { .. })));
        let out_of_range = vec![
            (a.id.as_bytes().to_vec(), a.encode()),
            (
                delivery_update_key(a.id, 5).to_vec(),
                sent(&a.deliveries[0]),
            ),
        ];
        assert!(matches!(collect(out_of_range), Err(Error::Corrupt { .. })));
        let garbage_update = vec![
            (a.id.as_bytes().to_vec(), a.encode()),
            (delivery_update_key(a.id, 0).to_vec(), vec![2, 99]),
        ];
        assert!(matches!(
            collect(garbage_update),
            Err(Error::Corrupt { .. })
        ));
    }
}
