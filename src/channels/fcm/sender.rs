//! [`FcmSender`], one per shard: one FCM HTTP v1 request per delivery over the shared HTTP/2
//! client, authorised by the access token [`Tokens`](super::oauth::Tokens) keeps fresh (a
//! `401` fetches a new one and sends once more), paced under the shard's share of the
//! project's quota, bounded in time, counted, and closed gracefully.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use clarion_shards::{NotificationContent, Verdict};
use http::{HeaderValue, Method, Request};

use super::config::{self, FcmConfig, FcmError};
use super::message;
use super::oauth::{SharedTokens, TokenFailure, Tokens};
use super::pace::Pace;
use super::response::{FollowUp, classify};
use crate::channels::sending::{SendCounts, SenderCore, Trip, trip, unavailable};
use crate::h2client::{Endpoint, Pool, Transport, Tuning};

/// Connections per shard to the token endpoint: a refresh an hour needs no more.
const TOKEN_CONNECTIONS: usize = 1;

/// A point-in-time copy of one shard's FCM counters.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FcmStats {
    /// Sends and their verdicts.
    pub sends: SendCounts,
    /// Sends that waited for the quota's pace.
    pub paced: u64,
    pub in_flight: usize,
    pub connections_open: usize,
}

/// Sends FCM messages for one shard; `send` may be called from many tasks at once. Connects
/// lazily on the first send.
pub struct FcmSender {
    inner: Rc<Inner>,
}

struct Inner {
    uri: http::Uri,
    pool: Rc<Pool>,
    token_pool: Rc<Pool>,
    tokens: Rc<Tokens>,
    pace: Pace,
    epoch: std::time::Instant,
    core: SenderCore,
    /// Sends that waited for the quota's pace.
    paced: Cell<u64>,
}

/// A token URI split into the origin the pool connects to and the path it posts to.
fn split_uri(uri: &str) -> Result<(Endpoint, http::uri::Authority, String), FcmError> {
    let bad = |reason: String| FcmError::InvalidConfig {
        field: "service account token_uri",
        reason,
    };
    let parsed: http::Uri = uri.parse().map_err(|e| bad(format!("{uri:?}: {e}")))?;
    let authority = parsed
        .authority()
        .cloned()
        .ok_or_else(|| bad(format!("{uri:?} names no host")))?;
    let endpoint = Endpoint::parse(&format!("https://{authority}"))?;
    let path = parsed
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    Ok((endpoint, authority, path))
}

impl FcmSender {
    /// Checks the configuration; opens no connection yet. `shards` shares out the quota;
    /// `shared` is the process's token slot (one per project).
    pub fn new(
        config: &FcmConfig,
        shard: usize,
        shards: usize,
        shared: Arc<SharedTokens>,
    ) -> Result<FcmSender, FcmError> {
        config::validate(config)?;
        let tuning = Tuning::default();
        let endpoint = Endpoint::parse(&config.endpoint)?;
        let uri: http::Uri = format!(
            "https://{}/v1/projects/{}/messages:send",
            endpoint.authority, config.project_id
        )
        .parse()
        .map_err(|e| FcmError::InvalidConfig {
            field: "project_id",
            reason: format!("{e}"),
        })?;
        let transport = Transport::new("fcm", endpoint, config.ca_pem.as_deref())?;
        let (token_endpoint, token_authority, token_path) = split_uri(&config.account.token_uri)?;
        let token_transport =
            Transport::new("fcm-oauth", token_endpoint, config.ca_pem.as_deref())?;
        let token_pool = Rc::new(Pool::new(token_transport, TOKEN_CONNECTIONS, tuning, shard));
        let tokens = Rc::new(Tokens::new(
            config.account.clone(),
            shared,
            token_pool.clone(),
            token_authority,
            token_path,
        ));
        // This shard's share of the project's quota, a second's worth of burst.
        let per_minute = (config.quota_per_minute / shards.max(1) as u64).max(1);
        let inner = Inner {
            uri,
            pool: Rc::new(Pool::new(transport, config.connections, tuning, shard)),
            token_pool,
            tokens,
            pace: Pace::new(per_minute),
            epoch: std::time::Instant::now(),
            core: SenderCore::new("fcm", shard, tuning),
            paced: Cell::new(0),
        };
        Ok(FcmSender {
            inner: Rc::new(inner),
        })
    }

