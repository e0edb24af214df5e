//! A shard's connections to one provider endpoint: a fixed number of slots, each kept filled by a supervisor task that
//! reconnects with jittered exponential backoff, and the hand-out of streams: a request gets a
//! [`StreamPermit`] on the usable connection with a free stream (under the server's
//! SETTINGS_MAX_CONCURRENT_STREAMS) and the fewest in flight, or waits in line for one.
//! (A newcomer may take a stream freed just before the woken head of the line polls; the head
//! then queues again. Simpler than strict FIFO, and every wait is bounded by the request timeout.)

use super::connection::{Connection, Health};
use super::tls::Transport;
use super::tuning::Tuning;
use super::wait_queue::WaitQueue;
use crate::wait::{Signal, within};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

/// Bounds the doubling exponent so the shift cannot overflow; the cap is reached long before.
const MAX_BACKOFF_DOUBLINGS: u32 = 16;
/// After `shutdown` drops a connection, h2 sends GOAWAY and closes it; a connection still open
/// after this long (peer not reading) is cut.
const GOAWAY_GRACE: Duration = Duration::from_secs(2);

/// Connection counters, read by each channel's sender for its stats.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PoolStats {
    pub(crate) open: usize,
    pub(crate) reconnects: u64,
    pub(crate) connect_failures: u64,
    pub(crate) connections_lost: u64,
}

pub(crate) struct Pool {
    transport: Transport,
    tuning: Tuning,
    slots: Vec<RefCell<Option<Rc<Connection>>>>,
    /// Requests waiting for a free stream on a usable connection.
    streams: WaitQueue,
    /// The pool started closing (wakes supervisors out of their backoff).
    changed: Signal,
    closing: Cell<bool>,
    started: Cell<bool>,
    next_id: Cell<u64>,
    rng: Cell<u64>,
    stats: Cell<PoolStats>,
}

