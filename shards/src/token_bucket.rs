//! Token buckets for frequency caps: [`TokenBucket`] for one limit, [`UserBuckets`] for a
//! per-user "at most N per hour" cap on a shard.
//!
//! All arithmetic is integer fixed-point, so there is no float drift however long a bucket lives:
//! one token is `period_ms` units, and every elapsed millisecond adds `refill_tokens` units. A cap
//! of N per hour is therefore exact: N tokens per 3 600 000 ms, nothing lost to rounding.

use crate::segmap::SegMap;

/// Milliseconds in an hour: the period of [`UserBuckets`] caps.
const MS_PER_HOUR: u64 = 3_600_000;

/// A rate in fixed-point units (see the module docs). Shared by every bucket of one limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rate {
    /// Units per token (= the refill period in ms).
    unit: u64,
    /// Units added per elapsed millisecond (= tokens per period).
    per_ms: u64,
    /// Units in a full bucket.
    capacity: u64,
}

/// A bucket's mutable part: its fill level and when it was last refilled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Level {
    units: u64,
    last_ms: u64,
}

impl Rate {
    fn new(capacity: u32, refill_tokens: u32, period_ms: u64) -> Self {
        let unit = period_ms.max(1);
        Rate {
            unit,
            per_ms: u64::from(refill_tokens),
            capacity: u64::from(capacity).saturating_mul(unit),
        }
    }

    fn full(&self, now_ms: u64) -> Level {
        Level {
            units: self.capacity,
            last_ms: now_ms,
        }
    }

    /// Adds what accrued since `last_ms`. A clock that steps back adds nothing and is not stored.
    fn refill(&self, level: &mut Level, now_ms: u64) {
        if now_ms > level.last_ms {
            let accrued = (now_ms - level.last_ms).saturating_mul(self.per_ms);
            level.units = level.units.saturating_add(accrued).min(self.capacity);
            level.last_ms = now_ms;
        }
    }

    /// Puts one token back, up to the capacity.
    fn give_back(&self, level: &mut Level, now_ms: u64) {
        self.refill(level, now_ms);
        level.units = level.units.saturating_add(self.unit).min(self.capacity);
    }

    fn try_take(&self, level: &mut Level, now_ms: u64) -> bool {
        self.refill(level, now_ms);
        if level.units >= self.unit {
            level.units -= self.unit;
            true
        } else {
            false
        }
    }
}

/// One token bucket: holds up to `capacity` tokens, refilled by `refill_tokens` every
/// `period_ms` (continuously, to the millisecond). Starts full.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: Rate,
    level: Level,
}

impl TokenBucket {
    /// A full bucket of `capacity` tokens refilling `refill_tokens` per `period_ms`
    /// (`period_ms == 0` is treated as 1).
    #[must_use]
    pub fn new(capacity: u32, refill_tokens: u32, period_ms: u64, now_ms: u64) -> Self {
        let rate = Rate::new(capacity, refill_tokens, period_ms);
        TokenBucket {
            rate,
            level: rate.full(now_ms),
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now_ms: u64) -> bool {
        self.rate.try_take(&mut self.level, now_ms)
    }

    /// Whole tokens available at `now_ms`.
    pub fn available(&mut self, now_ms: u64) -> u64 {
        self.rate.refill(&mut self.level, now_ms);
        self.level.units / self.rate.unit
    }

    /// Milliseconds until a token will be available (0 if one is now); `None` if none ever will
    /// be (it never refills, or its capacity is 0).
    pub fn ms_until_token(&mut self, now_ms: u64) -> Option<u64> {
        self.rate.refill(&mut self.level, now_ms);
        let missing = self.rate.unit.saturating_sub(self.level.units);
        match (missing, self.rate.per_ms) {
            (0, _) => Some(0),
            (_, 0) => None,
            _ if self.rate.capacity < self.rate.unit => None,
            (m, per_ms) => Some(m.div_ceil(per_ms)),
        }
    }
}

/// Per-user "at most `per_hour` per hour" caps for the users of one shard.
///
/// A missing bucket means a full one, so buckets that have refilled completely can be dropped
/// ([`UserBuckets::evict_full`]) without changing any answer: memory is bounded by the users
/// active within the last hour (a bucket refills completely in at most one hour).
#[derive(Debug)]
pub struct UserBuckets {
    /// `None` = unlimited.
    rate: Option<Rate>,
    buckets: SegMap<String, Level>,
}

impl UserBuckets {
    /// Caps every user at `per_hour` per hour, bursting up to `per_hour`.
    /// `per_hour == 0` means unlimited: every take succeeds and nothing is stored.
    #[must_use]
    pub fn new(per_hour: u32) -> Self {
        UserBuckets {
            rate: (per_hour > 0).then(|| Rate::new(per_hour, per_hour, MS_PER_HOUR)),
            buckets: SegMap::new(),
        }
    }

    /// Takes one token from `user_id`'s bucket; `false` means the user is over the cap.
    /// Allocates only the first time a user is seen since their bucket was last evicted.
    pub fn try_take(&mut self, user_id: &str, now_ms: u64) -> bool {
        let Some(rate) = self.rate else {
            return true;
        };
        if let Some(level) = self.buckets.get_mut(user_id) {
            return rate.try_take(level, now_ms);
        }
        let mut level = rate.full(now_ms);
        let taken = rate.try_take(&mut level, now_ms);
        self.buckets.insert(user_id.to_owned(), level);
        taken
    }

