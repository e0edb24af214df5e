//! Configuration: the raw TOML file (`RawConfig`, every field optional) and the validated
//! `Config` the server runs with. All validation happens here, once, before any executor starts;
//! every error names the offending key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::channels::apns::ApnsConfig;

mod fcm;
pub mod ops;
mod webpush;

pub use fcm::{FcmTarget, RawFcm};
pub use webpush::{RawWebPush, WebPushSettings};

/// Default API address: loopback only, so a fresh checkout never listens on the network.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "data";
/// Production APNs host.
pub const DEFAULT_APNS_ENDPOINT: &str = "https://api.push.apple.com";
/// Persistent APNs connections per shard: several, so one slow connection does not cap a shard.
pub const DEFAULT_APNS_CONNECTIONS: usize = 2;
/// Nice value of fjall's flush and compaction threads unless `[storage] background_nice` says
/// otherwise. At 10 they yield to the shards and commits but still get about a tenth of a busy
/// core: at 19 a flush starved under a sustained overload, fjall held its writers back, and
/// accept latency reached 2.4 s (p99 1.7 s) where 10 kept it at 0.7 s (p99 0.3 s).
pub const DEFAULT_BACKGROUND_NICE: i32 = 10;
/// Bytes of a table file being written between two starts of its writeback, unless
/// `[storage] table_writeback_bytes` says otherwise (what RocksDB calls `bytes_per_sync`).
pub const DEFAULT_TABLE_WRITEBACK_BYTES: u64 = 1 << 20;
/// Smallest and largest non-zero `table_writeback_bytes`: a page, and a gigabyte.
const TABLE_WRITEBACK_RANGE: std::ops::RangeInclusive<u64> = 4096..=1 << 30;
/// Devices a user may have unless `[contacts] max_devices_per_user` says otherwise: far more
/// than people own, few enough that a user's record (rewritten whole on every registration)
/// stays small.
pub const DEFAULT_MAX_DEVICES_PER_USER: usize = 100;
/// Time a client gets to send a request's head (from its first byte), and a new connection to
/// send its first request, unless `[http] header_timeout_ms` says otherwise: ample for any
/// client on a working network, short enough that a half-sent request does not hold a
/// connection for long.
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
/// Time a request's body gets to arrive once its head has, unless `[http] body_timeout_ms`
/// says otherwise: an 8 MiB batch needs about 7 Mbit/s to arrive in it.
pub const DEFAULT_BODY_TIMEOUT_MS: u64 = 10_000;
/// Time a connection may stay open with no request in flight, unless `[http] idle_timeout_ms`
/// says otherwise: longer than the usual load balancers' idle timeouts (60 s), so that they
/// close their pooled connections first and never send a request into one we are closing.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 75_000;
/// Open API connections per shard unless `[http] max_connections_per_shard` says otherwise: an
/// open connection costs about 23 KB (2,000 half-sent requests added 45 MB), so a shard's
/// connections stay under 100 MB, while clients and load balancers keeping connection pools
/// need far fewer.
pub const DEFAULT_MAX_CONNECTIONS_PER_SHARD: usize = 4096;
/// Bytes of request bodies one connection may have being received at once unless `[http]
/// body_buffer_per_connection_bytes` says otherwise: two of the largest batches (HTTP/2 carries
/// many requests at once on one connection; HTTP/1.1 one).
pub const DEFAULT_BODY_BUFFER_PER_CONNECTION: usize = 2 * crate::http::service::MAX_BATCH_BODY;
/// Bytes of request bodies one shard may have being received at once, over all its
/// connections, unless `[http] body_buffer_per_shard_bytes` says otherwise.
pub const DEFAULT_BODY_BUFFER_PER_SHARD: usize = 256 << 20;
/// Longest HTTP timeout: an hour.
const MAX_HTTP_TIMEOUT_MS: u64 = 3_600_000;
/// Upper bound on shards: ids carry the shard number, and more executors than this is a typo.
pub const MAX_SHARDS: usize = 256;

/// A configuration error: the key at fault and what is wrong with it.
#[derive(Debug)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "config key `{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

pub(crate) fn bad(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        message: message.into(),
    }
}

