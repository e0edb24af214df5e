//! What an outage or backlog run found, as `summary.json` (with `samples.csv`, `accept.hgrm`
//! and `e2e.hgrm` beside it) and as the text printed at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::drain::DrainReport;
use super::mode::OutageMode;
use super::rss::MemReading;
use super::sampler::{self, Sample};
use super::server_stats::ServerCounters;
use crate::load::{LedgerReport, RegistrationReport};
use clarion_sim::histogram::{LatencySummary, percentile_distribution};

/// One phase of a run, seconds from the start of the intake.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseSpan {
    pub name: &'static str,
    pub start_s: f64,
    pub end_s: f64,
}

/// What the intake met: every notification sent and not answered `202` is refused.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IntakeReport {
    pub offered_rate: f64,
    pub batch: usize,
    pub sent: u64,
    pub accepted: u64,
    /// Of `accepted`, refused at first and accepted when sent again after `Retry-After` (the
    /// backlog run's resend, `load/resend.rs`; 0 in an outage run, which never resends).
    pub accepted_on_resend: u64,
    /// Sent and not answered 202 (any other status, a transport error or a timeout).
    pub refused: u64,
    /// Due by the schedule but never sent (the generator fell behind its bound).
    pub not_sent: u64,
    pub http_status: BTreeMap<u16, u64>,
    pub notification_status: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    pub timeouts: u64,
    pub max_send_lag_s: f64,
    pub accept_latency: LatencySummary,
    pub error_samples: Vec<String>,
}

/// The server's resident memory over the run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RssReport {
    /// The limit in MB (10^6 bytes, as issue 12 states it: 300 MB is 286.1 MiB); the readings
    /// below are in MiB, as `/proc` gives them.
    pub limit_mb: u64,
    /// The largest `VmRSS` of the one-second samples, MiB, and its phase.
    pub peak_mb: f64,
    pub peak_phase: &'static str,
    /// `VmHWM` at the end: the peak resident size the kernel saw, between samples too.
    pub hwm_mb: f64,
    /// The largest `VmRSS` sample of each phase, MiB.
    pub peak_mb_by_phase: Vec<(&'static str, f64)>,
    /// The last reading (heap vs mapped files), KiB.
    pub last: Option<MemReading>,
}

impl RssReport {
    pub(crate) fn of(samples: &[Sample], last: Option<MemReading>, limit_mb: u64) -> Self {
        let mb = |kb: u64| kb as f64 / 1024.0;
        let (peak_kb, peak_phase) = sampler::peak_rss(samples).unwrap_or((0, ""));
        let hwm_kb = last
            .map(|m| m.hwm_kb)
            .into_iter()
            .chain(samples.iter().filter_map(|s| s.mem.map(|m| m.hwm_kb)))
            .max()
            .unwrap_or(0);
        RssReport {
            limit_mb,
            peak_mb: mb(peak_kb),
            peak_phase,
            hwm_mb: mb(hwm_kb),
            peak_mb_by_phase: sampler::peak_rss_by_phase(samples)
                .into_iter()
                .map(|(p, kb)| (p, mb(kb)))
                .collect(),
            last,
        }
    }

    /// The limit in MiB.
    #[must_use]
    pub fn limit_mib(&self) -> f64 {
        self.limit_mb as f64 * 1e6 / (1024.0 * 1024.0)
    }

    /// Whether the kernel's peak stayed under the limit.
    #[must_use]
    pub fn under_limit(&self) -> bool {
        self.hwm_mb.max(self.peak_mb) < self.limit_mib()
    }
}

/// The "done means", one line each.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Verdict {
    pub no_intake_refused: bool,
    pub none_dead_or_expired: bool,
    pub rss_under_limit: bool,
    /// `None` in a run that measured no drain ratio.
    pub drain_ratio_ok: Option<bool>,
    pub none_lost: bool,
    pub pass: bool,
}

/// An outage run (`clarion-loadtest outage`) or a backlog run (`clarion-loadtest backlog`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct OutageReport {
    pub kind: &'static str,
    pub started_unix_s: u64,
    pub mode: OutageMode,
    pub shards: usize,
    pub users: u32,
    pub lane_window: Option<usize>,
    pub registration: Option<RegistrationReport>,
    pub phases: Vec<PhaseSpan>,
    pub intake: IntakeReport,
    /// The drain of the short calibration outage: the channel's normal end-to-end rate.
    pub normal: Option<DrainReport>,
    /// The drain after the outage (or, for a backlog run, of the built backlog).
    pub recovery: Option<DrainReport>,
    /// `recovery.rate_per_s / normal.rate_per_s`.
    pub drain_ratio: Option<f64>,
    /// The server's backlog right after a backlog run's build and idle phases.
    pub backlog_built: Option<u64>,
    pub ledger: Option<LedgerReport>,
    pub e2e_latency: Option<LatencySummary>,
    /// `/v1/stats` totals at the end.
    pub server_end: Option<ServerCounters>,
    pub rss: RssReport,
    pub verdict: Verdict,
    #[serde(skip)]
    pub accept_us: Option<Histogram<u64>>,
    #[serde(skip)]
    pub e2e_us: Option<Histogram<u64>>,
}

