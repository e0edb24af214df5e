//! The wake probe: what it costs on this machine for one thread to hand work to another that is
//! asleep, measured in the same run as each load. Two threads ping-pong a counter over two
//! `eventfd`s, each blocking in `read` until the other writes: first pinned to two different
//! CPUs (the first two of the process's affinity mask), so every hand-off wakes an idle CPU, then
//! both pinned to the first CPU, where a hand-off is only a switch between threads.
//!
//! The cross-CPU figures are the machine's bound for request-at-a-time paths: every hand-off to
//! a thread whose CPU is idle pays about one such wake, in latency and in CPU, however little
//! work follows it; a batch pays it once for all its items. On a VM the wake of an idle vCPU
//! goes through the hypervisor and can cost tens of µs, against a few µs on one CPU.
//!
//! `bench` and `run` measure it once before the load (never during it), and
//! `clarion-loadtest wake-probe` on its own. The probe runs in this process on threads of its
//! own, which end with it, so no one's affinity is changed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Cross-CPU round trips: about 0.35 s at the 60–70 µs each measured on the 2-vCPU VM, enough
/// samples for a steady p99.
pub const CROSS_CPU_ROUND_TRIPS: u64 = 5_000;
/// Same-CPU round trips: about 0.05–0.08 s at the 2.5–4 µs each measured there; more of them,
/// as each is shorter and more easily disturbed.
pub const SAME_CPU_ROUND_TRIPS: u64 = 20_000;
/// Each measurement stops after this long whatever its count, so the probe ends by itself in
/// seconds on a slow or busy machine (its figures are then over fewer round trips).
pub const TIME_LIMIT: Duration = Duration::from_secs(2);

/// What the probe measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WakeProbe {
    /// The threads on two different CPUs; `None` when the affinity mask allows one CPU only.
    pub cross_cpu: Option<WakeFigures>,
    /// Both threads on the first CPU of the affinity mask.
    pub same_cpu: WakeFigures,
}

/// One ping-pong's figures. Times are whole ns, in µs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WakeFigures {
    /// The CPUs of the pinging and the echoing thread.
    pub cpus: [usize; 2],
    pub round_trips: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// CPU time (user and system) both threads used, per one-way hand-off (half a round trip):
    /// a write, the wake it causes, and the woken thread's read.
    pub cpu_us_per_wake: f64,
}

impl WakeProbe {
    /// One line for the report: `cross-CPU wake: round trip p50 …, p99 …, … CPU per wake; same CPU: …`.
    pub fn line(&self) -> String {
        let cross = match &self.cross_cpu {
            Some(c) => format!(
                "cross-CPU wake (CPUs {} and {}): round trip p50 {:.1} µs, p99 {:.1} µs, {:.1} µs CPU per wake",
                c.cpus[0], c.cpus[1], c.p50_us, c.p99_us, c.cpu_us_per_wake
            ),
            None => "cross-CPU wake: not measured (one CPU allowed)".to_owned(),
        };
        let s = &self.same_cpu;
        format!(
            "{cross}; same CPU: round trip p50 {:.1} µs, p99 {:.1} µs, {:.1} µs CPU per wake",
            s.p50_us, s.p99_us, s.cpu_us_per_wake
        )
    }
}

#[cfg(target_os = "linux")]
pub use linux::measure;

/// Elsewhere there is no probe (it needs Linux's `eventfd` and `sched_setaffinity`).
#[cfg(not(target_os = "linux"))]
pub fn measure() -> anyhow::Result<WakeProbe> {
    anyhow::bail!("the wake probe needs Linux")
}

#[cfg(target_os = "linux")]
mod linux {
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::time::{Duration, Instant};

    use anyhow::Context;
    use hdrhistogram::Histogram;

    use super::{CROSS_CPU_ROUND_TRIPS, SAME_CPU_ROUND_TRIPS, TIME_LIMIT, WakeFigures, WakeProbe};
    use crate::cpu::this_thread as thread_cpu;

    /// Sent in place of a round trip's number to end the other thread (by the pinging thread
    /// when it is done or fails, by the echoing one when it fails). Never a round trip's number,
    /// and small enough that no eventfd counter holding it can overflow (such a write blocks).
    const STOP: u64 = 1 << 62;
    /// The longest round trip the histogram holds exactly (ns); longer ones saturate.
    const LATENCY_MAX_NS: u64 = 10_000_000_000;