/// The file as written: everything optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub shards: Option<usize>,
    #[serde(default)]
    pub api: RawApi,
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub caps: RawCaps,
    #[serde(default)]
    pub contacts: RawContacts,
    #[serde(default)]
    pub delivery: RawDelivery,
    pub apns: Option<RawApns>,
    pub fcm: Option<RawFcm>,
    #[serde(default)]
    pub simulator: RawSimulator,
    #[serde(default)]
    pub tuning: RawTuning,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub webpush: RawWebPush,
    #[serde(default)]
    pub server: ops::RawServer,
    #[serde(default)]
    pub metrics: ops::RawMetrics,
    #[serde(default)]
    pub log: ops::RawLog,
    #[serde(default)]
    pub alerts: crate::alerts::RawAlerts,
}

/// `[http]`: the API transport's time limits and bounds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub header_timeout_ms: Option<u64>,
    pub body_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub max_connections_per_shard: Option<usize>,
    pub body_buffer_per_connection_bytes: Option<usize>,
    pub body_buffer_per_shard_bytes: Option<usize>,
}

/// The API transport's validated limits (`[http]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConfig {
    /// A request's head must arrive within this of its first byte (HTTP/1.1), and a new
    /// connection's first request within this of the accept (both protocols).
    pub header_timeout: std::time::Duration,
    /// A request's body must arrive within this of its head.
    pub body_timeout: std::time::Duration,
    /// A connection with no request in flight is closed after this (HTTP/2 with GOAWAY).
    pub idle_timeout: std::time::Duration,
    /// Open connections per shard; past it a new connection is answered 503 and closed.
    pub max_connections_per_shard: usize,
    /// Bytes of request bodies being received at once on one connection; past it, 503.
    pub body_buffer_per_connection: usize,
    /// Bytes of request bodies being received at once on one shard; past it, 503.
    pub body_buffer_per_shard: usize,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            header_timeout: std::time::Duration::from_millis(DEFAULT_HEADER_TIMEOUT_MS),
            body_timeout: std::time::Duration::from_millis(DEFAULT_BODY_TIMEOUT_MS),
            idle_timeout: std::time::Duration::from_millis(DEFAULT_IDLE_TIMEOUT_MS),
            max_connections_per_shard: DEFAULT_MAX_CONNECTIONS_PER_SHARD,
            body_buffer_per_connection: DEFAULT_BODY_BUFFER_PER_CONNECTION,
            body_buffer_per_shard: DEFAULT_BODY_BUFFER_PER_SHARD,
        }
    }
}

impl RawHttp {
    fn validate(self) -> Result<HttpConfig, ConfigError> {
        let timeout = |key: &str, v: Option<u64>, default: u64| {
            let ms = v.unwrap_or(default);
            if !(1..=MAX_HTTP_TIMEOUT_MS).contains(&ms) {
                return Err(bad(
                    key,
                    format!("must be between 1 and {MAX_HTTP_TIMEOUT_MS} (an hour)"),
                ));
            }
            Ok(std::time::Duration::from_millis(ms))
        };
        let header_timeout = timeout(
            "http.header_timeout_ms",
            self.header_timeout_ms,
            DEFAULT_HEADER_TIMEOUT_MS,
        )?;
        let body_timeout = timeout(
            "http.body_timeout_ms",
            self.body_timeout_ms,
            DEFAULT_BODY_TIMEOUT_MS,
        )?;
        let idle_timeout = timeout(
            "http.idle_timeout_ms",
            self.idle_timeout_ms,
            DEFAULT_IDLE_TIMEOUT_MS,
        )?;
        let max_connections_per_shard = self
            .max_connections_per_shard
            .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_SHARD);
        if !(1..=1_000_000).contains(&max_connections_per_shard) {
            return Err(bad(
                "http.max_connections_per_shard",
                "must be between 1 and 1000000",
            ));
        }
        let largest = crate::http::service::MAX_BATCH_BODY;
        let body_buffer_per_connection = self
            .body_buffer_per_connection_bytes
            .unwrap_or(DEFAULT_BODY_BUFFER_PER_CONNECTION);
        if body_buffer_per_connection < largest {
            return Err(bad(
                "http.body_buffer_per_connection_bytes",
                format!("must be at least {largest} (the largest request body)"),
            ));
        }
        let body_buffer_per_shard = self
            .body_buffer_per_shard_bytes
            .unwrap_or(DEFAULT_BODY_BUFFER_PER_SHARD);
        if body_buffer_per_shard < body_buffer_per_connection {
            return Err(bad(
                "http.body_buffer_per_shard_bytes",
                "must be at least http.body_buffer_per_connection_bytes",
            ));
        }
        Ok(HttpConfig {
            header_timeout,
            body_timeout,
            idle_timeout,
            max_connections_per_shard,
            body_buffer_per_connection,
            body_buffer_per_shard,
        })
    }
}

