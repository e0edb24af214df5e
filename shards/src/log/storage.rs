//! The storage thread: the only code that touches a shard's fjall database after open. It blocks
//! for the first request, takes everything else already queued (group commit), writes it as one
//! fjall batch with one fsync, and only then completes the waiters — in arrival order.
//!
//! Reads and sweeps inside a group split the write batch (so they see the writes queued before
//! them), but the group still ends with a single fsync, and *every* reply of the group — reads
//! included — is sent only after it. A backlog page is the one read not done here: the thread
//! opens a snapshot at the request's place and the backlog reader (`scanner.rs`) reads it
//! meanwhile, answering once this thread says the group is synced. A failed commit or fsync
//! fails the whole group and poisons the log.
//!
//! Every commit reaches the OS before it returns: fjall's `Database::batch` commits with
//! `PersistMode::Buffer` (its `manual_journal_persist` is left off), so a process crash loses
//! nothing committed, fsync or not; only an OS crash or power loss can lose what is not yet
//! fsynced. Lazy writes are fsynced at most [`LAZY_SYNC_INTERVAL`] after the first of them.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use crossbeam_channel::Receiver;

use super::LAZY_SYNC_INTERVAL;
use fjall::{Database, OwnedWriteBatch, PersistMode};
use futures_channel::oneshot;

use super::claims::{Committed, Referee, decode_entry, entry_key};
use super::fold::fold;
use super::quarantine::Quarantine;
use super::reaper::MemtableReaper;
use super::scanner::{ScanJob, Scanner};
use super::{Counters, GROUP_COMMIT_MAX_RECORDS, Keyspace, Request, SWEEP_CHUNK_RECORDS};
use crate::dedup::DedupHasher;
use crate::error::Error;
use crate::record::NotificationRecord;

/// A write into fjall (not its fsync) this slow is reported with the state of fjall's trees: a
/// healthy write takes well under a millisecond, and fjall's own write stalls sleep 100 ms.
const SLOW_WRITE_MICROS: u64 = 50_000;

/// The fjall handles, one per [`Keyspace`].
pub(super) struct Handles {
    pub(super) users: fjall::Keyspace,
    pub(super) notifications: fjall::Keyspace,
    pub(super) meta: fjall::Keyspace,
    pub(super) pending: fjall::Keyspace,
    pub(super) dedup: fjall::Keyspace,
    pub(super) dead: fjall::Keyspace,
    /// Entries that did not decode, moved out of the others (`log/quarantine.rs`).
    pub(super) quarantine: fjall::Keyspace,
}

impl Handles {
    pub(super) fn get(&self, ks: Keyspace) -> &fjall::Keyspace {
        match ks {
            Keyspace::Users => &self.users,
            Keyspace::Notifications => &self.notifications,
            Keyspace::Meta => &self.meta,
            Keyspace::Pending => &self.pending,
            Keyspace::Dedup => &self.dedup,
            Keyspace::Dead => &self.dead,
        }
    }

