//! Process start and stop, in order: check the data directory, start the built-in simulator of
//! each channel in simulator mode (and say which channels are off), open every shard's log (blocking, off the executors),
//! start one pinned glommio executor per shard (mesh, engine, senders, listener), then wait for
//! SIGTERM/SIGINT and stop in reverse: listeners, in-flight sends (grace), last flush, logs.
//! The main thread supervises: a shard that cannot start (or fails, or panics) stops every
//! shard, and the process exits with an error naming it, rather than serving with a shard that
//! answers `503` forever.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use clarion_shards::{Channel, LogConfig, Recovered, RetryPolicy, ShardLog};
use futures_channel::oneshot;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};
use tracing::{error, info, warn};

use crate::builtin_sim;
use crate::channels::ChannelSender;
use crate::channels::apns::ApnsChannel;
use crate::channels::apns::{ApnsConfig, ApnsSender};
use crate::channels::fcm::{FcmChannel, FcmConfig, FcmSender, SharedTokens};
use crate::channels::off::OffChannel;
use crate::channels::rules::TargetPolicy;
use crate::channels::webpush::{VapidKey, WebPushChannel, WebPushConfig, WebPushSender};
use crate::config::{ApnsTarget, ChannelMode, Config, FcmTarget};
use crate::data_dir::{self, shard_dir};
use crate::engine::{Engine, EngineConfig, now_ms};
use crate::health::{ShardState, ShardsHealth};
use crate::http;
use crate::keys::KeySet;
use crate::keys::watch::KeysHandle;
use crate::mesh::ShardRouter;
use crate::sync::Latch;

/// Memory glommio pins for io_uring buffers per executor. We do no DMA file I/O on the
/// executors, so 1 MiB is plenty and keeps us under default `ulimit -l` limits.
const EXECUTOR_IO_MEMORY: usize = 1 << 20;

/// A shard's log and what it recovered, waiting for its executor to pick it up.
type Opened = Arc<Mutex<Vec<Option<(ShardLog, Recovered)>>>>;

fn open_logs(cfg: &Config) -> anyhow::Result<Opened> {
    if !cfg.fsync {
        tracing::warn!(
            "[storage] fsync = false: a 202 no longer means the notification is on disk. Each \
             group commit is handed to the OS, so a crash of this process loses nothing, but an \
             OS crash or power loss loses what was accepted since the OS last wrote it out"
        );
    }
    let now = now_ms();
    let handles: Vec<_> = (0..cfg.shards)
        .map(|i| {
            let lc = LogConfig {
                dir: shard_dir(&cfg.data_dir, i),
                fsync: cfg.fsync,
                dedup_window_ms: cfg.dedup_window_ms,
                shard: i as u16,
            };
            std::thread::spawn(move || clarion_shards::open(lc, now))
        })
        .collect();
    let mut out = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        let opened = h
            .join()
            .map_err(|_| anyhow::anyhow!("opening shard {i} panicked"))?
            .with_context(|| format!("opening the log of shard {i}"))?;
        out.push(Some(opened));
    }
    // fjall started its flush and compaction threads while opening, and each log its reaper.
    if cfg.background_nice > 0 {
        let expected = cfg.shards * clarion_shards::BACKGROUND_THREADS_PER_LOG;
        match clarion_shards::lower_background_priority(cfg.background_nice, expected) {
            Ok(n) if n < expected => tracing::warn!(
                found = n,
                expected,
                "found fewer background threads (fjall's and the memtable reapers) than expected; the rest keep their priority"
            ),
            Ok(n) => tracing::info!(
                threads = n,
                nice = cfg.background_nice,
                "background threads (fjall's and the memtable reapers) at lower CPU priority"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not lower the background threads' priority")
            }
        }
    }
    Ok(Arc::new(Mutex::new(out)))
}

