//! A shard's durable log: its own fjall database, owned by ONE storage thread that does group
//! commit, and the [`ShardLog`] handle the shard's executor uses to talk to it without blocking.
//!
//! ```text
//!  executor (glommio, never blocks)          storage thread `clarion-log-NN` (may block)
//!  ShardLog::submit ──try_send──▶ [bounded crossbeam queue] ──▶ recv first, try_recv the rest
//!       ▲                                                        one fjall batch, one fsync
//!       └──────── oneshot (foreign waker) ◀────────────────────── complete every waiter
//! ```
//!
//! Keyspaces: `users` (user id → [`UserRecord`](crate::UserRecord)), `notifications` (16 id bytes
//! → [`NotificationRecord`](crate::NotificationRecord) as accepted, and 18-byte `id ++ index`
//! keys → that delivery's latest progress, a delivery update), `pending` (the backlog), `dedup`
//! (idempotency keys: keyed hash → id and accept time, written by claims, `log/claims.rs`),
//! `dead` (dead letters, `dead.rs`),
//! `meta` (`format` → [`LOG_FORMAT_VERSION`], `dedup_secret` → the dedup hash's key),
//! `quarantine` (entries that did not decode, moved aside with their raw bytes:
//! `log/quarantine.rs`). Reads fold the updates in (`log/fold.rs`).
//!
//! Like fjall itself, the log is *poisoned* by the first failed commit or fsync: every later write
//! fails with [`Error::Poisoned`] instead of pretending to succeed.
//!
//! Layout: `log.rs` (handle, config, stats), `log/batch.rs` ([`WriteBatch`]), `log/claims.rs`
//! (dedup claims), `log/background.rs`
//! (fjall's flush and compaction threads at a lower CPU priority), `log/storage.rs`
//! (the thread and group commit), `log/latency.rs` (how long its commits' writes and fsyncs
//! take), `log/recovery.rs` (open, format check, recovery scan), `log/scan.rs` (a page of a
//! channel's backlog with its notifications),
//! `log/fold.rs` (notifications read back with their delivery updates).

mod background;
mod batch;
#[cfg(test)]
mod claim_tests;
pub(crate) mod claims;
mod dead_scan;
#[cfg(test)]
mod dead_tests;
#[cfg(test)]
mod fault_tests;
pub(crate) mod fold;
mod journal;
mod latency;
mod quarantine;
mod reaper;
mod recovery;
mod scan;
#[cfg(test)]
mod scan_tests;
mod scanner;
mod storage;
#[cfg(test)]
mod tests;
mod trash;
mod writeback;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};
use futures_channel::oneshot;

pub use background::lower_background_priority;
pub use batch::WriteBatch;
pub use claims::{Committed, DedupClaim, LostClaim};
pub use dead_scan::{DeadScan, MAX_DEAD_EXAMINED, SCAN_DEAD_MAX};
pub use latency::{LATENCY_BUCKETS_MICROS, LogLatency, LogLatencyView};
pub use recovery::{Recovered, open};
pub use writeback::{TableWriteback, start_table_writeback};

use crate::error::Error;

/// Requests the storage thread may hold queued. Bounds the memory of work waiting for the disk
/// (a few MB per shard at typical batch sizes) while leaving room for ~40 ms of a shard's peak
/// accept rate (100k/s) to queue behind one slow fsync before callers see `Busy`.
pub const LOG_QUEUE_CAPACITY: usize = 4096;

/// Longest a lazy write ([`ShardLog::submit_nowait`]) stays unsynced when no durable write
/// comes along to carry it: short enough that a power loss costs little, long enough that an
/// idle shard is not fsyncing for state changes alone.
pub const LAZY_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Most records folded into one group commit. Bounds the size of one fjall batch and how long
/// the waiters at the front of a group wait for the ones at the back.
pub const GROUP_COMMIT_MAX_RECORDS: usize = 4096;

/// Deletions per fjall batch during a retention sweep, so a large sweep never builds one huge
/// batch in memory.
pub const SWEEP_CHUNK_RECORDS: usize = 1024;

