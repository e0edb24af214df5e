//! The API transport: each core accepts on the shared port (SO_REUSEPORT) and serves HTTP/1.1
//! keep-alive and HTTP/2 cleartext (prior knowledge) on the same socket through hyper's
//! auto-detecting builder, running on glommio. Every bound a client could push on is set here
//! or in `[http]`: open connections per shard (past it, `503` and close), HTTP/2 streams and
//! resets per connection, header sizes, and the time limits (`conn.rs`) and body budgets
//! (`body.rs`). On stop, listeners close and connections are shut down gracefully (HTTP/2
//! GOAWAY, HTTP/1.1 close after the current request). Notification intake past what the core can
//! take is refused fast by `admission.rs`.

pub mod admission;
pub mod auth;
pub mod body;
mod conn;
pub mod rt;
pub mod service;
pub mod tls;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use glommio::net::TcpListener;
use hyper_util::server::conn::auto::Builder;
use tracing::warn;

use crate::config::HttpConfig;
use crate::sync::Latch;
use body::ShardBodies;
use rt::{GlommioTimer, LocalExec};
use service::Api;

/// Concurrent HTTP/2 streams per client connection: a load balancer multiplexes many requests
/// on one connection. Each open stream's body counts against the connection's body budget, so
/// this bounds handler tasks, not memory. A stream past it is refused (`REFUSED_STREAM`).
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Streams a client may reset before the server has taken them up, at once, before it is cut off
/// with GOAWAY (`ENHANCE_YOUR_CALM`): the HTTP/2 rapid-reset attack (CVE-2023-44487) opens and
/// cancels streams in a flood, each costing the server work and none counting against the
/// stream limit. h2's default; a client that cancels a request now and then is far below it.
pub const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams the server may reset for the client's protocol errors before it sends GOAWAY: a
/// client can make the server reset streams (bad headers, flow-control misuse) as cheaply as it
/// can reset them itself (RUSTSEC-2024-0003). A correct client causes none.
pub const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 256;
/// Largest header block (SETTINGS_MAX_HEADER_LIST_SIZE) an HTTP/2 request may carry: ours carry
/// a handful of short headers; 16 KiB is hyper's default and refuses header floods.
pub const H2_MAX_HEADER_LIST_SIZE: u32 = 16 << 10;
/// Per-stream and per-connection HTTP/2 receive windows: a stream may send 1 MiB before the
/// server reads it, a connection 16 MiB, so an 8 MiB batch arrives without waiting on window
/// updates while bodies being received stay within the body budgets.
pub const H2_STREAM_WINDOW: u32 = 1 << 20;
pub const H2_CONNECTION_WINDOW: u32 = 1 << 24;
/// A keep-alive ping is sent after this long without a frame from the client, and the
/// connection is closed if it is not answered within `H2_KEEP_ALIVE_TIMEOUT`: finds peers that
/// vanished without closing (a crashed load balancer, a dropped NAT entry).
pub const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most headers in one HTTP/1.1 request: ours need a handful; more is refused with `431`.
pub const H1_MAX_HEADERS: usize = 64;
/// Largest HTTP/1.1 read buffer per connection, so also the largest request head (past it,
/// `431`), as HTTP/2's header list: ours are a few hundred bytes, and bodies stream through it
/// in pieces this size. With it an open connection costs about 23 KB (measured with 2,000
/// half-sent requests), where hyper's default (~400 KB) would let each grow to that.
pub const H1_MAX_BUF_SIZE: usize = 16 << 10;
/// Refused connections being answered at once per shard; past it a connection over the limit
/// is closed without an answer (a flood of them gets no more of the shard's time than this).
pub const MAX_REFUSING: usize = 256;

fn builder() -> Builder<LocalExec> {
    let mut b = Builder::new(LocalExec);
    b.http2()
        .timer(GlommioTimer)
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESET_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST_SIZE)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT);
    // No HTTP/1.1 header timer here: hyper's runs from the end of the previous response, so it
    // would also close idle keep-alive connections; `conn.rs` keeps the header and idle limits.
    b.http1()
        .keep_alive(true)
        .header_read_timeout(None)
        .max_headers(H1_MAX_HEADERS)
        .max_buf_size(H1_MAX_BUF_SIZE);
    b
}

/// One shard's API ingress: what its connections share.
pub struct Ingress {
    api: Rc<Api>,
    builder: Builder<LocalExec>,
    limits: HttpConfig,
    bodies: Rc<ShardBodies>,
    /// Connections being served.
    open: Cell<usize>,
    /// Connections over the limit being answered `503`.
    refusing: Cell<usize>,
    /// The separate metrics address (`[metrics] listen`): `GET /metrics` only, without a key.
    metrics_only: bool,
    /// TLS on the API (`[api] tls_cert_file`); `None`: plain HTTP.
    tls: Option<tls::ApiTls>,
}

impl Ingress {
    pub fn new(api: Rc<Api>, limits: HttpConfig) -> Ingress {
        Ingress {
            api,
            builder: builder(),
            bodies: Rc::new(ShardBodies::new(limits.body_buffer_per_shard)),
            limits,
            open: Cell::new(0),
            refusing: Cell::new(0),
            metrics_only: false,
            tls: None,
        }
    }

    /// Serves the API over TLS.
    pub fn with_tls(self, tls: Option<tls::ApiTls>) -> Ingress {
        Ingress { tls, ..self }
    }

    /// The ingress of the separate metrics address, with the API's limits.
    pub fn metrics_only(api: Rc<Api>, limits: HttpConfig) -> Ingress {
        Ingress {
            metrics_only: true,
            ..Ingress::new(api, limits)
        }
    }
}

/// The longest a stopping shard waits for its open connections to finish their requests.
pub const STOP_DRAIN: Duration = Duration::from_secs(6);

/// Accepts connections until `stop` is set, then waits (at most the connections' own drain
/// time and a second) for the open ones to finish their requests and close, so the engine stops
/// only after every request it was serving has its answer.
pub async fn serve(listener: TcpListener, ingress: Rc<Ingress>, stop: Latch) {
    accept_until_stopped(listener, &ingress, &stop).await;
    let deadline = std::time::Instant::now() + STOP_DRAIN;
    while ingress.open.get() + ingress.refusing.get() > 0 && std::time::Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    if ingress.open.get() > 0 {
        warn!(
            open = ingress.open.get(),
            "connections still open after the drain: closed with the shard"
        );
    }
}

async fn accept_until_stopped(listener: TcpListener, ingress: &Rc<Ingress>, stop: &Latch) {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            stop.wait().await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if ingress.open.get() >= ingress.limits.max_connections_per_shard {
            if ingress.refusing.get() < MAX_REFUSING {
                let slot = conn::Slot::refused(ingress.clone());
                glommio::spawn_local(conn::refuse(slot, stream)).detach();
            }
            continue;
        }
        let slot = conn::Slot::open(ingress.clone());
        glommio::spawn_local(conn::serve(slot, stream, stop.clone())).detach();
    }
}
