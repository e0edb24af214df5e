//! The long-form outage measurements of issue 12, on this machine in one command each: the
//! simulator in-process, the server as a child (as `bench` starts them, [`crate::bench`]), and
//! one open-loop intake ([`crate::load`]'s driver) through every phase.
//!
//! `clarion-loadtest outage` ([`run_outage`]):
//!
//! 1. *normal*: intake at `rate` with a healthy provider;
//! 2. *calibration*: a short outage (default 60 s: 120,000 waiting at 2,000/s) and its drain. Its drain rate is **the
//!    channel's normal end-to-end rate**: pushes per second the simulator accepts while the same
//!    server, in the same run, with a healthy provider and the same intake going on, delivers a
//!    backlog it has ready (see [`drain`] for exactly what is counted);
//! 3. *outage*: the provider down ([`OutageMode`]) for `outage` (default 10 min) while the
//!    intake goes on;
//! 4. *recovery*: faults cleared; the drain measured the same way; the ratio to the normal rate
//!    is the figure the issue asks for (at least 80%);
//! 5. *after*: a few seconds of intake once drained; then the intake stops, every accepted
//!    notification is checked in the simulator's ledger (lost, duplicated) and the server's
//!    `/v1/stats` read (dead, expired, backlog, breaker).
//!
//! `clarion-loadtest backlog` ([`run_backlog`]): a backlog of `count` deliveries made quickly
//! with batches against a dead provider, then held idle, then (optionally) drained.
//!
//! Both sample the server's resident memory (`/proc/PID/status`), the simulator's counters and
//! the server's counters every second ([`sampler`]) and write `summary.json`, `samples.csv`,
//! `accept.hgrm` and `e2e.hgrm` ([`report`]).

mod backlog;
pub mod drain;
pub mod mode;
pub mod report;
pub mod rss;
pub mod sampler;
pub mod server_stats;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokio::sync::watch;

pub use backlog::{BacklogConfig, run_backlog};
pub use mode::OutageMode;
pub use report::OutageReport;

use self::drain::{DRAIN_POLL, DrainReport, DrainTracker, steady_rate};
use self::report::{IntakeReport, PhaseSpan, RssReport, Verdict};
use self::sampler::{Phase, Sample};
use crate::bench::{BenchConfig, Rig};
use crate::load::client::ApiClient;
use crate::load::driver::{self, Measurements};
use crate::load::{LedgerReport, SimLink, ledger_check, register};
use clarion_sim::apns::{Faults, SimHandle};
use clarion_sim::histogram::LatencySummary;

/// An outage run. The server, simulator and intake (`rate`, `users`, `batch`, connections) are
/// described by `rig` as for `bench`; its `load.duration` and `warmup` are ignored.
#[derive(Clone, Debug)]
pub struct OutageConfig {
    pub rig: BenchConfig,
    pub mode: OutageMode,
    /// Intake with a healthy provider before anything fails.
    pub normal: Duration,
    /// The short outage whose drain gives the normal rate (zero: none, and no ratio).
    pub calibration: Duration,
    pub outage: Duration,
    /// How long a drain may take before the run gives up on it.
    pub drain_timeout: Duration,
    /// Intake once the backlog is delivered, before the intake stops.
    pub after: Duration,
    /// `lane_window` written to the server's config (its default when `None`).
    pub lane_window: Option<usize>,
    pub rss_limit_mb: u64,
    /// The least recovery drain rate, as a share of the normal rate, that passes.
    pub min_drain_ratio: f64,
}

impl OutageConfig {
    #[must_use]
    pub fn new(rig: BenchConfig) -> Self {
        OutageConfig {
            rig,
            mode: OutageMode::Unavailable,
            normal: Duration::from_secs(30),
            calibration: Duration::from_secs(60),
            outage: Duration::from_secs(600),
            drain_timeout: Duration::from_secs(900),
            after: Duration::from_secs(10),
            lane_window: None,
            rss_limit_mb: 300,
            min_drain_ratio: 0.8,
        }
    }

