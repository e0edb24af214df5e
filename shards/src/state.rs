//! The one delivery state machine: how the answer to an attempt ([`Verdict`]) moves a
//! [`DeliveryRecord`] between states, when it is retried ([`RetryPolicy`], exponential backoff with
//! full jitter from a per-shard [`Jitter`]), and when it gives up (dead-letter).
//!
//! ```text
//!   Queued ──┬─ Sent ───────────────────────────▶ Sent        (terminal)
//!   Retrying ┼─ Retry*, attempts < max ─────────▶ Retrying    (next_attempt_at_ms set)
//!            ├─ Retry*, attempts == max ────────▶ Dead        ("retries exhausted: ...")
//!            ├─ Permanent ──────────────────────▶ Failed
//!            ├─ Expired ────────────────────────▶ Expired
//!            ├─ Suppressed ─────────────────────▶ Suppressed
//!            └─ GiveUp ─────────────────────────▶ Dead        (no attempt spent)
//!   any terminal state ── any verdict ──────────▶ Error::InvalidTransition
//!
//!   Retry* = Retry, Unavailable or ConfigFault (the engine applies Unavailable only while the
//!   channel's breaker says the provider as a whole answers, and ConfigFault never: it holds
//!   the delivery behind the open breaker, and past `config_fault_dead_after` gives it up)
//! ```

use uuid::Uuid;

use crate::error::Error;
use crate::record::{Channel, DeliveryEvent, DeliveryRecord, DeliveryState};

/// The one answer to a delivery attempt, or to the decision not to make one: what a channel's
/// sender reports, what the engine feeds its circuit breaker and this state machine, and what
/// `GET /v1/notifications/{id}` ends up showing. Senders answer in these terms directly; no
/// channel has a vocabulary of its own to translate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The provider accepted the message.
    Sent,
    /// The provider answered about this delivery, transiently (a device throttled, `429`):
    /// retry later; it spends an attempt. `retry_after_ms` is the provider's hint.
    Retry {
        reason: String,
        retry_after_ms: Option<u64>,
    },
    /// The provider did not answer about this delivery: it could not be reached (connection
    /// refused, TLS failure, timeout, connection lost) or failed as a service (5xx). The engine
    /// feeds it to the channel's circuit breaker and spends an attempt only while the provider
    /// otherwise answers; applied here, it is retried like [`Verdict::Retry`].
    Unavailable {
        reason: String,
        retry_after_ms: Option<u64>,
    },
    /// Never deliverable as is (bad token, payload too large, ...). `deactivate` is the
    /// provider's word for why the target is gone for good (APNs' `Unregistered`, FCM's
    /// `UNREGISTERED`), when it is: its device is deactivated with that reason.
    /// `unregistered_at_ms` is when the provider last found it gone (unix ms), if it said: a
    /// device registered with us after that has come back.
    Permanent {
        reason: String,
        deactivate: Option<String>,
        unregistered_at_ms: Option<u64>,
    },
    /// Our credentials or setup are wrong (or the channel is off): an operator must act. The
    /// engine holds the delivery behind the open breaker; applied here, it is retried no
    /// sooner than [`CONFIG_FAULT_RETRY_MS`].
    ConfigFault { reason: String },
    /// The notification's TTL ran out before it could be sent.
    Expired,
    /// Not sent on purpose (opted out, frequency cap, quiet hours, ...).
    Suppressed { reason: String },
    /// The engine stops trying without an attempt: the delivery sat behind a configuration
    /// fault longer than `[delivery] config_fault_dead_after_seconds`. Dead.
    GiveUp { reason: String },
}

impl Verdict {
    /// A permanent failure that leaves the target active.
    #[must_use]
    pub fn permanent(reason: impl Into<String>) -> Verdict {
        Verdict::Permanent {
            reason: reason.into(),
            deactivate: None,
            unregistered_at_ms: None,
        }
    }

    /// Short name for errors, logs and metrics labels.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Sent => "sent",
            Verdict::Retry { .. } => "retry",
            Verdict::Unavailable { .. } => "unavailable",
            Verdict::Permanent { .. } => "permanent",
            Verdict::ConfigFault { .. } => "config_fault",
            Verdict::Expired => "expired",
            Verdict::Suppressed { .. } => "suppressed",
            Verdict::GiveUp { .. } => "give_up",
        }
    }

    /// Whether sending the same message again could succeed.
    #[must_use]
    pub fn retry_can_help(&self) -> bool {
        matches!(self, Verdict::Retry { .. } | Verdict::Unavailable { .. })
    }
}

