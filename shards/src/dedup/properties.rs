//! Property tests of the dedup set against a plain map with the same window, and of
//! [`dedup_key`]: pairs that spell the same bytes split at another place get other keys.

use std::collections::HashMap;

use proptest::prelude::*;

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

    /// With the clock moving forward (as the shard's does), the set answers exactly like a map
    /// of key -> (id, time accepted) that drops entries older than the window at each expiry.
    #[test]
    fn dedup_set_matches_a_map_with_window_expiry(ops in prop::collection::vec(op(), 1..200)) {
        let mut set = DedupSet::new(WINDOW_MS);
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
                    prop_assert_eq!(set.get(key), model.get(&key).map(|&(id, _)| id));
                }
                Op::Expire { ms } => {
                    now += ms;
                    let before = model.len();
                    model.retain(|_, &mut (_, at)| at >= now - WINDOW_MS);
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
        let mut set = DedupSet::new(WINDOW_MS);
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
                    let kept = set.get(key) == Some(id);
                    assert!(kept || at < now - WINDOW_MS.min(now), "key {key} at {at} gone at {now}");
                    kept
                });
            }
        }
        for (&key, &(id, _)) in &last_accept {
            prop_assert_eq!(set.get(key), Some(id));
        }
        let len = set.len();
        prop_assert_eq!(set.expire(newest + WINDOW_MS + 1), len);
        prop_assert!(set.is_empty());
    }

    /// `(user_id, idempotency_key)` pairs that concatenate to the same text get different keys.
    #[test]
    fn dedup_key_tells_length_shifted_pairs_apart(
        text in "\\PC{0,300}",
        split in any::<prop::sample::Index>(),
        other in any::<prop::sample::Index>(),
    ) {
        let bounds: Vec<usize> = (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
        let (a, b) = (*split.get(&bounds), *other.get(&bounds));
        prop_assume!(a != b);
        let (user_a, key_a) = text.split_at(a);
        let (user_b, key_b) = text.split_at(b);
        prop_assert_ne!(dedup_key(user_a, key_a), dedup_key(user_b, key_b));
        prop_assert_eq!(dedup_key(user_a, key_a), dedup_key(user_a, key_a));
    }

    /// Different pairs get different keys, and each half of the key tells them apart.
    #[test]
    fn dedup_key_tells_pairs_apart(
        pair in ("\\PC{0,40}", "\\PC{0,300}"),
        other in ("\\PC{0,40}", "\\PC{0,300}"),
    ) {
        prop_assume!(pair != other);
        let (a, b) = (dedup_key(&pair.0, &pair.1), dedup_key(&other.0, &other.1));
        prop_assert_ne!(a >> 64, b >> 64);
        prop_assert_ne!(a as u64, b as u64);
    }
}
