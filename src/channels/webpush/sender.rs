//! [`WebPushSender`], one per shard: a delivery's subscription read back, its plaintext built
//! and encrypted for it (RFC 8291), one request to the subscription's endpoint with the VAPID
//! authorization for its origin (RFC 8292) over a pool of HTTP/2 connections per push-service
//! origin (the shared `h2client`), bounded in time, counted.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use clarion_shards::{NotificationContent, Priority, Verdict};
use http::{HeaderValue, Method, Request};
use ring::rand::SystemRandom;
use uuid::Uuid;

use super::encrypt::encrypt;
use super::payload;
use super::response::classify;
use super::subscription::Subscription;
use super::vapid::{VapidKey, VapidSigner};
use crate::channels::sending::{SendCounts, SenderCore, Trip, trip, unavailable};
use crate::h2client::{Endpoint, Pool, Transport, Tuning};

/// Push-service origins a shard keeps connections to; past it the oldest origin's pool is
/// closed (browsers use a handful of push services).
pub const MAX_ORIGINS_PER_SHARD: usize = 64;
/// TTL when a notification has none: four weeks, as for APNs.
pub const DEFAULT_TTL_SECONDS: u64 = 28 * 86_400;

/// What a shard's Web Push sender is set up with.
#[derive(Clone, Debug)]
pub struct WebPushConfig {
    pub key: Arc<VapidKey>,
    /// VAPID `sub`: `mailto:` or `https:` contact of the operator.
    pub subject: String,
    pub connections_per_origin: usize,
    pub ca_pem: Option<Vec<u8>>,
}

/// A point-in-time copy of one shard's Web Push counters.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebPushStats {
    /// Sends and their verdicts.
    pub sends: SendCounts,
    pub origins: usize,
    pub in_flight: usize,
}

pub struct WebPushSender {
    inner: Rc<Inner>,
}

struct Inner {
    cfg: WebPushConfig,
    vapid: VapidSigner,
    rng: SystemRandom,
    pools: RefCell<HashMap<String, Rc<Pool>>>,
    /// Origins in the order their pools were opened.
    opened: RefCell<VecDeque<String>>,
    tuning: Tuning,
    core: SenderCore,
}

/// A request ready to go: where, and its headers and body.
struct Prepared {
    origin: String,
    uri: http::Uri,
    ttl: u64,
    urgency: &'static str,
    topic: Option<String>,
    body: Bytes,
}

impl WebPushSender {
    pub fn new(cfg: WebPushConfig, shard: usize) -> WebPushSender {
        let vapid = VapidSigner::new(cfg.key.clone(), cfg.subject.clone());
        WebPushSender {
            inner: Rc::new(Inner {
                cfg,
                vapid,
                rng: SystemRandom::new(),
                pools: RefCell::default(),
                opened: RefCell::default(),
                tuning: Tuning::default(),
                core: SenderCore::new("webpush", shard, Tuning::default()),
            }),
        }
    }

    /// Sends notification `id`'s `content` to the subscription stored as `target`.
    pub fn send(
        &self,
        id: Uuid,
        target: &str,
        content: &NotificationContent,
    ) -> impl std::future::Future<Output = Verdict> + 'static {
        let inner = self.inner.clone();
        // Built and encrypted now, while the record is borrowed.
        let prepared = inner.prepare(id, target, content);
        async move {
            let inner = &*inner;
            let core = &inner.core;
            let outcome = match core.begin().and(prepared) {
                Err(refused) => refused,
                Ok(p) => core.bounded(inner.attempt(p)).await,
            };
            core.end(&outcome);
            outcome
        }
    }

    pub fn stats(&self) -> WebPushStats {
        let inner = &*self.inner;
        WebPushStats {
            sends: inner.core.counts(),
            origins: inner.pools.borrow().len(),
            in_flight: inner.core.in_flight(),
        }
    }

    /// Refuses new sends, lets running ones finish (up to the close grace), then closes every
    /// origin's connections.
    pub async fn close(&self) {
        let inner = &*self.inner;
        inner.core.close().await;
        let pools: Vec<Rc<Pool>> = inner.pools.borrow().values().cloned().collect();
        for pool in pools {
            pool.shutdown().await;
        }
    }
}

impl Drop for WebPushSender {
    fn drop(&mut self) {
        for pool in self.inner.pools.borrow().values() {
            pool.abort();
        }
    }
}

