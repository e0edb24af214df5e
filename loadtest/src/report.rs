//! Load-run output: a wrk2-style summary table for people, `summary.json` for machines, and
//! `accept.hgrm` / `e2e.hgrm` percentile distributions for the HdrHistogram plotter.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::duration::format_duration;
use crate::load::LoadReport;
use clarion_sim::histogram::{LatencySummary, percentile_distribution};

/// The summary table.
pub fn summary_text(r: &LoadReport) -> String {
    let mut s = String::new();
    let protocol = match r.protocol {
        crate::load::Protocol::H1 => "http/1.1",
        crate::load::Protocol::H2 => "h2c",
    };
    let _ = writeln!(
        s,
        "Clarion load: {protocol}, {} connections, batch {} ({:.0}-byte request bodies), {} at {:.1} notifications/s",
        r.connections,
        r.batch,
        r.request_body_bytes,
        format_duration(r.duration),
        r.offered_rate
    );
    if let Some(reg) = &r.registration {
        let _ = writeln!(
            s,
            "  Registered    {} users, {} devices in {}",
            reg.users,
            reg.devices,
            format_duration(reg.elapsed)
        );
    }
    let _ = writeln!(
        s,
        "  Requests      {} sent ({} notifications), {} answered, {} errors, {} timeouts, {} not sent",
        r.sent_requests,
        r.sent_notifications,
        r.completed_requests,
        r.transport_errors,
        r.timeouts,
        r.not_sent
    );
    let statuses: Vec<String> = r
        .notification_status
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    let _ = writeln!(s, "  Statuses      {}", statuses.join(", "));
    let _ = writeln!(s, "  Offered       {:.1} notifications/s", r.offered_rate);
    let _ = writeln!(
        s,
        "  Achieved      {:.1} notifications/s accepted ({} accepted in all)",
        r.achieved_rate, r.accepted
    );
    let lag = &r.send_lag_us;
    let _ = writeln!(
        s,
        "  Send lag      p50 {:.3} ms, p99 {:.3} ms, max {} (the load generator's own delay, in every latency below)",
        lag.value_at_quantile(0.5) as f64 / 1000.0,
        lag.value_at_quantile(0.99) as f64 / 1000.0,
        format_duration(r.max_send_lag)
    );
    for e in &r.error_samples {
        let _ = writeln!(s, "  Error         {e}");
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "  Latency (ms)  {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "p50", "p90", "p99", "p99.9", "max", "mean", "count"
    );
    latency_row(&mut s, "accept", &LatencySummary::of(&r.accept_latency_us));
    if !r.rejected_latency_us.is_empty() {
        latency_row(
            &mut s,
            "503 refused",
            &LatencySummary::of(&r.rejected_latency_us),
        );
    }
    if let Some(e2e) = &r.e2e_latency_us {
        latency_row(&mut s, "end-to-end", &LatencySummary::of(e2e));
        for c in &r.channels {
            latency_row(&mut s, &format!("  {}", c.channel), &c.e2e);
        }
    }
    if let Some(p) = &r.fsync_probe {
        let _ = writeln!(s, "  Fsync probe   {} ({})", p.line(), p.dir);
    }
    if let Some(p) = &r.wake_probe {
        let _ = writeln!(s, "  Wake probe    {}", p.line());
    }
    if let Some(p) = &r.ecdh_probe {
        let _ = writeln!(s, "  ECDH probe    {}", p.line());
    }
    if !r.accept_worst_by_second_us.is_empty() {
        let worst: Vec<String> = r
            .accept_worst_by_second_us
            .iter()
            .map(|us| format!("{:.0}", *us as f64 / 1000.0))
            .collect();
        let _ = writeln!(
            s,
            "  Worst accept latency by second (ms): {}",
            worst.join(" ")
        );
    }
    let _ = writeln!(s);
    match &r.ledger {
        None => {
            let _ = writeln!(s, "  Ledger        not checked (no simulator)");
        }
        Some(l) => {
            let _ = writeln!(
                s,
                "  Ledger        accepted {}, received {}, lost {}, short {}, duplicated {}, unexpected {} ({} after {})",
                l.accepted,
                l.received,
                l.lost,
                l.short,
                l.duplicated,
                l.unexpected,
                if l.drained { "drained" } else { "NOT drained" },
                format_duration(l.waited)
            );
            if !l.lost_sample.is_empty() {
                let _ = writeln!(s, "  Lost seqs     {:?}", l.lost_sample);
            }
        }
    }
    if let Some(rate) = r.delivered_rate {
        let _ = writeln!(
            s,
            "  Delivered     {rate:.1} notifications/s end to end (first send until all were received)"
        );
    }
    if let Some(c) = &r.cpu {
        let server = match (c.server_cpu_s, c.server_us_per_notification) {
            (Some(cpu), Some(per)) => {
                let roles: Vec<String> = c
                    .server_threads_us_per_notification
                    .iter()
                    .filter(|(_, us)| **us >= 0.05)
                    .map(|(role, us)| format!("{role} {us:.1}"))
                    .collect();
                format!("server {per:.1} ({cpu:.2} s: {})", roles.join(", "))
            }
            _ => "server n/a".to_owned(),
        };
        let _ = writeln!(
            s,
            "  CPU µs/notif  {server}, simulator {:.1} ({:.2} s), load generator {:.1} ({:.2} s) over {:.1} s",
            c.sim_us_per_notification,
            c.sim_cpu_s,
            c.load_us_per_notification,
            c.load_cpu_s,
            c.wall_s
        );
    }
    if let Some(log) = &r.server_log {
        server_latency_row(&mut s, "Server write", "commits into fjall", &log.write);
        server_latency_row(&mut s, "Server fsync", "log fsyncs", &log.fsync);
    }
    if let Some(rss) = r.server_peak_rss_bytes {
        let _ = writeln!(
            s,
            "  Server RSS    peak {:.1} MiB (VmHWM, since start)",
            rss as f64 / (1024.0 * 1024.0)
        );
    }
    let _ = writeln!(s, "  Next seq      {}", r.next_seq);
    if let Some(then) = &r.then {
        let _ = writeln!(s, "\nThen:");
        s.push_str(&summary_text(then));
    }
    s
}

