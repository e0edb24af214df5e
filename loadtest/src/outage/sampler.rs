//! One reading a second for the length of an outage run: the server's memory
//! (`/proc/PID/status`), the simulator's counters (pushes accepted, requests, distinct seqs)
//! and the server's `/v1/stats` counters, each stamped with the run's phase. Kept in memory
//! (a few hundred bytes a second) and written as `samples.csv`.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use super::rss::{self, MemReading};
use super::server_stats::{self, ServerCounters};
use crate::load::client::ApiClient;
use clarion_sim::apns::SimHandle;

/// How often the sampler reads.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// A `/v1/stats` answer slower than this leaves the sample's server columns empty.
const STATS_TIMEOUT: Duration = Duration::from_millis(900);

/// The run's current phase, shared by the conductor (writes) and the sampler (reads).
#[derive(Clone, Default)]
pub struct Phase(Arc<Mutex<&'static str>>);

impl Phase {
    pub fn set(&self, name: &'static str) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = name;
        eprintln!("outage: phase {name}");
    }

    #[must_use]
    pub fn get(&self) -> &'static str {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One second of the run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    /// Seconds since the run's intake started.
    pub t_s: f64,
    pub phase: &'static str,
    pub mem: Option<MemReading>,
    /// Pushes the simulator answered 200 (cumulative).
    pub sim_pushes: u64,
    /// Requests the simulator answered or dropped (cumulative).
    pub sim_requests: u64,
    /// Distinct seqs the simulator received (cumulative).
    pub sim_distinct: u64,
    pub server: Option<ServerCounters>,
}

/// Samples every [`SAMPLE_INTERVAL`] from `t0` until `done` turns true.
pub(crate) async fn run(
    sim: &SimHandle,
    server_pid: Option<u32>,
    client: &ApiClient,
    phase: &Phase,
    t0: Instant,
    mut done: watch::Receiver<bool>,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = done.wait_for(|d| *d) => break,
        }
        let t_s = t0.elapsed().as_secs_f64();
        let mem = server_pid.and_then(rss::read);
        let s = sim.stats();
        let server = tokio::time::timeout(STATS_TIMEOUT, server_stats::fetch(client))
            .await
            .ok()
            .flatten();
        samples.push(Sample {
            t_s,
            phase: phase.get(),
            mem,
            sim_pushes: s.accepted,
            sim_requests: s.requests,
            sim_distinct: s.ledger_distinct,
            server,
        });
    }
    samples
}

/// The samples as CSV, one row a second; the delivery rate is the pushes since the previous row
/// over the time since it.
#[must_use]
pub fn to_csv(samples: &[Sample]) -> String {
    let mut out = String::from(
        "t_s,phase,rss_kb,hwm_kb,anon_kb,file_kb,delivered_per_s,sim_pushes,sim_requests,sim_distinct,\
         accepted,sent,dead,expired,rejected_overload,shed_overload,backlog,queue_depth,in_flight,\
         open_notifications,backlog_scans,deferred,breaker_opened,breakers_open,\
         memtable_kb,sealed_memtables\n",
    );
    let mut prev: Option<&Sample> = None;
    for s in samples {
        let rate = prev.map_or(0.0, |p| {
            s.sim_pushes.saturating_sub(p.sim_pushes) as f64 / (s.t_s - p.t_s).max(f64::EPSILON)
        });
        let m = s.mem.unwrap_or_default();
        let _ = write!(
            out,
            "{:.3},{},{},{},{},{},{:.1},{},{},{}",
            s.t_s,
            s.phase,
            m.rss_kb,
            m.hwm_kb,
            m.anon_kb,
            m.file_kb,
            rate,
            s.sim_pushes,
            s.sim_requests,
            s.sim_distinct
        );
        match &s.server {
            Some(c) => {
                let _ = writeln!(
                    out,
                    ",{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                    c.accepted,
                    c.sent,
                    c.dead,
                    c.expired,
                    c.rejected_overload,
                    c.shed_overload,
                    c.backlog,
                    c.queue_depth,
                    c.in_flight,
                    c.open_notifications,
                    c.backlog_scans,
                    c.deferred,
                    c.breaker_opened,
                    c.breakers_open,
                    c.log_memtable_bytes / 1024,
                    c.log_sealed_memtables
                );
            }
            None => out.push_str(",,,,,,,,,,,,,,,,\n"),
        }
        prev = Some(s);
    }
    out
}

/// The largest resident size among the samples, KiB, and the phase it was in.
#[must_use]
pub fn peak_rss(samples: &[Sample]) -> Option<(u64, &'static str)> {
    samples
        .iter()
        .filter_map(|s| s.mem.map(|m| (m.rss_kb, s.phase)))
        .max_by_key(|(kb, _)| *kb)
}

/// The largest resident size among the samples of each phase, in order of first appearance.
#[must_use]
pub fn peak_rss_by_phase(samples: &[Sample]) -> Vec<(&'static str, u64)> {
    let mut out: Vec<(&'static str, u64)> = Vec::new();
    for s in samples {
        let kb = s.mem.map_or(0, |m| m.rss_kb);
        match out.iter_mut().find(|(p, _)| *p == s.phase) {
            Some((_, max)) => *max = (*max).max(kb),
            None => out.push((s.phase, kb)),
        }
    }
    out
}

/// `(t_s, sim_pushes)` of every sample, for [`super::drain::steady_rate`].
#[must_use]
pub fn push_points(samples: &[Sample]) -> Vec<(f64, u64)> {
    samples.iter().map(|s| (s.t_s, s.sim_pushes)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_s: f64, phase: &'static str, rss_kb: u64, pushes: u64) -> Sample {
        Sample {
            t_s,
            phase,
            mem: Some(MemReading {
                rss_kb,
                hwm_kb: rss_kb,
                ..MemReading::default()
            }),
            sim_pushes: pushes,
            ..Sample::default()
        }
    }

    #[test]
    fn csv_has_one_row_a_second_with_rates_and_blanks_for_missing_stats() {
        let mut a = sample(1.0, "normal", 100, 2000);
        a.server = Some(ServerCounters {
            backlog: 5,
            ..ServerCounters::default()
        });
        let b = sample(2.0, "outage", 120, 4000);
        let csv = to_csv(&[a, b]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        let cols = lines[0].split(',').count();
        assert!(lines.iter().all(|l| l.split(',').count() == cols), "{csv}");
        assert!(lines[1].starts_with("1.000,normal,100,100,0,0,0.0,2000,"));
        assert!(lines[2].starts_with("2.000,outage,120,120,0,0,2000.0,4000,"));
        assert!(lines[2].ends_with(",,,,,"));
    }

    #[test]
    fn peaks_overall_and_by_phase() {
        let s = [
            sample(1.0, "normal", 100, 0),
            sample(2.0, "outage", 300, 0),
            sample(3.0, "outage", 200, 0),
            sample(4.0, "recovery", 250, 0),
        ];
        assert_eq!(peak_rss(&s), Some((300, "outage")));
        assert_eq!(
            peak_rss_by_phase(&s),
            vec![("normal", 100), ("outage", 300), ("recovery", 250)]
        );
    }
}
