//! The timings every bound of the client hangs on, and [`Tuning`], the set a pool runs with
//! (the constants, shortened by tests).

use std::time::Duration;

/// Longest a single request may take, queueing for a stream and a connection included; past it
/// the caller gets `Unavailable` and the stream is reset. Providers answer in milliseconds when
/// healthy (APNs documents 30 s as its own limit).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest TCP connect + TLS + HTTP/2 handshake before the attempt counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection idle this long is checked with an HTTP/2 PING (Apple's advice, good for any provider: PING, do not churn).
pub const PING_IDLE_INTERVAL: Duration = Duration::from_secs(60);
/// A PING unanswered this long means the connection is dead: it is closed and replaced.
pub const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// First reconnect delay; doubled per consecutive failure, with jitter.
pub const RECONNECT_BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Reconnect delays stop growing here: providers treat rapid reconnects as abuse (Apple says
/// so), and an outage longer than this is still probed twice a minute.
pub const RECONNECT_BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A connection that lived this long (or answered one request) was healthy: the next reconnect
/// starts again from the base delay instead of continuing the backoff.
pub const STABLE_CONNECTION_AGE: Duration = Duration::from_secs(60);
/// `close()` waits this long for in-flight sends before dropping the connections under them.
pub const CLOSE_GRACE: Duration = REQUEST_TIMEOUT;

/// The timings a sender runs with: the constants above, shortened by tests.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub ping_idle_interval: Duration,
    pub ping_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub stable_connection_age: Duration,
    pub close_grace: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            request_timeout: REQUEST_TIMEOUT,
            connect_timeout: CONNECT_TIMEOUT,
            ping_idle_interval: PING_IDLE_INTERVAL,
            ping_timeout: PING_TIMEOUT,
            backoff_base: RECONNECT_BACKOFF_BASE,
            backoff_cap: RECONNECT_BACKOFF_CAP,
            stable_connection_age: STABLE_CONNECTION_AGE,
            close_grace: CLOSE_GRACE,
        }
    }
}
