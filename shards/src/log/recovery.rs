//! Opening a shard's log (BLOCKING, at startup, off the executor): create or open the fjall
//! database, check the on-disk format, scan what the shard needs to rebuild its in-memory state
//! ([`Recovered`]), and start the storage thread.
//!
//! Open deliveries are not read here: they wait in the `pending` keyspace (the backlog) and the
//! shard reads them as its queues drain, so a restart with millions waiting costs a count, not
//! memory. Idempotency keys stay in the `dedup` keyspace too: recovery reads back only the newest
//! [`DEDUP_CACHE_KEYS`] notifications within the dedup window (ids are time-ordered, so they are
//! the last keys of `notifications`) to warm the shard's cache, however long the window. A record that does not decode is moved
//! to quarantine with its raw bytes and reported (`log/quarantine.rs`), and recovery goes on:
//! skipping it silently could drop an accepted notification unseen, and refusing to start
//! would stop every other notification of the shard.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use fjall::config::{CompressionPolicy, FilterPolicy, PartitioningPolicy};
use fjall::{CompressionType, Database, KeyspaceCreateOptions, PersistMode};
use uuid::Uuid;

use super::META_DEDUP_SECRET;
use super::claims::{entry_key, entry_value};
use super::fold::{CorruptEntry, fold};
use super::journal;
use super::quarantine::{DurableMoves, QUARANTINE_KEYSPACE};
use super::reaper::MemtableReaper;
use super::scanner::{ScanSource, Scanner};
use super::storage::{Handles, Storage};
use super::{
    Counters, FJALL_WORKER_THREADS, Keyspace, LOG_FORMAT_VERSION, LOG_QUEUE_CAPACITY, LogConfig,
    META_FORMAT, META_WATERMARK, SWEEP_CHUNK_RECORDS, ShardLog,
};
use crate::dedup::{DEDUP_CACHE_KEYS, DEDUP_SECRET_LEN, DedupCache, DedupHasher};
use crate::error::Error;
use crate::ids::uuid_floor_for_ms;
use crate::pending::PendingKey;
use crate::record::{Channel, UserRecord};

/// What a shard rebuilds its memory from after a restart.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recovered {
    /// Every stored user.
    pub users: Vec<UserRecord>,
    /// `(user_id, idempotency_key, id, accepted_at_ms)` of the newest notifications accepted
    /// within `dedup_window_ms` of now (at most [`DEDUP_CACHE_KEYS`]), in id order: they warm
    /// the shard's [`DedupCache`].
    pub recent: Vec<(String, String, Uuid, u64)>,
    /// Whether `recent` holds every notification accepted within the window; when not, the
    /// cache must not prove keys accepted up to `recent[0]` absent.
    pub recent_complete: bool,
    /// The log's dedup hash (keyed by its secret).
    pub dedup: DedupHasher,
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
        _ => super::journal::describe_key(key),
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
        .cache_size(BLOCK_CACHE_BYTES)
        .open()?;
    let handles = Handles {
        users: db.keyspace(Keyspace::Users.name(), KeyspaceCreateOptions::default)?,
        notifications: db.keyspace(Keyspace::Notifications.name(), || {
            notifications_options(config.shard)
        })?,
        meta: db.keyspace(Keyspace::Meta.name(), KeyspaceCreateOptions::default)?,
        pending: db.keyspace(Keyspace::Pending.name(), pending_options)?,
        dedup: db.keyspace(Keyspace::Dedup.name(), dedup_options)?,
        dead: db.keyspace(Keyspace::Dead.name(), KeyspaceCreateOptions::default)?,
        quarantine: db.keyspace(QUARANTINE_KEYSPACE, KeyspaceCreateOptions::default)?,
    };
    let found = check_format(&handles)?;
    let dedup = upgrade(&db, &handles, found, config.dedup_window_ms, now_ms)?;
    let mut moves = DurableMoves::new(&db, config.shard, now_ms);
    let mut recovered = recover(&db, &handles, &mut moves, config.dedup_window_ms, now_ms)?;
    recovered.dedup = dedup.clone();
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
    let scanner = Scanner::start(
        config.shard,
        ScanSource {
            pending: handles.pending.clone(),
            notifications: handles.notifications.clone(),
        },
    )?;
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
        dedup_window_ms: config.dedup_window_ms,
        dedup,
        reaper: MemtableReaper::start(config.shard, &config.dir)?,
        sweep_from: None,
        sweep_cap: super::SWEEP_MAX_NOTIFICATIONS,
        scanner,
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
/// - Filters are partitioned below the first level: a table writer then builds its filter a
///   4 KiB partition at a time instead of holding 8 bytes per key of its whole output (64 MiB
///   tables, over a million keys) until the table is done. Four compactions at once (two
///   workers per shard) held tens of MiB that way while a 5-million backlog drained.
pub(super) fn notifications_options(shard: u16) -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default()
        .data_block_compression_policy(CompressionPolicy::all(CompressionType::Lz4))
        .max_memtable_size(memtable_bytes(shard))
        .filter_block_partitioning_policy(filters_partitioned_below_l0())
}

