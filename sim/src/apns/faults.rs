//! The fault plan in force and its deterministic random source: which tokens are dead or bad,
//! which share of requests fail or lose their connection, how late answers come. Replaced
//! whole at run time by `SimHandle::set_faults`; connections notice through a version counter
//! (one relaxed atomic load per request) instead of locking on every request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::config::Faults;
use super::reason::Reason;

/// SplitMix64: a tiny, fast, seedable generator; good enough for fault draws and ids.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
}

/// The SplitMix64 finalizer: a bijective scramble of a 64-bit value.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform draw in `0..1` from 64 random bits.
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Faults as installed, with the time the unregistered tokens became unregistered.
#[derive(Debug)]
pub(crate) struct FaultPlan {
    pub(crate) faults: Faults,
    /// The `timestamp` of 410 answers: when these faults were installed, in unix ms.
    unregistered_since_ms: u64,
}

/// What a connection does with a request before looking at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnAction {
    Serve,
    /// Serve it, then send GOAWAY.
    ServeThenGoAway,
    /// Close the connection without answering.
    Drop,
}

impl FaultPlan {
    /// The connection-level fault for the `n`th (1-based) request on a connection.
    pub(crate) fn connection_action(&self, n: u64, state: &FaultState) -> ConnAction {
        let f = &self.faults;
        if f.refuse_connections {
            return ConnAction::Drop;
        }
        if f.drop_after_requests == Some(n) || (f.drop_rate > 0.0 && state.draw() < f.drop_rate) {
            return ConnAction::Drop;
        }
        if f.goaway_after_requests == Some(n) {
            return ConnAction::ServeThenGoAway;
        }
        ConnAction::Serve
    }

    /// The answer forced on an otherwise valid request to `token`, if any.
    pub(crate) fn forced_reason(&self, token: &str, state: &FaultState) -> Option<Reason> {
        let f = &self.faults;
        if f.bad_device_tokens.contains(token) {
            return Some(Reason::BadDeviceToken);
        }
        if f.unregistered_tokens.contains(token) {
            return Some(Reason::Unregistered);
        }
        let total = f.too_many_requests_rate + f.internal_error_rate + f.unavailable_rate;
        if total <= 0.0 {
            return None;
        }
        let x = state.draw();
        if x < f.too_many_requests_rate {
            Some(Reason::TooManyRequests)
        } else if x < f.too_many_requests_rate + f.internal_error_rate {
            Some(Reason::InternalServerError)
        } else if x < total {
            Some(Reason::ServiceUnavailable)
        } else {
            None
        }
    }

    /// How long to hold this answer back.
    pub(crate) fn latency(&self, state: &FaultState) -> Duration {
        let f = &self.faults;
        let jitter = if f.jitter_us > 0 {
            (unit(state.draw_bits()) * (f.jitter_us + 1) as f64) as u64
        } else {
            0
        };
        Duration::from_micros(f.latency_us + jitter)
    }

    pub(crate) fn unregistered_since_ms(&self) -> u64 {
        self.unregistered_since_ms
    }
}

/// The plan in force, shared by all connections.
pub(crate) struct FaultState {
    plan: RwLock<Arc<FaultPlan>>,
    version: AtomicU64,
    draws: AtomicU64,
    seed: AtomicU64,
}

impl FaultState {
    pub(crate) fn new(faults: Faults) -> Self {
        let seed = faults.seed;
        FaultState {
            plan: RwLock::new(Arc::new(plan_of(faults))),
            version: AtomicU64::new(0),
            draws: AtomicU64::new(0),
            seed: AtomicU64::new(seed),
        }
    }

