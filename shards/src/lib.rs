//! Clarion's per-core shard engine: everything a shard owns and touches from its own core only.
//!
//! A Clarion process runs one glommio executor per core ("shard"). Users are routed to shards by
//! a pure hash ([`shard_for_user`]); each shard keeps its users and frequency caps in memory,
//! and its notifications, their backlog of deliveries still to attempt ([`PendingKey`]) and their
//! idempotency keys (with a bounded cache in memory) in its own fjall database, reached through a dedicated storage thread with
//! group commit ([`ShardLog`]).
//!
//! Nothing here blocks the executor thread that calls it, except the explicitly blocking
//! [`open`] and [`ShardLog::join`], which run at startup and shutdown, off the executor. Nothing
//! on the hot path takes a lock: in-memory structures are single-threaded (`Cell`/`RefCell`,
//! `&mut self`), and the log is reached through a bounded channel.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | `error.rs` | [`Error`], the crate's one error enum, with [`Error::is_retryable`] |
//! | `routing.rs` | [`user_hash`], [`jump_hash`], [`shard_for_user`]: which shard owns a user |
//! | `ids.rs` | [`IdGenerator`]: per-shard, time-ordered UUIDv7 ids carrying the shard number |
//! | `record.rs` | the stored records ([`UserRecord`], [`NotificationRecord`], ...) and their encoding |
//! | `state.rs` | the delivery state machine ([`Verdict`], [`RetryPolicy`], [`Jitter`]) |
//! | `log.rs`, `log/` | [`ShardLog`]: the durable log, its storage thread, group commit, recovery |
//! | `dedup.rs`, `dedup/` | [`DedupHasher`] (the keyed hash of an idempotency key), [`DedupCache`] (a shard's newest keys, in front of the log's `dedup` keyspace) |
//! | `token_bucket.rs` | [`TokenBucket`], [`UserBuckets`]: per-user frequency caps |
//! | `dead.rs` | [`DeadLetter`]: a delivery that failed for good, kept (in the log's `dead` keyspace) until replayed or purged |
//! | `pending.rs` | [`PendingKey`]: a delivery's place in its channel's backlog, in due order |
//! | `process.rs` | process-wide start-up settings (transparent huge pages off) |
//! | `fuzz.rs` | fuzz targets for the record decoders and the log's fold (tests, `fuzz` feature) |
//!
//! # A notification's path through a shard
//!
//! The server's accepting core routes the request; the owning shard dedups it, writes it to its
//! log with its backlog key, answers only once the log says it is durable, then delivers it:
//!
//! ```
//! use clarion_shards::*;
//! # fn main() -> Result<(), Error> {
//! # let tmp = tempfile::tempdir().map_err(Error::Io)?;
//! # let data_dir = tmp.path().join("shards/00");
//! let now_ms = 1_700_000_000_000;
//! let shard = shard_for_user("alice", 4) as u16;
//!
//! // Startup, off the executor: open the shard's log and rebuild memory from it.
//! let config = LogConfig { dir: data_dir, shard, fsync: true, dedup_window_ms: 86_400_000 };
//! let (log, recovered) = open(config, now_ms)?;
//! let mut dedup = DedupCache::new(86_400_000, DEDUP_CACHE_KEYS);
//! for (user, key, id, at) in &recovered.recent {
//!     dedup.insert(recovered.dedup.key(user, key), *id, *at);
//! }
//! let mut ids = IdGenerator::new(shard, now_ms);
//!
//! // Accept: dedup, build the record, make it durable, then answer 202.
//! let key = recovered.dedup.key("alice", "order-42");
//! assert_eq!(dedup.get(key, now_ms), None);
//! assert!(dedup.proves_absent(now_ms)); // a new log: no read of the `dedup` keyspace needed
//! let id = ids.next(now_ms);
//! let delivery = DeliveryRecord::new_queued(ids.next(now_ms), Channel::Apns, "token", now_ms);
//! let mut notification = NotificationRecord {
//!     id,
//!     user_id: "alice".into(),
//!     idempotency_key: "order-42".into(),
//!     accepted_at_ms: now_ms,
//!     content: NotificationContent { title: Some("Shipped".into()), ..Default::default() },
//!     deliveries: vec![delivery],
//! };
//! let pending = PendingKey { channel: Channel::Apns, due_ms: now_ms, notification: id, index: 0 };
//! let mut batch = WriteBatch::new();
//! // Written only if no other notification holds the key (the storage thread decides).
//! let claim = DedupClaim { hash: key, id, at_ms: now_ms, check: false };
//! batch.claimed(claim, |b| {
//!     b.put_notification(&notification).put_pending(&pending);
//! });
//! let durable = log.submit(batch)?;
//! let committed = futures_lite::future::block_on(durable)?; // on the executor: `durable.await?`
//! assert!(committed.lost.is_empty());
//! dedup.insert(key, id, now_ms);
//! // The channel's backlog now holds it, in due order.
//! let due = futures_lite::future::block_on(log.scan_pending(Channel::Apns, None, now_ms, 16)?)?;
//! assert_eq!(due.items[0].0, pending);
//!
//! // Deliver, record the outcome, and persist the new state.
//! let mut jitter = Jitter::new(u64::from(shard));
//! let state = notification.deliveries[0].apply(
//!     Verdict::Sent, now_ms + 40, &RetryPolicy::default(), &mut jitter)?;
//! assert_eq!(state, DeliveryState::Sent);
//! assert!(notification.is_finished());
//! // Only the delivery's progress is logged (a delivery update), never the whole record again.
//! // Its delivery leaves the backlog in the same batch.
//! let mut batch = WriteBatch::new();
//! batch.put_delivery_update(notification.id, 0, &notification.deliveries[0]).delete_pending(&pending);
//! log.submit_nowait(batch)?;
//!
//! // Shutdown, off the executor.
//! log.join()?;
//! # Ok(())
//! # }
//! ```

