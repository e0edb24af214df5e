//! The campaign's mixed load: worker threads, each owning its own users (so one user's
//! requests are never concurrent and the worker's model of that user's devices is exact),
//! sending single notifications, batches of several sizes, retries with the same idempotency
//! key (of answered requests, and of requests whose answer a kill swallowed), user
//! registrations, and device registrations and removals. Every request whose exchange broke
//! is kept and sent again later, as a client would.
//!
//! The worker's model of a user's devices (`model.rs`, moved by the user and device operations
//! in `contacts.rs`) gives each notification the devices that must be its targets
//! (acknowledged registrations) and those that may be (registrations or removals whose answer
//! was lost, tokens the simulator answers 410 for, which the server deactivates).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::conn::Conn;
use super::model::{
    Dev, OpCounts, SeqRecord, USERS_PER_WORKER, User, WorkerReport, dead_token, token_of,
};

/// Batch sizes drawn for batch requests.
const BATCH_SIZES: [usize; 4] = [2, 8, 32, 128];
/// Requests whose answer was lost, kept for sending again; past this, new ones are forgotten.
const MAX_UNANSWERED: usize = 10_000;
/// Answered seqs remembered for re-sending with the same key.
const ANSWERED_RING: usize = 4096;
/// Pause after a failed exchange (the server is down or restarting).
const DOWN_BACKOFF: Duration = Duration::from_millis(15);
/// Longest sleep while waiting for the pace (so a phase change is seen soon).
const PACE_STEP: Duration = Duration::from_millis(50);
/// Violations kept word for word; the rest are only counted.
const MAX_VIOLATIONS_KEPT: usize = 50;

/// What the workers do: run the random mix, pause (hold still while the server is brought
/// back up one last time), or finish (send every unanswered request until answered, then stop).
pub const RUN: u8 = 0;
pub const PAUSE: u8 = 1;
pub const FINISH: u8 = 2;

pub struct Control {
    pub addr: SocketAddr,
    pub key: String,
    pub phase: AtomicU8,
    pub next_seq: AtomicU64,
    /// Notifications per second each worker sends at most; 0 for as fast as it can.
    pub rate: AtomicU64,
}

impl Control {
    pub fn new(addr: SocketAddr, key: &str) -> Arc<Control> {
        Arc::new(Control {
            addr,
            key: key.to_string(),
            phase: AtomicU8::new(RUN),
            next_seq: AtomicU64::new(1),
            rate: AtomicU64::new(0),
        })
    }
}

pub struct Worker {
    pub(crate) w: usize,
    pub(crate) ctl: Arc<Control>,
    pub(crate) rng: fastrand::Rng,
    pub(crate) conn: Conn,
    pub(crate) users: Vec<User>,
    pub(crate) next_token: u64,
    pub(crate) seqs: HashMap<u64, SeqRecord>,
    /// Requests to send again: one seq (single) or several (a batch).
    pub(crate) unanswered: Vec<Vec<u64>>,
    pub(crate) answered: std::collections::VecDeque<u64>,
    pub(crate) ops: OpCounts,
    pub(crate) violations: Vec<String>,
    pub(crate) violation_count: usize,
    /// When the pace allows the next operation.
    pub(crate) next_allowed: Instant,
}

