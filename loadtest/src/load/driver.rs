//! The open-loop driver: issues each request at its intended time from the schedule, whatever
//! the answers do, and measures accept latency from the *intended* time to the answer
//! (coordinated-omission corrected: a stalled server shows as latency, not as fewer requests).
//! At most `max_in_flight` requests are outstanding; when that bound holds a request back, it
//! goes out late and its latency still counts from its intended time.
//!
//! The schedule is kept by a dedicated thread that sleeps to each intended time
//! (tokio's millisecond timer would add up to 1 ms to every latency), and hands each request
//! to the runtime, which sends it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::Method;
use serde::Deserialize;
use tokio::sync::{Semaphore, mpsc, watch};

use super::LoadConfig;
use super::client::{ApiClient, ApiResponse};
use super::schedule::Schedule;
use clarion_sim::histogram::latency_histogram;

/// Lead time between planning and the first intended send.
const START_DELAY: Duration = Duration::from_millis(20);
/// A request unanswered for this long counts as timed out.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Transport error messages kept for the report.
const ERROR_SAMPLES: usize = 5;

/// What the load phase measured.
#[derive(Debug)]
pub(crate) struct Measurements {
    /// Measured requests the server took up (any answer but `503`).
    pub(crate) accept_us: Histogram<u64>,
    /// Measured requests refused whole with `503` (overload shedding): how fast the refusal came.
    pub(crate) rejected_us: Histogram<u64>,
    pub(crate) http_status: BTreeMap<u16, u64>,
    pub(crate) item_status: BTreeMap<u16, u64>,
    /// Seqs answered 202, in no particular order.
    pub(crate) accepted: Vec<u64>,
    /// Of `accepted`, those answered 202 only when sent again (`load/resend.rs`).
    pub(crate) accepted_on_resend: u64,
    pub(crate) measured_accepted: u64,
    pub(crate) scheduled_items: u64,
    pub(crate) sent_requests: u64,
    /// Request body bytes sent.
    pub(crate) sent_bytes: u64,
    pub(crate) sent_items: u64,
    pub(crate) completed_requests: u64,
    pub(crate) transport_errors: u64,
    pub(crate) timeouts: u64,
    pub(crate) not_sent_items: u64,
    pub(crate) max_lag: Duration,
    /// Per request (warm-up included): actual send time minus intended time, in µs.
    pub(crate) send_lag_us: Histogram<u64>,
    pub(crate) error_samples: Vec<String>,
    /// From the first measured intended send to the last measured answer.
    pub(crate) measured_wall: Duration,
    /// Worst accept latency (µs) of the measured requests intended in each second of the run.
    pub(crate) worst_by_second_us: Vec<u64>,
    /// The schedule was ended early by [`drive_until`]'s `stop`.
    pub(crate) stopped_early: bool,
}

#[derive(Deserialize)]
struct BatchAnswer {
    results: Vec<BatchItem>,
}

#[derive(Deserialize)]
struct BatchItem {
    status: u16,
}

/// One request's items and times.
pub(crate) struct Shot {
    pub(crate) first_seq: u64,
    pub(crate) items: u64,
    pub(crate) intended: Instant,
    pub(crate) measured: bool,
}

impl Measurements {
    fn new() -> Self {
        Measurements {
            accept_us: latency_histogram(),
            rejected_us: latency_histogram(),
            http_status: BTreeMap::new(),
            item_status: BTreeMap::new(),
            accepted: Vec::new(),
            accepted_on_resend: 0,
            measured_accepted: 0,
            scheduled_items: 0,
            sent_requests: 0,
            sent_bytes: 0,
            sent_items: 0,
            completed_requests: 0,
            transport_errors: 0,
            timeouts: 0,
            not_sent_items: 0,
            max_lag: Duration::ZERO,
            send_lag_us: latency_histogram(),
            error_samples: Vec::new(),
            measured_wall: Duration::ZERO,
            worst_by_second_us: Vec::new(),
            stopped_early: false,
        }
    }

