//! How long a group commit's `fdatasync` takes on this disk while something else flushes a large
//! file, the way an LSM tree's memtable flush does. It answers one question: would a write-ahead
//! log of our own in front of fjall (a separate file, not fjall's journal) keep the flush seconds
//! off the acknowledgement? It would not if the stall is in the device rather than in fjall.
//!
//! The foreground writes 24 KB and `fdatasync`s it about every millisecond for 20 s, in one of
//! three ways: `append` (a growing file, like fjall's journal), `prezero` (overwriting a file
//! written with zeros and synced beforehand, so the sync carries no metadata), or `fallocate`
//! (overwriting preallocated, unwritten extents; after the first pass over the 256 MiB segment,
//! written ones). The background, unless `nobg`, writes 64 MiB
//! files at about 60 MB/s and `sync_all`s each at its end, and appends to a journal it
//! `sync_all`s every 300 ms; with `smooth` it also starts writeback after every MiB
//! (`sync_file_range`), as RocksDB's `bytes_per_sync` does.
//!
//! Two more backgrounds model the server at 30,000 notifications/s, where each shard flushes a
//! 64 MiB memtable into a 24 MB table about every 11 s (so, with two shards, one table about every
//! 5.5 s): `burst` writes each 24 MB table as fast as it can and `sync_all`s it at the end, as
//! fjall does; `paced` writes the same table at 8 MB/s in 64 KiB steps, starting each step's
//! writeback at once (`sync_file_range`), as a flush behind a rate limiter would (RocksDB's
//! `rate_limiter` with `bytes_per_sync`).
//!
//! Two more model the deletion of a journal or of a compaction's inputs on a disk mounted with
//! `discard` (this machine's `/`), where freeing a file's blocks stalls the filesystem's journal:
//! four 64 MiB files are written as a journal is (small synced appends) before the foreground
//! starts, and then one is
//! deleted every 5 s, by `unlink` at once, or by `trickle`, which truncates it 1 MiB at a time
//! every 20 ms (50 MB/s) and unlinks what is left, as RocksDB's `DeleteScheduler` does.
//!
//! ```text
//! cargo run --release -p clarion-loadtest --example fsync_under_flush -- prezero bg [DIR]
//! ```
//! `DIR` (default: a fresh directory under the system temp dir, removed afterwards) should be on
//! the disk the server's data directory uses.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const RUN: Duration = Duration::from_secs(20);
const SEGMENT: u64 = 256 << 20;
const MIB: usize = 1 << 20;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: fsync_under_flush append|prezero|fallocate bg|smooth|burst|paced|unlink|trickle|nobg [DIR]";
    let (Some(mode), Some(bg)) = (args.first(), args.get(1)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    if !["append", "prezero", "fallocate"].contains(&mode.as_str())
        || ![
            "bg", "smooth", "burst", "paced", "unlink", "trickle", "nobg",
        ]
        .contains(&bg.as_str())
    {
        eprintln!("{usage}");
        std::process::exit(2);
    }
    let dir = args.get(2).map_or_else(
        || std::env::temp_dir().join(format!("fsync-under-flush-{}", std::process::id())),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir)?;
    let stop = Arc::new(AtomicBool::new(false));
    let doomed = if bg == "unlink" || bg == "trickle" {
        doomed_files(&dir)?
    } else {
        Vec::new()
    };
    let background = (bg != "nobg").then(|| {
        let (stop, dir, bg) = (stop.clone(), dir.clone(), bg.clone());
        std::thread::spawn(move || match bg.as_str() {
            "burst" => table_every(&dir, None, &stop),
            "paced" => table_every(&dir, Some(PACED_BYTES_PER_SEC), &stop),
            "unlink" | "trickle" => delete_every(&doomed, bg == "trickle", &stop),
            _ => flusher(&dir, bg == "smooth", &stop),
        })
    });
    let result = foreground(mode, &dir);
    stop.store(true, Ordering::Relaxed);
    if let Some(b) = background {
        b.join().expect("background thread")?;
    }
    if args.get(2).is_none() {
        std::fs::remove_dir_all(&dir)?;
    }
    let h = result?;
    let q = |q: f64| h.value_at_quantile(q);
    let over_2ms: u64 = h
        .iter_recorded()
        .filter(|v| v.value_iterated_to() > 2_000)
        .map(|v| v.count_at_value())
        .sum();
    println!(
        "{mode} background={bg}: {} syncs, p50 {} p90 {} p99 {} p99.9 {} max {} µs; {:.2}% over 2 ms",
        h.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        h.max(),
        100.0 * over_2ms as f64 / h.len().max(1) as f64
    );
    Ok(())
}