/// One of the server log's histograms, read from its stats: bucket bounds, not exact values.
fn server_latency_row(s: &mut String, name: &str, what: &str, l: &crate::load::ServerLatency) {
    let ms = |us: Option<u64>| {
        us.map_or_else(
            || "> 1000".to_owned(),
            |us| format!("≤ {}", us as f64 / 1000.0),
        )
    };
    if l.count == 0 {
        let _ = writeln!(s, "  {name:<12}  no {what}");
        return;
    }
    let _ = writeln!(
        s,
        "  {name:<12}  {} {what}, mean {:.3} ms; p50 {}, p99 {}, p99.9 {} ms; over 5 / 10 / 50 ms: {} / {} / {}; max {:.1} ms (since start)",
        l.count,
        l.mean_us / 1000.0,
        ms(l.p50_at_most_us),
        ms(l.p99_at_most_us),
        ms(l.p999_at_most_us),
        l.over_5ms,
        l.over_10ms,
        l.over_50ms,
        l.max_since_start_us as f64 / 1000.0
    );
}

fn latency_row(s: &mut String, name: &str, l: &LatencySummary) {
    let _ = writeln!(
        s,
        "  {name:<12}  {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9}",
        l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms, l.count
    );
}

#[derive(Serialize)]
struct SummaryJson<'a> {
    #[serde(flatten)]
    report: &'a LoadReport,
    accept_latency: LatencySummary,
    rejected_latency: LatencySummary,
    e2e_latency: Option<LatencySummary>,
}

/// `summary.json`: the report with its latency read-outs.
pub fn summary_json(r: &LoadReport) -> anyhow::Result<String> {
    let j = SummaryJson {
        report: r,
        accept_latency: LatencySummary::of(&r.accept_latency_us),
        rejected_latency: LatencySummary::of(&r.rejected_latency_us),
        e2e_latency: r.e2e_latency_us.as_ref().map(LatencySummary::of),
    };
    Ok(serde_json::to_string_pretty(&j)?)
}