    pub(crate) fn record(
        &mut self,
        shot: &Shot,
        answer: Result<anyhow::Result<ApiResponse>, tokio::time::error::Elapsed>,
        measured_start: Instant,
    ) {
        let resp = match answer {
            Err(_) => return self.timeouts += 1,
            Ok(Err(e)) => {
                self.transport_errors += 1;
                if self.error_samples.len() < ERROR_SAMPLES {
                    self.error_samples.push(format!("{e:#}"));
                }
                return;
            }
            Ok(Ok(r)) => r,
        };
        self.completed_requests += 1;
        *self.http_status.entry(resp.status).or_insert(0) += 1;
        if shot.measured {
            let now = Instant::now();
            let latency_us = now.duration_since(shot.intended).as_micros() as u64;
            if resp.status == 503 {
                self.rejected_us.saturating_record(latency_us);
            } else {
                self.accept_us.saturating_record(latency_us);
            }
            let second = shot
                .intended
                .saturating_duration_since(measured_start)
                .as_secs() as usize;
            if self.worst_by_second_us.len() <= second {
                self.worst_by_second_us.resize(second + 1, 0);
            }
            let worst = &mut self.worst_by_second_us[second];
            *worst = (*worst).max(latency_us);
            self.measured_wall = self.measured_wall.max(now.duration_since(measured_start));
        }
        let statuses: Vec<u16> = match (shot.items, resp.status) {
            (1, s) => vec![s],
            (n, 200) => match serde_json::from_slice::<BatchAnswer>(&resp.body) {
                Ok(b) => {
                    let mut v: Vec<u16> = b.results.iter().map(|i| i.status).collect();
                    v.resize(n as usize, 0); // a missing result is status 0
                    v
                }
                Err(_) => vec![0; n as usize],
            },
            (n, s) => vec![s; n as usize],
        };
        for (i, status) in statuses.into_iter().enumerate() {
            *self.item_status.entry(status).or_insert(0) += 1;
            if status == 202 {
                self.accepted.push(shot.first_seq + i as u64);
                if shot.measured {
                    self.measured_accepted += 1;
                }
            }
        }
    }
}