/// Notifications one retention sweep looks at; the next sweep goes on from where it stopped.
/// Bounds how long a sweep holds the storage thread (and the commits queued behind it) to tens
/// of milliseconds, however many old notifications are kept (unfinished backlogs, dead
/// letters); at one sweep a minute it still looks at 94 million notifications a day per shard,
/// many times what a shard accepts in one.
pub const SWEEP_MAX_NOTIFICATIONS: usize = 65_536;

/// fjall background threads (flush, compaction) per shard database. Two, so that a memtable's
/// flush never waits behind a long compaction: with one, a compaction of a large backlog held
/// the flushes back until four sealed memtables were queued, and fjall then halts every write
/// (100 ms sleeps) and holds all five memtables in memory. Both run at the lowest priority
/// (`background.rs`), so they take no time from the executors pinned to the cores.
pub const FJALL_WORKER_THREADS: usize = 2;

/// Background threads per shard log: fjall's workers and the memtable reaper.
pub const BACKGROUND_THREADS_PER_LOG: usize = FJALL_WORKER_THREADS + 1;

/// On-disk layout version stored under `meta/format`. Bump with a migration.
///
/// - 1: users, notifications (one record each, rewritten whole as deliveries settled), meta.
/// - 2: as 1, plus delivery updates in `notifications` under `id ++ index` (see `log/fold.rs`).
/// - 3: as 2, plus the `pending` keyspace (the backlog, see `pending.rs`); `meta/watermark` is
///   no longer written. A version 1 or 2 log gets its backlog built from its open notifications
///   (scanned from its watermark) and is marked 3 when opened.
/// - 4: as 3, plus the `dedup` keyspace (idempotency keys on disk, `log/claims.rs`) and
///   `meta/dedup_secret`. An older log gets a secret and the entries of the notifications
///   accepted within the dedup window when opened.
/// - 5: as 4, plus the `dead` keyspace (dead letters, `dead.rs`), which the retention sweep
///   respects. An older log gets a letter for every dead delivery it still holds when opened;
///   a build of format 4 refuses a format 5 log rather than sweep its dead letters away.
pub const LOG_FORMAT_VERSION: u8 = 5;

/// Most deliveries one backlog scan returns: bounds the reply's memory and how long one scan
/// holds the backlog reader (each delivery's notification is read and folded).
pub const SCAN_PENDING_MAX: usize = 4096;

/// A page of a channel's backlog, in due order, from [`ShardLog::scan_pending`].
#[derive(Debug, Default)]
pub struct PendingScan {
    /// Each pending delivery with the index of its notification in `records`; `None` when the
    /// notification is missing (the key is stale and may be deleted).
    pub items: Vec<(crate::PendingKey, Option<usize>)>,
    /// The notifications the items belong to, each once, as stored (updates folded in).
    pub records: Vec<crate::record::NotificationRecord>,
    /// Whether the scan reached its `until` bound (fewer than `limit` items were due).
    pub complete: bool,
    /// When the first delivery after `until` falls due, if there is one (only when `complete`).
    pub next_due_ms: Option<u64>,
}

/// Where and how a shard's log lives.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// The shard's database directory (`data/shards/NN/`); created if missing.
    pub dir: PathBuf,
    /// The shard number, for the storage thread's name and logs.
    pub shard: u16,
    /// fsync every group commit (`true` in production: durable before acknowledged).
    pub fsync: bool,
    /// How long an idempotency key is remembered (claims within it lose; recovery reads back
    /// at most [`DEDUP_CACHE_KEYS`](crate::DEDUP_CACHE_KEYS) of the newest keys within it).
    pub dedup_window_ms: u64,
}

/// The log's keyspaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Keyspace {
    Users,
    Notifications,
    Meta,
    /// The backlog: one [`PendingKey`](crate::PendingKey) per delivery still to attempt.
    Pending,
    /// Idempotency keys (`log/claims.rs`).
    Dedup,
    /// Dead letters (`dead.rs`).
    Dead,
}

impl Keyspace {
    /// Every keyspace a commit can write.
    pub const ALL: [Keyspace; 6] = [
        Keyspace::Users,
        Keyspace::Notifications,
        Keyspace::Meta,
        Keyspace::Pending,
        Keyspace::Dedup,
        Keyspace::Dead,
    ];

