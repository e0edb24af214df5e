//! A stand-in for Clarion's HTTP API (HTTP/1.1 and h2c on one port) for the load generator's
//! tests: registers users and devices, answers notifications 202 (or per the test's rules),
//! optionally one at a time with a service delay, and hands each accepted notification's
//! `lt_seq`/`lt_ts` to the test.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc::UnboundedSender;

pub const API_KEY: &str = "test-key";

/// How the fake API behaves.
#[derive(Default)]
pub struct Behaviour {
    /// Time to serve each notification request.
    pub service_time: Duration,
    /// Serve notification requests one at a time (a single-threaded bottleneck).
    pub serial: bool,
    /// Answer 429 to these seqs.
    pub reject: BTreeSet<u64>,
    /// Where accepted notifications go.
    pub accepted: Option<UnboundedSender<Accepted>>,
    /// The API key expected instead of [`API_KEY`].
    pub api_key: Option<String>,
}

/// An accepted notification, for a test's relay to the simulator.
#[derive(Clone, Debug)]
pub struct Accepted {
    pub seq: u64,
    pub lt_ts: Option<u64>,
    pub user_id: String,
}

#[derive(Default)]
pub struct Counts {
    pub users: AtomicU64,
    pub devices: AtomicU64,
    pub notifications: AtomicU64,
    pub unauthorized: AtomicU64,
}

struct State {
    behaviour: Behaviour,
    counts: Arc<Counts>,
    serial: tokio::sync::Mutex<()>,
    devices: Mutex<BTreeMap<String, Vec<String>>>,
}

#[derive(Clone)]
pub struct FakeApi {
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
    state: Arc<State>,
}

impl FakeApi {
    pub async fn start(behaviour: Behaviour) -> FakeApi {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), behaviour).await
    }

    pub async fn start_on(addr: SocketAddr, behaviour: Behaviour) -> FakeApi {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let counts = Arc::new(Counts::default());
        let state = Arc::new(State {
            behaviour,
            counts: counts.clone(),
            serial: tokio::sync::Mutex::new(()),
            devices: Mutex::new(BTreeMap::new()),
        });
        let accept_state = state.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let state = accept_state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(req, state.clone()));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        FakeApi {
            addr,
            counts,
            state,
        }
    }

    pub fn device_tokens(&self) -> BTreeSet<String> {
        self.state
            .devices
            .lock()
            .expect("lock")
            .values()
            .flatten()
            .cloned()
            .collect()
    }

    pub fn devices_of(&self, user_id: &str) -> Vec<String> {
        self.state
            .devices
            .lock()
            .expect("lock")
            .get(user_id)
            .cloned()
            .unwrap_or_default()
    }
}

fn reply(status: u16, body: String) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let mut r = http::Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
    Ok(r)
}

async fn answer(
    req: http::Request<Incoming>,
    state: Arc<State>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let key = state.behaviour.api_key.as_deref().unwrap_or(API_KEY);
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {key}"));
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    if path == "/healthz" {
        return reply(200, "ok".into());
    }
    let body = req.into_body().collect().await.expect("body").to_bytes();
    if !authorized {
        state.counts.unauthorized.fetch_add(1, Ordering::Relaxed);
        return reply(401, "{}".into());
    }
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    match (method.as_str(), path.as_str()) {
        ("PUT", p) if p.starts_with("/v1/users/") => {
            assert!(
                json["email"].is_string() && json["timezone"].is_string(),
                "{json}"
            );
            state.counts.users.fetch_add(1, Ordering::Relaxed);
            reply(201, "{}".into())
        }
        ("POST", p) if p.ends_with("/devices") => {
            assert_eq!(json["platform"], "ios");
            let token = json["token"].as_str().expect("token").to_string();
            let user = p
                .trim_start_matches("/v1/users/")
                .trim_end_matches("/devices")
                .to_string();
            state
                .devices
                .lock()
                .expect("lock")
                .entry(user)
                .or_default()
                .push(token);
            state.counts.devices.fetch_add(1, Ordering::Relaxed);
            reply(201, "{}".into())
        }
        ("POST", "/v1/notifications") => {
            let _one = serve_slot(&state).await;
            let status = notification(&state, &json);
            reply(status, format!(r#"{{"id":"n{}"}}"#, json["data"]["lt_seq"]))
        }
        ("POST", "/v1/notifications/batch") => {
            let _one = serve_slot(&state).await;
            let items = json["notifications"].as_array().expect("notifications");
            let results: Vec<String> = items
                .iter()
                .map(|n| match notification(&state, n) {
                    202 => r#"{"status":202,"id":"x"}"#.to_string(),
                    s => format!(r#"{{"status":{s},"error":{{"code":"rate_limited","message":"slow down"}}}}"#),
                })
                .collect();
            reply(200, format!(r#"{{"results":[{}]}}"#, results.join(",")))
        }
        _ => reply(404, "{}".into()),
    }
}

/// Waits out the service time, one request at a time when `serial`.
async fn serve_slot(state: &State) -> Option<tokio::sync::MutexGuard<'_, ()>> {
    let guard = if state.behaviour.serial {
        Some(state.serial.lock().await)
    } else {
        None
    };
    if !state.behaviour.service_time.is_zero() {
        tokio::time::sleep(state.behaviour.service_time).await;
    }
    guard
}

fn notification(state: &State, n: &serde_json::Value) -> u16 {
    state.counts.notifications.fetch_add(1, Ordering::Relaxed);
    assert!(
        n["user_id"].is_string() && n["idempotency_key"].is_string(),
        "{n}"
    );
    let seq = n["data"]["lt_seq"].as_u64().expect("lt_seq");
    if state.behaviour.reject.contains(&seq) {
        return 429;
    }
    if let Some(tx) = &state.behaviour.accepted {
        let user_id = n["user_id"].as_str().unwrap_or_default().to_string();
        let _ = tx.send(Accepted {
            seq,
            lt_ts: n["data"]["lt_ts"].as_u64(),
            user_id,
        });
    }
    202
}
