//! A channel's lane on one shard: the bounded window of deliveries ready to send, and the
//! refill that reads it from the channel's backlog in the log (`clarion_shards::pending`), so
//! the backlog a provider outage builds lives on disk and memory stays bounded whatever it is.
//!
//! Every delivery still to attempt has a pending key in the log. A delivery is *resident* while
//! it sits in the window or is being sent; resident deliveries are tracked by the engine
//! (`ShardState::resident`), so that a scan which meets one again skips it. New deliveries go
//! straight into the window when it has room and nothing older waits on disk; otherwise the
//! lane *spills*: they stay on disk and the refill reads them in due order. Retries are keys
//! with a later due time, read when it comes.
//!
//! Ordering: a scan is issued through the committer after every write added before it
//! (`Committer::after_writes`), so it sees every key added and removed before it was issued. A
//! key added later is placed after everything that scan can return ([`Lane::place`]), so the
//! cursor never passes a key that no scan saw.

use std::cell::{Cell, RefCell};
use std::collections::{HashSet, VecDeque};

use clarion_shards::{Channel, PendingKey};

use super::DeliveryRef;
use super::breaker::Breaker;
use crate::sync::LocalNotify;

/// Deliveries a lane holds ready in memory, per channel per shard, by default (`[tuning]
/// lane_window`). With each one's notification cached (about 1 KB), this bounds a lane's
/// memory to about 16 MB, and it is several times what a provider's connections can take in
/// one round trip, so the sender never waits for a refill at full rate. The refill reads
/// more once the window is below half of it.
pub const WINDOW_CAPACITY: usize = 16_384;

/// One channel's window, cursor and breaker.
pub struct Lane {
    pub channel: Channel,
    /// Most deliveries held ready.
    capacity: usize,
    window: RefCell<VecDeque<DeliveryRef>>,
    /// The last key a scan returned: the next scan starts after it.
    cursor: Cell<Option<PendingKey>>,
    /// Deliveries due by now may wait on disk that are not resident.
    spilled: Cell<bool>,
    /// Bumped whenever the lane spills, so a scan issued before a spill does not clear it.
    spill_gen: Cell<u64>,
    /// The earliest due time known to wait on disk beyond what the last scan covered.
    next_due_ms: Cell<Option<u64>>,
    /// The newest `until` a scan was issued with: keys added later are placed after it.
    scanned_until_ms: Cell<u64>,
    /// Deliveries of this channel in the log's backlog (resident ones included).
    pub backlog: Cell<u64>,
    /// This channel's counters on this shard, for `GET /v1/stats`.
    pub counts: ChannelCounts,
    /// Scans issued since start.
    pub scans: Cell<u64>,
    /// A scan is out: it may return keys removed while it ran.
    scanning: Cell<bool>,
    /// `(notification, index)` of deliveries whose key was removed (settled) or moved (retry)
    /// while the scan was out: what it returns of them is stale and is skipped. Bounded by the
    /// deliveries resident while one scan runs.
    moved_during_scan: RefCell<HashSet<(uuid::Uuid, u16)>>,
    /// Woken when the window gains deliveries or the breaker may admit again.
    pub ready: LocalNotify,
    /// Woken when the refill may have work: a spill, a new due time, room in the window.
    pub refill: LocalNotify,
    pub breaker: RefCell<Breaker>,
    /// Since when the channel has answered with configuration faults and nothing else
    /// (cleared by any answer about a delivery), and the latest fault's reason: deliveries
    /// held behind it that long go dead (`dead.rs`).
    pub config_fault_since: Cell<Option<u64>>,
    pub config_fault_reason: RefCell<String>,
}

/// One channel's counters on one shard (plain cells: read on the shard's own core).
#[derive(Default)]
pub struct ChannelCounts {
    /// Deliveries accepted (durable) for this channel.
    pub accepted: Cell<u64>,
    pub sent: Cell<u64>,
    pub retried: Cell<u64>,
    pub failed: Cell<u64>,
    pub deactivated: Cell<u64>,
    pub dead: Cell<u64>,
    /// Dead deliveries replayed (queued again).
    pub replayed: Cell<u64>,
    pub expired: Cell<u64>,
    /// Deliveries suppressed at acceptance (the frequency cap).
    pub suppressed: Cell<u64>,
    /// Attempts running now.
    pub in_flight: Cell<u64>,
}

impl Lane {
    pub fn new(channel: Channel, capacity: usize) -> Lane {
        Lane {
            channel,
            capacity,
            window: RefCell::new(VecDeque::with_capacity(1024)),
            cursor: Cell::new(None),
            // At start the backlog on disk is unread.
            spilled: Cell::new(true),
            spill_gen: Cell::new(0),
            next_due_ms: Cell::new(None),
            scanned_until_ms: Cell::new(0),
            backlog: Cell::new(0),
            counts: ChannelCounts::default(),
            scans: Cell::new(0),
            scanning: Cell::new(false),
            moved_during_scan: RefCell::new(HashSet::new()),
            ready: LocalNotify::default(),
            refill: LocalNotify::default(),
            breaker: RefCell::new(Breaker::default()),
            config_fault_since: Cell::new(None),
            config_fault_reason: RefCell::new(String::new()),
        }
    }

