//! `clarion-loadtest bench`: a whole load test on this machine in one command. Makes a work
//! directory with a fresh APNs key, starts the APNs simulator in-process, writes the server's
//! TOML config, spawns `SERVER serve --config FILE`, waits for `/healthz`, runs the load with
//! the ledger check, and stops the server with SIGTERM (SIGKILL if it does not exit in time).

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::cpu::CpuMeter;
use crate::load::{ChannelLatency, LoadConfig, LoadReport, SimLink, Subscriber, run_async_metered};
use clarion_sim::apns::{Faults, SimConfig, SimHandle, Simulator, generate_apns_key};
use clarion_sim::fcm::{
    FcmSimConfig, FcmSimHandle, SIMULATOR_PROJECT_ID, SIMULATOR_SERVICE_ACCOUNT_KEY_PEM,
};
use clarion_sim::webpush::WebPushSimHandle;
use std::sync::Arc;

/// How long a stopped server may take to drain before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often `/healthz` is tried while the server starts.
const HEALTH_POLL: Duration = Duration::from_millis(100);
const TEAM_ID: &str = "TEAMBENCH1";
const KEY_ID: &str = "KEYBENCH01";
const TOPIC: &str = "com.clarion.loadtest";

/// A bench run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub server_bin: PathBuf,
    /// `shards` in the server config.
    pub shards: usize,
    /// `[apns] connections` in the server config.
    pub apns_connections: usize,
    /// `[storage] fsync` in the server config.
    pub fsync: bool,
    /// The load; its `target` and `api_key` are filled in by the bench.
    pub load: LoadConfig,
    pub sim_worker_threads: usize,
    pub faults: Faults,
    /// Where keys, config, data and the server log go; a fresh temp dir when `None`.
    pub work_dir: Option<PathBuf>,
    /// Keep the work dir afterwards (it is always kept when the run fails).
    pub keep_work_dir: bool,
    pub startup_timeout: Duration,
    /// A second load right after the first, at this rate for this long (same users, the
    /// sequence continued, no warm-up): how the server recovers after an overload.
    pub then: Option<(f64, Duration)>,
    /// TOML appended to the server's config (e.g. `[tuning]\nlane_window = 1024\n`).
    pub server_extra_toml: String,
    /// An FCM outage during the load (every send `503`): from this long after the load starts,
    /// for this long. Needs Android devices in `load.platforms`.
    pub fcm_outage: Option<(Duration, Duration)>,
    /// How long the FCM simulator's access tokens last (an hour unless told).
    pub fcm_token_lifetime: Option<Duration>,
    /// Measure what a thread wake-up costs here ([`crate::wake_probe`]) before the load.
    pub wake_probe: bool,
}

impl BenchConfig {
    pub fn new(server_bin: PathBuf, load: LoadConfig) -> Self {
        BenchConfig {
            server_bin,
            shards: 2,
            apns_connections: 2,
            fsync: true,
            load,
            sim_worker_threads: 1,
            faults: Faults::default(),
            work_dir: None,
            keep_work_dir: false,
            startup_timeout: Duration::from_secs(30),
            then: None,
            server_extra_toml: String::new(),
            fcm_outage: None,
            fcm_token_lifetime: None,
            wake_probe: true,
        }
    }
}

