//! The sections an operator sets to run Clarion behind a load balancer: `[server]` (the drain on
//! SIGTERM), `[metrics]` (a separate scrape address), `[log]` (text or JSON lines), `[alerts]`
//! (a webhook for developers) and `[api]`'s TLS files. Each is validated into [`OpsConfig`].

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, bad};

/// How long a draining server keeps serving after SIGTERM unless configured: a load balancer
/// checking `/readyz` every second and taking two failures to mark it down has seen it by then.
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::from_millis(5_000);
/// The longest drain delay accepted: past it a rolling restart waits for nothing.
const MAX_DRAIN_DELAY_MS: u64 = 600_000;

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// After SIGTERM, `/readyz` answers `503` at once and the listeners keep serving this long.
    pub drain_delay_ms: Option<u64>,
}

/// `[metrics]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// A separate plain-HTTP address serving only `GET /metrics`, without a key.
    pub listen: Option<String>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `text` (the default) or `json` (one JSON object per line).
    pub format: Option<String>,
    /// A `tracing` filter such as `info` or `info,clarion::engine=debug`; `CLARION_LOG` wins.
    pub level: Option<String>,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The validated operating sections.
#[derive(Debug, Clone)]
pub struct OpsConfig {
    pub drain_delay: Duration,
    pub metrics_listen: Option<SocketAddr>,
    pub log_format: LogFormat,
    pub log_level: Option<String>,
}

impl Default for OpsConfig {
    fn default() -> OpsConfig {
        OpsConfig {
            drain_delay: DEFAULT_DRAIN_DELAY,
            metrics_listen: None,
            log_format: LogFormat::Text,
            log_level: None,
        }
    }
}

pub fn validate(
    server: RawServer,
    metrics: RawMetrics,
    log: RawLog,
) -> Result<OpsConfig, ConfigError> {
    let drain_ms = server
        .drain_delay_ms
        .unwrap_or(DEFAULT_DRAIN_DELAY.as_millis() as u64);
    if drain_ms > MAX_DRAIN_DELAY_MS {
        return Err(bad(
            "server.drain_delay_ms",
            format!("must be at most {MAX_DRAIN_DELAY_MS} (10 minutes), got {drain_ms}"),
        ));
    }
    let metrics_listen = match metrics.listen {
        None => None,
        Some(s) => Some(
            s.parse::<SocketAddr>()
                .map_err(|_| bad("metrics.listen", format!("`{s}` is not an IP:port address")))?,
        ),
    };
    let log_format = match log.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(bad(
                "log.format",
                format!("`{other}` is not one of `text`, `json`"),
            ));
        }
    };
    if let Some(level) = &log.level
        && tracing_subscriber::EnvFilter::try_new(level).is_err()
    {
        return Err(bad(
            "log.level",
            format!("`{level}` is not a tracing filter (such as `info` or `info,clarion=debug`)"),
        ));
    }
    Ok(OpsConfig {
        drain_delay: Duration::from_millis(drain_ms),
        metrics_listen,
        log_format,
        log_level: log.level,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refusals_name_their_key() {
        let ops = validate(
            RawServer::default(),
            RawMetrics::default(),
            RawLog::default(),
        )
        .unwrap();
        assert_eq!(ops.drain_delay, DEFAULT_DRAIN_DELAY);
        assert_eq!(ops.log_format, LogFormat::Text);
        assert!(ops.metrics_listen.is_none());

        let e = validate(
            RawServer {
                drain_delay_ms: Some(MAX_DRAIN_DELAY_MS + 1),
            },
            RawMetrics::default(),
            RawLog::default(),
        )
        .unwrap_err();
        assert_eq!(e.key, "server.drain_delay_ms");
        let e = validate(
            RawServer::default(),
            RawMetrics {
                listen: Some("nowhere".into()),
            },
            RawLog::default(),
        )
        .unwrap_err();
        assert_eq!(e.key, "metrics.listen");
        let e = validate(
            RawServer::default(),
            RawMetrics::default(),
            RawLog {
                format: Some("xml".into()),
                level: None,
            },
        )
        .unwrap_err();
        assert_eq!(e.key, "log.format");
        let ops = validate(
            RawServer {
                drain_delay_ms: Some(0),
            },
            RawMetrics {
                listen: Some("127.0.0.1:9100".into()),
            },
            RawLog {
                format: Some("json".into()),
                level: Some("debug".into()),
            },
        )
        .unwrap();
        assert_eq!(ops.drain_delay, Duration::ZERO);
        assert_eq!(ops.log_format, LogFormat::Json);
        assert_eq!(ops.metrics_listen, Some("127.0.0.1:9100".parse().unwrap()));
    }
}
