//! The provider-neutral HTTP/2 client every push channel sends through: TLS (rustls, webpki
//! roots plus an extra CA, ALPN `h2`), persistent connections with PING health checks, a pool
//! per shard that reconnects with jittered backoff and hands out streams under each server's
//! `SETTINGS_MAX_CONCURRENT_STREAMS`, the line of requests waiting for a stream, and one shared
//! deadline per tick for thousands of requests in flight. A channel keeps only its wire format,
//! its authentication and the meaning of its answers (`src/channels/apns/`, `src/channels/fcm/`).
//!
//! Everything here is per shard: `Rc`/`Cell` inside, no locks or atomics.
//!
//! # Layout
//! - `endpoint.rs`: [`Endpoint`], `https://host[:port]` parsed once.
//! - `tuning.rs`: the timing constants and [`Tuning`].
//! - `error.rs`: [`Error`], set-up faults.
//! - `tls.rs`: rustls set-up, resolution off the executor, TCP + TLS with ALPN `h2` (or, for
//!   `h1client` and learning what an origin speaks, `http/1.1`).
//! - `connection.rs`: one h2 connection, its driver, PING health check and round trip.
//! - `pool.rs`: the shard's connections, reconnect backoff, handing out free streams.
//! - `wait_queue.rs`: the line of requests waiting for a free stream.
//! - `deadline.rs`: per-tick shared deadlines for requests in flight.
//! - `retry_after.rs`: a provider's `retry-after`, read and capped.

mod connection;
mod deadline;
mod endpoint;
mod error;
mod pool;
mod retry_after;
mod tls;
mod tuning;
mod wait_queue;

pub(crate) use connection::{Connection, RawResponse, StreamError};
pub(crate) use deadline::Deadlines;
pub use endpoint::{Endpoint, HTTPS_PORT};
pub use error::Error;
pub(crate) use pool::Pool;
pub use retry_after::MAX_RETRY_AFTER;
pub(crate) use retry_after::retry_after_ms;
pub(crate) use tls::{Alpn, ConnectError, Transport, connect_tcp, speaks_h2};
pub use tuning::{
    CLOSE_GRACE, CONNECT_TIMEOUT, PING_IDLE_INTERVAL, PING_TIMEOUT, RECONNECT_BACKOFF_BASE,
    RECONNECT_BACKOFF_CAP, REQUEST_TIMEOUT, STABLE_CONNECTION_AGE, Tuning,
};

/// Runs `f` on a fresh glommio executor thread (1 MiB of I/O memory) and returns its result.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn on_executor<T, Fut>(f: impl FnOnce() -> Fut + Send + 'static) -> T
where
    T: Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("h2client-test")
        .io_memory(1 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}