impl Pool {
    pub(crate) fn new(
        transport: Transport,
        connections: usize,
        tuning: Tuning,
        shard: usize,
    ) -> Pool {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
        Pool {
            transport,
            tuning,
            slots: (0..connections).map(|_| RefCell::new(None)).collect(),
            streams: WaitQueue::default(),
            changed: Signal::default(),
            closing: Cell::new(false),
            started: Cell::new(false),
            next_id: Cell::new((shard as u64) << 32),
            // Any non-zero seed will do: jitter only has to differ between shards and restarts.
            rng: Cell::new((nanos ^ (shard as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1),
            stats: Cell::new(PoolStats::default()),
        }
    }

    pub(crate) fn stats(&self) -> PoolStats {
        self.stats.get()
    }

    /// A stream to send on, connecting lazily on first use; `None` once closing. Waits in line
    /// while every connection is at the stream limit its server advertised, so a lost
    /// connection only fails the requests actually on it.
    pub(crate) async fn acquire(self: &Rc<Self>) -> Option<StreamPermit> {
        if !self.started.replace(true) {
            for slot in 0..self.slots.len() {
                glommio::spawn_local(supervise(self.clone(), slot)).detach();
            }
        }
        let claim = || {
            if self.closing.get() {
                return Some(None);
            }
            let conn = self.pick()?;
            conn.health.reserve_stream();
            Some(Some(conn))
        };
        let conn = self.streams.wait_for(claim).await?;
        if self.pick().is_some() {
            // Room for more (a new connection, a raised limit): pass the turn on.
            self.streams.wake_one();
        }
        Some(StreamPermit {
            conn,
            pool: self.clone(),
        })
    }

    /// The usable connection with a free stream and the fewest in flight.
    fn pick(&self) -> Option<Rc<Connection>> {
        let mut best: Option<Rc<Connection>> = None;
        for slot in &self.slots {
            let slot = slot.borrow();
            let Some(conn) = slot.as_ref() else { continue };
            if !conn.health.is_usable() || !conn.has_spare_streams() {
                continue;
            }
            if best
                .as_ref()
                .is_none_or(|b| conn.health.in_flight() < b.health.in_flight())
            {
                best = Some(conn.clone());
            }
        }
        best
    }

    /// Stops handing out connections; requests already running keep theirs.
    pub(crate) fn begin_close(&self) {
        self.closing.set(true);
        self.changed.notify();
        self.streams.wake_all();
    }

    /// Closes every connection: dropping the last handle makes h2 send GOAWAY and close; any
    /// connection not closed within [`GOAWAY_GRACE`] is cut.
    pub(crate) async fn shutdown(&self) {
        self.begin_close();
        let healths: Vec<Rc<Health>> = self
            .slots
            .iter()
            .filter_map(|s| s.borrow().as_ref().map(|c| c.health.clone()))
            .collect();
        for health in &healths {
            health.retire();
        }
        for health in &healths {
            if within(GOAWAY_GRACE, health.changed.wait_until(|| health.is_dead()))
                .await
                .is_none()
            {
                health.kill();
            }
        }
    }

    /// Cuts every connection at once (the sender was dropped without `close`).
    pub(crate) fn abort(&self) {
        self.begin_close();
        for slot in &self.slots {
            if let Some(conn) = slot.borrow().as_ref() {
                conn.health.kill();
            }
        }
    }

    fn update(&self, f: impl FnOnce(&mut PoolStats)) {
        let mut stats = self.stats.get();
        f(&mut stats);
        self.stats.set(stats);
    }

    /// Full-jitter-above-half exponential backoff: uniform in [d/2, d], d = base * 2^failures.
    fn backoff(&self, failures: u32) -> Duration {
        let exp = self
            .tuning
            .backoff_base
            .saturating_mul(1 << failures.min(MAX_BACKOFF_DOUBLINGS));
        let ceiling = exp.min(self.tuning.backoff_cap);
        // xorshift64: statistically fine for jitter, no syscall, no shared state.
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        let half = ceiling / 2;
        half + half.mul_f64((x >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// One stream reserved on a connection; dropping it frees the stream for the next in line.
pub(crate) struct StreamPermit {
    conn: Rc<Connection>,
    pool: Rc<Pool>,
}

impl StreamPermit {
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.conn.health.release_stream();
        self.pool.streams.wake_one();
    }
}

/// Keeps one slot filled until the pool closes. Never loops without a backoff pause.
async fn supervise(pool: Rc<Pool>, slot: usize) {
    let tuning = pool.tuning;
    let mut failures: u32 = 0;
    let mut first = true;
    while !pool.closing.get() {
        if !std::mem::take(&mut first) {
            pool.update(|s| s.reconnects += 1);
        }
        let id = pool.next_id.get();
        pool.next_id.set(id + 1);
        match within(
            tuning.connect_timeout,
            Connection::open(&pool.transport, id, tuning),
        )
        .await
        {
            Some(Ok(conn)) if pool.closing.get() => {
                conn.health.kill();
                return;
            }
            Some(Ok(conn)) => {
                tracing::info!(provider = pool.transport.provider(), connection = id, endpoint = %pool.transport.endpoint().authority, "connection open");
                *pool.slots[slot].borrow_mut() = Some(conn.clone());
                pool.update(|s| s.open += 1);
                pool.streams.wake_one();
                let health = conn.health.clone();
                health
                    .changed
                    .wait_until(|| health.is_dead() || health.is_retiring())
                    .await;
                pool.slots[slot].borrow_mut().take();
                pool.update(|s| s.open -= 1);
                if !pool.closing.get() {
                    pool.update(|s| s.connections_lost += 1);
                }
                let healthy = health.successes() > 0
                    || conn.opened_at.elapsed() >= tuning.stable_connection_age;
                failures = if healthy {
                    0
                } else {
                    failures.saturating_add(1)
                };
                drop(conn);
                if !health.is_dead() {
                    // Retired: it closes once its streams finish; cut it if they never do.
                    glommio::spawn_local(async move {
                        let closed = health.changed.wait_until(|| health.is_dead());
                        if within(tuning.request_timeout, closed).await.is_none() {
                            health.kill();
                        }
                    })
                    .detach();
                }
            }
            Some(Err(e)) => {
                failures = failures.saturating_add(1);
                pool.update(|s| s.connect_failures += 1);
                tracing::warn!(provider = pool.transport.provider(), connection = id, error = %e, failures, "connect failed");
            }
            None => {
                failures = failures.saturating_add(1);
                pool.update(|s| s.connect_failures += 1);
                tracing::warn!(
                    provider = pool.transport.provider(),
                    connection = id,
                    failures,
                    "connect timed out"
                );
            }
        }
        let delay = pool.backoff(failures);
        within(delay, pool.changed.wait_until(|| pool.closing.get())).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::h2client::Endpoint;

    fn pool(base_ms: u64, cap_ms: u64) -> Pool {
        let tuning = Tuning {
            backoff_base: Duration::from_millis(base_ms),
            backoff_cap: Duration::from_millis(cap_ms),
            ..Tuning::default()
        };
        let endpoint = Endpoint::parse("https://127.0.0.1:1").unwrap();
        Pool::new(
            Transport::new("test", endpoint, None).unwrap(),
            2,
            tuning,
            3,
        )
    }

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_the_cap() {
        let p = pool(100, 30_000);
        for failures in 0..8u32 {
            let ceiling = Duration::from_millis(100 << failures).min(Duration::from_secs(30));
            let delays: Vec<Duration> = (0..50).map(|_| p.backoff(failures)).collect();
            assert!(
                delays.iter().all(|d| *d >= ceiling / 2 && *d <= ceiling),
                "{failures}: {delays:?}"
            );
            assert!(delays.windows(2).any(|w| w[0] != w[1]), "jittered");
        }
        let capped = p.backoff(u32::MAX);
        assert!(capped >= Duration::from_secs(15) && capped <= Duration::from_secs(30));
        assert!(
            p.backoff(0) >= Duration::from_millis(50),
            "never a tight loop"
        );
    }
}
