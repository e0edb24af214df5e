//! Property tests of routing: a user's shard is in range and the same on every call, and jump
//! hashing's minimal movement: growing the shard count moves a user only to one of the new
//! shards, and about `added / new count` of the users move.

use proptest::prelude::*;

use super::*;

/// Most shards a test grows to: past any core count, well inside `u32`.
const MAX_SHARDS: u32 = 4096;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn shard_is_in_range_and_stable(
        user_id in any::<String>(),
        shards in prop_oneof![0..=MAX_SHARDS, any::<u32>()],
    ) {
        let shard = shard_for_user(&user_id, shards);
        prop_assert!(shard < shards.max(1), "shard {shard} of {shards}");
        prop_assert_eq!(shard, shard_for_user(&user_id, shards));
        prop_assert_eq!(shard, jump_hash(user_hash(&user_id), shards));
        prop_assert_eq!(user_hash(&user_id), user_hash(&user_id.clone()));
    }

    #[test]
    fn growing_moves_users_only_to_new_shards(
        key in any::<u64>(),
        from in 1..=MAX_SHARDS,
        added in 1..=64u32,
    ) {
        let before = jump_hash(key, from);
        let after = jump_hash(key, from + added);
        prop_assert!(after == before || after >= from, "{before} -> {after} ({from} + {added})");
        // And one step at a time: a key leaves its shard only for the shard just added.
        let mut shard = before;
        for n in from + 1..=from + added {
            let next = jump_hash(key, n);
            prop_assert!(next == shard || next == n - 1, "{shard} -> {next} at {n} shards");
            shard = next;
        }
        prop_assert_eq!(shard, after);
    }

    #[test]
    fn growing_moves_about_the_new_shards_share(
        seed in any::<u64>(),
        from in 1..=64u32,
        added in 1..=8u32,
    ) {
        const KEYS: u64 = 2_000;
        let moved = (0..KEYS)
            .map(|i| splitmix64_mix(seed ^ i))
            .filter(|&k| jump_hash(k, from) != jump_hash(k, from + added))
            .count() as f64;
        let expected = KEYS as f64 * f64::from(added) / f64::from(from + added);
        // Binomial spread: 5 standard deviations, plus 1% for the smallest expectations.
        let p = f64::from(added) / f64::from(from + added);
        let tolerance = 5.0 * (KEYS as f64 * p * (1.0 - p)).sqrt() + KEYS as f64 * 0.01;
        prop_assert!(
            (moved - expected).abs() <= tolerance,
            "{moved} of {KEYS} moved from {from} to {} shards, expected {expected:.0}",
            from + added
        );
    }
}
