//! Dedup claims: how a new notification's idempotency key is checked against the `dedup`
//! keyspace and written there, atomically with the notification, by the storage thread.
//!
//! A shard marks a notification's writes in its [`WriteBatch`](super::WriteBatch) as *claimed*
//! by its key ([`DedupClaim`]). The storage thread, which applies every write of the shard in
//! order, decides each claim before applying its writes: if the keyspace (or an earlier claim of
//! the same group, not yet committed) holds the key for another notification accepted within
//! the window, the claim is *lost*: its writes are skipped and the shard is told which
//! notification the key already belongs to ([`LostClaim`]); otherwise the writes go in with the
//! key's entry. Checking on the storage thread, in write order, needs no lock and no extra
//! round trip, and two claims of one key can never both win.
//!
//! An entry is `keyed hash (16 bytes, big-endian) → notification id (16) ++ accepted_at_ms (8,
//! big-endian)`. Entries outside the window count as absent (a claim overwrites them); the
//! retention sweep deletes a notification's entry with it.

use std::collections::HashMap;
use std::ops::Range;

use uuid::Uuid;

use crate::dedup::DedupCache;
use crate::error::Error;

/// A new notification's claim on its idempotency key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DedupClaim {
    /// The key ([`DedupHasher::key`](crate::DedupHasher::key)).
    pub hash: u128,
    /// The notification that claims it.
    pub id: Uuid,
    /// When it was accepted: the window is measured from here.
    pub at_ms: u64,
    /// Whether the keyspace must be read: `false` when the shard's cache proves the key absent
    /// ([`DedupCache::proves_absent`]), so the claim only writes its entry.
    pub check: bool,
}

/// A claim that found its key taken: nothing of its notification was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LostClaim {
    pub hash: u128,
    /// The notification that claimed the key and was not written.
    pub claimed: Uuid,
    /// The notification the key belongs to.
    pub existing: Uuid,
    /// When that one was accepted.
    pub existing_at_ms: u64,
}

/// What a durable write reports back: the claims it lost (usually none; no allocation then).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    pub lost: Vec<LostClaim>,
}

impl Committed {
    /// The lost claim of notification `id`, if its claim was lost. `lost` must be sorted by
    /// `claimed` ([`Committed::sort`]).
    #[must_use]
    pub fn lost_claim(&self, id: Uuid) -> Option<&LostClaim> {
        self.lost
            .binary_search_by_key(&id, |l| l.claimed)
            .ok()
            .and_then(|i| self.lost.get(i))
    }

    /// Sorts the lost claims for [`Committed::lost_claim`].
    pub fn sort(&mut self) {
        self.lost.sort_unstable_by_key(|l| l.claimed);
    }
}

/// A claim inside a batch, with the range of the batch's ops it guards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Claim {
    pub(crate) claim: DedupClaim,
    pub(crate) ops: Range<usize>,
}

/// Bytes of an entry's value.
pub(crate) const ENTRY_VALUE_LEN: usize = 24;

/// The entry's key for `hash`.
#[must_use]
pub(crate) fn entry_key(hash: u128) -> [u8; 16] {
    hash.to_be_bytes()
}

/// The entry's value: the notification and when it was accepted.
#[must_use]
pub(crate) fn entry_value(id: Uuid, at_ms: u64) -> [u8; ENTRY_VALUE_LEN] {
    let mut v = [0u8; ENTRY_VALUE_LEN];
    v[..16].copy_from_slice(id.as_bytes());
    v[16..].copy_from_slice(&at_ms.to_be_bytes());
    v
}

/// Decodes an entry's value.
pub(crate) fn decode_entry(value: &[u8]) -> Result<(Uuid, u64), Error> {
    let v: &[u8; ENTRY_VALUE_LEN] = value.try_into().map_err(|_| {
        Error::corrupt(format!(
            "dedup entry: expected {ENTRY_VALUE_LEN} bytes, found {}",
            value.len()
        ))
    })?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&v[..16]);
    let mut at = [0u8; 8];
    at.copy_from_slice(&v[16..]);
    Ok((Uuid::from_bytes(id), u64::from_be_bytes(at)))
}

/// Decides a group's claims in order: the keys claimed by this group so far (not yet readable
/// from fjall until the group's batch commits) in front of the keyspace.
pub(crate) struct Referee {
    window_ms: u64,
    group: HashMap<u128, (Uuid, u64), foldhash::fast::RandomState>,
    /// Claims decided by a read of the keyspace.
    pub(crate) reads: u64,
    /// Claims lost.
    pub(crate) lost: u64,
}

impl Referee {
    pub(crate) fn new(window_ms: u64) -> Self {
        Referee {
            window_ms,
            group: HashMap::default(),
            reads: 0,
            lost: 0,
        }
    }

    /// Decides `claim` against `keyspace` (the `dedup` keyspace): `Ok(None)` when it wins (its
    /// writes go in), the lost claim otherwise. A corrupt entry counts as absent (the claim
    /// overwrites it); a read error is an error.
    pub(crate) fn decide(
        &mut self,
        keyspace: &fjall::Keyspace,
        claim: &DedupClaim,
    ) -> Result<Option<LostClaim>, Error> {
        let holder = match self.group.get(&claim.hash) {
            Some(&held) => Some(held),
            None if claim.check => {
                self.reads += 1;
                match keyspace.get(entry_key(claim.hash))? {
                    Some(v) => decode_entry(&v).ok(),
                    None => None,
                }
            }
            None => None,
        };
        if let Some((existing, at)) = holder {
            let live = DedupCache::is_live(self.window_ms, at, claim.at_ms);
            if live && existing != claim.id {
                self.lost += 1;
                return Ok(Some(LostClaim {
                    hash: claim.hash,
                    claimed: claim.id,
                    existing,
                    existing_at_ms: at,
                }));
            }
        }
        self.group.insert(claim.hash, (claim.id, claim.at_ms));
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_reject_other_lengths() {
        let id = Uuid::from_u128(0x0123_4567_89ab_7def_8123_4567_89ab_cdef);
        let v = entry_value(id, 1_700_000_000_123);
        assert_eq!(decode_entry(&v).unwrap(), (id, 1_700_000_000_123));
        assert!(decode_entry(&v[..23]).is_err());
        assert!(decode_entry(&[0u8; 25]).is_err());
        assert_eq!(
            entry_key(1),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        );
    }

    #[test]
    fn lost_claims_are_found_by_the_notification_that_lost() {
        let lost = |n: u128| LostClaim {
            hash: n,
            claimed: Uuid::from_u128(n),
            existing: Uuid::from_u128(n + 100),
            existing_at_ms: 0,
        };
        let mut c = Committed {
            lost: vec![lost(9), lost(3), lost(5)],
        };
        c.sort();
        assert_eq!(
            c.lost_claim(Uuid::from_u128(5)).unwrap().existing,
            Uuid::from_u128(105)
        );
        assert!(c.lost_claim(Uuid::from_u128(4)).is_none());
        assert!(
            Committed::default()
                .lost_claim(Uuid::from_u128(1))
                .is_none()
        );
    }
}
