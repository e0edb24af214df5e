//! Time-ordered ids for notifications and deliveries: UUIDv7 (RFC 9562) generated per shard with
//! no shared state, strictly increasing within a shard, and carrying the shard number.
//!
//! Bit layout (big-endian bytes, so `as_bytes()` order is time order):
//!
//! ```text
//!  bytes 0..6   unix_ts_ms (48 bits)
//!  byte  6      0x7 version nibble | counter bits 17..14
//!  byte  7      counter bits 13..6
//!  byte  8      0b10 variant      | counter bits 5..0
//!  bytes 9..11  shard number (u16)
//!  bytes 11..16 random (40 bits, per-shard xorshift)
//! ```
//!
//! The 18-bit counter (RFC 9562 "fixed bit-length dedicated counter") restarts at 0 every
//! millisecond and allows 262 144 ids per ms per shard; if it ever runs out the generator borrows
//! the next millisecond, as the RFC allows. A clock that steps back is ignored:
//! `ms = max(now, last)`.

use uuid::Uuid;

use crate::state::Jitter;

/// Bits of the per-millisecond counter (12 in `rand_a`, 6 at the top of `rand_b`).
const COUNTER_BITS: u32 = 18;
/// Exclusive upper bound of the counter: ids per millisecond per shard before borrowing the next.
const COUNTER_LIMIT: u32 = 1 << COUNTER_BITS;
/// UUIDv7 timestamps are 48 bits.
const MAX_MS: u64 = (1 << 48) - 1;

/// A shard's id generator. Own one per shard; it is not shared and needs no lock.
#[derive(Clone, Debug)]
pub struct IdGenerator {
    shard: u16,
    last_ms: u64,
    counter: u32,
    rng: Jitter,
}

impl IdGenerator {
    /// A generator for `shard`; `seed` feeds the 40 random bits (mix in the time at startup so a
    /// restart does not repeat them — uniqueness never depends on them, though).
    #[must_use]
    pub fn new(shard: u16, seed: u64) -> Self {
        IdGenerator {
            shard,
            last_ms: 0,
            counter: 0,
            rng: Jitter::new(seed ^ (u64::from(shard) << 48)),
        }
    }

    /// The shard this generator embeds in its ids.
    #[must_use]
    pub fn shard(&self) -> u16 {
        self.shard
    }

    /// The next id: strictly greater (in byte order) than every id this generator returned before.
    pub fn next(&mut self, now_ms: u64) -> Uuid {
        let now_ms = now_ms.min(MAX_MS);
        if now_ms > self.last_ms {
            self.last_ms = now_ms;
            self.counter = 0;
        } else {
            self.counter += 1;
            if self.counter >= COUNTER_LIMIT {
                // Out of counter space in this millisecond: borrow the next one.
                self.last_ms = (self.last_ms + 1).min(MAX_MS);
                self.counter = 0;
            }
        }
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&self.last_ms.to_be_bytes()[2..]);
        let c = self.counter;
        b[6] = 0x70 | ((c >> 14) & 0x0f) as u8;
        b[7] = ((c >> 6) & 0xff) as u8;
        b[8] = 0x80 | (c & 0x3f) as u8;
        b[9..11].copy_from_slice(&self.shard.to_be_bytes());
        b[11..16].copy_from_slice(&self.rng.next_u64().to_be_bytes()[..5]);
        Uuid::from_bytes(b)
    }
}

/// The shard number embedded in an id made by [`IdGenerator`].
#[must_use]
pub fn shard_of(id: &Uuid) -> u16 {
    let b = id.as_bytes();
    u16::from_be_bytes([b[9], b[10]])
}

/// The millisecond timestamp of a UUIDv7.
#[must_use]
pub fn ms_of(id: &Uuid) -> u64 {
    let b = id.as_bytes();
    let mut ms = [0u8; 8];
    ms[2..].copy_from_slice(&b[..6]);
    u64::from_be_bytes(ms)
}

/// The smallest 16-byte key at millisecond `ms`: every id made at `ms` or later sorts at or after
/// it, every id made before `ms` sorts before it. Use it as a range-scan or retention bound.
#[must_use]
pub fn uuid_floor_for_ms(ms: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.min(MAX_MS).to_be_bytes()[2..]);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::{Variant, Version};

    const T: u64 = 1_700_000_000_123;

    #[test]
    fn ids_are_valid_v7_with_the_time_and_shard() {
        let mut g = IdGenerator::new(513, 9);
        for i in 0..1000 {
            let id = g.next(T + i / 10);
            assert_eq!(id.get_version(), Some(Version::SortRand));
            assert_eq!(id.get_variant(), Variant::RFC4122);
            assert_eq!(shard_of(&id), 513);
            assert_eq!(ms_of(&id), T + i / 10);
        }
        assert_eq!(g.shard(), 513);
    }

    #[test]
    fn uuid_crate_agrees_on_the_timestamp() {
        let id = IdGenerator::new(0, 0).next(T);
        let ts = id.get_timestamp().unwrap();
        let (secs, nanos) = ts.to_unix();
        assert_eq!(secs * 1000 + u64::from(nanos) / 1_000_000, T);
    }

    #[test]
    fn strictly_increasing_within_a_ms_and_across_ms() {
        let mut g = IdGenerator::new(3, 1);
        let mut prev = g.next(T);
        for i in 0..50_000u64 {
            let id = g.next(T + i / 1000);
            assert!(id.as_bytes() > prev.as_bytes(), "i={i}");
            prev = id;
        }
    }

    #[test]
    fn clock_stepping_back_stays_monotonic() {
        let mut g = IdGenerator::new(1, 1);
        let a = g.next(T);
        let b = g.next(T - 5_000);
        let c = g.next(T - 1);
        assert!(a.as_bytes() < b.as_bytes() && b.as_bytes() < c.as_bytes());
        assert_eq!(ms_of(&b), T);
        let d = g.next(T + 1);
        assert_eq!(ms_of(&d), T + 1);
        assert!(c.as_bytes() < d.as_bytes());
    }

    #[test]
    fn counter_overflow_borrows_the_next_ms() {
        let mut g = IdGenerator::new(1, 1);
        let mut prev = g.next(T);
        for _ in 1..COUNTER_LIMIT {
            let id = g.next(T);
            assert_eq!(ms_of(&id), T);
            prev = id;
        }
        let next = g.next(T);
        assert_eq!(ms_of(&next), T + 1);
        assert!(next.as_bytes() > prev.as_bytes());
        assert_eq!(next.get_version(), Some(Version::SortRand));
    }

    #[test]
    fn floor_separates_milliseconds() {
        let mut g = IdGenerator::new(65535, u64::MAX);
        let before = g.next(T - 1);
        let at = g.next(T);
        let floor = uuid_floor_for_ms(T);
        assert!(before.as_bytes() < &floor);
        assert!(&floor <= at.as_bytes());
        assert_eq!(ms_of(&Uuid::from_bytes(floor)), T);
        assert_eq!(shard_of(&at), 65535);
    }

    #[test]
    fn generators_are_independent_per_shard() {
        let mut a = IdGenerator::new(0, 7);
        let mut b = IdGenerator::new(1, 7);
        assert_ne!(a.next(T), b.next(T));
    }
}
