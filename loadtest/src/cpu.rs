//! CPU time spent during a load, split by who spent it: the Clarion server process (when its
//! pid is known, as in `bench`), the in-process APNs simulator's threads, and the rest of this
//! process (the load generator). Read from `/proc` (user + system time of every thread), so it
//! is Linux-only; elsewhere nothing is reported. Divided by the notifications delivered, it is
//! the figure capacity planning needs: CPU microseconds per notification, which varies far less
//! between runs on a shared machine than tail latency does. Also the calling thread's own CPU
//! clock, by which the probes time their work ([`this_thread`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

/// CPU time (user and system) the calling thread has used, from its CPU clock
/// (`CLOCK_THREAD_CPUTIME_ID`), so time the thread was preempted or asleep does not count.
pub fn this_thread() -> anyhow::Result<std::time::Duration> {
    // SAFETY: timespec is two integers, for which all zeroes is valid.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: clock_gettime writes one `timespec` into `ts`.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Err(anyhow::Error::from(std::io::Error::last_os_error())
            .context("clock_gettime(CLOCK_THREAD_CPUTIME_ID)"));
    }
    Ok(std::time::Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    ))
}

/// Thread names of the simulator's runtime (`apns-sim`, `apns-sim-worker`).
const SIM_THREAD_PREFIX: &str = "apns-sim";

/// Cumulative CPU time at one instant, in clock ticks (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuSample {
    pub server_ticks: Option<u64>,
    /// The server's threads by role: the name without its numbers (`shard-00-1` -> `shard`).
    pub server_threads: BTreeMap<String, u64>,
    pub sim_ticks: u64,
    pub load_ticks: u64,
}

/// CPU microseconds per delivered notification over a load, by party.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CpuUse {
    /// Wall time the sample covers, in seconds.
    pub wall_s: f64,
    /// Notifications the figures are divided by (received by the simulator).
    pub notifications: u64,
    /// Server CPU seconds in all (`None` when the server runs elsewhere).
    pub server_cpu_s: Option<f64>,
    pub server_us_per_notification: Option<f64>,
    /// Server CPU µs per notification by thread role (shards, storage, fjall workers, ...).
    pub server_threads_us_per_notification: BTreeMap<String, f64>,
    pub sim_cpu_s: f64,
    pub sim_us_per_notification: f64,
    pub load_cpu_s: f64,
    pub load_us_per_notification: f64,
}

/// Reads CPU samples for this process and, optionally, a server process.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    server_pid: Option<u32>,
}

/// Clock ticks per second of `/proc/*/stat` times (USER_HZ, 100 on Linux as built today).
fn ticks_per_s() -> f64 {
    #[cfg(unix)]
    {
        // SAFETY: sysconf(3) only reads its integer argument.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if hz > 0 {
            return hz as f64;
        }
    }
    100.0
}

impl CpuMeter {
    pub fn new(server_pid: Option<u32>) -> CpuMeter {
        CpuMeter { server_pid }
    }

    /// Now's cumulative CPU times, or `None` where `/proc` cannot be read.
    pub fn sample(&self) -> Option<CpuSample> {
        let mut sim_ticks = 0;
        let mut load_ticks = 0;
        for entry in std::fs::read_dir("/proc/self/task").ok()? {
            let Ok(entry) = entry else { continue };
            // A thread may end between listing and reading: skip it.
            let Some((name, ticks)) = read_stat(&entry.path().join("stat")) else {
                continue;
            };
            if name.starts_with(SIM_THREAD_PREFIX) {
                sim_ticks += ticks;
            } else {
                load_ticks += ticks;
            }
        }
        let server_ticks = self
            .server_pid
            .and_then(|pid| read_stat(Path::new(&format!("/proc/{pid}/stat"))))
            .map(|(_, ticks)| ticks);
        let mut server_threads = BTreeMap::new();
        if let Some(tasks) = self
            .server_pid
            .and_then(|pid| std::fs::read_dir(format!("/proc/{pid}/task")).ok())
        {
            for entry in tasks.flatten() {
                if let Some((name, ticks)) = read_stat(&entry.path().join("stat")) {
                    *server_threads.entry(role(&name)).or_default() += ticks;
                }
            }
        }
        Some(CpuSample {
            server_ticks,
            server_threads,
            sim_ticks,
            load_ticks,
        })
    }
}

impl CpuUse {
    /// The CPU spent between two samples, per notification.
    pub fn between(start: &CpuSample, end: &CpuSample, wall_s: f64, notifications: u64) -> CpuUse {
        let hz = ticks_per_s();
        let secs = |a: u64, b: u64| b.saturating_sub(a) as f64 / hz;
        let per = |s: f64| {
            if notifications == 0 {
                0.0
            } else {
                s * 1e6 / notifications as f64
            }
        };
        let server_cpu_s = match (start.server_ticks, end.server_ticks) {
            (Some(a), Some(b)) => Some(secs(a, b)),
            _ => None,
        };
        // A thread that ended during the load is missing from `end`: its ticks are lost from
        // the breakdown (never negative), but not from the process total above.
        let server_threads_us_per_notification = end
            .server_threads
            .iter()
            .map(|(role, &b)| {
                let a = start.server_threads.get(role).copied().unwrap_or(0);
                (role.clone(), per(secs(a, b)))
            })
            .collect();
        let sim_cpu_s = secs(start.sim_ticks, end.sim_ticks);
        let load_cpu_s = secs(start.load_ticks, end.load_ticks);
        CpuUse {
            wall_s,
            notifications,
            server_cpu_s,
            server_us_per_notification: server_cpu_s.map(per),
            server_threads_us_per_notification,
            sim_cpu_s,
            sim_us_per_notification: per(sim_cpu_s),
            load_cpu_s,
            load_us_per_notification: per(load_cpu_s),
        }
    }
}

