//! Admission control for notification requests: one per shard, so that more intake than the
//! shard can parse, accept and make durable is refused fast with `503 overloaded` and
//! `Retry-After` instead of queueing in connections, handlers and the log's undurable queue with
//! a latency that grows without bound.
//!
//! It is an adaptive concurrency limit, as in Netflix's concurrency-limits (`AIMDLimit`,
//! `Gradient2Limit`) and Envoy's adaptive concurrency filter: a shard lets at most `limit`
//! bytes of notification requests be in service at once (from their body's arrival to their
//! answer, the fsync included), and adapts the limit to the latency it sees:
//!
//! - a request served within its target (`TARGET_LATENCY`, plus the time its body takes at
//!   `SERVICE_BYTES_PER_S`, so a batch of 1,000 is not slow for being large) raises the limit
//!   by its own size, but only while the limit is in use (at least half of it in service), so
//!   an idle server's limit does not creep up and a sudden overload meets a limit close to
//!   what was needed;
//! - one served slower cuts it in proportion (`limit × target / latency`, to no less than
//!   half), at most once per `DECREASE_INTERVAL` so one slow burst counts once.
//!
//! By Little's law the work in service is throughput × latency, so capping it while latency is
//! over the target caps the latency. Work is counted in body bytes, not requests: a batch of
//! 1,000 is a thousand times a single's work, and a limit in requests that keeps batches'
//! latency bounded (a few dozen) is one a steady stream of singles fills in a 64 ms disk stall
//! or while the shard drains a backlog beside its intake. Measured with a 64-request limit at
//! 2,000 singles/s: the intake was refused 35,620 times during two drains of a provider
//! outage's backlog (the group commits then took 40–80 ms, so the limit fell to its floor of
//! 4 and nearly every single was refused for 20 s). `MIN_LIMIT` is the floor in bytes: about
//! 330 singles or 3 batches of 100.
//!
//! A latency limit cannot tell a normal intake on a slow log (a provider outage's backlog
//! draining beside it) from an overload: both hold the same bytes in service. A rate can, so
//! past the limit a core still admits up to `GUARANTEED_BYTES_PER_S` of requests no larger
//! than `GUARANTEED_MAX_REQUEST` (a token bucket), and refuses only what comes faster.
//!
//! A request past the limit (and the guaranteed rate) is refused before its body is read when
//! the limit is already reached at its head, else once its body has arrived (read, not
//! parsed): neither is parsed,
//! accepted or written. Bodies are read before a request counts, so a slow client holds body
//! budget (`body.rs`), not a place (and its slowness does not cut the limit); the time a
//! request waits before the core reads it is not seen either, so clients see somewhat more than
//! the target. State lives in `Cell`s on the shard's executor.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::api::error::ApiError;

/// Latency (body arrived → answered) above which the shard is taking more than it can serve.
/// A 100-item batch is answered in 2–6 ms at p99 at half this machine's capacity (release
/// build; 7–15 ms in a debug build); a disk stall alone reaches 50–80 ms but passes: it halves
/// the limit at most, once, and the limit grows back as requests are answered.
pub const TARGET_LATENCY: Duration = Duration::from_millis(30);
/// The pace at which a request's body is assumed to be served, which adds to its target: about
/// 18,000 notifications a second, under what one core of a release build does. A batch of
/// 1,000 (about 230 KB) may take 85 ms, a batch of 100 35 ms, a single 30 ms. Measured without
/// it: batches of 1,000 at 30,000/s were answered in 51 ms at the median, so every answer cut
/// the limit, to its floor (less than one such batch), and 2,294 of 5,001 batches were refused
/// while the log kept up.
pub const SERVICE_BYTES_PER_S: f64 = 4.0 * 1024.0 * 1024.0;

/// The latency target of a request of `bytes`.
fn target(bytes: usize) -> Duration {
    TARGET_LATENCY + Duration::from_secs_f64(bytes as f64 / SERVICE_BYTES_PER_S)
}

