//! [`ApnsSender`], one per shard: turns a notification into one APNs request (two when a 403
//! on the provider token earns a retry with a fresh one), bounds it in time, counts every outcome
//! in [`ApnsStats`], and closes gracefully.

use super::config::{self, ApnsConfig, ApnsError};
use super::jwt::{ProviderToken, SigningFailed, SystemClock};
use super::notification::ApnsNotification;
use super::payload::{self, PayloadError, PayloadFields};
use super::request::{PreparedRequest, RequestEncoder};
use super::response::{FollowUp, classify};
use crate::channels::sending::{SendCounts, SenderCore, Trip, trip, unavailable};
use crate::h2client::{Endpoint, Pool, Transport, Tuning};
use bytes::Bytes;
use clarion_shards::Verdict;
use std::future::Future;
use std::rc::Rc;

/// A point-in-time copy of one shard's APNs counters (all since start, except the gauges).
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApnsStats {
    /// Sends and their verdicts (a 403 retried with a fresh token counts twice by status).
    pub sends: SendCounts,
    /// Gauge: connections open now.
    pub connections_open: usize,
    /// Connection attempts after each slot's first.
    pub reconnects: u64,
    pub connect_failures: u64,
    /// Connections that ended while the sender was not closing (GOAWAY, errors, failed PING).
    pub connections_lost: u64,
    /// Gauge: `send()` calls running now.
    pub in_flight: usize,
    /// Provider tokens signed to replace an earlier one.
    pub jwt_refreshes: u64,
}

/// A notification checked and encoded by [`ApnsSender::prepare`], or the reason it was refused.
pub struct PreparedNotification(Result<PreparedRequest, Verdict>);

/// Sends APNs notifications for one shard. Create it on (or hand it to) the shard's executor;
/// `send` may be called from many tasks at once. Connects lazily on the first `send`.
pub struct ApnsSender {
    inner: Rc<Inner>,
}

struct Inner {
    encoder: RequestEncoder,
    token: ProviderToken,
    pool: Rc<Pool>,
    core: SenderCore,
}

impl ApnsSender {
    /// Validates the configuration and parses the key now; opens no connection yet.
    pub fn new(config: impl Into<Rc<ApnsConfig>>, shard: usize) -> Result<ApnsSender, ApnsError> {
        ApnsSender::with_tuning(config.into(), shard, Tuning::default())
    }

    pub(crate) fn with_tuning(
        config: Rc<ApnsConfig>,
        shard: usize,
        tuning: Tuning,
    ) -> Result<ApnsSender, ApnsError> {
        config::validate(&config)?;
        let endpoint = Endpoint::parse(&config.endpoint)?;
        let transport = Transport::new("apns", endpoint, config.ca_pem.as_deref())?;
        let token = ProviderToken::new(
            &config.key_pem,
            &config.key_id,
            &config.team_id,
            Rc::new(SystemClock),
        )?;
        let inner = Inner {
            encoder: RequestEncoder::new(&config)?,
            token,
            pool: Rc::new(Pool::new(transport, config.connections, tuning, shard)),
            core: SenderCore::new("apns", shard, tuning),
        };
        Ok(ApnsSender {
            inner: Rc::new(inner),
        })
    }

    /// Sends one notification and says what became of it. Never panics, never blocks the
    /// executor, and returns within the request timeout (plus up to 1/64 of it, see
    /// `deadline.rs`). Must run on a glommio executor (the
    /// first call spawns the connection tasks there). A request APNs provably did not process
    /// (refused stream, above a graceful GOAWAY's last stream, or not startable on a closing
    /// connection) is sent again once at once; anything that may have reached APNs is left to
    /// the caller's retry.
    pub async fn send(&self, n: ApnsNotification<'_>) -> Verdict {
        self.send_prepared(self.prepare(&n)).await
    }