/// Writes `summary.json`, `accept.hgrm` and (when measured) `e2e.hgrm` into `dir`.
pub fn write_outputs(r: &LoadReport, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))
    };
    write("summary.json", summary_json(r)?)?;
    write("accept.hgrm", percentile_distribution(&r.accept_latency_us))?;
    if let Some(e2e) = &r.e2e_latency_us {
        write("e2e.hgrm", percentile_distribution(e2e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{LedgerReport, Protocol};
    use clarion_sim::histogram::latency_histogram;
    use std::time::Duration;

    fn report() -> LoadReport {
        let mut h = latency_histogram();
        for v in 1..=100u64 {
            h.record(v * 1000).expect("record");
        }
        LoadReport {
            protocol: Protocol::H2,
            batch: 1,
            connections: 2,
            offered_rate: 100.0,
            duration: Duration::from_secs(1),
            registration: None,
            scheduled: 100,
            sent_requests: 100,
            request_body_bytes: 180.0,
            sent_notifications: 100,
            completed_requests: 100,
            transport_errors: 0,
            timeouts: 0,
            not_sent: 0,
            accepted: 100,
            achieved_rate: 99.5,
            max_send_lag: Duration::from_millis(2),
            send_lag_us: latency_histogram(),
            http_status: [(202, 100)].into(),
            notification_status: [(202, 100)].into(),
            error_samples: vec![],
            accept_latency_us: h.clone(),
            rejected_latency_us: latency_histogram(),
            accept_worst_by_second_us: vec![1_200, 45_000],
            ledger: Some(LedgerReport {
                accepted: 100,
                received: 99,
                lost: 1,
                lost_sample: vec![42],
                ..LedgerReport::default()
            }),
            e2e_latency_us: Some(h),
            delivered_rate: Some(97.25),
            cpu: Some(crate::cpu::CpuUse {
                wall_s: 1.02,
                notifications: 99,
                server_cpu_s: Some(0.99),
                server_us_per_notification: Some(10_000.0),
                server_threads_us_per_notification: [
                    ("shard".to_owned(), 8_000.0),
                    ("clarion-log".to_owned(), 2_000.0),
                    ("signals".to_owned(), 0.0),
                ]
                .into(),
                sim_cpu_s: 0.5,
                sim_us_per_notification: 5050.505,
                load_cpu_s: 0.25,
                load_us_per_notification: 2525.2525,
            }),
            server_log: Some(crate::load::ServerLog {
                write: crate::load::ServerLatency {
                    count: 500,
                    mean_us: 45.0,
                    p50_at_most_us: Some(50),
                    p99_at_most_us: Some(200),
                    p999_at_most_us: Some(50_000),
                    over_5ms: 1,
                    over_10ms: 1,
                    over_50ms: 0,
                    max_since_start_us: 42_000,
                },
                fsync: crate::load::ServerLatency {
                    count: 1000,
                    mean_us: 310.0,
                    p50_at_most_us: Some(300),
                    p99_at_most_us: Some(2_000),
                    p999_at_most_us: None,
                    over_5ms: 4,
                    over_10ms: 2,
                    over_50ms: 1,
                    max_since_start_us: 1_250_000,
                },
            }),
            next_seq: 100,
            server_peak_rss_bytes: Some(300 << 20),
            channels: Vec::new(),
            fsync_probe: None,
            wake_probe: None,
            ecdh_probe: None,
            then: None,
        }
    }

    #[test]
    fn summary_shows_rates_latencies_and_ledger() {
        let text = summary_text(&report());
        assert!(
            text.contains("Achieved      99.5 notifications/s"),
            "{text}"
        );
        assert!(text.contains("202: 100"));
        let accept = text
            .lines()
            .find(|l| l.trim_start().starts_with("accept"))
            .expect("accept row");
        let cols: Vec<&str> = accept.split_whitespace().collect();
        assert_eq!(cols[1], "50.015", "{accept}"); // p50 of 1..100 ms
        assert_eq!(cols[5], "100.031");
        assert!(text.contains("lost 1"));
        assert!(text.contains("Lost seqs     [42]"));
        assert!(text.contains("end-to-end"));
        assert!(
            text.contains("Worst accept latency by second (ms): 1 45"),
            "{text}"
        );
        assert!(
            text.contains("Delivered     97.2 notifications/s end to end"),
            "{text}"
        );
        assert!(
            text.contains(
                "CPU µs/notif  server 10000.0 (0.99 s: clarion-log 2000.0, shard 8000.0), simulator 5050.5 (0.50 s), load generator 2525.3 (0.25 s) over 1.0 s"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "Server write  500 commits into fjall, mean 0.045 ms; p50 ≤ 0.05, p99 ≤ 0.2, p99.9 ≤ 50 ms; over 5 / 10 / 50 ms: 1 / 1 / 0; max 42.0 ms (since start)"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "Server fsync  1000 log fsyncs, mean 0.310 ms; p50 ≤ 0.3, p99 ≤ 2, p99.9 > 1000 ms; over 5 / 10 / 50 ms: 4 / 2 / 1; max 1250.0 ms (since start)"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_server_without_fsync_says_so() {
        let mut r = report();
        if let Some(log) = r.server_log.as_mut() {
            log.fsync = crate::load::ServerLatency::default();
        }
        let text = summary_text(&r);
        assert!(text.contains("  Server fsync  no log fsyncs\n"), "{text}");
        assert!(text.contains("Server write  500 commits"), "{text}");
    }

    #[test]
    fn the_wake_probe_sits_below_the_fsync_probe() {
        let mut r = report();
        r.fsync_probe = Some(crate::fsync_probe::FsyncProbe {
            dir: "/data".into(),
            ..Default::default()
        });
        let wake = crate::wake_probe::WakeProbe {
            cross_cpu: None,
            same_cpu: crate::wake_probe::WakeFigures {
                cpus: [0, 0],
                round_trips: 20_000,
                p50_us: 2.6,
                p99_us: 4.1,
                cpu_us_per_wake: 1.3,
            },
        };
        r.wake_probe = Some(wake.clone());
        let text = summary_text(&r);
        let fsync = text.find("  Fsync probe   ").expect("fsync probe line");
        let line = format!("  Wake probe    {}\n", wake.line());
        let at = text.find(&line).expect("wake probe line");
        assert_eq!(
            text[fsync..].find('\n').map(|n| fsync + n + 1),
            Some(at),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&summary_json(&r).expect("summary")).expect("json");
        assert_eq!(json["wake_probe"]["same_cpu"]["round_trips"], 20_000);
        assert_eq!(json["wake_probe"]["cross_cpu"], serde_json::Value::Null);
    }

    #[test]
    fn outputs_land_in_the_directory() {
        let dir = std::env::temp_dir().join(format!("clarion-report-test-{}", std::process::id()));
        write_outputs(&report(), &dir).expect("write");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).expect("read"))
                .expect("json");
        assert_eq!(json["accepted"], 100);
        assert_eq!(json["ledger"]["lost"], 1);
        assert_eq!(json["accept_latency"]["count"], 100);
        assert_eq!(json["accept_worst_by_second_us"][1], 45_000);
        assert_eq!(json["delivered_rate"], 97.25);
        assert_eq!(json["cpu"]["server_us_per_notification"], 10_000.0);
        assert_eq!(json["cpu"]["sim_cpu_s"], 0.5);
        assert_eq!(json["server_log"]["fsync"]["over_10ms"], 2);
        assert_eq!(json["server_log"]["write"]["count"], 500);
        let hgrm = std::fs::read_to_string(dir.join("accept.hgrm")).expect("hgrm");
        assert!(hgrm.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
        assert!(dir.join("e2e.hgrm").exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
