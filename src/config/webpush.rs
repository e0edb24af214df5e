//! `[webpush]`: the Web Push channel. Live when `subject` is set (the VAPID key is the
//! configured file's, or generated once and kept in the data directory), `simulator` or `off`
//! by `mode`; `serve --simulate` puts it in simulator mode.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ChannelMode, ConfigError, bad};

/// Connections per push-service origin per shard unless configured.
pub const DEFAULT_CONNECTIONS_PER_ORIGIN: usize = 2;
/// The VAPID `sub` the built-in simulator's deliveries carry.
pub const SIMULATOR_SUBJECT: &str = "mailto:simulator@clarion.invalid";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebPush {
    /// `live`, `simulator` or `off`; absent: live with `subject`, otherwise off.
    pub mode: Option<String>,
    /// A PKCS#8 PEM P-256 key; absent: generated on first start and kept in the data directory.
    pub vapid_private_key_file: Option<PathBuf>,
    /// VAPID `sub`: `mailto:` or `https:` contact for the push services.
    pub subject: Option<String>,
    pub connections_per_origin: Option<usize>,
    /// Subscription endpoints may be `http://127.0.0.1[:port]/...` besides `https` (tests and
    /// local push services only).
    pub allow_insecure_loopback: Option<bool>,
    pub ca_file: Option<PathBuf>,
}

/// The validated `[webpush]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebPushSettings {
    pub mode: Option<ChannelMode>,
    pub vapid_private_key_file: Option<PathBuf>,
    pub subject: String,
    pub connections_per_origin: usize,
    pub allow_insecure_loopback: bool,
    pub ca_pem: Option<Vec<u8>>,
}

impl WebPushSettings {
    /// The channel's mode (off when not configured).
    pub fn mode(&self) -> ChannelMode {
        self.mode.unwrap_or(ChannelMode::Off)
    }
}

impl RawWebPush {
    pub fn validate(self, simulate: bool) -> Result<WebPushSettings, ConfigError> {
        let mode = match self.mode.as_deref() {
            _ if simulate => ChannelMode::Simulator,
            Some(m) => ChannelMode::parse("webpush.mode", m)?,
            None if self.subject.is_some() => ChannelMode::Live,
            None => ChannelMode::Off,
        };
        let subject = match (mode, self.subject) {
            (ChannelMode::Live, None) => {
                return Err(bad(
                    "webpush.subject",
                    "required when Web Push is live (mailto: or https: contact for the push services)",
                ));
            }
            (_, Some(s))
                if !(s.starts_with("mailto:") || s.starts_with("https:")) || s.len() > 256 =>
            {
                return Err(bad(
                    "webpush.subject",
                    format!("`{s}` must be a mailto: or https: URL of at most 256 bytes"),
                ));
            }
            (_, Some(s)) => s,
            (_, None) => SIMULATOR_SUBJECT.to_string(),
        };
        let connections_per_origin = self
            .connections_per_origin
            .unwrap_or(DEFAULT_CONNECTIONS_PER_ORIGIN);
        if !(1..=16).contains(&connections_per_origin) {
            return Err(bad(
                "webpush.connections_per_origin",
                "must be between 1 and 16",
            ));
        }
        let ca_pem = match self.ca_file {
            None => None,
            Some(p) => Some(std::fs::read(&p).map_err(|e| {
                bad(
                    "webpush.ca_file",
                    format!("cannot read {}: {e}", p.display()),
                )
            })?),
        };
        if let Some(f) = &self.vapid_private_key_file {
            if !f.is_file() {
                return Err(bad(
                    "webpush.vapid_private_key_file",
                    format!("{} is not a readable file", f.display()),
                ));
            }
        }
        Ok(WebPushSettings {
            mode: Some(mode),
            vapid_private_key_file: self.vapid_private_key_file,
            subject,
            connections_per_origin,
            allow_insecure_loopback: self.allow_insecure_loopback.unwrap_or(false),
            ca_pem,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_needs_a_subject_and_keys_are_named() {
        let ok = RawWebPush {
            subject: Some("mailto:ops@example.com".into()),
            ..RawWebPush::default()
        };
        assert_eq!(ok.validate(false).unwrap().mode(), ChannelMode::Live);
        assert_eq!(
            RawWebPush::default().validate(false).unwrap().mode(),
            ChannelMode::Off
        );
        assert_eq!(
            RawWebPush::default().validate(true).unwrap().mode(),
            ChannelMode::Simulator
        );
        let live = RawWebPush {
            mode: Some("live".into()),
            ..RawWebPush::default()
        };
        assert_eq!(live.validate(false).unwrap_err().key, "webpush.subject");
        let bad_subject = RawWebPush {
            subject: Some("ops@example.com".into()),
            ..RawWebPush::default()
        };
        assert_eq!(
            bad_subject.validate(false).unwrap_err().key,
            "webpush.subject"
        );
        let no_file = RawWebPush {
            subject: Some("mailto:a@b.c".into()),
            vapid_private_key_file: Some("/nonexistent.pem".into()),
            ..RawWebPush::default()
        };
        assert_eq!(
            no_file.validate(false).unwrap_err().key,
            "webpush.vapid_private_key_file"
        );
        let many = RawWebPush {
            connections_per_origin: Some(0),
            ..RawWebPush::default()
        };
        assert_eq!(
            many.validate(false).unwrap_err().key,
            "webpush.connections_per_origin"
        );
    }
}