    /// [`encode_payload`](super::encode_payload), into memory the sender shares between
    /// requests (no allocation of its own per payload).
    pub fn encode_payload(&self, fields: &PayloadFields<'_>) -> Result<Bytes, PayloadError> {
        payload::with_encoded(fields, |p| self.inner.encoder.shared_copy(p))
    }

    /// Checks and encodes `n` now, without I/O, into something that borrows nothing: the
    /// request's path and headers are built once, before the send is started or awaited.
    pub fn prepare(&self, n: &ApnsNotification<'_>) -> PreparedNotification {
        PreparedNotification(self.inner.encoder.prepare(n))
    }

    /// [`ApnsSender::send`] for a notification already prepared (a refused one comes back as
    /// the `Permanent` outcome [`ApnsSender::prepare`] found). The future owns a handle to the
    /// sender, so it can run as a task of its own, and it holds `prepared` once: it is most of
    /// the future's size, and the future is moved into its task whole.
    pub fn send_prepared(
        &self,
        prepared: PreparedNotification,
    ) -> impl Future<Output = Verdict> + 'static {
        let inner = self.inner.clone();
        async move {
            let inner = &*inner;
            let core = &inner.core;
            // `ref`: borrowed where it lies, not moved into a second copy.
            let outcome = match core.begin().and(prepared.0) {
                Err(refused) => refused,
                Ok(ref prepared) => core.bounded(inner.attempt(prepared)).await,
            };
            core.end(&outcome);
            outcome
        }
    }

    /// Counters now.
    pub fn stats(&self) -> ApnsStats {
        let inner = &*self.inner;
        let pool = inner.pool.stats();
        ApnsStats {
            sends: inner.core.counts(),
            connections_open: pool.open,
            reconnects: pool.reconnects,
            connect_failures: pool.connect_failures,
            connections_lost: pool.connections_lost,
            in_flight: inner.core.in_flight(),
            jwt_refreshes: inner.token.refreshes(),
        }
    }

    /// Refuses new sends (`Retry` "sender closed"), lets running ones finish (up to
    /// [`CLOSE_GRACE`](super::CLOSE_GRACE)), then closes every connection with GOAWAY.
    pub async fn close(&self) {
        let inner = &*self.inner;
        inner.core.close().await;
        inner.pool.shutdown().await;
    }
}

impl Drop for ApnsSender {
    fn drop(&mut self) {
        // Supervisor tasks hold the pool; tell them to stop and cut whatever is still open.
        self.inner.pool.abort();
    }
}

impl Inner {
    async fn attempt(&self, prepared: &PreparedRequest) -> Verdict {
        let mut token_retry_left = true;
        let mut unsent_retry_left = true;
        loop {
            let Some(stream) = self.pool.acquire().await else {
                return unavailable("sender closed");
            };
            let Ok(token) = self.token.current() else {
                return unavailable("provider token signing failed");
            };
            let conn = stream.connection();
            let build =
                |first| prepared.to_request(&token.authorization, self.encoder.topic(), first);
            let result = conn.round_trip(build, prepared.payload.clone()).await;
            let answer = match trip(result, conn, &mut unsent_retry_left) {
                Trip::Answer(answer) => answer,
                Trip::Again => continue,
                Trip::Failed(verdict) => return verdict,
            };
            self.core.answered(answer.status.as_u16());
            let verdict = classify(answer.status, &answer.headers, &answer.body);
            match verdict.follow_up {
                FollowUp::None => {}
                FollowUp::Reconnect => conn.health.retire(),
                FollowUp::HoldTokenRefresh => self.token.hold_refreshes(),
                FollowUp::RetryWithToken(why) if token_retry_left => {
                    token_retry_left = false;
                    if let Err(SigningFailed) = self.token.after_rejection(&token, why) {
                        return unavailable("provider token signing failed");
                    }
                    continue;
                }
                FollowUp::RetryWithToken(_) => {}
            }
            return verdict.outcome;
        }
    }
}
