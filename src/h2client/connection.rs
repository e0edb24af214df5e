//! One persistent HTTP/2 connection to a provider: the handshake, the driver task that runs the h2
//! state machine, the PING health check, its [`Health`] (dead, retiring, in-flight streams), and
//! the round trip of one request on it.

use super::tls::{ConnectError, Transport};
use super::tuning::Tuning;
use crate::wait::{Signal, within};
use bytes::Bytes;
use futures_lite::future;
use h2::client::SendRequest;
use http::{HeaderMap, Request, StatusCode};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;
use tokio_util::compat::FuturesAsyncReadCompatExt;

/// Per-stream receive window: a provider's answer is small, but a generous window costs nothing.
const STREAM_WINDOW_BYTES: u32 = 1 << 20;
/// Connection receive window, as in the measured ceilings.
const CONNECTION_WINDOW_BYTES: u32 = 1 << 24;
/// Streams we may open before the server's SETTINGS arrive: APNs allows one until the first
/// request succeeds, then raises the limit in a new SETTINGS frame; h2 obeys whatever any
/// server says, so starting at one is right for every provider.
const INITIAL_MAX_SEND_STREAMS: usize = 1;
/// Error bodies are small JSON documents (APNs' `{"reason":..,"timestamp":..}`, Google's
/// `{"error":{"code":..,"status":..,"details":[..]}}`); past this the rest is dropped: the
/// classification needs only the start, and a hostile server cannot make us buffer more.
const MAX_ERROR_BODY_BYTES: usize = 4096;

/// Shared state of one connection, watched by the pool, the driver and the pinger.
pub(crate) struct Health {
    dead: Cell<bool>,
    /// Picked for no new request (503 Shutdown, or the sender is closing).
    retiring: Cell<bool>,
    /// Driver should drop the connection now (failed PING, close, sender dropped).
    kill: Cell<bool>,
    in_flight: Cell<usize>,
    successes: Cell<u64>,
    /// Last answer or PONG received.
    last_activity: Cell<Instant>,
    pub(crate) changed: Signal,
}

impl Health {
    fn new() -> Health {
        Health {
            dead: Cell::new(false),
            retiring: Cell::new(false),
            kill: Cell::new(false),
            in_flight: Cell::new(0),
            successes: Cell::new(0),
            last_activity: Cell::new(Instant::now()),
            changed: Signal::default(),
        }
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.dead.get()
    }
    pub(crate) fn is_usable(&self) -> bool {
        !self.dead.get() && !self.retiring.get() && !self.kill.get()
    }
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.get()
    }
    /// Claims one stream; the pool does this before a request is started, so requests never
    /// queue inside h2 beyond what the server allows.
    pub(crate) fn reserve_stream(&self) {
        self.in_flight.set(self.in_flight.get() + 1);
    }
    /// Gives a stream back. No notify: nothing waits on a connection's stream count (the pool's
    /// queue is woken instead), and waking the driver, pinger and supervisor after every answer
    /// would cost three task polls per request.
    pub(crate) fn release_stream(&self) {
        self.in_flight.set(self.in_flight.get() - 1);
    }
    pub(crate) fn successes(&self) -> u64 {
        self.successes.get()
    }
    pub(crate) fn is_retiring(&self) -> bool {
        self.retiring.get()
    }
    pub(crate) fn retire(&self) {
        self.retiring.set(true);
        self.changed.notify();
    }
    pub(crate) fn kill(&self) {
        self.kill.set(true);
        self.changed.notify();
    }
    fn set_dead(&self) {
        self.dead.set(true);
        self.changed.notify();
    }
}

/// What came back for one request.
pub(crate) struct RawResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    /// At most [`MAX_ERROR_BODY_BYTES`]; empty (no allocation) for the usual 200.
    pub(crate) body: Vec<u8>,
}

/// Why a request got no answer.
#[derive(Debug)]
pub(crate) enum StreamError {
    /// The server never processed it: the connection could not open the stream (closing), or
    /// a graceful GOAWAY (NO_ERROR) named a last stream below it. Safe to send again at once.
    NotSent,
    /// The server reset the stream with REFUSED_STREAM: not processed (RFC 9113, 8.7), and the
    /// connection itself may be fine. Safe to send again at once.
    Refused,
    /// GOAWAY with an error, I/O error, or the connection was dropped under the request: it
    /// may or may not have been delivered.
    ConnectionLost,
    /// The server reset just this stream for another reason; the connection may be fine.
    Reset(h2::Reason),
}

/// An open HTTP/2 connection; `Rc`-shared by the pool and the requests running on it.
pub(crate) struct Connection {
    pub(crate) opened_at: Instant,
    sender: SendRequest<Bytes>,
    pub(crate) health: Rc<Health>,
    /// No request has been built for this connection yet (see [`Connection::take_first_request`]).
    first_request: Cell<bool>,
}