    /// The handle of every keyspace a commit can write, with its name.
    pub(super) fn written(&self) -> [(&'static str, &fjall::Keyspace); Keyspace::ALL.len()] {
        Keyspace::ALL.map(|ks| (ks.name(), self.get(ks)))
    }
}

/// A reply held back until the group's fsync.
enum Held {
    Write(Option<oneshot::Sender<Result<Committed, Error>>>, Committed),
    Rejected(Option<oneshot::Sender<Result<Committed, Error>>>),
    Get(
        oneshot::Sender<Result<Option<Vec<u8>>, Error>>,
        Result<Option<Vec<u8>>, Error>,
    ),
    GetNotification(
        oneshot::Sender<Result<Option<NotificationRecord>, Error>>,
        Result<Option<NotificationRecord>, Error>,
    ),
    Sweep(oneshot::Sender<Result<u64, Error>>, Result<u64, Error>),
    ScanDead(
        oneshot::Sender<Result<super::DeadScan, Error>>,
        Result<super::DeadScan, Error>,
    ),
    /// A backlog page the reader thread is reading: it answers once this says the group is
    /// synced (`None`) or failed.
    ScanGate(crossbeam_channel::Sender<Option<String>>),
    Shutdown(oneshot::Sender<Result<(), Error>>),
}

/// Writes of the current group not yet handed to fjall.
#[derive(Default)]
struct Segment {
    batch: Option<OwnedWriteBatch>,
    batches: u64,
    records: u64,
    bytes: u64,
}

pub(super) struct Storage {
    pub(super) db: Database,
    pub(super) handles: Handles,
    pub(super) fsync: bool,
    pub(super) counters: Arc<Counters>,
    pub(super) poisoned: bool,
    /// When the first commit since the last fsync was made (`None`: nothing unsynced).
    pub(super) unsynced: Option<Instant>,
    /// Set when a commit of the current group failed; every reply of the group gets it.
    pub(super) group_failure: Option<String>,
    pub(super) fail_next_commit: bool,
    pub(super) fail_next_sync: bool,
    /// The shard number, for reports.
    pub(super) shard: u16,
    /// How long idempotency keys live (claims within it lose).
    pub(super) dedup_window_ms: u64,
    /// The dedup keys' hash, to find a swept notification's entry.
    pub(super) dedup: DedupHasher,
    /// Frees flushed memtables on its own thread (see `log/reaper.rs`).
    pub(super) reaper: MemtableReaper,
    /// Where the next sweep goes on from (`None`: the start).
    pub(super) sweep_from: Option<Vec<u8>>,
    /// Most notifications one sweep looks at.
    pub(super) sweep_cap: usize,
    /// Reads backlog pages off this thread (`log/scanner.rs`).
    pub(super) scanner: Scanner,
}

impl Storage {
    /// Serves requests until shutdown or until every [`ShardLog`](super::ShardLog) is dropped.
    pub(super) fn run(mut self, rx: Receiver<Request>) {
        loop {
            // Lazy writes left unsynced are made durable within LAZY_SYNC_INTERVAL of the first
            // of them, however many requests arrive meanwhile.
            let first = if let Some(since) = self.unsynced.filter(|_| self.fsync) {
                let deadline = since + LAZY_SYNC_INTERVAL;
                if Instant::now() >= deadline {
                    self.sync();
                    continue;
                }
                match rx.recv_deadline(deadline) {
                    Ok(r) => r,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                        self.sync();
                        continue;
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                }
            };
            let mut group = vec![first];
            let mut records = group[0].records();
            while records < GROUP_COMMIT_MAX_RECORDS {
                match rx.try_recv() {
                    Ok(r) => {
                        records += r.records();
                        group.push(r);
                    }
                    Err(_) => break,
                }
            }
            if self.process(group) {
                break;
            }
        }
        // A bounded crossbeam channel keeps what is queued while any sender lives, so a request
        // that arrived after the last one taken would never be answered: say the thread is gone
        // (senders check after sending, `ShardLog::send`), then drop whatever is queued, which
        // fails each one's reply with Closed.
        self.counters
            .stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        while rx.try_recv().is_ok() {}
    }

