//! The API's request handling: routes, bearer-key authentication, body limits, dispatch to the
//! owning shard, and JSON answers. One instance per core, shared by that core's connections.

use std::convert::Infallible;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use futures_channel::oneshot;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::api::{dead_letters, notifications, status, users, validate};
use crate::channels::rules::TargetPolicy;

use crate::api::keys as keys_api;
use crate::engine::command::{NewNotification, NotifyReply, ShardCmd, Upsert};
use crate::engine::error::ShardError;
use crate::engine::probe::ProbeSnapshot;
use crate::health::{Phase, ShardState, ShardsHealth};
use crate::keys::watch::{KeyCmd, KeysHandle};
use crate::keys::{KeyError, KeySet, Scope};
use crate::mesh::ShardRouter;

use super::admission::Admission;
use super::auth::{Auth, scope_for};
use super::body::{ConnBodies, read_body};

/// Largest single-resource body (a notification with a 4 KiB payload fits many times over).
const MAX_BODY: usize = 64 * 1024;
/// Largest batch body: 1000 notifications of up to ~4 KiB of payload each, with room for JSON.
pub const MAX_BATCH_BODY: usize = 8 * 1024 * 1024;

pub type ApiResponse = Response<Full<Bytes>>;

pub struct Api {
    pub router: ShardRouter,
    /// The keys this shard accepts, their scopes and rate limits.
    pub auth: Auth,
    /// The keys' thread, which creates and revokes keys for `/v1/keys`.
    keys: KeysHandle,
    /// Every shard's state, for `/healthz`.
    health: ShardsHealth,
    /// This core's admission control of notification requests.
    admission: Admission,
    /// Each channel's name and mode (`live`, `simulator`, `off`), for `/healthz` and `/v1/stats`.
    channel_modes: Vec<(&'static str, &'static str)>,
    /// What device targets this deployment takes (`[webpush] allow_insecure_loopback`).
    target_policy: TargetPolicy,
    /// Documents served to anyone, without a key (`GET /v1/webpush/vapid-public-key`, which
    /// web apps subscribe with): path and JSON body.
    public_documents: Vec<(String, Value)>,
}

impl Api {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        router: ShardRouter,
        keys: Arc<KeySet>,
        keys_handle: KeysHandle,
        health: ShardsHealth,
        channel_modes: Vec<(&'static str, &'static str)>,
        target_policy: TargetPolicy,
        public_documents: Vec<(String, Value)>,
    ) -> Api {
        let shards = router.shards();
        Api {
            router,
            auth: Auth::new(keys, shards),
            keys: keys_handle,
            health,
            admission: Admission::new(),
            channel_modes,
            target_policy,
            public_documents,
        }
    }

    /// `{"apns":"live",...}`.
    fn channels_json(&self) -> Value {
        Value::Object(
            self.channel_modes
                .iter()
                .map(|(c, m)| ((*c).to_string(), Value::from(*m)))
                .collect(),
        )
    }

    /// Admission's refusal, counted in this shard's probe.
    fn shed(&self, e: ApiError) -> ApiError {
        crate::engine::probe::bump(&self.router.probe().shed_overload);
        e
    }

    /// Checks the request's key for `needed`.
    fn check(&self, req: &Request<Incoming>, needed: Option<Scope>) -> Result<(), ApiError> {
        self.auth
            .check(req.headers(), needed, crate::engine::now_ms)
    }
}

/// Answers one request on the API port; counted in this shard's probe by route template and
/// status, a notification request's refusal by its code and its answer's latency.
pub async fn handle(
    api: Rc<Api>,
    bodies: &ConnBodies,
    req: Request<Incoming>,
) -> Result<ApiResponse, Infallible> {
    let label = route_label(req.uri().path());
    let head = req.method() == Method::HEAD;
    let intake = label == ROUTE_NOTIFY || label == ROUTE_NOTIFY_BATCH;
    let started = intake.then(std::time::Instant::now);
    let metrics = &api.router.probe().metrics;
    let answer = match route(&api, bodies, req).await {
        Ok(r) => r,
        Err(e) => {
            // Refusals of the notification itself, not of a caller without a valid key.
            if intake && !matches!(e.status, 401 | 403) {
                metrics.refused.bump(e.code, 0);
            }
            error_response(&e)
        }
    };
    let answer = if head { without_body(answer) } else { answer };
    let status = answer.status().as_u16();
    metrics.http_requests.bump(label, status);
    if let Some(started) = started.filter(|_| answer.status().is_success()) {
        metrics.accept_latency.record(started.elapsed());
    }
    Ok(answer)
}

