//! The shard engine's probe: plain per-shard counters (no atomics; read on the shard's own core
//! and summed across shards on demand), and a copy of its log's latency histograms (which the
//! log's storage thread keeps in atomics of its own, see `clarion_shards::log`).

use std::cell::Cell;

use clarion_shards::Channel;
use clarion_shards::log::LogLatency;
use serde::{Serialize, Serializer};

use crate::metrics::counts::{self, LabelCounts};
use crate::metrics::histogram::{
    END_TO_END_BUCKETS_MICROS, Histogram, LocalHistogram, REQUEST_BUCKETS_MICROS,
};

#[derive(Default)]
pub struct Probe {
    pub accepted: Cell<u64>,
    pub duplicates: Cell<u64>,
    pub deliveries_queued: Cell<u64>,
    pub attempts: Cell<u64>,
    pub sent: Cell<u64>,
    pub retried: Cell<u64>,
    pub failed: Cell<u64>,
    pub dead: Cell<u64>,
    pub expired: Cell<u64>,
    pub suppressed: Cell<u64>,
    pub deactivated_tokens: Cell<u64>,
    /// Tokens a provider called dead that were registered again after the time it gave: kept.
    pub reregistered_tokens_kept: Cell<u64>,
    pub config_faults: Cell<u64>,
    pub recovered_deliveries: Cell<u64>,
    pub rejected_overload: Cell<u64>,
    /// Notification requests refused by the HTTP layer's admission control (`http/admission.rs`).
    pub shed_overload: Cell<u64>,
    pub commits: Cell<u64>,
    /// Sends put back because the provider was down (the breaker open): no attempt spent.
    pub deferred: Cell<u64>,
    /// Dead letters replayed (their deliveries queued again) and purged.
    pub replayed: Cell<u64>,
    pub purged: Cell<u64>,
    /// What `GET /metrics` reads besides the counters above.
    pub metrics: ProbeMetrics,
}

/// This shard's labelled counters and latency histograms, for `GET /metrics`.
pub struct ProbeMetrics {
    /// API requests answered by this core, by route template and status.
    pub http_requests: LabelCounts,
    /// Notifications refused, by the answer's code (a batch's items each).
    pub refused: LabelCounts,
    /// From a notification request's arrival to its answer (after the fsync that covers it).
    pub accept_latency: LocalHistogram,
    /// Per channel: from a send's start to the provider's verdict (pool wait included).
    pub provider_request: [LocalHistogram; Channel::COUNT],
    /// Per channel: from a notification's acceptance to a delivery's `sent`.
    pub end_to_end: [LocalHistogram; Channel::COUNT],
}

impl Default for ProbeMetrics {
    fn default() -> ProbeMetrics {
        ProbeMetrics {
            http_requests: LabelCounts::default(),
            refused: LabelCounts::default(),
            accept_latency: LocalHistogram::new(REQUEST_BUCKETS_MICROS),
            provider_request: std::array::from_fn(|_| LocalHistogram::new(REQUEST_BUCKETS_MICROS)),
            end_to_end: std::array::from_fn(|_| LocalHistogram::new(END_TO_END_BUCKETS_MICROS)),
        }
    }
}

