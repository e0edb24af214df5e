//! The campaign's accounting once the server has drained. Every notification answered `202`
//! whose targets the worker's device model leaves in doubt, that was sent more than once, or
//! that was received more than once, and a random sample of the rest, is read back with
//! `GET /v1/notifications/{id}`: its targets held against the model, each delivery's single
//! terminal state. The others' targets are the model's. The simulator's receipt log is held
//! against all of it: nothing lost, no device pushed that was not a target, no idempotency key
//! with two ids, and every re-send explained by a kill that came while it was in flight.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clarion_sim::apns::Receipt;
use serde_json::Value;

use super::conn::Conn;
use super::model::SeqRecord;

/// Threads reading notification statuses at the end.
const STATUS_READERS: usize = 4;
/// Problems listed word for word in the failure message; the rest are counted.
const MAX_LISTED: usize = 30;

/// One `kill -9`, as the campaign did it.
#[derive(Clone, Debug)]
pub struct Kill {
    /// Unix ms just before the signal.
    pub at_ms: u64,
    /// Unix ms when the next process was started.
    pub respawn_ms: u64,
    /// Whether `/healthz` answered just before: false means the process was still starting
    /// or replaying its log.
    pub was_healthy: bool,
}

/// What the accounting found.
#[derive(Debug, Default)]
pub struct Verdict {
    pub accepted: usize,
    /// Accepted notifications read back with `GET` (the rest are checked by their receipts).
    pub read_back: usize,
    /// Deliveries of the notifications read back.
    pub deliveries: usize,
    pub sent: usize,
    pub failed_dead_token: usize,
    pub lost: Vec<String>,
    pub problems: Vec<String>,
    pub problem_count: usize,
    /// Receipts beyond the first for a (seq, device).
    pub duplicates: u64,
    /// Re-sends the kill schedule does not explain.
    pub unexplained_duplicates: u64,
    /// The most receipts one (seq, device) got.
    pub max_receipts: usize,
    /// Receipts each killed process got through within `window_ms` before its kill (the most
    /// that could be in flight, unlogged, at the kill), summed over the kills.
    pub in_flight_bound: u64,
    /// The most re-sends one kill explains (the simulator lets 64 pushes be in flight at once).
    pub max_resent_one_kill: u64,
    /// Longest time from a re-sent delivery's earlier receipt to the kill that explains it.
    pub max_receipt_to_kill_ms: u64,
    /// Seqs received although never answered `202` (their answer was lost, never re-sent).
    pub delivered_unanswered: usize,
    /// Idempotency keys answered with two different ids.
    pub second_ids: usize,
}

impl Verdict {
    fn problem(&mut self, p: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_LISTED {
            self.problems.push(p);
        }
    }
}

/// Whether the worker's model fixes a notification's targets (no device of its user in doubt).
fn targets_known(rec: &SeqRecord) -> bool {
    rec.must == rec.may
}

/// The (seq, device) pairs that must reach the simulator, as far as the model knows them.
pub fn known_pairs(seqs: &HashMap<u64, SeqRecord>) -> Vec<(u64, String)> {
    seqs.iter()
        .filter(|(_, r)| !r.ids.is_empty() && targets_known(r))
        .flat_map(|(seq, r)| r.must.iter().map(|t| (*seq, t.clone())))
        .collect()
}

/// The accepted notifications to read back, as `(seq, id)`: those whose targets are in doubt,
/// those sent more than once or received more than once (`resent`), and `sample` of the rest.
pub fn pick_reads(
    seqs: &HashMap<u64, SeqRecord>,
    resent: &BTreeSet<u64>,
    sample: usize,
    rng: &mut fastrand::Rng,
) -> Vec<(u64, String)> {
    let mut must_read = Vec::new();
    let mut rest = Vec::new();
    for (seq, r) in seqs.iter().filter(|(_, r)| !r.ids.is_empty()) {
        let read = (*seq, r.ids[0].clone());
        if !targets_known(r) || r.sends > 1 || resent.contains(seq) {
            must_read.push(read);
        } else {
            rest.push(read);
        }
    }
    rest.sort_unstable();
    rng.shuffle(&mut rest);
    must_read.extend(rest.into_iter().take(sample));
    must_read
}

/// Every accepted notification's last status, and how reading them went.
pub struct Drain {
    pub statuses: HashMap<u64, Value>,
    /// Passes over the notifications not yet finished.
    pub rounds: u32,
    pub first_round: Duration,
    pub took: Duration,
}

