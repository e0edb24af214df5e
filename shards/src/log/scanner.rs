//! The shard's backlog reader: a thread of its own that reads pages of a channel's backlog
//! (`scan.rs`) from a snapshot the storage thread takes, so that the group commits do not wait
//! behind a scan.
//!
//! A page is read from the `pending` and `notifications` keyspaces and decodes up to 4,096
//! records; on the storage thread that held every commit behind it (9 to 40 ms a page while a
//! large backlog drained), which showed as the other channels' latency while one channel caught
//! up. Now the storage thread only commits what came before the request, opens a snapshot there
//! (so the page sees exactly the writes queued before it, as before), and hands the page to this
//! thread. The answer still waits for the storage thread's word that the group the request came
//! in is synced (its *gate*): a page never shows the executor a write that a crash could still
//! take back, and a failed group fails the scan, as it did when the storage thread answered.

use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use futures_channel::oneshot;

use super::PendingScan;
use super::scan::scan_pending;
use crate::error::Error;
use crate::pending::PendingKey;
use crate::record::Channel;

/// Scans queued for the reader. The engine has at most one scan in flight per channel and
/// shard, so this is never reached in service; past it a scan is answered `Busy` (the refill
/// asks again later) rather than blocking the storage thread.
const SCANS_QUEUED: usize = 16;

/// One page to read, from the storage thread.
pub(super) struct ScanJob {
    pub(super) snapshot: fjall::Snapshot,
    pub(super) channel: Channel,
    pub(super) after: Option<PendingKey>,
    pub(super) until_due_ms: u64,
    pub(super) limit: usize,
    /// `None` once the request's group is synced, or why the group failed; closed if the
    /// storage thread stopped first.
    pub(super) gate: Receiver<Option<String>>,
    pub(super) done: oneshot::Sender<Result<PendingScan, Error>>,
}

/// The keyspaces a page is read from (handles to the same trees the storage thread writes).
#[derive(Clone)]
pub(super) struct ScanSource {
    pub(super) pending: fjall::Keyspace,
    pub(super) notifications: fjall::Keyspace,
}

/// The reader thread and the way to it; stopping (or dropping) it joins the thread.
pub(super) struct Scanner {
    tx: Option<Sender<ScanJob>>,
    thread: Option<JoinHandle<()>>,
}

impl Scanner {
    pub(super) fn start(shard: u16, source: ScanSource) -> std::io::Result<Scanner> {
        let (tx, rx) = crossbeam_channel::bounded::<ScanJob>(SCANS_QUEUED);
        let thread = std::thread::Builder::new()
            .name(format!("clarion-scan-{shard:02}"))
            .spawn(move || {
                for job in rx {
                    serve(&source, job);
                }
            })?;
        Ok(Scanner {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues a page; the reader answers `done`. A page that cannot be queued is answered here.
    pub(super) fn submit(&self, job: ScanJob) {
        let Some(tx) = &self.tx else {
            let _ = job.done.send(Err(Error::Closed));
            return;
        };
        match tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => {
                let _ = job.done.send(Err(Error::Busy));
            }
            Err(TrySendError::Disconnected(job)) => {
                let _ = job.done.send(Err(Error::Storage(
                    "the backlog reader thread stopped".into(),
                )));
            }
        }
    }

    /// Lets the queued pages finish and joins the thread.
    pub(super) fn stop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Scanner {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(source: &ScanSource, job: ScanJob) {
    let ScanJob {
        snapshot,
        channel,
        after,
        until_due_ms,
        limit,
        gate,
        done,
    } = job;
    let page = scan_pending(source, &snapshot, channel, after, until_due_ms, limit);
    // Old versions stay readable while a snapshot lives: let go before waiting.
    drop(snapshot);
    let answer = match gate.recv() {
        Ok(None) => page,
        Ok(Some(failure)) => Err(Error::Storage(failure)),
        Err(_) => Err(Error::Closed),
    };
    let _ = done.send(answer);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use futures_lite::future::block_on;

    use super::*;

    fn job(
        db: &fjall::Database,
    ) -> (
        ScanJob,
        Sender<Option<String>>,
        oneshot::Receiver<Result<PendingScan, Error>>,
    ) {
        let (gate_tx, gate) = crossbeam_channel::bounded(1);
        let (done, answer) = oneshot::channel();
        let job = ScanJob {
            snapshot: db.snapshot(),
            channel: Channel::Apns,
            after: None,
            until_due_ms: u64::MAX,
            limit: 16,
            gate,
            done,
        };
        (job, gate_tx, answer)
    }

    #[test]
    fn a_page_is_answered_only_once_its_group_is_synced_and_fails_with_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let opts = fjall::KeyspaceCreateOptions::default;
        let source = ScanSource {
            pending: db.keyspace("pending", opts).unwrap(),
            notifications: db.keyspace("notifications", opts).unwrap(),
        };
        let mut scanner = Scanner::start(0, source).unwrap();

        let (j, gate, mut answer) = job(&db);
        scanner.submit(j);
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            answer.try_recv().unwrap().is_none(),
            "read, but not answered before the group is synced"
        );
        gate.send(None).unwrap();
        let page = block_on(answer).unwrap().unwrap();
        assert!(page.items.is_empty() && page.complete);

        let (j, gate, answer) = job(&db);
        scanner.submit(j);
        gate.send(Some("fsync: EIO".into())).unwrap();
        assert!(
            matches!(block_on(answer).unwrap(), Err(Error::Storage(why)) if why == "fsync: EIO"),
            "the group's failure is the page's"
        );

        let (j, gate, answer) = job(&db);
        scanner.submit(j);
        drop(gate);
        assert!(
            matches!(block_on(answer).unwrap(), Err(Error::Closed)),
            "the storage thread gone before the group was synced"
        );

        scanner.stop();
        let (j, _gate, answer) = job(&db);
        scanner.submit(j);
        assert!(matches!(block_on(answer).unwrap(), Err(Error::Closed)));
    }
}
