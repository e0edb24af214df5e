//! The shard engine: everything one shard owns, touched only by its own core. It takes validated
//! commands (from its own ingress or over the mesh), dedups, applies caps, writes to its log
//! through group commit, answers once durable, and drives each delivery through the one state
//! machine (`clarion_shards::state`) with its channel's sender.
//!
//! Layout: `command` (what crosses the mesh), `answer` (where a notification's answer goes),
//! `accept` (users, devices, notifications, status), `committer` (group commit and
//! reply-after-durable), `lane` (a channel's window onto its backlog in the log, and its
//! refill), `breaker` (a channel's circuit breaker), `catchup` (a catching-up channel yields to the live
//! ones), `dispatch` (sends and their outcomes),
//! `recovery` (rebuilding state from the log, housekeeping), `probe` (counters).

pub mod accept;
pub mod answer;
pub mod breaker;
pub mod catchup;
pub mod command;
pub mod committer;
pub mod dead;
pub mod dispatch;
pub mod error;
pub mod lane;
pub mod probe;
pub mod recovery;
pub mod refill;

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use clarion_shards::{
    Channel, DedupCache, DedupHasher, IdGenerator, Jitter, NotificationRecord, PendingKey,
    RetryPolicy, SegMap, ShardLog, UserBuckets, UserRecord,
};
use uuid::Uuid;

use crate::channels::ChannelSender;
use crate::sync::Latch;
use command::ShardCmd;
use committer::Committer;
use error::ShardError;
use lane::Lane;
use probe::Probe;

/// One delivery still to attempt, as its lane holds it: the notification, the delivery's
/// index, its channel, and the due time its pending key is stored under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryRef {
    pub notification: Uuid,
    pub index: u16,
    pub channel: clarion_shards::Channel,
    pub due_ms: u64,
}

impl DeliveryRef {
    /// The delivery's key in the log's backlog.
    pub fn pending_key(&self) -> PendingKey {
        PendingKey {
            channel: self.channel,
            due_ms: self.due_ms,
            notification: self.notification,
            index: self.index,
        }
    }
}

/// A notification held in memory: while it is being accepted, and while any of its deliveries
/// is resident (in a lane's window or being sent). Its record is the current one; the log has
/// the same, or will once the committer's pending writes land.
pub struct OpenNotification {
    pub record: Box<NotificationRecord>,
    /// Its deliveries that are resident.
    pub resident: u32,
}

/// The engine's settings, from the validated config.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub shard: u16,
    pub dedup_window_ms: u64,
    pub retention_ms: u64,
    pub per_user_per_hour: u32,
    /// Devices (active or deactivated) a user may have.
    pub max_devices_per_user: usize,
    pub retry: RetryPolicy,
    /// How long a delivery may sit behind a configuration fault before it goes dead
    /// (`[delivery] config_fault_dead_after_seconds`).
    pub config_fault_dead_after_ms: u64,
    pub shutdown_grace_ms: u64,
    /// Deliveries each channel's lane holds ready in memory.
    pub lane_window: usize,
    /// A channel catching up on a backlog is paced while others are live (`[delivery]
    /// catch_up_yields`).
    pub catch_up_yields: bool,
    /// Where the shard's health is published when its log fails.
    pub health: crate::health::ShardSlot,
}

/// State mutated by commands and outcomes. Borrowed briefly, never across an await.
pub struct ShardState {
    pub users: SegMap<String, UserRecord>,
    /// The newest idempotency keys, in front of the log's `dedup` keyspace.
    pub dedup: DedupCache,
    pub buckets: UserBuckets,
    /// Notifications being accepted or with resident deliveries: bounded by the lanes'
    /// windows and the senders' in-flight limits, whatever the backlog on disk. The record is
    /// boxed, so the table stays dense and moving an entry does not copy the record.
    pub open: SegMap<Uuid, OpenNotification>,
    /// `(notification, delivery index)` of every resident delivery.
    pub resident: HashSet<(Uuid, u16)>,
    pub ids: IdGenerator,
    pub jitter: Jitter,
}