/// Reads every accepted notification's status until all are finished or `timeout` passes.
pub fn read_statuses(
    addr: SocketAddr,
    key: &str,
    accepted: &[(u64, String)],
    timeout: Duration,
) -> Drain {
    let start = Instant::now();
    let mut rounds = 0;
    let mut first_round = Duration::ZERO;
    let mut done: HashMap<u64, Value> = HashMap::new();
    let mut pending: Vec<(u64, String)> = accepted.to_vec();
    while !pending.is_empty() {
        let chunk = pending.len().div_ceil(STATUS_READERS);
        let read: Vec<(u64, Value)> = std::thread::scope(|s| {
            let handles: Vec<_> = pending
                .chunks(chunk.max(1))
                .map(|part| {
                    s.spawn(move || {
                        let mut c = Conn::new(addr, key);
                        part.iter()
                            .filter_map(|(seq, id)| {
                                let path = format!("/v1/notifications/{id}");
                                match c.call("GET", &path, None) {
                                    Ok((200, v)) => Some((*seq, v)),
                                    _ => None,
                                }
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("status reader"))
                .collect()
        });
        for (seq, v) in read {
            done.insert(seq, v);
        }
        rounds += 1;
        if rounds == 1 {
            first_round = start.elapsed();
        }
        pending.retain(|(seq, _)| {
            done.get(seq)
                .is_none_or(|v| v["state"] != "finished" && v["state"] != "no_targets")
        });
        if pending.is_empty() || start.elapsed() > timeout {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Drain {
        statuses: done,
        rounds,
        first_round,
        took: start.elapsed(),
    }
}

/// Holds statuses and receipts against what the clients saw and when the kills came.
pub fn judge(
    seqs: &HashMap<u64, SeqRecord>,
    statuses: &HashMap<u64, Value>,
    receipts: &[Receipt],
    dead_tokens: &BTreeSet<String>,
    kills: &[Kill],
    window_ms: u64,
    late_ms: u64,
) -> Verdict {
    let mut v = Verdict::default();
    // (arrival ms, sending process) of each receipt, by (seq, device).
    let mut by_pair: HashMap<(u64, &str), Vec<(u64, usize)>> = HashMap::new();
    for r in receipts {
        by_pair
            .entry((r.seq, r.token.as_str()))
            .or_default()
            .push((r.at_ms, process_of(kills, r)));
    }
    for (seq, rec) in seqs {
        if rec.ids.len() > 1 {
            v.second_ids += 1;
            v.problem(format!(
                "seq {seq}: one idempotency key answered with {} ids {:?}",
                rec.ids.len(),
                rec.ids
            ));
        }
    }
    let mut targets_of: HashMap<u64, BTreeSet<String>> = HashMap::new();
    for (seq, rec) in seqs.iter().filter(|(_, r)| !r.ids.is_empty()) {
        v.accepted += 1;
        let targets = match statuses.get(seq) {
            Some(st) => {
                v.read_back += 1;
                check_status(&mut v, *seq, rec, st, dead_tokens)
            }
            None if targets_known(rec) => rec.must.clone(),
            None => {
                v.problem(format!("seq {seq} ({}): status never read", rec.ids[0]));
                continue;
            }
        };
        for t in &targets {
            if dead_tokens.contains(t) {
                continue;
            }
            if !by_pair.contains_key(&(*seq, t.as_str())) {
                v.lost
                    .push(format!("seq {seq} id {} device {t}", rec.ids[0]));
            }
        }
        targets_of.insert(*seq, targets);
    }
    let mut unanswered_seqs = BTreeSet::new();
    let mut per_kill = vec![0u64; kills.len()];
    for ((seq, token), times) in &mut by_pair {
        match targets_of.get(seq) {
            Some(t) if !t.contains(*token) => v.problem(format!(
                "seq {seq}: pushed to {token}, which is not one of its targets {t:?}"
            )),
            Some(_) => {}
            None => {
                unanswered_seqs.insert(*seq);
            }
        }
        times.sort_unstable();
        v.max_receipts = v.max_receipts.max(times.len());
        for pair in times.windows(2) {
            v.duplicates += 1;
            match explaining_kill(kills, pair[0], pair[1], window_ms, late_ms) {
                Some(k) => {
                    per_kill[pair[0].1] += 1;
                    v.max_receipt_to_kill_ms = v
                        .max_receipt_to_kill_ms
                        .max(k.at_ms.saturating_sub(pair[0].0));
                }
                None => {
                    v.unexplained_duplicates += 1;
                    v.problem(format!(
                        "seq {seq} device {token}: received at {:?} and again at {:?} (unix ms, process) \
                         with no kill of the first process within {window_ms} ms after the first",
                        pair[0], pair[1]
                    ));
                }
            }
        }
    }
    v.delivered_unanswered = unanswered_seqs.len();
    v.max_resent_one_kill = per_kill.iter().copied().max().unwrap_or(0);
    // What each kill could have caught in flight: its process's receipts within the window.
    let mut in_window = vec![0u64; kills.len()];
    for r in receipts {
        let p = process_of(kills, r);
        if let Some(k) = kills.get(p)
            && r.at_ms + window_ms >= k.at_ms
        {
            in_window[p] += 1;
        }
    }
    v.in_flight_bound = in_window.iter().sum();
    v
}

/// Which server process sent a receipt: process `i` runs from the `i`th start (0 the first)
/// until `kills[i]`. A connection belongs to the process that was running when its TLS
/// handshake completed, as a killed process cannot complete one and a new one cannot before it
/// starts.
fn process_of(kills: &[Kill], r: &Receipt) -> usize {
    kills.partition_point(|k| k.respawn_ms <= r.connected_at_ms)
}

/// The kill that explains receiving a delivery at `first` and again at `second` (each
/// `(unix ms, process)`): the kill of the first receipt's process, which came at most
/// `window_ms` after that receipt (before its `sent` could be logged; a receipt at most
/// `late_ms` after the kill is a push the dying process had written); and the second receipt
/// came from a later process. Each further re-send so needs a later process, and a kill of its
/// own.
fn explaining_kill(
    kills: &[Kill],
    first: (u64, usize),
    second: (u64, usize),
    window_ms: u64,
    late_ms: u64,
) -> Option<&Kill> {
    let k = kills.get(first.1)?;
    (second.1 > first.1 && first.0 + window_ms >= k.at_ms && first.0 <= k.at_ms + late_ms)
        .then_some(k)
}

/// Checks one notification's status; returns its targets.
fn check_status(
    v: &mut Verdict,
    seq: u64,
    rec: &SeqRecord,
    st: &Value,
    dead_tokens: &BTreeSet<String>,
) -> BTreeSet<String> {
    let id = &rec.ids[0];
    if st["id"] != id.as_str()
        || st["user_id"] != rec.user.as_str()
        || st["idempotency_key"] != format!("cc-{seq}").as_str()
    {
        v.problem(format!(
            "seq {seq}: status of {id} is another notification: {st}"
        ));
    }
    if st["state"] != "finished" && st["state"] != "no_targets" {
        v.problem(format!(
            "seq {seq}: {id} not finished after the drain: {st}"
        ));
    }
    let mut targets = BTreeSet::new();
    for d in st["deliveries"].as_array().into_iter().flatten() {
        v.deliveries += 1;
        let target = d["device_id"].as_str().unwrap_or_default().to_string();
        let state = d["state"].as_str().unwrap_or_default();
        let dead = dead_tokens.contains(&target);
        match (state, dead) {
            ("sent", false) => v.sent += 1,
            ("failed", true) => v.failed_dead_token += 1,
            _ => v.problem(format!(
                "seq {seq}: delivery to {target} ended {state}: {d}"
            )),
        }
        let terminal: Vec<&str> = d["history"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["state"].as_str())
            .filter(|s| matches!(*s, "sent" | "failed" | "dead" | "expired" | "suppressed"))
            .collect();
        let last = d["history"]
            .as_array()
            .and_then(|h| h.last())
            .and_then(|e| e["state"].as_str());
        if terminal.len() != 1 || last != Some(state) {
            v.problem(format!(
                "seq {seq}: delivery to {target} has terminal states {terminal:?} (last {last:?}, state {state})"
            ));
        }
        targets.insert(target);
    }
    if !rec.must.is_subset(&targets) || !targets.is_subset(&rec.may) {
        let missing: Vec<_> = rec.must.difference(&targets).collect();
        let extra: Vec<_> = targets.difference(&rec.may).collect();
        v.problem(format!(
            "seq {seq}: targets {targets:?} miss acknowledged devices {missing:?} or include removed ones {extra:?}"
        ));
    }
    targets
}