    /// How long the intake's schedule is: every phase at its longest, so that the conductor,
    /// not the schedule, ends it.
    fn intake_span(&self) -> Duration {
        self.normal
            + self.calibration
            + self.outage
            + self.drain_timeout * 2
            + self.after
            + Duration::from_secs(60)
    }
}

/// `[tuning] lane_window` for the server's config, if set.
pub(crate) fn tuning_toml(lane_window: Option<usize>) -> String {
    lane_window.map_or_else(String::new, |w| format!("\n[tuning]\nlane_window = {w}\n"))
}

/// The phases as they happened.
#[derive(Default)]
pub(crate) struct Timeline {
    t0: Option<Instant>,
    spans: Vec<PhaseSpan>,
}

impl Timeline {
    fn now(&self) -> f64 {
        self.t0.map_or(0.0, |t| t.elapsed().as_secs_f64())
    }

    /// Ends the current phase and starts `name`.
    pub(crate) fn enter(&mut self, phase: &Phase, name: &'static str) {
        let now = self.now();
        if let Some(last) = self.spans.last_mut() {
            last.end_s = now;
        }
        self.spans.push(PhaseSpan {
            name,
            start_s: now,
            end_s: now,
        });
        phase.set(name);
    }

    pub(crate) fn finish(mut self) -> Vec<PhaseSpan> {
        let now = self.now();
        if let Some(last) = self.spans.last_mut() {
            last.end_s = now;
        }
        self.spans
    }
}

