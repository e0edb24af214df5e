//! Freeing fjall's flushed memtables on a thread of their own, off the commit path.
//!
//! A memtable is a skiplist of a few hundred thousand separately allocated nodes (12–20 MiB
//! here). Once it is flushed, lsm-tree forgets it by popping old versions from the tree's version
//! history under that history's write lock, and the pop drops the last reference, so the whole
//! skiplist is freed there: 54–163 ms measured at 30,000 notifications/s (about 300 ns a record,
//! nearly all cache misses). fjall runs that version garbage collection for every keyspace of the
//! database each time it rotates a memtable (fjall 2 inside the `commit` of the write that filled
//! it, fjall 3 on one of its workers). Every write takes the same lock to reach the active
//! memtable, so the storage thread waits for the whole free, between a group's fsync and its
//! replies: the largest stalls of accept latency that were left. On a worker, which runs at the
//! background threads' lower priority and is preempted while it holds the lock, even the small
//! `pending` memtables (tens of thousands of backlog keys) held a catch-up's writes for
//! 100–230 ms; so every keyspace a commit writes is watched.
//!
//! The reaper keeps its own reference to every memtable the storage thread has seen active
//! ([`MemtableReaper::observe`], after each commit: a read lock and a pointer copy). The version
//! history's pop then drops a reference that is not the last, which costs nothing, and the reaper
//! thread (`clarion-reap-NN`, at the background threads' lower priority) frees the memtable
//! once it holds the only reference left. Nothing fjall reads changes: a memtable lives a few
//! tens of milliseconds past its flush instead of being freed at once.
//!
//! The same thread runs the shard's trash (`log/trash.rs`) at every look, which frees the disk
//! space of fjall's deleted files a little at a time.

use std::any::Any;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use fjall::AbstractTree;

use super::trash::Trash;

/// A memtable kept alive by the reaper; only its reference count is ever looked at.
type Kept = Arc<dyn Any + Send + Sync>;

/// How often the reaper looks for memtables it alone still holds.
const POLL: Duration = Duration::from_millis(50);

/// Prefix of the reaper threads' names (`clarion-reap-NN`).
pub const REAPER_THREAD_PREFIX: &str = "clarion-reap";

/// The storage thread's side: remembers the active memtable of each keyspace it watches and hands
/// each new one to the reaper thread. Dropping it lets the thread free what it holds and end.
pub(super) struct MemtableReaper {
    tx: Option<Sender<Kept>>,
    /// Id of the active memtable last handed over, per watched keyspace.
    seen: Vec<Option<u64>>,
    thread: Option<JoinHandle<()>>,
}

impl MemtableReaper {
    /// Starts the reaper thread of shard `shard`, which also runs the trash of the database in
    /// `db` (`log/trash.rs`). Without a trash (its directory could not be made) fjall deletes
    /// its files at once, as it would anyway.
    pub(super) fn start(shard: u16, db: &std::path::Path) -> std::io::Result<Self> {
        let trash = Trash::open(db)
            .inspect_err(
                |e| tracing::warn!(error = %e, shard, "no trash: fjall deletes its files at once"),
            )
            .ok();
        Self::start_polling(shard, POLL, trash)
    }

    /// [`start`](Self::start) with another interval between looks (tests use a long one, so the
    /// thread looks only when handed a memtable).
    fn start_polling(shard: u16, poll: Duration, trash: Option<Trash>) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name(format!("{REAPER_THREAD_PREFIX}-{shard:02}"))
            .spawn(move || {
                let _ = ready_tx.send(());
                reap(&rx, poll, trash);
            })?;
        // Once the thread runs it carries its name, so whoever looks for it by name (to lower
        // its priority) finds it as soon as the log is open.
        let _ = ready_rx.recv();
        Ok(Self {
            tx: Some(tx),
            seen: Vec::new(),
            thread: Some(thread),
        })
    }

    /// Hands over the active memtable of each of `keyspaces` if it is not the one handed over
    /// last time. Call it after every commit: a commit is where fjall rotates a full memtable.
    pub(super) fn observe<'a>(&mut self, keyspaces: impl IntoIterator<Item = &'a fjall::Keyspace>) {
        let Some(tx) = &self.tx else { return };
        for (i, ks) in keyspaces.into_iter().enumerate() {
            if self.seen.len() <= i {
                self.seen.resize(i + 1, None);
            }
            let memtable = ks.tree.active_memtable();
            if self.seen[i] == Some(memtable.id()) {
                continue;
            }
            self.seen[i] = Some(memtable.id());
            // The thread only ends once this sender is gone, so the send cannot fail; if it
            // did, the memtable would just be freed here, as fjall would have freed it.
            let _ = tx.send(memtable);
        }
    }
}