/// Runs the bench and returns the load report (the caller prints and saves it).
pub fn bench(cfg: &BenchConfig) -> anyhow::Result<LoadReport> {
    let mut rig = Rig::start(cfg)?;
    let mut load = cfg.load.clone();
    load.target = rig.listen;
    load.api_key = rig.api_key.clone();
    if let Some(w) = &rig.webpush {
        let subscribe = w.subscriber();
        load.subscriber = Some(Subscriber(Arc::new(move || {
            subscribe().map(|s| s.json).map_err(anyhow::Error::from)
        })));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(load.worker_threads.max(1))
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        rig.wait_healthy(cfg.startup_timeout).await?;
        // Before the load and before anything timed from its start; it blocks this thread for
        // about half a second, with nothing of the load running yet.
        let wake_probe = cfg
            .wake_probe
            .then(crate::wake_probe::measure)
            .transpose()
            .context("wake probe (--no-wake-probe leaves it out)")?;
        // A mix with browsers: what their encryption costs here, also before the load.
        let web_share = load.platforms.web_share();
        let ecdh_probe = (web_share > 0.0)
            .then(|| crate::ecdh_probe::measure(web_share))
            .transpose()?;
        let meter = CpuMeter::new(rig.server.pid());
        if let (Some((at, length)), Some(f)) = (cfg.fcm_outage, &rig.fcm) {
            let switch = f.outage_switch();
            // Timed from the start of the load's registration.
            std::thread::spawn(move || {
                std::thread::sleep(at);
                eprintln!("bench: FCM outage starts ({length:?})");
                switch(true);
                std::thread::sleep(length);
                switch(false);
                eprintln!("bench: FCM outage ends");
            });
        }
        // Beside the load, on the data directory's file system (the work directory holds it).
        let probe = crate::fsync_probe::ProbeProcess::start(&rig.dir)?;
        let mut report = run_async_metered(&load, rig.link(), Some(meter)).await?;
        report.fsync_probe = Some(probe.finish()?);
        report.wake_probe = wake_probe;
        report.ecdh_probe = ecdh_probe;
        if let Some((rate, duration)) = cfg.then {
            let next = LoadConfig {
                rate,
                duration,
                warmup: Duration::ZERO,
                bursts: None,
                seq_start: report.next_seq,
                register: false,
                reset_sim: false,
                ..load.clone()
            };
            let meter = CpuMeter::new(rig.server.pid());
            let then = run_async_metered(&next, rig.link(), Some(meter)).await?;
            report.then = Some(Box::new(then));
        }
        report.server_peak_rss_bytes = rig.server.pid().and_then(peak_rss_bytes);
        report.channels = rig.channel_latencies(report.seq_range());
        if let Some(f) = &rig.fcm {
            let st = f.stats();
            eprintln!(
                "bench: FCM simulator: {} access tokens issued, {} sends refused for their token, answers by status {:?}",
                st.tokens_issued, st.unauthenticated, st.by_status
            );
        }
        Ok::<_, anyhow::Error>(report)
    });
    let report = result;
    let stopped = rig.stop(report.is_ok());
    let report = report?;
    stopped?;
    Ok(report)
}

/// The simulator (in-process) and a server child pointed at it, in a work directory of their
/// own: what `bench` and the outage runs (`crate::outage`) stand on.
pub(crate) struct Rig {
    pub(crate) dir: PathBuf,
    pub(crate) sim: SimHandle,
    /// The FCM and Web Push simulators, when the load has Android or browser devices.
    pub(crate) fcm: Option<FcmSimHandle>,
    pub(crate) webpush: Option<WebPushSimHandle>,
    pub(crate) server: ServerProcess,
    pub(crate) listen: SocketAddr,
    pub(crate) api_key: String,
    pub(crate) log_file: PathBuf,
    /// Remove `dir` after a successful run (a temp dir the caller did not ask to keep).
    remove_dir: bool,
}

