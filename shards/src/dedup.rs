//! Client idempotency keys seen by this shard within the dedup window, so a client retry of an
//! accepted notification gets the original id back instead of a second send.
//!
//! Memory is bounded by the window: a [`SegMap`] answers lookups, and a [`ChunkQueue`] in
//! insertion (time) order lets [`DedupSet::expire`] drop old keys in O(expired) without scanning.
//! Both grow in small steps, so a set of millions of keys never stalls the shard to grow. On
//! restart the set is rebuilt from the log's `Recovered::recent`.

use uuid::Uuid;

use crate::chunk_queue::ChunkQueue;
use crate::routing::{fnv1a64, splitmix64_mix};
use crate::segmap::SegMap;

/// A stable 128-bit key for `(user_id, idempotency_key)`: two independent 64-bit hashes of the
/// length-prefixed pair (so `("ab","c")` and `("a","bc")` differ). Stable across processes.
#[must_use]
pub fn dedup_key(user_id: &str, idempotency_key: &str) -> u128 {
    let len = 8 + user_id.len() + idempotency_key.len();
    let fill = |buf: &mut [u8]| {
        let (prefix, rest) = buf.split_at_mut(8);
        prefix.copy_from_slice(&(user_id.len() as u64).to_le_bytes());
        let (user, key) = rest.split_at_mut(user_id.len());
        user.copy_from_slice(user_id.as_bytes());
        key.copy_from_slice(idempotency_key.as_bytes());
    };
    let hash = |buf: &[u8]| {
        let hi = splitmix64_mix(fnv1a64(buf));
        (u128::from(hi) << 64) | u128::from(word_hash(buf))
    };
    // Typical ids fit on the stack: no allocation per notification.
    let mut stack = [0u8; 256];
    if let Some(buf) = stack.get_mut(..len) {
        fill(buf);
        return hash(buf);
    }
    let mut heap = vec![0u8; len];
    fill(&mut heap);
    hash(&heap)
}

/// A second 64-bit hash, structurally unlike FNV: 8-byte words, multiply and murmur3's fmix64.
fn word_hash(bytes: &[u8]) -> u64 {
    const SEED: u64 = 0x243f_6a88_85a3_08d3; // pi's fractional bits
    const MUL: u64 = 0x9e37_79b9_7f4a_7c15;
    let fmix = |mut k: u64| {
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        k ^ (k >> 33)
    };
    let mut h = SEED ^ (bytes.len() as u64).wrapping_mul(MUL);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = fmix(h ^ u64::from_le_bytes(w).wrapping_mul(MUL)).rotate_left(27);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = fmix(h ^ u64::from_le_bytes(w).wrapping_mul(MUL)).rotate_left(27);
    }
    fmix(h)
}

/// Idempotency keys accepted within the last `window_ms`, with the notification id each produced.
#[derive(Debug)]
pub struct DedupSet {
    window_ms: u64,
    /// key -> (notification id, time it was recorded at)
    map: SegMap<u128, (Uuid, u64)>,
    /// (time, key) in non-decreasing time order; may hold stale entries for re-inserted keys.
    order: ChunkQueue<(u64, u128)>,
}

impl DedupSet {
    /// An empty set remembering keys for `window_ms`.
    #[must_use]
    pub fn new(window_ms: u64) -> Self {
        DedupSet {
            window_ms,
            map: SegMap::new(),
            order: ChunkQueue::new(),
        }
    }

    /// The window this set remembers keys for.
    #[must_use]
    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    /// The notification id accepted under `key`, if it is still within the window (as of the last
    /// [`DedupSet::expire`]).
    #[must_use]
    pub fn get(&self, key: u128) -> Option<Uuid> {
        self.map.get(&key).map(|&(id, _)| id)
    }

    /// Records that `key` produced `id` at `at_ms`, replacing any earlier entry for `key`.
    ///
    /// Times are kept non-decreasing: an `at_ms` older than the newest entry is treated as the
    /// newest entry's time, which can only keep a key a little longer, never shorter.
    pub fn insert(&mut self, key: u128, id: Uuid, at_ms: u64) {
        let at_ms = match self.order.back() {
            Some(&(newest, _)) if newest > at_ms => newest,
            _ => at_ms,
        };
        self.map.insert(key, (id, at_ms));
        self.order.push_back((at_ms, key));
    }

    /// Forgets `key` now (for example when the write that accepted it failed, so a client retry
    /// must not be answered with an id that was never made durable). Returns the id it mapped to.
    /// The key's time-queue entry stays behind and is skipped by [`DedupSet::expire`].
    pub fn remove(&mut self, key: u128) -> Option<Uuid> {
        self.map.remove(&key).map(|(id, _)| id)
    }

