//! The load generator's HTTP client for Clarion's API: HTTP/2 with prior knowledge over
//! cleartext TCP (`connections` connections, requests spread round-robin and multiplexed), or
//! HTTP/1.1 keep-alive (`connections` connections, one request at a time on each). A broken
//! connection is replaced on its next use.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::Protocol;

/// HTTP/2 stream window for answers (batch answers can be a few hundred kilobytes).
const H2_STREAM_WINDOW_BYTES: u32 = 4 << 20;
/// HTTP/2 connection window.
const H2_CONNECTION_WINDOW_BYTES: u32 = 64 << 20;

/// One answer.
#[derive(Debug)]
pub(crate) struct ApiResponse {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
}

/// An API client over a fixed number of connections.
pub(crate) struct ApiClient {
    target: SocketAddr,
    authorization: String,
    transport: Transport,
}

enum Transport {
    H2 {
        slots: Vec<tokio::sync::Mutex<Option<h2::client::SendRequest<Bytes>>>>,
        next: AtomicUsize,
    },
    H1 {
        idle: Mutex<Vec<hyper::client::conn::http1::SendRequest<Full<Bytes>>>>,
        permits: Semaphore,
    },
}

impl ApiClient {
    /// A client; connections are opened on first use.
    pub(crate) fn new(
        target: SocketAddr,
        api_key: &str,
        protocol: Protocol,
        connections: usize,
    ) -> Self {
        let connections = connections.max(1);
        let transport = match protocol {
            Protocol::H2 => Transport::H2 {
                slots: (0..connections)
                    .map(|_| tokio::sync::Mutex::new(None))
                    .collect(),
                next: AtomicUsize::new(0),
            },
            Protocol::H1 => Transport::H1 {
                idle: Mutex::new(Vec::with_capacity(connections)),
                permits: Semaphore::new(connections),
            },
        };
        ApiClient {
            target,
            authorization: format!("Bearer {api_key}"),
            transport,
        }
    }

    /// Sends one request with a JSON body (or none when empty) and reads the whole answer.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<ApiResponse> {
        match &self.transport {
            Transport::H2 { slots, next } => {
                let i = next.fetch_add(1, Ordering::Relaxed) % slots.len();
                let sender = {
                    let mut slot = slots[i].lock().await;
                    match slot.as_ref() {
                        Some(s) => s.clone(),
                        None => {
                            let s = self.connect_h2().await?;
                            *slot = Some(s.clone());
                            s
                        }
                    }
                };
                let result = self.send_h2(sender, method, path, body).await;
                if let Err(e) = &result {
                    // A reset stream leaves the connection usable; anything else replaces it.
                    let stream_only = e
                        .downcast_ref::<h2::Error>()
                        .is_some_and(|h| h.is_reset() && !h.is_go_away());
                    if !stream_only {
                        *slots[i].lock().await = None;
                    }
                }
                result
            }
            Transport::H1 { idle, permits } => {
                let _permit = permits.acquire().await?;
                let pooled = idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let mut sender = match pooled {
                    Some(s) if !s.is_closed() => s,
                    _ => self.connect_h1().await?,
                };
                sender.ready().await?;
                let req = self.request(method, path).body(Full::new(body))?;
                let resp = sender.send_request(req).await?;
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await?.to_bytes();
                idle.lock().unwrap_or_else(|p| p.into_inner()).push(sender);
                Ok(ApiResponse { status, body })
            }
        }
    }

    fn request(&self, method: Method, path: &str) -> http::request::Builder {
        let b = Request::builder()
            .method(method)
            .header(header::AUTHORIZATION, &self.authorization)
            .header(header::CONTENT_TYPE, "application/json");
        match self.transport {
            Transport::H2 { .. } => b.uri(format!("http://{}{path}", self.target)),
            Transport::H1 { .. } => b.uri(path).header(header::HOST, self.target.to_string()),
        }
    }

    async fn send_h2(
        &self,
        sender: h2::client::SendRequest<Bytes>,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<ApiResponse> {
        let mut sender = sender.ready().await?;
        let req = self.request(method, path).body(())?;
        let (resp, mut stream) = sender.send_request(req, body.is_empty())?;
        if !body.is_empty() {
            stream.send_data(body, true)?;
        }
        let resp = resp.await?;
        let status = resp.status().as_u16();
        let mut recv = resp.into_body();
        let mut first: Option<Bytes> = None;
        let mut rest = Vec::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            match &first {
                None => first = Some(chunk),
                Some(_) => rest.extend_from_slice(&chunk),
            }
        }
        let body = match first {
            None => Bytes::new(),
            Some(f) if rest.is_empty() => f,
            Some(f) => {
                let mut all = f.to_vec();
                all.extend_from_slice(&rest);
                Bytes::from(all)
            }
        };
        Ok(ApiResponse { status, body })
    }

    async fn connect_h2(&self) -> anyhow::Result<h2::client::SendRequest<Bytes>> {
        let tcp = TcpStream::connect(self.target).await?;
        tcp.set_nodelay(true)?;
        let (sender, conn) = h2::client::Builder::new()
            .initial_window_size(H2_STREAM_WINDOW_BYTES)
            .initial_connection_window_size(H2_CONNECTION_WINDOW_BYTES)
            .handshake::<_, Bytes>(tcp)
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("h2 connection ended: {e}");
            }
        });
        Ok(sender)
    }

    async fn connect_h1(
        &self,
    ) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        let tcp = TcpStream::connect(self.target).await?;
        tcp.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("http/1.1 connection ended: {e}");
            }
        });
        Ok(sender)
    }
}
