//! An in-process APNs stand-in for the sender's tests: TLS (a self-signed rcgen certificate for
//! 127.0.0.1) and HTTP/2 on 127.0.0.1:0 in its own glommio executor thread, answering each
//! request as the test's script says and recording what it saw, how many streams were open at
//! once, and which connection each request came on.

use super::frame_tap::FrameTap;
use bytes::Bytes;
use futures_lite::future;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::compat::FuturesAsyncReadCompatExt;

/// The answer to one request, chosen by the test's script from the request's overall index.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) reason: Option<&'static str>,
    pub(crate) delay: Duration,
    pub(crate) headers: Vec<(&'static str, &'static str)>,
    pub(crate) action: Action,
}

/// What the server does with a request besides (or instead of) answering it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Answer,
    /// Answer nothing; send GOAWAY (NO_ERROR, this stream processed) and drop the connection.
    AbruptGoaway,
    /// Start a graceful GOAWAY (h2: GOAWAY at the max id, PING, GOAWAY at the last id), then
    /// answer this request normally.
    GracefulGoaway,
    /// Reset the stream with REFUSED_STREAM.
    Refuse,
}

impl Reply {
    pub(crate) fn ok() -> Reply {
        Reply {
            status: 200,
            reason: None,
            delay: Duration::ZERO,
            headers: Vec::new(),
            action: Action::Answer,
        }
    }
    pub(crate) fn error(status: u16, reason: &'static str) -> Reply {
        Reply {
            status,
            reason: Some(reason),
            ..Reply::ok()
        }
    }
    pub(crate) fn doing(action: Action) -> Reply {
        Reply {
            action,
            ..Reply::ok()
        }
    }
    pub(crate) fn after(self, delay: Duration) -> Reply {
        Reply { delay, ..self }
    }
    pub(crate) fn header(mut self, name: &'static str, value: &'static str) -> Reply {
        self.headers.push((name, value));
        self
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) index: usize,
    pub(crate) connection: usize,
    pub(crate) method: String,
    pub(crate) uri: String,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: Vec<u8>,
    /// Streams being handled on its connection when it arrived, itself included.
    pub(crate) concurrent: usize,
    /// The stream limit its connection advertised when it arrived.
    pub(crate) advertised: u32,
}

pub(crate) struct Options {
    pub(crate) script: Arc<dyn Fn(usize) -> Reply + Send + Sync>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS advertised at first, like APNs before the first success.
    pub(crate) initial_streams: u32,
    /// Advertised once a connection's first request has been answered.
    pub(crate) raised_streams: u32,
    pub(crate) offer_h2: bool,
}

