//! `GET /metrics`'s body from every shard's probe snapshot: the families, their names, labels
//! and help, as Prometheus' conventions have them (`clarion_` prefix, base units, `_total`
//! counters, `_seconds` histograms).

use clarion_shards::Channel;

use super::histogram::Histogram;
use super::text::{Kind, Text};
use crate::engine::probe::{ChannelSnapshot, ProbeSnapshot};

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders the metrics: `shards` holds one snapshot per shard, in shard order; `channels` each
/// channel's name and mode; `ready` whether `/readyz` answers `200`.
pub fn render(shards: &[ProbeSnapshot], channels: &[(&str, &str)], ready: bool) -> String {
    let mut total = ProbeSnapshot::default();
    for s in shards {
        total.add(s);
    }
    let mut t = Text::default();
    intake(&mut t, &total);
    deliveries(&mut t, &total);
    queues(&mut t, shards, &total);
    latencies(&mut t, &total);
    storage(&mut t, &total);
    process(&mut t, &total, channels, shards.len(), ready);
    t.finish()
}

fn counter(t: &mut Text, name: &str, help: &str, value: u64) {
    t.family(name, Kind::Counter, help);
    t.sample(name, &[], value as f64);
}

fn gauge(t: &mut Text, name: &str, help: &str, value: f64) {
    t.family(name, Kind::Gauge, help);
    t.sample(name, &[], value);
}

/// A counter family with one sample per channel.
fn per_channel(
    t: &mut Text,
    name: &str,
    kind: Kind,
    help: &str,
    total: &ProbeSnapshot,
    value: impl Fn(&ChannelSnapshot) -> f64,
) {
    t.family(name, kind, help);
    for c in Channel::ALL {
        t.sample(
            name,
            &[("channel", c.as_str())],
            value(&total.by_channel[c.index()]),
        );
    }
}

fn intake(t: &mut Text, total: &ProbeSnapshot) {
    counter(
        t,
        "clarion_notifications_accepted_total",
        "Notifications accepted (answered 202 after the fsync that covers them).",
        total.accepted,
    );
    let name = "clarion_notifications_refused_total";
    t.family(
        name,
        Kind::Counter,
        "Notifications refused, by the answer's error code (a batch's items each).",
    );
    for (reason, _, n) in &total.refused {
        t.sample(name, &[("reason", reason)], *n as f64);
    }
    counter(
        t,
        "clarion_dedup_hits_total",
        "Notifications answered as duplicates of an earlier one with the same idempotency key.",
        total.duplicates,
    );
    let name = "clarion_http_requests_total";
    t.family(
        name,
        Kind::Counter,
        "API requests answered, by route template and status.",
    );
    for (route, status, n) in &total.http_requests {
        t.sample(
            name,
            &[("route", route), ("status", &status.to_string())],
            *n as f64,
        );
    }
}

fn deliveries(t: &mut Text, total: &ProbeSnapshot) {
    let name = "clarion_deliveries_total";
    t.family(
        name,
        Kind::Counter,
        "Deliveries settled, by channel and outcome (sent, failed, dead, suppressed, expired).",
    );
    for c in Channel::ALL {
        let s = &total.by_channel[c.index()];
        for (outcome, n) in [
            ("sent", s.sent),
            ("failed", s.failed),
            ("dead", s.dead),
            ("suppressed", s.suppressed),
            ("expired", s.expired),
        ] {
            t.sample(
                name,
                &[("channel", c.as_str()), ("outcome", outcome)],
                n as f64,
            );
        }
    }
    per_channel(
        t,
        "clarion_deliveries_accepted_total",
        Kind::Counter,
        "Deliveries created for accepted notifications, by channel.",
        total,
        |s| s.accepted as f64,
    );
    per_channel(
        t,
        "clarion_delivery_retries_total",
        Kind::Counter,
        "Attempts that failed retryably and were scheduled again, by channel.",
        total,
        |s| s.retried as f64,
    );
    let name = "clarion_suppressions_total";
    t.family(
        name,
        Kind::Counter,
        "Deliveries suppressed, by channel and reason.",
    );
    for c in Channel::ALL {
        t.sample(
            name,
            &[("channel", c.as_str()), ("reason", "frequency_cap")],
            total.by_channel[c.index()].suppressed as f64,
        );
    }
    per_channel(
        t,
        "clarion_devices_deactivated_total",
        Kind::Counter,
        "Devices deactivated because the provider called their token dead, by channel.",
        total,
        |s| s.deactivated as f64,
    );
    per_channel(
        t,
        "clarion_dead_letters_replayed_total",
        Kind::Counter,
        "Dead deliveries replayed (queued again), by channel.",
        total,
        |s| s.replayed as f64,
    );
    counter(
        t,
        "clarion_dead_letters_purged_total",
        "Dead letters purged.",
        total.purged,
    );
}