    /// Handles one group; returns `true` when it contained a shutdown.
    fn process(&mut self, group: Vec<Request>) -> bool {
        self.counters.groups.fetch_add(1, Relaxed);
        self.group_failure = None;
        let mut segment = Segment::default();
        let mut held = Vec::with_capacity(group.len());
        let mut group_records = 0;
        let mut stop = false;
        // Only a group with someone waiting for durability pays for an fsync now; lazy writes
        // alone are committed to the journal and synced later (by the next such group or by
        // the LAZY_SYNC_INTERVAL timer).
        let needs_sync = group.iter().any(Request::wants_durability);
        let mut referee = Referee::new(self.dedup_window_ms);
        for request in group {
            match request {
                Request::Write { batch, done } => {
                    if self.poisoned {
                        held.push(Held::Rejected(done));
                        continue;
                    }
                    let mut committed = Committed::default();
                    if !batch.is_empty() {
                        let (records, bytes) = (batch.len() as u64, batch.bytes() as u64);
                        if let Err(e) =
                            self.apply(&batch, &mut segment, &mut referee, &mut committed)
                        {
                            self.poison("dedup read", e);
                        }
                        segment.batches += 1;
                        segment.records += records;
                        segment.bytes += bytes;
                        group_records += records;
                    }
                    committed.sort();
                    held.push(Held::Write(done, committed));
                }
                Request::Get { ks, key, done } => {
                    self.commit(&mut segment);
                    let value = self
                        .handles
                        .get(ks)
                        .get(&key)
                        .map(|v| v.map(|v| v.to_vec()))
                        .map_err(Error::from);
                    held.push(Held::Get(done, value));
                }
                Request::GetNotification { id, done } => {
                    self.commit(&mut segment);
                    let record = self.read_notification(id);
                    held.push(Held::GetNotification(done, record));
                }
                Request::Sweep { before, done } => {
                    self.commit(&mut segment);
                    let swept = self.sweep(&before);
                    held.push(Held::Sweep(done, swept));
                }
                Request::ScanPending {
                    channel,
                    after,
                    until_due_ms,
                    limit,
                    done,
                } => {
                    // The page sees what was queued before it: commit that, then read from a
                    // snapshot on the reader thread while this thread goes on committing.
                    self.commit(&mut segment);
                    let (gate_tx, gate) = crossbeam_channel::bounded(1);
                    self.scanner.submit(ScanJob {
                        snapshot: self.db.snapshot(),
                        channel,
                        after,
                        until_due_ms,
                        limit,
                        gate,
                        done,
                    });
                    held.push(Held::ScanGate(gate_tx));
                }
                Request::ScanDead {
                    selection,
                    below,
                    limit,
                    with_records,
                    done,
                } => {
                    self.commit(&mut segment);
                    let scan = super::dead_scan::scan_dead(
                        &self.handles,
                        &selection,
                        below,
                        limit,
                        with_records,
                    );
                    held.push(Held::ScanDead(done, scan));
                }
                Request::Shutdown { done } => {
                    held.push(Held::Shutdown(done));
                    stop = true;
                    // Requests after the shutdown in this group are dropped: they see Closed.
                    break;
                }
                #[cfg(test)]
                Request::FailNextCommit => self.fail_next_commit = true,
                #[cfg(test)]
                Request::FailNextSync => self.fail_next_sync = true,
                #[cfg(test)]
                Request::SetSweepCap(cap) => self.sweep_cap = cap,
            }
        }
        self.counters
            .claims_checked
            .fetch_add(referee.reads, Relaxed);
        self.counters.claims_lost.fetch_add(referee.lost, Relaxed);
        let sync_now = self.fsync && needs_sync;
        self.commit(&mut segment);
        if sync_now && self.unsynced.is_some() {
            self.sync();
        }
        self.counters
            .max_group_records
            .fetch_max(group_records, Relaxed);
        self.reply(held);
        stop
    }

    /// Adds `batch`'s writes to the segment, deciding its dedup claims first: a lost claim's
    /// writes are skipped and reported in `committed`.
    fn apply(
        &self,
        batch: &crate::log::WriteBatch,
        segment: &mut Segment,
        referee: &mut Referee,
        committed: &mut Committed,
    ) -> Result<(), Error> {
        let fb = segment.batch.get_or_insert_with(|| self.db.batch());
        let mut claims = batch.claims.iter().peekable();
        let mut skip = 0..0;
        for (i, op) in batch.ops.iter().enumerate() {
            while let Some(c) = claims.next_if(|c| c.ops.start <= i) {
                if let Some(lost) = referee.decide(&self.handles.dedup, &c.claim)? {
                    skip = c.ops.clone();
                    committed.lost.push(lost);
                }
            }
            if skip.contains(&i) {
                continue;
            }
            let ks = self.handles.get(op.ks);
            match batch.value(op) {
                Some(v) => fb.insert(ks, op.key.as_slice(), v),
                None => fb.remove(ks, op.key.as_slice()),
            }
        }
        Ok(())
    }

    /// Commits the segment, unsynced, unless the group already failed; the group's fsync comes
    /// after its last commit (`process`).
    fn commit(&mut self, segment: &mut Segment) {
        let taken = std::mem::take(segment);
        let Some(batch) = taken.batch else { return };
        if self.poisoned {
            return;
        }
        // The batch is written unsynced and the group fsyncs after its last commit (the same work
        // as fjall's commit with a durability, which syncs under the same journal lock), so the
        // write's time (fjall's locks and write stalls) is measured apart from the fsync's (the
        // disk).
        let started = Instant::now();
        let result = if std::mem::take(&mut self.fail_next_commit) {
            Err(Error::Storage("injected commit failure".into()))
        } else {
            batch.commit().map_err(Error::from)
        };
        match result {
            Ok(()) => {
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.counters.write_latency.record(micros);
                let written = self.handles.written();
                // Every keyspace a commit writes: a `pending` memtable freed under its tree's
                // version lock (tens of thousands of nodes, by a fjall worker at the background
                // threads' lower priority and so often preempted) held a catch-up's writes for
                // 100–230 ms.
                self.reaper.observe(written.map(|(_, ks)| ks));
                let c = &self.counters;
                c.batches.fetch_add(taken.batches, Relaxed);
                c.records.fetch_add(taken.records, Relaxed);
                c.bytes.fetch_add(taken.bytes, Relaxed);
                c.memtable_bytes.store(self.db.write_buffer_size(), Relaxed);
                let sealed: usize = written
                    .iter()
                    .map(|(_, ks)| fjall::AbstractTree::sealed_memtable_count(&ks.tree))
                    .sum();
                c.sealed_memtables.store(sealed as u64, Relaxed);
                if micros >= SLOW_WRITE_MICROS {
                    self.report_slow_write(micros);
                }
                self.unsynced.get_or_insert(started);
            }
            Err(e) => self.poison("write", e),
        }
    }

