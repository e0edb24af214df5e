//! A page of a channel's backlog, read by the backlog reader (`scanner.rs`) from a snapshot the
//! storage thread took: the `pending` keys in due order, then their notifications in one forward
//! pass over the `notifications` keyspace.
//!
//! A backlog an outage builds holds notifications accepted one after another, so the ids a page
//! needs sit close together in key order. Reading each with its own prefix iterator (the way
//! `Storage::read_notification` reads one) builds and seeks a fresh iterator over every
//! memtable and table per notification; during the drain of a large backlog that made the
//! refill, not the provider, the limit (the window ran empty at 40,000/s). The page's ids are
//! sorted and read by one range iterator that steps over what lies between them, and seeks
//! again only when the next id is more than [`MAX_STEP`] notifications ahead (a page of
//! retries, whose ids are scattered).

use std::collections::HashMap;
use std::ops::Bound;

use uuid::Uuid;

use fjall::Readable;

use super::Keyspace;
use super::PendingScan;
use super::fold::{Fold, Stored, fold};
use super::recovery::name_key;
use super::scanner::ScanSource;
use super::storage::Handles;
use crate::error::Error;
use crate::pending::PendingKey;
use crate::record::{Channel, NotificationRecord};

/// Notifications the forward pass steps over to reach the next id it needs before it seeks
/// instead: a seek costs about as much as folding a few dozen entries.
const MAX_STEP: usize = 32;

/// Reads up to `limit` of `channel`'s pending deliveries after `after` and due by
/// `until_due_ms` (see [`ShardLog::scan_pending`](super::ShardLog::scan_pending)), each with its
/// notification read once, as `snapshot` sees them.
pub(super) fn scan_pending(
    source: &ScanSource,
    snapshot: &fjall::Snapshot,
    channel: Channel,
    after: Option<PendingKey>,
    until_due_ms: u64,
    limit: usize,
) -> Result<PendingScan, Error> {
    let mut scan = PendingScan::default();
    let keys = pending_keys(
        source,
        snapshot,
        channel,
        after,
        until_due_ms,
        limit,
        &mut scan,
    )?;
    let mut ids: Vec<Uuid> = keys.iter().map(|k| k.notification).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut slots: HashMap<Uuid, Option<usize>> = HashMap::with_capacity(ids.len());
    let mut reader = Reader::at(&source.notifications, snapshot);
    for id in ids {
        let found = match reader.read(id) {
            // One bad record must not stall the channel: report it, skip its keys (the
            // retention sweep quarantines it with its bytes).
            Err(e @ Error::Corrupt { .. }) => {
                tracing::error!(error = %e, "a backlog delivery's notification does not decode; skipped");
                None
            }
            other => other?,
        };
        let slot = found.map(|n| {
            scan.records.push(n);
            scan.records.len() - 1
        });
        slots.insert(id, slot);
    }
    scan.items = keys
        .into_iter()
        .map(|k| {
            let slot = slots.get(&k.notification).copied().flatten();
            (k, slot)
        })
        .collect();
    Ok(scan)
}

/// The page's keys, in due order; sets `complete` and `next_due_ms` on `scan`.
fn pending_keys(
    source: &ScanSource,
    snapshot: &fjall::Snapshot,
    channel: Channel,
    after: Option<PendingKey>,
    until_due_ms: u64,
    limit: usize,
    scan: &mut PendingScan,
) -> Result<Vec<PendingKey>, Error> {
    let start = match after {
        Some(k) => Bound::Excluded(k.encode()),
        None => Bound::Included(PendingKey::channel_start(channel)),
    };
    let end = PendingKey::channel_end(channel);
    let until = PendingKey::due_end(channel, until_due_ms);
    let mut keys = Vec::new();
    for guard in snapshot.range(&source.pending, (start, Bound::Included(end))) {
        let key = guard.key()?;
        let pending = PendingKey::decode(&key).map_err(|e| name_key(Keyspace::Pending, &key, e))?;
        if *key > until[..] {
            scan.complete = true;
            scan.next_due_ms = Some(pending.due_ms);
            return Ok(keys);
        }
        if keys.len() >= limit {
            return Ok(keys);
        }
        keys.push(pending);
    }
    scan.complete = true;
    Ok(keys)
}

type Entries = Box<dyn Iterator<Item = Result<(fjall::Slice, fjall::Slice), Error>>>;

/// Notifications read in ascending id order by one forward pass, seeking when far behind.
pub(super) struct Reader<'a> {
    notifications: &'a fjall::Keyspace,
    /// Read as this snapshot sees the keyspace (`None`: everything written so far).
    snapshot: Option<&'a fjall::Snapshot>,
    pass: Option<Fold<Entries>>,
    /// The notification the pass stands on (read, not yet asked for).
    ahead: Option<Stored>,
}

impl<'a> Reader<'a> {
    /// Reads everything written so far (on the storage thread).
    pub(super) fn new(handles: &'a Handles) -> Self {
        Reader {
            notifications: &handles.notifications,
            snapshot: None,
            pass: None,
            ahead: None,
        }
    }

    /// Reads `notifications` as `snapshot` sees it.
    pub(super) fn at(notifications: &'a fjall::Keyspace, snapshot: &'a fjall::Snapshot) -> Self {
        Reader {
            notifications,
            snapshot: Some(snapshot),
            pass: None,
            ahead: None,
        }
    }

    /// Notification `id` with its updates folded in; ids must come in ascending order.
    pub(super) fn read(&mut self, id: Uuid) -> Result<Option<NotificationRecord>, Error> {
        let mut stepped = 0;
        loop {
            if self.ahead.is_none() {
                let Some(pass) = self.pass.as_mut() else {
                    self.seek(id);
                    continue;
                };
                match pass.next() {
                    Some(stored) => self.ahead = Some(stored?),
                    // The keyspace ends before `id`.
                    None => return Ok(None),
                }
            }
            let Some(at) = self.ahead.as_ref().and_then(Stored::id) else {
                // Entries of no notification id (a key of neither length): step over them.
                self.ahead = None;
                continue;
            };
            if at > id {
                return Ok(None);
            }
            let Some(stored) = self.ahead.take_if(|_| at == id) else {
                stepped += 1;
                self.ahead = None;
                if stepped > MAX_STEP {
                    self.seek(id);
                    stepped = 0;
                }
                continue;
            };
            if let Some(c) = stored.corrupt.into_iter().next() {
                return Err(c.why);
            }
            return Ok(stored.record);
        }
    }

    /// Starts the pass again at `id`.
    fn seek(&mut self, id: Uuid) {
        let from = id.as_bytes().to_vec()..;
        let iter = match self.snapshot {
            Some(snapshot) => snapshot.range(self.notifications, from),
            None => self.notifications.range(from),
        };
        let entries: Entries = Box::new(iter.map(|guard| guard.into_inner().map_err(Error::from)));
        self.pass = Some(fold(entries));
        self.ahead = None;
    }
}