/// Answers one request on the separate metrics address (`[metrics] listen`): `GET /metrics`
/// without a key, nothing else.
pub async fn handle_metrics_only(
    api: Rc<Api>,
    req: Request<Incoming>,
) -> Result<ApiResponse, Infallible> {
    let path = req.uri().path();
    let answer = if path != "/metrics" {
        Err(ApiError::not_found(
            "not_found",
            format!("no route for {path}: this address serves /metrics only"),
        ))
    } else if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return Ok(method_not_allowed(req.method(), "/metrics", "GET, HEAD"));
    } else {
        metrics(&api).await
    };
    let answer = answer.unwrap_or_else(|e| error_response(&e));
    Ok(if req.method() == Method::HEAD {
        without_body(answer)
    } else {
        answer
    })
}

const ROUTE_NOTIFY: &str = "/v1/notifications";
const ROUTE_NOTIFY_BATCH: &str = "/v1/notifications/batch";

/// The route template a path falls under, the `route` label of `clarion_http_requests_total`:
/// never a path's own ids, so the label's values are a fixed set.
fn route_label(path: &str) -> &'static str {
    // A fixed array, not a `Vec`: this runs for every request.
    let mut segs = [""; 5];
    let mut n = 0;
    for s in path.split('/').skip(1) {
        let Some(slot) = segs.get_mut(n) else {
            return "other";
        };
        *slot = s;
        n += 1;
    }
    match &segs[..n] {
        ["healthz"] => "/healthz",
        ["readyz"] => "/readyz",
        ["metrics"] => "/metrics",
        ["openapi.json"] => "/openapi.json",
        ["v1", "webpush", "vapid-public-key"] => "/v1/webpush/vapid-public-key",
        ["v1", "users", _] => "/v1/users/{id}",
        ["v1", "users", _, "devices"] => "/v1/users/{id}/devices",
        ["v1", "users", _, "devices", _] => "/v1/users/{id}/devices/{device_id}",
        ["v1", "notifications"] => ROUTE_NOTIFY,
        ["v1", "notifications", "batch"] => ROUTE_NOTIFY_BATCH,
        ["v1", "notifications", _] => "/v1/notifications/{id}",
        ["v1", "stats"] => "/v1/stats",
        ["v1", "dead-letters"] => "/v1/dead-letters",
        ["v1", "dead-letters", "replay"] => "/v1/dead-letters/replay",
        ["v1", "keys"] => "/v1/keys",
        ["v1", "keys", _] => "/v1/keys/{name}",
        _ => "other",
    }
}

/// Every shard's probe snapshot, in shard order (asked over the mesh).
pub async fn snapshots(api: &Api) -> Result<Vec<ProbeSnapshot>, ApiError> {
    let mut shards = Vec::with_capacity(api.router.shards());
    for shard in 0..api.router.shards() {
        shards.push(ask(api, shard, |reply| ShardCmd::Stats { reply }).await?);
    }
    Ok(shards)
}

/// `GET /metrics`: every shard's probe, summed (and per shard where the family says so).
async fn metrics(api: &Api) -> Result<ApiResponse, ApiError> {
    let shards = snapshots(api).await?;
    let ready =
        api.health.phase() == Phase::Ready && !api.health.states().contains(&ShardState::Failed);
    let body = crate::metrics::render(&shards, &api.channel_modes, ready);
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    Ok(r)
}

