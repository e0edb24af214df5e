//! What raises an alert, from one evaluation to the next: each rule reads the change in the
//! shards' summed counters since the previous evaluation (and the queues' ages now), and says
//! which alerts fire. Pure, so the rules are tested without a server.

use clarion_shards::Channel;

use super::AlertsConfig;
use crate::engine::probe::ProbeSnapshot;

/// One alert's identity: its kind and the channel it is about (`None`: every channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AlertKey {
    pub kind: &'static str,
    pub channel: Option<Channel>,
}

/// An alert that fires now, with the value that crossed its threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    pub key: AlertKey,
    pub value: f64,
    pub threshold: f64,
    pub message: String,
}

/// The alerts that fire, from the totals of the previous evaluation and of this one.
pub fn evaluate(cfg: &AlertsConfig, before: &ProbeSnapshot, now: &ProbeSnapshot) -> Vec<Firing> {
    let mut out = Vec::new();
    for c in Channel::ALL {
        let (b, n) = (&before.by_channel[c.index()], &now.by_channel[c.index()]);
        let sent = n.sent.saturating_sub(b.sent);
        let failures =
            (n.retried + n.failed + n.dead).saturating_sub(b.retried + b.failed + b.dead);
        let attempts = sent + failures;
        let rate = if attempts == 0 {
            0.0
        } else {
            failures as f64 / attempts as f64
        };
        if n.breaker_open > 0 || (attempts >= cfg.min_attempts && rate >= cfg.failure_rate) {
            out.push(Firing {
                key: AlertKey {
                    kind: "failure_rate",
                    channel: Some(*c),
                },
                value: rate,
                threshold: cfg.failure_rate,
                message: if n.breaker_open > 0 {
                    format!(
                        "{}: the provider is failing; its circuit breaker is open on {} shard(s) ({failures} of {attempts} attempts failed since the last check)",
                        c.as_str(),
                        n.breaker_open
                    )
                } else {
                    format!(
                        "{}: {failures} of {attempts} attempts failed since the last check",
                        c.as_str()
                    )
                },
            });
        }
        let dead = n.dead.saturating_sub(b.dead);
        if dead >= cfg.dead_letters && dead > 0 {
            out.push(Firing {
                key: AlertKey {
                    kind: "dead_letters",
                    channel: Some(*c),
                },
                value: dead as f64,
                threshold: cfg.dead_letters as f64,
                message: format!(
                    "{}: {dead} deliveries went dead since the last check (see GET /v1/dead-letters)",
                    c.as_str()
                ),
            });
        }
        let age_s = n.oldest_age_ms as f64 / 1e3;
        if age_s >= cfg.oldest_queued_age_s {
            out.push(Firing {
                key: AlertKey {
                    kind: "oldest_queued_age",
                    channel: Some(*c),
                },
                value: age_s,
                threshold: cfg.oldest_queued_age_s,
                message: format!(
                    "{}: a delivery has waited {age_s:.0} s since it was accepted",
                    c.as_str()
                ),
            });
        }
    }
    let faults = now.config_faults.saturating_sub(before.config_faults);
    if faults > 0 {
        out.push(Firing {
            key: AlertKey {
                kind: "config_fault",
                channel: None,
            },
            value: faults as f64,
            threshold: 1.0,
            message: format!(
                "{faults} sends refused for a configuration fault since the last check (credentials, topic or endpoint: see the log)"
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AlertsConfig {
        AlertsConfig::for_tests("http://127.0.0.1:1/hook")
    }

    #[test]
    fn each_rule_fires_past_its_threshold_and_not_below() {
        let before = ProbeSnapshot::default();
        let mut now = ProbeSnapshot::default();
        assert!(evaluate(&cfg(), &before, &now).is_empty());
        let apns = &mut now.by_channel[Channel::Apns.index()];
        apns.sent = 10;
        apns.retried = 30;
        let fcm = &mut now.by_channel[Channel::Fcm.index()];
        fcm.sent = 100;
        fcm.retried = 1;
        fcm.dead = 2;
        now.by_channel[Channel::Webpush.index()].oldest_age_ms = 400_000;
        now.config_faults = 3;
        let kinds: Vec<(&str, Option<&str>)> = evaluate(&cfg(), &before, &now)
            .iter()
            .map(|f| (f.key.kind, f.key.channel.map(|c| c.as_str())))
            .collect();
        assert_eq!(
            kinds,
            [
                ("failure_rate", Some("apns")),
                ("dead_letters", Some("fcm")),
                ("oldest_queued_age", Some("webpush")),
                ("config_fault", None),
            ]
        );
        // The same totals again: only what is a level, not a change, still fires.
        let kinds: Vec<&str> = evaluate(&cfg(), &now, &now)
            .iter()
            .map(|f| f.key.kind)
            .collect();
        assert_eq!(kinds, ["oldest_queued_age"]);
    }
}