    /// Says what fjall's trees looked like after a write that took [`SLOW_WRITE_MICROS`] or
    /// more: fjall holds a write back while a keyspace has four memtables waiting for their
    /// flush (100 ms at a time) or 20 or more runs in its first level, and this names which.
    fn report_slow_write(&self, micros: u64) {
        use fjall::AbstractTree as _;
        let trees = self.handles.written().map(|(name, ks)| {
            format!(
                "{name}: {} sealed, {} L0 runs",
                ks.tree.sealed_memtable_count(),
                ks.tree.l0_run_count()
            )
        });
        tracing::warn!(
            shard = self.shard,
            ms = micros / 1000,
            trees = %trees.join("; "),
            "slow write into the log"
        );
    }

    /// fsyncs what earlier unsynced commits of this group wrote.
    fn sync(&mut self) {
        if self.poisoned {
            // Nothing is synced after a failure; the timer must not keep asking.
            self.unsynced = None;
            return;
        }
        let started = Instant::now();
        let result = if std::mem::take(&mut self.fail_next_sync) {
            Err(Error::Storage("injected fsync failure".into()))
        } else {
            self.db.persist(PersistMode::SyncData).map_err(Error::from)
        };
        match result {
            Ok(()) => self.synced(started),
            Err(e) => self.poison("fsync", e),
        }
    }

    fn synced(&mut self, started: Instant) {
        self.unsynced = None;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.counters.last_fsync_micros.store(micros, Relaxed);
        self.counters.fsync_latency.record(micros);
    }

    /// Stops all writing after a failed `step` ("write" or "fsync"): what is on disk can no
    /// longer be trusted to match what was acknowledged until a restart recovers from it.
    fn poison(&mut self, step: &'static str, e: Error) {
        tracing::error!(
            shard = self.shard,
            error = %e,
            "shard log {step} failed; poisoning the log: this shard refuses writes until restarted"
        );
        self.poisoned = true;
        self.counters.poisoned.store(true, Relaxed);
        self.group_failure = Some(e.to_string());
    }

    /// Notification `id` with its delivery updates applied.
    fn read_notification(&self, id: uuid::Uuid) -> Result<Option<NotificationRecord>, Error> {
        let entries = self
            .handles
            .notifications
            .prefix(id.as_bytes())
            .map(|guard| guard.into_inner().map_err(Error::from));
        for stored in fold(entries) {
            let stored = stored?;
            if let Some(c) = stored.corrupt.into_iter().next() {
                return Err(c.why);
            }
            if let Some(n) = stored.record {
                return Ok(Some(n));
            }
        }
        Ok(None)
    }