/// Starts the writeback of fjall's table files as they are written (`[storage]
/// table_writeback_bytes`; 0 is off). Without it the server still runs, with longer commit
/// stalls while fjall flushes, so a failure is a warning.
fn start_table_writeback(cfg: &Config) -> Option<clarion_shards::TableWriteback> {
    if cfg.table_writeback_bytes == 0 {
        return None;
    }
    let dbs: Vec<_> = (0..cfg.shards)
        .map(|i| shard_dir(&cfg.data_dir, i))
        .collect();
    match clarion_shards::start_table_writeback(&dbs, cfg.table_writeback_bytes) {
        Ok(wb) => {
            tracing::info!(
                directories = wb.watched(),
                every_bytes = cfg.table_writeback_bytes,
                "table writeback started"
            );
            Some(wb)
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not watch fjall's table files; writeback is left to fjall");
            None
        }
    }
}

/// Resolves port 0 to a concrete free port, so every executor binds the same one.
fn resolve_listen(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let l = std::net::TcpListener::bind(addr).context("finding a free port")?;
    Ok(l.local_addr()?)
}

/// File descriptors beside the API connections: logs, fjall's files, mesh, APNs connections.
const FILES_BESIDE_CONNECTIONS: u64 = 1024;

/// Raises the soft limit on open files to the hard one (the default soft limit, often 1,024,
/// is below one shard's connection limit), and warns when even that cannot hold every shard's
/// connections: past it, accepts fail instead of being answered `503`.
fn raise_open_files_limit(cfg: &Config) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    let needed =
        (cfg.shards * cfg.http.max_connections_per_shard) as u64 + FILES_BESIDE_CONNECTIONS;
    if lim.rlim_cur < needed {
        tracing::warn!(
            open_files = lim.rlim_cur,
            needed,
            "the open-files limit (ulimit -n) is below shards x http.max_connections_per_shard: \
             connections past it fail to be accepted instead of being answered 503"
        );
    }
}

/// The Web Push channel's settings by its mode: the VAPID key (configured, or generated once
/// and kept in the data directory) for live and simulator mode; in simulator mode the built-in
/// push service, whose certificate the sender trusts.
fn webpush_setup(
    cfg: &Config,
) -> anyhow::Result<(
    Option<WebPushConfig>,
    Option<clarion_sim::webpush::WebPushSimHandle>,
)> {
    let w = &cfg.webpush;
    let (ca_pem, sim) = match w.mode() {
        ChannelMode::Off => {
            warn!(
                channel = "webpush",
                mode = "off",
                "channel mode: Web Push is off (no [webpush] subject, not in simulator mode): browser deliveries are held as a configuration fault"
            );
            return Ok((None, None));
        }
        ChannelMode::Live => {
            info!(channel = "webpush", mode = "live", subject = %w.subject, "channel mode");
            (w.ca_pem.clone(), None)
        }
        ChannelMode::Simulator => {
            let (sim, ca) = builtin_sim::start_webpush()?;
            (Some(ca), Some(sim))
        }
    };
    let key = VapidKey::load_or_generate(w.vapid_private_key_file.as_deref(), &cfg.data_dir)
        .map_err(|e| anyhow::anyhow!("[webpush] VAPID key: {e}"))?;
    let settings = WebPushConfig {
        key: Arc::new(key),
        subject: w.subject.clone(),
        connections_per_origin: w.connections_per_origin,
        ca_pem,
        allow_insecure_loopback: w.allow_insecure_loopback,
    };
    Ok((Some(settings), sim))
}

