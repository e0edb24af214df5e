//! [`DedupCache`]: a shard's newest idempotency keys, bounded in number, in front of the log's
//! `dedup` keyspace.
//!
//! It answers "seen within the window?" from memory for the keys it holds, and it knows when a
//! miss proves a key absent: when nothing it forgot for room (as opposed to expiry) is still
//! within the window, and nothing on disk predates it (see [`DedupCache::note_missing`]). Only a
//! miss it cannot prove needs the disk's answer (a claim with `check`, `log/claims.rs`).
//!
//! A [`SegMap`] answers lookups and a [`ChunkQueue`] in insertion order lets eviction and
//! [`DedupCache::expire`] drop the oldest keys in O(dropped) without scanning.

use uuid::Uuid;

use crate::chunk_queue::ChunkQueue;
use crate::segmap::SegMap;

/// Keys a shard's cache holds at most (about 100 bytes each: 6.5 MB per shard). At least twice
/// the accepts a shard may hold not yet durable (`MAX_UNDURABLE_ACCEPTS`, 32,768), so every key
/// whose notification is still on its way to disk is in memory and a duplicate of it is answered
/// without a read; and several seconds of a shard's peak rate, so a client's quick retries hit
/// memory. Recovery reads at most this many of the newest notifications back (about 100 ms).
pub const DEDUP_CACHE_KEYS: usize = 65_536;

#[derive(Clone, Copy, Debug)]
struct Entry {
    id: Uuid,
    /// When the notification was accepted: the key lives until `at_ms + window`.
    at_ms: u64,
    /// Its place in `order` (insertion times are kept non-decreasing there).
    queued_ms: u64,
}

/// The newest idempotency keys of a shard, each with the notification id it produced.
#[derive(Debug)]
pub struct DedupCache {
    window_ms: u64,
    capacity: usize,
    map: SegMap<u128, Entry>,
    /// (queued time, key), non-decreasing; may hold stale entries for re-inserted keys.
    order: ChunkQueue<(u64, u128)>,
    /// The newest accept time of a key that may be on disk but not here (evicted for room, or
    /// not read back at recovery). `None`: every key within the window that exists is here.
    missing_newest_ms: Option<u64>,
}

impl DedupCache {
    /// An empty cache for keys living `window_ms`, holding at most `capacity` keys.
    #[must_use]
    pub fn new(window_ms: u64, capacity: usize) -> Self {
        DedupCache {
            window_ms,
            capacity: capacity.max(1),
            map: SegMap::new(),
            order: ChunkQueue::new(),
            missing_newest_ms: None,
        }
    }

    /// The window keys live for.
    #[must_use]
    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    /// Whether a key accepted at `at_ms` is still within the window at `now_ms`.
    #[must_use]
    pub fn is_live(window_ms: u64, at_ms: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(at_ms) < window_ms
    }

    /// The notification id accepted under `key`, if the cache holds it and it is still within
    /// the window at `now_ms`.
    #[must_use]
    pub fn get(&self, key: u128, now_ms: u64) -> Option<Uuid> {
        self.map
            .get(&key)
            .filter(|e| Self::is_live(self.window_ms, e.at_ms, now_ms))
            .map(|e| e.id)
    }

    /// Whether a key the cache does not hold is known not to be within the window at `now_ms`
    /// anywhere (so the disk need not be asked).
    #[must_use]
    pub fn proves_absent(&self, now_ms: u64) -> bool {
        self.missing_newest_ms
            .is_none_or(|at| !Self::is_live(self.window_ms, at, now_ms))
    }

    /// Keys accepted up to `at_ms` may be on disk without being here (recovery read back only
    /// the newest ones).
    pub fn note_missing(&mut self, at_ms: u64) {
        self.missing_newest_ms = Some(self.missing_newest_ms.map_or(at_ms, |t| t.max(at_ms)));
    }

    /// Records that `key` produced `id`, accepted at `at_ms`, replacing any earlier entry for
    /// `key`; forgets the oldest keys beyond the capacity.
    pub fn insert(&mut self, key: u128, id: Uuid, at_ms: u64) {
        // The queue is kept in non-decreasing order: an older time queues as the newest one's,
        // which can only keep the entry a little longer (its liveness uses `at_ms`).
        let queued_ms = match self.order.back() {
            Some(&(newest, _)) if newest > at_ms => newest,
            _ => at_ms,
        };
        self.map.insert(
            key,
            Entry {
                id,
                at_ms,
                queued_ms,
            },
        );
        self.order.push_back((queued_ms, key));
        while self.map.len() > self.capacity {
            let Some((queued, key)) = self.order.pop_front() else {
                break;
            };
            if let Some(e) = self.current(key, queued) {
                let at = e.at_ms;
                self.map.remove(&key);
                self.note_missing(at);
            }
        }
    }

    /// The map's entry for `key` if `queued` is its current place in the queue.
    fn current(&self, key: u128, queued: u64) -> Option<Entry> {
        self.map
            .get(&key)
            .copied()
            .filter(|e| e.queued_ms == queued)
    }

    /// Forgets `key` now (its write failed, so a client retry must not be answered with an id
    /// that was never made durable). Returns the id it mapped to. Its queue entry stays behind
    /// and is skipped.
    pub fn remove(&mut self, key: u128) -> Option<Uuid> {
        self.map.remove(&key).map(|e| e.id)
    }

