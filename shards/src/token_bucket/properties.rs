//! Property tests of the token buckets: a bucket answers like an exact model (tokens as a
//! fraction in wide integers), never holds more than its capacity, never gives more than its
//! burst plus its rate allows, gives exactly that to a client that takes as fast as it can, and
//! keeps the promise of [`TokenBucket::ms_until_token`]; per-user caps are independent buckets
//! that eviction never changes.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

/// The bucket as exact arithmetic: `level` is in `1/period` tokens, in `u128` so nothing
/// saturates. A clock that steps back adds nothing.
#[derive(Debug)]
struct Model {
    capacity: u128,
    refill: u128,
    period: u128,
    level: u128,
    last_ms: u64,
}

impl Model {
    fn new(capacity: u32, refill: u32, period_ms: u64, now_ms: u64) -> Model {
        let period = u128::from(period_ms.max(1));
        Model {
            capacity: u128::from(capacity),
            refill: u128::from(refill),
            period,
            level: u128::from(capacity) * period,
            last_ms: now_ms,
        }
    }

    fn advance(&mut self, now_ms: u64) {
        if now_ms > self.last_ms {
            let accrued = u128::from(now_ms - self.last_ms) * self.refill;
            self.level = (self.level + accrued).min(self.capacity * self.period);
            self.last_ms = now_ms;
        }
    }

    fn take(&mut self, now_ms: u64) -> bool {
        self.advance(now_ms);
        let taken = self.level >= self.period;
        if taken {
            self.level -= self.period;
        }
        taken
    }

    fn available(&mut self, now_ms: u64) -> u64 {
        self.advance(now_ms);
        u64::try_from(self.level / self.period).unwrap_or(u64::MAX)
    }

    fn ms_until_token(&mut self, now_ms: u64) -> Option<u64> {
        self.advance(now_ms);
        if self.level >= self.period {
            return Some(0);
        }
        let missing = self.period - self.level;
        (self.refill > 0 && self.capacity > 0)
            .then(|| u64::try_from(missing.div_ceil(self.refill)).unwrap_or(u64::MAX))
    }
}

#[derive(Clone, Copy, Debug)]
enum Ask {
    Take,
    Available,
    MsUntilToken,
}

fn ask() -> impl Strategy<Value = Ask> {
    prop_oneof![
        3 => Just(Ask::Take),
        1 => Just(Ask::Available),
        1 => Just(Ask::MsUntilToken),
    ]
}

/// Capacity, tokens per period and period (0 included: it means 1 ms).
fn limits() -> impl Strategy<Value = (u32, u32, u64)> {
    (0..=20u32, 0..=20u32, 0..=10_000u64)
}