pub fn run(mut cfg: Config) -> anyhow::Result<()> {
    let api_tls = match &cfg.api_tls {
        None => None,
        Some((cert, key)) => {
            Some(http::tls::ApiTls::new(cert, key).map_err(|e| anyhow::anyhow!("[api] TLS: {e}"))?)
        }
    };
    // Signals are handled from here on: SIGHUP during the start must not end the process.
    let (events_tx, events) = std::sync::mpsc::channel();
    spawn_signal_thread(events_tx.clone(), api_tls.as_ref().map(|t| t.cert.clone()))?;
    cfg.shards = data_dir::check(&cfg.data_dir, cfg.shards, cfg.shards_from_data)?;
    raise_open_files_limit(&cfg);
    let (apns, _sim) = match &cfg.apns {
        ApnsTarget::Live(s) => {
            info!(channel = "apns", mode = "live", endpoint = %s.endpoint, "channel mode");
            (Some(s.clone()), None)
        }
        ApnsTarget::Simulator {
            topic,
            control_listen,
        } => {
            let (settings, sim) = builtin_sim::start(topic, *control_listen)?;
            (Some(settings), Some(sim))
        }
        ApnsTarget::Off => {
            warn!(
                channel = "apns",
                mode = "off",
                "channel mode: APNs is off (no [apns] key_file, not in simulator mode): iOS deliveries are held as a configuration fault"
            );
            (None, None)
        }
    };
    let (fcm, _fcm_sim) = match &cfg.fcm {
        FcmTarget::Live(s) => {
            info!(channel = "fcm", mode = "live", endpoint = %s.endpoint, project = %s.project_id, "channel mode");
            (Some(s.clone()), None)
        }
        FcmTarget::Simulator { connections } => {
            let (settings, sim) = builtin_sim::start_fcm(*connections)?;
            (Some(settings), Some(sim))
        }
        FcmTarget::Off => {
            warn!(
                channel = "fcm",
                mode = "off",
                "channel mode: FCM is off (no [fcm] service_account_file, not in simulator mode): Android deliveries are held as a configuration fault"
            );
            (None, None)
        }
    };
    // The access token the shards share (one refresh at a time for the process).
    let fcm_tokens = Arc::new(SharedTokens::default());
    let (webpush, _webpush_sim) = webpush_setup(&cfg)?;
    let listen = resolve_listen(cfg.listen)?;
    let opened = open_logs(&cfg)?;
    let _writeback = start_table_writeback(&cfg);
    let cfg = Arc::new(cfg);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mesh = MeshBuilder::full(cfg.shards, cfg.mesh_channel_capacity);
    let health = ShardsHealth::new(cfg.shards);
    let (keys, keys_handle, key_updates) = crate::keys::watch::start(
        crate::keys::KeyStore::new(&cfg.data_dir),
        cfg.api_keys.clone(),
        cfg.shards,
    )
    .map_err(|e| anyhow::anyhow!("API keys: {e}"))?;
    let mut key_updates = key_updates.into_iter();
    let drained = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut stops = Vec::new();
    let mut executors = Vec::new();
    for i in 0..cfg.shards {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        stops.push(stop_tx);
        let start = ShardStart {
            cfg: cfg.clone(),
            apns: apns.clone(),
            fcm: fcm.clone(),
            fcm_tokens: fcm_tokens.clone(),
            webpush: webpush.clone(),
            mesh: mesh.clone(),
            opened: opened.clone(),
            listen,
            health: health.clone(),
            events: events_tx.clone(),
            drained: drained.clone(),
            tls: api_tls
                .as_ref()
                .map(http::tls::ApiTls::for_shard)
                .transpose()
                .map_err(|e| anyhow::anyhow!("[api] TLS: {e}"))?,
            keys: keys.clone(),
            keys_handle: keys_handle.clone(),
            key_updates: key_updates
                .next()
                .ok_or_else(|| anyhow::anyhow!("no key updates for shard {i}"))?,
        };
        let events = events_tx.clone();
        let ex = LocalExecutorBuilder::new(Placement::Fixed(i % cores))
            .name(&format!("shard-{i:02}"))
            .io_memory(EXECUTOR_IO_MEMORY)
            .spawn(move || async move {
                let _panic = ReportPanic {
                    executor: i,
                    events: events.clone(),
                };
                if let Err(e) = run_shard(start, stop_rx).await {
                    error!(error = %format!("{e:#}"), "shard failed");
                    let _ = events.send(Event::Failed(format!("{e:#}")));
                }
            })
            .map_err(|e| {
                anyhow::anyhow!(
                    "starting executor {i}: {e} (locked memory: try `ulimit -l unlimited`)"
                )
            })?;
        executors.push(ex);
    }
    let outcome = supervise(&events, cfg.shards, || {
        health.set_ready();
        println!("clarion listening on {listen} with {} shards", cfg.shards);
        info!(%listen, shards = cfg.shards, data_dir = %cfg.data_dir.display(), "clarion started: ready");
    });
    let outcome = match outcome {
        Ok(()) => drain(&health, &events, cfg.ops.drain_delay),
        Err(e) => Err(e),
    };
    if outcome.is_err() {
        error!("a shard failed: stopping every shard");
    }
    for s in stops {
        let _ = s.send(());
    }
    for ex in executors {
        let _ = ex.join();
    }
    info!("clarion stopped");
    outcome
}

