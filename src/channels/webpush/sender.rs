//! [`WebPushSender`], one per shard: a delivery's subscription read back, its plaintext built
//! and encrypted for it (RFC 8291), one request to the subscription's endpoint with the VAPID
//! authorization for its origin (RFC 8292), over HTTP/2 or HTTP/1.1 as the push service offers
//! (`origins.rs`: a pool per origin, from the shared `h2client` or `h1client`), bounded in
//! time, counted.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use clarion_shards::{NotificationContent, Priority, Verdict};
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::Full;
use uuid::Uuid;

use super::encrypt::encrypt;
use super::origins::{Origins, Route};
use super::payload;
use super::response::classify;
use super::subscription::Subscription;
use super::vapid::{VapidKey, VapidSigner};
use crate::channels::sending::{SendCounts, SenderCore, Trip, trip, unavailable};
use crate::h1client::{H1Error, H1Turn};
use crate::h2client::Tuning;
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
    /// Also send to `http://` endpoints (loopback test servers), over HTTP/1.1.
    pub allow_insecure_loopback: bool,
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
    origins: Origins,
    core: SenderCore,
}

/// How a request reaches its origin, once it may go.
enum Reached {
    H2(Rc<crate::h2client::Pool>),
    H1(Rc<crate::h1client::H1Pool>, H1Turn),
}

/// A request ready to go: where, and its headers and body.
struct Prepared {
    /// `https://host[:port]` (or `http://` for a loopback test endpoint): the VAPID audience
    /// and the pool's key.
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
        let origins = Origins::new(
            cfg.connections_per_origin,
            cfg.ca_pem.clone(),
            Tuning::default(),
            shard,
        );
        WebPushSender {
            inner: Rc::new(Inner {
                cfg,
                vapid,
                origins,
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
                // Reaching the origin (learning its protocol, an HTTP/1.1 connection's turn)
                // is not the request's time.
                Ok(p) => match inner.reach(&p.origin).await {
                    Err(v) => v,
                    Ok(reached) => core.bounded(inner.attempt(p, reached)).await,
                },
            };
            core.end(&outcome);
            outcome
        }
    }

    pub fn stats(&self) -> WebPushStats {
        let inner = &*self.inner;
        WebPushStats {
            sends: inner.core.counts(),
            origins: inner.origins.len(),
            in_flight: inner.core.in_flight(),
        }
    }

    /// Refuses new sends, lets running ones finish (up to the close grace), then closes every
    /// origin's connections.
    pub async fn close(&self) {
        let inner = &*self.inner;
        inner.core.close().await;
        inner.origins.shutdown().await;
    }
}

impl Drop for WebPushSender {
    fn drop(&mut self) {
        self.inner.origins.abort();
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
        let scheme = match uri.scheme_str() {
            Some("https") => "https",
            Some("http") if self.cfg.allow_insecure_loopback => "http",
            _ => {
                return Err(Verdict::permanent(
                    "endpoint: https only (http://127.0.0.1 with [webpush] allow_insecure_loopback)",
                ));
            }
        };
        let origin = uri
            .authority()
            .map(|a| format!("{scheme}://{a}"))
            .ok_or_else(|| Verdict::permanent("endpoint: no host"))?;
        let plaintext = payload::encode(id, content)
            .map_err(|e| Verdict::permanent(format!("payload: {e}")))?;
        let body = encrypt(&sub, &plaintext)
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

    /// The way to `origin`, and for an HTTP/1.1 one the request's turn on it.
    async fn reach(&self, origin: &str) -> Result<Reached, Verdict> {
        Ok(match self.origins.route(origin).await? {
            Route::H2(pool) => Reached::H2(pool),
            Route::H1(pool) => match pool.turn().await {
                Ok(turn) => Reached::H1(pool, turn),
                Err(_) => return Err(unavailable("sender closed")),
            },
        })
    }

    async fn attempt(&self, p: Prepared, reached: Reached) -> Verdict {
        let authorization = match self.vapid.authorization(&p.origin) {
            Ok(a) => a,
            Err(e) => return Verdict::ConfigFault { reason: e },
        };
        match reached {
            Reached::H2(pool) => self.attempt_h2(&p, &authorization, &pool).await,
            Reached::H1(pool, turn) => {
                let build = || {
                    let mut r = Request::new(Full::new(p.body.clone()));
                    *r.method_mut() = Method::POST;
                    *r.uri_mut() = p.uri.path_and_query().map_or_else(
                        || http::Uri::from_static("/"),
                        |pq| pq.as_str().parse().unwrap_or_default(),
                    );
                    if let Ok(host) = HeaderValue::from_str(pool.authority()) {
                        r.headers_mut().insert(http::header::HOST, host);
                    }
                    headers(&p, &authorization, r.headers_mut());
                    r
                };
                match pool.send(turn, build).await {
                    Ok(answer) => {
                        self.core.answered(answer.status.as_u16());
                        classify(answer.status, &answer.headers, &answer.body)
                    }
                    Err(H1Error::Closed) => unavailable("sender closed"),
                    Err(e) => unavailable(format!("{}: {e}", p.origin)),
                }
            }
        }
    }

    async fn attempt_h2(
        &self,
        p: &Prepared,
        authorization: &str,
        pool: &Rc<crate::h2client::Pool>,
    ) -> Verdict {
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
                headers(p, authorization, r.headers_mut());
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

/// A Web Push request's headers (RFC 8030, 8291, 8292), the same over HTTP/2 and HTTP/1.1.
fn headers(p: &Prepared, authorization: &str, h: &mut HeaderMap) {
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
    if let Ok(v) = HeaderValue::from_str(authorization) {
        h.insert(http::header::AUTHORIZATION, v);
    }
}
