//! The load generator for Clarion's HTTP API: registers users and devices, drives an open-loop
//! schedule of notifications (single or batch endpoint) with coordinated-omission-corrected
//! accept latency, then checks the APNs simulator's ledger so that every 202 is accounted for.
//!
//! [`run`] builds its own runtime; [`run_async`] runs on the caller's. Every run is bounded: the
//! schedule ends after `warmup + duration`, unanswered requests time out after
//! [`REQUEST_TIMEOUT`], and the ledger phase gives up after `drain_timeout`.

pub(crate) mod client;
pub(crate) mod driver;
pub(crate) mod ledger_check;
mod platforms;
pub(crate) mod register;
pub(crate) mod resend;
mod schedule;
pub(crate) mod server_log;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cpu::{CpuMeter, CpuUse};

pub use driver::REQUEST_TIMEOUT;
pub use ledger_check::{LedgerReport, SimLink, compare};
pub use platforms::{Platform, Platforms, Subscriber};
pub use register::{RegistrationReport, device_token, user_id};
pub use schedule::{Burst, Schedule};
pub use server_log::{LatencyBuckets, LogReading, ServerLatency, ServerLog};

/// How the load generator talks to the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive, one request at a time per connection.
    H1,
    /// HTTP/2 over cleartext TCP with prior knowledge, multiplexed.
    H2,
}

/// One load run. `Default` is a short, gentle run against `127.0.0.1:8080`.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub target: SocketAddr,
    pub api_key: String,
    pub protocol: Protocol,
    /// Connections to the API.
    pub connections: usize,
    /// Users registered and addressed (`<user_prefix>0 ..`), notifications spread round-robin.
    pub users: u32,
    pub devices_per_user: u32,
    /// Notifications per second offered (with `batch > 1`, requests go at `rate / batch`).
    pub rate: f64,
    /// The measured phase, after the warm-up.
    pub duration: Duration,
    /// Notifications per request: 1 uses `POST /v1/notifications`, more the batch endpoint.
    pub batch: usize,
    /// Periodic bursts during the measured phase (rates in notifications per second).
    pub bursts: Option<Burst>,
    /// Requests outstanding at most; beyond it requests go out late (and count as late).
    pub max_in_flight: usize,
    /// Load at `rate` before measuring: delivered and ledger-checked, not timed.
    pub warmup: Duration,
    /// First `lt_seq`; a later run can continue where [`LoadReport::next_seq`] says.
    pub seq_start: u64,
    pub user_prefix: String,
    /// Register users and devices first (turn off when continuing a previous run).
    pub register: bool,
    /// Clear the simulator's ledger and counters before loading.
    pub reset_sim: bool,
    /// How long the ledger phase waits for accepted notifications to reach the simulator.
    pub drain_timeout: Duration,
    /// Tokio worker threads of [`run`]'s runtime.
    pub worker_threads: usize,
    /// The devices' platforms (all iOS unless told).
    pub platforms: Platforms,
    /// Where browser devices get their subscriptions (needed when `platforms.web > 0`).
    pub subscriber: Option<Subscriber>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            target: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            api_key: String::new(),
            protocol: Protocol::H2,
            connections: 4,
            users: 1000,
            devices_per_user: 1,
            rate: 1000.0,
            duration: Duration::from_secs(10),
            batch: 1,
            bursts: None,
            max_in_flight: 10_000,
            warmup: Duration::ZERO,
            seq_start: 0,
            user_prefix: "lt-u".to_string(),
            register: true,
            reset_sim: true,
            drain_timeout: Duration::from_secs(30),
            worker_threads: 2,
            platforms: Platforms::default(),
            subscriber: None,
        }
    }
}

impl LoadConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(self.rate.is_finite() && self.rate > 0.0) {
            bail!("rate must be positive");
        }
        if self.users == 0 {
            bail!("at least one user is needed");
        }
        if self.duration.is_zero() {
            bail!("duration must be positive");
        }
        if let Some(b) = &self.bursts {
            b.validate().map_err(anyhow::Error::msg)?;
        }
        if self.platforms.web > 0 && self.subscriber.is_none() {
            bail!("web devices need the Web Push simulator (bench starts it)");
        }
        Ok(())
    }
}