    /// Runs both ping-pongs (about half a second here; at most twice [`TIME_LIMIT`]).
    pub fn measure() -> anyhow::Result<WakeProbe> {
        let cpus = allowed_cpus()?;
        let first = *cpus
            .first()
            .context("wake probe: no CPU in the affinity mask")?;
        let cross_cpu = match cpus.get(1) {
            Some(&second) => Some(ping_pong([first, second], CROSS_CPU_ROUND_TRIPS)?),
            None => None,
        };
        let same_cpu = ping_pong([first, first], SAME_CPU_ROUND_TRIPS)?;
        Ok(WakeProbe {
            cross_cpu,
            same_cpu,
        })
    }

    /// `round_trips` round trips (or [`TIME_LIMIT`]) between a thread on `cpus[0]` and one on
    /// `cpus[1]`.
    fn ping_pong(cpus: [usize; 2], round_trips: u64) -> anyhow::Result<WakeFigures> {
        let (ping, pong) = (eventfd()?, eventfd()?);
        let (pinged, echoed) = std::thread::scope(|s| {
            let spawn = |name: &str| std::thread::Builder::new().name(name.to_owned());
            let echo = spawn("wake-echo").spawn_scoped(s, || echo(cpus[1], &ping, &pong))?;
            let pinger = spawn("wake-ping")
                .spawn_scoped(s, || pinger(cpus[0], &ping, &pong, round_trips))
                .inspect_err(|_| {
                    // The echo would wait for it forever (and the scope for the echo).
                    let _ = send(&ping, STOP);
                })?;
            let panicked = |_| anyhow::anyhow!("wake probe: a thread panicked");
            anyhow::Ok((
                pinger.join().map_err(panicked)?,
                echo.join().map_err(panicked)?,
            ))
        })?;
        // The echo's own failure first: the pinger then only saw it stop.
        let echo_cpu = echoed?;
        let (h, ping_cpu) = pinged?;
        let done = h.len();
        anyhow::ensure!(done > 0, "wake probe: no round trip on CPUs {cpus:?}");
        let us = |ns: u64| ns as f64 / 1e3;
        let cpu_ns_per_wake = (ping_cpu + echo_cpu).as_nanos() as f64 / (2 * done) as f64;
        Ok(WakeFigures {
            cpus,
            round_trips: done,
            p50_us: us(h.value_at_quantile(0.5)),
            p99_us: us(h.value_at_quantile(0.99)),
            cpu_us_per_wake: us(cpu_ns_per_wake.round() as u64),
        })
    }