    /// The fjall keyspace name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Keyspace::Users => "users",
            Keyspace::Notifications => "notifications",
            Keyspace::Meta => "meta",
            Keyspace::Pending => "pending",
            Keyspace::Dedup => "dedup",
            Keyspace::Dead => "dead",
        }
    }
}

/// Key in `meta` holding the watermark id.
pub(crate) const META_WATERMARK: &[u8] = b"watermark";
/// Key in `meta` holding [`LOG_FORMAT_VERSION`].
pub(crate) const META_FORMAT: &[u8] = b"format";
/// Key in `meta` holding the dedup hash's secret ([`DedupHasher`](crate::DedupHasher)).
pub(crate) const META_DEDUP_SECRET: &[u8] = b"dedup_secret";

/// The answer to one request, delivered by the storage thread. `Closed` if the thread went away
/// first. Completing it from the storage thread wakes the executor task through its waker.
#[must_use = "a log reply does nothing unless awaited"]
#[derive(Debug)]
pub struct Reply<T> {
    rx: oneshot::Receiver<Result<T, Error>>,
}

/// Resolves once a submitted batch (and everything submitted before it) is durable, with the
/// batch's lost dedup claims.
pub type Durable = Reply<Committed>;

impl<T> Reply<T> {
    fn channel() -> (oneshot::Sender<Result<T, Error>>, Self) {
        let (tx, rx) = oneshot::channel();
        (tx, Reply { rx })
    }

    /// The answer if it has arrived, without waiting.
    pub fn try_now(&mut self) -> Option<Result<T, Error>> {
        match self.rx.try_recv() {
            Ok(Some(r)) => Some(r),
            Ok(None) => None,
            Err(oneshot::Canceled) => Some(Err(Error::Closed)),
        }
    }
}

impl<T> Future for Reply<T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(r)) => Poll::Ready(r),
            Poll::Ready(Err(oneshot::Canceled)) => Poll::Ready(Err(Error::Closed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// What the shard asks of its storage thread.
pub(crate) enum Request {
    /// Apply `batch`; `done` (if any) completes once it is durable. An empty batch is a barrier.
    Write {
        batch: WriteBatch,
        done: Option<oneshot::Sender<Result<Committed, Error>>>,
    },
    Get {
        ks: Keyspace,
        key: Vec<u8>,
        done: oneshot::Sender<Result<Option<Vec<u8>>, Error>>,
    },
    GetNotification {
        id: uuid::Uuid,
        done: oneshot::Sender<Result<Option<crate::record::NotificationRecord>, Error>>,
    },
    Sweep {
        before: [u8; 16],
        done: oneshot::Sender<Result<u64, Error>>,
    },
    ScanDead {
        selection: crate::dead::DeadSelection,
        below: Option<crate::dead::DeadKey>,
        limit: usize,
        with_records: bool,
        done: oneshot::Sender<Result<DeadScan, Error>>,
    },
    ScanPending {
        channel: crate::record::Channel,
        after: Option<crate::PendingKey>,
        until_due_ms: u64,
        limit: usize,
        done: oneshot::Sender<Result<PendingScan, Error>>,
    },
    Shutdown {
        done: oneshot::Sender<Result<(), Error>>,
    },
    /// Test hook: make the next commit fail as a disk error would.
    #[cfg(test)]
    FailNextCommit,
    /// Test hook: make the next fsync fail (after its commit's write succeeded).
    #[cfg(test)]
    FailNextSync,
    /// Test hook: how many notifications one sweep looks at.
    #[cfg(test)]
    SetSweepCap(usize),
}

impl Request {
    /// Whether this request needs its group fsynced before it is answered.
    pub(crate) fn wants_durability(&self) -> bool {
        match self {
            Request::Write { done, .. } => done.is_some(),
            Request::Shutdown { .. } => true,
            _ => false,
        }
    }
}

/// Counters kept by the storage thread, read by anyone. Per shard, so never contended.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) batches: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) groups: AtomicU64,
    pub(crate) max_group_records: AtomicU64,
    pub(crate) last_fsync_micros: AtomicU64,
    pub(crate) write_latency: latency::LatencyHistogram,
    pub(crate) fsync_latency: latency::LatencyHistogram,
    pub(crate) swept: AtomicU64,
    pub(crate) quarantined: AtomicU64,
    pub(crate) claims_checked: AtomicU64,
    pub(crate) claims_lost: AtomicU64,
    /// fjall's memtable bytes (active and sealed, every keyspace) after the latest commit.
    pub(crate) memtable_bytes: AtomicU64,
    /// Sealed memtables waiting for their flush (every keyspace) after the latest commit.
    pub(crate) sealed_memtables: AtomicU64,
    pub(crate) poisoned: AtomicBool,
    /// The storage thread has stopped taking requests (set before it drops what is queued).
    pub(crate) stopped: AtomicBool,
}

/// A snapshot of a shard log's counters (all totals since open).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Non-empty write batches applied.
    pub batches: u64,
    /// Puts and deletes applied.
    pub records: u64,
    /// Key and value bytes written.
    pub bytes: u64,
    /// Group commits (storage-thread wake-ups that found work).
    pub groups: u64,
    /// fjall batch commits (one per group, more when reads or sweeps split a group).
    pub commits: u64,
    /// fsyncs issued.
    pub fsyncs: u64,
    /// Most records written by one group commit.
    pub max_batch_records: u64,
    /// Duration of the latest fsync, in microseconds.
    pub last_fsync_micros: u64,
    /// How long writing the commits' batches into fjall took (no fsync), since open.
    pub write_latency: LogLatency,
    /// How long the group commits' fsyncs took, since open.
    pub fsync_latency: LogLatency,
    /// Notifications deleted by retention sweeps.
    pub swept: u64,
    /// Entries held in quarantine: stored records that did not decode, moved aside with their
    /// raw bytes (at recovery or by a sweep) instead of stopping the shard.
    pub quarantined: u64,
    /// Dedup claims decided by reading the `dedup` keyspace (the shard's cache could not prove
    /// the key new).
    pub claims_checked: u64,
    /// Dedup claims lost: retries of notifications accepted within the window that the shard's
    /// cache no longer held, answered as duplicates from the disk.
    pub claims_lost: u64,
    /// Bytes in fjall's memtables, active and sealed, of every keyspace (as fjall counts them:
    /// keys, values and item headers; the skiplists' nodes take about as much again), after the
    /// latest commit. Resident memory that a drain churns through.
    pub memtable_bytes: u64,
    /// Sealed memtables waiting for their flush, every keyspace, after the latest commit (fjall
    /// halts writes to a keyspace at 4).
    pub sealed_memtables: u64,
    /// Requests waiting in the queue right now.
    pub queued: usize,
    /// The log refused further writes after a failed commit.
    pub poisoned: bool,
}