#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_debug_implementations)]

pub mod chunk_queue;
pub mod dead;
pub mod dedup;
pub mod error;
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
pub mod ids;
pub mod log;
pub mod pending;
pub mod process;
pub mod record;
pub mod routing;
pub mod segmap;
pub mod state;
pub mod token_bucket;

pub use dead::{DeadFilter, DeadKey, DeadLetter, DeadReason, DeadSelection};
pub use dedup::{DEDUP_CACHE_KEYS, DEDUP_SECRET_LEN, DedupCache, DedupHasher};
pub use error::Error;
pub use ids::{IdGenerator, ms_of, shard_of, uuid_floor_for_ms};
pub use log::{
    BACKGROUND_THREADS_PER_LOG, Committed, DeadScan, DedupClaim, Durable, FJALL_WORKER_THREADS,
    GROUP_COMMIT_MAX_RECORDS, Keyspace, LAZY_SYNC_INTERVAL, LOG_FORMAT_VERSION, LOG_QUEUE_CAPACITY,
    LogConfig, LogStats, LostClaim, PendingScan, Recovered, Reply, SCAN_PENDING_MAX,
    SWEEP_CHUNK_RECORDS, ShardLog, TableWriteback, WriteBatch, lower_background_priority, open,
    start_table_writeback,
};
pub use pending::PendingKey;
pub use record::{
    Channel, DeliveryEvent, DeliveryRecord, DeliveryState, DeviceRecord, JsonObject,
    JsonObjectError, MAX_DELIVERIES_PER_NOTIFICATION, NotificationContent, NotificationRecord,
    Platform, Priority, RECORD_FORMAT_VERSION, UserRecord,
};
pub use routing::{jump_hash, shard_for_user, user_hash};
pub use segmap::SegMap;
pub use state::{CONFIG_FAULT_RETRY_MS, Jitter, RetryPolicy, Verdict};
pub use token_bucket::{TokenBucket, UserBuckets};