    /// Most deliveries held ready.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Deliveries ready in memory.
    pub fn len(&self) -> usize {
        self.window.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.window.borrow().is_empty()
    }

    /// When the earliest-accepted notification of the deliveries ready in the window was
    /// accepted (its id's time), for the queue's oldest age. The window is in due order, not
    /// acceptance order (a retried delivery is due later), so every one is looked at: a scrape's
    /// cost, at most the window's capacity.
    pub fn oldest_accepted_ms(&self) -> Option<u64> {
        self.window
            .borrow()
            .iter()
            .map(|d| clarion_shards::ids::ms_of(&d.notification))
            .min()
    }

    /// The due time to store a new pending key under: `due_ms`, or just after everything an
    /// issued scan may already have passed.
    pub fn place(&self, due_ms: u64) -> u64 {
        due_ms.max(self.scanned_until_ms.get().saturating_add(1))
    }

    /// A key was added to the backlog due at `due_ms` (a retry, or a spilled delivery): the
    /// refill looks for it then.
    pub fn note_due(&self, due_ms: u64) {
        let next = self.next_due_ms.get().map_or(due_ms, |t| t.min(due_ms));
        self.next_due_ms.set(Some(next));
        self.refill.notify();
    }

    /// Takes a new, durable delivery straight into the window if it has room and nothing
    /// older waits on disk; otherwise the lane spills and the refill will read it.
    pub fn offer(&self, d: DeliveryRef) -> bool {
        if !self.spilled.get() && self.len() < self.capacity {
            self.push_back(d);
            return true;
        }
        self.spill();
        false
    }

    fn spill(&self) {
        self.spilled.set(true);
        self.spill_gen.set(self.spill_gen.get() + 1);
        self.refill.notify();
    }

    /// Appends a delivery read from the backlog.
    pub fn push_back(&self, d: DeliveryRef) {
        self.window.borrow_mut().push_back(d);
        self.ready.notify();
    }

    /// Puts a delivery back at the head (its send was deferred: the provider is down).
    pub fn push_front(&self, d: DeliveryRef) {
        self.window.borrow_mut().push_front(d);
    }

    /// The next delivery to send.
    pub fn pop(&self) -> Option<DeliveryRef> {
        let d = self.window.borrow_mut().pop_front();
        if self.wants_scan(super::now_ms()) {
            self.refill.notify();
        }
        d
    }

    /// Whether the refill should scan now: the window has room and there is something on disk
    /// to read (spilled deliveries, or a due time that has come).
    pub fn wants_scan(&self, now_ms: u64) -> bool {
        self.len() < self.capacity / 2
            && (self.spilled.get() || self.next_due_ms.get().is_some_and(|t| t <= now_ms))
    }

    /// When the refill should look again if nothing wakes it.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.next_due_ms.get()
    }

    /// A delivery's key was removed or moved: a scan out now must not take what it read of it.
    pub fn key_removed(&self, d: &DeliveryRef) {
        if self.scanning.get() {
            self.moved_during_scan
                .borrow_mut()
                .insert((d.notification, d.index));
        }
    }

    /// Whether a scan's key is stale: its delivery settled or moved while the scan ran.
    pub fn removed_during_scan(&self, d: &DeliveryRef) -> bool {
        self.moved_during_scan
            .borrow()
            .contains(&(d.notification, d.index))
    }

    /// Whether a scan is out.
    pub fn is_scanning(&self) -> bool {
        self.scanning.get()
    }

    /// Starts a scan up to `until_ms`: what it needs, and what it must compare on completion.
    pub fn begin_scan(&self, until_ms: u64) -> ScanTicket {
        self.scans.set(self.scans.get() + 1);
        self.scanning.set(true);
        self.scanned_until_ms
            .set(self.scanned_until_ms.get().max(until_ms));
        // Due times noted from now on are not covered by this scan's answer.
        let next_due = self.next_due_ms.replace(None);
        ScanTicket {
            after: self.cursor.get(),
            limit: self.capacity.saturating_sub(self.len()),
            spill_gen: self.spill_gen.get(),
            next_due_before: next_due,
        }
    }

    /// Records a finished scan: its last key becomes the cursor; a scan that reached its bound
    /// clears the spill (unless the lane spilled again meanwhile) and tells when the next key
    /// is due.
    pub fn end_scan(
        &self,
        ticket: &ScanTicket,
        last: Option<PendingKey>,
        complete: bool,
        next_due_ms: Option<u64>,
    ) {
        self.scan_over();
        if last.is_some() {
            self.cursor.set(last);
        }
        if complete {
            if self.spill_gen.get() == ticket.spill_gen {
                self.spilled.set(false);
            }
            if let Some(t) = next_due_ms {
                self.note_due(t);
            }
        } else {
            self.spill();
        }
    }

    /// A scan failed: everything it was to cover is still to read.
    pub fn abandon_scan(&self, ticket: &ScanTicket) {
        self.scan_over();
        if let Some(t) = ticket.next_due_before {
            self.note_due(t);
        }
        self.spill();
    }
}