    /// Sends `content` to registration token `token` and says what became of it. Never
    /// panics, never blocks the executor; bounded by the request timeout once paced.
    pub fn send(
        &self,
        token: &str,
        content: &NotificationContent,
    ) -> impl Future<Output = Verdict> + 'static {
        let inner = self.inner.clone();
        // Encoded now, while the record is borrowed: the future owns only the body.
        let body = message::encode(token, content).map(Bytes::from);
        async move {
            let inner = &*inner;
            let core = &inner.core;
            let body = body.map_err(|e| Verdict::permanent(format!("message: {e}")));
            let outcome = match core.begin().and(body) {
                Err(refused) => refused,
                Ok(body) => {
                    // The quota's pace first: waiting for it is not the request's time.
                    inner.paced().await;
                    core.bounded(inner.attempt(body)).await
                }
            };
            core.end(&outcome);
            outcome
        }
    }

    pub fn stats(&self) -> FcmStats {
        let inner = &*self.inner;
        FcmStats {
            sends: inner.core.counts(),
            paced: inner.paced.get(),
            in_flight: inner.core.in_flight(),
            connections_open: inner.pool.stats().open,
        }
    }

    /// Refuses new sends, lets running ones finish (up to the close grace), then closes every
    /// connection with GOAWAY.
    pub async fn close(&self) {
        let inner = &*self.inner;
        inner.core.close().await;
        inner.pool.shutdown().await;
        inner.token_pool.shutdown().await;
    }
}

impl Drop for FcmSender {
    fn drop(&mut self) {
        self.inner.pool.abort();
        self.inner.token_pool.abort();
    }
}

impl Inner {
    /// Waits for this shard's share of the project's quota: reserves a slot, sleeps once.
    async fn paced(&self) {
        let now_ns = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let wait = self.pace.reserve(now_ns);
        if !wait.is_zero() {
            self.paced.set(self.paced.get() + 1);
            glommio::timer::sleep(wait).await;
        }
    }

    async fn attempt(&self, body: Bytes) -> Verdict {
        let mut token_retry_left = true;
        let mut unsent_retry_left = true;
        loop {
            let token = match self.tokens.current().await {
                Ok(t) => t,
                Err(TokenFailure::Refused(why)) => return Verdict::ConfigFault { reason: why },
                Err(TokenFailure::Unavailable(why)) => return unavailable(&why),
            };
            let Some(stream) = self.pool.acquire().await else {
                return unavailable("sender closed");
            };
            let conn = stream.connection();
            let build = |_first: bool| {
                let mut r = Request::new(());
                *r.method_mut() = Method::POST;
                *r.uri_mut() = self.uri.clone();
                let h = r.headers_mut();
                h.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                if let Ok(v) = HeaderValue::from_str(&token.authorization) {
                    h.insert(http::header::AUTHORIZATION, v);
                }
                r
            };
            let result = conn.round_trip(build, body.clone()).await;
            let answer = match trip(result, conn, &mut unsent_retry_left) {
                Trip::Answer(answer) => answer,
                Trip::Again => continue,
                Trip::Failed(verdict) => return verdict,
            };
            self.core.answered(answer.status.as_u16());
            let verdict = classify(answer.status, &answer.headers, &answer.body);
            if verdict.follow_up == FollowUp::RetryWithNewToken && token_retry_left {
                token_retry_left = false;
                self.tokens.rejected(&token);
                continue;
            }
            return verdict.outcome;
        }
    }
}