/// Writes `summary.json`, `samples.csv` and the histograms into `dir`.
pub fn write_outputs(r: &OutageReport, samples: &[Sample], dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))
    };
    write("summary.json", serde_json::to_string_pretty(r)?)?;
    write("samples.csv", sampler::to_csv(samples))?;
    if let Some(h) = &r.accept_us {
        write("accept.hgrm", percentile_distribution(h))?;
    }
    if let Some(h) = &r.e2e_us {
        write("e2e.hgrm", percentile_distribution(h))?;
    }
    Ok(())
}

fn rate(v: Option<f64>) -> String {
    v.map_or("-".into(), |r| format!("{r:.0}/s"))
}

fn drain_line(s: &mut String, name: &str, d: &DrainReport) {
    let _ = writeln!(
        s,
        "  {name:<10} backlog {} at recovery; first push after {}; drained in {} at {} \
         (backlog itself {}, median second {}){}",
        d.backlog_at_recovery,
        d.first_push_after_s
            .map_or("-".into(), |t| format!("{t:.1} s")),
        d.drain_s.map_or("-".into(), |t| format!("{t:.2} s")),
        rate(d.rate_per_s),
        rate(d.backlog_rate_per_s),
        rate(d.median_second_rate_per_s),
        if d.done { "" } else { "  NOT DRAINED" },
    );
}

/// The text printed at the end of a run.
#[must_use]
pub fn summary_text(r: &OutageReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Clarion {} run: {:?} outage, {} shards, {} users, batch {}, {:.0} notifications/s offered",
        r.kind, r.mode, r.shards, r.users, r.intake.batch, r.intake.offered_rate
    );
    for p in &r.phases {
        let _ = writeln!(
            s,
            "  phase {:<18} {:>8.1} .. {:>8.1} s",
            p.name, p.start_s, p.end_s
        );
    }
    let i = &r.intake;
    let _ = writeln!(
        s,
        "  Intake        sent {}, accepted {} ({} of them on a resend after 503), refused {} (statuses {:?}, transport errors {}, timeouts {}), not sent {}",
        i.sent,
        i.accepted,
        i.accepted_on_resend,
        i.refused,
        i.notification_status,
        i.transport_errors,
        i.timeouts,
        i.not_sent
    );
    let a = &i.accept_latency;
    let _ = writeln!(
        s,
        "  Accept (ms)   p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.1}; max send lag {:.3} s",
        a.p50_ms, a.p99_ms, a.p999_ms, a.max_ms, i.max_send_lag_s
    );
    if let Some(d) = &r.normal {
        drain_line(&mut s, "Normal", d);
    }
    if let Some(d) = &r.recovery {
        drain_line(&mut s, "Recovery", d);
    }
    if let Some(ratio) = r.drain_ratio {
        let _ = writeln!(
            s,
            "  Drain ratio   {:.1}% of the normal end-to-end rate",
            ratio * 100.0
        );
    }
    if let Some(b) = r.backlog_built {
        let _ = writeln!(s, "  Backlog built {b} deliveries waiting in the log");
    }
    if let Some(l) = &r.ledger {
        let _ = writeln!(
            s,
            "  Ledger        accepted {}, received {}, lost {}, duplicated {}, unexpected {}{}",
            l.accepted,
            l.received,
            l.lost,
            l.duplicated,
            l.unexpected,
            if l.drained { "" } else { "  (not drained)" }
        );
    }
    if let Some(c) = &r.server_end {
        let _ = writeln!(
            s,
            "  Server        sent {}, dead {}, expired {}, failed {}, duplicates {}, backlog {}, \
             deferred {}, breaker opened {} (open now {}), 503s: log behind {}, admission {}",
            c.sent,
            c.dead,
            c.expired,
            c.failed,
            c.duplicates,
            c.backlog,
            c.deferred,
            c.breaker_opened,
            c.breakers_open,
            c.rejected_overload,
            c.shed_overload
        );
    }
    let m = &r.rss;
    let phases: Vec<String> = m
        .peak_mb_by_phase
        .iter()
        .map(|(p, mb)| format!("{p} {mb:.0}"))
        .collect();
    let _ = writeln!(
        s,
        "  Server RSS    peak {:.1} MiB ({}), VmHWM {:.1} MiB, limit {} MB ({:.1} MiB); by phase: {}",
        m.peak_mb,
        m.peak_phase,
        m.hwm_mb,
        m.limit_mb,
        m.limit_mib(),
        phases.join(", ")
    );
    let v = &r.verdict;
    let _ = writeln!(
        s,
        "  Verdict       {}: intake refused none {}, dead/expired none {}, RSS under limit {}, \
         drain >= ratio {}, lost none {}",
        if v.pass { "PASS" } else { "FAIL" },
        v.no_intake_refused,
        v.none_dead_or_expired,
        v.rss_under_limit,
        v.drain_ratio_ok.map_or("-".into(), |b| b.to_string()),
        v.none_lost
    );
    s
}

#[cfg(test)]
mod tests {
    use super::RssReport;

    #[test]
    fn the_limit_is_in_decimal_megabytes() {
        let at = |peak_mib: f64| RssReport {
            limit_mb: 300,
            peak_mb: peak_mib,
            hwm_mb: peak_mib,
            ..RssReport::default()
        };
        // 300 MB is 286.1 MiB: 290 MiB is over it, 286 MiB under.
        assert!(!at(290.0).under_limit());
        assert!(at(286.0).under_limit());
    }
}