impl Inner {
    fn prepare(
        &self,
        id: Uuid,
        target: &str,
        content: &NotificationContent,
    ) -> Result<Prepared, Verdict> {
        let sub = Subscription::from_target(target)
            .map_err(|e| Verdict::permanent(format!("subscription: {e}")))?;
        let uri: http::Uri = sub
            .endpoint
            .parse()
            .map_err(|e| Verdict::permanent(format!("endpoint: {e}")))?;
        if uri.scheme_str() != Some("https") {
            return Err(Verdict::permanent(
                "endpoint: this build sends to https endpoints only (HTTP/2 over TLS)",
            ));
        }
        let origin = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .ok_or_else(|| Verdict::permanent("endpoint: no host"))?;
        let plaintext = payload::encode(id, content)
            .map_err(|e| Verdict::permanent(format!("payload: {e}")))?;
        let body = encrypt(&sub, &plaintext, &self.rng)
            .map_err(|e| Verdict::permanent(format!("encryption: {e}")))?;
        Ok(Prepared {
            origin,
            uri,
            ttl: content.ttl_seconds.map_or(DEFAULT_TTL_SECONDS, u64::from),
            urgency: match content.priority {
                Priority::High => "high",
                Priority::Normal => "normal",
            },
            topic: content.collapse_id.clone(),
            body: Bytes::from(body),
        })
    }

    /// The pool for `origin`, opened on first use; the oldest closed past the bound.
    fn pool(&self, origin: &str) -> Result<Rc<Pool>, Verdict> {
        if let Some(p) = self.pools.borrow().get(origin) {
            return Ok(p.clone());
        }
        let endpoint = Endpoint::parse(&format!("https://{origin}"))
            .map_err(|e| Verdict::permanent(format!("endpoint: {e}")))?;
        let transport =
            Transport::new("webpush", endpoint, self.cfg.ca_pem.as_deref()).map_err(|e| {
                Verdict::ConfigFault {
                    reason: format!("webpush TLS set-up: {e}"),
                }
            })?;
        let pool = Rc::new(Pool::new(
            transport,
            self.cfg.connections_per_origin,
            self.tuning,
            self.core.shard(),
        ));
        let mut pools = self.pools.borrow_mut();
        let mut opened = self.opened.borrow_mut();
        if pools.len() >= MAX_ORIGINS_PER_SHARD {
            if let Some(oldest) = opened.pop_front() {
                if let Some(p) = pools.remove(&oldest) {
                    p.begin_close();
                }
            }
        }
        pools.insert(origin.to_string(), pool.clone());
        opened.push_back(origin.to_string());
        Ok(pool)
    }

    async fn attempt(&self, p: Prepared) -> Verdict {
        let pool = match self.pool(&p.origin) {
            Ok(pool) => pool,
            Err(v) => return v,
        };
        let authorization = match self.vapid.authorization(&format!("https://{}", p.origin)) {
            Ok(a) => a,
            Err(e) => return Verdict::ConfigFault { reason: e },
        };
        let mut resend_left = true;
        loop {
            let Some(stream) = pool.acquire().await else {
                return unavailable("sender closed");
            };
            let conn = stream.connection();
            let build = |_first: bool| {
                let mut r = Request::new(());
                *r.method_mut() = Method::POST;
                *r.uri_mut() = p.uri.clone();
                let h = r.headers_mut();
                h.insert("ttl", HeaderValue::from(p.ttl));
                h.insert("urgency", HeaderValue::from_static(p.urgency));
                if let Some(t) = p
                    .topic
                    .as_deref()
                    .and_then(|t| HeaderValue::from_str(t).ok())
                {
                    h.insert("topic", t);
                }
                h.insert(
                    http::header::CONTENT_ENCODING,
                    HeaderValue::from_static("aes128gcm"),
                );
                h.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                if let Ok(v) = HeaderValue::from_str(&authorization) {
                    h.insert(http::header::AUTHORIZATION, v);
                }
                r
            };
            let result = conn.round_trip(build, p.body.clone()).await;
            let answer = match trip(result, conn, &mut resend_left) {
                Trip::Answer(answer) => answer,
                Trip::Again => continue,
                Trip::Failed(verdict) => return verdict,
            };
            self.core.answered(answer.status.as_u16());
            return classify(answer.status, &answer.headers, &answer.body);
        }
    }
}
