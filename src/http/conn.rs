//! One accepted connection, from accept to close: served with hyper while it behaves, and
//! closed when it breaks a time limit. hyper's own HTTP/1.1 header timeout runs from the end of
//! the previous response, so it would also close every idle keep-alive connection after it; the
//! limits are kept here instead, from what the connection reads and the requests it has in
//! flight:
//!
//! - a new connection must have sent a complete request head within the header timeout (both
//!   protocols: this also bounds hyper's wait for the first bytes that tell the protocol);
//! - on HTTP/1.1, a request head must be complete within the header timeout of its first byte;
//! - a connection with no request in flight is closed after the idle timeout (HTTP/2 with
//!   GOAWAY).
//!
//! A request body's time and size are `body.rs`'s. A connection past the shard's limit is
//! answered `503` by `refuse`, and closed.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use hyper::service::service_fn;
use tracing::debug;

use super::body::ConnBodies;
use super::rt::HyperIo;
use super::{Ingress, service};
use crate::api::error::ApiError;
use crate::sync::Latch;

/// Time a connection gets to finish its in-flight requests after stop.
pub(super) const CONNECTION_DRAIN: Duration = Duration::from_secs(5);
/// Time an HTTP/2 connection closed for a time limit gets for hyper's goodbye (GOAWAY): it has
/// no request in flight. An HTTP/1.1 one is closed at once.
const TIMED_OUT_DRAIN: Duration = Duration::from_secs(1);
/// Time a refused connection is kept to read its request and write the `503`.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// What one connection has done, as its time limits need it.
#[derive(Debug)]
struct Activity {
    /// Requests whose handler is running.
    in_flight: Cell<u32>,
    /// Requests started so far.
    started: Cell<u64>,
    /// Since when no request has been in flight (the accept, at first).
    quiet_since: Cell<Instant>,
    /// The first byte read while no request was in flight: a request head is arriving.
    head_since: Cell<Option<Instant>>,
    /// The connection speaks HTTP/2 (its first bytes were the preface).
    http2: Cell<bool>,
    /// Bytes read so far.
    read: Cell<u64>,
    /// Which limit the connection broke, once it has.
    expired_for: Cell<&'static str>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: Cell::new(0),
            started: Cell::new(0),
            quiet_since: Cell::new(Instant::now()),
            head_since: Cell::new(None),
            http2: Cell::new(false),
            read: Cell::new(0),
            expired_for: Cell::new(""),
        }
    }

    fn on_read(&self, bytes: &[u8]) {
        if self.read.get() == 0 {
            self.http2.set(bytes.starts_with(b"PRI "));
        }
        self.read.set(self.read.get() + bytes.len() as u64);
        if self.in_flight.get() == 0 && self.head_since.get().is_none() {
            self.head_since.set(Some(Instant::now()));
        }
    }

    fn request_started(&self) {
        self.in_flight.set(self.in_flight.get() + 1);
        self.started.set(self.started.get() + 1);
        self.head_since.set(None);
    }

    fn request_ended(&self) {
        let n = self.in_flight.get().saturating_sub(1);
        self.in_flight.set(n);
        if n == 0 {
            self.quiet_since.set(Instant::now());
        }
    }

    /// When the connection breaks a limit if nothing changes, and which; `None` while a
    /// request is in flight.
    fn deadline(&self, header: Duration, idle: Duration) -> Option<(Instant, &'static str)> {
        if self.in_flight.get() > 0 {
            return None;
        }
        let mut due = if self.started.get() == 0 {
            (
                self.quiet_since.get() + header,
                "no request within the header timeout",
            )
        } else {
            (self.quiet_since.get() + idle, "idle")
        };
        if let Some(head) = self.head_since.get().filter(|_| !self.http2.get()) {
            if head + header < due.0 {
                due = (
                    head + header,
                    "request head not complete within the header timeout",
                );
            }
        }
        Some(due)
    }

    /// Resolves when the connection breaks a limit, with which.
    async fn expired(&self, header: Duration, idle: Duration) -> &'static str {
        loop {
            let now = Instant::now();
            let wait = match self.deadline(header, idle) {
                Some((at, why)) if at <= now => return why,
                Some((at, _)) => at - now,
                // A request in flight: its body has a timeout of its own; look again later.
                None => header.min(idle),
            };
            glommio::timer::sleep(wait).await;
        }
    }
}