impl Rig {
    /// Makes the work dir and a fresh APNs key, starts the simulator with `cfg.faults`, writes
    /// the server's config and spawns it (not yet waited for: see [`Rig::wait_healthy`]).
    pub(crate) fn start(cfg: &BenchConfig) -> anyhow::Result<Rig> {
        let dir = match &cfg.work_dir {
            Some(d) => d.clone(),
            None => {
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                std::env::temp_dir().join(format!("clarion-bench-{}-{nanos}", std::process::id()))
            }
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let (p8, public) = generate_apns_key()?;
        let key_file = dir.join("apns-key.p8");
        std::fs::write(&key_file, &p8)?;
        std::fs::write(dir.join("apns-key.pub.pem"), &public)?;

        let mut sim_cfg = SimConfig::new(TEAM_ID, KEY_ID, &public, TOPIC);
        sim_cfg.worker_threads = cfg.sim_worker_threads;
        sim_cfg.faults = cfg.faults.clone();
        let sim = Simulator::start(sim_cfg)?;
        let ca_file = dir.join("apns-ca.pem");
        sim.write_ca_file(&ca_file)?;

        let listen = free_port()?;
        // Clarion wants API keys of at least 16 characters.
        let api_key = format!(
            "clarion-bench-{:016x}",
            clarion_sim::apns::mix(u64::from(std::process::id()))
        );
        let mut config = server_toml(
            cfg,
            listen,
            &dir,
            &api_key,
            &sim.endpoint(),
            &key_file,
            &ca_file,
        );
        let platforms = cfg.load.platforms;
        let fcm = if platforms.android > 0 {
            let mut sim_cfg = FcmSimConfig::builtin((Ipv4Addr::LOCALHOST, 0).into())?;
            if let Some(life) = cfg.fcm_token_lifetime {
                sim_cfg.token_lifetime = life;
            }
            let f = clarion_sim::fcm::start(sim_cfg)?;
            let sa = dir.join("fcm-service-account.json");
            std::fs::write(
                &sa,
                f.service_account_json(SIMULATOR_SERVICE_ACCOUNT_KEY_PEM),
            )?;
            let ca = dir.join("fcm-ca.pem");
            std::fs::write(&ca, f.ca_pem())?;
            config.push_str(&format!(
                "\n[fcm]\nproject_id = {project}\nservice_account_file = {sa}\nendpoint = {endpoint}\nconnections = {conns}\nca_file = {ca}\n# The simulator has no quota: FCM's default (600,000 a minute) would pace the load.\nquota_per_minute = 60000000\n",
                project = toml_str(SIMULATOR_PROJECT_ID),
                sa = toml_str(&sa.display().to_string()),
                endpoint = toml_str(&f.endpoint()),
                conns = cfg.apns_connections,
                ca = toml_str(&ca.display().to_string()),
            ));
            Some(f)
        } else {
            None
        };
        let webpush = if platforms.web > 0 {
            let w =
                clarion_sim::webpush::start((Ipv4Addr::LOCALHOST, 0).into(), Default::default())?;
            let ca = dir.join("webpush-ca.pem");
            std::fs::write(&ca, w.ca_pem())?;
            config.push_str(&format!(
                "\n[webpush]\nsubject = \"mailto:bench@clarion.invalid\"\nca_file = {ca}\n",
                ca = toml_str(&ca.display().to_string()),
            ));
            Some(w)
        } else {
            None
        };
        config.push_str(&cfg.server_extra_toml);
        let config_file = dir.join("server.toml");
        std::fs::write(&config_file, config)?;
        let log_file = dir.join("server.log");
        eprintln!(
            "bench: work dir {}, server log {}",
            dir.display(),
            log_file.display()
        );
        let server = ServerProcess::spawn(&cfg.server_bin, &config_file, &log_file)?;
        Ok(Rig {
            dir,
            sim,
            fcm,
            webpush,
            server,
            listen,
            api_key,
            log_file,
            remove_dir: !cfg.keep_work_dir && cfg.work_dir.is_none(),
        })
    }

    /// Where the load reads what the simulators received.
    pub(crate) fn link(&self) -> SimLink<'_> {
        if self.fcm.is_none() && self.webpush.is_none() {
            return SimLink::InProcess(&self.sim);
        }
        SimLink::Mix {
            apns: &self.sim,
            fcm: self.fcm.as_ref(),
            webpush: self.webpush.as_ref(),
        }
    }

    /// Each channel's receipts and end-to-end latency over `seqs`, when the load has more
    /// than one channel.
    pub(crate) fn channel_latencies(&self, seqs: std::ops::Range<u64>) -> Vec<ChannelLatency> {
        if self.fcm.is_none() && self.webpush.is_none() {
            return Vec::new();
        }
        let mut out = vec![ChannelLatency::of(
            "apns",
            &self.sim.ledger_range(seqs.clone()),
        )];
        if let Some(f) = &self.fcm {
            out.push(ChannelLatency::of("fcm", &f.ledger_range(seqs.clone())));
        }
        if let Some(w) = &self.webpush {
            out.push(ChannelLatency::of("webpush", &w.ledger_range(seqs)));
        }
        out
    }

    /// Waits until the server answers `/healthz` 200 (fails if it exits first).
    pub(crate) async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        wait_healthy(self.listen, &mut self.server, timeout, &self.log_file).await
    }

    /// Stops the server (SIGTERM, then SIGKILL) and the simulator; removes the work dir when
    /// the run `succeeded` and it was a temp dir nobody asked to keep.
    pub(crate) fn stop(mut self, succeeded: bool) -> anyhow::Result<()> {
        let stopped = self.server.stop();
        self.sim.shutdown();
        if succeeded && self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        stopped
    }
}