async fn route(
    api: &Api,
    bodies: &ConnBodies,
    req: Request<Incoming>,
) -> Result<ApiResponse, ApiError> {
    // The intake routes first, matched without copying or splitting the path: nearly every
    // request is one of them.
    if req.method() == Method::POST {
        let path = req.uri().path();
        if path == "/v1/notifications" {
            api.check(&req, scope_for(&Method::POST, &["notifications"]))?;
            return notify_one(api, req, bodies).await;
        }
        if path == "/v1/notifications/batch" {
            api.check(&req, scope_for(&Method::POST, &["notifications", "batch"]))?;
            return notify_batch(api, req, bodies).await;
        }
    }
    let path = req.uri().path().to_string();
    // The method as asked, for a `405`'s words; HEAD is answered as GET is, without the body
    // (`handle` drops it), as RFC 9110 §9.3.2 wants of every GET route.
    let asked = req.method().clone();
    let method = if asked == Method::HEAD {
        Method::GET
    } else {
        asked.clone()
    };
    let public = path == "/healthz"
        || path == "/readyz"
        || api.public_documents.iter().any(|(p, _)| *p == path);
    if public && method != Method::GET {
        return Ok(method_not_allowed(&asked, &path, "GET, HEAD"));
    }
    if path == "/healthz" {
        return Ok(health_response(&api.health.states(), api.channels_json()));
    }
    if path == "/readyz" {
        return Ok(ready_response(api.health.phase(), &api.health.states()));
    }
    if let Some((_, doc)) = api.public_documents.iter().find(|(p, _)| *p == path) {
        return Ok(json_response(StatusCode::OK, doc));
    }
    if path == "/metrics" {
        api.check(&req, Some(Scope::Metrics))?;
        if method != Method::GET {
            return Ok(method_not_allowed(&asked, &path, "GET, HEAD"));
        }
        return metrics(api).await;
    }
    if !path.starts_with("/v1/") {
        return Err(ApiError::not_found(
            "not_found",
            format!("no route for {path}"),
        ));
    }
    // Each segment percent-decoded, as clients encode ids (`u%3Ax` is the user `u:x`).
    let decoded = path
        .trim_start_matches("/v1/")
        .split('/')
        .map(|s| {
            if s.contains('%') {
                percent_encoding::percent_decode_str(s).decode_utf8()
            } else {
                Ok(std::borrow::Cow::Borrowed(s))
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            ApiError::new(
                400,
                "invalid_path",
                format!("{path}: a percent-encoded segment is not UTF-8"),
            )
        })?;
    let segs: Vec<&str> = decoded.iter().map(|s| s.as_ref()).collect();
    api.check(&req, scope_for(&method, &segs))?;
    match (method, segs.as_slice()) {
        (Method::POST, ["keys"]) => {
            let new = keys_api::parse_create(&read_body(req, MAX_BODY, bodies).await?)?;
            let (reply, made) = oneshot::channel();
            api.keys
                .send(KeyCmd::Create {
                    name: new.name,
                    scopes: new.scopes,
                    rate_limit_per_s: new.rate_limit_per_s,
                    reply,
                })
                .map_err(keys_api::key_error)?;
            let (made, set) = made.await.unwrap_or((Err(KeyError::Unavailable), None));
            if let Some(set) = set {
                api.auth.replace(set);
            }
            let (entry, key) = made.map_err(keys_api::key_error)?;
            Ok(json_response(
                StatusCode::CREATED,
                &keys_api::created_json(&entry, &key),
            ))
        }
        (Method::GET, ["keys"]) => Ok(json_response(
            StatusCode::OK,
            &keys_api::list_json(&api.auth.keys()),
        )),
        (Method::DELETE, ["keys", name]) => {
            let (reply, done) = oneshot::channel();
            api.keys
                .send(KeyCmd::Revoke {
                    name: (*name).to_string(),
                    reply,
                })
                .map_err(keys_api::key_error)?;
            let (done, set) = done.await.unwrap_or((Err(KeyError::Unavailable), None));
            if let Some(set) = set {
                api.auth.replace(set);
            }
            done.map_err(keys_api::key_error)?;
            Ok(empty_response(StatusCode::NO_CONTENT))
        }
        (Method::PUT, ["users", id]) => put_user(api, id, req, bodies).await,
        (Method::GET, ["users", id]) => get_user(api, id).await,
        (Method::POST, ["users", id, "devices"]) => add_device(api, id, req, bodies).await,
        (Method::DELETE, ["users", id, "devices", device_id]) => {
            remove_device(api, id, device_id).await
        }
        (Method::POST, ["notifications"]) => notify_one(api, req, bodies).await,
        (Method::POST, ["notifications", "batch"]) => notify_batch(api, req, bodies).await,
        (Method::GET, ["notifications", id]) if *id != "batch" => get_notification(api, id).await,
        (Method::GET, ["stats"]) => stats(api).await,
        (Method::GET, ["dead-letters"]) => list_dead_letters(api, req.uri().query()).await,
        (Method::POST, ["dead-letters", "replay"]) => {
            let selection =
                dead_letters::parse_selection(&read_body(req, MAX_BODY, bodies).await?)?;
            let n = on_every_shard(api, |reply| ShardCmd::ReplayDead {
                selection: selection.clone(),
                reply,
            })
            .await?;
            Ok(json_response(StatusCode::OK, &json!({ "replayed": n })))
        }
        (Method::DELETE, ["dead-letters"]) => {
            let selection =
                dead_letters::parse_selection(&read_body(req, MAX_BODY, bodies).await?)?;
            let n = on_every_shard(api, |reply| ShardCmd::PurgeDead {
                selection: selection.clone(),
                reply,
            })
            .await?;
            Ok(json_response(StatusCode::OK, &json!({ "purged": n })))
        }
        (_, segs) => match allowed_methods(segs) {
            Some(allow) => Ok(method_not_allowed(&asked, &path, allow)),
            None => Err(ApiError::not_found(
                "not_found",
                format!("no route for {path}"),
            )),
        },
    }
}

/// The methods a `/v1/` route answers, for `405`'s `Allow`; `None`: no such route.
fn allowed_methods(segs: &[&str]) -> Option<&'static str> {
    Some(match segs {
        ["users", _] => "GET, HEAD, PUT",
        ["users", _, "devices"] => "POST",
        ["users", _, "devices", _] => "DELETE",
        ["notifications"] | ["notifications", "batch"] | ["dead-letters", "replay"] => "POST",
        ["notifications", _] | ["stats"] => "GET, HEAD",
        ["dead-letters"] => "GET, HEAD, DELETE",
        ["keys"] => "GET, HEAD, POST",
        ["keys", _] => "DELETE",
        _ => return None,
    })
}

