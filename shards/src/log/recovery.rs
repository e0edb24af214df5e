//! Opening a shard's log (BLOCKING, at startup, off the executor): create or open the fjall
//! database, check the on-disk format, scan what the shard needs to rebuild its in-memory state
//! ([`Recovered`]), and start the storage thread.
//!
//! Open deliveries are not read here: they wait in the `pending` keyspace (the backlog) and the
//! shard reads them as its queues drain, so a restart with millions waiting costs a count, not
//! memory. Ids are time-ordered, so the dedup window's keys are read from
//! `uuid_floor_for_ms(now - dedup_window)` to the end. A record that does not decode is moved
//! to quarantine with its raw bytes and reported (`log/quarantine.rs`), and recovery goes on:
//! skipping it silently could drop an accepted notification unseen, and refusing to start
//! would stop every other notification of the shard.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use fjall::config::CompressionPolicy;
use fjall::{CompressionType, Database, KeyspaceCreateOptions, PersistMode};
use uuid::Uuid;

use super::fold::{CorruptEntry, fold};
use super::journal;
use super::quarantine::{DurableMoves, QUARANTINE_KEYSPACE};
use super::reaper::MemtableReaper;
use super::storage::{Handles, Storage};
use super::{
    Counters, FJALL_WORKER_THREADS, Keyspace, LOG_FORMAT_VERSION, LOG_QUEUE_CAPACITY, LogConfig,
    META_FORMAT, META_WATERMARK, SWEEP_CHUNK_RECORDS, ShardLog,
};
use crate::error::Error;
use crate::ids::uuid_floor_for_ms;
use crate::pending::PendingKey;
use crate::record::{Channel, UserRecord};

/// What a shard rebuilds its memory from after a restart.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recovered {
    /// Every stored user.
    pub users: Vec<UserRecord>,
    /// `(user_id, idempotency_key, id, accepted_at_ms)` of every notification accepted within
    /// `dedup_window_ms` of now, in id order: re-insert them into the dedup set.
    pub recent: Vec<(String, String, Uuid, u64)>,
    /// Deliveries waiting in each channel's backlog (indexed by [`Channel::index`]): they are
    /// read from the log as the channel's queue drains (at-least-once: deliveries that were in
    /// flight at a crash are sent again).
    pub backlog: Vec<u64>,
}

/// Names the record an error is about: `keyspace/key` (ids as UUIDs, user ids as text).
pub(super) fn name_key(ks: Keyspace, key: &[u8], e: Error) -> Error {
    let key = match (ks, <[u8; 16]>::try_from(key.get(..16).unwrap_or(key))) {
        (Keyspace::Notifications, Ok(b)) if key.len() == 18 => format!(
            "{}/delivery-{}",
            Uuid::from_bytes(b),
            u16::from_be_bytes([key[16], key[17]])
        ),
        (Keyspace::Notifications, Ok(b)) if key.len() == 16 => Uuid::from_bytes(b).to_string(),
        _ => String::from_utf8_lossy(key).into_owned(),
    };
    match e {
        Error::Corrupt { what } => Error::corrupt(format!("{}/{key}: {what}", ks.name())),
        other => other,
    }
}

/// BLOCKING: opens (creating if needed) the shard's log in `config.dir`, checks its format,
/// recovers, and starts the storage thread `clarion-log-NN`.
pub fn open(config: LogConfig, now_ms: u64) -> Result<(ShardLog, Recovered), Error> {
    open_with_capacity(config, now_ms, LOG_QUEUE_CAPACITY)
}