impl Worker {
    pub fn new(w: usize, seed: u64, ctl: Arc<Control>) -> Worker {
        let conn = Conn::new(ctl.addr, &ctl.key);
        Worker {
            w,
            rng: fastrand::Rng::with_seed(
                seed ^ (w as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            ctl,
            conn,
            users: Vec::new(),
            next_token: 0,
            seqs: HashMap::new(),
            unanswered: Vec::new(),
            answered: std::collections::VecDeque::new(),
            ops: OpCounts::default(),
            violations: Vec::new(),
            violation_count: 0,
            next_allowed: Instant::now(),
        }
    }

    /// Registers the worker's initial users (each with one or two devices, some with a dead
    /// token) against a healthy server.
    pub fn register_initial(&mut self) {
        for j in 0..USERS_PER_WORKER {
            let id = format!("w{}u{j}", self.w);
            let (s, _) = self.call("PUT", &format!("/v1/users/{id}"), Some(user_body()));
            assert!(s == 201 || s == 200, "initial PUT user {id}: {s}");
            let mut devices = Vec::new();
            for _ in 0..1 + self.rng.usize(..2) {
                devices.push(self.new_token());
            }
            let dead = dead_token(self.w, j);
            devices.extend(dead.clone());
            let mut user = User {
                id,
                known: true,
                devices: Vec::new(),
            };
            for t in devices {
                let path = format!("/v1/users/{}/devices", user.id);
                let (s, _) = self.call("POST", &path, Some(device_body(&t)));
                assert!(s == 201 || s == 200, "initial POST device: {s}");
                let state = if Some(&t) == dead.as_ref() {
                    Dev::Maybe
                } else {
                    Dev::Active
                };
                user.devices.push((t, state));
            }
            self.users.push(user);
        }
    }

    /// Runs the mix until the phase leaves `RUN`, holds through `PAUSE`, then sends every
    /// unanswered request again until answered (bounded) and reports.
    pub fn run(mut self) -> WorkerReport {
        let mut last_broke = false;
        while self.ctl.phase.load(Ordering::Relaxed) == RUN {
            let wait = self.next_allowed.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait.min(PACE_STEP));
                continue;
            }
            if last_broke {
                std::thread::sleep(DOWN_BACKOFF);
                last_broke = !self.resend_unanswered();
                continue;
            }
            last_broke = !self.step();
        }
        while self.ctl.phase.load(Ordering::Relaxed) == PAUSE {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut tries = 0;
        while !self.unanswered.is_empty() && tries < 1000 {
            if !self.resend_unanswered() {
                std::thread::sleep(DOWN_BACKOFF);
            }
            tries += 1;
        }
        WorkerReport {
            seqs: self.seqs,
            ops: self.ops,
            unanswered: self.unanswered.len(),
            violations: self.violations,
            violation_count: self.violation_count,
        }
    }

    /// One random operation; false when its exchange broke.
    fn step(&mut self) -> bool {
        match self.rng.u32(..100) {
            0..45 => {
                self.ops.singles += 1;
                let seq = self.new_seq();
                self.send(vec![seq])
            }
            45..60 => {
                self.ops.batches += 1;
                let n = BATCH_SIZES[self.rng.usize(..BATCH_SIZES.len())];
                self.ops.batch_items += n as u64;
                let seqs: Vec<u64> = (0..n).map(|_| self.new_seq()).collect();
                self.send(seqs)
            }
            60..70 if !self.answered.is_empty() => {
                self.ops.resent_answered += 1;
                let seq = self.answered[self.rng.usize(..self.answered.len())];
                self.send(vec![seq])
            }
            70..80 if !self.unanswered.is_empty() => self.resend_unanswered(),
            80..90 => self.add_device(),
            90..97 => self.remove_device(),
            97..100 => self.add_user(),
            _ => {
                self.ops.singles += 1;
                let seq = self.new_seq();
                self.send(vec![seq])
            }
        }
    }

    fn new_seq(&mut self) -> u64 {
        let seq = self.ctl.next_seq.fetch_add(1, Ordering::Relaxed);
        let user = self.users[self.rng.usize(..self.users.len())].id.clone();
        self.seqs.insert(
            seq,
            SeqRecord {
                user,
                ..SeqRecord::default()
            },
        );
        seq
    }

    pub(crate) fn new_token(&mut self) -> String {
        self.next_token += 1;
        token_of(self.w, self.next_token)
    }

    fn resend_unanswered(&mut self) -> bool {
        if self.unanswered.is_empty() {
            return self.conn.call("GET", "/healthz", None).is_ok();
        }
        self.ops.resent_unanswered += 1;
        let i = self.rng.usize(..self.unanswered.len());
        let req = self.unanswered.swap_remove(i);
        self.send(req)
    }

    /// Spends `n` notifications of the pace: the next operation waits its turn.
    fn pace(&mut self, n: usize) {
        let rate = self.ctl.rate.load(Ordering::Relaxed);
        let now = Instant::now();
        self.next_allowed = if rate == 0 {
            now
        } else {
            self.next_allowed.max(now) + Duration::from_secs_f64(n as f64 / rate as f64)
        };
    }

    /// Sends one notification (one seq) or a batch (several), and accounts for the answer.
    fn send(&mut self, seqs: Vec<u64>) -> bool {
        self.pace(seqs.len());
        let mut items = Vec::with_capacity(seqs.len());
        for &seq in &seqs {
            let user = self.seqs[&seq].user.clone();
            let (must, may) = self
                .users
                .iter()
                .find(|u| u.id == user)
                .map(User::targets)
                .unwrap_or_default();
            let r = self.seqs.get_mut(&seq).expect("seq recorded at creation");
            r.sends += 1;
            r.must = if r.sends == 1 {
                must
            } else {
                r.must.intersection(&must).cloned().collect()
            };
            r.may.extend(may);
            items.push(
                json!({"user_id": user, "idempotency_key": format!("cc-{seq}"),
                "body": "crash campaign", "data": {"lt_seq": seq}}),
            );
        }
        if seqs.len() == 1 {
            let body = items.pop().expect("one item");
            return match self.call_json("POST", "/v1/notifications", body) {
                None => {
                    self.keep_unanswered(seqs);
                    false
                }
                Some((s, b)) => {
                    self.account(seqs[0], s, &b);
                    true
                }
            };
        }
        let body = json!({ "notifications": items });
        match self.call_json("POST", "/v1/notifications/batch", body) {
            None => {
                self.keep_unanswered(seqs);
                return false;
            }
            Some((200, b)) => {
                let results = b["results"].as_array().cloned().unwrap_or_default();
                if results.len() != seqs.len() {
                    self.violation(format!(
                        "batch of {} answered {} results",
                        seqs.len(),
                        results.len()
                    ));
                }
                let mut again = Vec::new();
                for (seq, r) in seqs.iter().zip(&results) {
                    let s = r["status"].as_u64().unwrap_or(0) as u16;
                    if s == 503 {
                        again.push(*seq);
                    } else {
                        self.account(*seq, s, r);
                    }
                }
                if !again.is_empty() {
                    self.ops.unavailable += 1;
                    self.keep_unanswered(again);
                }
            }
            Some((503, _)) => {
                self.ops.unavailable += 1;
                self.keep_unanswered(seqs);
            }
            Some((s, b)) => self.violation(format!("batch answered {s}: {b}")),
        }
        true
    }

    /// The answer to one notification (single, or an item of a batch).
    fn account(&mut self, seq: u64, status: u16, body: &Value) {
        match status {
            202 => {
                let Some(id) = body["id"].as_str() else {
                    return self.violation(format!("seq {seq}: 202 without an id: {body}"));
                };
                let r = self.seqs.get_mut(&seq).expect("seq recorded");
                if body["duplicate"] == true {
                    r.duplicate_answers += 1;
                }
                if !r.ids.iter().any(|i| i == id) {
                    r.ids.push(id.to_string());
                    if r.ids.len() == 1 {
                        if self.answered.len() >= ANSWERED_RING {
                            self.answered.pop_front();
                        }
                        self.answered.push_back(seq);
                    }
                }
            }
            503 => {
                self.ops.unavailable += 1;
                self.keep_unanswered(vec![seq]);
            }
            404 if !self.user_known(&self.seqs[&seq].user) => {} // its registration was lost
            _ => self.violation(format!("seq {seq}: answered {status}: {body}")),
        }
    }

    fn user_known(&self, id: &str) -> bool {
        self.users.iter().any(|u| u.id == id && u.known)
    }

    fn keep_unanswered(&mut self, seqs: Vec<u64>) {
        if self.unanswered.len() < MAX_UNANSWERED {
            self.unanswered.push(seqs);
        }
    }

    /// One exchange; status 0 when it broke.
    pub(crate) fn call(&mut self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let bytes = body.map(|b| serde_json::to_vec(&b).expect("json"));
        match self.conn.call(method, path, bytes.as_deref()) {
            Ok(r) => r,
            Err(_) => {
                self.ops.broken += 1;
                (0, Value::Null)
            }
        }
    }

    fn call_json(&mut self, method: &str, path: &str, body: Value) -> Option<(u16, Value)> {
        let r = self.call(method, path, Some(body));
        (r.0 != 0).then_some(r)
    }

    pub(crate) fn violation(&mut self, v: String) {
        self.violation_count += 1;
        if self.violations.len() < MAX_VIOLATIONS_KEPT {
            self.violations.push(format!("worker {}: {v}", self.w));
        }
    }
}

pub(crate) fn user_body() -> Value {
    json!({"email": "u@example.com", "locale": "en-US"})
}

pub(crate) fn device_body(token: &str) -> Value {
    json!({"platform": "ios", "token": token})
}
