//! Property tests of the dedup cache against a plain map with the same window (with room for
//! every key, and with too little: what it forgot it must say it cannot prove absent), and of
//! [`DedupHasher::key`]: pairs that spell the same bytes split at another place get other keys.

use std::collections::HashMap;

use proptest::prelude::*;
use uuid::Uuid;

use super::*;

/// The window of the sets under test: short, so that a few steps of time expire keys.
const WINDOW_MS: u64 = 100;
/// Distinct keys a run uses: few, so that keys are re-inserted, removed and looked up again.
const KEYS: u128 = 8;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Accepts `key` now, as notification `id`.
    Insert {
        key: u128,
        id: u128,
    },
    Remove {
        key: u128,
    },
    Get {
        key: u128,
    },
    /// Time passes by `ms`, then the set expires what is older than its window.
    Expire {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..KEYS, any::<u128>()).prop_map(|(key, id)| Op::Insert { key, id }),
        1 => (0..KEYS).prop_map(|key| Op::Remove { key }),
        3 => (0..KEYS).prop_map(|key| Op::Get { key }),
        3 => (0..=2 * WINDOW_MS).prop_map(|ms| Op::Expire { ms }),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// With the clock moving forward (as the shard's does) and room for every key, the cache
    /// answers exactly like a map of key -> (id, time accepted) that drops entries once they are
    /// out of the window.
    #[test]
    fn dedup_cache_matches_a_map_with_window_expiry(ops in prop::collection::vec(op(), 1..200)) {
        let mut set = DedupCache::new(WINDOW_MS, 1 << 20);
        let mut model: HashMap<u128, (Uuid, u64)> = HashMap::new();
        let mut now = 1_000u64;
        for op in ops {
            match op {
                Op::Insert { key, id } => {
                    set.insert(key, Uuid::from_u128(id), now);
                    model.insert(key, (Uuid::from_u128(id), now));
                }
                Op::Remove { key } => {
                    prop_assert_eq!(set.remove(key), model.remove(&key).map(|(id, _)| id));
                }
                Op::Get { key } => {
                    prop_assert_eq!(set.get(key, now), model.get(&key).map(|&(id, _)| id));
                }
                Op::Expire { ms } => {
                    now += ms;
                    let before = model.len();
                    model.retain(|_, &mut (_, at)| now - at < WINDOW_MS);
                    prop_assert_eq!(set.expire(now), before - model.len());
                }
            }
            prop_assert_eq!(set.len(), model.len());
            prop_assert_eq!(set.is_empty(), model.is_empty());
        }
    }

    /// With accept times in any order, a key is never forgotten before its window has passed
    /// since it was last accepted, and everything is forgotten once the window has passed since
    /// the newest accept.
    #[test]
    fn dedup_set_keeps_keys_for_their_window_whatever_the_order(
        ops in prop::collection::vec((0..KEYS, 0..1_000u64, any::<bool>()), 1..100),
    ) {
        let mut set = DedupCache::new(WINDOW_MS, 1 << 20);
        let mut last_accept: HashMap<u128, (Uuid, u64)> = HashMap::new();
        let mut newest = 0;
        let mut now = 0;
        for (i, (key, at, expire)) in ops.into_iter().enumerate() {
            let id = Uuid::from_u128(i as u128);
            set.insert(key, id, at);
            last_accept.insert(key, (id, at));
            newest = newest.max(at);
            if expire {
                now = now.max(at);
                set.expire(now);
                last_accept.retain(|&key, &mut (id, at)| {
                    let kept = set.get(key, now) == Some(id);
                    assert!(kept || now - at >= WINDOW_MS, "key {key} at {at} gone at {now}");
                    kept
                });
            }
        }
        for (&key, &(id, at)) in &last_accept {
            prop_assert_eq!(set.get(key, at), Some(id));
        }
        let len = set.len();
        prop_assert_eq!(set.expire(newest + WINDOW_MS + 1), len);
        prop_assert!(set.is_empty());
    }

    /// With room for only a few keys, whatever the cache answers is right, and a live key it
    /// no longer holds is never one it claims to prove absent: the disk is asked instead.
    #[test]
    fn a_small_cache_never_proves_a_forgotten_live_key_absent(
        ops in prop::collection::vec(op(), 1..300),
        capacity in 1..6usize,
    ) {
        let mut set = DedupCache::new(WINDOW_MS, capacity);
        let mut model: HashMap<u128, (Uuid, u64)> = HashMap::new();
        let mut now = 1_000u64;
        for op in ops {
            match op {
                Op::Insert { key, id } => {
                    set.insert(key, Uuid::from_u128(id), now);
                    model.insert(key, (Uuid::from_u128(id), now));
                }
                Op::Remove { key } => {
                    set.remove(key);
                    model.remove(&key);
                }
                Op::Get { .. } => {}
                Op::Expire { ms } => {
                    now += ms;
                    set.expire(now);
                    model.retain(|_, &mut (_, at)| now - at < WINDOW_MS);
                }
            }
            prop_assert!(set.len() <= capacity);
            for key in 0..KEYS {
                let truth = model.get(&key).map(|&(id, _)| id);
                match set.get(key, now) {
                    Some(id) => prop_assert_eq!(Some(id), truth),
                    None if truth.is_some() => prop_assert!(!set.proves_absent(now), "key {key} forgotten but proven absent"),
                    None => {}
                }
            }
        }
    }

    /// `(user_id, idempotency_key)` pairs that concatenate to the same text get different keys.
    #[test]
    fn dedup_keys_tell_length_shifted_pairs_apart(
        text in "\\PC{0,300}",
        split in any::<prop::sample::Index>(),
        other in any::<prop::sample::Index>(),
    ) {
        let bounds: Vec<usize> = (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
        let (a, b) = (*split.get(&bounds), *other.get(&bounds));
        prop_assume!(a != b);
        let (user_a, key_a) = text.split_at(a);
        let (user_b, key_b) = text.split_at(b);
        let h = DedupHasher::from_secret([3; DEDUP_SECRET_LEN]);
        prop_assert_ne!(h.key(user_a, key_a), h.key(user_b, key_b));
        prop_assert_eq!(h.key(user_a, key_a), h.key(user_a, key_a));
    }

    /// Different pairs get different keys, and each half of the key tells them apart.
    #[test]
    fn dedup_keys_tell_pairs_apart(
        pair in ("\\PC{0,40}", "\\PC{0,300}"),
        other in ("\\PC{0,40}", "\\PC{0,300}"),
    ) {
        prop_assume!(pair != other);
        let h = DedupHasher::from_secret([5; DEDUP_SECRET_LEN]);
        let (a, b) = (h.key(&pair.0, &pair.1), h.key(&other.0, &other.1));
        prop_assert_ne!(a >> 64, b >> 64);
        prop_assert_ne!(a as u64, b as u64);
    }
}