/// The drain after SIGTERM: `/readyz` turns `503` at once and the listeners keep serving for
/// `delay`, so a load balancer's checks take the server out of rotation before it stops
/// accepting; a shard failing meanwhile ends the wait.
fn drain(
    health: &ShardsHealth,
    events: &Receiver<Event>,
    delay: std::time::Duration,
) -> anyhow::Result<()> {
    health.set_draining();
    info!(
        drain_delay_ms = delay.as_millis() as u64,
        "draining: /readyz answers 503; serving on until the drain delay ends"
    );
    let until = std::time::Instant::now() + delay;
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match events.recv_timeout(left) {
            Ok(Event::Failed(why)) => bail!("{why}; the server stops"),
            Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            // Every sender gone: nothing can fail any more, so just wait the delay out.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(left),
        }
    }
    info!("drain delay over: closing listeners, finishing in-flight requests and sends");
    Ok(())
}

/// What the shards and the signal thread tell the main thread.
#[derive(Debug)]
enum Event {
    /// A shard is serving (its listener is bound).
    Serving,
    /// A shard could not start, failed, or panicked: why.
    Failed(String),
    /// SIGTERM or SIGINT.
    Stop,
}

/// Waits until a stop is asked for (`Ok`) or a shard fails (`Err`, naming it); says when every
/// shard serves.
fn supervise(
    events: &Receiver<Event>,
    shards: usize,
    mut all_serving: impl FnMut(),
) -> anyhow::Result<()> {
    let mut serving = 0;
    loop {
        match events.recv() {
            Ok(Event::Serving) => {
                serving += 1;
                if serving == shards {
                    all_serving();
                }
            }
            Ok(Event::Failed(why)) => bail!("{why}; the server stops"),
            Ok(Event::Stop) | Err(_) => return Ok(()),
        }
    }
}

/// Tells the main thread when a shard's executor unwinds from a panic.
struct ReportPanic {
    executor: usize,
    events: Sender<Event>,
}

impl Drop for ReportPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.events.send(Event::Failed(format!(
                "the executor of shard {} panicked",
                self.executor
            )));
        }
    }
}

/// SIGTERM/SIGINT stop the server (a second one exits at once); SIGHUP reloads the API's TLS
/// certificate and key, or says there is nothing to reload.
fn spawn_signal_thread(
    events: Sender<Event>,
    tls: Option<Arc<http::tls::ReloadableCert>>,
) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut first = true;
            for sig in signals.forever() {
                if sig == SIGHUP {
                    match &tls {
                        None => info!("SIGHUP: nothing to reload (the API has no TLS)"),
                        Some(cert) => match cert.reload() {
                            Ok(()) => info!("SIGHUP: TLS certificate reloaded; new connections get it"),
                            Err(e) => error!(error = %e, "SIGHUP: TLS certificate not reloaded; the old one is served"),
                        },
                    }
                    continue;
                }
                if first {
                    info!(signal = sig, "stopping: draining in-flight work");
                    let _ = events.send(Event::Stop);
                    first = false;
                } else {
                    error!("second signal: exiting now");
                    std::process::exit(130);
                }
            }
        })?;
    Ok(())
}

/// What one shard's executor starts from.
struct ShardStart {
    cfg: Arc<Config>,
    /// `None`: the channel is off.
    apns: Option<ApnsConfig>,
    /// `None`: the channel is off.
    fcm: Option<FcmConfig>,
    fcm_tokens: Arc<SharedTokens>,
    /// `None`: the channel is off.
    webpush: Option<WebPushConfig>,
    mesh: MeshBuilder<crate::mesh::MeshBatch, glommio::channels::channel_mesh::Full>,
    opened: Opened,
    listen: SocketAddr,
    health: ShardsHealth,
    events: Sender<Event>,
    /// TLS on the API, when configured.
    tls: Option<http::tls::ApiTls>,
    /// Shards whose connections have finished after the stop (read only while stopping).
    drained: Arc<std::sync::atomic::AtomicUsize>,
    /// The keys at start, the keys' thread, and this shard's receiver of new key sets.
    keys: Arc<KeySet>,
    keys_handle: KeysHandle,
    key_updates: futures_channel::mpsc::Receiver<Arc<KeySet>>,
}