/// The server's `accepted`, asked a few times (it answers within a second under any load
/// this tool makes; `None` if it never does).
pub(crate) async fn server_accepted(client: &ApiClient) -> Option<u64> {
    for _ in 0..10 {
        if let Some(c) = server_stats::fetch(client).await {
            return Some(c.accepted);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Clears the faults and follows the drain of what the server had accepted until then, until
/// it is delivered or `timeout` passes.
pub(crate) async fn recover_and_drain(
    sim: &SimHandle,
    client: &ApiClient,
    timeline: &mut Timeline,
    phase: &Phase,
    name: &'static str,
    timeout: Duration,
) -> anyhow::Result<DrainTracker> {
    let accepted = server_accepted(client)
        .await
        .context("the server's /v1/stats did not answer at recovery")?;
    let s = sim.stats();
    let t = timeline.now();
    sim.set_faults(Faults::default());
    timeline.enter(phase, name);
    let mut tracker = DrainTracker::new(t, s.accepted, s.ledger_distinct, accepted);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let s = sim.stats();
        if tracker.observe(timeline.now(), s.accepted, s.ledger_distinct) {
            break;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
    Ok(tracker)
}

/// The drain's report with the median one-second rate over its span.
pub(crate) fn drain_report(tracker: &DrainTracker, samples: &[Sample]) -> DrainReport {
    let mut r = tracker.report();
    if let Some((from, to)) = tracker.span() {
        r.median_second_rate_per_s = steady_rate(&sampler::push_points(samples), from, to);
    }
    r
}

/// The intake's figures from the driver's measurements.
pub(crate) fn intake_report(m: &Measurements, rate: f64, batch: usize) -> IntakeReport {
    let accepted = m.accepted.len() as u64;
    IntakeReport {
        offered_rate: rate,
        batch: batch.max(1),
        sent: m.sent_items,
        accepted,
        accepted_on_resend: m.accepted_on_resend,
        refused: m.sent_items.saturating_sub(accepted),
        not_sent: m.not_sent_items,
        http_status: m.http_status.clone(),
        notification_status: m.item_status.clone(),
        transport_errors: m.transport_errors,
        timeouts: m.timeouts,
        max_send_lag_s: m.max_lag.as_secs_f64(),
        accept_latency: LatencySummary::of(&m.accept_us),
        error_samples: m.error_samples.clone(),
    }
}

pub(crate) fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The verdict on the terms (`drain_ratio_ok` only where a ratio was measured).
pub(crate) fn verdict(
    intake: &IntakeReport,
    server: Option<&server_stats::ServerCounters>,
    rss: &RssReport,
    drain_ratio_ok: Option<bool>,
    ledger: Option<&LedgerReport>,
    refusals_count: bool,
) -> Verdict {
    let no_intake_refused = intake.refused == 0 && intake.not_sent == 0;
    let none_dead_or_expired = server.is_some_and(|c| c.dead == 0 && c.expired == 0);
    let rss_under_limit = rss.under_limit();
    let none_lost = ledger.is_some_and(|l| l.lost == 0 && l.short == 0 && l.drained);
    let pass = (no_intake_refused || !refusals_count)
        && none_dead_or_expired
        && rss_under_limit
        && drain_ratio_ok != Some(false)
        && none_lost;
    Verdict {
        no_intake_refused,
        none_dead_or_expired,
        rss_under_limit,
        drain_ratio_ok,
        none_lost,
        pass,
    }
}

/// Runs the outage measurement; the report is also what `summary.json` holds. The samples come
/// back beside it for `samples.csv`.
pub fn run_outage(cfg: &OutageConfig) -> anyhow::Result<(OutageReport, Vec<Sample>)> {
    let mut bench_cfg = cfg.rig.clone();
    bench_cfg.faults = Faults::default();
    bench_cfg
        .server_extra_toml
        .push_str(&tuning_toml(cfg.lane_window));
    let mut rig = Rig::start(&bench_cfg)?;
    let mut load = bench_cfg.load.clone();
    load.target = rig.listen;
    load.api_key = rig.api_key.clone();
    load.warmup = Duration::ZERO;
    load.duration = cfg.intake_span();
    load.seq_start = 0;
    load.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(load.worker_threads.max(1))
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        rig.wait_healthy(bench_cfg.startup_timeout).await?;
        outage_phases(cfg, &rig, &load).await
    });
    let stopped = rig.stop(result.is_ok());
    let result = result?;
    stopped?;
    Ok(result)
}

async fn outage_phases(
    cfg: &OutageConfig,
    rig: &Rig,
    load: &crate::load::LoadConfig,
) -> anyhow::Result<(OutageReport, Vec<Sample>)> {
    let client = Arc::new(ApiClient::new(
        load.target,
        &load.api_key,
        load.protocol,
        load.connections,
    ));
    let registration = register::register(client.clone(), load).await?;
    rig.sim.reset();
    let pid = rig.server.pid();
    let phase = Phase::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(false);
    let t0 = Instant::now();
    let mut timeline = Timeline {
        t0: Some(t0),
        spans: Vec::new(),
    };
    timeline.enter(&phase, "normal");

    let phases = async {
        tokio::time::sleep(cfg.normal).await;
        let mut normal = None;
        if !cfg.calibration.is_zero() {
            timeline.enter(&phase, "calibration-outage");
            rig.sim.set_faults(cfg.mode.faults());
            tokio::time::sleep(cfg.calibration).await;
            let name = "calibration-drain";
            let t = recover_and_drain(
                &rig.sim,
                &client,
                &mut timeline,
                &phase,
                name,
                cfg.drain_timeout,
            )
            .await?;
            timeline.enter(&phase, "normal-2");
            normal = Some(t);
            // Back to the steady state before the long outage.
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        timeline.enter(&phase, "outage");
        rig.sim.set_faults(cfg.mode.faults());
        tokio::time::sleep(cfg.outage).await;
        let recovery = recover_and_drain(
            &rig.sim,
            &client,
            &mut timeline,
            &phase,
            "recovery",
            cfg.drain_timeout,
        )
        .await?;
        timeline.enter(&phase, "after");
        tokio::time::sleep(cfg.after).await;
        timeline.enter(&phase, "final-drain");
        anyhow::Ok((normal, recovery))
    };
    // The intake stops when the phases are over, or failed.
    let conductor = async {
        let r = phases.await;
        let _ = stop_tx.send(true);
        r
    };
    let work = async {
        let (m, conducted) = tokio::join!(
            driver::drive_until(client.clone(), load, stop_rx),
            conductor
        );
        let mut m = m?;
        let (normal, recovery) = match conducted {
            Ok(c) => c,
            Err(e) => {
                let _ = done_tx.send(true);
                return Err(e);
            }
        };
        m.accepted.sort_unstable();
        let ledger = ledger_check::await_ledger(
            SimLink::InProcess(&rig.sim),
            &m.accepted,
            0..m.scheduled_items,
            load.devices_per_user,
            load.drain_timeout,
        )
        .await;
        // Let the last state changes reach the counters (settled deliveries are logged lazily).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let server_end = server_stats::fetch(&client).await;
        let last_mem = pid.and_then(rss::read);
        let _ = done_tx.send(true);
        anyhow::Ok((m, normal, recovery, ledger?, server_end, last_mem))
    };
    let (samples, worked) = tokio::join!(
        sampler::run(&rig.sim, pid, &client, &phase, t0, done_rx),
        work
    );
    let (m, normal, recovery, ledger, server_end, last_mem) = worked?;
    let phases = timeline.finish();

    let normal = normal.map(|t| drain_report(&t, &samples));
    let recovery = drain_report(&recovery, &samples);
    let drain_ratio = match (&normal, recovery.rate_per_s) {
        (Some(n), Some(r)) => n.rate_per_s.map(|n| r / n),
        _ => None,
    };
    let intake = intake_report(&m, load.rate, load.batch);
    let rss = RssReport::of(&samples, last_mem, cfg.rss_limit_mb);
    let (ledger, e2e) = match ledger {
        Some((l, h)) => (Some(l), Some(h)),
        None => (None, None),
    };
    let verdict = verdict(
        &intake,
        server_end.as_ref(),
        &rss,
        drain_ratio.map(|r| r >= cfg.min_drain_ratio && recovery.done),
        ledger.as_ref(),
        true,
    );
    let report = OutageReport {
        kind: "outage",
        started_unix_s: unix_now_s() - t0.elapsed().as_secs(),
        mode: cfg.mode,
        shards: cfg.rig.shards,
        users: load.users,
        lane_window: cfg.lane_window,
        registration: Some(registration),
        phases,
        intake,
        normal,
        recovery: Some(recovery),
        drain_ratio,
        backlog_built: None,
        ledger,
        e2e_latency: e2e.as_ref().map(LatencySummary::of),
        server_end,
        rss,
        verdict,
        accept_us: Some(m.accept_us),
        e2e_us: e2e,
    };
    Ok((report, samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_window_goes_into_a_tuning_table_only_when_set() {
        assert_eq!(tuning_toml(None), "");
        assert_eq!(tuning_toml(Some(1024)), "\n[tuning]\nlane_window = 1024\n");
    }

    #[test]
    fn the_intake_outlasts_every_phase_at_its_longest() {
        let cfg = OutageConfig::new(BenchConfig::new(
            "clarion".into(),
            crate::load::LoadConfig::default(),
        ));
        let phases = cfg.normal + cfg.calibration + cfg.outage + cfg.drain_timeout * 2 + cfg.after;
        assert!(cfg.intake_span() > phases);
    }

    #[test]
    fn the_timeline_closes_each_phase_where_the_next_begins() {
        let phase = Phase::default();
        let mut t = Timeline {
            t0: Some(Instant::now()),
            spans: Vec::new(),
        };
        t.enter(&phase, "a");
        t.enter(&phase, "b");
        assert_eq!(phase.get(), "b");
        let spans = t.finish();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].end_s, spans[1].start_s);
        assert!(spans[1].end_s >= spans[1].start_s);
    }
}