/// The executor's handle to its shard's log. `Send` (move it into the executor), used from one
/// thread; no call blocks except [`ShardLog::join`].
#[derive(Debug)]
pub struct ShardLog {
    tx: Sender<Request>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
    shard: u16,
}

impl ShardLog {
    fn send(&self, request: Request) -> Result<(), Error> {
        self.tx.try_send(request).map_err(|e| match e {
            TrySendError::Full(_) => Error::Busy,
            TrySendError::Disconnected(_) => Error::Closed,
        })?;
        self.not_stranded()
    }

    /// After a request was queued: `Closed` if the storage thread had already stopped, when the
    /// request may sit in the queue unanswered. The thread sets `stopped` before it drains the
    /// queue, so a request queued before that drain is dropped by it (its reply says Closed),
    /// and one queued after it sees the flag here.
    fn not_stranded(&self) -> Result<(), Error> {
        if self
            .counters
            .stopped
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn write(&self, batch: WriteBatch, wait: bool) -> Result<Option<Durable>, Error> {
        self.write_returning(batch, wait).map_err(|(e, _)| e)
    }

    /// Queues a write; on failure the batch comes back (with `Busy` the caller may retry it).
    fn write_returning(
        &self,
        batch: WriteBatch,
        wait: bool,
    ) -> Result<Option<Durable>, (Error, WriteBatch)> {
        if self.counters.poisoned.load(Relaxed) {
            return Err((Error::Poisoned, batch));
        }
        let (done, reply) = if wait {
            let (done, reply) = Durable::channel();
            (Some(done), Some(reply))
        } else {
            (None, None)
        };
        match self.tx.try_send(Request::Write { batch, done }) {
            Ok(()) => match self.not_stranded() {
                Ok(()) => Ok(reply),
                Err(e) => Err((e, WriteBatch::new())),
            },
            Err(TrySendError::Full(Request::Write { batch, .. })) => Err((Error::Busy, batch)),
            Err(TrySendError::Disconnected(Request::Write { batch, .. })) => {
                Err((Error::Closed, batch))
            }
            Err(_) => Err((Error::Closed, WriteBatch::new())),
        }
    }

    /// Like [`ShardLog::submit`], but a failed hand-off returns the batch, so a caller that
    /// meets a full queue (`Error::Busy`) can retry the same writes later without losing them.
    pub fn submit_returning(&self, batch: WriteBatch) -> Result<Durable, (Error, WriteBatch)> {
        match self.write_returning(batch, true)? {
            Some(d) => Ok(d),
            None => Err((Error::Closed, WriteBatch::new())),
        }
    }

    /// Like [`ShardLog::submit_nowait`], returning the batch when it could not be queued.
    pub fn submit_nowait_returning(&self, batch: WriteBatch) -> Result<(), (Error, WriteBatch)> {
        self.write_returning(batch, false).map(drop)
    }

    /// Queues `batch`; the returned future resolves when it is durable (fsynced when
    /// `LogConfig::fsync`). Batches are applied in submission order. `Error::Busy` when the
    /// queue is full, `Error::Poisoned` after a failed commit.
    pub fn submit(&self, batch: WriteBatch) -> Result<Durable, Error> {
        self.write(batch, true)?.ok_or(Error::Closed)
    }

    /// A lazy write: applied in order with every other request, but nobody waits for it and it
    /// does not force an fsync of its own. It becomes durable with the next durable write (any
    /// [`ShardLog::submit`] or [`ShardLog::barrier`]) or within [`LAZY_SYNC_INTERVAL`],
    /// whichever comes first; a process crash (`kill -9`) never loses it once submitted here,
    /// only a power loss inside that interval can. For state changes whose loss costs at most a
    /// repeated action, never for anything acknowledged to a client.
    pub fn submit_nowait(&self, batch: WriteBatch) -> Result<(), Error> {
        self.write(batch, false).map(drop)
    }

    /// Resolves once everything submitted before it is durable.
    pub fn barrier(&self) -> Result<Durable, Error> {
        self.submit(WriteBatch::new())
    }

    /// Reads one key, in order with the writes submitted before it.
    pub fn get(
        &self,
        ks: Keyspace,
        key: impl Into<Vec<u8>>,
    ) -> Result<Reply<Option<Vec<u8>>>, Error> {
        let (done, reply) = Reply::channel();
        self.send(Request::Get {
            ks,
            key: key.into(),
            done,
        })?;
        Ok(reply)
    }

    /// Reads notification `id` with its delivery updates applied, in order with the writes
    /// submitted before it.
    pub fn get_notification(
        &self,
        id: uuid::Uuid,
    ) -> Result<Reply<Option<crate::record::NotificationRecord>>, Error> {
        let (done, reply) = Reply::channel();
        self.send(Request::GetNotification { id, done })?;
        Ok(reply)
    }

    /// Reads up to `limit` (at most [`SCAN_PENDING_MAX`]) deliveries of `channel`'s backlog
    /// that are due at or before `until_due_ms`, in due order, starting after the key `after`
    /// (from the channel's start when `None`), each with its notification. It sees exactly the
    /// writes submitted before it (read from a snapshot on the backlog reader thread, so later
    /// commits do not wait for it), and is answered once those are synced.
    pub fn scan_pending(
        &self,
        channel: crate::record::Channel,
        after: Option<crate::PendingKey>,
        until_due_ms: u64,
        limit: usize,
    ) -> Result<Reply<PendingScan>, Error> {
        let (done, reply) = Reply::channel();
        self.send(Request::ScanPending {
            channel,
            after,
            until_due_ms,
            limit: limit.min(SCAN_PENDING_MAX),
            done,
        })?;
        Ok(reply)
    }

    /// Reads up to `limit` (at most [`SCAN_DEAD_MAX`]) of the dead letters `selection` picks,
    /// newest first, below the key `below` (from the newest when `None`); with their
    /// notifications when `with_records`. In order with the writes submitted before it.
    pub fn scan_dead(
        &self,
        selection: crate::dead::DeadSelection,
        below: Option<crate::dead::DeadKey>,
        limit: usize,
        with_records: bool,
    ) -> Result<Reply<DeadScan>, Error> {
        let (done, reply) = Reply::channel();
        self.send(Request::ScanDead {
            selection,
            below,
            limit,
            with_records,
            done,
        })?;
        Ok(reply)
    }

    /// Retention: deletes every *finished* notification whose key is below `before` (use
    /// [`uuid_floor_for_ms`](crate::uuid_floor_for_ms)) and resolves to how many were deleted.
    /// Unfinished notifications are never deleted, however old, nor are those with a delivery
    /// whose dead letter is still kept (`dead.rs`).
    pub fn sweep(&self, before: [u8; 16]) -> Result<Reply<u64>, Error> {
        let (done, reply) = Reply::channel();
        self.send(Request::Sweep { before, done })?;
        Ok(reply)
    }

    /// Asks the storage thread to stop once everything submitted before this call is durable;
    /// the reply says whether it all was. Later requests fail with `Error::Closed`. Follow with
    /// [`ShardLog::join`] off the executor.
    pub fn shutdown(&self) -> Result<Reply<()>, Error> {
        let (done, reply) = Reply::channel();
        self.send(Request::Shutdown { done })?;
        Ok(reply)
    }

    /// BLOCKING: stops the storage thread (after everything queued) and waits for it to exit and
    /// close the database. `Err(Poisoned)` if any write failed during the log's life.
    pub fn join(mut self) -> Result<(), Error> {
        let (done, _reply) = Reply::<()>::channel();
        // Blocking send is fine here (off-executor); an error means the thread is already gone.
        let _ = self.tx.send(Request::Shutdown { done });
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                return Err(Error::Storage(format!(
                    "shard {} storage thread panicked",
                    self.shard
                )));
            }
        }
        if self.counters.poisoned.load(Relaxed) {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    /// The shard this log belongs to.
    #[must_use]
    pub fn shard(&self) -> u16 {
        self.shard
    }

    /// A cheap snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> LogStats {
        let c = &self.counters;
        // fsyncs first: each follows its commit's write, so a reader never sees more fsyncs than
        // writes. Each histogram counts every successful commit or fsync, so it gives the totals.
        let fsync_latency = c.fsync_latency.snapshot();
        let write_latency = c.write_latency.snapshot();
        LogStats {
            batches: c.batches.load(Relaxed),
            records: c.records.load(Relaxed),
            bytes: c.bytes.load(Relaxed),
            groups: c.groups.load(Relaxed),
            commits: write_latency.count(),
            fsyncs: fsync_latency.count(),
            max_batch_records: c.max_group_records.load(Relaxed),
            last_fsync_micros: c.last_fsync_micros.load(Relaxed),
            fsync_latency,
            write_latency,
            swept: c.swept.load(Relaxed),
            quarantined: c.quarantined.load(Relaxed),
            claims_checked: c.claims_checked.load(Relaxed),
            claims_lost: c.claims_lost.load(Relaxed),
            memtable_bytes: c.memtable_bytes.load(Relaxed),
            sealed_memtables: c.sealed_memtables.load(Relaxed),
            queued: self.tx.len(),
            poisoned: c.poisoned.load(Relaxed),
        }
    }

    /// Test hook: a handle with no storage thread, whose queue the test drains (or not) itself.
    #[cfg(test)]
    pub(crate) fn detached(capacity: usize) -> (Self, crossbeam_channel::Receiver<Request>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let log = ShardLog {
            tx,
            counters: Arc::default(),
            thread: None,
            shard: 0,
        };
        (log, rx)
    }

    #[cfg(test)]
    pub(crate) fn fail_next_commit(&self) -> Result<(), Error> {
        self.send(Request::FailNextCommit)
    }

    #[cfg(test)]
    pub(crate) fn fail_next_sync(&self) -> Result<(), Error> {
        self.send(Request::FailNextSync)
    }

    #[cfg(test)]
    pub(crate) fn set_sweep_cap(&self, cap: usize) -> Result<(), Error> {
        self.send(Request::SetSweepCap(cap))
    }
}
