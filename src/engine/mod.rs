//! The shard engine: everything one shard owns, touched only by its own core. It takes validated
//! commands (from its own ingress or over the mesh), dedups, applies caps, writes to its log
//! through group commit, answers once durable, and drives each delivery through the one state
//! machine (`clarion_shards::state`) with its channel's sender.
//!
//! Layout: `command` (what crosses the mesh), `answer` (where a notification's answer goes),
//! `accept` (users, devices, notifications, status), `committer` (group commit and
//! reply-after-durable), `dispatch` (queues, sends, retries), `recovery` (rebuilding state from
//! the log), `probe` (counters).

pub mod accept;
pub mod answer;
pub mod command;
pub mod committer;
pub mod dispatch;
pub mod probe;
pub mod recovery;

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use clarion_shards::{
    BoundedQueue, Channel, DedupSet, IdGenerator, Jitter, NotificationRecord, RetryPolicy,
    RetryTimers, SegMap, ShardLog, UserBuckets, UserRecord,
};
use uuid::Uuid;

use crate::channels::ChannelSender;
use crate::sync::{Latch, LocalNotify};
use command::ShardCmd;
use committer::Committer;
use probe::Probe;

/// Deliveries waiting for a send slot, per channel per shard. Bounded so a provider outage
/// turns into 503s at the API instead of unbounded memory; at 60k/s across 2 shards this is
/// several seconds of traffic.
pub const DELIVERY_QUEUE_CAPACITY: usize = 200_000;

/// One delivery of one open notification: the queue and timer entry. It carries the delivery's
/// channel so that queueing it needs no lookup of the notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryRef {
    pub notification: Uuid,
    pub index: u16,
    pub channel: clarion_shards::Channel,
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
    pub shutdown_grace_ms: u64,
}

/// State mutated by commands and outcomes. Borrowed briefly, never across an await.
pub struct ShardState {
    pub users: SegMap<String, UserRecord>,
    pub dedup: DedupSet,
    pub buckets: UserBuckets,
    /// Notifications with at least one delivery not yet terminal. Boxed, so the table stays
    /// dense (a pointer per entry, not a few hundred bytes) and inserting or removing one does
    /// not copy the record.
    pub open: SegMap<Uuid, Box<NotificationRecord>>,
    /// The same ids in time order: the first is the log's recovery watermark.
    pub open_order: BTreeSet<Uuid>,
    pub ids: IdGenerator,
    pub jitter: Jitter,
    pub last_watermark: Option<Uuid>,
}

pub struct Engine {
    pub cfg: EngineConfig,
    pub log: ShardLog,
    pub state: RefCell<ShardState>,
    pub committer: Committer,
    /// Per channel (indexed by `Channel::index`): queued deliveries, slots reserved by
    /// notifications not yet durable, and the sender.
    pub queues: Vec<BoundedQueue<DeliveryRef>>,
    pub reserved: Vec<Cell<usize>>,
    pub senders: Vec<Option<Rc<dyn ChannelSender>>>,
    pub timers: RefCell<RetryTimers<DeliveryRef>>,
    pub timer_wake: LocalNotify,
    pub in_flight: Cell<usize>,
    pub probe: Probe,
    pub stopping: Latch,
    pub(crate) stop_committing: Cell<bool>,
    pub failed: Cell<bool>,
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
    ) -> Engine {
        let mut by_channel: Vec<Option<Rc<dyn ChannelSender>>> = vec![None; Channel::ALL.len()];
        for s in senders {
            let i = s.channel().index();
            by_channel[i] = Some(s);
        }
        let state = ShardState {
            users: SegMap::new(),
            dedup: DedupSet::new(cfg.dedup_window_ms),
            buckets: UserBuckets::new(cfg.per_user_per_hour),
            open: SegMap::new(),
            open_order: BTreeSet::new(),
            ids: IdGenerator::new(cfg.shard, seed),
            jitter: Jitter::new(seed ^ 0x9E37_79B9_7F4A_7C15),
            last_watermark: None,
        };
        Engine {
            queues: Channel::ALL
                .iter()
                .map(|_| BoundedQueue::new(DELIVERY_QUEUE_CAPACITY))
                .collect(),
            reserved: Channel::ALL.iter().map(|_| Cell::new(0)).collect(),
            senders: by_channel,
            cfg,
            log,
            state: RefCell::new(state),
            committer: Committer::default(),
            timers: RefCell::new(RetryTimers::new()),
            timer_wake: LocalNotify::default(),
            in_flight: Cell::new(0),
            probe: Probe::default(),
            stopping: Latch::default(),
            stop_committing: Cell::new(false),
            failed: Cell::new(false),
        }
    }

    /// Runs one command. Never blocks: durable work completes later through the committer.
    pub fn handle(self: &Rc<Self>, cmd: ShardCmd) {
        use crate::api::error::ApiError;
        if self.failed.get() {
            return cmd.reject(ApiError::unavailable(
                "this shard's storage failed; restart required",
            ));
        }
        if self.stopping.is_set()
            && !matches!(
                cmd,
                ShardCmd::GetNotification { .. } | ShardCmd::Stats { .. }
            )
        {
            return cmd.reject(ApiError::unavailable("shutting down"));
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
                token,
                reply,
            } => self.remove_device(user_id, &token, reply),
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
        }
    }

    pub fn stats(&self) -> probe::ProbeSnapshot {
        let mut s = self.probe.snapshot();
        s.queue_depth = self.queues.iter().map(|q| q.len() as u64).sum::<u64>()
            + self.timers.borrow().len() as u64;
        s.in_flight = self.in_flight.get() as u64;
        s.open_notifications = self.state.borrow().open.len() as u64;
        let log = self.log.stats();
        s.log_write = log.write_latency;
        s.log_fsync = log.fsync_latency;
        s.log_quarantined = log.quarantined;
        s
    }

    /// The log watermark (every open notification is at or after it), if it moved.
    fn watermark_if_changed(&self) -> Option<Uuid> {
        let mut st = self.state.borrow_mut();
        let w = match st.open_order.first() {
            Some(id) => *id,
            None => Uuid::from_bytes(clarion_shards::uuid_floor_for_ms(now_ms())),
        };
        if st.last_watermark == Some(w) {
            return None;
        }
        st.last_watermark = Some(w);
        Some(w)
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
            }
        }
        glommio::spawn_local(dispatch::run_timers(self.clone())).detach();
        glommio::spawn_local(recovery::run_housekeeping(self.clone())).detach();
    }

    /// Graceful stop: refuse new work, let in-flight sends finish within the grace period,
    /// flush the last batch, and stop the storage thread (joined by the caller off-executor).
    pub async fn shutdown(self: &Rc<Self>) {
        self.stopping.set();
        for q in &self.queues {
            q.close();
        }
        self.timer_wake.notify();
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
