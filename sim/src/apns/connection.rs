//! One APNs connection: TLS accept, the HTTP/2 handshake behind the stream-limit shim, and
//! each request's path from headers to answer. Header checks (including the provider token)
//! run on the connection task, where the connection's token cache lives; the body, the payload
//! checks, injected latency and the answer are a job per request. Jobs run in order on the
//! connection task once it has no more input (so the answers go out together), and a job that
//! must wait (body still coming, injected latency) moves to a task of its own, so a slow answer
//! never holds up the others.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use h2::RecvStream;
use h2::server::SendResponse;
use http::header::HeaderName;
use http::{HeaderValue, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::config::SimConfig;
use super::faults::{ConnAction, FaultPlan, FaultState, FaultView, SplitMix64, mix};
use super::headers::{HeaderScan, Slot};
use super::jwt::{ConnTokenCache, TokenVerifier};
use super::ledger::Ledger;
use super::reason::Reason;
use super::receipts::ReceiptLog;
use super::request::{PushHead, resolve_apns_id, validate_head, validate_payload};
use super::settings_shim::{SettingsShim, StreamLimits};
use super::stats::{Counters, RawPush, RecentLog, SimStats, unix_ms, unix_ns};

/// HTTP/2 stream receive window: a whole payload always fits.
const STREAM_WINDOW_BYTES: u32 = 1 << 20;
/// HTTP/2 connection receive window.
const CONNECTION_WINDOW_BYTES: u32 = 1 << 24;

/// State shared by every connection and the handle.
pub(crate) struct Shared {
    topic: String,
    initial_streams: u32,
    max_streams: u32,
    pub(crate) verifier: TokenVerifier,
    pub(crate) faults: FaultState,
    pub(crate) counters: Counters,
    pub(crate) ledger: Mutex<Ledger>,
    pub(crate) recent: RecentLog,
    pub(crate) receipts: Option<ReceiptLog>,
    connection_ids: AtomicU64,
}

impl Shared {
    pub(crate) fn new(cfg: &SimConfig, verifier: TokenVerifier) -> Self {
        Shared {
            topic: cfg.topic.clone(),
            initial_streams: cfg.initial_max_concurrent_streams,
            max_streams: cfg.max_concurrent_streams,
            verifier,
            faults: FaultState::new(cfg.faults.clone()),
            counters: Counters::default(),
            ledger: Mutex::new(Ledger::default()),
            recent: RecentLog::default(),
            receipts: cfg.receipt_log.then(ReceiptLog::default),
            connection_ids: AtomicU64::new(0),
        }
    }

    pub(crate) fn lock_ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn stats(&self) -> SimStats {
        let mut s = self.counters.snapshot();
        s.jwt_verifications = self.verifier.verifications();
        let ledger = self.lock_ledger();
        s.ledger_receipts = ledger.receipts();
        s.ledger_distinct = ledger.distinct();
        s
    }

    pub(crate) fn reset(&self) {
        self.counters.reset();
        self.verifier.reset_verifications();
        *self.lock_ledger() = Ledger::default();
        self.recent.clear();
        if let Some(r) = &self.receipts {
            r.clear();
        }
    }
}

/// How often a closed listener (the `refuse_connections` fault) checks whether to listen again,
/// and an open one whether to close.
const REFUSAL_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Accepts connections until the runtime is dropped. While the faults say
/// `refuse_connections`, the listener is closed (connects are refused by the kernel, as when a
/// provider's endpoint is down) and bound again on the same address once they no longer do.
pub(crate) async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    let mut listener = Some(listener);
    loop {
        let refusing = shared.faults.refusing();
        let Some(open) = listener.as_ref().filter(|_| !refusing) else {
            listener = None; // closed: the kernel refuses new connections
            tokio::time::sleep(REFUSAL_POLL).await;
            if !shared.faults.refusing() {
                match TcpListener::bind(addr).await {
                    Ok(l) => listener = Some(l),
                    Err(e) => tracing::warn!("apns simulator listen again on {addr}: {e}"),
                }
            }
            continue;
        };
        let accepted = tokio::select! {
            a = open.accept() => a,
            () = tokio::time::sleep(REFUSAL_POLL) => continue,
        };
        match accepted {
            Ok((tcp, _)) => {
                let _ = tcp.set_nodelay(true);
                tokio::spawn(serve_connection(tcp, acceptor.clone(), shared.clone()));
            }
            Err(e) => {
                tracing::warn!("apns simulator accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve_connection(tcp: TcpStream, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let tls = match acceptor.accept(tcp).await {
        Ok(t) => t,
        Err(_) => return Counters::bump(&shared.counters.tls_failures),
    };
    Counters::bump(&shared.counters.connections);
    let conn_id = shared.connection_ids.fetch_add(1, Ordering::Relaxed) + 1;
    let connected_ms = unix_ms();
    let limits = Arc::new(StreamLimits::default());
    let io = SettingsShim::new(
        tls,
        limits.clone(),
        shared.initial_streams,
        shared.max_streams,
    );
    let handshake = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_concurrent_streams(shared.max_streams)
        .handshake::<_, Bytes>(io)
        .await;
    let Ok(mut conn) = handshake else { return };
    let mut tokens = ConnTokenCache::default();
    let mut faults = FaultView::new(&shared.faults);
    let mut ids = SplitMix64::new(mix(unix_ns() ^ conn_id));
    let active = Arc::new(AtomicU32::new(0));
    let answered = Arc::new(AtomicBool::new(false));
    let mut served = 0u64;
    // Requests accepted since the connection last ran out of input: their jobs run (in order)
    // once it has, so that all their answers leave in one write, as when each job was a task.
    let mut batch = Vec::new();
    loop {
        let next = poll_fn(|cx| match conn.poll_accept(cx) {
            Poll::Pending if !batch.is_empty() => Poll::Ready(Accepted::Idle),
            Poll::Pending => Poll::Pending,
            Poll::Ready(next) => Poll::Ready(Accepted::Next(next)),
        })
        .await;
        let next = match next {
            Accepted::Idle => {
                run_batch(&mut batch);
                continue;
            }
            Accepted::Next(None) => break,
            Accepted::Next(Some(next)) => next,
        };
        let Ok((req, mut respond)) = next else { break };
        served += 1;
        let plan = faults.plan(&shared.faults).clone();
        let action = plan.connection_action(served, &shared.faults);
        if action == ConnAction::Drop {
            Counters::bump(&shared.counters.dropped_connections);
            batch.into_iter().for_each(|job| drop(tokio::spawn(job)));
            return; // drops the connection and its socket: no GOAWAY, no answer
        }
        let stream_id = u32::from(respond.stream_id());
        if limits.binds(stream_id) && active.load(Ordering::Relaxed) >= shared.initial_streams {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
            Counters::bump(&shared.counters.refused_streams);
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let scan = HeaderScan::new(req.headers());
        let apns_id = resolve_apns_id(&scan, &mut ids);
        let id_from_request = apns_id.is_ok() && scan.get(Slot::ApnsId).is_some();
        let head = validate_head(
            &req,
            &scan,
            &shared.topic,
            &shared.verifier,
            &mut tokens,
            unix_ms() / 1000,
        );
        let job = RequestJob {
            id_from_request,
            plan,
            shared: shared.clone(),
            limits: limits.clone(),
            active: active.clone(),
            answered: answered.clone(),
            conn_id,
            connected_ms,
        };
        // Only the body stream goes on: the request's head (most of its size) is done with, and
        // the job's future, copied whole into its box, stays small.
        let (Ok(apns_id) | Err(apns_id)) = apns_id;
        batch.push(Box::pin(job.run(apns_id, head, req.into_body(), respond)));
        if action == ConnAction::ServeThenGoAway {
            Counters::bump(&shared.counters.goaways);
            conn.graceful_shutdown();
        }
    }
    batch.into_iter().for_each(|job| drop(tokio::spawn(job)));
}

/// What the connection had next.
enum Accepted<T> {
    Next(Option<T>),
    /// No request is ready and jobs are waiting.
    Idle,
}

/// Runs the batched jobs in order. Usually the body came with the headers and a job finishes
/// at once, with no task of its own; a job that has to wait (body still coming, injected
/// latency) is handed to a task, whose first poll registers the real waker.
fn run_batch<F: Future<Output = ()> + Send + 'static>(batch: &mut Vec<Pin<Box<F>>>) {
    let mut cx = Context::from_waker(Waker::noop());
    for mut job in batch.drain(..) {
        if job.as_mut().poll(&mut cx).is_pending() {
            tokio::spawn(job);
        }
    }
}

/// One request after its headers were checked.
struct RequestJob {
    /// The request carried a well-formed `apns-id` of its own (echoed as is).
    id_from_request: bool,
    plan: Arc<FaultPlan>,
    shared: Arc<Shared>,
    limits: Arc<StreamLimits>,
    active: Arc<AtomicU32>,
    /// Set by the connection's first answer (see [`send_answer`]).
    answered: Arc<AtomicBool>,
    conn_id: u64,
    /// When its TLS handshake completed, unix milliseconds.
    connected_ms: u64,
}

impl RequestJob {
    /// Answers the request with `apns_id` (the request's own, or one made up for it).
    async fn run(
        self,
        apns_id: HeaderValue,
        head: Result<PushHead, Reason>,
        mut body: RecvStream,
        mut respond: SendResponse<Bytes>,
    ) {
        let outcome = match head {
            Err(r) => Err(r),
            Ok(head) => match read_body(&mut body, head.payload_limit).await {
                None => return self.done(), // the client reset the stream: nothing to answer
                Some(body) => self.check_body(head, body),
            },
        };
        let reason = match outcome {
            Ok((head, body)) => {
                self.record(head, body, &apns_id);
                None
            }
            Err(r) => Some(r),
        };
        let latency = self.plan.latency(&self.shared.faults);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if reason.is_none() {
            self.limits.raise(); // before the 200 goes out, so the SETTINGS precede it
        }
        self.shared.counters.count_answer(reason);
        let first = !self.answered.swap(true, Ordering::Relaxed);
        send_answer(
            &mut respond,
            reason,
            &apns_id,
            self.plan.unregistered_since_ms(),
            first,
        );
        self.done();
    }

    fn check_body(&self, head: PushHead, body: Bytes) -> Result<(PushHead, Bytes), Reason> {
        let keys = validate_payload(&body, head.payload_limit)?;
        if let Some(r) = self.plan.forced_reason(head.token(), &self.shared.faults) {
            return Err(r);
        }
        let seq = keys.seq;
        self.shared.lock_ledger().record(keys, unix_ns());
        if let (Some(log), Some(seq)) = (&self.shared.receipts, seq) {
            log.record(
                seq,
                head.token(),
                unix_ms(),
                (self.conn_id, self.connected_ms),
            );
        }
        Ok((head, body))
    }

    /// Keeps the push for `recent()`, as received: turned into text only when read.
    fn record(&self, head: PushHead, body: Bytes, apns_id: &HeaderValue) {
        self.shared.recent.push(RawPush {
            head,
            apns_id: apns_id.clone(),
            apns_id_from_request: self.id_from_request,
            payload: body,
            received_unix_ms: unix_ms(),
            connection: self.conn_id,
        });
    }

    fn done(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads the whole body, keeping at most `limit + 1` bytes (enough to see it is too large).
/// `None` when the stream broke.
async fn read_body(body: &mut RecvStream, limit: usize) -> Option<Bytes> {
    let mut first: Option<Bytes> = None;
    let mut more = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.ok()?;
        let _ = body.flow_control().release_capacity(chunk.len());
        let kept = first.as_ref().map_or(0, Bytes::len) + more.len();
        if kept > limit {
            continue;
        }
        match &first {
            None => first = Some(chunk),
            Some(_) => more.extend_from_slice(&chunk[..chunk.len().min(limit + 1 - kept)]),
        }
    }
    let first = first.unwrap_or_default();
    if more.is_empty() {
        return Some(first);
    }
    let mut all = BytesMut::with_capacity(first.len() + more.len());
    all.extend_from_slice(&first);
    all.extend_from_slice(&more);
    Some(all.freeze())
}

const APNS_ID: HeaderName = HeaderName::from_static("apns-id");

/// `first` marks a connection's first answer: the only one whose `apns-id` HPACK may index.
fn send_answer(
    respond: &mut SendResponse<Bytes>,
    reason: Option<Reason>,
    apns_id: &HeaderValue,
    ts: u64,
    first: bool,
) {
    let mut resp = Response::new(());
    *resp.status_mut() = StatusCode::from_u16(reason.map_or(200, Reason::status))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // Unique to each answer, so as Apple asks of its clients: indexed once, which puts the
    // name in the HPACK table, then a literal value under that name, never added to the
    // table, where it would only evict entries and cost both ends an insert per answer.
    let mut id = apns_id.clone();
    id.set_sensitive(!first);
    resp.headers_mut().insert(APNS_ID, id);
    match reason {
        None => {
            let _ = respond.send_response(resp, true);
        }
        Some(r) => {
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Ok(mut stream) = respond.send_response(resp, false) {
                let _ = stream.send_data(r.body(ts), true);
            }
        }
    }
}
