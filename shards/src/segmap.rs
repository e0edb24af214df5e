//! [`SegMap`]: a hash map split into [`SEGMENTS`] independent tables, for the per-shard maps that
//! grow to millions of entries (idempotency keys, users, open notifications, token buckets).
//!
//! A single `HashMap` grows by doubling, and the doubling rehashes every entry at once: at a few
//! hundred thousand entries that is a 40 ms stall of the shard's executor (measured), and at the
//! millions a day's dedup window holds it is most of a second, plus a transient second copy of
//! the table. Split by one byte of the key's hash, each segment grows on its own, so one growth
//! step moves 1/[`SEGMENTS`] of the entries, and the segments reach their thresholds at different
//! inserts. Hashing is foldhash with a per-map random seed: several times cheaper than SipHash on
//! these short keys while still not predictable from outside.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

use crate::routing::splitmix64_mix;

/// Number of segments. 256 keeps a growth step under a millisecond up to ~50 million entries
/// while costing a few KB when empty.
pub const SEGMENTS: usize = 256;
// The segment is chosen by one byte of the hash.
const _: () = assert!(SEGMENTS <= 256);

type Hasher = foldhash::fast::RandomState;

/// A present entry of a [`SegMap`], from [`SegMap::occupied`].
#[derive(Debug)]
pub struct Occupied<'a, K, V> {
    entry: std::collections::hash_map::OccupiedEntry<'a, K, V>,
    len: &'a mut usize,
}

impl<K, V> Occupied<'_, K, V> {
    /// The entry's value.
    pub fn get_mut(&mut self) -> &mut V {
        self.entry.get_mut()
    }

    /// Removes the entry; returns its value.
    pub fn remove(self) -> V {
        *self.len -= 1;
        self.entry.remove()
    }
}

/// A hash map of `K` to `V` made of [`SEGMENTS`] separately growing tables.
#[derive(Clone, Debug)]
pub struct SegMap<K, V> {
    hasher: Hasher,
    segments: Box<[HashMap<K, V, Hasher>]>,
    len: usize,
}

impl<K: Hash + Eq, V> Default for SegMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq, V> SegMap<K, V> {
    /// An empty map.
    #[must_use]
    pub fn new() -> Self {
        let hasher = Hasher::default();
        let segments = (0..SEGMENTS)
            .map(|_| HashMap::with_hasher(hasher.clone()))
            .collect();
        SegMap {
            hasher,
            segments,
            len: 0,
        }
    }