/// Internal sizes an operator rarely changes (tests use them to force edge cases).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTuning {
    /// Batches in flight per shard pair on the mesh; default `mesh::MESH_CHANNEL_CAPACITY`.
    pub mesh_channel_capacity: Option<usize>,
    /// Deliveries each channel holds ready in memory per shard; default
    /// `engine::lane::WINDOW_CAPACITY`. The rest of a backlog waits in the log.
    pub lane_window: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    pub keys: Option<Vec<String>>,
    /// PEM certificate chain and private key: the API serves TLS (h2 and HTTP/1.1 by ALPN).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub fsync: Option<bool>,
    pub background_nice: Option<i32>,
    pub table_writeback_bytes: Option<u64>,
    pub retention_seconds: Option<u64>,
    pub dedup_window_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCaps {
    pub per_user_per_hour: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawContacts {
    pub max_devices_per_user: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDelivery {
    pub max_attempts: Option<u32>,
    pub backoff_base_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    pub shutdown_grace_ms: Option<u64>,
    pub config_fault_dead_after_seconds: Option<u64>,
    pub catch_up_yields: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApns {
    /// `live`, `simulator` or `off`; absent: `live` with `key_file`, otherwise `off`.
    pub mode: Option<String>,
    pub endpoint: Option<String>,
    pub team_id: Option<String>,
    pub key_id: Option<String>,
    pub key_file: Option<PathBuf>,
    pub topic: Option<String>,
    pub connections: Option<usize>,
    pub ca_file: Option<PathBuf>,
}

/// The built-in APNs simulator, run when `[apns] mode = "simulator"` or `serve --simulate`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSimulator {
    /// Plain-HTTP control endpoint of the built-in simulator (stats, ledger); off when absent.
    pub control_listen: Option<String>,
}

/// How a channel is run: the server delivers to a fake only when told to, and a channel with
/// neither credentials nor simulator mode is off, so a misconfigured deploy shows instead of
/// quietly delivering nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelMode {
    /// The provider itself (or whatever `endpoint` names), with the configured credentials.
    Live,
    /// The built-in simulator from `clarion-sim`, in-process on loopback.
    Simulator,
    /// Neither: the channel's deliveries are held as a configuration fault.
    Off,
}

impl ChannelMode {
    /// The name used in the configuration, the log, `/v1/stats` and `/healthz`.
    pub fn name(self) -> &'static str {
        match self {
            ChannelMode::Live => "live",
            ChannelMode::Simulator => "simulator",
            ChannelMode::Off => "off",
        }
    }

    fn parse(key: &str, v: &str) -> Result<ChannelMode, ConfigError> {
        match v {
            "live" => Ok(ChannelMode::Live),
            "simulator" => Ok(ChannelMode::Simulator),
            "off" => Ok(ChannelMode::Off),
            other => Err(bad(
                key,
                format!("`{other}` is not a mode: one of live, simulator, off"),
            )),
        }
    }
}

/// Where APNs deliveries go.
#[derive(Debug, Clone)]
pub enum ApnsTarget {
    /// Apple (or the configured `endpoint`) with the credentials from `[apns]`.
    Live(ApnsConfig),
    /// The built-in simulator, started in-process.
    Simulator {
        topic: String,
        control_listen: Option<SocketAddr>,
    },
    /// No credentials and no simulator.
    Off,
}

