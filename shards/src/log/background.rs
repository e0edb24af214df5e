//! Lowering the CPU priority of fjall's background threads (memtable flushes and compactions),
//! as RocksDB's `LowerThreadPoolCPUPriority` does for its compaction pool.
//!
//! On a small machine a flush competes for the cores with the shards and the storage threads:
//! compressing and writing a 64 MiB memtable takes a few hundred milliseconds of a core, and the
//! group commits that run meanwhile wait for CPU as well as for the disk. At a lower priority
//! the flush runs mostly in what the latency-critical threads leave idle. A flush starved for too
//! long makes fjall stall its writers (which frees the cores), so it cannot fall behind for good,
//! but that stall is seconds of accept latency: too low a priority trades the tail at moderate
//! load for the tail under overload.
//! Measured at 30,000 notifications/s in three alternating pairs, at nice 19: p99 accept latency
//! 10.6–15.8 ms against 13.7–41.8 ms, p99.9 28–43 ms against 50–69 ms. The server's default is
//! 10, because at 19 a flush starved under a sustained overload and fjall stalled its writers.
//!
//! The memtable reapers (`log/reaper.rs`), which free what fjall has flushed, run at the same
//! priority: their work is never urgent.
//!
//! fjall names its pool threads `fjall:worker`; they and the reapers (`clarion-reap-NN`) are found
//! by name in `/proc/self/task`.

use std::io;
use std::time::{Duration, Instant};

use super::reaper::REAPER_THREAD_PREFIX;

/// Prefix of the names fjall gives its background threads.
const FJALL_THREAD_PREFIX: &str = "fjall";

/// Prefixes of the names of every background thread.
const BACKGROUND_PREFIXES: [&str; 2] = [FJALL_THREAD_PREFIX, REAPER_THREAD_PREFIX];

/// How long [`lower_background_priority`] looks for the threads it expects: a new thread sets its
/// own name once it runs, so one started just now may not carry it yet.
const FIND_FOR: Duration = Duration::from_secs(1);

/// Sets the nice value of every background thread of this process (fjall's and the reapers) to `nice` (0 to 19;
/// higher is lower priority) and returns how many it found. Call it after opening the logs:
/// fjall starts its threads when a database opens. It looks again for up to a second until it
/// has seen `expected` of them. Lowering one's own priority needs no privilege.
pub fn lower_background_priority(nice: i32, expected: usize) -> io::Result<usize> {
    let started = Instant::now();
    loop {
        let found = lower_named(nice)?;
        if found >= expected || started.elapsed() > FIND_FOR {
            return Ok(found);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One pass over `/proc/self/task`: every thread named like fjall's gets `nice`.
fn lower_named(nice: i32) -> io::Result<usize> {
    let mut found = 0;
    for task in std::fs::read_dir("/proc/self/task")? {
        let task = task?;
        let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) else {
            continue; // the thread ended meanwhile
        };
        if !BACKGROUND_PREFIXES.iter().any(|p| comm.starts_with(p)) {
            continue;
        }
        let Ok(tid) = task.file_name().to_string_lossy().parse::<libc::id_t>() else {
            continue;
        };
        // SAFETY: a plain syscall; PRIO_PROCESS with a thread id sets that thread's nice value.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        found += 1;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nice value of each of this process's threads whose name starts with `prefix`.
    fn nice_of(prefix: &str) -> Vec<i64> {
        let mut out = Vec::new();
        for task in std::fs::read_dir("/proc/self/task")
            .expect("proc")
            .flatten()
        {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if !comm.starts_with(prefix) {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            if let Some(n) = nice_in_stat(&stat) {
                out.push(n);
            }
        }
        out
    }

    /// The nice value in a `/proc/.../stat` line: field 19, the 17th after the parenthesised
    /// name (whose text may hold spaces).
    fn nice_in_stat(stat: &str) -> Option<i64> {
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        after
            .split_whitespace()
            .nth(16)
            .map(|n| n.parse().expect("nice"))
    }

    #[test]
    fn background_threads_get_the_lower_priority_and_nothing_else_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = crate::LogConfig {
            dir: dir.path().to_path_buf(),
            shard: 0,
            fsync: false,
            dedup_window_ms: 1000,
        };
        let (log, _) = crate::open(config, 0).expect("open");
        let found =
            lower_background_priority(19, crate::BACKGROUND_THREADS_PER_LOG).expect("setpriority");
        assert!(
            found >= crate::BACKGROUND_THREADS_PER_LOG,
            "fjall's threads are found by name: {found}"
        );
        // Tests running beside this one may have opened logs since: count the lowered ones.
        let fjall = nice_of(FJALL_THREAD_PREFIX);
        let lowered = fjall.iter().filter(|&&n| n == 19).count();
        assert!(lowered >= crate::FJALL_WORKER_THREADS, "{fjall:?}");
        let reapers = nice_of(REAPER_THREAD_PREFIX);
        assert!(
            reapers.contains(&19),
            "the log's reaper is lowered too: {reapers:?}"
        );
        // SAFETY: gettid has no arguments and cannot fail.
        let me = unsafe { libc::gettid() };
        let stat = std::fs::read_to_string(format!("/proc/self/task/{me}/stat")).expect("stat");
        assert_eq!(
            nice_in_stat(&stat),
            Some(0),
            "this thread keeps its priority"
        );
        drop(log);
    }
}
