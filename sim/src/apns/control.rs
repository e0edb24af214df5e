//! The simulator's control endpoint (plain HTTP/1.1, so a simulator in its own process can be
//! read and steered by the load generator) and [`SimControl`], its client.
//!
//! | request | answer |
//! |---|---|
//! | `GET /stats` | [`SimStats`] JSON |
//! | `GET /ledger[?from=A&to=B]` | [`LedgerWire`] JSON, seqs restricted to `A..B` when given |
//! | `GET /recent` | `[ReceivedPush]` JSON, oldest first |
//! | `GET /faults` / `POST /faults` | [`Faults`] JSON (POST: 204, or 400 when invalid) |
//! | `POST /reset` | 204; counters, ledger and recent pushes cleared |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::{TcpListener, TcpStream};

use super::config::{Faults, SimError};
use super::connection::Shared;
use super::ledger::{Ledger, LedgerWire};
use super::stats::{ReceivedPush, SimStats};

/// Largest request body the control endpoint reads (a fault plan with many tokens).
const MAX_CONTROL_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Serves the control endpoint until the runtime is dropped.
pub(crate) async fn control_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| answer(req, shared.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    Ok(match (req.method().clone(), path.as_str()) {
        (Method::GET, "/stats") => json(&shared.stats()),
        (Method::GET, "/ledger") => {
            let ledger = shared.lock_ledger().clone();
            let ledger = match seq_range(&query) {
                Some(r) => ledger.restricted_to(r),
                None => ledger,
            };
            match ledger.to_wire() {
                Ok(w) => json(&w),
                Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        (Method::GET, "/recent") => json(&shared.recent.snapshot()),
        (Method::GET, "/faults") => json(&shared.faults.faults()),
        (Method::POST, "/faults") => {
            let body = Limited::new(req.into_body(), MAX_CONTROL_BODY_BYTES)
                .collect()
                .await;
            let parsed = body
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<Faults>(&b.to_bytes()).map_err(|e| e.to_string())
                })
                .and_then(|f| f.validate().map(|_| f).map_err(|e| e.to_string()));
            match parsed {
                Ok(f) => {
                    shared.faults.set(f);
                    plain(StatusCode::NO_CONTENT, String::new())
                }
                Err(e) => plain(StatusCode::BAD_REQUEST, e),
            }
        }
        (Method::POST, "/reset") => {
            shared.reset();
            plain(StatusCode::NO_CONTENT, String::new())
        }
        _ => plain(StatusCode::NOT_FOUND, "not found".into()),
    })
}

/// `from=A&to=B` as `A..B`.
fn seq_range(query: &str) -> Option<Range<u64>> {
    let mut from = None;
    let mut to = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("from", v)) => from = v.parse().ok(),
            Some(("to", v)) => to = v.parse().ok(),
            _ => {}
        }
    }
    Some(from.unwrap_or(0)..to.unwrap_or(u64::MAX)).filter(|_| from.is_some() || to.is_some())
}

fn json<T: Serialize>(v: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(v) {
        Ok(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn plain(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

/// A client of a simulator's control endpoint.
#[derive(Clone, Copy, Debug)]
pub struct SimControl {
    addr: SocketAddr,
}

impl SimControl {
    pub fn new(addr: SocketAddr) -> Self {
        SimControl { addr }
    }

    pub async fn stats(&self) -> Result<SimStats, SimError> {
        self.get_json("/stats").await
    }

    /// The ledger, restricted to the seqs in `range` when given.
    pub async fn ledger(&self, range: Option<Range<u64>>) -> Result<Ledger, SimError> {
        let path = match range {
            Some(r) => format!("/ledger?from={}&to={}", r.start, r.end),
            None => "/ledger".to_string(),
        };
        Ledger::from_wire(&self.get_json::<LedgerWire>(&path).await?)
    }

    pub async fn recent(&self) -> Result<Vec<ReceivedPush>, SimError> {
        self.get_json("/recent").await
    }

    pub async fn set_faults(&self, faults: &Faults) -> Result<(), SimError> {
        let body = serde_json::to_vec(faults).map_err(|e| SimError::Decode(e.to_string()))?;
        self.call(Method::POST, "/faults", Bytes::from(body))
            .await
            .map(|_| ())
    }

    pub async fn reset(&self) -> Result<(), SimError> {
        self.call(Method::POST, "/reset", Bytes::new())
            .await
            .map(|_| ())
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, SimError> {
        let body = self.call(Method::GET, path, Bytes::new()).await?;
        serde_json::from_slice(&body).map_err(|e| SimError::Decode(format!("{path}: {e}")))
    }

    async fn call(&self, method: Method, path: &str, body: Bytes) -> Result<Bytes, SimError> {
        let tcp = TcpStream::connect(self.addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| SimError::Decode(format!("control handshake: {e}")))?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.addr.to_string())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| SimError::Decode(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| SimError::Decode(format!("control {path}: {e}")))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| SimError::Decode(format!("control {path} body: {e}")))?
            .to_bytes();
        if !status.is_success() {
            let msg = String::from_utf8_lossy(&bytes);
            return Err(SimError::Decode(format!("control {path}: {status} {msg}")));
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_range_parses_either_bound() {
        assert_eq!(seq_range(""), None);
        assert_eq!(seq_range("from=5&to=9"), Some(5..9));
        assert_eq!(seq_range("to=9"), Some(0..9));
        assert_eq!(seq_range("from=5"), Some(5..u64::MAX));
        assert_eq!(seq_range("x=1"), None);
    }
}