fn lock(m: &Mutex<Measurements>) -> std::sync::MutexGuard<'_, Measurements> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Appends the notification object for one seq to `out`. Measured items carry `lt_ts` (the
/// intended send time, unix ns) for the simulator's end-to-end histogram; warm-up items only
/// `lt_seq`. The user is `register::user_id(prefix, seq % users)`. Written in place: a batch of
/// 100 is built with one growing buffer, not a few strings per item.
fn write_notification(out: &mut String, cfg: &LoadConfig, seq: u64, lt_ts: Option<u64>) {
    use std::fmt::Write as _;
    let prefix = &cfg.user_prefix;
    let user = (seq % u64::from(cfg.users.max(1))) as u32;
    let _ = write!(
        out,
        r#"{{"user_id":"{prefix}{user}","idempotency_key":"{prefix}-{seq}","title":"Load test","body":"Notification {seq}","data":{{"lt_seq":{seq}"#
    );
    if let Some(ts) = lt_ts {
        let _ = write!(out, r#","lt_ts":{ts}"#);
    }
    out.push_str(r#"},"category":"loadtest","priority":"high","ttl_seconds":3600}"#);
}

pub(crate) fn request_body(
    cfg: &LoadConfig,
    first_seq: u64,
    items: u64,
    lt_ts: Option<u64>,
) -> Bytes {
    // About 230 bytes per item; one allocation for the whole body in the usual case.
    let mut out = String::with_capacity(32 + 256 * items as usize);
    if cfg.batch <= 1 {
        write_notification(&mut out, cfg, first_seq, lt_ts);
        return Bytes::from(out);
    }
    out.push_str(r#"{"notifications":["#);
    for (i, seq) in (first_seq..first_seq + items).enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_notification(&mut out, cfg, seq, lt_ts);
    }
    out.push_str("]}");
    Bytes::from(out)
}

/// The longest single nap of the pacer, so that it notices soon when the run is over.
const MAX_NAP: Duration = Duration::from_millis(20);
/// Ticks the pacer may run ahead of the dispatcher (which waits for `max_in_flight` permits).
const TICK_QUEUE: usize = 1 << 16;

/// The pacer's word that request `k`, intended at `t0 + offset`, is due now.
#[derive(Debug)]
struct Tick {
    k: u64,
    offset: Duration,
    measured: bool,
}

/// The pacing thread: for each entry of the schedule, sleeps until its intended time and hands
/// it over. It never spins (a spinning pacer would take a core from the server on a small
/// machine): with the timer slack cut, a sleep overshoots by the wake-up, tens of µs, and at
/// high rates every tick that fell due during one sleep goes out at once after it. tokio's timer would not do: it rounds
/// up to whole milliseconds, and since latency counts from the intended time, every request
/// would carry up to 1 ms of the generator's own lag. Stops early when the dispatcher is gone.
fn pace(schedule: impl Iterator<Item = (Duration, bool)>, t0: Instant, ticks: mpsc::Sender<Tick>) {
    cut_timer_slack();
    for (k, (offset, measured)) in schedule.enumerate() {
        if !wait_until(t0 + offset, &ticks) {
            return;
        }
        let tick = Tick {
            k: k as u64,
            offset,
            measured,
        };
        // Blocks only while the dispatcher is `TICK_QUEUE` ticks behind (out of permits);
        // those requests are late anyway, and their lag counts from their intended time.
        if ticks.blocking_send(tick).is_err() {
            return;
        }
    }
}

/// Waits until `deadline`; false if the dispatcher went away meanwhile.
fn wait_until(deadline: Instant, ticks: &mpsc::Sender<Tick>) -> bool {
    loop {
        let now = Instant::now();
        let Some(left) = deadline
            .checked_duration_since(now)
            .filter(|d| !d.is_zero())
        else {
            return true;
        };
        if ticks.is_closed() {
            return false;
        }
        std::thread::sleep(left.min(MAX_NAP));
    }
}

/// Lets this thread's sleeps end when asked rather than up to 50 µs later (Linux's default
/// timer slack).
#[cfg(target_os = "linux")]
fn cut_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and only changes the calling
    // thread's timer slack; a failure leaves the default slack, which costs only precision.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

#[cfg(not(target_os = "linux"))]
fn cut_timer_slack() {}

/// Runs the warm-up and the measured phase; returns when every request was answered, timed
/// out, or the hard deadline (end of schedule plus [`REQUEST_TIMEOUT`]) passed.
pub(crate) async fn drive(
    client: Arc<ApiClient>,
    cfg: &LoadConfig,
) -> anyhow::Result<Measurements> {
    // The sender stays alive (and never sends) until the schedule is done.
    let (_never, stop) = watch::channel(false);
    drive_until(client, cfg, stop).await
}

/// Resolves once `stop` holds `true`; never if its sender is gone without saying so.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// [`drive`], ending the schedule early when `stop` turns `true`: no request is sent after
/// that, those already sent are awaited, and `scheduled_items` becomes what was sent (so the
/// ledger range of the run is exactly the seqs sent). The outage run uses this to keep one
/// open-loop intake going through all its phases.
///
/// A pacing thread ([`pace`]) keeps the schedule; this task takes its ticks in order, waits
/// for a `max_in_flight` permit and spawns the request.
pub(crate) async fn drive_until(
    client: Arc<ApiClient>,
    cfg: &LoadConfig,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Measurements> {
    let batch = cfg.batch.max(1) as u64;
    let per_request = batch as f64;
    let warmup = Schedule::new(cfg.rate / per_request, cfg.warmup, None).map(|t| (t, false));
    let burst = cfg.bursts.map(|b| super::Burst {
        rate: b.rate / per_request,
        ..b
    });
    let main = Schedule::new(cfg.rate / per_request, cfg.duration, burst);
    let total_requests =
        Schedule::new(cfg.rate / per_request, cfg.warmup, None).total() + main.total();
    let warmup_len = cfg.warmup;
    let schedule = warmup.chain(main.map(move |t| (t + warmup_len, true)));

    let path = if cfg.batch <= 1 {
        "/v1/notifications"
    } else {
        "/v1/notifications/batch"
    };
    let rec = Arc::new(Mutex::new(Measurements::new()));
    let permits = Arc::new(Semaphore::new(cfg.max_in_flight.max(1)));
    let t0 = Instant::now() + START_DELAY;
    let unix_t0_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        + START_DELAY.as_nanos() as u64;
    let measured_start = t0 + cfg.warmup;
    let hard_deadline = t0 + cfg.warmup + cfg.duration + REQUEST_TIMEOUT;
    lock(&rec).scheduled_items = total_requests * batch;

    let (tx, mut ticks) = mpsc::channel(TICK_QUEUE);
    // Detached: it ends after the last tick, or soon after `ticks` is dropped.
    std::thread::Builder::new()
        .name("clarion-pacer".into())
        .spawn(move || pace(schedule, t0, tx))
        .context("start the pacing thread")?;

    let mut stopped_early = false;
    loop {
        let next = tokio::select! {
            biased;
            () = stopped(&mut stop) => None,
            t = ticks.recv() => t,
        };
        let Some(Tick {
            k,
            offset,
            measured,
        }) = next
        else {
            stopped_early = *stop.borrow();
            break;
        };
        let intended = t0 + offset;
        let permit =
            tokio::time::timeout_at(hard_deadline.into(), permits.clone().acquire_owned()).await;
        let Ok(Ok(permit)) = permit else {
            lock(&rec).not_sent_items = (total_requests - k) * batch;
            break;
        };
        let shot = Shot {
            first_seq: cfg.seq_start + k * batch,
            items: batch,
            intended,
            measured,
        };
        let lt_ts = measured.then(|| unix_t0_ns + offset.as_nanos() as u64);
        let body = request_body(cfg, shot.first_seq, batch, lt_ts);
        {
            let mut m = lock(&rec);
            m.sent_requests += 1;
            m.sent_bytes += body.len() as u64;
            m.sent_items += batch;
        }
        let (client, rec) = (client.clone(), rec.clone());
        tokio::spawn(async move {
            // The request leaves now: the send lag includes the hand-over from the pacer, the
            // wait for a permit and this task's scheduling.
            let lag = Instant::now().saturating_duration_since(shot.intended);
            {
                let mut m = lock(&rec);
                m.max_lag = m.max_lag.max(lag);
                m.send_lag_us.saturating_record(lag.as_micros() as u64);
            }
            let answer =
                tokio::time::timeout(REQUEST_TIMEOUT, client.send(Method::POST, path, body)).await;
            lock(&rec).record(&shot, answer, measured_start);
            drop(permit);
        });
    }
    drop(ticks);
    let all = u32::try_from(cfg.max_in_flight.max(1)).unwrap_or(u32::MAX);
    let deadline = if stopped_early {
        // What was sent is answered or timed out within REQUEST_TIMEOUT.
        hard_deadline.min(Instant::now() + REQUEST_TIMEOUT + Duration::from_secs(1))
    } else {
        hard_deadline
    };
    let _ = tokio::time::timeout_at(deadline.into(), permits.acquire_many(all)).await;
    let mut m = lock(&rec);
    if stopped_early {
        m.scheduled_items = m.sent_items;
        m.stopped_early = true;
    }
    Ok(std::mem::replace(&mut *m, Measurements::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_seq_and_intended_time() {
        let cfg = LoadConfig {
            users: 10,
            user_prefix: "u".into(),
            ..LoadConfig::default()
        };
        let item = |seq, ts| {
            let mut out = String::new();
            write_notification(&mut out, &cfg, seq, ts);
            serde_json::from_str::<serde_json::Value>(&out).expect("json")
        };
        let one = item(23, Some(99));
        assert_eq!(one["user_id"], "u3");
        assert_eq!(one["user_id"], super::super::register::user_id("u", 3));
        assert_eq!(one["idempotency_key"], "u-23");
        assert_eq!(one["data"]["lt_seq"], 23);
        assert_eq!(one["data"]["lt_ts"], 99);
        assert_eq!(one["priority"], "high");
        let warm = item(5, None);
        assert!(warm["data"].get("lt_ts").is_none());
        assert_eq!(warm["data"]["lt_seq"], 5);

        let cfg = LoadConfig { batch: 3, ..cfg };
        let b: serde_json::Value =
            serde_json::from_slice(&request_body(&cfg, 7, 3, Some(1))).expect("json");
        let seqs: Vec<u64> = b["notifications"]
            .as_array()
            .expect("array")
            .iter()
            .map(|n| n["data"]["lt_seq"].as_u64().expect("seq"))
            .collect();
        assert_eq!(seqs, vec![7, 8, 9]);
    }

    #[test]
    fn batch_answers_accept_item_by_item() {
        let mut m = Measurements::new();
        // Intended 3 ms ago, so the recorded latency is at least that on any machine.
        let start = Instant::now() - std::time::Duration::from_millis(3);
        let shot = Shot {
            first_seq: 10,
            items: 3,
            intended: start,
            measured: true,
        };
        let body = r#"{"results":[{"status":202,"id":"a"},{"status":429,"error":{"code":"x","message":"y"}},{"status":202,"id":"b"}]}"#;
        m.record(
            &shot,
            Ok(Ok(ApiResponse {
                status: 200,
                body: Bytes::from(body),
            })),
            start,
        );
        assert_eq!(m.accepted, vec![10, 12]);
        assert_eq!(m.item_status.get(&202), Some(&2));
        assert_eq!(m.item_status.get(&429), Some(&1));
        assert_eq!(m.measured_accepted, 2);
        let shot = Shot {
            first_seq: 20,
            items: 2,
            intended: start,
            measured: false,
        };
        m.record(
            &shot,
            Ok(Ok(ApiResponse {
                status: 503,
                body: Bytes::new(),
            })),
            start,
        );
        assert_eq!(m.item_status.get(&503), Some(&2));
        assert_eq!(m.accept_us.len(), 1, "warm-up answers are not timed");
        assert_eq!(m.worst_by_second_us.len(), 1, "one measured second");
        assert!(m.worst_by_second_us[0] >= 3_000);
        assert_eq!(m.http_status.get(&200), Some(&1));
    }
}
