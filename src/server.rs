//! Process start and stop, in order: check the data directory, start the built-in simulator if
//! no APNs credentials are configured, open every shard's log (blocking, off the executors),
//! start one pinned glommio executor per shard (mesh, engine, senders, listener), then wait for
//! SIGTERM/SIGINT and stop in reverse: listeners, in-flight sends (grace), last flush, logs.

use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use clarion_shards::{LogConfig, Recovered, RetryPolicy, ShardLog};
use futures_channel::oneshot;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};
use tracing::{error, info};

use crate::apns::{ApnsConfig, ApnsSender};
use crate::builtin_sim;
use crate::channels::ChannelSender;
use crate::channels::apns::ApnsChannel;
use crate::config::{ApnsTarget, Config};
use crate::engine::{Engine, EngineConfig, now_ms};
use crate::http;
use crate::mesh::ShardRouter;
use crate::sync::Latch;

/// Memory glommio pins for io_uring buffers per executor. We do no DMA file I/O on the
/// executors, so 1 MiB is plenty and keeps us under default `ulimit -l` limits.
const EXECUTOR_IO_MEMORY: usize = 1 << 20;
const META_FILE: &str = "clarion-meta.json";

/// A shard's log and what it recovered, waiting for its executor to pick it up.
type Opened = Arc<Mutex<Vec<Option<(ShardLog, Recovered)>>>>;

/// Checks (or records) the shard count the data directory was written with: users are placed
/// by `jump_hash(user, shards)`, so a different count would orphan their data.
fn check_data_dir(dir: &Path, shards: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("shards"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let meta = dir.join(META_FILE);
    match std::fs::read(&meta) {
        Ok(bytes) => {
            let v: serde_json::Value =
                serde_json::from_slice(&bytes).context("reading clarion-meta.json")?;
            let was = v["shards"].as_u64().unwrap_or(0) as usize;
            if was != shards {
                bail!(
                    "data directory {} was written with {was} shards; start with --shards {was} (re-sharding is not supported yet)",
                    dir.display()
                );
            }
        }
        Err(_) => {
            let v = serde_json::json!({"shards": shards, "format": 1});
            std::fs::write(&meta, serde_json::to_vec_pretty(&v)?)
                .context("writing clarion-meta.json")?;
        }
    }
    Ok(())
}

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

fn shard_dir(data_dir: &std::path::Path, shard: usize) -> std::path::PathBuf {
    data_dir.join("shards").join(format!("{shard:02}"))
}

/// Resolves port 0 to a concrete free port, so every executor binds the same one.
fn resolve_listen(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let l = std::net::TcpListener::bind(addr).context("finding a free port")?;
    Ok(l.local_addr()?)
}

pub fn run(cfg: Config) -> anyhow::Result<()> {
    check_data_dir(&cfg.data_dir, cfg.shards)?;
    let (apns, _sim) = match &cfg.apns {
        ApnsTarget::Configured(s) => (s.clone(), None),
        ApnsTarget::BuiltInSimulator {
            topic,
            control_listen,
        } => {
            let (settings, sim) = builtin_sim::start(topic, *control_listen)?;
            (settings, Some(sim))
        }
    };
    let listen = resolve_listen(cfg.listen)?;
    let opened = open_logs(&cfg)?;
    let _writeback = start_table_writeback(&cfg);
    let cfg = Arc::new(cfg);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mesh = MeshBuilder::full(cfg.shards, cfg.mesh_channel_capacity);
    let mut stops = Vec::new();
    let mut executors = Vec::new();
    for i in 0..cfg.shards {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        stops.push(stop_tx);
        let (cfg, apns, mesh, opened) = (cfg.clone(), apns.clone(), mesh.clone(), opened.clone());
        let ex = LocalExecutorBuilder::new(Placement::Fixed(i % cores))
            .name(&format!("shard-{i:02}"))
            .io_memory(EXECUTOR_IO_MEMORY)
            .spawn(move || async move {
                if let Err(e) = run_shard(cfg, apns, mesh, opened, listen, stop_rx).await {
                    error!(error = %e, "shard failed");
                }
            })
            .map_err(|e| {
                anyhow::anyhow!(
                    "starting executor {i}: {e} (locked memory: try `ulimit -l unlimited`)"
                )
            })?;
        executors.push(ex);
    }
    println!("clarion listening on {listen} with {} shards", cfg.shards);
    info!(%listen, shards = cfg.shards, data_dir = %cfg.data_dir.display(), "clarion started");
    spawn_signal_thread(stops)?;
    for ex in executors {
        let _ = ex.join();
    }
    info!("clarion stopped");
    Ok(())
}

fn spawn_signal_thread(stops: Vec<oneshot::Sender<()>>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stops = Some(stops);
            for sig in signals.forever() {
                match stops.take() {
                    Some(list) => {
                        info!(signal = sig, "stopping: draining in-flight work");
                        for s in list {
                            let _ = s.send(());
                        }
                    }
                    None => {
                        error!("second signal: exiting now");
                        std::process::exit(130);
                    }
                }
            }
        })?;
    Ok(())
}

async fn run_shard(
    cfg: Arc<Config>,
    apns: ApnsConfig,
    mesh: MeshBuilder<crate::mesh::MeshBatch, glommio::channels::channel_mesh::Full>,
    opened: Opened,
    listen: SocketAddr,
    stop_rx: oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let (senders, receivers) = mesh
        .join()
        .await
        .map_err(|_| anyhow::anyhow!("mesh join failed"))?;
    let shard = senders.peer_id();
    let (log, recovered) = opened
        .lock()
        .map_err(|_| anyhow::anyhow!("startup lock poisoned"))?
        .get_mut(shard)
        .and_then(Option::take)
        .ok_or_else(|| anyhow::anyhow!("no log for shard {shard}"))?;
    let apns_cfg = ApnsConfig {
        endpoint: apns.endpoint,
        team_id: apns.team_id,
        key_id: apns.key_id,
        key_pem: apns.key_pem,
        topic: apns.topic,
        connections: apns.connections,
        ca_pem: apns.ca_pem,
    };
    let sender =
        ApnsSender::new(apns_cfg, shard).map_err(|e| anyhow::anyhow!("APNs sender: {e}"))?;
    let senders_list: Vec<Rc<dyn ChannelSender>> = vec![Rc::new(ApnsChannel::new(sender))];
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
    };
    let seed = now_ms() ^ ((shard as u64) << 48) ^ u64::from(std::process::id());
    let engine = Rc::new(Engine::new(ecfg, log, senders_list, seed));
    engine.restore(recovered);
    engine.start();
    let router = ShardRouter::start(engine.clone(), senders, receivers);
    let api = Rc::new(http::service::Api::new(router, &cfg.api_keys));
    let listener = glommio::net::TcpListener::bind(listen)
        .map_err(|e| anyhow::anyhow!("binding {listen}: {e}"))?;
    let stop = Latch::default();
    {
        let stop = stop.clone();
        glommio::spawn_local(async move {
            let _ = stop_rx.await;
            stop.set();
        })
        .detach();
    }
    http::serve(listener, api, stop).await;
    engine.shutdown().await;
    info!(shard, "shard stopped");
    Ok(())
}
