//! `clarion-loadtest backlog`: a backlog of `count` deliveries made quickly (batches, at a
//! high open-loop rate) against a provider that is down from the start, then held for `idle`
//! with nothing arriving, then, with `drain`, the provider back and the backlog delivered and
//! checked in the ledger. The server's memory is sampled throughout: while the backlog is
//! built, while it waits, while it drains.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::report::{OutageReport, RssReport};
use super::sampler::{self, Phase, Sample};
use super::{
    OutageMode, Timeline, drain_report, intake_report, recover_and_drain, rss, server_stats,
    tuning_toml, unix_now_s, verdict,
};
use crate::bench::{BenchConfig, Rig};
use crate::load::client::ApiClient;
use crate::load::{SimLink, driver, ledger_check, register};
use clarion_sim::histogram::LatencySummary;

/// A backlog run. The intake (`rate`, `batch`, `users`, connections) is `rig.load`'s; its
/// `duration` becomes `count / rate`.
#[derive(Clone, Debug)]
pub struct BacklogConfig {
    pub rig: BenchConfig,
    pub mode: OutageMode,
    /// Notifications sent (one delivery each with one device per user).
    pub count: u64,
    /// How long the backlog is held with nothing arriving.
    pub idle: Duration,
    /// Bring the provider back and deliver the backlog.
    pub drain: bool,
    pub drain_timeout: Duration,
    pub lane_window: Option<usize>,
    pub rss_limit_mb: u64,
}

impl BacklogConfig {
    #[must_use]
    pub fn new(rig: BenchConfig) -> Self {
        BacklogConfig {
            rig,
            mode: OutageMode::Unavailable,
            count: 5_000_000,
            idle: Duration::from_secs(60),
            drain: false,
            drain_timeout: Duration::from_secs(1800),
            lane_window: None,
            rss_limit_mb: 300,
        }
    }
}

/// Builds, holds and (optionally) drains the backlog; returns the report and the samples.
pub fn run_backlog(cfg: &BacklogConfig) -> anyhow::Result<(OutageReport, Vec<Sample>)> {
    let mut bench_cfg = cfg.rig.clone();
    bench_cfg.faults = cfg.mode.faults();
    bench_cfg
        .server_extra_toml
        .push_str(&tuning_toml(cfg.lane_window));
    let mut rig = Rig::start(&bench_cfg)?;
    let mut load = bench_cfg.load.clone();
    load.target = rig.listen;
    load.api_key = rig.api_key.clone();
    load.warmup = Duration::ZERO;
    load.seq_start = 0;
    load.duration = Duration::from_secs_f64(cfg.count as f64 / load.rate);
    load.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(load.worker_threads.max(1))
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        rig.wait_healthy(bench_cfg.startup_timeout).await?;
        backlog_phases(cfg, &rig, &load).await
    });
    let stopped = rig.stop(result.is_ok());
    let result = result?;
    stopped?;
    Ok(result)
}

async fn backlog_phases(
    cfg: &BacklogConfig,
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
    let (done_tx, done_rx) = watch::channel(false);
    let t0 = Instant::now();
    let mut timeline = Timeline {
        t0: Some(t0),
        spans: Vec::new(),
    };
    let work = async {
        timeline.enter(&phase, "build");
        let m = driver::drive(client.clone(), load).await;
        let mut m = match m {
            Ok(m) => m,
            Err(e) => {
                let _ = done_tx.send(true);
                return Err(e);
            }
        };
        // What admission control refused goes again after its Retry-After, until the whole
        // count waits in the log.
        timeline.enter(&phase, "resend");
        crate::load::resend::resend_refused(&client, load, &mut m).await;
        timeline.enter(&phase, "idle");
        tokio::time::sleep(cfg.idle).await;
        let built = server_stats::fetch(&client).await.map(|c| c.backlog);
        let idle_mem = pid.and_then(rss::read);
        let mut drained = None;
        let mut ledger = None;
        if cfg.drain {
            let t = recover_and_drain(
                &rig.sim,
                &client,
                &mut timeline,
                &phase,
                "drain",
                cfg.drain_timeout,
            )
            .await;
            let t = match t {
                Ok(t) => t,
                Err(e) => {
                    let _ = done_tx.send(true);
                    return Err(e);
                }
            };
            drained = Some(t);
            ledger = ledger_check::await_ledger(
                SimLink::InProcess(&rig.sim),
                &m.accepted,
                0..m.scheduled_items,
                load.devices_per_user,
                Duration::from_secs(30),
            )
            .await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let server_end = server_stats::fetch(&client).await;
        let last_mem = pid.and_then(rss::read).or(idle_mem);
        let _ = done_tx.send(true);
        anyhow::Ok((m, built, drained, ledger, server_end, last_mem))
    };
    let (samples, worked) = tokio::join!(
        sampler::run(&rig.sim, pid, &client, &phase, t0, done_rx),
        work
    );
    let (m, built, drained, ledger, server_end, last_mem) = worked?;
    let phases = timeline.finish();
    let intake = intake_report(&m, load.rate, load.batch);
    let rss = RssReport::of(&samples, last_mem, cfg.rss_limit_mb);
    let (ledger, e2e) = match ledger {
        Some((l, h)) => (Some(l), Some(h)),
        None => (None, None),
    };
    // Refusals are reported but judged only by the outage run: this one offers more than the
    // server's sustained rate on purpose, and sends what was refused again (the whole count
    // must be built). Without a drain there is no ledger to judge loss by.
    let mut verdict = verdict(
        &intake,
        server_end.as_ref(),
        &rss,
        None,
        ledger.as_ref(),
        false,
    );
    if !cfg.drain {
        verdict.none_lost = true;
        verdict.pass = verdict.rss_under_limit && verdict.none_dead_or_expired;
    }
    // A backlog run measures nothing unless the backlog was built: everything sent was accepted
    // and waits in the log.
    let built_all = intake.accepted > 0
        && intake.accepted == intake.sent
        && built.is_some_and(|b| b >= intake.accepted);
    verdict.pass &= built_all;
    let report = OutageReport {
        kind: "backlog",
        started_unix_s: unix_now_s() - t0.elapsed().as_secs(),
        mode: cfg.mode,
        shards: cfg.rig.shards,
        users: load.users,
        lane_window: cfg.lane_window,
        registration: Some(registration),
        phases,
        intake,
        normal: None,
        recovery: drained.map(|t| drain_report(&t, &samples)),
        drain_ratio: None,
        backlog_built: built,
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
