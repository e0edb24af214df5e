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
//! - a request served within `TARGET_LATENCY` raises the limit by its own size, but only while
//!   the limit is in use (at least half of it in service), so an idle server's limit does not
//!   creep up and a sudden overload meets a limit close to what was needed;
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
//! A request past the limit is refused before its body is read when the limit is already
//! reached at its head, else once its body has arrived (read, not parsed): neither is parsed,
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

/// One shard's admission state.
#[derive(Debug)]
pub struct Admission {
    limit: Cell<f64>,
    /// Bytes of the requests in service.
    in_service: Cell<usize>,
    last_decrease: Cell<Option<Instant>>,
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
        }
    }

    fn full(&self) -> bool {
        self.in_service.get() as f64 >= self.limit.get().floor()
    }

    /// The check at a request's head, before its body is read.
    pub fn check(&self) -> Result<(), ApiError> {
        if self.full() {
            return Err(overloaded(self.in_service.get()));
        }
        Ok(())
    }

    /// Takes a place for a request whose body (of `bytes`) has arrived, or refuses it. The last
    /// request admitted may take the work in service past the limit; the next one is refused.
    pub fn admit(&self, bytes: usize) -> Result<InService<'_>, ApiError> {
        self.check()?;
        // An empty body still takes a place, so that it is counted and seen.
        let bytes = bytes.max(1);
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
        if latency > TARGET_LATENCY {
            let due = self
                .last_decrease
                .get()
                .is_none_or(|t| now.saturating_duration_since(t) >= DECREASE_INTERVAL);
            if due {
                let ratio = (TARGET_LATENCY.as_secs_f64() / latency.as_secs_f64()).max(0.5);
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

    #[test]
    fn requests_past_the_limit_are_refused_and_places_given_back() {
        let a = Admission::new();
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
        let a = Admission::new();
        // A batch of 1,000 (about 200 KB) takes the place of about a thousand singles.
        let batch = a.admit(1000 * SINGLE).expect("room");
        assert_eq!(a.in_service.get(), 1000 * SINGLE);
        let singles: Vec<_> = std::iter::from_fn(|| a.admit(SINGLE).ok()).take(10_000).collect();
        let room = (INITIAL_LIMIT as usize - 1000 * SINGLE).div_ceil(SINGLE);
        assert_eq!(singles.len(), room);
        drop(batch);
        assert!(a.admit(SINGLE).is_ok());
    }

    #[test]
    fn a_normal_intake_through_a_long_stall_is_never_refused_even_at_the_floor() {
        let a = Admission::new();
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
    fn slow_answers_cut_the_limit_once_per_interval_down_to_the_floor() {
        let a = Admission::new();
        let t0 = Instant::now();
        // Three times the target: the limit is cut in proportion, at most by half.
        a.observe(SINGLE, 3 * TARGET_LATENCY, t0);
        assert_eq!(a.limit(), INITIAL_LIMIT / 2.0);
        // Within the interval: no second cut for the same slow burst.
        a.observe(SINGLE, 3 * TARGET_LATENCY, t0 + DECREASE_INTERVAL / 2);
        assert_eq!(a.limit(), INITIAL_LIMIT / 2.0);
        a.observe(SINGLE, TARGET_LATENCY * 5 / 4, t0 + DECREASE_INTERVAL);
        assert_eq!(a.limit(), INITIAL_LIMIT / 2.0 * 0.8);
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