/// The answer to a HEAD request: GET's status and headers without the body (nor its
/// `Content-Length`, which RFC 9110 §8.6 lets a HEAD answer leave out; HTTP/2 carries no
/// body after it, and hyper adds none).
fn without_body(answer: ApiResponse) -> ApiResponse {
    let (mut parts, _) = answer.into_parts();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Full::new(Bytes::new()))
}

/// `405` naming the methods the route takes, in `Allow` (RFC 9110 §15.5.6).
fn method_not_allowed(method: &Method, path: &str, allow: &'static str) -> ApiResponse {
    let mut r = error_response(&ApiError::new(
        405,
        "method_not_allowed",
        format!("{method} is not allowed on {path} (allowed: {allow})"),
    ));
    r.headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
    r
}

/// Sends a command to its shard and waits for the answer.
async fn ask<T>(
    api: &Api,
    shard: usize,
    make: impl FnOnce(oneshot::Sender<Result<T, ShardError>>) -> ShardCmd,
) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    api.router.dispatch(shard, make(tx));
    rx.await
        .unwrap_or(Err(ShardError::Unanswered))
        .map_err(ApiError::shard)
}

fn upsert_response(u: Upsert, body: Value) -> ApiResponse {
    let status = if u == Upsert::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    json_response(status, &body)
}

async fn put_user(
    api: &Api,
    id: &str,
    req: Request<Incoming>,
    bodies: &ConnBodies,
) -> Result<ApiResponse, ApiError> {
    validate::user_id("user_id", id)?;
    let profile = users::parse_profile(&read_body(req, MAX_BODY, bodies).await?)?;
    let user_id = id.to_string();
    let shard = api.router.shard_for_user(id);
    let u = ask(api, shard, |reply| ShardCmd::PutUser {
        user_id: user_id.clone(),
        profile,
        reply,
    })
    .await?;
    Ok(upsert_response(u, json!({"user_id": user_id})))
}

