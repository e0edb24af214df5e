//! The independent fsync probe: a process of its own that, beside every load, appends 4 KiB and
//! `fdatasync`s about every millisecond on the file system of the server's data directory, so a
//! run's accept latency is read beside what the disk did meanwhile. A run is *calm* when the
//! probe saw no fsync over [`CALM_BOUND`]; one that was not is reported with the probe's figures,
//! not dropped.
//!
//! The probe is this binary's `fsync-probe` subcommand. It runs until its standard input closes
//! (the harness holds it; a harness that dies closes it too, so the probe never outlives it),
//! then prints its summary as one JSON line on standard output. Where the harness runs inside
//! another executable (the test suite's), the probe is a thread of it instead: spawning that
//! executable would run its tests again.

use std::io::{BufRead, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Bytes appended before each fsync: a page, as a small group commit writes.
pub const PROBE_WRITE: usize = 4096;
/// How often the probe writes and syncs.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(1);
/// An fsync slower than this makes the run not calm.
pub const CALM_BOUND: Duration = Duration::from_millis(5);
/// The probe's file wraps around at this size, so a long run uses bounded disk.
const PROBE_FILE_MAX: u64 = 64 << 20;
/// The longest a probe may run, whatever the harness does.
const PROBE_MAX_RUN: Duration = Duration::from_secs(6 * 3600);

/// What the probe saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FsyncProbe {
    /// Where it wrote (on the data directory's file system).
    pub dir: String,
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Fsyncs over [`CALM_BOUND`], and the time spent in them.
    pub over_5ms: u64,
    pub over_5ms_total_ms: f64,
    /// No fsync over [`CALM_BOUND`].
    pub calm: bool,
}

impl FsyncProbe {
    fn of(dir: &Path, h: &Histogram<u64>, over: u64, over_total: Duration) -> FsyncProbe {
        FsyncProbe {
            dir: dir.display().to_string(),
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            over_5ms: over,
            over_5ms_total_ms: over_total.as_secs_f64() * 1e3,
            calm: over == 0,
        }
    }

    /// One line for the report: `fsync probe  p50 … p99 … p99.9 … max … ms; … over 5 ms (… ms); calm`.
    pub fn line(&self) -> String {
        let ms = |us: u64| us as f64 / 1e3;
        format!(
            "p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms over {} fsyncs; {} over 5 ms ({:.0} ms in them): {}",
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us),
            self.count,
            self.over_5ms,
            self.over_5ms_total_ms,
            if self.calm { "calm" } else { "NOT calm" }
        )
    }
}

/// The probe's loop (`clarion-loadtest fsync-probe --dir DIR`): until standard input closes.
pub fn probe_main(dir: &Path) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::stdin().lock().read_to_end(&mut sink);
            stop.store(true, Ordering::Relaxed);
        });
    }
    let summary = probe_until(dir, &stop, PROBE_MAX_RUN)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(&summary)?)?;
    out.flush()?;
    Ok(())
}

/// Writes and syncs every [`PROBE_INTERVAL`] until `stop` (or `max`); removes its file after.
pub fn probe_until(dir: &Path, stop: &AtomicBool, max: Duration) -> anyhow::Result<FsyncProbe> {
    let path = dir.join(format!("clarion-fsync-probe-{}.dat", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("fsync probe: creating {}", path.display()))?;
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut over, mut over_total) = (0u64, Duration::ZERO);
    let page = [0x5au8; PROBE_WRITE];
    let started = Instant::now();
    let mut next = started;
    let mut offset = 0u64;
    while !stop.load(Ordering::Relaxed) && started.elapsed() < max {
        file.write_all_at(&page, offset)?;
        offset = (offset + PROBE_WRITE as u64) % PROBE_FILE_MAX;
        let t = Instant::now();
        file.sync_data()?;
        let took = t.elapsed();
        h.saturating_record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        if took > CALM_BOUND {
            over += 1;
            over_total += took;
        }
        next += PROBE_INTERVAL;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            // Behind (a slow fsync): the next one now, not a burst to catch up.
            next = now;
        }
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(FsyncProbe::of(dir, &h, over, over_total))
}

/// A probe beside a load: a process of its own, or (inside another executable) a thread.
pub struct ProbeProcess {
    run: ProbeRun,
    dir: PathBuf,
}

enum ProbeRun {
    Child(Child),
    Thread(
        Arc<AtomicBool>,
        Option<std::thread::JoinHandle<anyhow::Result<FsyncProbe>>>,
    ),
}

/// This executable, when it is `clarion-loadtest` (whose `fsync-probe` subcommand the probe is).
fn harness_executable() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let name = exe.file_name()?.to_str()?;
    name.starts_with("clarion-loadtest").then_some(exe)
}

impl ProbeProcess {
    /// Starts `fsync-probe` writing in `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<ProbeProcess> {
        let Some(exe) = harness_executable() else {
            let stop = Arc::new(AtomicBool::new(false));
            let (s, d) = (stop.clone(), dir.to_path_buf());
            let thread = std::thread::Builder::new()
                .name("fsync-probe".into())
                .spawn(move || probe_until(&d, &s, PROBE_MAX_RUN))?;
            return Ok(ProbeProcess {
                run: ProbeRun::Thread(stop, Some(thread)),
                dir: dir.to_path_buf(),
            });
        };
        let child = Command::new(exe)
            .arg("fsync-probe")
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("fsync probe: starting it")?;
        Ok(ProbeProcess {
            run: ProbeRun::Child(child),
            dir: dir.to_path_buf(),
        })
    }

    /// Stops it (closing its input) and reads its summary.
    pub fn finish(mut self) -> anyhow::Result<FsyncProbe> {
        match &mut self.run {
            ProbeRun::Thread(stop, thread) => {
                stop.store(true, Ordering::Relaxed);
                let thread = thread.take().context("fsync probe: already finished")?;
                thread
                    .join()
                    .map_err(|_| anyhow::anyhow!("fsync probe: its thread panicked"))?
            }
            ProbeRun::Child(child) => {
                drop(child.stdin.take());
                let mut line = String::new();
                if let Some(out) = child.stdout.take() {
                    std::io::BufReader::new(out).read_line(&mut line)?;
                }
                let status = child.wait()?;
                anyhow::ensure!(
                    status.success(),
                    "fsync probe in {} ended with {status}",
                    self.dir.display()
                );
                serde_json::from_str(line.trim()).context("fsync probe: its summary")
            }
        }
    }
}

impl Drop for ProbeProcess {
    fn drop(&mut self) {
        match &mut self.run {
            ProbeRun::Child(child) => {
                drop(child.stdin.take());
                let _ = child.wait();
            }
            ProbeRun::Thread(stop, thread) => {
                stop.store(true, Ordering::Relaxed);
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_writes_syncs_and_summarises() {
        let dir = tempfile_dir();
        let stop = AtomicBool::new(false);
        let s = probe_until(&dir, &stop, Duration::from_millis(200)).unwrap();
        assert!(s.count > 10, "{s:?}");
        assert!(s.p50_us <= s.p99_us && s.p99_us <= s.p999_us && s.p999_us <= s.max_us);
        assert_eq!(s.calm, s.over_5ms == 0);
        assert!(s.line().contains("fsyncs"));
        // Its file is gone.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let _ = std::fs::remove_dir(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "clarion-probe-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