    /// Installs new faults (rates clamped into `0..=1`) and restarts the random sequence.
    pub(crate) fn set(&self, mut faults: Faults) {
        for r in [
            &mut faults.too_many_requests_rate,
            &mut faults.internal_error_rate,
            &mut faults.unavailable_rate,
            &mut faults.drop_rate,
        ] {
            *r = if r.is_nan() { 0.0 } else { r.clamp(0.0, 1.0) };
        }
        self.seed.store(faults.seed, Ordering::Relaxed);
        self.draws.store(0, Ordering::Relaxed);
        let plan = Arc::new(plan_of(faults));
        *self.plan.write().unwrap_or_else(|p| p.into_inner()) = plan;
        self.version.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn faults(&self) -> Faults {
        self.current().faults.clone()
    }

    /// Whether the plan in force refuses connections (the listener closes while it does).
    pub(crate) fn refusing(&self) -> bool {
        self.current().faults.refuse_connections
    }

    fn current(&self) -> Arc<FaultPlan> {
        self.plan.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn draw_bits(&self) -> u64 {
        let n = self.draws.fetch_add(1, Ordering::Relaxed);
        mix(self.seed.load(Ordering::Relaxed) ^ mix(n))
    }

    fn draw(&self) -> f64 {
        unit(self.draw_bits())
    }
}

fn plan_of(faults: Faults) -> FaultPlan {
    FaultPlan {
        faults,
        unregistered_since_ms: super::stats::unix_ms(),
    }
}

/// A connection's cached copy of the plan, refreshed when the version moves.
pub(crate) struct FaultView {
    version: u64,
    plan: Arc<FaultPlan>,
}

impl FaultView {
    pub(crate) fn new(state: &FaultState) -> Self {
        let version = state.version.load(Ordering::Acquire);
        FaultView {
            version,
            plan: state.current(),
        }
    }

    pub(crate) fn plan(&mut self, state: &FaultState) -> &Arc<FaultPlan> {
        let v = state.version.load(Ordering::Acquire);
        if v != self.version {
            self.version = v;
            self.plan = state.current();
        }
        &self.plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reasons(state: &FaultState, n: usize) -> Vec<Option<Reason>> {
        let plan = state.current();
        (0..n).map(|_| plan.forced_reason("t", state)).collect()
    }

    #[test]
    fn same_seed_same_sequence_and_rates_roughly_hold() {
        let f = Faults {
            unavailable_rate: 0.3,
            seed: 9,
            ..Faults::default()
        };
        let state = FaultState::new(f.clone());
        let a = reasons(&state, 10_000);
        state.set(f);
        assert_eq!(a, reasons(&state, 10_000));
        let hits = a
            .iter()
            .filter(|r| **r == Some(Reason::ServiceUnavailable))
            .count();
        assert!((2_700..3_300).contains(&hits), "{hits}");
    }

    #[test]
    fn token_faults_win_over_rates() {
        let mut f = Faults {
            internal_error_rate: 1.0,
            ..Faults::default()
        };
        f.unregistered_tokens.insert("dead".into());
        f.bad_device_tokens.insert("bad".into());
        let state = FaultState::new(f);
        let plan = state.current();
        assert_eq!(
            plan.forced_reason("dead", &state),
            Some(Reason::Unregistered)
        );
        assert_eq!(
            plan.forced_reason("bad", &state),
            Some(Reason::BadDeviceToken)
        );
        assert_eq!(
            plan.forced_reason("x", &state),
            Some(Reason::InternalServerError)
        );
    }

    #[test]
    fn connection_actions_fire_on_the_nth_request() {
        let f = Faults {
            goaway_after_requests: Some(3),
            drop_after_requests: Some(5),
            ..Faults::default()
        };
        let state = FaultState::new(f);
        let plan = state.current();
        let acts: Vec<_> = (1..=5).map(|n| plan.connection_action(n, &state)).collect();
        assert_eq!(acts[0], ConnAction::Serve);
        assert_eq!(acts[2], ConnAction::ServeThenGoAway);
        assert_eq!(acts[4], ConnAction::Drop);
    }

    #[test]
    fn views_follow_updates_and_latency_stays_in_bounds() {
        let state = FaultState::new(Faults::default());
        let mut view = FaultView::new(&state);
        assert_eq!(view.plan(&state).faults.latency_us, 0);
        state.set(Faults {
            latency_us: 1000,
            jitter_us: 500,
            ..Faults::default()
        });
        let plan = view.plan(&state).clone();
        for _ in 0..1000 {
            let l = plan.latency(&state).as_micros();
            assert!((1000..=1500).contains(&l), "{l}");
        }
    }
}
