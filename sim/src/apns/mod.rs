//! The APNs provider API simulator: [`Simulator::start`] runs it on its own tokio runtime in a
//! background thread and hands back a [`SimHandle`] to read what it received, steer its faults
//! and stop it. It speaks HTTP/2 over TLS (ALPN `h2` only) with a self-signed certificate for
//! `localhost` and 127.0.0.1, checks ES256 provider tokens, and answers exactly the statuses and
//! reasons APNs documents (see `shared/reference/providers.md`).
//!
//! ```no_run
//! use clarion_sim::apns::{generate_apns_key, SimConfig, Simulator};
//! let (p8, public) = generate_apns_key()?;
//! let sim = Simulator::start(SimConfig::new("TEAMID1234", "KEYID12345", &public, "com.example"))?;
//! sim.write_ca_file("/tmp/apns-ca.pem")?;
//! println!("APNs at https://{} (trust /tmp/apns-ca.pem)", sim.addr());
//! # Ok::<(), clarion_sim::apns::SimError>(())
//! ```

mod config;
mod connection;
mod control;
mod faults;
mod frames;
mod headers;
mod jwt;
mod keys;
mod ledger;
mod reason;
mod receipts;
mod request;
mod settings_shim;
mod stats;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use config::{
    DEFAULT_INITIAL_MAX_CONCURRENT_STREAMS, DEFAULT_MAX_CONCURRENT_STREAMS,
    DEFAULT_TOKEN_REFRESH_MIN_INTERVAL, Faults, PROVIDER_TOKEN_MAX_AGE_SECS, SimConfig, SimError,
};
pub use control::SimControl;
pub(crate) use keys::tls_identity;
pub use keys::{client_tls_config, generate_apns_key, public_key_from_p8, sign_provider_token};
pub use ledger::{Ledger, LedgerWire};
pub use reason::Reason;
pub use receipts::{MAX_RECEIPTS, Receipt};
pub use request::{MAX_COLLAPSE_ID_BYTES, MAX_PAYLOAD_BYTES, MAX_VOIP_PAYLOAD_BYTES};
pub use stats::{RECENT_CAPACITY, ReceivedPush, SimStats};

use connection::Shared;
pub use faults::mix;

/// Starts simulators.
pub struct Simulator;

type Listening = (SocketAddr, Option<SocketAddr>);

impl Simulator {
    /// Binds the listeners, starts the runtime thread and returns once both listen.
    pub fn start(cfg: SimConfig) -> Result<SimHandle, SimError> {
        cfg.validate()?;
        let verifier = jwt::TokenVerifier::new(
            &cfg.team_id,
            &cfg.key_id,
            &cfg.public_key_pem,
            cfg.token_refresh_min_interval,
        )?;
        let tls = keys::tls_identity()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls.server_config));
        let shared = Arc::new(Shared::new(&cfg, verifier));
        let runtime = build_runtime(cfg.worker_threads)?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<Listening, SimError>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("apns-sim".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let bound = bind(cfg.listen, cfg.control_listen).await;
                    let (apns, control) = match bound {
                        Ok(l) => l,
                        Err(e) => return drop(ready_tx.send(Err(e))),
                    };
                    let addrs = (
                        apns.local_addr(),
                        control.as_ref().map(TcpListener::local_addr),
                    );
                    let addrs = match addrs {
                        (Ok(a), None) => Ok((a, None)),
                        (Ok(a), Some(Ok(c))) => Ok((a, Some(c))),
                        (Err(e), _) | (_, Some(Err(e))) => Err(SimError::Io(e)),
                    };
                    let failed = addrs.is_err();
                    let _ = ready_tx.send(addrs);
                    if failed {
                        return;
                    }
                    tokio::spawn(connection::accept_loop(apns, acceptor, task_shared.clone()));
                    if let Some(control) = control {
                        tokio::spawn(control::control_loop(control, task_shared));
                    }
                    let _ = stop_rx.await;
                });
                // Dropping the runtime here cancels every connection and request task.
            })
            .map_err(|e| SimError::Runtime(format!("spawn simulator thread: {e}")))?;
        let (addr, control_addr) = ready_rx
            .recv()
            .map_err(|_| SimError::Runtime("simulator thread exited before listening".into()))??;
        Ok(SimHandle {
            shared,
            addr,
            control_addr,
            ca_pem: tls.cert_pem,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

fn build_runtime(worker_threads: usize) -> Result<tokio::runtime::Runtime, SimError> {
    let mut b = if worker_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(worker_threads)
            .thread_name("apns-sim-worker");
        b
    };
    b.enable_all()
        .build()
        .map_err(|e| SimError::Runtime(format!("tokio runtime: {e}")))
}

async fn bind(
    listen: SocketAddr,
    control: Option<SocketAddr>,
) -> Result<(TcpListener, Option<TcpListener>), SimError> {
    let apns = TcpListener::bind(listen).await?;
    let control = match control {
        Some(c) => Some(TcpListener::bind(c).await?),
        None => None,
    };
    Ok((apns, control))
}

/// A running simulator. Dropping it stops the simulator too; [`SimHandle::shutdown`] also
/// waits for its thread to finish.
pub struct SimHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    control_addr: Option<SocketAddr>,
    ca_pem: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// Where the APNs endpoint listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint as a URL, e.g. `https://127.0.0.1:43211`.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The server certificate (self-signed) as PEM: trust it as an extra root.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes [`SimHandle::ca_pem`] to `path` (a client's `ca_file`).
    pub fn write_ca_file(&self, path: impl AsRef<Path>) -> Result<(), SimError> {
        std::fs::write(path, &self.ca_pem).map_err(SimError::Io)
    }

    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.shared.faults.faults()
    }

    /// Replaces the faults in force (rates are clamped into `0..=1`) and restarts the
    /// fault generator from `faults.seed`.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.faults.set(faults);
    }

    /// The last [`RECENT_CAPACITY`] accepted pushes, oldest first.
    pub fn recent(&self) -> Vec<ReceivedPush> {
        self.shared.recent.snapshot()
    }

    /// A copy of the load-test ledger.
    pub fn ledger(&self) -> Ledger {
        self.shared.lock_ledger().clone()
    }

    /// The ledger restricted to the seqs in `range` (cheaper than [`SimHandle::ledger`] when
    /// the simulator has seen other runs).
    pub fn ledger_range(&self, range: std::ops::Range<u64>) -> Ledger {
        self.shared.lock_ledger().restricted_to(range)
    }

    /// The receipt log from index `from` on, in arrival order (empty unless
    /// [`SimConfig::receipt_log`] is on). Reading from the previous length gets only what is new.
    pub fn receipts(&self, from: usize) -> Vec<Receipt> {
        self.shared
            .receipts
            .as_ref()
            .map(|r| r.since(from))
            .unwrap_or_default()
    }

    /// Receipts not kept because the receipt log was full ([`MAX_RECEIPTS`]).
    pub fn receipts_dropped(&self) -> u64 {
        self.shared.receipts.as_ref().map_or(0, |r| r.dropped())
    }

    /// Clears counters, the ledger, the recent pushes and the receipt log (faults and token
    /// caches stay).
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Where the control endpoint listens, if it was asked for.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control_addr
    }

    /// Stops the simulator and waits for its thread.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.stop_now();
    }
}
