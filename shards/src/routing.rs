//! Which shard owns a user: the one pure routing function used by the server, the tests and the
//! load generator alike, plus the stable hash primitives it is built from.
//!
//! A user is owned by shard `jump_hash(user_hash(user_id), shards)`.
//!
//! **Stability contract.** [`user_hash`] and [`jump_hash`] decide where every user's data lives on
//! disk (`data/shards/NN/`). Changing either one — even "improving" it — moves users to other
//! shards, whose logs do not hold their devices, dedup keys or pending deliveries. They are pinned
//! by golden-value tests below; changing them needs a data migration, not just a code change.

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 over `bytes`, continuing from `state` (start with [`FNV_OFFSET`]).
#[inline]
pub(crate) fn fnv1a64_from(mut state: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        state ^= u64::from(b);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

/// Plain FNV-1a 64.
#[inline]
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_from(FNV_OFFSET, bytes)
}

/// The splitmix64 finalizer: a bijective mixer that spreads FNV's weak low bits over all 64.
#[inline]
pub(crate) fn splitmix64_mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The 64-bit hash of a user id that routing is based on: FNV-1a 64 followed by the splitmix64
/// finalizer. Stable across versions, platforms and processes (no random seed).
///
/// **Changing this function moves users between shards** (see the module docs).
#[inline]
#[must_use]
pub fn user_hash(user_id: &str) -> u64 {
    splitmix64_mix(fnv1a64(user_id.as_bytes()))
}

/// Lamping & Veach's jump consistent hash: maps `key` to a bucket in `0..buckets` so that growing
/// from `n` to `n + 1` buckets moves only about `1/(n+1)` of the keys, all of them to the new one.
///
/// `buckets == 0` is treated as 1 (everything goes to bucket 0) rather than panicking.
#[must_use]
pub fn jump_hash(mut key: u64, buckets: u32) -> u32 {
    let buckets = i64::from(buckets.max(1));
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        // The reference algorithm is defined with doubles; IEEE-754 makes this deterministic.
        let r = (1u64 << 31) as f64 / ((key >> 33) + 1) as f64;
        j = ((b + 1) as f64 * r) as i64;
    }
    // b is in 0..buckets, which came from a u32.
    b as u32
}

/// The shard (in `0..shards`) that owns `user_id`.
#[inline]
#[must_use]
pub fn shard_for_user(user_id: &str, shards: u32) -> u32 {
    jump_hash(user_hash(user_id), shards)
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_known_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn jump_hash_reference_vectors() {
        // From the reference implementation's test suite (dgryski/go-jump).
        assert_eq!(jump_hash(1, 1), 0);
        assert_eq!(jump_hash(42, 57), 43);
        assert_eq!(jump_hash(0xDEAD_10CC, 1), 0);
        assert_eq!(jump_hash(0xDEAD_10CC, 666), 361);
        assert_eq!(jump_hash(256, 1024), 520);
        assert_eq!(jump_hash(12345, 0), 0);
    }

    #[test]
    fn user_hash_is_pinned() {
        // Golden values: if these change, users move shards. See the module docs.
        assert_eq!(user_hash(""), splitmix64_mix(0xcbf2_9ce4_8422_2325));
        // (Cross-checked against an independent Python implementation.)
        assert_eq!(user_hash("user-1"), 0xc499_b5f8_a721_df58);
        assert_eq!(user_hash("alice@example.com"), 0x5f12_4bef_ce03_13b8);
        assert_eq!(shard_for_user("user-1", 8), 1);
        assert_eq!(shard_for_user("user-1", 64), 21);
        assert_eq!(shard_for_user("alice@example.com", 8), 7);
        assert_eq!(shard_for_user("alice@example.com", 64), 47);
    }

    #[test]
    fn shard_is_in_range_and_one_shard_takes_all() {
        for i in 0..1000 {
            let u = format!("u{i}");
            assert_eq!(shard_for_user(&u, 1), 0);
            assert!(shard_for_user(&u, 7) < 7);
        }
    }

    #[test]
    fn distribution_is_even_for_2_to_16_shards() {
        const USERS: usize = 200_000;
        for shards in 2..=16u32 {
            let mut counts = vec![0usize; shards as usize];
            for i in 0..USERS {
                counts[shard_for_user(&format!("user-{i}"), shards) as usize] += 1;
            }
            let expected = USERS as f64 / f64::from(shards);
            for (s, &c) in counts.iter().enumerate() {
                let dev = (c as f64 - expected).abs() / expected;
                assert!(
                    dev < 0.03,
                    "shards={shards} shard={s} count={c} dev={dev:.4}"
                );
            }
        }
    }

    #[test]
    fn growing_moves_about_one_nth_and_only_to_the_new_shard() {
        const USERS: usize = 100_000;
        for n in 2..=16u32 {
            let mut moved = 0usize;
            for i in 0..USERS {
                let h = user_hash(&format!("user-{i}"));
                let before = jump_hash(h, n);
                let after = jump_hash(h, n + 1);
                if before != after {
                    assert_eq!(after, n, "a moved key must go to the new shard");
                    moved += 1;
                }
            }
            let expected = USERS as f64 / f64::from(n + 1);
            let dev = (moved as f64 - expected).abs() / expected;
            assert!(dev < 0.05, "n={n} moved={moved} expected={expected:.0}");
        }
    }
}