pub struct Engine {
    pub cfg: EngineConfig,
    pub log: ShardLog,
    pub state: RefCell<ShardState>,
    pub committer: Committer,
    /// Per channel (indexed by `Channel::index`): the lane (window, backlog, breaker) and the
    /// sender.
    pub lanes: Vec<Lane>,
    pub senders: Vec<Option<Rc<dyn ChannelSender>>>,
    /// The log's idempotency-key hash (keyed by the log's secret).
    pub dedup_hasher: DedupHasher,
    pub in_flight: Cell<usize>,
    /// Notifications accepted and not yet durable (waiting in the committer or for its fsync).
    pub undurable: Cell<usize>,
    pub probe: Probe,
    pub stopping: Latch,
    pub(crate) stop_committing: Cell<bool>,
    pub failed: crate::health::FailedFlag,
    /// One dead-letter replay or purge at a time on this shard (`dead.rs`).
    pub dead_letters_turn: glommio::sync::Semaphore,
    /// The pacing of a channel catching up on a backlog while others are live (`catchup.rs`).
    pub catch_up: catchup::CatchUp,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Engine {
    pub fn new(
        cfg: EngineConfig,
        log: ShardLog,
        senders: Vec<Rc<dyn ChannelSender>>,
        seed: u64,
        dedup_hasher: DedupHasher,
    ) -> Engine {
        let failed = crate::health::FailedFlag::new(cfg.health.clone());
        let catch_up_yields = cfg.catch_up_yields;
        let mut by_channel: Vec<Option<Rc<dyn ChannelSender>>> = vec![None; Channel::ALL.len()];
        for s in senders {
            let i = s.channel().index();
            by_channel[i] = Some(s);
        }
        let state = ShardState {
            users: SegMap::new(),
            dedup: DedupCache::new(cfg.dedup_window_ms, clarion_shards::DEDUP_CACHE_KEYS),
            buckets: UserBuckets::new(cfg.per_user_per_hour),
            open: SegMap::new(),
            resident: HashSet::new(),
            ids: IdGenerator::new(cfg.shard, seed),
            jitter: Jitter::new(seed ^ 0x9E37_79B9_7F4A_7C15),
        };
        Engine {
            lanes: Channel::ALL
                .iter()
                .map(|&c| Lane::new(c, cfg.lane_window))
                .collect(),
            senders: by_channel,
            dedup_hasher,
            cfg,
            log,
            state: RefCell::new(state),
            committer: Committer::default(),
            in_flight: Cell::new(0),
            undurable: Cell::new(0),
            probe: Probe::default(),
            stopping: Latch::default(),
            stop_committing: Cell::new(false),
            failed,
            dead_letters_turn: glommio::sync::Semaphore::new(1),
            catch_up: catchup::CatchUp::new(Channel::ALL.len(), catch_up_yields),
        }
    }

    /// Runs one command. Never blocks: durable work completes later through the committer.
    pub fn handle(self: &Rc<Self>, cmd: ShardCmd) {
        if self.failed.get() {
            return cmd.reject(ShardError::Unavailable {
                why: "this shard's storage failed; restart required",
            });
        }
        if self.stopping.is_set()
            && !matches!(
                cmd,
                ShardCmd::GetNotification { .. }
                    | ShardCmd::Stats { .. }
                    | ShardCmd::ListDead { .. }
            )
        {
            return cmd.reject(ShardError::Unavailable {
                why: "shutting down",
            });
        }
        match cmd {
            ShardCmd::PutUser {
                user_id,
                profile,
                reply,
            } => self.put_user(user_id, profile, reply),
            ShardCmd::AddDevice {
                user_id,
                device,
                reply,
            } => self.add_device(user_id, device, reply),
            ShardCmd::RemoveDevice {
                user_id,
                device_ids,
                reply,
            } => self.remove_device(user_id, &device_ids, reply),
            ShardCmd::GetUser { user_id, reply } => self.get_user(&user_id, reply),
            ShardCmd::Notify {
                notification,
                reply,
            } => self.notify(notification, answer::NotifyReplyTo::One(reply)),
            ShardCmd::NotifyBatch { items, reply } => {
                let answers = answer::BatchAnswers::new(items.len(), reply);
                for (index, n) in items {
                    self.notify(n, answer::NotifyReplyTo::Item(answers.slot(index)));
                }
            }
            ShardCmd::GetNotification { id, reply } => self.get_notification(id, reply),
            ShardCmd::Stats { reply } => {
                let _ = reply.send(Ok(self.stats()));
            }
            ShardCmd::ListDead {
                filter,
                below,
                limit,
                reply,
            } => {
                let list = self.clone().list_dead(filter, below, limit);
                glommio::spawn_local(async move {
                    let _ = reply.send(list.await);
                })
                .detach();
            }
            ShardCmd::ReplayDead { selection, reply } => {
                let replay = self.clone().replay_dead(selection);
                glommio::spawn_local(async move {
                    let _ = reply.send(replay.await);
                })
                .detach();
            }
            ShardCmd::PurgeDead { selection, reply } => {
                let purge = self.clone().purge_dead(selection);
                glommio::spawn_local(async move {
                    let _ = reply.send(purge.await);
                })
                .detach();
            }
        }
    }

    pub fn stats(&self) -> probe::ProbeSnapshot {
        let mut s = self.probe.snapshot();
        s.queue_depth = self.lanes.iter().map(|l| l.len() as u64).sum::<u64>();
        s.backlog = self.lanes.iter().map(|l| l.backlog.get()).sum::<u64>();
        s.backlog_scans = self.lanes.iter().map(|l| l.scans.get()).sum::<u64>();
        s.breaker_opened = self
            .lanes
            .iter()
            .map(|l| l.breaker.borrow().opened())
            .sum::<u64>();
        s.breakers_open = self
            .lanes
            .iter()
            .filter(|l| l.breaker.borrow().state() != breaker::BreakerState::Closed)
            .count() as u64;
        s.catch_up_paced = self.catch_up.paced.get();
        s.catch_up_cuts = self.catch_up.cuts.get();
        s.in_flight = self.in_flight.get() as u64;
        s.open_notifications = self.state.borrow().open.len() as u64;
        let log = self.log.stats();
        s.log_write = log.write_latency;
        s.log_fsync = log.fsync_latency;
        s.log_quarantined = log.quarantined;
        s.log_memtable_bytes = log.memtable_bytes;
        s.log_sealed_memtables = log.sealed_memtables;
        s.dedup_cached = self.state.borrow().dedup.len() as u64;
        s.dedup_disk_checks = log.claims_checked;
        s.dedup_disk_duplicates = log.claims_lost;
        for (snap, lane) in s.by_channel.iter_mut().zip(&self.lanes) {
            let c = &lane.counts;
            *snap = probe::ChannelSnapshot {
                accepted: c.accepted.get(),
                sent: c.sent.get(),
                retried: c.retried.get(),
                failed: c.failed.get(),
                deactivated: c.deactivated.get(),
                dead: c.dead.get(),
                replayed: c.replayed.get(),
                expired: c.expired.get(),
                queue_depth: lane.len() as u64,
                backlog: lane.backlog.get(),
                in_flight: c.in_flight.get(),
                suppressed: c.suppressed.get(),
                oldest_age_ms: lane
                    .oldest_accepted_ms()
                    .map_or(0, |t| now_ms().saturating_sub(t)),
                breaker_open: u64::from(
                    lane.breaker.borrow().state() != breaker::BreakerState::Closed,
                ),
            };
        }
        s
    }

    fn stopped_committing(&self) -> bool {
        self.stop_committing.get()
    }

    /// Starts the shard's background tasks on the current executor.
    pub fn start(self: &Rc<Self>) {
        glommio::spawn_local(committer::run(self.clone())).detach();
        for (i, s) in self.senders.iter().enumerate() {
            if s.is_some() {
                glommio::spawn_local(dispatch::run_channel(self.clone(), i)).detach();
                glommio::spawn_local(refill::run_refill(self.clone(), i)).detach();
            }
        }
        glommio::spawn_local(recovery::run_housekeeping(self.clone())).detach();
        if self.cfg.catch_up_yields {
            glommio::spawn_local(catchup::run_probe(self.clone())).detach();
        }
    }

    /// Graceful stop: refuse new work, send nothing more, let in-flight sends finish within
    /// the grace period, flush the last batch, and stop the storage thread (joined by the
    /// caller off-executor). Deliveries not yet sent stay in the backlog, their attempts
    /// unspent.
    pub async fn shutdown(self: &Rc<Self>) {
        self.stopping.set();
        for lane in &self.lanes {
            lane.ready.notify();
            lane.refill.notify();
        }
        let deadline = std::time::Instant::now()
            + std::time::Duration::from_millis(self.cfg.shutdown_grace_ms);
        while self.in_flight.get() > 0 && std::time::Instant::now() < deadline {
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
        }
        for s in self.senders.iter().flatten() {
            s.close().await;
        }
        self.stop_committing.set(true);
        committer::commit_once(self).await;
        self.committer.wake.notify();
        if let Ok(done) = self.log.shutdown() {
            let _ = done.await;
        }
    }
}
