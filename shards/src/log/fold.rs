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
///
/// Entries that do not decode are in `corrupt`, not in `keys`: a notification record that does
/// not decode (then `record` is `None` and its updates are in `corrupt` too, meaningless without
/// it), a delivery update that does not (its delivery keeps its state before that update), a key
/// of neither length. Readers that write move them to quarantine (`log/quarantine.rs`).
#[derive(Debug, Default)]
pub(crate) struct Stored {
    pub(crate) record: Option<NotificationRecord>,
    pub(crate) keys: Vec<Vec<u8>>,
    pub(crate) corrupt: Vec<CorruptEntry>,
}

/// A stored entry that did not decode: its raw key and value, and why ([`Error::Corrupt`]
/// naming the key).
#[derive(Debug)]
pub(crate) struct CorruptEntry {
    pub(crate) key: Vec<u8>,
    pub(crate) value: Vec<u8>,
    pub(crate) why: Error,
}

impl Stored {
    /// The notification these entries belong to, from their keys.
    pub(crate) fn id(&self) -> Option<Uuid> {
        Uuid::from_slice(self.id_prefix()?).ok()
    }

    /// The 16 id bytes this notification's entries share.
    fn id_prefix(&self) -> Option<&[u8]> {
        let first = self.keys.first().or(self.corrupt.first().map(|c| &c.key))?;
        first.get(..NOTIFICATION_KEY_LEN)
    }

    /// Whether the notification's own record is among the corrupt entries.
    fn record_is_corrupt(&self) -> bool {
        self.corrupt
            .iter()
            .any(|c| c.key.len() == NOTIFICATION_KEY_LEN)
    }
}

/// Every notification in `entries` (key-ordered `(key, value)` pairs of the `notifications`
/// keyspace), its delivery updates applied, as an iterator. Entries that do not decode are
/// listed in [`Stored::corrupt`]; an `Err` is only a failed read.
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
        let corrupt = |e| CorruptEntry {
            key: key.to_vec(),
            value: value.to_vec(),
            why: name_key(Keyspace::Notifications, key, e),
        };
        match key.len() {
            NOTIFICATION_KEY_LEN => {
                let mut next = Stored::default();
                match NotificationRecord::decode(value) {
                    Ok(n) if n.id.as_bytes()[..] == key[..] => {
                        next.record = Some(n);
                        next.keys.push(key.to_vec());
                    }
                    Ok(n) => {
                        let why = Error::corrupt(format!("stored id {} differs", n.id));
                        next.corrupt.push(corrupt(why));
                    }
                    Err(e) => next.corrupt.push(corrupt(e)),
                }
                Ok(self.current.replace(next))
            }
            UPDATE_KEY_LEN => {
                let same = self
                    .current
                    .as_ref()
                    .and_then(Stored::id_prefix)
                    .is_some_and(|p| p == &key[..NOTIFICATION_KEY_LEN]);
                let mut done = None;
                if !same {
                    done = self.current.replace(Stored::default());
                }
                let Some(stored) = self.current.as_mut() else {
                    return Ok(done);
                };
                if let Some(n) = stored.record.as_mut() {
                    let index = usize::from(u16::from_be_bytes([key[16], key[17]]));
                    let applied = match n.deliveries.get_mut(index) {
                        Some(d) => d.apply_update(value),
                        None => Err(Error::corrupt(format!(
                            "update for delivery {index} of a notification with {}",
                            n.deliveries.len()
                        ))),
                    };
                    match applied {
                        Ok(()) => stored.keys.push(key.to_vec()),
                        Err(e) => stored.corrupt.push(corrupt(e)),
                    }
                } else if stored.record_is_corrupt() {
                    let why = Error::corrupt("the record of its notification is corrupt");
                    stored.corrupt.push(corrupt(why));
                } else {
                    stored.keys.push(key.to_vec());
                }
                Ok(done)
            }
            n => {
                let why = Error::corrupt(format!(
                    "key of {n} bytes (expected {NOTIFICATION_KEY_LEN} or {UPDATE_KEY_LEN})"
                ));
                // Kept with the notification being read, so the updates after it still find it.
                let stored = self.current.get_or_insert_with(Stored::default);
                stored.corrupt.push(corrupt(why));
                Ok(None)
            }
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

    fn corrupt_keys(s: &Stored) -> Vec<Vec<u8>> {
        s.corrupt.iter().map(|c| c.key.clone()).collect()
    }

    #[test]
    fn bad_keys_and_undecodable_updates_are_set_aside_and_the_rest_kept() {
        let a = notification(1, 2);
        let b = notification(2, 1);
        let entries = vec![
            (a.id.as_bytes().to_vec(), a.encode()),
            (vec![1, 2, 3], vec![2]),
            (
                delivery_update_key(a.id, 0).to_vec(),
                sent(&a.deliveries[0]),
            ),
            (delivery_update_key(a.id, 1).to_vec(), vec![2, 99]),
            (
                delivery_update_key(a.id, 5).to_vec(),
                sent(&a.deliveries[0]),
            ),
            (b.id.as_bytes().to_vec(), b.encode()),
        ];
        let out = collect(entries).expect("fold");
        assert_eq!(out.len(), 2);
        let ra = out[0].record.as_ref().expect("a is kept");
        assert_eq!(
            ra.deliveries[0].state,
            DeliveryState::Sent,
            "a good update applies"
        );
        assert_eq!(
            ra.deliveries[1].state,
            DeliveryState::Queued,
            "a bad one does not"
        );
        assert_eq!(
            out[0].keys,
            vec![
                a.id.as_bytes().to_vec(),
                delivery_update_key(a.id, 0).to_vec()
            ]
        );
        assert_eq!(
            corrupt_keys(&out[0]),
            vec![
                vec![1, 2, 3],
                delivery_update_key(a.id, 1).to_vec(),
                delivery_update_key(a.id, 5).to_vec()
            ]
        );
        assert!(
            matches!(out[0].corrupt[2].why, Error::Corrupt { ref what } if what.contains("delivery 5"))
        );
        assert!(out[1].record.is_some() && out[1].corrupt.is_empty());
    }

    #[test]
    fn a_corrupt_notification_takes_its_updates_along() {
        let a = notification(1, 1);
        let b = notification(2, 1);
        let bad = b"\x02\xff\xff".to_vec();
        let entries = vec![
            (a.id.as_bytes().to_vec(), bad.clone()),
            (
                delivery_update_key(a.id, 0).to_vec(),
                sent(&a.deliveries[0]),
            ),
            (b.id.as_bytes().to_vec(), b.encode()),
        ];
        let out = collect(entries).expect("fold");
        assert_eq!(out.len(), 2);
        assert!(out[0].record.is_none() && out[0].keys.is_empty());
        assert_eq!(
            corrupt_keys(&out[0]),
            vec![
                a.id.as_bytes().to_vec(),
                delivery_update_key(a.id, 0).to_vec()
            ]
        );
        assert_eq!(out[0].corrupt[0].value, bad, "the raw bytes are kept");
        assert!(
            matches!(out[0].corrupt[0].why, Error::Corrupt { ref what } if what.contains(&a.id.to_string()))
        );
        assert!(out[1].record.is_some());
    }
}