impl ApnsTarget {
    pub fn mode(&self) -> ChannelMode {
        match self {
            ApnsTarget::Live(_) => ChannelMode::Live,
            ApnsTarget::Simulator { .. } => ChannelMode::Simulator,
            ApnsTarget::Off => ChannelMode::Off,
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub shards: usize,
    /// Neither `--shards` nor `shards` said how many: a data directory that records its count
    /// is opened with that count (`data_dir.rs`), whatever the cores.
    pub shards_from_data: bool,
    pub api_keys: Vec<String>,
    /// `[api] tls_cert_file` and `tls_key_file`: the API serves TLS; `None`: plain HTTP.
    pub api_tls: Option<(PathBuf, PathBuf)>,
    pub fsync: bool,
    /// Nice value (0-19) of fjall's flush and compaction threads; 0 leaves them alone.
    pub background_nice: i32,
    /// Start the writeback of fjall's table files every this many bytes as they are written;
    /// 0 leaves it to fjall's final fsync.
    pub table_writeback_bytes: u64,
    pub retention_ms: u64,
    pub dedup_window_ms: u64,
    pub per_user_per_hour: u32,
    /// Devices (active or not) a user may have; a registration past it first drops the user's
    /// oldest deactivated devices.
    pub max_devices_per_user: usize,
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub shutdown_grace_ms: u64,
    /// How long a delivery may sit behind a configuration fault before it goes dead.
    pub config_fault_dead_after_ms: u64,
    /// A channel catching up on a backlog is paced while the others are live.
    pub catch_up_yields: bool,
    pub mesh_channel_capacity: usize,
    pub lane_window: usize,
    pub apns: ApnsTarget,
    pub fcm: FcmTarget,
    pub webpush: WebPushSettings,
    pub http: HttpConfig,
    /// Drain, metrics address, logs.
    pub ops: ops::OpsConfig,
    /// `[alerts]`: `None` without a webhook.
    pub alerts: Option<crate::alerts::AlertsConfig>,
}

/// Command-line overrides for the common keys.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub shards: Option<usize>,
    /// `serve --simulate`: every channel delivers to its built-in simulator, whatever its
    /// section says.
    pub simulate: bool,
}

/// `[apns]` and `[simulator]` resolved to where deliveries go. An explicit `mode` wins;
/// without one, `key_file` means live and its absence off. `--simulate` overrides both.
fn apns_target(
    raw: Option<RawApns>,
    simulator: &RawSimulator,
    simulate: bool,
) -> Result<ApnsTarget, ConfigError> {
    let raw = raw.unwrap_or_default();
    let mode = match raw.mode.as_deref() {
        _ if simulate => ChannelMode::Simulator,
        Some(m) => ChannelMode::parse("apns.mode", m)?,
        None if raw.key_file.is_some() => ChannelMode::Live,
        None if raw.team_id.is_some() || raw.key_id.is_some() => {
            return Err(bad(
                "apns.key_file",
                "required when apns.team_id or apns.key_id is set",
            ));
        }
        None => ChannelMode::Off,
    };
    Ok(match mode {
        ChannelMode::Live => ApnsTarget::Live(validate_apns(raw)?),
        ChannelMode::Off => ApnsTarget::Off,
        ChannelMode::Simulator => {
            let control_listen = match &simulator.control_listen {
                None => None,
                Some(s) => Some(s.parse().map_err(|_| {
                    bad(
                        "simulator.control_listen",
                        format!("`{s}` is not an IP:port address"),
                    )
                })?),
            };
            ApnsTarget::Simulator {
                topic: raw.topic.unwrap_or_else(|| DEFAULT_APNS_TOPIC.into()),
                control_listen,
            }
        }
    })
}

/// The topic the built-in simulator expects when `[apns] topic` does not name one.
pub const DEFAULT_APNS_TOPIC: &str = "com.example.clarion";

/// The dotted key (`storage.fsync`) of the `key = value` line holding byte `at` of `text`, with
/// the `[table]` above it.
fn key_at(text: &str, at: usize) -> Option<String> {
    let line_start = text.get(..at)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(line_start..)?.lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    let table = text[..line_start].lines().rev().find_map(|l| {
        let l = l.trim();
        l.strip_prefix('[')?.strip_suffix(']').map(str::trim)
    });
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

impl RawConfig {
    /// Reads and parses a TOML file; a syntax or unknown-key error names the key and line.
    pub fn from_file(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad("--config", format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text)
    }

    pub fn from_toml(text: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| {
            // An unknown key is named in the message; a bad value by where it stands.
            let named = e.message().starts_with("unknown field");
            let key = if named {
                e.message().split('`').nth(1).map(str::to_string)
            } else {
                e.span().and_then(|span| key_at(text, span.start))
            };
            let key = key.unwrap_or_else(|| "(file)".to_string());
            bad(&key, e.to_string().trim().replace('\n', " "))
        })
    }

    /// Applies overrides and the environment, then validates everything.
    /// `env_api_keys` is the value of `CLARION_API_KEYS`, if set.
    pub fn validate(
        self,
        overrides: &Overrides,
        env_api_keys: Option<&str>,
        cores: usize,
    ) -> Result<Config, ConfigError> {
        let listen_text = overrides
            .listen
            .clone()
            .or(self.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            bad(
                "listen",
                format!("`{listen_text}` is not an IP:port address"),
            )
        })?;
        let data_dir = overrides
            .data_dir
            .clone()
            .or(self.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let shards_given = overrides.shards.or(self.shards);
        let shards = shards_given.unwrap_or(cores.max(1));
        if shards == 0 || shards > MAX_SHARDS {
            return Err(bad(
                "shards",
                format!("must be between 1 and {MAX_SHARDS}, got {shards}"),
            ));
        }

        let api_tls = match (self.api.tls_cert_file, self.api.tls_key_file) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(bad("api.tls_key_file", "required with api.tls_cert_file"));
            }
            (None, Some(_)) => {
                return Err(bad("api.tls_cert_file", "required with api.tls_key_file"));
            }
        };
        let mut api_keys: Vec<String> = self.api.keys.unwrap_or_default();
        if let Some(env) = env_api_keys {
            api_keys.extend(
                env.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(String::from),
            );
        }
        if api_keys.is_empty() {
            return Err(bad(
                "api.keys",
                "no API keys: set [api] keys or CLARION_API_KEYS",
            ));
        }
        if let Some(k) = api_keys
            .iter()
            .find(|k| k.len() < 16 || k.chars().any(char::is_whitespace))
        {
            let shown: String = k.chars().take(4).collect();
            return Err(bad(
                "api.keys",
                format!("key starting `{shown}` must be at least 16 characters without whitespace"),
            ));
        }