impl Connection {
    /// Connects, handshakes and spawns the driver and the pinger on the current executor.
    pub(crate) async fn open(
        transport: &Transport,
        id: u64,
        tuning: Tuning,
    ) -> Result<Rc<Connection>, ConnectError> {
        let tls = transport.connect().await?;
        let provider = transport.provider();
        let (sender, mut driver) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
            .enable_push(false)
            .handshake::<_, Bytes>(tls.compat())
            .await
            .map_err(ConnectError::Handshake)?;
        let health = Rc::new(Health::new());
        let pinger = driver.ping_pong();
        let watched = health.clone();
        glommio::spawn_local(async move {
            let killed = watched.changed.wait_until(|| watched.kill.get());
            let result = future::or(async { Some(driver.await) }, async {
                killed.await;
                None
            })
            .await;
            match result {
                Some(Ok(())) => tracing::debug!(provider, connection = id, "connection closed"),
                Some(Err(e)) => {
                    tracing::info!(provider, connection = id, error = %e, "connection lost")
                }
                None => tracing::info!(provider, connection = id, "connection dropped"),
            }
            watched.set_dead();
        })
        .detach();
        if let Some(pinger) = pinger {
            glommio::spawn_local(keep_alive(health.clone(), pinger, (provider, id), tuning))
                .detach();
        }
        Ok(Rc::new(Connection {
            opened_at: Instant::now(),
            sender,
            health,
            first_request: Cell::new(true),
        }))
    }

    /// True once per connection, for the request that may index its per-notification headers
    /// (a new connection starts with an empty HPACK table).
    fn take_first_request(&self) -> bool {
        self.first_request.replace(false)
    }

    /// Whether the server's `SETTINGS_MAX_CONCURRENT_STREAMS` leaves room for another stream now.
    pub(crate) fn has_spare_streams(&self) -> bool {
        self.health.in_flight() < self.sender.current_max_send_streams()
    }

    /// Sends one request with its body and reads the answer (the body only if it is an error).
    /// The caller holds a stream reserved with [`Health::reserve_stream`]. `build` makes the
    /// request once the stream may start, told whether it is the connection's first (see
    /// `PreparedRequest::to_request`): decided then, so that it is the first one h2 encodes.
    pub(crate) async fn round_trip(
        &self,
        build: impl FnOnce(bool) -> Request<()>,
        body: Bytes,
    ) -> Result<RawResponse, StreamError> {
        let lost = |e: h2::Error| self.classify_error(e);
        // A handle of our own: h2 tracks a stream waiting for capacity per handle. With the
        // stream reserved by the pool this does not wait, unless the server just lowered
        // SETTINGS_MAX_CONCURRENT_STREAMS, in which case h2 holds the stream until one ends.
        let mut sender = self
            .sender
            .clone()
            .ready()
            .await
            .map_err(|_| StreamError::NotSent)?;
        let request = build(self.take_first_request());
        let (response, mut stream) = sender
            .send_request(request, false)
            .map_err(|_| StreamError::NotSent)?;
        stream.send_data(body, true).map_err(lost)?;
        let response = response.await.map_err(lost)?;
        // Only answers prove the connection alive; a stalled stream must not postpone the PING.
        self.health.last_activity.set(Instant::now());
        let (parts, mut recv) = response.into_parts();
        let mut body = Vec::new();
        if parts.status != StatusCode::OK || !recv.is_end_stream() {
            while let Some(chunk) = recv.data().await {
                let chunk = chunk.map_err(lost)?;
                let _ = recv.flow_control().release_capacity(chunk.len());
                let room = MAX_ERROR_BODY_BYTES.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
        }
        if parts.status.is_success() {
            self.health.successes.set(self.health.successes.get() + 1);
        }
        Ok(RawResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    fn classify_error(&self, e: h2::Error) -> StreamError {
        let remote_reason = e.reason().filter(|_| e.is_remote());
        if e.is_go_away() && remote_reason == Some(h2::Reason::NO_ERROR) {
            // h2 gives a stream the peer's GOAWAY error only when its id is above the GOAWAY's
            // last stream id; processed streams that die later see an I/O error instead.
            return StreamError::NotSent;
        }
        match e.reason() {
            Some(h2::Reason::REFUSED_STREAM) if e.is_reset() && e.is_remote() => {
                StreamError::Refused
            }
            Some(reason) if e.is_reset() && !self.health.is_dead() && !e.is_go_away() => {
                StreamError::Reset(reason)
            }
            _ => StreamError::ConnectionLost,
        }
    }
}

/// PINGs the connection once no answer arrived for the interval (idle, or stalled with requests
/// in flight); a PONG missing past the timeout kills it.
async fn keep_alive(
    health: Rc<Health>,
    mut pinger: h2::PingPong,
    (provider, id): (&'static str, u64),
    tuning: Tuning,
) {
    loop {
        let idle = health.last_activity.get().elapsed();
        let wait = tuning.ping_idle_interval.saturating_sub(idle);
        if !wait.is_zero() {
            // Wakes early only to notice the connection ending.
            let ended = health
                .changed
                .wait_until(|| health.dead.get() || health.kill.get());
            if within(wait, ended).await.is_some() {
                return;
            }
            continue;
        }
        match within(tuning.ping_timeout, pinger.ping(h2::Ping::opaque())).await {
            Some(Ok(_)) => health.last_activity.set(Instant::now()),
            Some(Err(_)) => return, // The connection ended; the driver reports it.
            None => {
                tracing::warn!(
                    provider,
                    connection = id,
                    "connection missed its PING deadline; replacing it"
                );
                health.kill();
                return;
            }
        }
    }
}