    /// Deletes finished notifications with keys below `before` (each with its delivery updates,
    /// in the same fjall batch), in chunks, and any updates left without their notification;
    /// moves entries that do not decode into quarantine. Unsynced: a lost deletion is simply
    /// redone by the next sweep (and the group's final fsync covers it).
    ///
    /// One sweep looks at most at [`SWEEP_MAX_NOTIFICATIONS`](super::SWEEP_MAX_NOTIFICATIONS)
    /// (or the test's cap) and the next goes on from there, starting over once it reaches
    /// `before`: the notifications kept (unfinished, or holding a dead letter) are not all read
    /// again on every sweep while the commits wait behind it.
    fn sweep(&mut self, before: &[u8; 16]) -> Result<u64, Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let mut deleted = 0u64;
        let mut segment = Segment::default();
        let mut quarantine = Quarantine::new(self.shard, super::quarantine::wall_clock_ms());
        let from = self
            .sweep_from
            .take()
            .filter(|k| k.as_slice() < &before[..])
            .unwrap_or_default();
        let entries = self
            .handles
            .notifications
            .range::<&[u8], _>(&from[..]..&before[..])
            .map(|guard| guard.into_inner().map_err(Error::from));
        for (examined, stored) in fold(entries).enumerate() {
            let stored = stored?;
            if examined >= self.sweep_cap {
                // The next sweep goes on from this notification.
                self.sweep_from = stored
                    .keys
                    .first()
                    .or(stored.corrupt.first().map(|c| &c.key))
                    .cloned();
                break;
            }
            for c in &stored.corrupt {
                let fb = segment.batch.get_or_insert_with(|| self.db.batch());
                quarantine.stage(fb, &self.handles, Keyspace::Notifications, c);
                segment.records += 2;
                segment.bytes += (2 * c.key.len() + c.value.len()) as u64;
            }
            let dedup_entry = match &stored.record {
                Some(n) if !n.is_finished() => continue,
                Some(n) if self.holds_dead_letter(n)? => continue,
                Some(n) => {
                    deleted += 1;
                    self.dedup_entry_of(n)?
                }
                // Updates left without their notification: garbage.
                None => None,
            };
            // A notification, its updates and its dedup entry always go in the same batch.
            let fb = segment.batch.get_or_insert_with(|| self.db.batch());
            if let Some(key) = dedup_entry {
                segment.records += 1;
                segment.bytes += key.len() as u64;
                fb.remove(&self.handles.dedup, key);
            }
            for key in stored.keys {
                segment.records += 1;
                segment.bytes += key.len() as u64;
                fb.remove(&self.handles.notifications, key);
            }
            if segment.records as usize >= SWEEP_CHUNK_RECORDS {
                self.commit(&mut segment);
            }
        }
        self.commit(&mut segment);
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let quarantined = quarantine.moved();
        quarantine.finish();
        self.counters.quarantined.fetch_add(quarantined, Relaxed);
        self.counters.swept.fetch_add(deleted, Relaxed);
        Ok(deleted)
    }

    /// Whether one of `n`'s dead deliveries still has its dead letter (kept until replayed or
    /// purged, so its notification stays readable).
    fn holds_dead_letter(&self, n: &NotificationRecord) -> Result<bool, Error> {
        for d in n
            .deliveries
            .iter()
            .filter(|d| d.state == crate::record::DeliveryState::Dead)
        {
            if self.handles.dead.get(crate::dead::id_key(d.id))?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The key of `n`'s entry in the `dedup` keyspace if that entry is still `n`'s (a later
    /// notification may have claimed the key once `n`'s window passed: its entry stays).
    fn dedup_entry_of(&self, n: &NotificationRecord) -> Result<Option<[u8; 16]>, Error> {
        let key = entry_key(self.dedup.key(&n.user_id, &n.idempotency_key));
        Ok(match self.handles.dedup.get(key)? {
            Some(v) if decode_entry(&v).is_ok_and(|(id, _)| id == n.id) => Some(key),
            _ => None,
        })
    }

    /// Sends every held reply, in arrival order, now that the group is durable (or failed).
    fn reply(&mut self, held: Vec<Held>) {
        let failure = self.group_failure.take();
        let fail = || failure.clone().map(Error::Storage);
        for h in held {
            // A dropped receiver just means nobody is waiting any more.
            match h {
                Held::Write(Some(done), committed) => {
                    let _ = done.send(fail().map_or(Ok(committed), Err));
                }
                Held::Write(None, _) => {}
                Held::Rejected(done) => {
                    if let Some(done) = done {
                        let _ = done.send(Err(Error::Poisoned));
                    }
                }
                Held::Get(done, value) => {
                    let _ = done.send(fail().map_or(value, Err));
                }
                Held::GetNotification(done, record) => {
                    let _ = done.send(fail().map_or(record, Err));
                }
                Held::Sweep(done, swept) => {
                    let _ = done.send(fail().map_or(swept, Err));
                }
                Held::ScanDead(done, scan) => {
                    let _ = done.send(fail().map_or(scan, Err));
                }
                Held::ScanGate(gate) => {
                    let _ = gate.send(failure.clone());
                }
                Held::Shutdown(done) => {
                    let result = match fail() {
                        Some(e) => Err(e),
                        None if self.poisoned => Err(Error::Poisoned),
                        None => Ok(()),
                    };
                    let _ = done.send(result);
                }
            }
        }
    }
}

impl Request {
    /// Records this request adds to a group (for [`GROUP_COMMIT_MAX_RECORDS`]); at least 1 so a
    /// flood of barriers or reads still ends a group.
    fn records(&self) -> usize {
        match self {
            Request::Write { batch, .. } => batch.len().max(1),
            _ => 1,
        }
    }
}
