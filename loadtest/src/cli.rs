//! The command line of `clarion-loadtest`: clap definitions of the subcommands and their
//! conversion into the library's configs ([`SimConfig`], [`Faults`], [`LoadConfig`],
//! [`BenchConfig`]). Only the binary uses this module.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use clarion_loadtest::bench::BenchConfig;
use clarion_loadtest::duration::parse_duration;
use clarion_loadtest::load::{Burst, LoadConfig, Platforms, Protocol};
use clarion_loadtest::outage::{BacklogConfig, OutageConfig, OutageMode};
use clarion_sim::apns::{Faults, SimConfig, public_key_from_p8};

#[derive(Parser)]
#[command(
    name = "clarion-loadtest",
    version,
    about = "Load generator and provider simulators for Clarion"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the APNs simulator until SIGINT or SIGTERM.
    ApnsSim(SimArgs),
    /// Write a new APNs signing key: apns-key.p8 and apns-key.pub.pem.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Load a running Clarion server (and check a simulator's ledger with --sim-control).
    Run(RunArgs),
    /// Start a simulator and a server, load it, report, and stop both.
    Bench(BenchArgs),
    /// Provider outage under a steady intake: normal, calibration, outage, recovery; memory,
    /// refusals, drain rate vs normal, ledger (issue 12's long form).
    Outage(OutageArgs),
    /// A multi-million-delivery backlog made quickly against a dead provider; memory while it is
    /// built, while it waits and (--drain) while it drains.
    Backlog(BacklogArgs),
    /// Append 4 KiB and fdatasync every millisecond in DIR until standard input closes, then
    /// print the latencies as JSON (what `run` and `bench` start beside every load).
    FsyncProbe {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Ping-pong between two threads on two CPUs, then on one, and print what a wake-up cost
    /// (latency and CPU) and the same as JSON (what `run` and `bench` measure before every load).
    WakeProbe,
    /// Time the two P-256 operations of a browser message (the sender's key and agreement, the
    /// push service's agreement) and print them and the same as JSON (what `bench` measures
    /// before a load with browsers).
    EcdhProbe {
        /// The share of browsers in the mix the figure per notification is for.
        #[arg(long, default_value_t = 0.1)]
        web_share: f64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum OutageModeArg {
    /// Every request answered 503 ServiceUnavailable.
    Unavailable,
    /// Every request's connection closed abruptly, unanswered.
    Drop,
    /// The listener closed: connects refused; open connections closed at their next request.
    Refuse,
}

/// What the outage and backlog runs share: the server, the simulator, the intake's shape.
#[derive(Args)]
pub struct RigArgs {
    /// The Clarion server binary (run as `PATH serve --config FILE`).
    #[arg(long)]
    pub server_bin: PathBuf,
    #[arg(long, default_value_t = 2)]
    pub shards: usize,
    #[arg(long, default_value_t = 2)]
    pub apns_connections: usize,
    #[arg(long)]
    pub no_fsync: bool,
    #[arg(long, default_value_t = 1)]
    pub sim_threads: usize,
    /// `[tuning] lane_window` for the server (its default when absent).
    #[arg(long)]
    pub lane_window: Option<usize>,
    #[arg(long, value_enum, default_value = "unavailable")]
    pub mode: OutageModeArg,
    #[arg(long, default_value_t = 10_000)]
    pub users: u32,
    /// Notifications per request (more than 1 uses the batch endpoint).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// Load generator worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Resident memory the server must stay under, MB (10^6 bytes; 300 MB is 286.1 MiB).
    #[arg(long, default_value_t = 300)]
    pub rss_limit_mb: u64,
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    #[arg(long)]
    pub keep_work_dir: bool,
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub startup_timeout: Duration,
    /// Write summary.json, samples.csv, accept.hgrm and e2e.hgrm here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args)]
pub struct OutageArgs {
    /// Notifications per second offered through every phase.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Intake with a healthy provider first.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub normal: Duration,
    /// The short outage whose drain is the normal end-to-end rate (0s: none).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub calibration: Duration,
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub outage: Duration,
    /// Give up on a drain after this long.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Intake once drained, before it stops.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub after: Duration,
    /// The least drain rate after the outage, as a share of the normal rate.
    #[arg(long, default_value_t = 0.8)]
    pub min_drain_ratio: f64,
    #[command(flatten)]
    pub rig: RigArgs,
}

#[derive(Args)]
pub struct BacklogArgs {
    /// Notifications to put in the backlog (one delivery each).
    #[arg(long, default_value_t = 5_000_000)]
    pub count: u64,
    /// Notifications per second offered while building it.
    #[arg(long, default_value_t = 40_000.0)]
    pub rate: f64,
    /// Hold the backlog this long with nothing arriving.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub idle: Duration,
    /// Then bring the provider back and deliver it (ledger-checked).
    #[arg(long)]
    pub drain: bool,
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    #[command(flatten)]
    pub rig: RigArgs,
}

#[derive(Args)]
pub struct SimArgs {
    #[arg(long, default_value = "127.0.0.1:2197")]
    pub listen: SocketAddr,
    /// Also serve the control endpoint (stats, ledger, faults) here.
    #[arg(long)]
    pub control: Option<SocketAddr>,
    /// The key's public half (SPKI PEM).
    #[arg(
        long,
        conflicts_with = "key_file",
        required_unless_present = "key_file"
    )]
    pub public_key: Option<PathBuf>,
    /// The key itself (.p8); its public half is derived.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    #[arg(long, default_value = "TEAMLOAD01")]
    pub team_id: String,
    #[arg(long, default_value = "KEYLOAD001")]
    pub key_id: String,
    #[arg(long, default_value = "com.clarion.loadtest")]
    pub topic: String,
    /// Write the TLS certificate (to trust as ca_file) here.
    #[arg(long)]
    pub ca_out: Option<PathBuf>,
    #[arg(long, default_value_t = 1000)]
    pub max_streams: u32,
    #[arg(long, default_value_t = 1)]
    pub initial_streams: u32,
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Accept provider-token refreshes at any rate (no TooManyProviderTokenUpdates).
    #[arg(long)]
    pub no_token_refresh_limit: bool,
    #[command(flatten)]
    pub faults: FaultArgs,
}

#[derive(Args, Clone)]
pub struct FaultArgs {
    /// A JSON fault plan (see `Faults`); the flags below override its fields.
    #[arg(long)]
    pub faults_file: Option<PathBuf>,
    /// Device tokens answered 410 Unregistered.
    #[arg(long = "unregistered", value_name = "TOKEN")]
    pub unregistered: Vec<String>,
    /// Device tokens answered 400 BadDeviceToken.
    #[arg(long = "bad-token", value_name = "TOKEN")]
    pub bad_tokens: Vec<String>,
    #[arg(long)]
    pub rate_429: Option<f64>,
    #[arg(long)]
    pub rate_500: Option<f64>,
    #[arg(long)]
    pub rate_503: Option<f64>,
    #[arg(long, value_parser = parse_duration)]
    pub latency: Option<Duration>,
    #[arg(long, value_parser = parse_duration)]
    pub jitter: Option<Duration>,
    #[arg(long)]
    pub goaway_after: Option<u64>,
    #[arg(long)]
    pub drop_after: Option<u64>,
    #[arg(long)]
    pub drop_rate: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ProtocolArg {
    H1,
    H2,
}

#[derive(Args, Clone)]
pub struct LoadArgs {
    /// Notifications per second offered.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
    #[arg(long, default_value_t = 1000)]
    pub users: u32,
    #[arg(long, default_value_t = 1)]
    pub devices_per_user: u32,
    /// The devices' platforms by weight, e.g. `ios=45,android=45,web=10` (`bench` starts the
    /// FCM and Web Push simulators for them; `run` takes iOS only)
    #[arg(long, default_value = "ios=100", value_parser = Platforms::parse)]
    pub platforms: Platforms,
    /// Notifications per request (more than 1 uses the batch endpoint).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    #[arg(long, value_enum, default_value = "h2")]
    pub protocol: ProtocolArg,
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    #[arg(long, default_value_t = 0)]
    pub seq_start: u64,
    #[arg(long, default_value = "lt-u")]
    pub user_prefix: String,
    /// Burst rate (notifications/s); needs --burst-every and --burst-length.
    #[arg(long, requires_all = ["burst_every", "burst_length"])]
    pub burst_rate: Option<f64>,
    #[arg(long, value_parser = parse_duration)]
    pub burst_every: Option<Duration>,
    #[arg(long, value_parser = parse_duration)]
    pub burst_length: Option<Duration>,
    /// Skip registering users and devices (they exist from an earlier run).
    #[arg(long)]
    pub no_register: bool,
    /// Keep the simulator's ledger and counters from before this run.
    #[arg(long)]
    pub no_reset_sim: bool,
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Load generator worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Write summary.json, accept.hgrm and e2e.hgrm here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args)]
pub struct RunArgs {
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub target: SocketAddr,
    #[arg(long, env = "CLARION_API_KEY")]
    pub api_key: String,
    /// The APNs simulator's control endpoint, for the ledger check.
    #[arg(long)]
    pub sim_control: Option<SocketAddr>,
    /// A directory on the file system of the server's data directory, where the fsync probe
    /// writes beside the load.
    #[arg(long, default_value = ".")]
    pub fsync_probe_dir: PathBuf,
    /// Run no fsync probe.
    #[arg(long)]
    pub no_fsync_probe: bool,
    /// Run no wake probe before the load.
    #[arg(long)]
    pub no_wake_probe: bool,
    #[command(flatten)]
    pub load: LoadArgs,
}

#[derive(Args)]
pub struct BenchArgs {
    /// The Clarion server binary (run as `PATH serve --config FILE`).
    #[arg(long)]
    pub server_bin: PathBuf,
    #[arg(long, default_value_t = 2)]
    pub shards: usize,
    #[arg(long, default_value_t = 2)]
    pub apns_connections: usize,
    #[arg(long)]
    pub no_fsync: bool,
    #[arg(long, default_value_t = 1)]
    pub sim_threads: usize,
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    #[arg(long)]
    pub keep_work_dir: bool,
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub startup_timeout: Duration,
    /// After the load, a second one at this rate (notifications/s), reported on its own: how
    /// the server recovers after an overload (e.g. --rate 150000 --then-rate 30000).
    #[arg(long, requires = "then_duration")]
    pub then_rate: Option<f64>,
    #[arg(long, value_parser = parse_duration)]
    pub then_duration: Option<Duration>,
    /// FCM answers every send 503 from this long after the start (registration included)...
    #[arg(long, requires = "fcm_outage_for", value_parser = parse_duration)]
    pub fcm_outage_at: Option<Duration>,
    /// ... for this long (needs android in --platforms): one channel down, the others measured.
    #[arg(long, value_parser = parse_duration)]
    pub fcm_outage_for: Option<Duration>,
    /// How long the FCM simulator's access tokens last (e.g. 60s: refreshed under the load).
    #[arg(long, value_parser = parse_duration)]
    pub fcm_token_lifetime: Option<Duration>,
    /// Run no wake probe before the load.
    #[arg(long)]
    pub no_wake_probe: bool,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub faults: FaultArgs,
}

impl FaultArgs {
    pub fn to_faults(&self) -> anyhow::Result<Faults> {
        let mut f = match &self.faults_file {
            Some(p) => serde_json::from_str(&std::fs::read_to_string(p)?)
                .with_context(|| format!("fault plan {}", p.display()))?,
            None => Faults::default(),
        };
        f.unregistered_tokens
            .extend(self.unregistered.iter().cloned());
        f.bad_device_tokens.extend(self.bad_tokens.iter().cloned());
        let set = |slot: &mut f64, v: Option<f64>| v.into_iter().for_each(|v| *slot = v);
        set(&mut f.too_many_requests_rate, self.rate_429);
        set(&mut f.internal_error_rate, self.rate_500);
        set(&mut f.unavailable_rate, self.rate_503);
        set(&mut f.drop_rate, self.drop_rate);
        if let Some(l) = self.latency {
            f.latency_us = l.as_micros() as u64;
        }
        if let Some(j) = self.jitter {
            f.jitter_us = j.as_micros() as u64;
        }
        f.goaway_after_requests = self.goaway_after.or(f.goaway_after_requests);
        f.drop_after_requests = self.drop_after.or(f.drop_after_requests);
        f.seed = self.seed.unwrap_or(f.seed);
        f.validate()?;
        Ok(f)
    }
}

impl SimArgs {
    pub fn to_config(&self) -> anyhow::Result<SimConfig> {
        let public = match (&self.public_key, &self.key_file) {
            (Some(p), _) => {
                std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?
            }
            (None, Some(k)) => public_key_from_p8(
                &std::fs::read_to_string(k).with_context(|| format!("read {}", k.display()))?,
            )?,
            (None, None) => bail!("--public-key or --key-file is required"),
        };
        let mut cfg = SimConfig::new(&self.team_id, &self.key_id, &public, &self.topic);
        cfg.listen = self.listen;
        cfg.control_listen = self.control;
        cfg.max_concurrent_streams = self.max_streams;
        cfg.initial_max_concurrent_streams = self.initial_streams;
        cfg.worker_threads = self.threads;
        cfg.faults = self.faults.to_faults()?;
        if self.no_token_refresh_limit {
            cfg.token_refresh_min_interval = None;
        }
        Ok(cfg)
    }
}

impl LoadArgs {
    pub fn to_config(&self) -> LoadConfig {
        let bursts = match (self.burst_rate, self.burst_every, self.burst_length) {
            (Some(rate), Some(every), Some(length)) => Some(Burst {
                rate,
                every,
                length,
            }),
            _ => None,
        };
        LoadConfig {
            protocol: match self.protocol {
                ProtocolArg::H1 => Protocol::H1,
                ProtocolArg::H2 => Protocol::H2,
            },
            connections: self.connections,
            users: self.users,
            devices_per_user: self.devices_per_user,
            rate: self.rate,
            duration: self.duration,
            batch: self.batch,
            bursts,
            max_in_flight: self.max_in_flight,
            warmup: self.warmup,
            seq_start: self.seq_start,
            user_prefix: self.user_prefix.clone(),
            register: !self.no_register,
            reset_sim: !self.no_reset_sim,
            drain_timeout: self.drain_timeout,
            worker_threads: self.threads,
            platforms: self.platforms,
            ..LoadConfig::default()
        }
    }
}

impl BenchArgs {
    pub fn to_config(&self) -> anyhow::Result<BenchConfig> {
        let mut cfg = BenchConfig::new(self.server_bin.clone(), self.load.to_config());
        cfg.shards = self.shards;
        cfg.fcm_outage = self.fcm_outage_at.zip(self.fcm_outage_for);
        cfg.fcm_token_lifetime = self.fcm_token_lifetime;
        if cfg.fcm_outage.is_some() && cfg.load.platforms.android == 0 {
            bail!("--fcm-outage-at needs android devices in --platforms");
        }
        cfg.apns_connections = self.apns_connections;
        cfg.fsync = !self.no_fsync;
        cfg.sim_worker_threads = self.sim_threads;
        cfg.faults = self.faults.to_faults()?;
        cfg.work_dir = self.work_dir.clone();
        cfg.keep_work_dir = self.keep_work_dir;
        cfg.startup_timeout = self.startup_timeout;
        cfg.then = self.then_rate.zip(self.then_duration);
        cfg.wake_probe = !self.no_wake_probe;
        Ok(cfg)
    }
}

impl RigArgs {
    fn mode(&self) -> OutageMode {
        match self.mode {
            OutageModeArg::Unavailable => OutageMode::Unavailable,
            OutageModeArg::Drop => OutageMode::Drop,
            OutageModeArg::Refuse => OutageMode::Refuse,
        }
    }

    /// The rig, with an intake at `rate` (its duration is set by the run).
    fn to_bench(&self, rate: f64) -> BenchConfig {
        let load = LoadConfig {
            connections: self.connections,
            users: self.users,
            rate,
            batch: self.batch,
            max_in_flight: self.max_in_flight,
            worker_threads: self.threads,
            ..LoadConfig::default()
        };
        let mut cfg = BenchConfig::new(self.server_bin.clone(), load);
        cfg.shards = self.shards;
        cfg.apns_connections = self.apns_connections;
        cfg.fsync = !self.no_fsync;
        cfg.sim_worker_threads = self.sim_threads;
        cfg.work_dir = self.work_dir.clone();
        cfg.keep_work_dir = self.keep_work_dir;
        cfg.startup_timeout = self.startup_timeout;
        cfg
    }
}

impl OutageArgs {
    pub fn to_config(&self) -> OutageConfig {
        let mut cfg = OutageConfig::new(self.rig.to_bench(self.rate));
        cfg.mode = self.rig.mode();
        cfg.normal = self.normal;
        cfg.calibration = self.calibration;
        cfg.outage = self.outage;
        cfg.drain_timeout = self.drain_timeout;
        cfg.after = self.after;
        cfg.lane_window = self.rig.lane_window;
        cfg.rss_limit_mb = self.rig.rss_limit_mb;
        cfg.min_drain_ratio = self.min_drain_ratio;
        cfg.rig.load.drain_timeout = self.drain_timeout;
        cfg
    }
}

impl BacklogArgs {
    pub fn to_config(&self) -> BacklogConfig {
        let mut cfg = BacklogConfig::new(self.rig.to_bench(self.rate));
        cfg.mode = self.rig.mode();
        cfg.count = self.count;
        cfg.idle = self.idle;
        cfg.drain = self.drain;
        cfg.drain_timeout = self.drain_timeout;
        cfg.lane_window = self.rig.lane_window;
        cfg.rss_limit_mb = self.rig.rss_limit_mb;
        cfg
    }
}
