//! `[webpush]`: the Web Push channel's settings.

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebPush {
    /// Subscription endpoints may be `http://127.0.0.1[:port]/...` besides `https` (tests and
    /// local push services only).
    pub allow_insecure_loopback: Option<bool>,
}

/// The validated `[webpush]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebPushSettings {
    pub allow_insecure_loopback: bool,
}

impl RawWebPush {
    pub fn validate(self) -> Result<WebPushSettings, ConfigError> {
        Ok(WebPushSettings {
            allow_insecure_loopback: self.allow_insecure_loopback.unwrap_or(false),
        })
    }
}