/// Writes and syncs 24 KB about every millisecond for [`RUN`]; the sync latencies in µs.
fn foreground(mode: &str, dir: &Path) -> std::io::Result<hdrhistogram::Histogram<u64>> {
    let path = dir.join("wal");
    let file = match mode {
        "prezero" => {
            let mut f = File::create(&path)?;
            let zeros = vec![0u8; MIB];
            for _ in 0..SEGMENT / MIB as u64 {
                f.write_all(&zeros)?;
            }
            f.sync_all()?;
            f
        }
        "fallocate" => {
            let f = File::create(&path)?;
            // SAFETY: a plain syscall on a file descriptor we own.
            let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, SEGMENT as libc::off_t) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            f.sync_all()?;
            f
        }
        _ => OpenOptions::new().create(true).append(true).open(&path)?,
    };
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .map_err(std::io::Error::other)?;
    let buf = vec![1u8; 24_000];
    let mut offset = 0u64;
    let started = Instant::now();
    while started.elapsed() < RUN {
        if offset + buf.len() as u64 > SEGMENT {
            offset = 0; // overwrite the segment again: still no metadata to sync
        }
        let t = Instant::now();
        if mode == "append" {
            (&file).write_all(&buf)?;
        } else {
            file.write_all_at(&buf, offset)?;
        }
        offset += buf.len() as u64;
        file.sync_data()?;
        let micros = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
        h.saturating_record(micros);
        std::thread::sleep(Duration::from_micros(700));
    }
    Ok(h)
}

/// A memtable flush, over and over: 64 MiB tables written at about 60 MB/s and synced at the
/// end, beside a journal synced every 300 ms.
fn flusher(dir: &Path, smooth: bool, stop: &AtomicBool) -> std::io::Result<()> {
    let chunk = vec![7u8; MIB];
    let mut journal = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("journal"))?;
    let mut last_journal_sync = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut table = File::create(dir.join(format!("table{n}")))?;
        for _ in 0..64 {
            table.write_all(&chunk)?;
            if smooth {
                // SAFETY: a plain syscall on a file descriptor we own.
                unsafe {
                    libc::sync_file_range(table.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
                }
            }
            journal.write_all(&chunk[..200_000])?;
            std::thread::sleep(Duration::from_millis(15));
            if last_journal_sync.elapsed() > Duration::from_millis(300) {
                journal.sync_all()?;
                last_journal_sync = Instant::now();
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        table.sync_all()?;
        if n >= 2 {
            std::fs::remove_file(dir.join(format!("table{}", n - 2)))?;
        }
        n += 1;
    }
    Ok(())
}

/// Table size and spacing of the `burst` and `paced` backgrounds (see the module doc).
const TABLE_BYTES: usize = 24_000_000;
const TABLE_EVERY: Duration = Duration::from_millis(5_500);
const PACED_BYTES_PER_SEC: usize = 8_000_000;
const STEP: usize = 64 << 10;

/// One 24 MB table every [`TABLE_EVERY`]: written flat out (`None`) or at `rate` bytes per
/// second with each step's writeback started at once; `sync_all`ed at the end either way.
fn table_every(dir: &Path, rate: Option<usize>, stop: &AtomicBool) -> std::io::Result<()> {
    let step = vec![7u8; STEP];
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let mut table = File::create(dir.join(format!("table{n}")))?;
        for i in 0..TABLE_BYTES / STEP {
            table.write_all(&step)?;
            if let Some(rate) = rate {
                // SAFETY: a plain syscall on a file descriptor we own.
                unsafe {
                    libc::sync_file_range(table.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
                }
                let due = Duration::from_secs_f64(((i + 1) * STEP) as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        table.sync_all()?;
        if n >= 2 {
            std::fs::remove_file(dir.join(format!("table{}", n - 2)))?;
        }
        n += 1;
        while started.elapsed() < TABLE_EVERY && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}

/// Files the `unlink` and `trickle` backgrounds delete, and how.
const DOOMED_FILES: usize = 4;
const DOOMED_BYTES: usize = 64 << 20;
const DELETE_EVERY: Duration = Duration::from_secs(5);
const TRICKLE_STEP: u64 = 1 << 20;
const TRICKLE_TICK: Duration = Duration::from_millis(20);

/// Writes the files to delete before the foreground starts, the way a journal is written: 24 KB
/// appends, each synced, the files' appends interleaved. Each file ends up in thousands of small
/// extents, as fjall's journals do, and freeing an extent is what costs.
fn doomed_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let chunk = vec![7u8; 24_000];
    let paths: Vec<PathBuf> = (0..DOOMED_FILES)
        .map(|n| dir.join(format!("doomed{n}")))
        .collect();
    let mut files = paths
        .iter()
        .map(|p| OpenOptions::new().create(true).append(true).open(p))
        .collect::<std::io::Result<Vec<_>>>()?;
    for _ in 0..DOOMED_BYTES / chunk.len() {
        for f in &mut files {
            f.write_all(&chunk)?;
            f.sync_data()?;
        }
    }
    Ok(paths)
}

/// Deletes one file every [`DELETE_EVERY`]: at once, or (`trickle`) by truncating it a step at a
/// time first.
fn delete_every(files: &[PathBuf], trickle: bool, stop: &AtomicBool) -> std::io::Result<()> {
    for path in files {
        let started = Instant::now();
        while started.elapsed() < DELETE_EVERY {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if trickle {
            let f = OpenOptions::new().write(true).open(path)?;
            let mut len = f.metadata()?.len();
            while len > 0 {
                len = len.saturating_sub(TRICKLE_STEP);
                f.set_len(len)?;
                std::thread::sleep(TRICKLE_TICK);
            }
        }
        std::fs::remove_file(path)?;
    }
    Ok(())
}