impl Drop for MemtableReaper {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The reaper thread: collects memtables and frees each once it holds the only reference, and
/// runs the trash at every look.
fn reap(rx: &Receiver<Kept>, poll: Duration, mut trash: Option<Trash>) {
    let mut held: Vec<Kept> = Vec::new();
    loop {
        match rx.recv_timeout(poll) {
            Ok(m) => held.push(m),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        held.extend(rx.try_iter());
        // `retain` drops what it removes right here, on this thread.
        held.retain(|m| Arc::strong_count(m) > 1);
        if let Some(t) = &mut trash {
            t.tick();
        }
    }
    // The storage thread is stopping; what is left is freed as it would have been.
    drop(held);
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjall::{Database, KeyspaceCreateOptions};
    use std::time::Instant;

    /// A long poll: the reaper looks only when it is handed a memtable.
    const NEVER: Duration = Duration::from_secs(3600);

    /// A fresh database with one keyspace (the directory and database must outlive it).
    fn keyspace() -> (tempfile::TempDir, Database, fjall::Keyspace) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        let ks = db.keyspace("k", KeyspaceCreateOptions::default).unwrap();
        (dir, db, ks)
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// fjall lets go of a flushed memtable, the reaper is then its only holder, and the reaper
    /// frees it when it next looks.
    #[test]
    fn a_flushed_memtable_is_freed_by_the_reaper_not_by_fjall() {
        let (_dir, _db, ks) = keyspace();
        let mut reaper = MemtableReaper::start_polling(7, NEVER, None).unwrap();

        for i in 0..1000u32 {
            ks.insert(format!("a-{i:06}"), [7u8; 64]).unwrap();
        }
        reaper.observe([&ks]);
        let first = Arc::downgrade(&ks.tree.active_memtable());
        // fjall's version history and the reaper.
        assert!(first.strong_count() >= 2);

        // Flush it, and rotate again so that fjall's version garbage collection runs past the
        // flush and pops every version that still names the first memtable.
        ks.rotate_memtable_and_wait().unwrap();
        for round in 0..3 {
            ks.insert(format!("b-{round}"), "1").unwrap();
            ks.rotate_memtable_and_wait().unwrap();
        }
        wait_until("fjall lets go of the first memtable", || {
            first.strong_count() == 1
        });
        // Only the reaper holds it now, and it has not looked since: still alive.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(first.strong_count(), 1);

        // Handing it the next memtable wakes it; it frees the first.
        reaper.observe([&ks]);
        wait_until("the reaper frees it", || first.strong_count() == 0);
        // The data is still there, read from the flushed table.
        assert_eq!(ks.get("a-000999").unwrap().as_deref(), Some(&[7u8; 64][..]));
    }

    #[test]
    fn what_the_reaper_holds_is_freed_when_it_stops() {
        let (_dir, _db, ks) = keyspace();
        let mut reaper = MemtableReaper::start_polling(9, NEVER, None).unwrap();
        ks.insert("a", "1").unwrap();
        reaper.observe([&ks]);
        let memtable = Arc::downgrade(&ks.tree.active_memtable());
        let with_reaper = memtable.strong_count();
        drop(reaper); // joins the thread
        assert_eq!(memtable.strong_count(), with_reaper - 1);
    }

    #[test]
    fn the_same_memtable_is_handed_over_once() {
        let (_dir, _db, ks) = keyspace();
        let mut reaper = MemtableReaper::start_polling(8, NEVER, None).unwrap();
        ks.insert("a", "1").unwrap();
        let before = Arc::strong_count(&ks.tree.active_memtable());
        reaper.observe([&ks]);
        reaper.observe([&ks]);
        reaper.observe([&ks]);
        let after = Arc::strong_count(&ks.tree.active_memtable());
        assert_eq!(after, before + 1, "one reference more, not three");
    }
}
