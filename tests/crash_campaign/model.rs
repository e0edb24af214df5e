//! What the campaign's workers know: their users and each device's state as the answers left
//! it (acknowledged, removed, or in doubt), each notification as the client saw it (its ids,
//! sends, and the devices that must and may be its targets), the tokens the simulator answers
//! `410` for, and the counts of what was done.

use std::collections::{BTreeSet, HashMap};

/// Users each worker registers before the campaign starts.
pub const USERS_PER_WORKER: usize = 40;
/// Every this many users, one device token is one the simulator answers `410 Unregistered`
/// (its user's notifications have a target in doubt, so they are all read back).
const DEAD_TOKEN_EVERY: usize = 20;

/// Device token number `n` of worker `w`: distinct across workers and runs of one campaign.
pub fn token_of(w: usize, n: u64) -> String {
    crate::common::token(((w as u64 + 1) << 40) | n)
}

/// The dead token of worker `w`'s `j`th initial user, if it has one.
pub fn dead_token(w: usize, j: usize) -> Option<String> {
    (j % DEAD_TOKEN_EVERY == 0).then(|| token_of(w, (1 << 32) | j as u64))
}

/// Every token the simulator must answer `410 Unregistered`.
pub fn dead_tokens(workers: usize) -> BTreeSet<String> {
    (0..workers)
        .flat_map(|w| (0..USERS_PER_WORKER).filter_map(move |j| dead_token(w, j)))
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dev {
    /// Registration acknowledged: every later notification must target it.
    Active,
    /// Removal acknowledged: no later notification may target it.
    Removed,
    /// The answer was lost, or the simulator answers 410 for it: it may or may not be a target.
    Maybe,
}

pub struct User {
    pub id: String,
    /// Whether its registration was acknowledged.
    pub known: bool,
    pub devices: Vec<(String, Dev)>,
}

/// One notification (one seq, one idempotency key) as the client saw it.
#[derive(Debug, Default)]
pub struct SeqRecord {
    pub user: String,
    /// Distinct ids answered with `202` for this key: one at most, or a retry made a second.
    pub ids: Vec<String>,
    /// Times it was sent (first send and retries).
    pub sends: u32,
    /// Answers marked `"duplicate": true`.
    pub duplicate_answers: u32,
    /// Devices that must be among its targets (acknowledged at every send).
    pub must: BTreeSet<String>,
    /// Devices that may be among its targets (possible at some send).
    pub may: BTreeSet<String>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct OpCounts {
    pub singles: u64,
    pub batches: u64,
    pub batch_items: u64,
    pub resent_answered: u64,
    pub resent_unanswered: u64,
    pub users_added: u64,
    pub devices_added: u64,
    pub devices_removed: u64,
    /// Exchanges that broke (outcome unknown) or found the server down.
    pub broken: u64,
    /// Answers `503` (overload or a shard not ready).
    pub unavailable: u64,
}

impl OpCounts {
    pub fn add(&mut self, o: &OpCounts) {
        self.singles += o.singles;
        self.batches += o.batches;
        self.batch_items += o.batch_items;
        self.resent_answered += o.resent_answered;
        self.resent_unanswered += o.resent_unanswered;
        self.users_added += o.users_added;
        self.devices_added += o.devices_added;
        self.devices_removed += o.devices_removed;
        self.broken += o.broken;
        self.unavailable += o.unavailable;
    }
}

pub struct WorkerReport {
    pub seqs: HashMap<u64, SeqRecord>,
    pub ops: OpCounts,
    /// Requests still unanswered when the worker gave up on them.
    pub unanswered: usize,
    pub violations: Vec<String>,
    pub violation_count: usize,
}

/// The dead token of the initial user named `id` of worker `w`, as a set (empty if none).
pub fn dead_tokens_of_user(w: usize, id: &str) -> BTreeSet<String> {
    id.strip_prefix(&format!("w{w}u"))
        .and_then(|j| j.parse::<usize>().ok())
        .filter(|j| *j < USERS_PER_WORKER)
        .and_then(|j| dead_token(w, j))
        .into_iter()
        .collect()
}

impl User {
    /// The devices a notification to this user sent now must target, and those it may target.
    pub fn targets(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let of = |pred: &dyn Fn(Dev) -> bool| {
            self.devices
                .iter()
                .filter(|(_, d)| pred(*d))
                .map(|(t, _)| t.clone())
                .collect::<BTreeSet<_>>()
        };
        (of(&|d| d == Dev::Active), of(&|d| d != Dev::Removed))
    }
}