/// A process's peak resident memory (`VmHWM` in `/proc/PID/status`), in bytes.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("find a free port")?;
    Ok(l.local_addr()?)
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn server_toml(
    cfg: &BenchConfig,
    listen: SocketAddr,
    dir: &Path,
    api_key: &str,
    endpoint: &str,
    key_file: &Path,
    ca_file: &Path,
) -> String {
    let path = |p: &Path| toml_str(&p.display().to_string());
    format!(
        "listen = {listen}\ndata_dir = {data}\nshards = {shards}\n\n[api]\nkeys = [{api_key}]\n\n\
         [server]\ndrain_delay_ms = 0\n\n[storage]\nfsync = {fsync}\n\n[apns]\nendpoint = {endpoint}\nteam_id = {team}\n\
         key_id = {key}\nkey_file = {key_file}\ntopic = {topic}\nconnections = {conns}\nca_file = {ca}\n",
        listen = toml_str(&listen.to_string()),
        data = path(&dir.join("data")),
        shards = cfg.shards,
        api_key = toml_str(api_key),
        fsync = cfg.fsync,
        endpoint = toml_str(endpoint),
        team = toml_str(TEAM_ID),
        key = toml_str(KEY_ID),
        key_file = path(key_file),
        topic = toml_str(TOPIC),
        conns = cfg.apns_connections,
        ca = path(ca_file),
    )
}

/// The server child; stopped (SIGTERM, then SIGKILL) when dropped.
pub(crate) struct ServerProcess {
    child: Option<Child>,
}

impl ServerProcess {
    fn spawn(bin: &Path, config: &Path, log: &Path) -> anyhow::Result<Self> {
        let out = File::create(log)?;
        let err = out.try_clone()?;
        let child = Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        Ok(ServerProcess { child: Some(child) })
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, wait up to [`STOP_TIMEOUT`], then SIGKILL.
    fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if child.try_wait()?.is_some() {
            bail!("the server exited during the run (see its log)");
        }
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("the server did not stop within {STOP_TIMEOUT:?} of SIGTERM and was killed")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

async fn wait_healthy(
    addr: SocketAddr,
    server: &mut ServerProcess,
    timeout: Duration,
    log: &Path,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = server.exited() {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "the server exited at start ({status}):\n{}",
                tail.join("\n")
            );
        }
        if healthz(addr).await.unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the server did not answer /healthz within {timeout:?}");
        }
        tokio::time::sleep(HEALTH_POLL).await;
    }
}

/// Whether `GET /healthz` answers 200.
pub async fn healthz(addr: SocketAddr) -> anyhow::Result<bool> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = http::Request::get("/healthz")
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let resp = tokio::time::timeout(Duration::from_secs(2), sender.send_request(req)).await??;
    let ok = resp.status() == http::StatusCode::OK;
    let _ = resp.into_body().collect().await;
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_config_is_the_agreed_toml() {
        let cfg = BenchConfig::new(PathBuf::from("clarion"), LoadConfig::default());
        let text = server_toml(
            &cfg,
            "127.0.0.1:9000".parse().expect("addr"),
            Path::new("/tmp/w\"x"),
            "k1",
            "https://127.0.0.1:4433",
            Path::new("/tmp/key.p8"),
            Path::new("/tmp/ca.pem"),
        );
        assert!(text.starts_with("listen = \"127.0.0.1:9000\"\n"), "{text}");
        assert!(text.contains("data_dir = \"/tmp/w\\\"x/data\""));
        assert!(text.contains("shards = 2\n"));
        assert!(text.contains("[api]\nkeys = [\"k1\"]"));
        assert!(text.contains("[storage]\nfsync = true"));
        assert!(text.contains("[apns]\nendpoint = \"https://127.0.0.1:4433\""));
        for line in [
            "team_id = \"TEAMBENCH1\"",
            "key_id = \"KEYBENCH01\"",
            "key_file = \"/tmp/key.p8\"",
            "connections = 2",
            "ca_file = \"/tmp/ca.pem\"",
            "topic = \"com.clarion.loadtest\"",
        ] {
            assert!(text.contains(line), "{line}");
        }
    }
}
