//! [`DedupHasher`]: the keyed 128-bit hash of `(user_id, idempotency_key)` that names a
//! notification's idempotency key in memory and on disk.

use std::hash::Hasher;

use siphasher::sip128::{Hasher128, SipHasher24};

use crate::error::Error;

/// Bytes of a log's dedup secret (SipHash's two 64-bit keys).
pub const DEDUP_SECRET_LEN: usize = 16;

/// SipHash-2-4 with 128-bit output, keyed by a log's secret: a well-studied keyed PRF, so
/// without the secret nobody can predict keys or craft colliding pairs, and 128 bits make an
/// accidental collision among even billions of keys vanishingly unlikely (about 2^-64 at 2^32
/// keys).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct DedupHasher {
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for DedupHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret is not for log lines.
        f.write_str("DedupHasher(..)")
    }
}

impl DedupHasher {
    /// The hasher keyed by `secret` (as stored in the log's `meta` keyspace).
    #[must_use]
    pub fn from_secret(secret: [u8; DEDUP_SECRET_LEN]) -> Self {
        let (a, b) = secret.split_at(8);
        let word = |s: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(s);
            u64::from_le_bytes(w)
        };
        DedupHasher {
            k0: word(a),
            k1: word(b),
        }
    }

    /// A new secret from the operating system's random source.
    ///
    /// # Errors
    /// `Error::Storage` when the OS has no randomness to give (the log cannot be created safely).
    pub fn new_secret() -> Result<[u8; DEDUP_SECRET_LEN], Error> {
        let mut secret = [0u8; DEDUP_SECRET_LEN];
        getrandom::fill(&mut secret)
            .map_err(|e| Error::Storage(format!("no random bytes for the dedup secret: {e}")))?;
        Ok(secret)
    }

    /// The key of `(user_id, idempotency_key)`: the hash of the length-prefixed pair, so
    /// `("ab", "c")` and `("a", "bc")` differ.
    #[must_use]
    pub fn key(&self, user_id: &str, idempotency_key: &str) -> u128 {
        let mut h = SipHasher24::new_with_keys(self.k0, self.k1);
        h.write(&(user_id.len() as u64).to_le_bytes());
        h.write(user_id.as_bytes());
        h.write(idempotency_key.as_bytes());
        h.finish128().as_u128()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher(seed: u8) -> DedupHasher {
        DedupHasher::from_secret([seed; DEDUP_SECRET_LEN])
    }

    #[test]
    fn keys_are_stable_and_length_prefixed() {
        let h = hasher(1);
        let k = h.key("user-1", "order-42");
        assert_eq!(k, h.key("user-1", "order-42"));
        assert_ne!(k, h.key("user-2", "order-42"));
        assert_ne!(h.key("ab", "c"), h.key("a", "bc"));
        assert_ne!(h.key("", ""), 0);
    }

    #[test]
    fn the_secret_changes_every_key() {
        for (user, key) in [("u", "1"), ("alice", "order-42"), ("", "")] {
            assert_ne!(hasher(1).key(user, key), hasher(2).key(user, key));
        }
    }

    #[test]
    fn is_siphash_2_4_128_of_the_length_prefixed_pair_under_the_secret() {
        // The secret's two halves are SipHash's k0 and k1 (little-endian); the message is the
        // user id's length (8 bytes, little-endian), the user id, then the idempotency key.
        let secret: [u8; 16] = std::array::from_fn(|i| i as u8);
        let h = DedupHasher::from_secret(secret);
        let mut direct = SipHasher24::new_with_keys(
            u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]),
            u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]),
        );
        let mut message = 5u64.to_le_bytes().to_vec();
        message.extend_from_slice(b"alicekey-1");
        direct.write(&message);
        assert_eq!(h.key("alice", "key-1"), direct.finish128().as_u128());
    }

    #[test]
    fn no_collisions_in_a_million_keys() {
        let h = hasher(7);
        let mut seen = std::collections::HashSet::new();
        for i in 0..1_000_000u32 {
            assert!(
                seen.insert(h.key("user", &i.to_string())),
                "collision at {i}"
            );
        }
    }

    #[test]
    fn new_secrets_differ() {
        let a = DedupHasher::new_secret().unwrap();
        let b = DedupHasher::new_secret().unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; DEDUP_SECRET_LEN]);
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        assert_eq!(format!("{:?}", hasher(9)), "DedupHasher(..)");
    }
}