    /// Forgets every key recorded more than `window_ms` before `now_ms`; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let cutoff = now_ms.saturating_sub(self.window_ms);
        let mut expired = 0;
        while let Some(&(at_ms, key)) = self.order.front() {
            if at_ms >= cutoff {
                break;
            }
            self.order.pop_front();
            // Only remove the map entry if this queue entry is the current one for the key.
            if self.map.get(&key).is_some_and(|&(_, t)| t == at_ms) {
                self.map.remove(&key);
                expired += 1;
            }
        }
        expired
    }

    /// Number of keys currently remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no keys are remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn dedup_key_is_the_hash_of_the_length_prefixed_pair_short_or_long() {
        let reference = |user_id: &str, key: &str| {
            let mut buf = (user_id.len() as u64).to_le_bytes().to_vec();
            buf.extend_from_slice(user_id.as_bytes());
            buf.extend_from_slice(key.as_bytes());
            (u128::from(splitmix64_mix(fnv1a64(&buf))) << 64) | u128::from(word_hash(&buf))
        };
        let long = "u".repeat(300);
        for (user_id, key) in [("user-1", "order-42"), ("", ""), (long.as_str(), "k")] {
            assert_eq!(
                dedup_key(user_id, key),
                reference(user_id, key),
                "{user_id:.8}"
            );
        }
        // Exactly the stack buffer's size, and one past it.
        let edge = "e".repeat(256 - 8 - 1);
        assert_eq!(dedup_key(&edge, "k"), reference(&edge, "k"));
        assert_eq!(dedup_key(&edge, "kk"), reference(&edge, "kk"));
    }

    #[test]
    fn dedup_key_is_stable_and_unambiguous() {
        let k = dedup_key("user-1", "order-42");
        assert_eq!(k, dedup_key("user-1", "order-42"));
        assert_ne!(k, dedup_key("user-2", "order-42"));
        assert_ne!(dedup_key("ab", "c"), dedup_key("a", "bc"));
        assert_ne!(dedup_key("", ""), 0);
        // Both halves carry information.
        let (a, b) = (dedup_key("u", "1"), dedup_key("u", "2"));
        assert_ne!(a >> 64, b >> 64);
        assert_ne!(a as u64, b as u64);
    }

    #[test]
    fn no_collisions_in_a_million_keys() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..1_000_000u32 {
            assert!(
                seen.insert(dedup_key("user", &i.to_string())),
                "collision at {i}"
            );
        }
    }

    #[test]
    fn get_insert_and_replace() {
        let mut s = DedupSet::new(1000);
        assert_eq!(s.get(1), None);
        s.insert(1, id(10), 0);
        s.insert(2, id(20), 5);
        assert_eq!(s.get(1), Some(id(10)));
        assert_eq!(s.len(), 2);
        s.insert(1, id(11), 6);
        assert_eq!(s.get(1), Some(id(11)));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn expire_drops_exactly_the_old_keys() {
        let mut s = DedupSet::new(100);
        for t in 0..10u64 {
            s.insert(u128::from(t), id(u128::from(t)), t * 10);
        }
        // cutoff = 150 - 100 = 50: times 0..=40 go, 50.. stay.
        assert_eq!(s.expire(150), 5);
        assert_eq!(s.len(), 5);
        assert_eq!(s.get(4), None);
        assert_eq!(s.get(5), Some(id(5)));
        assert_eq!(s.expire(150), 0);
        assert_eq!(s.expire(10_000), 5);
        assert!(s.is_empty());
        assert!(s.order.is_empty());
    }

    #[test]
    fn reinserted_key_lives_from_its_latest_insert() {
        let mut s = DedupSet::new(100);
        s.insert(7, id(1), 0);
        s.insert(7, id(2), 90);
        assert_eq!(
            s.expire(120),
            0,
            "the stale queue entry must not remove the fresh key"
        );
        assert_eq!(s.get(7), Some(id(2)));
        assert_eq!(s.expire(191), 1);
        assert_eq!(s.get(7), None);
    }

    #[test]
    fn removed_key_is_gone_and_expiry_skips_it() {
        let mut s = DedupSet::new(100);
        s.insert(1, id(1), 0);
        s.insert(2, id(2), 10);
        assert_eq!(s.remove(1), Some(id(1)));
        assert_eq!(s.remove(1), None);
        assert_eq!(s.get(1), None);
        assert_eq!(s.len(), 1);
        // Re-accepted later: lives from the new insert, the stale queue entry is harmless.
        s.insert(1, id(3), 50);
        assert_eq!(s.expire(111), 1, "only key 2 (t=10) expires");
        assert_eq!(s.get(1), Some(id(3)));
        assert_eq!(s.expire(151), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn out_of_order_insert_is_clamped_forward() {
        let mut s = DedupSet::new(100);
        s.insert(1, id(1), 500);
        s.insert(2, id(2), 400);
        assert_eq!(s.expire(599), 0);
        assert_eq!(s.expire(601), 2);
    }
}
