//! Alerts to developers: every `[alerts] interval_seconds`, shard 0 sums every shard's probe
//! and checks the rules (`rules.rs`: a channel's failure rate or open circuit breaker, its new
//! dead letters, its oldest queued delivery's age, configuration faults); an alert that starts
//! firing, or stops, is logged and POSTed as JSON to `[alerts] webhook_url` (`notifier.rs`),
//! with a cool-down per alert, retried, on its own task: delivery never waits for it.

mod notifier;
mod rules;

use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, bad};

pub use notifier::run;
pub use rules::{AlertKey, Firing, evaluate};

/// `[alerts]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// Where alerts are POSTed (`https://...`, or `http://...`); alerts are off without it.
    pub webhook_url: Option<String>,
    /// A channel's share of failed attempts (0 to 1) that fires `failure_rate`.
    pub failure_rate: Option<f64>,
    /// Fewest attempts in an interval for its failure rate to count.
    pub min_attempts: Option<u64>,
    /// New dead letters in an interval that fire `dead_letters`.
    pub dead_letters: Option<u64>,
    /// Seconds the oldest ready delivery may wait before `oldest_queued_age` fires.
    pub oldest_queued_age_seconds: Option<f64>,
    /// How often the rules are checked.
    pub interval_seconds: Option<f64>,
    /// Least time between two posts of the same alert firing.
    pub cooldown_seconds: Option<f64>,
}

/// The validated `[alerts]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertsConfig {
    pub webhook_url: String,
    pub failure_rate: f64,
    pub min_attempts: u64,
    pub dead_letters: u64,
    pub oldest_queued_age_s: f64,
    pub interval: Duration,
    pub cooldown: Duration,
}

impl AlertsConfig {
    #[cfg(test)]
    pub fn for_tests(url: &str) -> AlertsConfig {
        AlertsConfig {
            webhook_url: url.into(),
            failure_rate: 0.5,
            min_attempts: 20,
            dead_letters: 1,
            oldest_queued_age_s: 300.0,
            interval: Duration::from_secs(10),
            cooldown: Duration::from_secs(300),
        }
    }
}

fn seconds(key: &str, v: Option<f64>, default: f64, min: f64) -> Result<Duration, ConfigError> {
    let s = v.unwrap_or(default);
    if !(s.is_finite() && s >= min && s <= 86_400.0) {
        return Err(bad(key, format!("must be between {min} and 86400 seconds")));
    }
    Ok(Duration::from_secs_f64(s))
}

impl RawAlerts {
    /// `None` when no webhook is set (alerts off).
    pub fn validate(self) -> Result<Option<AlertsConfig>, ConfigError> {
        let Some(url) = self.webhook_url else {
            return Ok(None);
        };
        notifier::target(&url).map_err(|why| bad("alerts.webhook_url", why))?;
        let failure_rate = self.failure_rate.unwrap_or(0.5);
        if !(failure_rate > 0.0 && failure_rate <= 1.0) {
            return Err(bad("alerts.failure_rate", "must be above 0 and at most 1"));
        }
        Ok(Some(AlertsConfig {
            webhook_url: url,
            failure_rate,
            min_attempts: self.min_attempts.unwrap_or(20).max(1),
            dead_letters: self.dead_letters.unwrap_or(1).max(1),
            oldest_queued_age_s: seconds(
                "alerts.oldest_queued_age_seconds",
                self.oldest_queued_age_seconds,
                300.0,
                1.0,
            )?
            .as_secs_f64(),
            interval: seconds("alerts.interval_seconds", self.interval_seconds, 10.0, 0.1)?,
            cooldown: seconds("alerts.cooldown_seconds", self.cooldown_seconds, 300.0, 0.0)?,
        }))
    }
}