/// Ends a request for its connection's activity when dropped (also when hyper drops the
/// handler of a stream the client reset).
struct InFlight(Rc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// The socket (or its TLS session) as hyper reads it, telling the connection's activity what
/// arrives.
struct Watched<S> {
    stream: S,
    activity: Rc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if let Some(bytes) = buf.get(..n).filter(|b| !b.is_empty()) {
                this.activity.on_read(bytes);
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}

/// One of a shard's connections, counted in `Ingress::open` (or `refusing`) from its accept
/// until it is closed.
pub(super) struct Slot {
    ingress: Rc<Ingress>,
    refused: bool,
}

impl Slot {
    pub(super) fn open(ingress: Rc<Ingress>) -> Slot {
        Slot::take(ingress, false)
    }

    pub(super) fn refused(ingress: Rc<Ingress>) -> Slot {
        Slot::take(ingress, true)
    }

    fn take(ingress: Rc<Ingress>, refused: bool) -> Slot {
        let s = Slot { ingress, refused };
        s.counter().set(s.counter().get() + 1);
        s
    }

    fn counter(&self) -> &Cell<usize> {
        if self.refused {
            &self.ingress.refusing
        } else {
            &self.ingress.open
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let c = self.counter();
        c.set(c.get().saturating_sub(1));
    }
}

/// Serves one connection until it ends, breaks a time limit, or the shard stops; with TLS on
/// the API, after its handshake (which must end within the header timeout).
pub(super) async fn serve(slot: Slot, stream: TcpStream, stop: Latch) {
    let ingress = slot.ingress.clone();
    let Some(tls) = &ingress.tls else {
        return serve_io(slot, stream, stop).await;
    };
    let header_timeout = ingress.limits.header_timeout;
    let handshake =
        futures_lite::future::or(async { Some(tls.acceptor.accept(stream).await) }, async {
            glommio::timer::sleep(header_timeout).await;
            None
        })
        .await;
    match handshake {
        Some(Ok(session)) => serve_io(slot, session, stop).await,
        Some(Err(e)) => debug!(error = %e, "TLS handshake failed"),
        None => debug!("TLS handshake timed out"),
    }
}

async fn serve_io<S>(slot: Slot, stream: S, stop: Latch)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let ingress = &slot.ingress;
    let activity = Rc::new(Activity::new());
    let bodies = Rc::new(ConnBodies::new(ingress.bodies.clone(), &ingress.limits));
    let svc = {
        let (api, activity) = (ingress.api.clone(), activity.clone());
        let metrics_only = ingress.metrics_only;
        service_fn(move |req| {
            activity.request_started();
            let in_flight = InFlight(activity.clone());
            let (api, bodies) = (api.clone(), bodies.clone());
            async move {
                let answer = if metrics_only {
                    service::handle_metrics_only(api, req).await
                } else {
                    service::handle(api, &bodies, req).await
                };
                drop(in_flight);
                answer
            }
        })
    };
    let io = HyperIo(Watched {
        stream,
        activity: activity.clone(),
    });
    let conn = ingress.builder.serve_connection(io, svc);
    futures_lite::pin!(conn);
    // The time limits are watched by a task of their own, so that the connection's task, woken
    // for every frame, polls only a latch beside the connection, not a timer. The task is
    // cancelled when this one ends and drops it.
    let expired = Latch::default();
    let _watch = {
        let (activity, expired) = (activity.clone(), expired.clone());
        let limits = ingress.limits;
        glommio::spawn_local(async move {
            let why = activity
                .expired(limits.header_timeout, limits.idle_timeout)
                .await;
            activity.expired_for.set(why);
            expired.set();
        })
    };
    let close = futures_lite::future::or(
        async {
            if let Err(e) = conn.as_mut().await {
                debug!(error = %e, "connection ended");
            }
            None
        },
        futures_lite::future::or(
            async {
                stop.wait().await;
                Some(("stopping", CONNECTION_DRAIN))
            },
            async {
                expired.wait().await;
                Some((activity.expired_for.get(), TIMED_OUT_DRAIN))
            },
        ),
    )
    .await;
    if let Some((why, drain)) = close {
        debug!(reason = why, "closing connection");
        if drain == TIMED_OUT_DRAIN && !activity.http2.get() {
            // Nothing in flight, and HTTP/1.1 has no goodbye to send: hyper's graceful
            // shutdown would wait for a half-sent head to end.
            return;
        }
        conn.as_mut().graceful_shutdown();
        let _ = futures_lite::future::or(
            async {
                let _ = conn.as_mut().await;
            },
            glommio::timer::sleep(drain),
        )
        .await;
    }
}

/// Answers a connection past the shard's limit: every request on it gets `503` with
/// `Retry-After` (HTTP/1.1 with `Connection: close`), and it is closed after
/// `REFUSAL_LINGER` at most. Over TLS it is closed without an answer: a handshake would cost
/// the shard what the limit is there to spare.
pub(super) async fn refuse(slot: Slot, stream: TcpStream) {
    let ingress = &slot.ingress;
    if ingress.tls.is_some() {
        return;
    }
    let limit = ingress.limits.max_connections_per_shard;
    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let mut r = service::error_response(&ApiError {
            retry_after_s: Some(1),
            ..ApiError::new(
                503,
                "too_many_connections",
                format!(
                    "this server core has {limit} connections open, its limit; retry later, \
                     or reuse a connection"
                ),
            )
        });
        if req.version() < http::Version::HTTP_2 {
            r.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        async move { Ok::<_, std::convert::Infallible>(r) }
    });
    let conn = ingress.builder.serve_connection(HyperIo(stream), svc);
    let _ = futures_lite::future::or(
        async {
            let _ = conn.await;
        },
        glommio::timer::sleep(REFUSAL_LINGER),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(75);

    #[test]
    fn deadlines_follow_what_the_connection_does() {
        let a = Activity::new();
        let accepted = a.quiet_since.get();
        // Nothing yet: the first request is due within the header timeout.
        assert_eq!(
            a.deadline(HEADER, IDLE).map(|d| d.0),
            Some(accepted + HEADER)
        );
        a.request_started();
        assert_eq!(a.deadline(HEADER, IDLE), None);
        a.request_ended();
        let quiet = a.quiet_since.get();
        assert_eq!(a.deadline(HEADER, IDLE).map(|d| d.0), Some(quiet + IDLE));
        // HTTP/1.1 bytes of a next head: due within the header timeout of the first.
        a.on_read(b"GET / HT");
        let head = a.head_since.get().expect("head started");
        assert_eq!(a.deadline(HEADER, IDLE).map(|d| d.0), Some(head + HEADER));
        a.on_read(b"TP/1.1\r\n");
        assert_eq!(a.head_since.get(), Some(head));
    }

    #[test]
    fn http2_frames_between_requests_do_not_start_a_head() {
        let a = Activity::new();
        a.on_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert!(a.http2.get());
        a.request_started();
        a.request_ended();
        a.on_read(b"\0\0\x08\x06\0\0\0\0\0ping-ack");
        let quiet = a.quiet_since.get();
        assert_eq!(a.deadline(HEADER, IDLE).map(|d| d.0), Some(quiet + IDLE));
    }
}