pub fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// A snapshot of one shard's counters (summable across shards).
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct ProbeSnapshot {
    pub accepted: u64,
    pub duplicates: u64,
    pub deliveries_queued: u64,
    pub attempts: u64,
    pub sent: u64,
    pub retried: u64,
    pub failed: u64,
    pub dead: u64,
    pub expired: u64,
    pub suppressed: u64,
    pub deactivated_tokens: u64,
    /// Tokens a provider called dead (APNs `410`) that were registered again after the time it
    /// gave, so kept active.
    pub reregistered_tokens_kept: u64,
    pub config_faults: u64,
    pub recovered_deliveries: u64,
    pub rejected_overload: u64,
    /// Notification requests answered `503 overloaded` by admission control (the core had as
    /// many in service as its adaptive limit allows), each before its body was parsed.
    pub shed_overload: u64,
    pub commits: u64,
    /// Deliveries ready in the lanes' windows (memory).
    pub queue_depth: u64,
    pub in_flight: u64,
    pub open_notifications: u64,
    /// Deliveries still to attempt, in the log's backlogs (the windows and in-flight included).
    pub backlog: u64,
    /// Backlog scans issued since start.
    pub backlog_scans: u64,
    pub deferred: u64,
    /// Dead letters replayed (their deliveries queued again) and purged.
    pub replayed: u64,
    pub purged: u64,
    /// Times a channel's circuit breaker opened, and channels whose breaker is open now.
    pub breaker_opened: u64,
    pub breakers_open: u64,
    /// Sends of a channel catching up on a backlog that waited for the others' live traffic,
    /// and the times the catch-up's rate was cut (`engine/catchup.rs`).
    pub catch_up_paced: u64,
    pub catch_up_cuts: u64,
    /// How long the log's commits took to write into fjall, and their fsyncs (cumulative
    /// buckets in the API).
    #[serde(serialize_with = "latency_view")]
    pub log_write: LogLatency,
    #[serde(serialize_with = "latency_view")]
    pub log_fsync: LogLatency,
    /// Stored records held in the log's quarantine (did not decode; kept raw, reported at start).
    pub log_quarantined: u64,
    /// Bytes in the logs' memtables (active and sealed) and sealed memtables waiting for their
    /// flush ([`clarion_shards::LogStats`]).
    pub log_memtable_bytes: u64,
    pub log_sealed_memtables: u64,
    /// Idempotency keys in the shards' caches (at most `DEDUP_CACHE_KEYS` each).
    pub dedup_cached: u64,
    /// New notifications whose key the cache could not prove new, checked in the log.
    pub dedup_disk_checks: u64,
    /// Of those, retries found in the log (answered as duplicates).
    pub dedup_disk_duplicates: u64,
    /// The same per channel: `{"apns": {...}, "fcm": {...}, "webpush": {...}}`.
    #[serde(serialize_with = "by_channel_view")]
    pub by_channel: [ChannelSnapshot; Channel::COUNT],
    /// `GET /metrics` only: see [`ProbeMetrics`].
    #[serde(skip)]
    pub http_requests: Vec<(&'static str, u16, u64)>,
    #[serde(skip)]
    pub refused: Vec<(&'static str, u16, u64)>,
    #[serde(skip)]
    pub accept_latency: Histogram,
    #[serde(skip)]
    pub provider_request: [Histogram; Channel::COUNT],
    #[serde(skip)]
    pub end_to_end: [Histogram; Channel::COUNT],
}

/// One channel's counters (summable across shards).
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct ChannelSnapshot {
    /// Deliveries accepted for the channel.
    pub accepted: u64,
    pub sent: u64,
    pub retried: u64,
    pub failed: u64,
    /// Devices deactivated on the channel's word.
    pub deactivated: u64,
    pub dead: u64,
    /// Dead deliveries replayed (queued again).
    pub replayed: u64,
    pub expired: u64,
    /// Deliveries ready in memory, and in the log's backlog (the ready ones included).
    pub queue_depth: u64,
    pub backlog: u64,
    pub in_flight: u64,
    /// Deliveries suppressed at acceptance (the user's frequency cap).
    pub suppressed: u64,
    /// Since when (ms) the oldest delivery ready in the window has waited, counted from its
    /// notification's acceptance; 0 when none waits (across shards: the longest).
    pub oldest_age_ms: u64,
    /// Whether the channel's circuit breaker is not closed (across shards: how many).
    pub breaker_open: u64,
}

impl ChannelSnapshot {
    pub fn add(&mut self, o: &ChannelSnapshot) {
        self.accepted += o.accepted;
        self.sent += o.sent;
        self.retried += o.retried;
        self.failed += o.failed;
        self.deactivated += o.deactivated;
        self.dead += o.dead;
        self.replayed += o.replayed;
        self.expired += o.expired;
        self.queue_depth += o.queue_depth;
        self.backlog += o.backlog;
        self.in_flight += o.in_flight;
        self.suppressed += o.suppressed;
        self.oldest_age_ms = self.oldest_age_ms.max(o.oldest_age_ms);
        self.breaker_open += o.breaker_open;
    }
}

fn by_channel_view<S: Serializer>(
    v: &[ChannelSnapshot; Channel::COUNT],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(Channel::COUNT))?;
    for c in Channel::ALL {
        m.serialize_entry(c.as_str(), &v[c.index()])?;
    }
    m.end()
}

fn latency_view<S: Serializer>(v: &LogLatency, s: S) -> Result<S::Ok, S::Error> {
    v.view().serialize(s)
}

impl Probe {
    pub fn snapshot(&self) -> ProbeSnapshot {
        ProbeSnapshot {
            accepted: self.accepted.get(),
            duplicates: self.duplicates.get(),
            deliveries_queued: self.deliveries_queued.get(),
            attempts: self.attempts.get(),
            sent: self.sent.get(),
            retried: self.retried.get(),
            failed: self.failed.get(),
            dead: self.dead.get(),
            expired: self.expired.get(),
            suppressed: self.suppressed.get(),
            deactivated_tokens: self.deactivated_tokens.get(),
            reregistered_tokens_kept: self.reregistered_tokens_kept.get(),
            config_faults: self.config_faults.get(),
            recovered_deliveries: self.recovered_deliveries.get(),
            rejected_overload: self.rejected_overload.get(),
            shed_overload: self.shed_overload.get(),
            commits: self.commits.get(),
            deferred: self.deferred.get(),
            replayed: self.replayed.get(),
            purged: self.purged.get(),
            http_requests: self.metrics.http_requests.snapshot(),
            refused: self.metrics.refused.snapshot(),
            accept_latency: self.metrics.accept_latency.snapshot(),
            provider_request: std::array::from_fn(|i| self.metrics.provider_request[i].snapshot()),
            end_to_end: std::array::from_fn(|i| self.metrics.end_to_end[i].snapshot()),
            ..ProbeSnapshot::default()
        }
    }
}

impl ProbeSnapshot {
    pub fn add(&mut self, o: &ProbeSnapshot) {
        self.accepted += o.accepted;
        self.duplicates += o.duplicates;
        self.deliveries_queued += o.deliveries_queued;
        self.attempts += o.attempts;
        self.sent += o.sent;
        self.retried += o.retried;
        self.failed += o.failed;
        self.dead += o.dead;
        self.expired += o.expired;
        self.suppressed += o.suppressed;
        self.deactivated_tokens += o.deactivated_tokens;
        self.reregistered_tokens_kept += o.reregistered_tokens_kept;
        self.config_faults += o.config_faults;
        self.recovered_deliveries += o.recovered_deliveries;
        self.rejected_overload += o.rejected_overload;
        self.shed_overload += o.shed_overload;
        self.commits += o.commits;
        self.queue_depth += o.queue_depth;
        self.in_flight += o.in_flight;
        self.open_notifications += o.open_notifications;
        self.backlog += o.backlog;
        self.backlog_scans += o.backlog_scans;
        self.deferred += o.deferred;
        self.replayed += o.replayed;
        self.purged += o.purged;
        self.breaker_opened += o.breaker_opened;
        self.breakers_open += o.breakers_open;
        self.catch_up_paced += o.catch_up_paced;
        self.catch_up_cuts += o.catch_up_cuts;
        self.log_write.add(&o.log_write);
        self.log_fsync.add(&o.log_fsync);
        self.log_quarantined += o.log_quarantined;
        self.log_memtable_bytes += o.log_memtable_bytes;
        self.log_sealed_memtables += o.log_sealed_memtables;
        self.dedup_cached += o.dedup_cached;
        self.dedup_disk_checks += o.dedup_disk_checks;
        self.dedup_disk_duplicates += o.dedup_disk_duplicates;
        for (mine, theirs) in self.by_channel.iter_mut().zip(&o.by_channel) {
            mine.add(theirs);
        }
        self.http_requests = counts::sum(&[
            std::mem::take(&mut self.http_requests),
            o.http_requests.clone(),
        ]);
        self.refused = counts::sum(&[std::mem::take(&mut self.refused), o.refused.clone()]);
        self.accept_latency.add(&o.accept_latency);
        for (mine, theirs) in self.provider_request.iter_mut().zip(&o.provider_request) {
            mine.add(theirs);
        }
        for (mine, theirs) in self.end_to_end.iter_mut().zip(&o.end_to_end) {
            mine.add(theirs);
        }
    }
}