async fn get_user(api: &Api, id: &str) -> Result<ApiResponse, ApiError> {
    validate::user_id("user_id", id)?;
    let user_id = id.to_string();
    let shard = api.router.shard_for_user(id);
    let user = ask(api, shard, |reply| ShardCmd::GetUser { user_id, reply }).await?;
    Ok(json_response(StatusCode::OK, &users::user_json(&user)))
}

async fn add_device(
    api: &Api,
    id: &str,
    req: Request<Incoming>,
    bodies: &ConnBodies,
) -> Result<ApiResponse, ApiError> {
    validate::user_id("user_id", id)?;
    let body = read_body(req, MAX_BODY, bodies).await?;
    let device = users::parse_device(&body, api.target_policy)?;
    let (platform, device_id) = (device.platform, device.device_id.clone());
    let user_id = id.to_string();
    let shard = api.router.shard_for_user(id);
    let u = ask(api, shard, |reply| ShardCmd::AddDevice {
        user_id: user_id.clone(),
        device,
        reply,
    })
    .await?;
    Ok(upsert_response(
        u,
        json!({"user_id": user_id, "platform": platform.as_str(), "device_id": device_id, "active": true}),
    ))
}

async fn remove_device(api: &Api, id: &str, device_id: &str) -> Result<ApiResponse, ApiError> {
    validate::user_id("user_id", id)?;
    // The path's id in the canonical form of each platform that could hold it.
    let device_ids =
        crate::channels::rules::device_id_forms("device_id", device_id).map_err(ApiError::rule)?;
    let user_id = id.to_string();
    let shard = api.router.shard_for_user(id);
    ask(api, shard, |reply| ShardCmd::RemoveDevice {
        user_id,
        device_ids,
        reply,
    })
    .await?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// `202` with `{"id":..}`, or `{"duplicate":true,"id":..}` and `Idempotent-Replayed: true` for a
/// repeated key: written straight into the body, with the keys in the sorted order of the
/// other answers' `serde_json::Value`s, and no value tree per request.
fn notify_answer(r: NotifyReply) -> ApiResponse {
    let (id, replayed) = match r {
        NotifyReply::Accepted(id) => (id, false),
        NotifyReply::Duplicate(id) => (id, true),
    };
    let mut text = Uuid::encode_buffer();
    let id = id.hyphenated().encode_lower(&mut text);
    let body = if replayed {
        format!(r#"{{"duplicate":true,"id":"{id}"}}"#)
    } else {
        format!(r#"{{"id":"{id}"}}"#)
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::ACCEPTED;
    let headers = r.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if replayed {
        headers.insert(
            "idempotent-replayed",
            http::HeaderValue::from_static("true"),
        );
    }
    r
}

async fn notify_one(
    api: &Api,
    req: Request<Incoming>,
    bodies: &ConnBodies,
) -> Result<ApiResponse, ApiError> {
    api.admission.check().map_err(|e| api.shed(e))?;
    let body = read_body(req, MAX_BODY, bodies).await?;
    // In service until answered (this function's end): its latency adapts the limit.
    let _in_service = api.admission.admit(body.len()).map_err(|e| api.shed(e))?;
    let n = notifications::parse_single(&body)?;
    drop(body);
    let shard = api.router.shard_for_user(&n.user_id);
    let r = ask(api, shard, |reply| ShardCmd::Notify {
        notification: n,
        reply,
    })
    .await?;
    Ok(notify_answer(r))
}

async fn notify_batch(
    api: &Api,
    req: Request<Incoming>,
    bodies: &ConnBodies,
) -> Result<ApiResponse, ApiError> {
    api.admission.check().map_err(|e| api.shed(e))?;
    let body = read_body(req, MAX_BATCH_BODY, bodies).await?;
    // In service until answered (this function's end): its latency adapts the limit.
    let _in_service = api.admission.admit(body.len()).map_err(|e| api.shed(e))?;
    let items = notifications::parse_batch(&body)?;
    drop(body);
    let mut results: Vec<Option<Result<NotifyReply, ApiError>>> = Vec::with_capacity(items.len());
    // Every valid item goes to its owning shard, one command per shard with all of its items;
    // each shard answers its part with one message. Invalid items are answered here.
    let shards = api.router.shards();
    let per_shard_capacity = items.len().div_ceil(shards) + items.len() / 8;
    let mut per_shard: Vec<Vec<(u32, NewNotification)>> = (0..shards)
        .map(|_| Vec::with_capacity(per_shard_capacity))
        .collect();
    for (index, item) in (0u32..).zip(items) {
        match item {
            Ok(n) => {
                let shard = api.router.shard_for_user(&n.user_id);
                if let Some(part) = per_shard.get_mut(shard) {
                    part.push((index, n));
                }
                results.push(None);
            }
            Err(e) => results.push(Some(Err(e))),
        }
    }
    // Other shards' parts go first, and this task yields once so that the forwarder puts them on
    // the mesh before this shard spends its time on its own part: the shards then accept and
    // commit their parts side by side instead of one after the other.
    let me = api.router.me();
    let mut waits = Vec::new();
    let mut local = None;
    for (shard, items) in per_shard.into_iter().enumerate() {
        if items.is_empty() {
            continue;
        }
        let (reply, answers) = oneshot::channel();
        let cmd = ShardCmd::NotifyBatch { items, reply };
        if shard == me {
            local = Some(cmd);
        } else {
            api.router.dispatch(shard, cmd);
        }
        waits.push(answers);
    }
    if let Some(cmd) = local {
        if waits.len() > 1 {
            futures_lite::future::yield_now().await;
        }
        api.router.dispatch(me, cmd);
    }
    for answers in waits {
        for (index, answer) in answers.await.unwrap_or_default() {
            if let Some(slot) = results.get_mut(index as usize) {
                *slot = Some(answer.map_err(ApiError::shard));
            }
        }
    }
    // An item whose shard went away without answering: the client should retry it.
    let results: Vec<_> = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(ApiError::unanswered())))
        .collect();
    let refused = &api.router.probe().metrics.refused;
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        refused.bump(e.code, 0);
    }
    let body = serde_json::to_vec(&BatchAnswer { results: &results }).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// `{"results":[...]}`, one entry per item in order: `{"id":..,"status":202}` (plus
/// `"duplicate":true` for a replay) or `{"error":{..},"status":4xx}`. Serialized straight from
/// the replies, with no JSON value tree per item, and with every object's keys in sorted order
/// exactly as the `serde_json::Value` answers of the single-item endpoint have them.
struct BatchAnswer<'a> {
    results: &'a [Result<NotifyReply, ApiError>],
}

impl serde::Serialize for BatchAnswer<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct Item<'a>(&'a Result<NotifyReply, ApiError>);
        impl serde::Serialize for Item<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(None)?;
                match self.0 {
                    Ok(NotifyReply::Accepted(id)) => {
                        m.serialize_entry("id", &id.hyphenated())?;
                        m.serialize_entry("status", &StatusCode::ACCEPTED.as_u16())?;
                    }
                    Ok(NotifyReply::Duplicate(id)) => {
                        m.serialize_entry("duplicate", &true)?;
                        m.serialize_entry("id", &id.hyphenated())?;
                        m.serialize_entry("status", &StatusCode::ACCEPTED.as_u16())?;
                    }
                    Err(e) => {
                        m.serialize_entry("error", &ErrorBody(e))?;
                        m.serialize_entry("status", &e.status)?;
                    }
                }
                m.end()
            }
        }
        /// An `ApiError` with its keys sorted: code, field (when there is one), message.
        struct ErrorBody<'a>(&'a ApiError);
        impl serde::Serialize for ErrorBody<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(None)?;
                m.serialize_entry("code", self.0.code)?;
                if let Some(field) = &self.0.field {
                    m.serialize_entry("field", field)?;
                }
                m.serialize_entry("message", &self.0.message)?;
                m.end()
            }
        }
        struct Items<'a>(&'a [Result<NotifyReply, ApiError>]);
        impl serde::Serialize for Items<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for r in self.0 {
                    seq.serialize_element(&Item(r))?;
                }
                seq.end()
            }
        }
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("results", &Items(self.results))?;
        m.end()
    }
}