    fn segment<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        // The table inside the segment hashes the key again with the same hasher and uses the
        // low bits for the bucket and the top 7 bits as each entry's tag, so the segment must
        // not be correlated with either. Choosing segments by those top bits gave every key in a segment
        // the same tag, so every probe compared keys one by one (measured: 5% of a shard in
        // `Uuid::eq`). Bits 48..56 taken as they are still followed the tag under some seeds
        // (a test failed about 1 run in 25), and so did a second `RandomState`'s hash: seeds
        // made one after the other are related. A strong bijective mix of the hash is not.
        usize::from((splitmix64_mix(self.hasher.hash_one(key)) >> 56) as u8) % SEGMENTS
    }

    /// The value for `key`.
    #[must_use]
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.segments[self.segment(key)].get(key)
    }

    /// The value for `key`, mutably.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let s = self.segment(key);
        self.segments[s].get_mut(key)
    }

    /// True when `key` is present.
    #[must_use]
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let s = self.segment(&key);
        let old = self.segments[s].insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// The value for `key`, inserting `make()` first when there is none.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let s = self.segment(&key);
        let seg = &mut self.segments[s];
        match seg.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let value = e.insert(make());
                self.len += 1;
                value
            }
        }
    }

    /// The entry for `key`, if there is one: change it, then keep or remove it, with one lookup.
    pub fn occupied(&mut self, key: K) -> Option<Occupied<'_, K, V>> {
        let s = self.segment(&key);
        match self.segments[s].entry(key) {
            std::collections::hash_map::Entry::Occupied(entry) => Some(Occupied {
                entry,
                len: &mut self.len,
            }),
            std::collections::hash_map::Entry::Vacant(_) => None,
        }
    }

    /// Removes `key`; returns its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let s = self.segment(key);
        let old = self.segments[s].remove(key);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the map is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.segments.iter().flat_map(HashMap::iter)
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.segments.iter().flat_map(HashMap::values)
    }

    /// Keeps only the entries `keep` answers true for.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        for seg in self.segments.iter_mut() {
            seg.retain(|k, v| keep(k, v));
        }
        self.len = self.segments.iter().map(HashMap::len).sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_hash_map() {
        let mut m: SegMap<String, u32> = SegMap::new();
        assert!(m.is_empty());
        for i in 0..10_000u32 {
            assert_eq!(m.insert(format!("k{i}"), i), None);
        }
        assert_eq!(m.len(), 10_000);
        assert_eq!(m.insert("k7".into(), 70), Some(7));
        assert_eq!(m.len(), 10_000);
        assert_eq!(m.get("k7"), Some(&70));
        assert!(m.contains_key("k9999"));
        assert!(!m.contains_key("k10000"));
        *m.get_mut("k1").expect("k1") += 1;
        assert_eq!(*m.get_or_insert_with("k1".into(), || 99), 2);
        assert_eq!(*m.get_or_insert_with("new".into(), || 99), 99);
        assert_eq!(m.len(), 10_001);
        assert_eq!(m.remove("new"), Some(99));
        assert_eq!(m.get("k1"), Some(&2));
        assert_eq!(m.remove("k1"), Some(2));
        assert_eq!(m.remove("k1"), None);
        assert_eq!(m.len(), 9_999);
        assert_eq!(m.iter().count(), 9_999);
        assert_eq!(m.values().map(|v| u64::from(*v)).max(), Some(9_999));
        // Even values: 0, 2, .., 9998 and k7's 70.
        m.retain(|_, v| *v % 2 == 0);
        assert_eq!(m.len(), 5_001);
        assert_eq!(m.iter().count(), 5_001);
    }

    #[test]
    fn occupied_changes_or_removes_with_the_length_kept() {
        let mut m: SegMap<u64, u32> = SegMap::new();
        for k in 0..100u64 {
            m.insert(k, 0);
        }
        assert!(m.occupied(100).is_none(), "absent key");
        assert_eq!(m.len(), 100, "looking up an absent key inserts nothing");
        *m.occupied(5).expect("present").get_mut() = 7;
        assert_eq!(m.get(&5), Some(&7));
        assert_eq!(m.len(), 100);
        let e = m.occupied(6).expect("present");
        assert_eq!(e.remove(), 0);
        assert_eq!(m.len(), 99);
        assert_eq!(m.get(&6), None);
        assert_eq!(m.iter().count(), 99);
    }

    #[test]
    fn entries_spread_over_the_segments() {
        let mut m: SegMap<u128, ()> = SegMap::new();
        for k in 0..(SEGMENTS as u128 * 100) {
            m.insert(k, ());
        }
        let biggest = m.segments.iter().map(HashMap::len).max().unwrap_or(0);
        let empty = m.segments.iter().filter(|s| s.is_empty()).count();
        assert_eq!(empty, 0);
        // Mean 100 per segment; a fair hash keeps the largest well under 3x.
        assert!(biggest < 300, "largest segment holds {biggest}");
    }

    #[test]
    fn keys_of_one_segment_keep_distinct_table_tags() {
        // hashbrown tags each entry with the top 7 bits of its hash; if the segment choice used
        // those bits, every key in a segment would share one tag and lookups would degrade. The
        // tags of one segment's keys are compared with those of as many keys taken regardless
        // of segment (every 256th), so what is measured is the segment choice, not how spread
        // the (seeded, fast) hash's top bits are for sequential keys under this run's seed.
        let m: SegMap<u128, ()> = SegMap::new();
        let tag = |k: u128| m.hasher.hash_one(k) >> 57;
        let in_segment: std::collections::HashSet<u64> = (0..100_000u128)
            .filter(|k| m.segment(k) == 0)
            .map(tag)
            .collect();
        let regardless: std::collections::HashSet<u64> =
            (0..100_000u128).step_by(SEGMENTS).map(tag).collect();
        assert!(
            in_segment.len() * 2 > regardless.len() && in_segment.len() > 8,
            "{} distinct tags in segment 0, {} among as many keys of any segment",
            in_segment.len(),
            regardless.len()
        );
    }
}
