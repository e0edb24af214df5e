//! The campaign both stop tests run: a mixed load (single notifications, batches of 2 to 128,
//! retries with the same idempotency key, user and device registrations and removals,
//! deliveries the simulator fails with 500/503 or 410) against the real server, which is stopped
//! (`kill -9`, or a power cut) at random moments, also while the restarted server replays its log
//! and while it drains the backlog a slow provider left. After the last restart it drains, and
//! the accounting (`verdict.rs`) holds:
//!
//! - nothing lost: every notification answered `202` reached the simulator once at least for
//!   each device it targets, and its targets are the user's devices at acceptance (every
//!   acknowledged registration, no acknowledged removal);
//! - re-sends bounded by what was in flight: a (notification, device) is received again only
//!   across a stop that came within `IN_FLIGHT_WINDOW_MS` of its earlier receipt (the slow
//!   provider's longest answer plus the time to log `sent`), from a process started after that
//!   stop; so the re-sends are at most the receipts within that window before each stop;
//! - no idempotency key answered with two notification ids;
//! - every delivery reaches exactly one terminal state (`sent`, or `failed` for a 410 token),
//!   read back with `GET /v1/notifications/{id}` for every notification whose targets are in
//!   doubt or that was sent or received more than once, and for a random sample of the rest.
//!
//! Only public behaviour is used (the HTTP API and the simulator's receipt log), so the test
//! holds whatever the shard engine keeps in memory or in its log.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clarion_sim::apns::{Faults, SimConfig};

use crate::common;
use model::OpCounts;
use verdict::Kill;
use workload::{Control, Worker};

#[path = "conn.rs"]
mod conn;
#[path = "contacts.rs"]
mod contacts;
#[path = "model.rs"]
mod model;
#[path = "verdict.rs"]
mod verdict;
#[path = "workload.rs"]
mod workload;

pub const SHARDS: usize = 2;
/// Load threads, each with its own users and one keep-alive connection.
const WORKERS: usize = 4;
/// The simulator's streams per connection: with 2 connections per shard, at most 64 pushes are
/// in flight at once, so a slow provider builds a backlog.
const SIM_STREAMS: u32 = 16;
/// A slow provider answers after 300 to 500 ms.
const SLOW_LATENCY_US: u64 = 300_000;
const SLOW_JITTER_US: u64 = 200_000;
/// A normal provider answers within 5 ms, and fails 5% with 500 and 5% with 503 (retried).
const FAST_JITTER_US: u64 = 5_000;
const ERROR_RATE: f64 = 0.05;
/// Notifications per second per worker while the provider is fast (the server delivers a few
/// thousand a second, so the backlog a slow phase left drains), and while it is slow (a backlog
/// of several thousand builds in a second or two).
const FAST_RATE: u64 = 250;
const SLOW_RATE: u64 = 750;
/// A delivery received this long before a kill may still lack its logged `sent`: the slow
/// provider's longest answer (500 ms) plus a second for the server, on a loaded 2-core machine,
/// to take the answer and write the state.
const IN_FLIGHT_WINDOW_MS: u64 = 1_500;
/// A push the dying process had already written may reach the simulator this long after the
/// kill (the simulator shares the 2 cores and may lag).
const LATE_MS: u64 = 1_000;
/// Accepted notifications read back at random, beside all whose targets are in doubt or that
/// were sent or received more than once.
const READ_SAMPLE: usize = 3_000;
/// Time for a restarted server to answer `/healthz`.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn slow(base: &Faults) -> Faults {
    Faults {
        latency_us: SLOW_LATENCY_US,
        jitter_us: SLOW_JITTER_US,
        ..base.clone()
    }
}

/// Stops the server with `stop` (a `kill -9`, or a power cut), records it, and starts the next
/// process without waiting.
fn kill_and_respawn(
    h: &mut common::Harness,
    kills: &mut Vec<Kill>,
    stop: &mut dyn FnMut(&mut common::Harness),
) {
    let was_healthy = h.server.healthy_now();
    let at_ms = now_ms();
    stop(h);
    let respawn_ms = now_ms();
    h.server.spawn_unwaited();
    kills.push(Kill {
        at_ms,
        respawn_ms,
        was_healthy,
    });
}