async fn get_notification(api: &Api, id: &str) -> Result<ApiResponse, ApiError> {
    let id = Uuid::parse_str(id).map_err(|_| {
        ApiError::field(
            "id",
            "invalid_id",
            format!("`{id}` is not a notification id"),
        )
    })?;
    let shard = clarion_shards::shard_of(&id) as usize;
    if shard >= api.router.shards() {
        return Err(ApiError::not_found(
            "notification_not_found",
            format!("no notification {id}"),
        ));
    }
    match ask(api, shard, |reply| ShardCmd::GetNotification { id, reply }).await? {
        Some(rec) => Ok(json_response(
            StatusCode::OK,
            &status::notification_json(&rec),
        )),
        None => Err(ApiError::not_found(
            "notification_not_found",
            format!("no notification {id}"),
        )),
    }
}

/// Asks every shard at once and sums their counts.
async fn on_every_shard(
    api: &Api,
    make: impl Fn(oneshot::Sender<Result<u64, ShardError>>) -> ShardCmd,
) -> Result<u64, ApiError> {
    let asks = (0..api.router.shards()).map(|shard| ask(api, shard, &make));
    let answers = futures_util::future::join_all(asks).await;
    answers.into_iter().sum()
}

async fn list_dead_letters(api: &Api, query: Option<&str>) -> Result<ApiResponse, ApiError> {
    let q = dead_letters::parse_list_query(query)?;
    let asks = (0..api.router.shards()).map(|shard| {
        ask(api, shard, |reply| ShardCmd::ListDead {
            filter: q.filter.clone(),
            below: q.below,
            limit: q.limit,
            reply,
        })
    });
    let pages = futures_util::future::join_all(asks)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let (items, next) = dead_letters::merge_pages(pages, q.limit);
    Ok(json_response(
        StatusCode::OK,
        &dead_letters::list_json(&items, next),
    ))
}