proptest! {
    #![proptest_config(config())]

    /// Every answer matches the model, with the clock moving forward by up to 3 s at a time
    /// and sometimes stepping back.
    #[test]
    fn bucket_matches_exact_model(
        (capacity, refill, period) in limits(),
        steps in prop::collection::vec((-50..=3_000i64, ask()), 1..200),
    ) {
        let start = 1_000_000u64;
        let mut bucket = TokenBucket::new(capacity, refill, period, start);
        let mut model = Model::new(capacity, refill, period, start);
        let mut now = start;
        for (dt, ask) in steps {
            now = now.saturating_add_signed(dt);
            match ask {
                Ask::Take => prop_assert_eq!(bucket.try_take(now), model.take(now)),
                Ask::Available => prop_assert_eq!(bucket.available(now), model.available(now)),
                Ask::MsUntilToken => {
                    prop_assert_eq!(bucket.ms_until_token(now), model.ms_until_token(now));
                }
            }
        }
    }

    /// Whatever the limits and times, even extreme ones: no panic and never more tokens than
    /// the capacity.
    #[test]
    fn bucket_never_holds_more_than_capacity(
        capacity in any::<u32>(),
        refill in any::<u32>(),
        period in any::<u64>(),
        times in prop::collection::vec(any::<u64>(), 1..50),
    ) {
        let mut bucket = TokenBucket::new(capacity, refill, period, times[0]);
        for now in times {
            prop_assert!(bucket.available(now) <= u64::from(capacity));
            bucket.try_take(now);
            bucket.ms_until_token(now);
        }
    }

    /// Over any run, takes succeed at most `capacity + elapsed * refill / period` times.
    #[test]
    fn bucket_gives_no_more_than_burst_plus_rate(
        (capacity, refill, period) in limits(),
        steps in prop::collection::vec(0..=500u64, 1..300),
    ) {
        let start = 5_000u64;
        let mut bucket = TokenBucket::new(capacity, refill, period, start);
        let (mut now, mut taken) = (start, 0u64);
        for dt in steps {
            now += dt;
            taken += u64::from(bucket.try_take(now));
        }
        let allowed = u64::from(capacity)
            + (now - start) * u64::from(refill) / period.max(1);
        prop_assert!(taken <= allowed, "{taken} taken, {allowed} allowed");
    }

    /// A client that takes all it can every millisecond gets exactly the burst plus the rate
    /// (with room for two tokens, so that no fraction of a token is lost at the cap).
    #[test]
    fn bucket_honours_its_rate(
        capacity in 2..=10u32,
        period in 1..=1_000u64,
        refill_share in 1..=1_000u64,
        run_ms in 0..=5_000u64,
    ) {
        // At most one token per millisecond.
        let refill = u32::try_from(refill_share.min(period)).unwrap_or(1);
        let mut bucket = TokenBucket::new(capacity, refill, period, 0);
        let mut taken = 0u64;
        for now in 0..=run_ms {
            while bucket.try_take(now) {
                taken += 1;
            }
        }
        let expected = u64::from(capacity) + run_ms * u64::from(refill) / period;
        prop_assert_eq!(taken, expected);
    }

    /// `ms_until_token` is exact: a token is there that many milliseconds later, and not one
    /// millisecond sooner; `None` only when the bucket never refills.
    #[test]
    fn ms_until_token_is_exact(
        (capacity, refill, period) in limits(),
        takes in 0..30usize,
        now in 0..100_000u64,
    ) {
        let mut bucket = TokenBucket::new(capacity, refill, period, now);
        for _ in 0..takes {
            bucket.try_take(now);
        }
        match bucket.ms_until_token(now) {
            Some(wait) => {
                prop_assert!(bucket.clone().try_take(now + wait));
                if wait > 0 {
                    prop_assert!(!bucket.clone().try_take(now + wait - 1));
                }
            }
            None => {
                prop_assert!(refill == 0 || capacity == 0);
                prop_assert!(!bucket.clone().try_take(u64::MAX));
            }
        }
    }

    /// Per-user caps answer like one bucket per user (full when first seen), and evicting full
    /// buckets never changes an answer while it keeps exactly the buckets that are not full.
    #[test]
    fn user_buckets_match_independent_buckets(
        per_hour in 0..=5u32,
        steps in prop::collection::vec((0..4usize, 0..=900_000u64, any::<bool>()), 1..100),
    ) {
        let mut caps = UserBuckets::new(per_hour);
        let mut model: HashMap<usize, TokenBucket> = HashMap::new();
        let mut now = 0u64;
        for (user, dt, evict) in steps {
            now += dt;
            let name = format!("user-{user}");
            let bucket = model
                .entry(user)
                .or_insert_with(|| TokenBucket::new(per_hour, per_hour, MS_PER_HOUR, now));
            let expected = per_hour == 0 || bucket.try_take(now);
            prop_assert_eq!(caps.try_take(&name, now), expected);
            if evict {
                caps.evict_full(now);
                let not_full = model
                    .values_mut()
                    .map(|b| b.available(now))
                    .filter(|&tokens| per_hour > 0 && tokens < u64::from(per_hour))
                    .count();
                prop_assert_eq!(caps.len(), not_full);
            }
        }
    }
}