impl Lane {
    fn scan_over(&self) {
        self.scanning.set(false);
        self.moved_during_scan.borrow_mut().clear();
    }
}

/// What a scan was issued with.
pub struct ScanTicket {
    pub after: Option<PendingKey>,
    pub limit: usize,
    spill_gen: u64,
    next_due_before: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn d(n: u128) -> DeliveryRef {
        DeliveryRef {
            notification: Uuid::from_u128(n),
            index: 0,
            channel: Channel::Apns,
            due_ms: 0,
        }
    }

    #[test]
    fn a_new_lane_reads_its_backlog_before_taking_new_deliveries() {
        let lane = Lane::new(Channel::Apns, WINDOW_CAPACITY);
        assert!(lane.wants_scan(0));
        assert!(!lane.offer(d(1)), "spilled until the first scan completes");
        let t = lane.begin_scan(100);
        lane.end_scan(&t, None, true, None);
        assert!(!lane.wants_scan(100));
        assert!(lane.offer(d(2)));
        assert_eq!(lane.pop(), Some(d(2)));
    }

    #[test]
    fn a_spill_during_a_scan_survives_its_completion() {
        let lane = Lane::new(Channel::Apns, WINDOW_CAPACITY);
        let t = lane.begin_scan(100);
        lane.end_scan(&t, None, true, None);
        let t = lane.begin_scan(200);
        // The window fills meanwhile, and a new delivery spills.
        for i in 0..WINDOW_CAPACITY as u128 {
            assert!(lane.offer(d(i)));
        }
        assert!(!lane.offer(d(u128::MAX)));
        lane.end_scan(&t, None, true, None);
        while lane.pop().is_some() {}
        assert!(
            lane.wants_scan(200),
            "the spilled delivery is still to read"
        );
    }

    #[test]
    fn keys_added_after_a_scan_was_issued_are_placed_after_it() {
        let lane = Lane::new(Channel::Apns, WINDOW_CAPACITY);
        assert_eq!(lane.place(50), 50);
        let t = lane.begin_scan(100);
        assert_eq!(lane.place(80), 101);
        assert_eq!(lane.place(150), 150);
        lane.end_scan(&t, None, true, Some(150));
        assert_eq!(lane.next_due_ms(), Some(150));
        assert!(!lane.wants_scan(149));
        assert!(lane.wants_scan(150));
    }

    #[test]
    fn due_times_noted_during_a_scan_are_kept() {
        let lane = Lane::new(Channel::Apns, WINDOW_CAPACITY);
        let t = lane.begin_scan(100);
        lane.note_due(120);
        lane.end_scan(&t, None, true, Some(300));
        assert_eq!(lane.next_due_ms(), Some(120));
        let t = lane.begin_scan(130);
        lane.abandon_scan(&t);
        assert!(
            lane.wants_scan(130),
            "a failed scan leaves everything to read"
        );
    }

    #[test]
    fn keys_removed_while_a_scan_is_out_are_stale_for_that_scan_only() {
        let lane = Lane::new(Channel::Apns, WINDOW_CAPACITY);
        lane.key_removed(&d(1));
        assert!(
            !lane.removed_during_scan(&d(1)),
            "no scan out: nothing to remember"
        );
        let t = lane.begin_scan(100);
        assert!(lane.is_scanning());
        lane.key_removed(&d(2));
        assert!(lane.removed_during_scan(&d(2)));
        assert!(!lane.removed_during_scan(&d(3)));
        lane.end_scan(&t, None, true, None);
        assert!(!lane.is_scanning());
        assert!(
            !lane.removed_during_scan(&d(2)),
            "forgotten once the scan is in"
        );
    }

    #[test]
    fn an_incomplete_scan_leaves_the_lane_spilled() {
        let lane = Lane::new(Channel::Apns, WINDOW_CAPACITY);
        let t = lane.begin_scan(100);
        let last = PendingKey {
            channel: Channel::Apns,
            due_ms: 40,
            notification: Uuid::from_u128(9),
            index: 0,
        };
        lane.end_scan(&t, Some(last), false, None);
        assert!(lane.wants_scan(100));
        assert_eq!(lane.begin_scan(100).after, Some(last));
    }
}