    /// Forgets every key queued more than the window before `now_ms`; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let mut expired = 0;
        while let Some(&(queued, key)) = self.order.front() {
            if Self::is_live(self.window_ms, queued, now_ms) {
                break;
            }
            self.order.pop_front();
            if self.current(key, queued).is_some() {
                self.map.remove(&key);
                expired += 1;
            }
        }
        if self.proves_absent(now_ms) {
            self.missing_newest_ms = None;
        }
        expired
    }

    /// Number of keys held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no keys are held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Most keys held at once.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn get_insert_and_replace() {
        let mut s = DedupCache::new(1000, 16);
        assert_eq!(s.get(1, 0), None);
        s.insert(1, id(10), 0);
        s.insert(2, id(20), 5);
        assert_eq!(s.get(1, 5), Some(id(10)));
        assert_eq!(s.len(), 2);
        s.insert(1, id(11), 6);
        assert_eq!(s.get(1, 6), Some(id(11)));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn a_key_older_than_the_window_is_not_returned_even_before_expiry() {
        let mut s = DedupCache::new(100, 16);
        s.insert(1, id(1), 0);
        assert_eq!(s.get(1, 99), Some(id(1)));
        assert_eq!(s.get(1, 100), None, "the window is [at, at + window)");
    }

    #[test]
    fn expire_drops_exactly_the_old_keys() {
        let mut s = DedupCache::new(100, 64);
        for t in 0..10u64 {
            s.insert(u128::from(t), id(u128::from(t)), t * 10);
        }
        // At 150 the keys accepted before 51 are out of the window: times 0..=50 go.
        assert_eq!(s.expire(150), 6);
        assert_eq!(s.len(), 4);
        assert_eq!(s.get(5, 150), None);
        assert_eq!(s.get(6, 150), Some(id(6)));
        assert_eq!(s.expire(150), 0);
        assert_eq!(s.expire(10_000), 4);
        assert!(s.is_empty());
        assert!(s.order.is_empty());
    }

    #[test]
    fn reinserted_key_lives_from_its_latest_insert() {
        let mut s = DedupCache::new(100, 16);
        s.insert(7, id(1), 0);
        s.insert(7, id(2), 90);
        assert_eq!(
            s.expire(120),
            0,
            "the stale queue entry must not remove the fresh key"
        );
        assert_eq!(s.get(7, 120), Some(id(2)));
        assert_eq!(s.expire(191), 1);
        assert_eq!(s.get(7, 191), None);
    }

    #[test]
    fn removed_key_is_gone_and_expiry_skips_it() {
        let mut s = DedupCache::new(100, 16);
        s.insert(1, id(1), 0);
        s.insert(2, id(2), 10);
        assert_eq!(s.remove(1), Some(id(1)));
        assert_eq!(s.remove(1), None);
        assert_eq!(s.get(1, 10), None);
        assert_eq!(s.len(), 1);
        s.insert(1, id(3), 50);
        assert_eq!(s.expire(111), 1, "only key 2 (t=10) expires");
        assert_eq!(s.get(1, 111), Some(id(3)));
        assert_eq!(s.expire(151), 1);
        assert!(s.is_empty());
        assert!(
            s.proves_absent(151),
            "a removal forgets nothing that is on disk"
        );
    }

    #[test]
    fn eviction_keeps_the_newest_and_remembers_what_may_be_missing() {
        let mut s = DedupCache::new(1_000, 3);
        assert!(s.proves_absent(0));
        for t in 0..5u64 {
            s.insert(u128::from(t), id(u128::from(t)), t);
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.get(0, 5), None);
        assert_eq!(s.get(1, 5), None);
        assert_eq!(s.get(4, 5), Some(id(4)));
        // Key 1 (accepted at 1) may be on disk until 1 + 1000.
        assert!(!s.proves_absent(1_000));
        assert!(s.proves_absent(1_001));
        s.expire(1_001);
        assert!(s.proves_absent(1_001));
    }

    #[test]
    fn a_stale_queue_entry_is_not_counted_as_an_eviction() {
        let mut s = DedupCache::new(1_000, 2);
        s.insert(1, id(1), 0);
        s.insert(1, id(2), 1); // re-insert: the first queue entry is stale
        s.insert(2, id(3), 2);
        assert_eq!(s.len(), 2);
        assert!(s.proves_absent(2), "nothing was forgotten for room");
        s.insert(3, id(4), 3);
        assert_eq!(s.get(1, 3), None, "key 1 is the oldest live key");
        assert!(!s.proves_absent(3));
    }

    #[test]
    fn note_missing_keeps_the_newest_time() {
        let mut s = DedupCache::new(100, 8);
        s.note_missing(50);
        s.note_missing(20);
        assert!(!s.proves_absent(149));
        assert!(s.proves_absent(150));
    }

    #[test]
    fn out_of_order_insert_queues_forward_but_lives_by_its_own_time() {
        let mut s = DedupCache::new(100, 8);
        s.insert(1, id(1), 500);
        s.insert(2, id(2), 400);
        assert_eq!(s.get(2, 499), Some(id(2)));
        assert_eq!(
            s.get(2, 500),
            None,
            "accepted at 400: out of the window at 500"
        );
        assert_eq!(s.expire(599), 0);
        assert_eq!(s.expire(601), 2);
    }
}