impl Options {
    pub(crate) fn script(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Options {
        Options {
            script: Arc::new(script),
            initial_streams: 1,
            raised_streams: 1000,
            offer_h2: true,
        }
    }
}

/// The server's shared record; `watch()` hands it to the client thread.
#[derive(Default)]
pub(crate) struct Shared {
    seen: Mutex<Vec<Seen>>,
    requests: AtomicUsize,
    connections: AtomicUsize,
    connections_closed: AtomicUsize,
    drop_pongs: Arc<AtomicBool>,
    /// Every byte each connection received (after TLS), by connection number.
    inbound: Mutex<Vec<Vec<u8>>>,
}

pub(crate) struct FakeApns {
    pub(crate) port: u16,
    pub(crate) ca_pem: String,
    shared: Arc<Shared>,
    stop: Option<futures_channel::oneshot::Sender<()>>,
    thread: Option<glommio::ExecutorJoinHandle<()>>,
}

impl FakeApns {
    pub(crate) fn start(options: Options) -> FakeApns {
        let cert = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .unwrap();
        let ca_pem = cert.cert.pem();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        if options.offer_h2 {
            tls.alpn_protocols = vec![b"h2".to_vec()];
        }
        let acceptor = futures_rustls::TlsAcceptor::from(Arc::new(tls));
        let shared = Arc::new(Shared::default());
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stop, mut stopped) = futures_channel::oneshot::channel::<()>();
        let server = shared.clone();
        let options = Arc::new(options);
        let thread = LocalExecutorBuilder::new(Placement::Unbound)
            .name("fake-apns")
            .io_memory(1 << 20)
            .spawn(move || async move {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                port_tx.send(listener.local_addr().unwrap().port()).unwrap();
                loop {
                    let accepted = future::or(async { Some(listener.accept().await) }, async {
                        let _ = (&mut stopped).await;
                        None
                    });
                    let Some(Ok(tcp)) = accepted.await else { break };
                    let task = serve(tcp, acceptor.clone(), server.clone(), options.clone());
                    glommio::spawn_local(task).detach();
                }
            })
            .unwrap();
        let port = port_rx.recv().unwrap();
        FakeApns {
            port,
            ca_pem,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Requests seen so far, in arrival order.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        let mut seen = self.shared.seen.lock().unwrap().clone();
        seen.sort_by_key(|s| s.index);
        seen
    }
    pub(crate) fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
    pub(crate) fn connections_closed(&self) -> usize {
        self.shared.connections_closed()
    }
    pub(crate) fn watch(&self) -> Arc<Shared> {
        self.shared.clone()
    }
    /// The HTTP/2 bytes the client sent on connection `connection` (numbered from 0).
    pub(crate) fn inbound(&self, connection: usize) -> Vec<u8> {
        let inbound = self.shared.inbound.lock().unwrap();
        inbound.get(connection).cloned().unwrap_or_default()
    }
    pub(crate) fn drop_pongs(&self, drop: bool) {
        self.shared.drop_pongs.store(drop, Ordering::SeqCst);
    }
}

impl Shared {
    pub(crate) fn connections_closed(&self) -> usize {
        self.connections_closed.load(Ordering::SeqCst)
    }
}

impl Drop for FakeApns {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    tcp: glommio::net::TcpStream,
    acceptor: futures_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    options: Arc<Options>,
) {
    let connection = shared.connections.fetch_add(1, Ordering::SeqCst);
    let Ok(tls) = acceptor.accept(tcp).await else {
        return;
    };
    let advertised = Rc::new(Cell::new(options.initial_streams));
    let recorder = shared.clone();
    let record = Box::new(move |bytes: &[u8]| {
        let mut inbound = recorder.inbound.lock().unwrap();
        if inbound.len() <= connection {
            inbound.resize(connection + 1, Vec::new());
        }
        inbound[connection].extend_from_slice(bytes);
    });
    let tap = FrameTap::new(tls, advertised.clone(), shared.drop_pongs.clone(), record);
    let handshake = h2::server::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(1 << 24)
        // The real limit is what the tap advertises; h2 must not refuse streams on its own.
        .max_concurrent_streams(10_000)
        .handshake::<_, Bytes>(tap.compat())
        .await;
    let Ok(mut h2) = handshake else { return };
    let active = Rc::new(Cell::new(0usize));
    let mut held = Vec::new();
    let mut on_this_connection = 0;
    while let Some(Ok((request, respond))) = h2.accept().await {
        let index = shared.requests.fetch_add(1, Ordering::SeqCst);
        let reply = (options.script)(index);
        active.set(active.get() + 1);
        let (concurrent, limit) = (active.get(), advertised.get());
        on_this_connection += 1;
        if on_this_connection == 2 && options.raised_streams != limit {
            // The first request was answered: raise the limit, as APNs does.
            advertised.set(options.raised_streams);
            h2.set_initial_window_size(1 << 20).unwrap();
        }
        let (parts, mut body) = request.into_parts();
        let mut seen = Seen {
            index,
            connection,
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
                .collect(),
            body: Vec::new(),
            concurrent,
            advertised: limit,
        };
        match reply.action {
            Action::Answer => {}
            Action::AbruptGoaway => {
                shared.seen.lock().unwrap().push(seen);
                held.push(respond);
                h2.abrupt_shutdown(h2::Reason::NO_ERROR);
                continue;
            }
            Action::GracefulGoaway => h2.graceful_shutdown(),
            Action::Refuse => {
                shared.seen.lock().unwrap().push(seen);
                active.set(active.get() - 1);
                let mut respond = respond;
                respond.send_reset(h2::Reason::REFUSED_STREAM);
                continue;
            }
        }
        let (shared, active) = (shared.clone(), active.clone());
        glommio::spawn_local(async move {
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
                seen.body.extend_from_slice(&chunk);
            }
            let apns_id = seen.headers.get("apns-id").cloned().unwrap_or_default();
            shared.seen.lock().unwrap().push(seen);
            glommio::timer::sleep(reply.delay).await;
            active.set(active.get() - 1);
            answer(respond, &reply, &apns_id);
        })
        .detach();
    }
    drop(held);
    shared.connections_closed.fetch_add(1, Ordering::SeqCst);
}

fn answer(mut respond: h2::server::SendResponse<Bytes>, reply: &Reply, apns_id: &str) {
    let mut response = http::Response::builder()
        .status(reply.status)
        .header("apns-id", apns_id);
    for (name, value) in &reply.headers {
        response = response.header(*name, *value);
    }
    let body = reply
        .reason
        .map(|r| format!(r#"{{"reason":"{r}","timestamp":1700000000000}}"#));
    let Ok(mut stream) = respond.send_response(response.body(()).unwrap(), body.is_none()) else {
        return;
    };
    if let Some(body) = body {
        let _ = stream.send_data(Bytes::from(body), true);
    }
}