async fn stats(api: &Api) -> Result<ApiResponse, ApiError> {
    let mut total = ProbeSnapshot::default();
    let mut per_shard = Vec::new();
    for shard in 0..api.router.shards() {
        let s = ask(api, shard, |reply| ShardCmd::Stats { reply }).await?;
        total.add(&s);
        per_shard.push(s);
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"channels": api.channels_json(), "total": total, "shards": per_shard}),
    ))
}

/// `200 {"status":"ok","shards":N}` while every shard serves; otherwise `503` naming each shard
/// that does not, in the error shape, with every shard's state.
/// Both shapes carry `channels`, each channel's mode: a deploy delivering to a simulator, or
/// with a channel off, says so where a load balancer's operator looks.
fn health_response(states: &[ShardState], channels: Value) -> ApiResponse {
    let unhealthy: Vec<String> = states
        .iter()
        .enumerate()
        .filter(|(_, s)| **s != ShardState::Serving)
        .map(|(i, s)| match s {
            ShardState::Failed => {
                format!("shard {i} failed (its log refuses writes until restart)")
            }
            _ => format!("shard {i} is {}", s.name()),
        })
        .collect();
    if unhealthy.is_empty() {
        return json_response(
            StatusCode::OK,
            &json!({"status": "ok", "shards": states.len(), "channels": channels}),
        );
    }
    let code = if states.contains(&ShardState::Failed) {
        "shard_failed"
    } else {
        "starting"
    };
    let shards: Vec<Value> = states
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"shard": i, "state": s.name()}))
        .collect();
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({
            "status": "unavailable",
            "error": {"code": code, "message": unhealthy.join("; ")},
            "shards": shards,
            "channels": channels,
        }),
    )
}

/// `200 {"status":"ready"}` once every shard serves and until SIGTERM; `503` while starting,
/// while draining, and while a shard has failed, in the error shape.
fn ready_response(phase: Phase, states: &[ShardState]) -> ApiResponse {
    let failed = states.contains(&ShardState::Failed);
    let (code, message) = match phase {
        Phase::Ready if !failed => {
            return json_response(StatusCode::OK, &json!({"status": "ready"}));
        }
        Phase::Ready => ("shard_failed", "a shard's log failed: see /healthz"),
        Phase::Starting => (
            "starting",
            "recovering the log and starting channels: not ready yet",
        ),
        Phase::Draining => (
            "draining",
            "stopping: finishing in-flight work, take no new traffic here",
        ),
    };
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({"status": code, "error": {"code": code, "message": message}}),
    )
}

