//! Starting the writeback of fjall's table files while fjall writes them, as RocksDB's
//! `bytes_per_sync` does (fjall has no such option).
//!
//! A memtable flush or a compaction writes a table of tens of megabytes into the page cache and
//! then fsyncs it, so the whole table goes to the disk at once. On ext4 (`data=ordered`) a group
//! commit's `fdatasync` commits the filesystem's journal, and that commit waits for the data of
//! every file whose blocks the same journal transaction allocated: a table's fsync and a group
//! commit that meet wait for the whole table. Measured at 30,000 notifications/s: `fdatasync`
//! of the shard logs 33–54 ms while fjall's worker fsynced a table.
//!
//! One thread watches the shards' `tables` directories with inotify. While a new table file is
//! being written it starts the writeback of every further `chunk` bytes (`sync_file_range` with
//! `SYNC_FILE_RANGE_WRITE`, which starts it without waiting for it), so the table reaches the disk in small pieces
//! as it is written and its final fsync finds little left.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a file being written is looked at.
const TICK: Duration = Duration::from_millis(5);
/// How long the thread sleeps with nothing to watch before it checks for stop.
const IDLE: Duration = Duration::from_millis(200);
/// A watched file that has not grown for this long is let go, in case its close was missed.
const STALE: Duration = Duration::from_secs(10);

/// The running writeback thread; dropping it stops the thread.
#[derive(Debug)]
pub struct TableWriteback {
    stop: Arc<AtomicBool>,
    started: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
    watched: usize,
}

impl TableWriteback {
    /// The number of `tables` directories watched.
    pub fn watched(&self) -> usize {
        self.watched
    }

    /// Bytes of table files whose writeback this thread has started so far.
    pub fn started_bytes(&self) -> u64 {
        self.started.load(Relaxed)
    }
}

impl Drop for TableWriteback {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Watches `keyspaces/*/tables` under each database directory in `dbs` and starts the writeback
/// of each new table every `chunk` bytes while it grows.
pub fn start_table_writeback(dbs: &[PathBuf], chunk: u64) -> io::Result<TableWriteback> {
    // SAFETY: a plain syscall; the result is checked, and a valid fd is owned below.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let inotify = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut dirs = HashMap::new();
    for db in dbs {
        for dir in table_dirs(db)? {
            let wd = add_watch(&inotify, &dir)?;
            dirs.insert(wd, dir);
        }
    }
    let watched = dirs.len();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicU64::new(0));
    let mut watcher = Watcher {
        inotify,
        dirs,
        growing: Vec::new(),
        chunk: chunk.max(1),
        started: started.clone(),
    };
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("clarion-writeback".into())
        .spawn(move || watcher.run(&flag))?;
    Ok(TableWriteback {
        stop,
        started,
        thread: Some(thread),
        watched,
    })
}

/// `keyspaces/*/tables` under one database directory.
/// fjall's table directories of the database in `db` (`keyspaces/*/tables`).
pub(super) fn table_dirs(db: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(db.join("keyspaces"))? {
        let tables = entry?.path().join("tables");
        if tables.is_dir() {
            out.push(tables);
        }
    }
    Ok(out)
}

fn add_watch(inotify: &OwnedFd, dir: &Path) -> io::Result<i32> {
    use std::os::unix::ffi::OsStrExt;
    let mut path = dir.as_os_str().as_bytes().to_vec();
    path.push(0);
    let mask = libc::IN_CREATE | libc::IN_CLOSE_WRITE | libc::IN_DELETE;
    // SAFETY: `path` is NUL-terminated and outlives the call.
    let wd = unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), path.as_ptr().cast(), mask) };
    if wd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(wd)
}

/// A table file being written: how far its writeback has been started.
struct Growing {
    wd: i32,
    name: Vec<u8>,
    file: File,
    started: u64,
    /// Its length when last looked at, and when that last changed.
    seen: u64,
    grew: Instant,
}

struct Watcher {
    inotify: OwnedFd,
    dirs: HashMap<i32, PathBuf>,
    growing: Vec<Growing>,
    chunk: u64,
    started: Arc<AtomicU64>,
}