    /// The pinging thread: sends 1, 2, 3, … and waits for each to come back; then [`STOP`]
    /// (however it ends).
    fn pinger(
        cpu: usize,
        ping: &File,
        pong: &File,
        round_trips: u64,
    ) -> anyhow::Result<(Histogram<u64>, Duration)> {
        struct StopEcho<'a>(&'a File);
        impl Drop for StopEcho<'_> {
            fn drop(&mut self) {
                let _ = send(self.0, STOP);
            }
        }
        let _stop = StopEcho(ping);
        ping_loop(cpu, ping, pong, round_trips)
    }

    fn ping_loop(
        cpu: usize,
        ping: &File,
        pong: &File,
        round_trips: u64,
    ) -> anyhow::Result<(Histogram<u64>, Duration)> {
        pin_to(cpu)?;
        let mut h = Histogram::<u64>::new_with_bounds(1, LATENCY_MAX_NS, 3)?;
        let cpu_before = thread_cpu()?;
        let started = Instant::now();
        let mut sent_at = started;
        for n in 1..=round_trips {
            if sent_at - started >= TIME_LIMIT {
                break;
            }
            send(ping, n)?;
            let back = receive(pong)?;
            anyhow::ensure!(back != STOP, "wake probe: the echoing thread stopped");
            anyhow::ensure!(back == n, "wake probe: sent {n}, {back} came back");
            let now = Instant::now();
            h.saturating_record(u64::try_from((now - sent_at).as_nanos()).unwrap_or(u64::MAX));
            sent_at = now;
        }
        Ok((h, thread_cpu()?.saturating_sub(cpu_before)))
    }

    /// The echoing thread: sends back what it receives until [`STOP`]; sends [`STOP`] if it
    /// fails.
    fn echo(cpu: usize, ping: &File, pong: &File) -> anyhow::Result<Duration> {
        let result = echo_loop(cpu, ping, pong);
        if result.is_err() {
            let _ = send(pong, STOP);
        }
        result
    }

    fn echo_loop(cpu: usize, ping: &File, pong: &File) -> anyhow::Result<Duration> {
        pin_to(cpu)?;
        let cpu_before = thread_cpu()?;
        loop {
            let n = receive(ping)?;
            if n == STOP {
                return Ok(thread_cpu()?.saturating_sub(cpu_before));
            }
            send(pong, n)?;
        }
    }

    fn eventfd() -> anyhow::Result<File> {
        // SAFETY: eventfd takes no pointers; it returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("wake probe: eventfd");
        }
        // SAFETY: `fd` is a descriptor just opened and owned by nothing else.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Adds `n` to the eventfd's counter (waking a thread blocked reading it).
    fn send(fd: &File, n: u64) -> std::io::Result<()> {
        let mut fd = fd;
        fd.write_all(&n.to_ne_bytes())
    }

    /// Blocks until the eventfd's counter is not zero, then takes it (and zeroes it).
    fn receive(fd: &File) -> std::io::Result<u64> {
        let mut buf = [0u8; 8];
        let mut fd = fd;
        fd.read_exact(&mut buf)?;
        Ok(u64::from_ne_bytes(buf))
    }

    /// The CPUs this thread may run on (`taskset`, cgroups), in order.
    pub(super) fn allowed_cpus() -> anyhow::Result<Vec<usize>> {
        // SAFETY: cpu_set_t is a plain bit array, for which all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: the kernel writes at most `size_of::<cpu_set_t>()` bytes into `set`.
        let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("wake probe: sched_getaffinity");
        }
        let max = usize::try_from(libc::CPU_SETSIZE).unwrap_or(0);
        // SAFETY: CPU_ISSET only reads the set (indexing it with a bounds check).
        Ok((0..max)
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect())
    }

    /// Pins the calling thread to `cpu`.
    fn pin_to(cpu: usize) -> anyhow::Result<()> {
        // SAFETY: cpu_set_t is a plain bit array, for which all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: CPU_SET only sets a bit of the set (indexing it with a bounds check).
        unsafe { libc::CPU_SET(cpu, &mut set) };
        // SAFETY: the kernel reads `size_of::<cpu_set_t>()` bytes of `set`; 0 is this thread.
        let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("wake probe: pinning a thread to CPU {cpu}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn the_probe_ping_pongs_and_summarises() {
        let p = measure().unwrap();
        let cpus = linux::allowed_cpus().unwrap();
        assert_eq!(p.cross_cpu.is_some(), cpus.len() > 1, "{p:?}");
        let mut all = vec![&p.same_cpu];
        all.extend(p.cross_cpu.as_ref());
        for f in all {
            assert!(f.round_trips > 0, "{f:?}");
            assert!(f.p50_us > 0.0 && f.p99_us >= f.p50_us, "{f:?}");
            assert!(f.cpu_us_per_wake >= 0.0, "{f:?}");
        }
        assert_eq!(p.same_cpu.cpus, [cpus[0], cpus[0]]);
        if let Some(c) = &p.cross_cpu {
            assert_eq!(c.cpus, [cpus[0], cpus[1]]);
        }
        assert!(
            p.line().contains("same CPU: round trip p50"),
            "{}",
            p.line()
        );
    }

    #[test]
    fn the_line_and_the_json() {
        let p = WakeProbe {
            cross_cpu: Some(WakeFigures {
                cpus: [0, 1],
                round_trips: 5000,
                p50_us: 62.123,
                p99_us: 95.3,
                cpu_us_per_wake: 20.4,
            }),
            same_cpu: WakeFigures {
                cpus: [0, 0],
                round_trips: 20_000,
                p50_us: 2.6,
                p99_us: 4.1,
                cpu_us_per_wake: 1.3,
            },
        };
        assert_eq!(
            p.line(),
            "cross-CPU wake (CPUs 0 and 1): round trip p50 62.1 µs, p99 95.3 µs, 20.4 µs CPU per wake; \
             same CPU: round trip p50 2.6 µs, p99 4.1 µs, 1.3 µs CPU per wake"
        );
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<WakeProbe>(&json).unwrap(), p);
        let one = WakeProbe {
            cross_cpu: None,
            ..p
        };
        assert!(
            one.line()
                .starts_with("cross-CPU wake: not measured (one CPU allowed); same CPU")
        );
        assert_eq!(
            serde_json::from_str::<WakeProbe>(&serde_json::to_string(&one).unwrap()).unwrap(),
            one
        );
    }
}