/// Whole filters in L0 (small tables, pinned by fjall), partitioned filters in every level
/// below: a table writer then builds its filter a 4 KiB partition at a time, and a point read
/// loads one partition through the block cache (the partitions' index stays pinned) instead of
/// the table's whole filter.
pub(super) fn filters_partitioned_below_l0() -> PartitioningPolicy {
    PartitioningPolicy::new([false, true])
}

/// Options of a new `pending` keyspace: a small memtable ([`PENDING_MEMTABLE_BYTES`]), and no
/// filters: the backlog is only ever read by range scans, which a filter cannot help, and
/// building one costs a compaction 8 bytes of memory per key of its output table.
pub(super) fn pending_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default()
        .max_memtable_size(PENDING_MEMTABLE_BYTES)
        .filter_policy(FilterPolicy::disabled())
}

/// Options of a new `dedup` keyspace:
/// - a smaller memtable than fjall's default, because its entries are small (40 bytes of key
///   and value) and every byte of memtable is resident memory; a flush every ~50,000 keys keeps
///   the tables small and the point reads of claims cheap;
/// - filters partitioned below L0. A claim the shard's cache cannot prove new reads this
///   keyspace, and with whole-table filters (only L0's are pinned) each such read loaded every
///   L1 table's whole filter (a megabyte or more, each read copied out of the page cache and
///   checksummed) past a block cache the backlog scans keep turning over: 10% of both cores
///   during the drain after a 10-minute outage, whose intake of 2,000/s had long outgrown the
///   cache. A partitioned filter keeps its small top-level index pinned and reads one 4 KiB
///   partition per lookup.
pub(super) fn dedup_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default()
        .max_memtable_size(DEDUP_MEMTABLE_BYTES)
        .filter_block_partitioning_policy(filters_partitioned_below_l0())
}

/// Memtable size of a shard's `dedup` keyspace.
pub const DEDUP_MEMTABLE_BYTES: u64 = 4 << 20;

/// Memtable size of a shard's `pending` keyspace (the backlog's keys, 29 bytes each, most of
/// them deleted again soon after): fjall's default (64 MiB) held a 10-minute outage's 600,000
/// keys per shard without ever flushing, all of it resident. Counted as fjall counts it (key,
/// value and its 40-byte item header); the skiplist's nodes and the keys' own allocations take
/// about as much again and more (a drain's memtables cost about 2.3 bytes of resident memory
/// per byte fjall counts).
pub const PENDING_MEMTABLE_BYTES: u64 = 4 << 20;

/// fjall's block cache per shard (its default is 32 MiB): every byte of it is resident once a
/// drain has read the tables (a heap profile of an outage's drain found 32 MiB of blocks for
/// two shards at 16 MiB each), while the reads that matter (backlog scans of recent keys,
/// claims' point reads) are of recently written tables the OS's page cache still holds, which
/// is not the process's memory: a miss costs a read from that cache and an LZ4 decompression.
pub const BLOCK_CACHE_BYTES: u64 = 4 << 20;

/// Smallest memtable of a shard's `notifications` keyspace. Every memtable is resident memory
/// (and a sealed one waiting for its flush, too): with fjall's default (64 MiB, spread to 96)
/// the memtables alone held about 370 MiB of a 2-shard server through a 10-minute outage, and
/// at 32 MiB (spread to 48) a 2-shard server still peaked at 428 MiB in that outage and 700 MiB
/// draining a 3.9-million backlog. A drain writes an update and a backlog tombstone per sent
/// delivery, so its memtables fill at about 8 MB/s and turn over every few seconds: at 12–20 MiB
/// (8 MiB `pending`) the 5-million backlog's drain swung between 269 and 344 MiB with the
/// memtables, at 6–10 MiB (4 MiB `pending`) between 216 and 304 MiB, at the same drain rate
/// (76,500 and 77,500/s). Smaller memtables cost more, smaller flushes and compactions, which
/// the background threads do beside the executors.
pub const MEMTABLE_BASE_BYTES: u64 = 6 << 20;
/// Shards' memtables are spread over `[BASE, BASE + SPREAD)`.
pub const MEMTABLE_SPREAD_BYTES: u64 = 4 << 20;

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