        let retention_ms = secs_to_ms(
            "storage.retention_seconds",
            self.storage.retention_seconds,
            7 * 86_400,
        )?;
        let dedup_window_ms = secs_to_ms(
            "storage.dedup_window_seconds",
            self.storage.dedup_window_seconds,
            86_400,
        )?;
        if dedup_window_ms > retention_ms {
            return Err(bad(
                "storage.dedup_window_seconds",
                "must not exceed storage.retention_seconds (the dedup set is rebuilt from retained records)",
            ));
        }

        let background_nice = self
            .storage
            .background_nice
            .unwrap_or(DEFAULT_BACKGROUND_NICE);
        if !(0..=19).contains(&background_nice) {
            return Err(bad(
                "storage.background_nice",
                "must be between 0 (no change) and 19 (lowest CPU priority)",
            ));
        }
        let table_writeback_bytes = self
            .storage
            .table_writeback_bytes
            .unwrap_or(DEFAULT_TABLE_WRITEBACK_BYTES);
        if table_writeback_bytes != 0 && !TABLE_WRITEBACK_RANGE.contains(&table_writeback_bytes) {
            return Err(bad(
                "storage.table_writeback_bytes",
                "must be 0 (off) or between 4096 and 1073741824",
            ));
        }

        let max_devices_per_user = self
            .contacts
            .max_devices_per_user
            .unwrap_or(DEFAULT_MAX_DEVICES_PER_USER);
        if !(1..=clarion_shards::MAX_DELIVERIES_PER_NOTIFICATION).contains(&max_devices_per_user) {
            return Err(bad(
                "contacts.max_devices_per_user",
                format!(
                    "must be between 1 and {} (one notification reaches at most that many devices)",
                    clarion_shards::MAX_DELIVERIES_PER_NOTIFICATION
                ),
            ));
        }

        let max_attempts = self.delivery.max_attempts.unwrap_or(8);
        if !(1..=100).contains(&max_attempts) {
            return Err(bad("delivery.max_attempts", "must be between 1 and 100"));
        }
        let backoff_base_ms = self.delivery.backoff_base_ms.unwrap_or(500);
        let backoff_max_ms = self.delivery.backoff_max_ms.unwrap_or(300_000);
        if backoff_base_ms == 0 || backoff_max_ms < backoff_base_ms {
            return Err(bad(
                "delivery.backoff_max_ms",
                "backoff_base_ms must be > 0 and backoff_max_ms >= backoff_base_ms",
            ));
        }