/// [`open`] with a custom queue bound (tests use tiny ones).
pub(crate) fn open_with_capacity(
    config: LogConfig,
    now_ms: u64,
    capacity: usize,
) -> Result<(ShardLog, Recovered), Error> {
    std::fs::create_dir_all(&config.dir)?;
    journal::repair_journals(
        &config.dir,
        &journal::quarantine_dir(&config.dir),
        config.shard,
    )?;
    let db = Database::builder(&config.dir)
        .worker_threads(FJALL_WORKER_THREADS)
        .open()?;
    let handles = Handles {
        users: db.keyspace(Keyspace::Users.name(), KeyspaceCreateOptions::default)?,
        notifications: db.keyspace(Keyspace::Notifications.name(), || {
            notifications_options(config.shard)
        })?,
        meta: db.keyspace(Keyspace::Meta.name(), KeyspaceCreateOptions::default)?,
        pending: db.keyspace(Keyspace::Pending.name(), KeyspaceCreateOptions::default)?,
        quarantine: db.keyspace(QUARANTINE_KEYSPACE, KeyspaceCreateOptions::default)?,
    };
    let found = check_format(&handles)?;
    upgrade(&db, &handles, found)?;
    let mut moves = DurableMoves::new(&db, config.shard, now_ms);
    let recovered = recover(&db, &handles, &mut moves, config.dedup_window_ms, now_ms)?;
    moves.finish()?;
    tracing::info!(
        shard = config.shard,
        users = recovered.users.len(),
        backlog = recovered.backlog.iter().sum::<u64>(),
        recent = recovered.recent.len(),
        "shard log recovered"
    );

    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let counters = Arc::new(Counters::default());
    let held = handles.quarantine.len()? as u64;
    counters.quarantined.store(held, Relaxed);
    let storage = Storage {
        db,
        handles,
        fsync: config.fsync,
        counters: Arc::clone(&counters),
        poisoned: false,
        unsynced: None,
        group_failure: None,
        fail_next_commit: false,
        fail_next_sync: false,
        shard: config.shard,
        reaper: MemtableReaper::start(config.shard, &config.dir)?,
    };
    let thread = std::thread::Builder::new()
        .name(format!("clarion-log-{:02}", config.shard))
        .spawn(move || storage.run(rx))?;
    let log = ShardLog {
        tx,
        counters,
        thread: Some(thread),
        shard: config.shard,
    };
    Ok((log, recovered))
}

/// Options of a new `notifications` keyspace (an existing one keeps those it was created with;
/// fjall stores them).
/// - Data blocks are LZ4-compressed at every level, the first included. Notification records
///   are repetitive JSON-like text, so a memtable flush writes about half the bytes, and the
///   group commit's fsync, which competes with that writeback on the same disk, stalls about
///   half as long. In the load test that halved the accept-latency spike of a flush, for no
///   measurable CPU.
/// - The memtable size differs per shard ([`memtable_bytes`]), so shards under the same load do
///   not rotate and flush at the same moment: the rotation's fsyncs under fjall's journal lock,
///   and the flush's writeback, then meet only one shard's group commits at a time.
pub(super) fn notifications_options(shard: u16) -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default()
        .data_block_compression_policy(CompressionPolicy::all(CompressionType::Lz4))
        .max_memtable_size(memtable_bytes(shard))
}

/// Smallest memtable of a shard's `notifications` keyspace (fjall's default size).
pub const MEMTABLE_BASE_BYTES: u64 = 64 << 20;
/// Shards' memtables are spread over `[BASE, BASE + SPREAD)`.
pub const MEMTABLE_SPREAD_BYTES: u64 = 32 << 20;

/// Shard `shard`'s memtable size: the base plus a share of the spread taken from the golden
/// ratio's sequence (0, 0.618, 0.236, 0.854, ...). Consecutive shards get well-separated sizes,
/// and no two have a simple ratio such as 3:2, so their flushes drift apart rather than keep
/// meeting.
pub(super) fn memtable_bytes(shard: u16) -> u64 {
    const GOLDEN_FRACTION: f64 = 0.618_033_988_749_895;
    let share = (f64::from(shard) * GOLDEN_FRACTION).fract();
    MEMTABLE_BASE_BYTES + (share * MEMTABLE_SPREAD_BYTES as f64) as u64
}

/// Checks the log's format: the version it was written with (`None` for a new, empty log).
/// Refuses a log of a newer format, or a non-empty log without one.
fn check_format(h: &Handles) -> Result<Option<u8>, Error> {
    match h.meta.get(META_FORMAT)? {
        Some(v) if v.len() == 1 && v[0] <= LOG_FORMAT_VERSION && v[0] >= 1 => Ok(Some(v[0])),
        Some(v) if v.len() == 1 => Err(Error::UnsupportedFormat {
            found: v[0],
            supported: LOG_FORMAT_VERSION,
        }),
        Some(v) => Err(Error::corrupt(format!(
            "meta/format: expected 1 byte, found {}",
            v.len()
        ))),
        None => {
            if h.users.first_key_value().is_some() || h.notifications.first_key_value().is_some() {
                return Err(Error::corrupt("meta/format: missing in a non-empty log"));
            }
            Ok(None)
        }
    }
}