/// Brings a log of an older format to [`LOG_FORMAT_VERSION`], durably, and marks it so; returns
/// the log's dedup hash (drawing its secret for a new or older log).
///
/// Versions 1 and 2 kept no backlog: their open deliveries are found by scanning the
/// notifications from the watermark (from the start without one), and each non-terminal
/// delivery gets its [`PendingKey`], due when its next attempt was (or when it was accepted).
/// Versions 1 to 3 kept no idempotency keys on disk: the notifications accepted within the dedup
/// window get their entries.
fn upgrade(
    db: &Database,
    h: &Handles,
    found: Option<u8>,
    dedup_window_ms: u64,
    now_ms: u64,
) -> Result<DedupHasher, Error> {
    let stored = match h.meta.get(META_DEDUP_SECRET)? {
        Some(v) => Some(<[u8; DEDUP_SECRET_LEN]>::try_from(&*v).map_err(|_| {
            Error::corrupt(format!(
                "meta/dedup_secret: expected {DEDUP_SECRET_LEN} bytes, found {}",
                v.len()
            ))
        })?),
        None => None,
    };
    if found == Some(LOG_FORMAT_VERSION) {
        let secret = stored.ok_or_else(|| {
            Error::corrupt(format!(
                "meta/dedup_secret: missing in a format {LOG_FORMAT_VERSION} log"
            ))
        })?;
        return Ok(DedupHasher::from_secret(secret));
    }
    let backlog = match found {
        Some(v) if v < 3 => build_backlog(db, h)?,
        _ => 0,
    };
    // The secret is durable before any entry is written with it.
    let secret = match stored {
        Some(s) => s,
        None => {
            let s = DedupHasher::new_secret()?;
            let mut batch = db.batch().durability(Some(PersistMode::SyncData));
            batch.insert(&h.meta, META_DEDUP_SECRET, s);
            batch.commit()?;
            s
        }
    };
    let hasher = DedupHasher::from_secret(secret);
    let keys = match found {
        Some(v) if v < 4 => build_dedup_entries(db, h, &hasher, dedup_window_ms, now_ms)?,
        _ => 0,
    };
    let dead = match found {
        Some(v) if v < 5 => build_dead_letters(db, h)?,
        _ => 0,
    };
    let mut batch = db.batch().durability(Some(PersistMode::SyncData));
    batch.insert(&h.meta, META_FORMAT, [LOG_FORMAT_VERSION]);
    batch.remove(&h.meta, META_WATERMARK);
    batch.commit()?;
    if let Some(v) = found {
        tracing::info!(
            from = v,
            to = LOG_FORMAT_VERSION,
            backlog,
            dedup_keys = keys,
            dead_letters = dead,
            "log format upgraded in place: open deliveries moved into the backlog, idempotency keys of the window onto disk, dead deliveries kept as dead letters"
        );
    }
    Ok(hasher)
}

/// A version 1 or 2 log's backlog, built from its open notifications (from its watermark).
fn build_backlog(db: &Database, h: &Handles) -> Result<u64, Error> {
    let start = match h.meta.get(META_WATERMARK)? {
        Some(v) => <[u8; 16]>::try_from(&*v).map_err(|_| {
            Error::corrupt(format!(
                "meta/watermark: expected 16 bytes, found {}",
                v.len()
            ))
        })?,
        None => [0u8; 16],
    };
    write_for_each_notification(db, h, start, |n, out| {
        for key in PendingKey::for_open_deliveries(n) {
            out.push((&h.pending, key.encode().to_vec(), Vec::new()));
        }
    })
}