/// Everything a run measured.
#[derive(Debug, Serialize)]
pub struct LoadReport {
    pub protocol: Protocol,
    pub batch: usize,
    pub connections: usize,
    pub offered_rate: f64,
    #[serde(with = "serde_secs")]
    pub duration: Duration,
    pub registration: Option<RegistrationReport>,
    /// Notifications in the whole schedule (warm-up included).
    pub scheduled: u64,
    pub sent_requests: u64,
    /// Mean request body size, bytes.
    pub request_body_bytes: f64,
    pub sent_notifications: u64,
    pub completed_requests: u64,
    pub transport_errors: u64,
    pub timeouts: u64,
    /// Notifications never sent because the run hit its deadline.
    pub not_sent: u64,
    /// Notifications answered 202.
    pub accepted: u64,
    /// Accepted notifications per second during the measured phase.
    pub achieved_rate: f64,
    /// How late the latest request went out compared with its intended time.
    #[serde(with = "serde_secs")]
    pub max_send_lag: Duration,
    /// How late each request went out compared with its intended time, in µs (warm-up
    /// included).
    #[serde(skip)]
    pub send_lag_us: Histogram<u64>,
    pub http_status: BTreeMap<u16, u64>,
    /// Per-notification statuses (batch items; 0 = missing from a batch answer).
    pub notification_status: BTreeMap<u16, u64>,
    pub error_samples: Vec<String>,
    /// Measured requests the server took up (answered other than `503`).
    #[serde(skip)]
    pub accept_latency_us: Histogram<u64>,
    /// Measured requests refused whole with `503` (overload): how fast the refusal came.
    #[serde(skip)]
    pub rejected_latency_us: Histogram<u64>,
    /// The worst accept latency (µs) among the measured requests intended in each second of the
    /// run, in order: shows *when* the tail happened (a stall, a burst) rather than only how big.
    pub accept_worst_by_second_us: Vec<u64>,
    pub ledger: Option<LedgerReport>,
    #[serde(skip)]
    pub e2e_latency_us: Option<Histogram<u64>>,
    /// Notifications received by the simulator per second, from the start of the load (warm-up
    /// included) until the ledger showed all of them received: the end-to-end delivery rate.
    /// `None` without a simulator or when the run did not drain.
    pub delivered_rate: Option<f64>,
    /// CPU spent over the same span, per delivered notification (`bench` only).
    pub cpu: Option<CpuUse>,
    /// The server's log (its commits' writes into fjall and its fsyncs) over the same span, from
    /// its `/v1/stats`; `None` when the server does not report them.
    pub server_log: Option<ServerLog>,
    /// The `seq_start` of a run that continues this one.
    pub next_seq: u64,
    /// The server's peak resident memory (VmHWM) at the end of the run (`bench` only).
    pub server_peak_rss_bytes: Option<u64>,
    /// A run at another rate right after this one (`bench --then-rate`): recovery after overload.
    pub then: Option<Box<LoadReport>>,
    /// Each channel's receipts and end-to-end latency, when the load reached more than one
    /// (`bench --platforms`).
    pub channels: Vec<ChannelLatency>,
    /// What the independent fsync probe saw on the data directory's file system meanwhile.
    pub fsync_probe: Option<crate::fsync_probe::FsyncProbe>,
    /// What a thread wake-up cost on this machine, measured just before the load.
    pub wake_probe: Option<crate::wake_probe::WakeProbe>,
    /// What a browser message's two P-256 agreements cost here, measured before a load with
    /// browsers.
    pub ecdh_probe: Option<crate::ecdh_probe::EcdhProbe>,
}

/// One channel's share of a run: receipts at its simulator and their end-to-end latency.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelLatency {
    pub channel: &'static str,
    pub receipts: u64,
    pub e2e: clarion_sim::histogram::LatencySummary,
}

impl ChannelLatency {
    pub fn of(channel: &'static str, ledger: &clarion_sim::apns::Ledger) -> ChannelLatency {
        ChannelLatency {
            channel,
            receipts: ledger.receipts(),
            e2e: clarion_sim::histogram::LatencySummary::of(ledger.e2e_us()),
        }
    }
}

impl LoadReport {
    /// The seqs this run sent.
    pub fn seq_range(&self) -> std::ops::Range<u64> {
        self.next_seq.saturating_sub(self.scheduled)..self.next_seq
    }
}

/// Runs a load on a fresh tokio runtime of `cfg.worker_threads` threads.
pub fn run(cfg: &LoadConfig, sim: SimLink<'_>) -> anyhow::Result<LoadReport> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.worker_threads.max(1))
        .thread_name("clarion-load")
        .enable_all()
        .build()
        .context("load generator runtime")?;
    rt.block_on(run_async(cfg, sim))
}

/// Runs a load on the current tokio runtime.
pub async fn run_async(cfg: &LoadConfig, sim: SimLink<'_>) -> anyhow::Result<LoadReport> {
    run_async_metered(cfg, sim, None).await
}

/// [`run_async`], also measuring the CPU spent from the start of the load until the simulator
/// has received everything (`bench` passes a meter that knows the server's pid).
pub async fn run_async_metered(
    cfg: &LoadConfig,
    sim: SimLink<'_>,
    meter: Option<CpuMeter>,
) -> anyhow::Result<LoadReport> {
    run_inner(cfg, sim, meter, None).await
}