fn queues(t: &mut Text, shards: &[ProbeSnapshot], total: &ProbeSnapshot) {
    for (name, help, value) in [
        (
            "clarion_queue_depth",
            "Deliveries still to attempt (the backlog in the log, ready and in flight included), by channel and shard.",
            (|s: &ChannelSnapshot| s.backlog as f64) as fn(&ChannelSnapshot) -> f64,
        ),
        (
            "clarion_queue_ready",
            "Deliveries ready in memory (the lane's window), by channel and shard.",
            |s: &ChannelSnapshot| s.queue_depth as f64,
        ),
        (
            "clarion_queue_oldest_age_seconds",
            "How long the oldest ready delivery has waited since its notification was accepted, by channel and shard.",
            |s: &ChannelSnapshot| s.oldest_age_ms as f64 / 1e3,
        ),
    ] {
        t.family(name, Kind::Gauge, help);
        for (i, shard) in shards.iter().enumerate() {
            let shard_label = i.to_string();
            for c in Channel::ALL {
                t.sample(
                    name,
                    &[("channel", c.as_str()), ("shard", &shard_label)],
                    value(&shard.by_channel[c.index()]),
                );
            }
        }
    }
    per_channel(
        t,
        "clarion_provider_requests_in_flight",
        Kind::Gauge,
        "Provider requests running now, by channel.",
        total,
        |s| s.in_flight as f64,
    );
    per_channel(
        t,
        "clarion_circuit_breaker_open",
        Kind::Gauge,
        "Shards whose circuit breaker for the channel is open or probing.",
        total,
        |s| s.breaker_open as f64,
    );
    counter(
        t,
        "clarion_circuit_breaker_opened_total",
        "Times a channel's circuit breaker opened (every channel and shard).",
        total.breaker_opened,
    );
}

fn latencies(t: &mut Text, total: &ProbeSnapshot) {
    let name = "clarion_accept_latency_seconds";
    t.family(
        name,
        Kind::Histogram,
        "From a notification request's arrival to its answer (202 after the covering fsync).",
    );
    t.histogram(name, &[], &total.accept_latency);
    per_channel_histogram(
        t,
        "clarion_end_to_end_latency_seconds",
        "From a notification's acceptance to a delivery's sent, by channel.",
        &total.end_to_end,
    );
    per_channel_histogram(
        t,
        "clarion_provider_request_seconds",
        "From a send's start to the provider's answer (connection pool wait included), by channel.",
        &total.provider_request,
    );
}

fn per_channel_histogram(t: &mut Text, name: &str, help: &str, h: &[Histogram; Channel::COUNT]) {
    t.family(name, Kind::Histogram, help);
    for c in Channel::ALL {
        t.histogram(name, &[("channel", c.as_str())], &h[c.index()]);
    }
}

fn storage(t: &mut Text, total: &ProbeSnapshot) {
    let name = "clarion_log_fsync_seconds";
    t.family(
        name,
        Kind::Histogram,
        "The log's fsyncs (one per group commit when [storage] fsync is on).",
    );
    t.histogram(name, &[], &Histogram::from(&total.log_fsync));
    let name = "clarion_log_write_seconds";
    t.family(
        name,
        Kind::Histogram,
        "Writing a group commit's batches into the log (journal and memtables), before its fsync.",
    );
    t.histogram(name, &[], &Histogram::from(&total.log_write));
    counter(
        t,
        "clarion_log_commits_total",
        "Write batches the shards handed to their logs; per fsync (clarion_log_fsync_seconds_count), the group commit's size.",
        total.commits,
    );
    gauge(
        t,
        "clarion_log_memtable_bytes",
        "Bytes in the logs' memtables (active and sealed).",
        total.log_memtable_bytes as f64,
    );
    gauge(
        t,
        "clarion_log_quarantined_records",
        "Stored records that did not decode, kept raw in the quarantine.",
        total.log_quarantined as f64,
    );
    gauge(
        t,
        "clarion_dedup_cached_keys",
        "Idempotency keys in the shards' caches.",
        total.dedup_cached as f64,
    );
}

fn process(
    t: &mut Text,
    total: &ProbeSnapshot,
    channels: &[(&str, &str)],
    shards: usize,
    ready: bool,
) {
    let name = "clarion_channel_info";
    t.family(
        name,
        Kind::Gauge,
        "Each channel's mode (live, simulator or off): 1.",
    );
    for (channel, mode) in channels {
        t.sample(name, &[("channel", channel), ("mode", mode)], 1.0);
    }
    gauge(t, "clarion_shards", "Shards (one per core).", shards as f64);
    gauge(
        t,
        "clarion_ready",
        "1 while /readyz answers 200.",
        if ready { 1.0 } else { 0.0 },
    );
    counter(
        t,
        "clarion_config_faults_total",
        "Sends refused for a configuration fault (credentials, topic, endpoint).",
        total.config_faults,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_the_issue_names_is_there_with_its_labels() {
        let mut a = ProbeSnapshot {
            accepted: 7,
            ..ProbeSnapshot::default()
        };
        a.by_channel[Channel::Apns.index()].sent = 5;
        a.by_channel[Channel::Apns.index()].backlog = 2;
        a.refused = vec![("validation_failed", 0, 3)];
        a.http_requests = vec![("/v1/notifications", 202, 7)];
        let b = a.clone();
        let text = render(&[a, b], &[("apns", "simulator")], true);
        for line in [
            "clarion_notifications_accepted_total 14",
            "clarion_notifications_refused_total{reason=\"validation_failed\"} 6",
            "clarion_deliveries_total{channel=\"apns\",outcome=\"sent\"} 10",
            "clarion_queue_depth{channel=\"apns\",shard=\"1\"} 2",
            "clarion_http_requests_total{route=\"/v1/notifications\",status=\"202\"} 14",
            "clarion_accept_latency_seconds_bucket{le=\"+Inf\"} 0",
            "clarion_log_fsync_seconds_count 0",
            "clarion_channel_info{channel=\"apns\",mode=\"simulator\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        for family in [
            "clarion_delivery_retries_total",
            "clarion_queue_oldest_age_seconds",
            "clarion_end_to_end_latency_seconds",
            "clarion_provider_request_seconds",
        ] {
            assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
        }
    }
}
