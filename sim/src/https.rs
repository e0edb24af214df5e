//! The HTTPS origin the FCM and Web Push simulators stand on: a self-signed certificate for
//! 127.0.0.1 (the same as the APNs simulator's), TLS with ALPN `h2`, hyper's HTTP/2 server on
//! a thread and a current-thread tokio runtime of its own, and a handle that stops it.

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

/// A running origin; dropping it stops the thread and every connection.
pub(crate) struct Origin {
    pub(crate) addr: SocketAddr,
    pub(crate) ca_pem: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Serves `handle` on `listen` over TLS + HTTP/2 on a thread named `name`; returns once it listens.
pub(crate) fn serve<S, F, Fut>(
    name: &str,
    listen: SocketAddr,
    state: S,
    handle: F,
) -> Result<Origin, SimError>
where
    S: Clone + Send + Sync + 'static,
    F: Fn(S, Request<Incoming>) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let tls = crate::apns::tls_identity()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls.server_config));
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
    acceptor: tokio_rustls::TlsAcceptor,
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
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(state, req).await) }
            });
            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
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