/// A thread's role: its name with the numbers and the separators around them removed.
fn role(name: &str) -> String {
    let kept: String = name.chars().filter(|c| !c.is_ascii_digit()).collect();
    let trimmed = kept.trim_end_matches(['-', '_', ':', ' ']);
    let mut out = String::with_capacity(trimmed.len());
    for c in trimmed.chars() {
        // Collapse the separators left doubled by removed numbers ("shard--" -> "shard-").
        if (c == '-' || c == '_') && out.ends_with(c) {
            continue;
        }
        out.push(c);
    }
    out
}

/// A thread's or process's name and user + system ticks from its `stat` file.
fn read_stat(path: &Path) -> Option<(String, u64)> {
    parse_stat(&std::fs::read_to_string(path).ok()?)
}

/// `pid (comm) state ppid ... utime stime ...`: comm may hold spaces and parentheses, so the
/// fields are counted from the last `)`; utime and stime are fields 14 and 15.
fn parse_stat(text: &str) -> Option<(String, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_owned();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    // After the comm: state(3) ppid(4) pgrp(5) session(6) tty(7) tpgid(8) flags(9) minflt(10)
    // cminflt(11) majflt(12) cmajflt(13) utime(14) stime(15).
    let utime: u64 = rest.nth(11)?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some((name, utime + stime))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line = "4242 (apns-sim (x) y) S 1 2 3 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0 99";
        assert_eq!(parse_stat(line), Some(("apns-sim (x) y".to_owned(), 325)));
        assert_eq!(parse_stat("4242 (short) S 1 2"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_is_sampled_and_burning_cpu_shows() {
        let meter = CpuMeter::new(Some(std::process::id()));
        let a = meter.sample().unwrap();
        // Spin until this process has used at least three more clock ticks of CPU (checked on
        // CPU time, not wall time, so a busy machine only makes the test slower).
        let mut x = 0u64;
        let b = loop {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            let b = meter.sample().unwrap();
            if b.load_ticks >= a.load_ticks + 3 {
                break b;
            }
        };
        std::hint::black_box(x);
        assert!(b.load_ticks >= a.load_ticks + 2, "{a:?} -> {b:?}");
        assert!(b.server_ticks.unwrap() >= a.server_ticks.unwrap() + 2);
        // This test's own thread is one of the "server" threads here.
        assert!(!b.server_threads.is_empty());
        let u = CpuUse::between(&a, &b, 0.06, 1000);
        let by_role: f64 = u.server_threads_us_per_notification.values().sum();
        assert!(by_role > 0.0);
        assert!(u.load_cpu_s >= 0.02);
        assert!((u.load_us_per_notification - u.load_cpu_s * 1000.0).abs() < 1e-6);
        assert_eq!(u.server_us_per_notification.map(|v| v > 0.0), Some(true));
    }

    #[test]
    fn thread_roles_drop_their_numbers() {
        assert_eq!(role("shard-00-1"), "shard");
        assert_eq!(role("clarion-log-01"), "clarion-log");
        assert_eq!(role("fjall:worker"), "fjall:worker");
        assert_eq!(role("signals"), "signals");
    }

    #[test]
    fn thread_breakdown_is_per_notification_by_role() {
        let a = CpuSample {
            server_ticks: Some(10),
            server_threads: [("shard".to_owned(), 10)].into(),
            ..CpuSample::default()
        };
        let b = CpuSample {
            server_ticks: Some(40),
            server_threads: [("shard".to_owned(), 30), ("clarion-log".to_owned(), 10)].into(),
            ..CpuSample::default()
        };
        let u = CpuUse::between(&a, &b, 1.0, 1_000);
        assert_eq!(u.server_us_per_notification, Some(300.0));
        assert_eq!(u.server_threads_us_per_notification["shard"], 200.0);
        assert_eq!(u.server_threads_us_per_notification["clarion-log"], 100.0);
    }

    #[test]
    fn no_notifications_gives_zero_not_infinity() {
        let a = CpuSample::default();
        let b = CpuSample {
            server_ticks: None,
            sim_ticks: 100,
            load_ticks: 50,
            ..CpuSample::default()
        };
        let u = CpuUse::between(&a, &b, 1.0, 0);
        assert_eq!(u.sim_cpu_s, 1.0);
        assert_eq!(u.sim_us_per_notification, 0.0);
        assert_eq!(u.server_cpu_s, None);
    }
}