        let config_fault_dead_after_ms = secs_to_ms(
            "delivery.config_fault_dead_after_seconds",
            self.delivery.config_fault_dead_after_seconds,
            3600,
        )?;

        let apns = apns_target(self.apns, &self.simulator, overrides.simulate)?;
        let fcm = fcm::fcm_target(self.fcm, overrides.simulate)?;

        let mesh_channel_capacity = self
            .tuning
            .mesh_channel_capacity
            .unwrap_or(crate::mesh::MESH_CHANNEL_CAPACITY);
        if !(1..=1 << 20).contains(&mesh_channel_capacity) {
            return Err(bad(
                "tuning.mesh_channel_capacity",
                "must be between 1 and 1048576",
            ));
        }

        let lane_window = self
            .tuning
            .lane_window
            .unwrap_or(crate::engine::lane::WINDOW_CAPACITY);
        if !(2..=1 << 20).contains(&lane_window) {
            return Err(bad("tuning.lane_window", "must be between 2 and 1048576"));
        }
        let http = self.http.validate()?;
        let webpush = self.webpush.validate(overrides.simulate)?;
        let ops = ops::validate(self.server, self.metrics, self.log)?;
        if let Some(m) = ops.metrics_listen
            && m.port() == listen.port()
        {
            return Err(bad(
                "metrics.listen",
                format!("`{m}` shares the API's port: it would take part of the API's connections"),
            ));
        }
        let alerts = self.alerts.validate()?;

        Ok(Config {
            listen,
            data_dir,
            shards,
            shards_from_data: shards_given.is_none(),
            api_keys,
            api_tls,
            fsync: self.storage.fsync.unwrap_or(true),
            background_nice,
            table_writeback_bytes,
            retention_ms,
            dedup_window_ms,
            per_user_per_hour: self.caps.per_user_per_hour.unwrap_or(0),
            max_devices_per_user,
            max_attempts,
            backoff_base_ms,
            backoff_max_ms,
            shutdown_grace_ms: self.delivery.shutdown_grace_ms.unwrap_or(5_000),
            config_fault_dead_after_ms,
            catch_up_yields: self.delivery.catch_up_yields.unwrap_or(true),
            mesh_channel_capacity,
            lane_window,
            apns,
            fcm,
            webpush,
            http,
            ops,
            alerts,
        })
    }
}

fn secs_to_ms(key: &str, v: Option<u64>, default_s: u64) -> Result<u64, ConfigError> {
    let s = v.unwrap_or(default_s);
    if s == 0 || s > 10 * 365 * 86_400 {
        return Err(bad(key, "must be between 1 second and 10 years"));
    }
    Ok(s * 1000)
}

