//! The HTTPS origin the FCM and Web Push simulators stand on: a self-signed certificate for
//! 127.0.0.1 (the same as the APNs simulator's), TLS with ALPN `h2`, hyper's HTTP/2 server on
//! a thread and a current-thread tokio runtime of its own, and a handle that stops it. A Web
//! Push simulator can stand for a push service that offers only HTTP/1.1 instead (ALPN
//! `http/1.1`), or for a plain `http` test server on loopback ([`Protocol`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::sync::oneshot;

use crate::apns::SimError;

/// Streams one HTTP/2 connection may have open at once.
const MAX_CONCURRENT_STREAMS: u32 = 128;

/// What an origin speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/2 over TLS, ALPN `h2` (what the real push services and FCM offer).
    #[default]
    H2,
    /// HTTP/1.1 keep-alive over TLS, ALPN `http/1.1` only.
    Http1,
    /// HTTP/1.1 over plain TCP (`http://127.0.0.1:port`).
    PlainHttp1,
}

impl Protocol {
    /// The origin's scheme.
    pub fn scheme(self) -> &'static str {
        match self {
            Protocol::PlainHttp1 => "http",
            Protocol::H2 | Protocol::Http1 => "https",
        }
    }
}

/// A running origin; dropping it stops the thread and every connection.
pub(crate) struct Origin {
    pub(crate) addr: SocketAddr,
    pub(crate) ca_pem: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Serves `handle` on `listen` speaking `protocol` (TLS + HTTP/2 for FCM and the real push
/// services) on a thread named `name`; returns once it listens.
pub(crate) fn serve<S, F, Fut>(
    name: &str,
    listen: SocketAddr,
    state: S,
    handle: F,
    protocol: Protocol,
) -> Result<Origin, SimError>
where
    S: Clone + Send + Sync + 'static,
    F: Fn(S, Request<Incoming>) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let mut tls = crate::apns::tls_identity()?;
    if protocol == Protocol::Http1 {
        tls.server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    let acceptor = (protocol != Protocol::PlainHttp1)
        .then(|| tokio_rustls::TlsAcceptor::from(Arc::new(tls.server_config)));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<SocketAddr, SimError>>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => return drop(ready_tx.send(Err(SimError::Runtime(e.to_string())))),
            };
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::bind(listen).await {
                    Ok(l) => l,
                    Err(e) => return drop(ready_tx.send(Err(SimError::Io(e)))),
                };
                let _ = ready_tx.send(listener.local_addr().map_err(SimError::Io));
                tokio::select! {
                    () = accept_loop(listener, acceptor, state, handle) => {}
                    _ = stop_rx => {}
                }
            });
        })
        .map_err(|e| SimError::Runtime(format!("spawn {name}: {e}")))?;
    let addr = ready_rx
        .recv()
        .map_err(|_| SimError::Runtime(format!("{name} exited before listening")))??;
    Ok(Origin {
        addr,
        ca_pem: tls.cert_pem,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

async fn accept_loop<S, F, Fut>(
    listener: tokio::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    state: S,
    handle: F,
) where
    S: Clone + Send + Sync + 'static,
    F: Fn(S, Request<Incoming>) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, state) = (acceptor.clone(), state.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(state, req).await) }
            });
            let Some(acceptor) = acceptor else {
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
                return;
            };
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let io = hyper_util::rt::TokioIo::new(tls);
            let _ = if h2 {
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
                    .serve_connection(io, service)
                    .await
            } else {
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
            };
        });
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