/// Brings a log of an older format to [`LOG_FORMAT_VERSION`], durably, and marks it so.
///
/// Versions 1 and 2 kept no backlog: their open deliveries are found by scanning the
/// notifications from the watermark (from the start without one), and each non-terminal
/// delivery gets its [`PendingKey`], due when its next attempt was (or when it was accepted).
fn upgrade(db: &Database, h: &Handles, found: Option<u8>) -> Result<(), Error> {
    if found == Some(LOG_FORMAT_VERSION) {
        return Ok(());
    }
    let mut added = 0u64;
    if found.is_some() {
        let start = match h.meta.get(META_WATERMARK)? {
            Some(v) => <[u8; 16]>::try_from(&*v).map_err(|_| {
                Error::corrupt(format!(
                    "meta/watermark: expected 16 bytes, found {}",
                    v.len()
                ))
            })?,
            None => [0u8; 16],
        };
        let entries = h
            .notifications
            .range::<&[u8], _>(&start[..]..)
            .map(|guard| guard.into_inner().map_err(Error::from));
        let mut batch = db.batch();
        let mut in_batch = 0usize;
        for stored in fold(entries) {
            // What does not decode is quarantined by the recovery scan or the retention sweep.
            let Some(n) = stored?.record else { continue };
            for key in PendingKey::for_open_deliveries(&n) {
                batch.insert(&h.pending, key.encode(), []);
                added += 1;
                in_batch += 1;
            }
            if in_batch >= SWEEP_CHUNK_RECORDS {
                std::mem::replace(&mut batch, db.batch()).commit()?;
                in_batch = 0;
            }
        }
        batch.commit()?;
    }
    let mut batch = db.batch().durability(Some(PersistMode::SyncData));
    batch.insert(&h.meta, META_FORMAT, [LOG_FORMAT_VERSION]);
    batch.remove(&h.meta, META_WATERMARK);
    batch.commit()?;
    if let Some(v) = found {
        tracing::info!(
            from = v,
            to = LOG_FORMAT_VERSION,
            backlog = added,
            "log format upgraded in place: open deliveries moved into the backlog"
        );
    }
    Ok(())
}

fn recover(
    db: &Database,
    h: &Handles,
    moves: &mut DurableMoves<'_>,
    dedup_window_ms: u64,
    now_ms: u64,
) -> Result<Recovered, Error> {
    let mut users = Vec::new();
    for guard in h.users.iter() {
        let (key, value) = guard.into_inner()?;
        let user = UserRecord::decode(&value).and_then(|user| {
            if user.user_id.as_bytes() == &*key {
                Ok(user)
            } else {
                let why = format!("stored user_id {:?} differs", user.user_id);
                Err(Error::corrupt(why))
            }
        });
        match user {
            Ok(user) => users.push(user),
            Err(e) => {
                let entry = CorruptEntry {
                    key: key.to_vec(),
                    value: value.to_vec(),
                    why: name_key(Keyspace::Users, &key, e),
                };
                moves.add(h, Keyspace::Users, &entry)?;
            }
        }
    }

    let recent_since_ms = now_ms.saturating_sub(dedup_window_ms);
    let dedup_floor = uuid_floor_for_ms(recent_since_ms);
    let mut recent = Vec::new();
    let mut reopened = db.batch().durability(Some(PersistMode::SyncData));
    let entries = h
        .notifications
        .range::<&[u8], _>(&dedup_floor[..]..)
        .map(|guard| guard.into_inner().map_err(Error::from));
    for stored in fold(entries) {
        let stored = stored?;
        for entry in &stored.corrupt {
            moves.add(h, Keyspace::Notifications, entry)?;
        }
        // Updates whose notification is gone are garbage for the sweep; nothing to recover.
        let Some(n) = stored.record else {
            continue;
        };
        if n.accepted_at_ms >= recent_since_ms {
            recent.push((
                n.user_id.clone(),
                n.idempotency_key.clone(),
                n.id,
                n.accepted_at_ms,
            ));
        }
        // A quarantined delivery update leaves its delivery as it was before: back in the
        // backlog, sent again (at least once) rather than never.
        if !stored.corrupt.is_empty() {
            for key in PendingKey::for_open_deliveries(&n) {
                reopened.insert(&h.pending, key.encode(), []);
            }
        }
    }
    reopened.commit()?;

    let mut backlog = vec![0u64; Channel::COUNT];
    for guard in h.pending.iter() {
        let (key, value) = guard.into_inner()?;
        match PendingKey::decode(&key) {
            Ok(pending) => backlog[pending.channel.index()] += 1,
            Err(e) => {
                let entry = CorruptEntry {
                    key: key.to_vec(),
                    value: value.to_vec(),
                    why: name_key(Keyspace::Pending, &key, e),
                };
                moves.add(h, Keyspace::Pending, &entry)?;
            }
        }
    }
    Ok(Recovered {
        users,
        recent,
        backlog,
    })
}