/// [`run_async`] whose schedule ends early once `stop` turns `true` (the schedule's length,
/// `warmup + duration`, is then only its longest): nothing is sent after that, what was sent is
/// answered and checked in the ledger, and `scheduled` is what was sent.
pub async fn run_async_until(
    cfg: &LoadConfig,
    sim: SimLink<'_>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<LoadReport> {
    run_inner(cfg, sim, None, Some(stop)).await
}

async fn run_inner(
    cfg: &LoadConfig,
    sim: SimLink<'_>,
    meter: Option<CpuMeter>,
    stop: Option<tokio::sync::watch::Receiver<bool>>,
) -> anyhow::Result<LoadReport> {
    cfg.validate()?;
    let client = Arc::new(client::ApiClient::new(
        cfg.target,
        &cfg.api_key,
        cfg.protocol,
        cfg.connections,
    ));
    let registration = if cfg.register {
        Some(register::register(client.clone(), cfg).await?)
    } else {
        None
    };
    if cfg.reset_sim {
        sim.reset().await.context("reset the APNs simulator")?;
    }
    let log_start = server_log::fetch(&client).await;
    let load_started = Instant::now();
    let cpu_start = meter.as_ref().and_then(CpuMeter::sample);
    let mut m = match stop {
        Some(stop) => driver::drive_until(client.clone(), cfg, stop).await?,
        None => driver::drive(client.clone(), cfg).await?,
    };
    m.accepted.sort_unstable();
    let next_seq = cfg.seq_start + m.scheduled_items;
    let ledger = ledger_check::await_ledger(
        sim,
        &m.accepted,
        cfg.seq_start..next_seq,
        cfg.devices_per_user,
        cfg.drain_timeout,
    )
    .await
    .context("read the APNs simulator's ledger")?;
    // Everything up to when the ledger showed every notification received: warm-up, the
    // measured load and the drain (to within the ledger's polling interval). Reported only for
    // a run that drained; otherwise the span would include the drain timeout.
    let delivery_wall = load_started.elapsed().as_secs_f64();
    let received = ledger
        .as_ref()
        .filter(|(r, _)| r.drained)
        .map(|(r, _)| r.received);
    let delivered_rate = received.map(|n| n as f64 / delivery_wall.max(f64::EPSILON));
    let cpu = match (meter, cpu_start, received) {
        (Some(meter), Some(start), Some(n)) => meter
            .sample()
            .map(|end| CpuUse::between(&start, &end, delivery_wall, n)),
        _ => None,
    };
    let server_log = match log_start {
        Some(start) => server_log::fetch(&client)
            .await
            .and_then(|end| ServerLog::between(&start, &end)),
        None => None,
    };
    let wall = if m.stopped_early {
        m.measured_wall.as_secs_f64().max(f64::EPSILON)
    } else {
        m.measured_wall.max(cfg.duration).as_secs_f64()
    };
    let (ledger, e2e) = match ledger {
        Some((r, h)) => (Some(r), Some(h)),
        None => (None, None),
    };
    Ok(LoadReport {
        protocol: cfg.protocol,
        batch: cfg.batch.max(1),
        connections: cfg.connections,
        offered_rate: cfg.rate,
        duration: cfg.duration,
        registration,
        scheduled: m.scheduled_items,
        sent_requests: m.sent_requests,
        request_body_bytes: if m.sent_requests == 0 {
            0.0
        } else {
            m.sent_bytes as f64 / m.sent_requests as f64
        },
        sent_notifications: m.sent_items,
        completed_requests: m.completed_requests,
        transport_errors: m.transport_errors,
        timeouts: m.timeouts,
        not_sent: m.not_sent_items,
        accepted: m.accepted.len() as u64,
        achieved_rate: m.measured_accepted as f64 / wall,
        max_send_lag: m.max_lag,
        send_lag_us: m.send_lag_us,
        http_status: m.http_status,
        notification_status: m.item_status,
        error_samples: m.error_samples,
        accept_latency_us: m.accept_us,
        rejected_latency_us: m.rejected_us,
        accept_worst_by_second_us: m.worst_by_second_us,
        ledger,
        e2e_latency_us: e2e,
        delivered_rate,
        cpu,
        server_log,
        next_seq,
        server_peak_rss_bytes: None,
        fsync_probe: None,
        wake_probe: None,
        ecdh_probe: None,
        then: None,
        channels: Vec::new(),
    })
}

/// Durations as fractional seconds in JSON.
pub(crate) mod serde_secs {
    pub(crate) fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}
