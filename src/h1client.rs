//! The provider-neutral HTTP/1.1 client, for origins that do not speak HTTP/2: some Web Push
//! services and test servers offer only `http/1.1` in ALPN, and a loopback test endpoint may be
//! plain `http` (`[webpush] allow_insecure_loopback`). One [`H1Pool`] per origin per shard: at
//! most a bounded number of connections (hyper's HTTP/1.1 client over glommio TCP, TLS through
//! rustls offering `http/1.1`), each carrying one request at a time and kept open between
//! requests. Everything is per shard: `Rc`/`Cell` inside, no locks or atomics.
//!
//! The HTTP/2 client (`h2client`) multiplexes thousands of requests on a few connections; here
//! each request in flight holds a connection, so a pool's bound is also its concurrency.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;

use crate::h2client::{
    Alpn, CONNECT_TIMEOUT, ConnectError, Endpoint, Error, Transport, connect_tcp,
};
use crate::http::rt::HyperIo;
use crate::wait::within;

/// Most bytes of an answer's body read: a push service answers with a short JSON error at
/// most; a longer body is an error of the connection, not kept in memory.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A provider's answer.
#[derive(Debug)]
pub struct H1Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why a request got no answer.
#[derive(Debug)]
pub enum H1Error {
    /// The pool is closing.
    Closed,
    /// No connection could be made.
    Connect(String),
    /// The connection failed during the request (the server may or may not have taken it).
    Request(String),
}

impl std::fmt::Display for H1Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            H1Error::Closed => write!(f, "closing"),
            H1Error::Connect(e) => write!(f, "connect: {e}"),
            H1Error::Request(e) => write!(f, "HTTP/1.1: {e}"),
        }
    }
}

/// A request's turn on an [`H1Pool`] (a connection of it), held until the request ends.
pub struct H1Turn(#[allow(dead_code)] glommio::sync::StaticPermit);

/// One origin's HTTP/1.1 connections on one shard.
pub struct H1Pool {
    endpoint: Endpoint,
    /// `None`: a plain `http` origin.
    tls: Option<Transport>,
    idle: RefCell<Vec<SendRequest<Full<Bytes>>>>,
    /// One permit per connection that may be open: a request waits here for its turn.
    slots: Rc<glommio::sync::Semaphore>,
    closed: Cell<bool>,
}

impl H1Pool {
    /// A pool of at most `max_connections` to `endpoint` (`https`, or plain `http`), trusting
    /// `ca_pem` besides the webpki roots.
    pub fn new(
        provider: &'static str,
        endpoint: Endpoint,
        ca_pem: Option<&[u8]>,
        max_connections: usize,
    ) -> Result<H1Pool, Error> {
        let tls = if endpoint.tls {
            Some(Transport::with_alpn(
                provider,
                endpoint.clone(),
                ca_pem,
                Alpn::Http1,
            )?)
        } else {
            None
        };
        Ok(H1Pool {
            endpoint,
            tls,
            idle: RefCell::new(Vec::new()),
            slots: Rc::new(glommio::sync::Semaphore::new(max_connections.max(1) as u64)),
            closed: Cell::new(false),
        })
    }

    /// The origin's `Host`.
    pub fn authority(&self) -> &str {
        self.endpoint.authority.as_str()
    }

    /// Waits for a request's turn: one of the pool's connections free (or one more allowed).
    /// Apart from [`H1Pool::send`], so the wait is not counted in the request's own time.
    pub async fn turn(&self) -> Result<H1Turn, H1Error> {
        if self.closed.get() {
            return Err(H1Error::Closed);
        }
        let permit = self
            .slots
            .acquire_static_permit(1)
            .await
            .map_err(|_| H1Error::Closed)?;
        Ok(H1Turn(permit))
    }

    /// Sends the request `build` makes, in its `turn`, on a kept connection (or a new one) and
    /// reads the answer. A kept connection the server closed meanwhile is replaced, and the
    /// request sent on the new one, only when hyper says it was not sent.
    pub async fn send(
        &self,
        turn: H1Turn,
        build: impl Fn() -> Request<Full<Bytes>>,
    ) -> Result<H1Answer, H1Error> {
        let _turn = turn;
        if self.closed.get() {
            return Err(H1Error::Closed);
        }
        let mut kept = self.take_idle().await;
        loop {
            let (mut sender, reused) = match kept.take() {
                Some(s) => (s, true),
                // Boxed: a connect (TLS handshake) is rare and its future is large.
                None => (Box::pin(self.open()).await?, false),
            };
            match sender.try_send_request(build()).await {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    let body = Limited::new(body, MAX_RESPONSE_BYTES)
                        .collect()
                        .await
                        .map_err(|e| H1Error::Request(format!("reading the answer: {e}")))?
                        .to_bytes();
                    if !self.closed.get() && !sender.is_closed() {
                        self.idle.borrow_mut().push(sender);
                    }
                    return Ok(H1Answer {
                        status: parts.status,
                        headers: parts.headers,
                        body,
                    });
                }
                Err(mut e) => {
                    // Not sent (the kept connection had closed): once more on a new one.
                    if reused && e.take_message().is_some() {
                        continue;
                    }
                    return Err(H1Error::Request(e.into_error().to_string()));
                }
            }
        }
    }

    /// A kept connection that is still open, if there is one.
    async fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        loop {
            let mut sender = self.idle.borrow_mut().pop()?;
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    async fn open(&self) -> Result<SendRequest<Full<Bytes>>, H1Error> {
        let connect = |e: ConnectError| H1Error::Connect(e.to_string());
        let opened = within(CONNECT_TIMEOUT, async {
            match &self.tls {
                Some(t) => handshake(HyperIo(t.connect_tls().await.map_err(connect)?)).await,
                None => {
                    let tcp = connect_tcp(&self.endpoint.host, self.endpoint.port)
                        .await
                        .map_err(connect)?;
                    handshake(HyperIo(tcp)).await
                }
            }
        })
        .await;
        opened.unwrap_or_else(|| Err(H1Error::Connect("timed out".into())))
    }

    /// Sends nothing more and closes the kept connections (requests running finish).
    pub fn close(&self) {
        self.closed.set(true);
        self.idle.borrow_mut().clear();
        // Sends waiting for a connection end with `Closed`.
        self.slots.close();
    }
}

/// An HTTP/1.1 connection on `io`, its task spawned on this executor (it ends when the
/// connection closes or its sender is dropped).
async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, H1Error>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| H1Error::Connect(format!("HTTP/1.1 handshake: {e}")))?;
    glommio::spawn_local(conn).detach();
    Ok(sender)
}