pub fn json_response(status: StatusCode, body: &Value) -> ApiResponse {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// An answer with no body (`204 No Content`).
pub fn empty_response(status: StatusCode) -> ApiResponse {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

pub fn error_response(e: &ApiError) -> ApiResponse {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = json_response(status, &e.to_json());
    if let Some(s) = e.retry_after_s {
        r.headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from(s));
    }
    if e.status == 401 {
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_labels_are_templates_never_ids() {
        assert_eq!(route_label("/v1/users/alice"), "/v1/users/{id}");
        assert_eq!(
            route_label("/v1/users/alice/devices/d1"),
            "/v1/users/{id}/devices/{device_id}"
        );
        assert_eq!(
            route_label("/v1/notifications/batch"),
            "/v1/notifications/batch"
        );
        assert_eq!(
            route_label("/v1/notifications/0190"),
            "/v1/notifications/{id}"
        );
        assert_eq!(route_label("/a/b/c/d/e/f/g"), "other");
        assert_eq!(route_label("/nope"), "other");
        assert_eq!(route_label("/metrics"), "/metrics");
    }

    #[test]
    fn readyz_is_200_only_when_ready_and_no_shard_failed() {
        let serving = [ShardState::Serving, ShardState::Serving];
        let body = |r: ApiResponse| -> Value {
            let bytes = r.into_body();
            let bytes = futures_lite::future::block_on(http_body_util::BodyExt::collect(bytes))
                .unwrap()
                .to_bytes();
            serde_json::from_slice(&bytes).unwrap()
        };
        let r = ready_response(Phase::Ready, &serving);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body(r)["status"], "ready");
        for (phase, states, code) in [
            (Phase::Starting, &serving, "starting"),
            (Phase::Draining, &serving, "draining"),
            (
                Phase::Ready,
                &[ShardState::Serving, ShardState::Failed],
                "shard_failed",
            ),
        ] {
            let r = ready_response(phase, states);
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(body(r)["error"]["code"], code);
        }
    }

    #[test]
    fn healthz_names_every_shard_that_does_not_serve() {
        use ShardState::*;
        let ok = health_response(&[Serving, Serving], json!({"apns": "simulator"}));
        assert_eq!(ok.status(), 200);
        let body = format!("{:?}", ok.body());
        assert!(
            body.contains(r#"\"channels\":{\"apns\":\"simulator\"}"#),
            "{body}"
        );
        let failed = health_response(&[Serving, Failed, Starting], json!({"apns": "live"}));
        assert_eq!(failed.status(), 503);
        let body = format!("{:?}", failed.body());
        assert!(body.contains(r#"\"code\":\"shard_failed\""#), "{body}");
        assert!(body.contains("shard 1 failed"), "{body}");
        assert!(body.contains("shard 2 is starting"), "{body}");
        assert!(!body.contains("shard 0"), "{body}");
        assert!(body.contains(r#"\"apns\":\"live\""#), "{body}");
        assert_eq!(
            health_response(&[Starting, Serving], json!({})).status(),
            503
        );
    }

    #[test]
    fn batch_answer_lists_each_result_in_order() {
        let id = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
        let results = vec![
            Ok(NotifyReply::Accepted(id)),
            Ok(NotifyReply::Duplicate(id)),
            Err(ApiError::field("title", "too_long", "title is too long")),
        ];
        let json = serde_json::to_string(&BatchAnswer { results: &results }).expect("json");
        // Byte for byte what the same answer built as a `serde_json::Value` (sorted keys) gives.
        let as_value = serde_json::json!({"results": [
            {"status": 202, "id": id.to_string()},
            {"status": 202, "id": id.to_string(), "duplicate": true},
            {"status": 400, "error": results[2].as_ref().err()},
        ]});
        assert_eq!(json, as_value.to_string());
        assert!(json.contains(r#""error":{"code":"too_long","field":"title","message":"title: title is too long"}"#), "{json}");
    }
}