/// The least time between two cuts of the limit: the latency of one request is at most this
/// old news when the next cut comes, and one slow burst is counted once.
pub const DECREASE_INTERVAL: Duration = Duration::from_millis(50);
/// The limit never goes below this many bytes in service: a shard always takes a normal intake
/// through a short disk stall or a backlog's drain (1,000 singles a second of about 200 bytes
/// are 60 KB in service through a 300 ms stall, 16 KB at a drain's 80 ms commits), and batches
/// of 100 (about 20 KB each), 3 at a time, keep an overloaded debug build's latency bounded
/// (at 256 and 128 KiB its worst latency each second reached 500–570 ms in the overload test
/// and grew over the run, as the log's flushes slowed it down).
pub const MIN_LIMIT: f64 = 64.0 * 1024.0;
/// Nor above this: four of the largest batches (8 MiB), far above what the shard needs (about
/// 12 KB of singles in service at 30,000/s with a 2 ms fsync).
pub const MAX_LIMIT: f64 = 32.0 * 1024.0 * 1024.0;
/// The limit a shard starts with: enough for the usual load; it grows while in use.
pub const INITIAL_LIMIT: f64 = 1024.0 * 1024.0;
/// Bytes a second a core admits past its limit, whatever the latency: a normal intake is never
/// refused because something else made the log slow. During a provider outage's drain the
/// shard's group commits carry the drain's updates and take 100–400 ms, so a limit at its
/// floor refused 3,753 and 5,401 of a 2,000/s intake of singles (two 10-minute outage runs);
/// the floor alone cannot tell that intake from an overload, a rate can. At 256 KiB/s it still
/// refused 278 in the same run: the load generator's 4 connections need not land 2 and 2 on the
/// cores, so one core may take 3,000 singles of 230 bytes a second or more. 1 MiB/s is about
/// 4,500 singles a second per core, a sixth of what a core serves in a release build.
pub const GUARANTEED_BYTES_PER_S: f64 = 1024.0 * 1024.0;
/// What the guaranteed rate may lend at once: about 280 singles, what a 2,000/s intake brings
/// in 140 ms, so that requests arriving together after the core was busy (the drain's work
/// holds an executor for tens of milliseconds) are not refused for arriving together. With
/// 8 KiB, 2,055 of such a run's singles were refused during the drain, about 5% of them.
pub const GUARANTEED_BURST: f64 = 64.0 * 1024.0;
/// The largest request the guaranteed rate lends to (a batch of up to about 17): the trickle it
/// is for is singles and small batches, and lending to batches of 100 in the overload test
/// raised the admitted p99 from 315–343 to 467–533 ms in a debug build.
pub const GUARANTEED_MAX_REQUEST: usize = 4 * 1024;

/// One shard's admission state.
#[derive(Debug)]
pub struct Admission {
    limit: Cell<f64>,
    /// Bytes of the requests in service.
    in_service: Cell<usize>,
    last_decrease: Cell<Option<Instant>>,
    /// Bytes the guaranteed rate lends now (a token bucket: `GUARANTEED_BYTES_PER_S`, at most
    /// `GUARANTEED_BURST`), and when it was last refilled.
    allowance: Cell<f64>,
    refilled: Cell<Instant>,
}

impl Default for Admission {
    fn default() -> Self {
        Admission::new()
    }
}

/// A request in service; its latency adapts the limit when it is dropped (answered, failed or
/// reset).
#[derive(Debug)]
pub struct InService<'a> {
    admission: &'a Admission,
    bytes: usize,
    since: Instant,
}

impl Drop for InService<'_> {
    fn drop(&mut self) {
        let a = self.admission;
        a.in_service
            .set(a.in_service.get().saturating_sub(self.bytes));
        a.observe(self.bytes, self.since.elapsed(), Instant::now());
    }
}

fn overloaded(in_service: usize) -> ApiError {
    ApiError::overloaded(format!(
        "this server core is overloaded: {} KiB of requests are in service, its current limit \
         (it adapts to keep latency under {} ms); retry later",
        in_service / 1024,
        TARGET_LATENCY.as_millis()
    ))
}

impl Admission {
    pub fn new() -> Admission {
        Admission {
            limit: Cell::new(INITIAL_LIMIT),
            in_service: Cell::new(0),
            last_decrease: Cell::new(None),
            allowance: Cell::new(GUARANTEED_BURST),
            refilled: Cell::new(Instant::now()),
        }
    }

    fn full(&self) -> bool {
        self.in_service.get() as f64 >= self.limit.get().floor()
    }