fn validate_apns(raw: RawApns) -> Result<ApnsConfig, ConfigError> {
    let endpoint = raw.endpoint.unwrap_or_else(|| DEFAULT_APNS_ENDPOINT.into());
    if !endpoint.starts_with("https://") {
        return Err(bad(
            "apns.endpoint",
            format!("`{endpoint}` must start with https://"),
        ));
    }
    let ten = |key: &str, v: Option<String>| -> Result<String, ConfigError> {
        let v = v.ok_or_else(|| bad(key, "required when APNs is live"))?;
        if v.len() != 10 || !v.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(bad(key, format!("`{v}` must be 10 letters or digits")));
        }
        Ok(v)
    };
    let team_id = ten("apns.team_id", raw.team_id)?;
    let key_id = ten("apns.key_id", raw.key_id)?;
    let key_file = raw
        .key_file
        .ok_or_else(|| bad("apns.key_file", "required"))?;
    let key_pem = std::fs::read(&key_file).map_err(|e| {
        bad(
            "apns.key_file",
            format!("cannot read {}: {e}", key_file.display()),
        )
    })?;
    if !String::from_utf8_lossy(&key_pem).contains("-----BEGIN PRIVATE KEY-----") {
        return Err(bad("apns.key_file", "not a PKCS#8 PEM (.p8) private key"));
    }
    let topic = raw
        .topic
        .ok_or_else(|| bad("apns.topic", "required (the app's bundle id)"))?;
    if topic.is_empty() || topic.chars().any(char::is_whitespace) {
        return Err(bad("apns.topic", "must be a bundle id without whitespace"));
    }
    let connections = raw.connections.unwrap_or(DEFAULT_APNS_CONNECTIONS);
    if !(1..=64).contains(&connections) {
        return Err(bad("apns.connections", "must be between 1 and 64"));
    }
    let ca_pem = match raw.ca_file {
        None => None,
        Some(p) => Some(
            std::fs::read(&p)
                .map_err(|e| bad("apns.ca_file", format!("cannot read {}: {e}", p.display())))?,
        ),
    };
    Ok(ApnsConfig {
        endpoint,
        team_id,
        key_id,
        key_pem,
        topic,
        connections,
        ca_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "test-key-0123456789abcdef";

    fn validate(text: &str) -> Result<Config, ConfigError> {
        RawConfig::from_toml(text)?.validate(&Overrides::default(), Some(KEY), 2)
    }

    #[test]
    fn defaults_are_sane() {
        let c = validate("").unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.shards, 2);
        assert!(c.fsync);
        assert_eq!(c.dedup_window_ms, 86_400_000);
        assert_eq!(c.retention_ms, 7 * 86_400_000);
        assert_eq!(c.max_devices_per_user, DEFAULT_MAX_DEVICES_PER_USER);
        assert_eq!(c.background_nice, DEFAULT_BACKGROUND_NICE);
        assert_eq!(c.table_writeback_bytes, DEFAULT_TABLE_WRITEBACK_BYTES);
        // Neither credentials nor simulator mode: APNs is off, not quietly simulated.
        assert_eq!(c.apns.mode(), ChannelMode::Off);
        assert_eq!(c.http, HttpConfig::default());
        assert_eq!(c.http.header_timeout.as_millis(), 10_000);
    }

    #[test]
    fn http_limits_name_their_key() {
        for (toml, key) in [
            ("header_timeout_ms = 0", "http.header_timeout_ms"),
            ("body_timeout_ms = 3600001", "http.body_timeout_ms"),
            ("idle_timeout_ms = 0", "http.idle_timeout_ms"),
            (
                "max_connections_per_shard = 0",
                "http.max_connections_per_shard",
            ),
            (
                "body_buffer_per_connection_bytes = 1000",
                "http.body_buffer_per_connection_bytes",
            ),
            (
                "body_buffer_per_shard_bytes = 8388608\nbody_buffer_per_connection_bytes = 9000000",
                "http.body_buffer_per_shard_bytes",
            ),
            ("header_timeout = 5", "header_timeout"),
        ] {
            let e = validate(&format!("[http]\n{toml}")).unwrap_err();
            assert_eq!(e.key, key, "{toml}");
        }
        let c = validate("[http]\nheader_timeout_ms = 250\nmax_connections_per_shard = 8").unwrap();
        assert_eq!(c.http.header_timeout.as_millis(), 250);
        assert_eq!(c.http.max_connections_per_shard, 8);
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_key() {
        for (toml, key) in [
            ("shards = \"two\"", "shards"),
            (
                "[storage]\nfsync = true\nretention_seconds = -5",
                "storage.retention_seconds",
            ),
            (
                "[api]\nkeys = [\"a\"]\n\n[storage]\nfsync = \"yes\"",
                "storage.fsync",
            ),
        ] {
            assert_eq!(validate(toml).unwrap_err().key, key, "{toml}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let e = validate("lisen = \"x\"").unwrap_err();
        assert_eq!(e.key, "lisen");
        let e = validate("[storage]\nfsynk = true").unwrap_err();
        assert_eq!(e.key, "fsynk");
    }

    #[test]
    fn bad_values_name_their_key() {
        assert_eq!(validate("listen = \"nope\"").unwrap_err().key, "listen");
        assert_eq!(validate("shards = 0").unwrap_err().key, "shards");
        assert_eq!(
            validate("[storage]\ndedup_window_seconds = 10\nretention_seconds = 5")
                .unwrap_err()
                .key,
            "storage.dedup_window_seconds"
        );
        assert_eq!(
            validate("[apns]\nteam_id = \"ABCDE12345\"")
                .unwrap_err()
                .key,
            "apns.key_file"
        );
        for bad in ["-1", "20"] {
            let e = validate(&format!("[storage]\nbackground_nice = {bad}")).unwrap_err();
            assert_eq!(e.key, "storage.background_nice", "{bad}");
        }
        for bad in ["1", "4095", "1073741825", "-1"] {
            let e = validate(&format!("[storage]\ntable_writeback_bytes = {bad}")).unwrap_err();
            assert_eq!(e.key, "storage.table_writeback_bytes", "{bad}");
        }
        for ok in ["0", "4096", "1073741824"] {
            let c = validate(&format!("[storage]\ntable_writeback_bytes = {ok}")).unwrap();
            assert_eq!(c.table_writeback_bytes.to_string(), ok);
        }
        for bad in ["0", "65537"] {
            let e = validate(&format!("[contacts]\nmax_devices_per_user = {bad}")).unwrap_err();
            assert_eq!(e.key, "contacts.max_devices_per_user", "{bad}");
        }
        assert_eq!(
            validate("[contacts]\nmax_devices_per_user = 65536")
                .unwrap()
                .max_devices_per_user,
            65_536
        );
        let e = validate("[apns]\nkey_file = \"/nonexistent.p8\"\nteam_id=\"ABCDE12345\"\nkey_id=\"ABCDE12345\"\ntopic=\"a.b\"").unwrap_err();
        assert_eq!(e.key, "apns.key_file");
    }

    #[test]
    fn apns_runs_a_simulator_only_when_told_to() {
        let mode = |toml: &str, simulate: bool| {
            let o = Overrides {
                simulate,
                ..Overrides::default()
            };
            RawConfig::from_toml(toml)
                .unwrap()
                .validate(&o, Some("aaaaaaaaaaaaaaaa"), 2)
                .map(|c| c.apns.mode())
        };
        assert_eq!(mode("", false).unwrap(), ChannelMode::Off);
        assert_eq!(
            mode("[apns]\ntopic = \"a.b\"", false).unwrap(),
            ChannelMode::Off
        );
        assert_eq!(
            mode("[apns]\nmode = \"off\"", false).unwrap(),
            ChannelMode::Off
        );
        assert_eq!(
            mode("[apns]\nmode = \"simulator\"", false).unwrap(),
            ChannelMode::Simulator
        );
        assert_eq!(mode("", true).unwrap(), ChannelMode::Simulator);
        assert_eq!(
            mode("[apns]\nmode = \"off\"", true).unwrap(),
            ChannelMode::Simulator,
            "--simulate overrides the section"
        );
        let e = mode("[apns]\nmode = \"fake\"", false).unwrap_err();
        assert_eq!(e.key, "apns.mode");
        assert!(e.message.contains("live, simulator, off"), "{e}");
        // Live without credentials names what is missing.
        let e = mode("[apns]\nmode = \"live\"", false).unwrap_err();
        assert_eq!(e.key, "apns.team_id");
        let c = RawConfig::from_toml("[apns]\nmode = \"simulator\"\ntopic = \"com.acme.app\"")
            .unwrap()
            .validate(&Overrides::default(), Some("aaaaaaaaaaaaaaaa"), 2)
            .unwrap();
        match c.apns {
            ApnsTarget::Simulator { topic, .. } => assert_eq!(topic, "com.acme.app"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn overrides_and_env_keys() {
        let o = Overrides {
            listen: Some("127.0.0.1:9999".into()),
            shards: Some(3),
            data_dir: None,
            simulate: false,
        };
        let c = RawConfig::from_toml("shards = 1")
            .unwrap()
            .validate(&o, Some("aaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbb"), 2)
            .unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.shards, 3);
        assert_eq!(c.api_keys.len(), 2);
        let e = RawConfig::from_toml("")
            .unwrap()
            .validate(&Overrides::default(), None, 2)
            .unwrap_err();
        assert_eq!(e.key, "api.keys");
        let e = RawConfig::from_toml("[api]\nkeys=[\"short\"]")
            .unwrap()
            .validate(&Overrides::default(), None, 2)
            .unwrap_err();
        assert_eq!(e.key, "api.keys");
    }
}