impl Watcher {
    fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Relaxed) {
            let wait = if self.growing.is_empty() { IDLE } else { TICK };
            if self.wait_readable(wait) {
                self.read_events();
            }
            self.start_writeback();
        }
    }

    fn wait_readable(&self, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.inotify.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        n > 0 && pfd.revents & libc::POLLIN != 0
    }

    fn read_events(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reads into a buffer we own, up to its length.
            let n =
                unsafe { libc::read(self.inotify.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            let Ok(n) = usize::try_from(n) else { return }; // EAGAIN: all read
            if n == 0 {
                return;
            }
            let mut at = 0;
            let header = std::mem::size_of::<libc::inotify_event>();
            while at + header <= n {
                // SAFETY: `header` bytes at `at` are within what the kernel wrote; read unaligned.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
                let name_end = (at + header + ev.len as usize).min(n);
                let raw = &buf[at + header..name_end];
                let name = raw.split(|b| *b == 0).next().unwrap_or_default().to_vec();
                self.event(ev.wd, ev.mask, name);
                at = name_end;
            }
        }
    }

    fn event(&mut self, wd: i32, mask: u32, name: Vec<u8>) {
        if mask & libc::IN_Q_OVERFLOW != 0 {
            // Events were lost, closes among them: start over with the files created from now.
            self.growing.clear();
            return;
        }
        if mask & libc::IN_CREATE != 0 && mask & libc::IN_ISDIR == 0 {
            use std::os::unix::ffi::OsStrExt;
            let Some(dir) = self.dirs.get(&wd) else {
                return;
            };
            let path = dir.join(std::ffi::OsStr::from_bytes(&name));
            if let Ok(file) = File::open(&path) {
                self.growing.push(Growing {
                    wd,
                    name,
                    file,
                    started: 0,
                    seen: 0,
                    grew: Instant::now(),
                });
            }
        } else if mask & (libc::IN_CLOSE_WRITE | libc::IN_DELETE) != 0 {
            self.growing.retain(|g| !(g.wd == wd && g.name == name));
        }
    }

    fn start_writeback(&mut self) {
        self.growing.retain(|g| g.grew.elapsed() < STALE);
        for g in &mut self.growing {
            let Ok(meta) = g.file.metadata() else {
                continue;
            };
            let len = meta.len();
            if len != g.seen {
                g.seen = len;
                g.grew = Instant::now();
            }
            if len < g.started + self.chunk {
                continue;
            }
            let from = i64::try_from(g.started).unwrap_or(i64::MAX);
            let count = i64::try_from(len - g.started).unwrap_or(i64::MAX);
            // SAFETY: a plain syscall on a descriptor we own. WRITE only starts the writeback of
            // the range's dirty pages; it does not wait for it to finish.
            let rc = unsafe {
                libc::sync_file_range(g.file.as_raw_fd(), from, count, libc::SYNC_FILE_RANGE_WRITE)
            };
            if rc == 0 {
                self.started.fetch_add(len - g.started, Relaxed);
            }
            g.started = len;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Instant;

    fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        f()
    }

    #[test]
    fn a_growing_table_file_has_its_writeback_started_chunk_by_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let tables = dir.path().join("keyspaces").join("7").join("tables");
        std::fs::create_dir_all(&tables).unwrap();
        std::fs::create_dir_all(dir.path().join("keyspaces").join("8")).unwrap(); // no tables yet
        let wb = start_table_writeback(&[dir.path().to_path_buf()], 1 << 20).unwrap();
        assert_eq!(wb.watched(), 1);

        // A file elsewhere in the database is not a table: left alone.
        let mut other = File::create(dir.path().join("keyspaces").join("other")).unwrap();
        other.write_all(&vec![1u8; 2 << 20]).unwrap();

        let mut table = File::create(tables.join("0")).unwrap();
        let piece = vec![7u8; 64 << 10];
        for _ in 0..64 {
            table.write_all(&piece).unwrap(); // 4 MiB in all, as a flush writes
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            wait_until(Duration::from_secs(10), || wb.started_bytes() >= 3 << 20),
            "writeback started for {} bytes of 4 MiB",
            wb.started_bytes()
        );
        assert!(wb.started_bytes() <= 4 << 20, "only the table's own bytes");
        table.sync_all().unwrap();
        drop(table); // closing after writing: no longer watched
        let after_close = wb.started_bytes();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(wb.started_bytes(), after_close);
        drop(wb); // stops and joins the thread
    }

    #[test]
    fn a_real_memtable_flush_is_written_back_as_it_goes() {
        use fjall::{Database, KeyspaceCreateOptions};
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        let ks = db
            .keyspace("notifications", KeyspaceCreateOptions::default)
            .unwrap();
        let wb = start_table_writeback(&[dir.path().to_path_buf()], 64 << 10).unwrap();
        assert!(wb.watched() >= 1);
        // Incompressible values, so the table is about as large as what was written.
        let mut value = [0u8; 1024];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0u32..32768 {
            for b in value.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            ks.insert(i.to_be_bytes(), value).unwrap();
        }
        ks.rotate_memtable_and_wait().unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || wb.started_bytes() > 0),
            "no writeback was started for the flushed table"
        );
    }
}