/// A configuration fault (bad key, wrong team, a channel that is off) is retried no sooner
/// than this, not hammered: an operator has to act first.
pub const CONFIG_FAULT_RETRY_MS: u64 = 60_000;

/// When to retry and when to give up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Backoff ceiling of the first retry; doubles with every attempt.
    pub base_ms: u64,
    /// Largest backoff ceiling, however many attempts were made.
    pub max_ms: u64,
    /// After this many attempts a retryable failure becomes `Dead` instead of `Retrying`.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// 500 ms doubling up to 5 minutes, 8 attempts: about 10 minutes of trying in the worst case,
    /// enough to ride out a provider incident without holding deliveries for hours.
    fn default() -> Self {
        RetryPolicy {
            base_ms: 500,
            max_ms: 5 * 60 * 1000,
            max_attempts: 8,
        }
    }
}

impl RetryPolicy {
    /// The backoff ceiling after `attempts` attempts: `min(max_ms, base_ms * 2^(attempts-1))`.
    #[must_use]
    pub fn ceiling_ms(&self, attempts: u32) -> u64 {
        let doublings = attempts.saturating_sub(1);
        let factor = 1u64.checked_shl(doublings).unwrap_or(u64::MAX);
        self.base_ms.saturating_mul(factor).min(self.max_ms)
    }
}

/// A tiny xorshift64* generator for retry jitter, one per shard: no locks, no `rand` crate, and
/// reproducible in tests. Not for anything security-related.
#[derive(Clone, Debug)]
pub struct Jitter {
    state: u64,
}

impl Jitter {
    /// A generator seeded from `seed` (mixed first, so small seeds like a shard number are fine).
    #[must_use]
    pub fn new(seed: u64) -> Self {
        let mixed = crate::routing::splitmix64_mix(seed.wrapping_add(0x9e37_79b9_7f4a_7c15));
        // xorshift must never hold 0.
        Jitter {
            state: if mixed == 0 {
                0x9e37_79b9_7f4a_7c15
            } else {
                mixed
            },
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value uniform in `0..=max` (multiply-high reduction, no modulo bias worth mentioning).
    pub fn up_to(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            return self.next_u64();
        }
        ((u128::from(self.next_u64()) * u128::from(max + 1)) >> 64) as u64
    }
}

impl DeliveryRecord {
    /// A new delivery in `Queued`, with the `Queued` event recorded at `now_ms`.
    #[must_use]
    pub fn new_queued(id: Uuid, channel: Channel, target: impl Into<String>, now_ms: u64) -> Self {
        DeliveryRecord {
            id,
            channel,
            target: target.into(),
            state: DeliveryState::Queued,
            attempts: 0,
            next_attempt_at_ms: None,
            history: {
                // Room for the usual life, queued then sent, in one allocation.
                let mut history = Vec::with_capacity(2);
                history.push(DeliveryEvent {
                    at_ms: now_ms,
                    state: DeliveryState::Queued,
                    attempt: 0,
                    reason: None,
                });
                history
            },
        }
    }

    /// Applies `outcome` at `now_ms` and returns the new state.
    ///
    /// `Sent`, `Retryable` and `Permanent` count as an attempt; `Expired` and `Suppressed` do not
    /// (nothing was sent). A `Retryable` outcome schedules the next attempt at
    /// `now + max(retry_after, full-jitter backoff)`, or goes `Dead` once `attempts` reaches
    /// `policy.max_attempts`. Terminal states reject every outcome with
    /// [`Error::InvalidTransition`] and leave the record untouched.
    pub fn apply(
        &mut self,
        verdict: Verdict,
        now_ms: u64,
        policy: &RetryPolicy,
        jitter: &mut Jitter,
    ) -> Result<DeliveryState, Error> {
        if self.state.is_terminal() {
            return Err(Error::InvalidTransition {
                from: self.state,
                outcome: verdict.name(),
            });
        }
        let mut next_attempt_at_ms = None;
        let (state, reason) = match verdict {
            Verdict::Sent => {
                self.attempts = self.attempts.saturating_add(1);
                (DeliveryState::Sent, None)
            }
            Verdict::Permanent { reason, .. } => {
                self.attempts = self.attempts.saturating_add(1);
                (DeliveryState::Failed, Some(reason))
            }
            Verdict::Retry {
                reason,
                retry_after_ms,
            }
            | Verdict::Unavailable {
                reason,
                retry_after_ms,
            } => self.retry(
                reason,
                retry_after_ms,
                now_ms,
                policy,
                jitter,
                &mut next_attempt_at_ms,
            ),
            Verdict::ConfigFault { reason } => self.retry(
                format!("configuration fault: {reason}"),
                Some(CONFIG_FAULT_RETRY_MS),
                now_ms,
                policy,
                jitter,
                &mut next_attempt_at_ms,
            ),
            Verdict::Expired => (DeliveryState::Expired, None),
            Verdict::Suppressed { reason } => (DeliveryState::Suppressed, Some(reason)),
            Verdict::GiveUp { reason } => (DeliveryState::Dead, Some(reason)),
        };
        self.state = state;
        self.next_attempt_at_ms = next_attempt_at_ms;
        self.history.push(DeliveryEvent {
            at_ms: now_ms,
            state,
            attempt: self.attempts,
            reason,
        });
        Ok(state)
    }