    /// Returns a token taken from `user_id`'s bucket for something that did not happen after all
    /// (a duplicate found late). A missing bucket is full: nothing to return.
    pub fn give_back(&mut self, user_id: &str, now_ms: u64) {
        let Some(rate) = self.rate else {
            return;
        };
        if let Some(level) = self.buckets.get_mut(user_id) {
            rate.give_back(level, now_ms);
        }
    }

    /// Drops every bucket that is full again at `now_ms`; returns how many were dropped.
    /// O(buckets): call it periodically (say once a minute), not per request.
    pub fn evict_full(&mut self, now_ms: u64) -> usize {
        let Some(rate) = self.rate else {
            return 0;
        };
        let before = self.buckets.len();
        self.buckets.retain(|_, level| {
            rate.refill(level, now_ms);
            level.units < rate.capacity
        });
        before - self.buckets.len()
    }

    /// Number of buckets held in memory.
    #[must_use]
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True when no buckets are held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// True when the cap is disabled (`per_hour == 0`).
    #[must_use]
    pub fn is_unlimited(&self) -> bool {
        self.rate.is_none()
    }
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills_exactly() {
        // 3 tokens, 1 per 1000 ms.
        let mut b = TokenBucket::new(3, 1, 1000, 0);
        assert_eq!(b.available(0), 3);
        assert!(b.try_take(0) && b.try_take(0) && b.try_take(0));
        assert!(!b.try_take(0));
        assert_eq!(b.ms_until_token(0), Some(1000));
        assert!(!b.try_take(999), "one ms short of a token");
        assert_eq!(b.ms_until_token(999), Some(1));
        assert!(b.try_take(1000));
        assert!(!b.try_take(1000));
        // Long idle refills only to capacity.
        assert_eq!(b.available(1_000_000), 3);
    }

    #[test]
    fn partial_refills_accumulate_without_drift() {
        // 1 token per 3 ms: 1000 takes spaced 3 ms apart must all succeed after the burst.
        let mut b = TokenBucket::new(1, 1, 3, 0);
        assert!(b.try_take(0));
        for i in 1..=1000u64 {
            assert!(!b.try_take(i * 3 - 1), "early at {i}");
            assert!(b.try_take(i * 3), "late at {i}");
        }
    }

    #[test]
    fn clock_stepping_back_neither_refills_nor_breaks() {
        let mut b = TokenBucket::new(1, 1, 1000, 5000);
        assert!(b.try_take(5000));
        assert!(!b.try_take(100));
        assert!(!b.try_take(5999));
        assert!(b.try_take(6000));
    }

    #[test]
    fn zero_refill_never_refills() {
        let mut b = TokenBucket::new(1, 0, 1000, 0);
        assert!(b.try_take(0));
        assert!(!b.try_take(u64::MAX));
        assert_eq!(b.ms_until_token(10), None);
    }

    #[test]
    fn ms_until_token_is_none_for_a_bucket_of_no_tokens() {
        // Found by `ms_until_token_is_exact`: a capacity-0 bucket promised a token in 1 ms.
        let mut b = TokenBucket::new(0, 1, 0, 0);
        assert_eq!(b.ms_until_token(0), None);
        assert!(!b.try_take(u64::MAX));
    }

    #[test]
    fn per_hour_cap_per_user() {
        let mut u = UserBuckets::new(2);
        assert!(u.try_take("a", 0));
        assert!(u.try_take("a", 1));
        assert!(!u.try_take("a", 2));
        assert!(u.try_take("b", 2), "users are independent");
        // Half an hour refills one of two tokens (2 per hour).
        assert!(!u.try_take("a", MS_PER_HOUR / 2 - 1));
        assert!(u.try_take("a", MS_PER_HOUR / 2));
        assert!(!u.try_take("a", MS_PER_HOUR / 2));
    }

    #[test]
    fn unlimited_stores_nothing() {
        let mut u = UserBuckets::new(0);
        assert!(u.is_unlimited());
        for i in 0..1000 {
            assert!(u.try_take("a", i));
        }
        assert!(u.is_empty());
        assert_eq!(u.evict_full(0), 0);
    }

    #[test]
    fn evict_full_drops_only_refilled_buckets() {
        let mut u = UserBuckets::new(10);
        assert!(u.try_take("early", 0));
        assert!(u.try_take("late", MS_PER_HOUR / 2));
        assert_eq!(u.len(), 2);
        // One token takes 360 000 ms to refill.
        assert_eq!(u.evict_full(359_999), 0);
        assert_eq!(u.evict_full(360_000), 1);
        assert_eq!(u.len(), 1);
        assert_eq!(u.evict_full(MS_PER_HOUR / 2 + 360_000), 1);
        assert!(u.is_empty());
        // An evicted user starts full again: same answers as if never evicted.
        for _ in 0..10 {
            assert!(u.try_take("early", MS_PER_HOUR));
        }
        assert!(!u.try_take("early", MS_PER_HOUR));
    }

    #[test]
    fn a_token_given_back_can_be_taken_again_but_never_overfills() {
        let mut u = UserBuckets::new(2);
        assert!(u.try_take("a", 0));
        assert!(u.try_take("a", 0));
        assert!(!u.try_take("a", 0));
        u.give_back("a", 0);
        assert!(u.try_take("a", 0));
        assert!(!u.try_take("a", 0));
        // Giving back to a full (or unknown) bucket adds nothing.
        u.give_back("b", 0);
        u.give_back("a", 0);
        u.give_back("a", 0);
        u.give_back("a", 0);
        assert!(u.try_take("a", 0));
        assert!(u.try_take("a", 0));
        assert!(!u.try_take("a", 0));
        assert!(u.try_take("b", 0));
        assert!(u.try_take("b", 0));
        assert!(!u.try_take("b", 0));
    }
}