    /// The guaranteed rate's allowance at `now`, refilled since it was last looked at.
    fn allowance_at(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.refilled.get());
        let allowance = (self.allowance.get() + elapsed.as_secs_f64() * GUARANTEED_BYTES_PER_S)
            .min(GUARANTEED_BURST);
        self.allowance.set(allowance);
        self.refilled.set(now.max(self.refilled.get()));
        allowance
    }

    /// The check at a request's head, before its body is read: refused when the limit is
    /// reached and the guaranteed rate has nothing left to lend.
    pub fn check(&self) -> Result<(), ApiError> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Result<(), ApiError> {
        if self.full() && self.allowance_at(now) < 1.0 {
            return Err(overloaded(self.in_service.get()));
        }
        Ok(())
    }

    /// Takes a place for a request whose body (of `bytes`) has arrived, or refuses it. The last
    /// request admitted may take the work in service past the limit; past it, a request is
    /// admitted only on the guaranteed rate's allowance, which it then spends.
    pub fn admit(&self, bytes: usize) -> Result<InService<'_>, ApiError> {
        self.admit_at(bytes, Instant::now())
    }

    fn admit_at(&self, bytes: usize, now: Instant) -> Result<InService<'_>, ApiError> {
        // An empty body still takes a place, so that it is counted and seen.
        let bytes = bytes.max(1);
        if self.full() {
            let allowance = self.allowance_at(now);
            if bytes > GUARANTEED_MAX_REQUEST || allowance < bytes as f64 {
                return Err(overloaded(self.in_service.get()));
            }
            self.allowance.set(allowance - bytes as f64);
        }
        self.in_service.set(self.in_service.get() + bytes);
        Ok(InService {
            admission: self,
            bytes,
            since: Instant::now(),
        })
    }

    /// Adapts the limit to one request's latency.
    fn observe(&self, bytes: usize, latency: Duration, now: Instant) {
        let limit = self.limit.get();
        let target = target(bytes);
        if latency > target {
            let due = self
                .last_decrease
                .get()
                .is_none_or(|t| now.saturating_duration_since(t) >= DECREASE_INTERVAL);
            if due {
                let ratio = (target.as_secs_f64() / latency.as_secs_f64()).max(0.5);
                self.limit.set((limit * ratio).max(MIN_LIMIT));
                self.last_decrease.set(Some(now));
            }
        } else if self.in_service.get() as f64 * 2.0 >= limit {
            self.limit.set((limit + bytes as f64).min(MAX_LIMIT));
        }
    }

    /// The current limit in bytes (for tests and logs).
    pub fn limit(&self) -> f64 {
        self.limit.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A single notification's body, about.
    const SINGLE: usize = 200;

    /// An admission whose guaranteed rate lends nothing, to see the limit alone.
    fn limit_only() -> Admission {
        let a = Admission::new();
        a.allowance.set(f64::NEG_INFINITY);
        a
    }

    #[test]
    fn requests_past_the_limit_are_refused_and_places_given_back() {
        let a = limit_only();
        let held: Vec<_> = (0..INITIAL_LIMIT as usize / SINGLE + 1)
            .map(|_| a.admit(SINGLE).expect("within the limit"))
            .collect();
        let e = a.check().expect_err("at the limit");
        assert_eq!(
            (e.status, e.code, e.retry_after_s),
            (503, "overloaded", Some(1))
        );
        assert!(a.admit(SINGLE).is_err());
        drop(held);
        assert_eq!(a.in_service.get(), 0);
        assert!(a.admit(SINGLE).is_ok());
    }

    #[test]
    fn work_is_counted_in_bytes_so_a_batch_weighs_its_items() {
        let a = limit_only();
        // A batch of 1,000 (about 200 KB) takes the place of about a thousand singles.
        let batch = a.admit(1000 * SINGLE).expect("room");
        assert_eq!(a.in_service.get(), 1000 * SINGLE);
        let singles: Vec<_> = std::iter::from_fn(|| a.admit(SINGLE).ok())
            .take(10_000)
            .collect();
        let room = (INITIAL_LIMIT as usize - 1000 * SINGLE).div_ceil(SINGLE);
        assert_eq!(singles.len(), room);
        drop(batch);
        assert!(a.admit(SINGLE).is_ok());
    }

    #[test]
    fn a_normal_intake_through_a_long_stall_is_never_refused_even_at_the_floor() {
        let a = limit_only();
        let t0 = Instant::now();
        for i in 0..40 {
            a.observe(SINGLE, 10 * TARGET_LATENCY, t0 + DECREASE_INTERVAL * i);
        }
        assert_eq!(a.limit(), MIN_LIMIT);
        // 1,000 singles a second held by a 300 ms stall of the log.
        let held: Vec<_> = (0..300)
            .map(|_| a.admit(SINGLE).expect("300 ms of singles fit the floor"))
            .collect();
        assert_eq!(held.len(), 300);
    }

    #[test]
    fn past_the_limit_a_normal_intake_passes_on_the_guaranteed_rate_and_no_more() {
        let a = Admission::new();
        let t0 = Instant::now();
        a.refilled.set(t0);
        a.in_service.set(MIN_LIMIT as usize);
        a.limit.set(MIN_LIMIT);
        // The burst: about 330 singles at once, then refused.
        let burst: Vec<_> = std::iter::from_fn(|| a.admit_at(SINGLE, t0).ok())
            .take(10_000)
            .collect();
        assert_eq!(burst.len(), GUARANTEED_BURST as usize / SINGLE);
        assert!(a.admit_at(SINGLE, t0).is_err());
        // Then the rate: over 10 s in 1 ms steps (all still in service, as in a long stall),
        // 1,000 singles a second all pass...
        let mut held = Vec::new();
        let mut refused = 0;
        for ms in 1..=10_000u64 {
            let now = t0 + Duration::from_millis(ms);
            match a.check_at(now).and_then(|()| a.admit_at(SINGLE, now)) {
                Ok(r) => held.push(r),
                Err(_) => refused += 1,
            }
        }
        assert_eq!(refused, 0);
        // ... while an overload of 10,000 a second gets about the guaranteed rate through.
        let t1 = t0 + Duration::from_secs(20);
        a.allowance.set(0.0);
        a.refilled.set(t1);
        let mut admitted = 0usize;
        for tenth_ms in 1..=100_000u64 {
            let now = t1 + Duration::from_micros(100 * tenth_ms);
            if let Ok(r) = a.admit_at(SINGLE, now) {
                admitted += SINGLE;
                held.push(r);
            }
        }
        let expected = 10.0 * GUARANTEED_BYTES_PER_S;
        assert!(
            (admitted as f64 - expected).abs() <= f64::from(SINGLE as u32) * 2.0,
            "admitted {admitted} bytes in 10 s, expected about {expected}"
        );
        // A batch larger than `GUARANTEED_MAX_REQUEST` is never lent for, even with the
        // allowance full; a small one is.
        a.allowance.set(GUARANTEED_BURST);
        let later = t1 + Duration::from_secs(11);
        a.refilled.set(later);
        assert!(a.admit_at(GUARANTEED_MAX_REQUEST + 1, later).is_err());
        assert!(a.admit_at(GUARANTEED_MAX_REQUEST, later).is_ok());
        drop((burst, held));
    }

    #[test]
    fn a_large_batch_is_allowed_the_time_its_size_takes() {
        let a = limit_only();
        let t0 = Instant::now();
        a.in_service.set(INITIAL_LIMIT as usize);
        // A batch of 1,000 answered in 60 ms is within its target: the limit grows.
        a.observe(1000 * SINGLE, Duration::from_millis(60), t0);
        assert_eq!(a.limit(), INITIAL_LIMIT + (1000 * SINGLE) as f64);
        // A single answered in 100 ms is slow: the limit is cut to half its former value.
        a.observe(SINGLE, Duration::from_millis(100), t0);
        assert_eq!(a.limit(), (INITIAL_LIMIT + (1000 * SINGLE) as f64) / 2.0);
        // The same batch in 120 ms is slow too, in proportion to its own target.
        let before = a.limit();
        a.observe(
            1000 * SINGLE,
            Duration::from_millis(120),
            t0 + DECREASE_INTERVAL,
        );
        let ratio = target(1000 * SINGLE).as_secs_f64() / 0.12;
        assert!(ratio > 0.5 && ratio < 1.0);
        assert!(
            (a.limit() - before * ratio).abs() < 1.0,
            "{} vs {}",
            a.limit(),
            before * ratio
        );
    }

    #[test]
    fn slow_answers_cut_the_limit_once_per_interval_down_to_the_floor() {
        let a = Admission::new();
        let t0 = Instant::now();
        // Three times the target: the limit is cut in proportion, at most by half.
        a.observe(SINGLE, 3 * TARGET_LATENCY, t0);
        assert_eq!(a.limit(), INITIAL_LIMIT / 2.0);
        // Within the interval: no second cut for the same slow burst.
        a.observe(SINGLE, 3 * TARGET_LATENCY, t0 + DECREASE_INTERVAL / 2);
        assert_eq!(a.limit(), INITIAL_LIMIT / 2.0);
        a.observe(SINGLE, target(SINGLE) * 5 / 4, t0 + DECREASE_INTERVAL);
        assert!((a.limit() - INITIAL_LIMIT / 2.0 * 0.8).abs() < 1.0);
        for i in 2..40 {
            a.observe(SINGLE, 10 * TARGET_LATENCY, t0 + DECREASE_INTERVAL * i);
        }
        assert_eq!(a.limit(), MIN_LIMIT);
    }

    #[test]
    fn fast_answers_raise_the_limit_by_their_size_only_while_it_is_in_use() {
        let a = Admission::new();
        let now = Instant::now();
        // Idle (nothing else in service): a fast answer leaves the limit alone.
        a.observe(SINGLE, Duration::from_millis(1), now);
        assert_eq!(a.limit(), INITIAL_LIMIT);
        a.in_service.set(INITIAL_LIMIT as usize / 2);
        a.observe(SINGLE, Duration::from_millis(1), now);
        assert_eq!(a.limit(), INITIAL_LIMIT + SINGLE as f64);
        a.in_service.set(MAX_LIMIT as usize);
        for _ in 0..2000 {
            a.observe(100 * SINGLE, Duration::from_millis(1), now);
        }
        assert_eq!(a.limit(), MAX_LIMIT);
    }
}