    /// A retryable answer: one attempt spent, then `Retrying` at
    /// `now + max(retry_after, full-jitter backoff)`, or `Dead` once the attempts run out.
    fn retry(
        &mut self,
        reason: String,
        retry_after_ms: Option<u64>,
        now_ms: u64,
        policy: &RetryPolicy,
        jitter: &mut Jitter,
        next_attempt_at_ms: &mut Option<u64>,
    ) -> (DeliveryState, Option<String>) {
        self.attempts = self.attempts.saturating_add(1);
        if self.attempts >= policy.max_attempts {
            return (
                DeliveryState::Dead,
                Some(format!("retries exhausted: {reason}")),
            );
        }
        let backoff = jitter.up_to(policy.ceiling_ms(self.attempts));
        let delay = backoff.max(retry_after_ms.unwrap_or(0));
        *next_attempt_at_ms = Some(now_ms.saturating_add(delay));
        (DeliveryState::Retrying, Some(reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    fn queued() -> DeliveryRecord {
        DeliveryRecord::new_queued(Uuid::from_u128(7), Channel::Apns, "tok", NOW - 10)
    }

    fn retryable(after: Option<u64>) -> Verdict {
        Verdict::Retry {
            reason: "503".into(),
            retry_after_ms: after,
        }
    }

    fn run(d: &mut DeliveryRecord, o: Verdict) -> Result<DeliveryState, Error> {
        d.apply(o, NOW, &RetryPolicy::default(), &mut Jitter::new(1))
    }

    #[test]
    fn new_queued_records_the_queued_event() {
        let d = queued();
        assert_eq!(d.state, DeliveryState::Queued);
        assert_eq!(d.attempts, 0);
        assert_eq!(d.history.len(), 1);
        assert_eq!(d.history[0].state, DeliveryState::Queued);
        assert_eq!(d.history[0].at_ms, NOW - 10);
    }

    #[test]
    fn sent_counts_an_attempt_and_is_terminal() {
        let mut d = queued();
        assert_eq!(run(&mut d, Verdict::Sent).unwrap(), DeliveryState::Sent);
        assert_eq!(d.attempts, 1);
        assert_eq!(d.next_attempt_at_ms, None);
        let last = d.history.last().unwrap();
        assert_eq!(
            (last.state, last.attempt, last.at_ms),
            (DeliveryState::Sent, 1, NOW)
        );
    }

    #[test]
    fn permanent_fails_with_reason() {
        let mut d = queued();
        let s = run(&mut d, Verdict::permanent("BadDeviceToken")).unwrap();
        assert_eq!(s, DeliveryState::Failed);
        assert_eq!(d.attempts, 1);
        assert_eq!(d.history[1].reason.as_deref(), Some("BadDeviceToken"));
    }

    #[test]
    fn expired_and_suppressed_do_not_count_attempts() {
        let mut d = queued();
        assert_eq!(
            run(&mut d, Verdict::Expired).unwrap(),
            DeliveryState::Expired
        );
        assert_eq!(d.attempts, 0);
        let mut d = queued();
        let s = run(
            &mut d,
            Verdict::Suppressed {
                reason: "opted out".into(),
            },
        )
        .unwrap();
        assert_eq!(s, DeliveryState::Suppressed);
        assert_eq!(d.attempts, 0);
        assert_eq!(d.history[1].reason.as_deref(), Some("opted out"));
    }

    #[test]
    fn giving_up_is_dead_without_an_attempt() {
        let mut d = queued();
        let reason = "configuration fault for over 3600 s: fcm is off".to_string();
        let s = run(
            &mut d,
            Verdict::GiveUp {
                reason: reason.clone(),
            },
        )
        .unwrap();
        assert_eq!(s, DeliveryState::Dead);
        assert_eq!(d.attempts, 0);
        assert_eq!(d.history[1].reason, Some(reason));
    }

    #[test]
    fn retryable_schedules_within_the_jittered_ceiling() {
        let policy = RetryPolicy::default();
        let mut jitter = Jitter::new(42);
        let mut d = queued();
        for attempt in 1..policy.max_attempts {
            let s = d.apply(retryable(None), NOW, &policy, &mut jitter).unwrap();
            assert_eq!(s, DeliveryState::Retrying);
            assert_eq!(d.attempts, attempt);
            let at = d.next_attempt_at_ms.unwrap();
            assert!(
                at >= NOW && at <= NOW + policy.ceiling_ms(attempt),
                "attempt {attempt}"
            );
        }
        assert_eq!(policy.ceiling_ms(1), 500);
        assert_eq!(policy.ceiling_ms(3), 2000);
        assert_eq!(policy.ceiling_ms(30), policy.max_ms);
        assert_eq!(policy.ceiling_ms(200), policy.max_ms);
    }

    #[test]
    fn retry_after_is_a_floor() {
        let mut d = queued();
        run(&mut d, retryable(Some(60_000))).unwrap();
        assert_eq!(d.next_attempt_at_ms, Some(NOW + 60_000));
    }

    #[test]
    fn a_configuration_fault_waits_a_minute_and_says_why() {
        let mut d = queued();
        let fault = Verdict::ConfigFault {
            reason: "403 InvalidProviderToken".into(),
        };
        assert_eq!(run(&mut d, fault).unwrap(), DeliveryState::Retrying);
        assert_eq!(d.attempts, 1);
        assert!(d.next_attempt_at_ms.unwrap() >= NOW + CONFIG_FAULT_RETRY_MS);
        assert_eq!(
            d.history.last().unwrap().reason.as_deref(),
            Some("configuration fault: 403 InvalidProviderToken")
        );
    }

    #[test]
    fn retries_exhaust_into_dead() {
        let policy = RetryPolicy {
            base_ms: 1,
            max_ms: 10,
            max_attempts: 3,
        };
        let mut jitter = Jitter::new(3);
        let mut d = queued();
        assert_eq!(
            d.apply(retryable(None), NOW, &policy, &mut jitter).unwrap(),
            DeliveryState::Retrying
        );
        assert_eq!(
            d.apply(retryable(None), NOW, &policy, &mut jitter).unwrap(),
            DeliveryState::Retrying
        );
        assert_eq!(
            d.apply(retryable(None), NOW, &policy, &mut jitter).unwrap(),
            DeliveryState::Dead
        );
        assert_eq!(d.attempts, 3);
        assert_eq!(d.next_attempt_at_ms, None);
        assert_eq!(
            d.history.last().unwrap().reason.as_deref(),
            Some("retries exhausted: 503")
        );
    }

    #[test]
    fn retrying_can_still_succeed() {
        let mut d = queued();
        run(&mut d, retryable(None)).unwrap();
        assert_eq!(run(&mut d, Verdict::Sent).unwrap(), DeliveryState::Sent);
        assert_eq!(d.attempts, 2);
        assert_eq!(d.next_attempt_at_ms, None);
        assert_eq!(d.history.len(), 3);
    }

    #[test]
    fn terminal_states_reject_everything_and_stay_unchanged() {
        for terminal in [Verdict::Sent, Verdict::Expired, Verdict::permanent("x")] {
            let mut d = queued();
            run(&mut d, terminal).unwrap();
            let before = d.clone();
            for o in [Verdict::Sent, retryable(None), Verdict::Expired] {
                let name = o.name();
                match run(&mut d, o) {
                    Err(Error::InvalidTransition { from, outcome }) => {
                        assert_eq!(from, before.state);
                        assert_eq!(outcome, name);
                    }
                    other => panic!("expected InvalidTransition, got {other:?}"),
                }
            }
            assert_eq!(d, before);
        }
    }

    #[test]
    fn jitter_is_seeded_and_bounded() {
        let (mut a, mut b) = (Jitter::new(5), Jitter::new(5));
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Jitter::new(6).next_u64(), xs[0]);
        let mut j = Jitter::new(0);
        let mut seen_top = false;
        for _ in 0..10_000 {
            let v = j.up_to(9);
            assert!(v <= 9);
            seen_top |= v == 9;
        }
        assert!(seen_top);
        assert_eq!(j.up_to(0), 0);
    }
}