/// Waits for the started process to answer `/healthz`; how long that took.
fn wait_up(h: &mut common::Harness) -> Duration {
    let start = Instant::now();
    while !h.server.healthy_now() {
        let child = h.server.child.as_mut().expect("a started server");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("clarion exited with {status} on restart:\n{}", log_tail(h));
        }
        assert!(
            start.elapsed() < START_TIMEOUT,
            "clarion not healthy after {START_TIMEOUT:?}:\n{}",
            log_tail(h)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

/// Waits until every (seq, device) in `pairs` reached the simulator, or `timeout` passes;
/// how long that took.
fn wait_received(h: &common::Harness, pairs: &[(u64, String)], timeout: Duration) -> Duration {
    let start = Instant::now();
    let mut missing: HashSet<(u64, String)> = pairs.iter().cloned().collect();
    let mut read = 0;
    let mut next_report = Duration::from_secs(5);
    while !missing.is_empty() && start.elapsed() < timeout {
        let new = h.sim.receipts(read);
        read += new.len();
        for r in new {
            missing.remove(&(r.seq, r.token));
        }
        if !missing.is_empty() {
            if start.elapsed() >= next_report {
                eprintln!(
                    "draining: {} (notification, device) still to arrive after {:?}",
                    missing.len(),
                    start.elapsed()
                );
                next_report += Duration::from_secs(5);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    start.elapsed()
}

fn log_tail(h: &common::Harness) -> String {
    let log = h.server.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The largest backlog one shard found at a start, from the server's log.
fn largest_recovery(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("shard recovered from its log"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("backlog="))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .max()
        .unwrap_or(0)
}

/// What a campaign is drawn from: its seed, how many stops, and the simulator's faults.
pub struct Setup {
    pub name: &'static str,
    pub seed: u64,
    pub seed_var: &'static str,
    pub stops_wanted: usize,
    pub base: Faults,
    pub dead_tokens: std::collections::BTreeSet<String>,
}

impl Setup {
    /// Reads the seed and the stop count from `seed_var` and `stops_var`, or takes the defaults.
    pub fn new(
        name: &'static str,
        seed_var: &'static str,
        default_seed: u64,
        stops_var: &str,
        default_stops: u64,
    ) -> Setup {
        let seed = env_u64(seed_var).unwrap_or(default_seed);
        let stops_wanted = env_u64(stops_var).unwrap_or(default_stops) as usize;
        eprintln!(
            "{name}: seed {seed:#x}, {stops_wanted} stops (replay with {seed_var}={seed:#x})"
        );
        let dead_tokens = model::dead_tokens(WORKERS);
        let base = Faults {
            unregistered_tokens: dead_tokens.clone(),
            internal_error_rate: ERROR_RATE,
            unavailable_rate: ERROR_RATE,
            jitter_us: FAST_JITTER_US,
            seed,
            ..Faults::default()
        };
        Setup {
            name,
            seed,
            seed_var,
            stops_wanted,
            base,
            dead_tokens,
        }
    }

    /// The simulator's configuration for the campaign (pass to `common::start_with`/`start_in`).
    pub fn sim(&self) -> impl FnOnce(&mut SimConfig) + use<> {
        let faults = self.base.clone();
        move |c| {
            c.faults = faults;
            c.max_concurrent_streams = SIM_STREAMS;
            c.receipt_log = true;
        }
    }
}

/// The server's extra configuration, inside `[delivery]`: a stop may cost attempts, and 500/503
/// are drawn at 10%.
pub const SERVER_TOML: &str = "max_attempts = 50\n";

/// Runs the campaign against the started harness `h`, stopping the server with `stop` (which
/// leaves it stopped) `setup.stops_wanted` times, then drains and judges.
pub fn run(h: &mut common::Harness, setup: &Setup, stop: &mut dyn FnMut(&mut common::Harness)) {
    let (seed, kills_wanted, base, dead_tokens) = (
        setup.seed,
        setup.stops_wanted,
        &setup.base,
        &setup.dead_tokens,
    );
    let wall = Instant::now();
    let ctl = Control::new(h.server.addr, common::API_KEY);
    ctl.rate.store(FAST_RATE, Ordering::Relaxed);
    let ready = Arc::new(Barrier::new(WORKERS + 1));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (ctl, ready) = (ctl.clone(), ready.clone());
            std::thread::spawn(move || {
                let mut worker = Worker::new(w, seed, ctl);
                worker.register_initial();
                ready.wait();
                worker.run()
            })
        })
        .collect();
    ready.wait();

    let mut rng = fastrand::Rng::with_seed(seed);
    let mut kills: Vec<Kill> = Vec::new();
    let mut up_times: Vec<Duration> = Vec::new();
    while kills.len() < kills_wanted {
        let backlog = rng.u32(..100) < 40;
        if backlog {
            // A slow provider: intake outruns delivery and a backlog builds.
            ctl.rate.store(SLOW_RATE, Ordering::Relaxed);
            h.sim.set_faults(slow(base));
            std::thread::sleep(Duration::from_millis(rng.u64(1_000..2_000)));
        } else {
            std::thread::sleep(Duration::from_millis(rng.u64(200..1_500)));
        }
        kill_and_respawn(h, &mut kills, stop);
        if backlog {
            if rng.bool() {
                h.sim.set_faults(base.clone()); // the provider recovers its speed
            }
            // At once or soon after the start: while the process replays its log.
            std::thread::sleep(Duration::from_millis(rng.u64(0..150)));
            kill_and_respawn(h, &mut kills, stop);
            up_times.push(wait_up(h));
            if rng.bool() {
                // While it drains the backlog.
                std::thread::sleep(Duration::from_millis(rng.u64(0..400)));
                kill_and_respawn(h, &mut kills, stop);
                up_times.push(wait_up(h));
            }
            h.sim.set_faults(base.clone());
            ctl.rate.store(FAST_RATE, Ordering::Relaxed);
        } else {
            up_times.push(wait_up(h));
        }
    }
    let campaign = wall.elapsed();

    // Let the workers send again every request whose answer a kill swallowed, then drain.
    ctl.phase.store(workload::PAUSE, Ordering::Relaxed);
    h.sim.set_faults(base.clone());
    ctl.phase.store(workload::FINISH, Ordering::Relaxed);
    let mut seqs = HashMap::new();
    let mut ops = OpCounts::default();
    let mut violations = Vec::new();
    let (mut violation_count, mut unanswered) = (0, 0);
    for w in workers {
        let r = w.join().expect("worker thread");
        seqs.extend(r.seqs);
        ops.add(&r.ops);
        violations.extend(r.violations);
        violation_count += r.violation_count;
        unanswered += r.unanswered;
    }
    let known = verdict::known_pairs(&seqs);
    let drain_timeout = Duration::from_secs(60 + known.len() as u64 / 1_000);
    let drained_in = wait_received(h, &known, drain_timeout);
    let early = h.sim.receipts(0);
    let mut resent = std::collections::HashMap::new();
    for r in &early {
        *resent.entry((r.seq, r.token.as_str())).or_insert(0u32) += 1;
    }
    let resent: BTreeSet<u64> = resent
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|((seq, _), _)| seq)
        .collect();
    let reads = verdict::pick_reads(&seqs, &resent, READ_SAMPLE, &mut rng);
    let drain = verdict::read_statuses(h.server.addr, common::API_KEY, &reads, drain_timeout);
    let statuses = drain.statuses;
    // Judged on the receipts after that drain: a notification whose targets were in doubt
    // (not among the known pairs waited for above) may have finished only during it, and a
    // snapshot taken before would miss its last receipts.
    let receipts = h.sim.receipts(0);
    let v = verdict::judge(
        &seqs,
        &statuses,
        &receipts,
        dead_tokens,
        &kills,
        IN_FLIGHT_WINDOW_MS,
        LATE_MS,
    );

    let recovery_kills = kills.iter().filter(|k| !k.was_healthy).count();
    let slowest_up = up_times.iter().max().copied().unwrap_or_default();
    let log = h.server.log();
    eprintln!(
        "{}: seed {seed:#x}: {} stops ({recovery_kills} before /healthz answered) in {:.1} s; \
         slowest restart to healthy {slowest_up:?}; largest backlog one shard found at a start {} deliveries",
        setup.name,
        kills.len(),
        campaign.as_secs_f64(),
        largest_recovery(&log),
    );
    eprintln!("ops {ops:?}; requests still unanswered at the end {unanswered}");
    eprintln!(
        "accepted {} notifications; every known target received {:.1} s after the end; \
         {} read back: {} deliveries ({} sent, {} failed on a 410 token), \
         in {} rounds in {:.1} s (the first, all of them, {:.1} s)",
        v.accepted,
        drained_in.as_secs_f64(),
        v.read_back,
        v.deliveries,
        v.sent,
        v.failed_dead_token,
        drain.rounds,
        drain.took.as_secs_f64(),
        drain.first_round.as_secs_f64()
    );
    eprintln!(
        "receipts {}; re-sent {} (bound: {} receipts within {IN_FLIGHT_WINDOW_MS} ms before a kill; \
         the longest receipt-to-kill of a re-send {} ms; the most for one kill {}); \
         most receipts of one delivery {}; \
         delivered but never answered 202: {}; lost {}; keys with two ids {}; wall {:.1} s",
        receipts.len(),
        v.duplicates,
        v.in_flight_bound,
        v.max_receipt_to_kill_ms,
        v.max_resent_one_kill,
        v.max_receipts,
        v.delivered_unanswered,
        v.lost.len(),
        v.second_ids,
        wall.elapsed().as_secs_f64()
    );

    let replay = format!("replay with {}={seed:#x}", setup.seed_var);
    assert_eq!(h.sim.receipts_dropped(), 0, "the receipt log overflowed");
    assert!(
        v.accepted > 1_000 && v.sent > 1_000,
        "the load got going: {} accepted",
        v.accepted
    );
    assert!(kills.len() >= kills_wanted);
    assert!(
        recovery_kills >= 1,
        "at least one kill landed while the server was still starting or recovering"
    );
    assert!(
        violation_count == 0,
        "{violation_count} wrong answers to the load ({replay}): {violations:#?}"
    );
    assert!(
        v.lost.is_empty(),
        "{} accepted deliveries lost ({replay}), first: {:#?}\n{}",
        v.lost.len(),
        &v.lost[..v.lost.len().min(20)],
        log_tail(h)
    );
    assert!(
        v.problem_count == 0,
        "{} problems ({replay}): {:#?}\n{}",
        v.problem_count,
        v.problems,
        log_tail(h)
    );
    assert!(
        v.duplicates <= v.in_flight_bound,
        "re-sends {} exceed what was in flight at the kills {} ({replay})",
        v.duplicates,
        v.in_flight_bound
    );
}