/// A version 1 to 3 log's `dedup` entries: one per notification accepted within the window.
fn build_dedup_entries(
    db: &Database,
    h: &Handles,
    hasher: &DedupHasher,
    dedup_window_ms: u64,
    now_ms: u64,
) -> Result<u64, Error> {
    let floor = uuid_floor_for_ms(now_ms.saturating_sub(dedup_window_ms));
    write_for_each_notification(db, h, floor, |n, out| {
        if DedupCache::is_live(dedup_window_ms, n.accepted_at_ms, now_ms) {
            let key = entry_key(hasher.key(&n.user_id, &n.idempotency_key));
            let value = entry_value(n.id, n.accepted_at_ms);
            out.push((&h.dedup, key.to_vec(), value.to_vec()));
        }
    })
}

/// A log before format 5 kept no dead letters: every dead delivery it still holds gets one,
/// dead when its `dead` event says (all of them died of exhausted retries: giving up on a
/// configuration fault came with format 5).
fn build_dead_letters(db: &Database, h: &Handles) -> Result<u64, Error> {
    use crate::dead::{DeadKey, DeadLetter, DeadReason, id_key};
    use crate::record::DeliveryState;
    let entries = write_for_each_notification(db, h, [0u8; 16], |n, out| {
        for (index, d) in (0u16..).zip(&n.deliveries) {
            if d.state != DeliveryState::Dead {
                continue;
            }
            let event = d
                .history
                .iter()
                .rev()
                .find(|e| e.state == DeliveryState::Dead);
            let key = DeadKey {
                dead_at_ms: event.map_or(n.accepted_at_ms, |e| e.at_ms),
                notification: n.id,
                index,
            };
            let letter = DeadLetter::of(&n.user_id, d, DeadReason::RetriesExhausted);
            out.push((&h.dead, key.encode().to_vec(), letter.encode()));
            out.push((&h.dead, id_key(d.id).to_vec(), key.body().to_vec()));
        }
    })?;
    // Two entries per letter.
    Ok(entries / 2)
}

/// An upgrade step: folds every notification from `start` on and writes the entries `make`
/// gives for each, in batches of [`SWEEP_CHUNK_RECORDS`]; returns how many. What does not
/// decode is skipped here (the recovery scan or the retention sweep quarantines it).
fn write_for_each_notification<'h>(
    db: &Database,
    h: &'h Handles,
    start: [u8; 16],
    mut make: impl FnMut(
        &crate::record::NotificationRecord,
        &mut Vec<(&'h fjall::Keyspace, Vec<u8>, Vec<u8>)>,
    ),
) -> Result<u64, Error> {
    let entries = h
        .notifications
        .range::<&[u8], _>(&start[..]..)
        .map(|guard| guard.into_inner().map_err(Error::from));
    let mut added = 0u64;
    let mut batch = db.batch();
    let mut in_batch = 0usize;
    let mut out = Vec::new();
    for stored in fold(entries) {
        let Some(n) = stored?.record else { continue };
        make(&n, &mut out);
        for (ks, key, value) in out.drain(..) {
            batch.insert(ks, key, value);
            added += 1;
            in_batch += 1;
        }
        if in_batch >= SWEEP_CHUNK_RECORDS {
            std::mem::replace(&mut batch, db.batch()).commit()?;
            in_batch = 0;
        }
    }
    batch.commit()?;
    Ok(added)
}

/// Where recovery's read of the newest notifications starts: the dedup window's floor, or
/// later when more than [`DEDUP_CACHE_KEYS`] notifications were accepted within the window
/// (then `false`: not every key of the window is read back).
fn recent_floor(h: &Handles, window_floor: [u8; 16]) -> Result<([u8; 16], bool), Error> {
    let mut seen = 0usize;
    for guard in h.notifications.range::<&[u8], _>(&window_floor[..]..).rev() {
        let key = guard.key()?;
        // Delivery updates (18-byte keys) sit behind their notification.
        if let Ok(id) = <[u8; 16]>::try_from(&*key) {
            seen += 1;
            if seen >= DEDUP_CACHE_KEYS {
                return Ok((id, false));
            }
        }
    }
    Ok((window_floor, true))
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

    let window_floor = uuid_floor_for_ms(now_ms.saturating_sub(dedup_window_ms));
    let (from, recent_complete) = recent_floor(h, window_floor)?;
    let mut recent = Vec::new();
    let mut reopened = db.batch().durability(Some(PersistMode::SyncData));
    let entries = h
        .notifications
        .range::<&[u8], _>(&from[..]..)
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
        if DedupCache::is_live(dedup_window_ms, n.accepted_at_ms, now_ms) {
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
        recent_complete,
        dedup: DedupHasher::default(),
        backlog,
    })
}
