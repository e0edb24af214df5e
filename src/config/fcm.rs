//! `[fcm]`: where Android deliveries go. Like `[apns]`: an explicit `mode` wins; without one, a
//! `service_account_file` means live and its absence off; `serve --simulate` overrides both.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ChannelMode, ConfigError, bad};
use crate::channels::fcm::{
    DEFAULT_CONNECTIONS, DEFAULT_ENDPOINT, DEFAULT_QUOTA_PER_MINUTE, FcmConfig,
    MAX_CONNECTIONS_PER_SHARD, ServiceAccount,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFcm {
    /// `live`, `simulator` or `off`.
    pub mode: Option<String>,
    pub project_id: Option<String>,
    /// A Google service account JSON key file; its `token_uri` is where tokens come from.
    pub service_account_file: Option<PathBuf>,
    pub endpoint: Option<String>,
    pub connections: Option<usize>,
    pub quota_per_minute: Option<u64>,
    pub ca_file: Option<PathBuf>,
}

/// Where FCM deliveries go.
#[derive(Debug, Clone)]
pub enum FcmTarget {
    Live(FcmConfig),
    /// The built-in simulator, started in-process.
    Simulator {
        connections: usize,
    },
    Off,
}

impl FcmTarget {
    pub fn mode(&self) -> ChannelMode {
        match self {
            FcmTarget::Live(_) => ChannelMode::Live,
            FcmTarget::Simulator { .. } => ChannelMode::Simulator,
            FcmTarget::Off => ChannelMode::Off,
        }
    }
}

fn connections(raw: Option<usize>) -> Result<usize, ConfigError> {
    let c = raw.unwrap_or(DEFAULT_CONNECTIONS);
    if !(1..=MAX_CONNECTIONS_PER_SHARD).contains(&c) {
        return Err(bad(
            "fcm.connections",
            format!("must be between 1 and {MAX_CONNECTIONS_PER_SHARD}"),
        ));
    }
    Ok(c)
}

/// `[fcm]` resolved.
pub fn fcm_target(raw: Option<RawFcm>, simulate: bool) -> Result<FcmTarget, ConfigError> {
    let raw = raw.unwrap_or_default();
    let mode = match raw.mode.as_deref() {
        _ if simulate => ChannelMode::Simulator,
        Some(m) => ChannelMode::parse("fcm.mode", m)?,
        None if raw.service_account_file.is_some() => ChannelMode::Live,
        None if raw.project_id.is_some() => {
            return Err(bad(
                "fcm.service_account_file",
                "required when fcm.project_id is set",
            ));
        }
        None => ChannelMode::Off,
    };
    Ok(match mode {
        ChannelMode::Off => FcmTarget::Off,
        ChannelMode::Simulator => FcmTarget::Simulator {
            connections: connections(raw.connections)?,
        },
        ChannelMode::Live => FcmTarget::Live(live(raw)?),
    })
}

fn live(raw: RawFcm) -> Result<FcmConfig, ConfigError> {
    let project_id = raw
        .project_id
        .ok_or_else(|| bad("fcm.project_id", "required when FCM is live"))?;
    let file = raw
        .service_account_file
        .ok_or_else(|| bad("fcm.service_account_file", "required when FCM is live"))?;
    let json = std::fs::read(&file).map_err(|e| {
        bad(
            "fcm.service_account_file",
            format!("cannot read {}: {e}", file.display()),
        )
    })?;
    let account = ServiceAccount::parse(&json).map_err(|e| {
        bad(
            "fcm.service_account_file",
            format!("{}: {e}", file.display()),
        )
    })?;
    let endpoint = raw.endpoint.unwrap_or_else(|| DEFAULT_ENDPOINT.into());
    if !endpoint.starts_with("https://") {
        return Err(bad(
            "fcm.endpoint",
            format!("`{endpoint}` must start with https://"),
        ));
    }
    let quota_per_minute = raw.quota_per_minute.unwrap_or(DEFAULT_QUOTA_PER_MINUTE);
    if quota_per_minute == 0 {
        return Err(bad("fcm.quota_per_minute", "must be at least 1"));
    }
    let ca_pem = match raw.ca_file {
        None => None,
        Some(p) => Some(
            std::fs::read(&p)
                .map_err(|e| bad("fcm.ca_file", format!("cannot read {}: {e}", p.display())))?,
        ),
    };
    let cfg = FcmConfig {
        project_id,
        endpoint,
        account,
        connections: connections(raw.connections)?,
        quota_per_minute,
        ca_pem,
    };
    crate::channels::fcm::validate(&cfg).map_err(|e| bad("fcm", e.to_string()))?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_follows_the_section() {
        assert!(matches!(fcm_target(None, false).unwrap(), FcmTarget::Off));
        assert!(matches!(
            fcm_target(None, true).unwrap(),
            FcmTarget::Simulator { connections: 2 }
        ));
        let raw = RawFcm {
            project_id: Some("p".into()),
            ..RawFcm::default()
        };
        assert_eq!(
            fcm_target(Some(raw), false).unwrap_err().key,
            "fcm.service_account_file"
        );
        let raw = RawFcm {
            mode: Some("live".into()),
            ..RawFcm::default()
        };
        assert_eq!(
            fcm_target(Some(raw), false).unwrap_err().key,
            "fcm.project_id"
        );
        let raw = RawFcm {
            mode: Some("sometimes".into()),
            ..RawFcm::default()
        };
        assert_eq!(fcm_target(Some(raw), false).unwrap_err().key, "fcm.mode");
        let raw = RawFcm {
            mode: Some("simulator".into()),
            connections: Some(0),
            ..RawFcm::default()
        };
        assert_eq!(
            fcm_target(Some(raw), false).unwrap_err().key,
            "fcm.connections"
        );
    }

    #[test]
    fn a_live_section_reads_its_service_account() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sa.json");
        let json = crate::channels::fcm::ServiceAccount::test_key_file(
            "https://oauth2.googleapis.com/token",
        );
        std::fs::write(&file, json).unwrap();
        let raw = RawFcm {
            project_id: Some("my-project".into()),
            service_account_file: Some(file.clone()),
            ..RawFcm::default()
        };
        let FcmTarget::Live(cfg) = fcm_target(Some(raw), false).unwrap() else {
            panic!("live")
        };
        assert_eq!(
            (cfg.endpoint.as_str(), cfg.quota_per_minute),
            (DEFAULT_ENDPOINT, 600_000)
        );
        std::fs::write(&file, "{}").unwrap();
        let raw = RawFcm {
            project_id: Some("my-project".into()),
            service_account_file: Some(file),
            ..RawFcm::default()
        };
        let e = fcm_target(Some(raw), false).unwrap_err();
        assert_eq!(e.key, "fcm.service_account_file");
    }
}
