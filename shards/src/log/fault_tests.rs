//! Tests of the shard log where time and faults matter: lazy writes synced on time under a steady
//! stream, writes handed to the OS per group (so a process crash loses none), corrupt records
//! quarantined at recovery, damaged journal tails cut back to their last good batch.

use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use tempfile::TempDir;

use super::*;

const NOW: u64 = 1_700_000_000_000;

fn config(dir: &TempDir, fsync: bool) -> LogConfig {
    LogConfig {
        dir: dir.path().join("shard-00"),
        shard: 0,
        fsync,
        dedup_window_ms: 60_000,
    }
}

/// Whether any file under `dir` holds `needle` (what the OS has, whatever fjall still buffers).
fn on_disk(dir: &std::path::Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let path = e.path();
        if path.is_dir() {
            on_disk(&path, needle)
        } else {
            std::fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        }
    })
}

#[test]
fn lazy_writes_in_a_steady_stream_are_synced_within_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(config(&dir, true), NOW).unwrap();
    let before = log.stats().fsyncs;
    let started = Instant::now();
    let mut first_sync = None;
    // One lazy write every 5 ms for 400 ms: the timer used to restart at each, so none synced.
    for i in 0..80u32 {
        let mut b = WriteBatch::new();
        b.put(Keyspace::Users, format!("u{i}"), b"v".to_vec());
        log.submit_nowait(b).unwrap();
        if first_sync.is_none() && log.stats().fsyncs > before {
            first_sync = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let first = first_sync.expect("a steady stream of lazy writes was never synced");
    assert!(
        first <= LAZY_SYNC_INTERVAL + Duration::from_millis(150),
        "first fsync after {first:?}"
    );
    let synced = log.stats().fsyncs - before;
    assert!(synced >= 2, "{synced} fsyncs in 400 ms of lazy writes");
    log.join().unwrap();
}

#[test]
fn without_fsync_an_acknowledged_write_is_already_in_the_os() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(config(&dir, false), NOW).unwrap();
    let mut b = WriteBatch::new();
    b.put(Keyspace::Users, "u", b"durable-marker-0123456789".to_vec());
    block_on(log.submit(b).unwrap()).unwrap();
    assert!(
        on_disk(&dir.path().join("shard-00"), b"durable-marker-0123456789"),
        "an acknowledged write is still in fjall's buffer"
    );
    assert_eq!(log.stats().fsyncs, 0, "fsync off");
    log.join().unwrap();
}

#[test]
fn a_lazy_write_is_in_the_os_once_its_group_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(config(&dir, true), NOW).unwrap();
    let mut b = WriteBatch::new();
    b.put(Keyspace::Users, "u", b"lazy-marker-0123456789".to_vec());
    log.submit_nowait(b).unwrap();
    // A read is answered after every group before it.
    block_on(log.get(Keyspace::Meta, META_FORMAT).unwrap()).unwrap();
    assert!(
        on_disk(&dir.path().join("shard-00"), b"lazy-marker-0123456789"),
        "a lazy write is still in fjall's buffer"
    );
    log.join().unwrap();
}