/// The OpenAPI description served at `GET /openapi.json` (the file in the repository).
pub const OPENAPI: &str = include_str!("../docs/openapi.json");

async fn run_shard(start: ShardStart, stop_rx: oneshot::Receiver<()>) -> anyhow::Result<()> {
    let ShardStart {
        cfg,
        apns,
        fcm,
        fcm_tokens,
        webpush,
        mesh,
        opened,
        listen,
        health,
        events,
        tls,
        drained,
        keys,
        keys_handle,
        key_updates,
    } = start;
    let stop = Latch::default();
    {
        let stop = stop.clone();
        glommio::spawn_local(async move {
            let _ = stop_rx.await;
            stop.set();
        })
        .detach();
    }
    // Every shard joins the mesh before any goes on; a stop (another shard failed) ends the wait.
    let joined = futures_lite::future::or(async { Some(mesh.join().await) }, async {
        stop.wait().await;
        None
    })
    .await;
    let Some(joined) = joined else {
        return Ok(());
    };
    let (senders, receivers) = joined.map_err(|_| anyhow::anyhow!("mesh join failed"))?;
    let shard = senders.peer_id();
    let (log, recovered) = opened
        .lock()
        .map_err(|_| anyhow::anyhow!("startup lock poisoned"))?
        .get_mut(shard)
        .and_then(Option::take)
        .ok_or_else(|| anyhow::anyhow!("shard {shard}: no log"))?;
    let apns_channel: Rc<dyn ChannelSender> = match apns {
        Some(apns_cfg) => {
            let sender = ApnsSender::new(apns_cfg, shard)
                .map_err(|e| anyhow::anyhow!("shard {shard}: APNs sender: {e}"))?;
            Rc::new(ApnsChannel::new(sender))
        }
        None => Rc::new(OffChannel::new(
            Channel::Apns,
            "set [apns] key_file, team_id, key_id and topic, or mode = \"simulator\"",
        )),
    };
    let fcm_channel: Rc<dyn ChannelSender> = match fcm {
        Some(fcm_cfg) => {
            let sender = FcmSender::new(&fcm_cfg, shard, cfg.shards, fcm_tokens)
                .map_err(|e| anyhow::anyhow!("shard {shard}: FCM sender: {e}"))?;
            Rc::new(FcmChannel::new(sender))
        }
        None => Rc::new(OffChannel::new(
            Channel::Fcm,
            "set [fcm] project_id and service_account_file, or mode = \"simulator\"",
        )),
    };
    let mut public_documents = webpush
        .as_ref()
        .map(|w| {
            vec![(
                "/v1/webpush/vapid-public-key".to_string(),
                serde_json::json!({ "public_key": w.key.public_key }),
            )]
        })
        .unwrap_or_default();
    public_documents.push((
        "/openapi.json".to_string(),
        serde_json::from_str(OPENAPI)
            .map_err(|e| anyhow::anyhow!("docs/openapi.json does not parse: {e}"))?,
    ));
    let webpush_channel: Rc<dyn ChannelSender> = match webpush {
        Some(w) => Rc::new(WebPushChannel::new(WebPushSender::new(w, shard))),
        None => Rc::new(OffChannel::new(
            Channel::Webpush,
            "set [webpush] subject, or mode = \"simulator\"",
        )),
    };
    let senders_list: Vec<Rc<dyn ChannelSender>> = vec![apns_channel, fcm_channel, webpush_channel];
    let ecfg = EngineConfig {
        shard: shard as u16,
        dedup_window_ms: cfg.dedup_window_ms,
        retention_ms: cfg.retention_ms,
        per_user_per_hour: cfg.per_user_per_hour,
        max_devices_per_user: cfg.max_devices_per_user,
        retry: RetryPolicy {
            base_ms: cfg.backoff_base_ms,
            max_ms: cfg.backoff_max_ms,
            max_attempts: cfg.max_attempts,
        },
        shutdown_grace_ms: cfg.shutdown_grace_ms,
        config_fault_dead_after_ms: cfg.config_fault_dead_after_ms,
        lane_window: cfg.lane_window,
        catch_up_yields: cfg.catch_up_yields,
        health: health.slot(shard),
    };
    let seed = now_ms() ^ ((shard as u64) << 48) ^ u64::from(std::process::id());
    let engine = Rc::new(Engine::new(
        ecfg,
        log,
        senders_list,
        seed,
        recovered.dedup.clone(),
    ));
    engine.restore(recovered);
    engine.start();
    let router = ShardRouter::start(engine.clone(), senders, receivers);
    let api = Rc::new(http::service::Api::new(
        router,
        keys,
        keys_handle,
        health.clone(),
        vec![
            (Channel::Apns.as_str(), cfg.apns.mode().name()),
            (Channel::Fcm.as_str(), cfg.fcm.mode().name()),
            (Channel::Webpush.as_str(), cfg.webpush.mode().name()),
        ],
        TargetPolicy {
            allow_insecure_loopback: cfg.webpush.allow_insecure_loopback,
        },
        public_documents,
    ));
    let bound = glommio::net::TcpListener::bind(listen)
        .map_err(|e| anyhow::anyhow!("shard {shard}: binding {listen}: {e}"));
    let listener = match bound {
        Ok(l) => l,
        Err(e) => {
            engine.shutdown().await;
            return Err(e);
        }
    };
    // The separate metrics address, on shard 0 only (a scrape asks every shard anyway).
    let metrics_listener = match cfg.ops.metrics_listen.filter(|_| shard == 0) {
        None => None,
        Some(addr) => match glommio::net::TcpListener::bind(addr) {
            Ok(l) => Some(l),
            Err(e) => {
                engine.shutdown().await;
                return Err(anyhow::anyhow!("binding [metrics] listen {addr}: {e}"));
            }
        },
    };
    {
        // Every new key set from the keys' thread replaces this shard's copy.
        let api = api.clone();
        glommio::spawn_local(async move {
            use futures_util::StreamExt;
            let mut updates = key_updates;
            while let Some(keys) = updates.next().await {
                api.auth.replace(keys);
            }
        })
        .detach();
    }
    health.set(shard, ShardState::Serving);
    let _ = events.send(Event::Serving);
    if let Some(alerts) = cfg.alerts.clone().filter(|_| shard == 0) {
        glommio::spawn_local(crate::alerts::run(
            api.clone(),
            alerts,
            listen.to_string(),
            stop.clone(),
        ))
        .detach();
    }
    if let Some(l) = metrics_listener {
        info!(listen = %cfg.ops.metrics_listen.map_or(String::new(), |a| a.to_string()), "metrics served without a key");
        let ingress = Rc::new(http::Ingress::metrics_only(api.clone(), cfg.http));
        glommio::spawn_local(http::serve(l, ingress, stop.clone())).detach();
    }
    let ingress = Rc::new(http::Ingress::new(api, cfg.http).with_tls(tls));
    http::serve(listener, ingress, stop).await;
    // Every shard's engine keeps serving until every shard's connections have finished: a
    // request on this shard may wait for another shard's part of it (a batch, a forwarded
    // notification). Bounded by the connections' own drain.
    drained.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    let until = std::time::Instant::now() + http::STOP_DRAIN;
    while drained.load(std::sync::atomic::Ordering::Acquire) < cfg.shards
        && std::time::Instant::now() < until
    {
        glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
    }
    engine.shutdown().await;
    info!(shard, "shard stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supervision_reports_serving_once_and_stops_on_the_first_failure() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut announced = 0;
        tx.send(Event::Serving).unwrap();
        tx.send(Event::Serving).unwrap();
        tx.send(Event::Failed("shard 1: binding 127.0.0.1:1: in use".into()))
            .unwrap();
        tx.send(Event::Stop).unwrap();
        let e = supervise(&rx, 2, || announced += 1).unwrap_err();
        assert_eq!(announced, 1);
        assert!(e.to_string().starts_with("shard 1: binding"), "{e}");

        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(Event::Serving).unwrap();
        tx.send(Event::Stop).unwrap();
        let mut announced = 0;
        assert!(supervise(&rx, 2, || announced += 1).is_ok());
        assert_eq!(announced, 0);
    }
}
