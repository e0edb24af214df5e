//! The built-in provider simulators (APNs, FCM, a Web Push service), started in-process only when the
//! configuration says so (`mode = "simulator"` in a channel's section, or
//! `clarion serve --simulate`), so a fresh checkout can deliver
//! end to end on loopback: a fresh provider key, a self-signed TLS certificate trusted through
//! `ca_pem`, and the simulator from `clarion-sim`. It says so in the log, and the channel's mode
//! shows in `GET /v1/stats` and `/healthz`.

use std::net::SocketAddr;

use anyhow::Context;
use clarion_sim::apns::{Faults, SimConfig, SimHandle, Simulator, generate_apns_key};
use clarion_sim::fcm::{FcmSimConfig, FcmSimHandle};
use clarion_sim::webpush::WebPushSimHandle;
use tracing::warn;

use crate::channels::apns::ApnsConfig;
use crate::channels::fcm::{FcmConfig, ServiceAccount};

/// Key and team ids of the built-in simulator's provider key (10 characters, as Apple's are).
const SIM_KEY_ID: &str = "SIMKEY0001";
const SIM_TEAM_ID: &str = "SIMTEAM001";

pub fn start(
    topic: &str,
    control_listen: Option<SocketAddr>,
) -> anyhow::Result<(ApnsConfig, SimHandle)> {
    let (private_pem, public_pem) =
        generate_apns_key().map_err(|e| anyhow::anyhow!("generating the simulator key: {e}"))?;
    let cfg = SimConfig {
        listen: "127.0.0.1:0".parse().context("simulator address")?,
        team_id: SIM_TEAM_ID.into(),
        key_id: SIM_KEY_ID.into(),
        public_key_pem: public_pem,
        topic: topic.to_string(),
        faults: Faults::default(),
        control_listen,
        ..SimConfig::default()
    };
    let sim = Simulator::start(cfg)
        .map_err(|e| anyhow::anyhow!("starting the built-in APNs simulator: {e}"))?;
    warn!(
        channel = "apns",
        mode = "simulator",
        addr = %sim.addr(),
        control = ?sim.control_addr(),
        "channel mode: APNs deliveries go to the built-in simulator, not to Apple"
    );
    let settings = ApnsConfig {
        endpoint: format!("https://{}", sim.addr()),
        team_id: SIM_TEAM_ID.into(),
        key_id: SIM_KEY_ID.into(),
        key_pem: private_pem.into_bytes(),
        topic: topic.to_string(),
        connections: crate::config::DEFAULT_APNS_CONNECTIONS,
        ca_pem: Some(sim.ca_pem().as_bytes().to_vec()),
    };
    Ok((settings, sim))
}

/// The built-in FCM simulator (`[fcm] mode = "simulator"` or `serve --simulate`): its token
/// endpoint and send endpoint on one loopback origin, the simulator's published service
/// account key, and a self-signed certificate trusted through `ca_pem`.
pub fn start_fcm(connections: usize) -> anyhow::Result<(FcmConfig, FcmSimHandle)> {
    let listen = "127.0.0.1:0".parse().context("simulator address")?;
    let cfg = FcmSimConfig::builtin(listen)
        .map_err(|e| anyhow::anyhow!("the built-in FCM simulator's key: {e}"))?;
    let sim = clarion_sim::fcm::start(cfg)
        .map_err(|e| anyhow::anyhow!("starting the built-in FCM simulator: {e}"))?;
    warn!(
        channel = "fcm",
        mode = "simulator",
        addr = %sim.addr(),
        "channel mode: FCM deliveries go to the built-in simulator, not to Google"
    );
    let account = ServiceAccount::parse(
        sim.service_account_json(clarion_sim::fcm::SIMULATOR_SERVICE_ACCOUNT_KEY_PEM)
            .as_bytes(),
    )
    .map_err(|e| anyhow::anyhow!("the built-in FCM simulator's service account: {e}"))?;
    let settings = FcmConfig {
        project_id: clarion_sim::fcm::SIMULATOR_PROJECT_ID.into(),
        endpoint: sim.endpoint(),
        account,
        connections,
        quota_per_minute: crate::channels::fcm::DEFAULT_QUOTA_PER_MINUTE,
        ca_pem: Some(sim.ca_pem().as_bytes().to_vec()),
    };
    Ok((settings, sim))
}

/// The built-in Web Push service simulator (`[webpush] mode = "simulator"` or
/// `serve --simulate`): subscriptions come from its `POST /subscribe`; its certificate is
/// trusted through the returned `ca_pem`.
pub fn start_webpush() -> anyhow::Result<(WebPushSimHandle, Vec<u8>)> {
    let listen = "127.0.0.1:0".parse().context("simulator address")?;
    let sim = clarion_sim::webpush::start(listen, clarion_sim::webpush::WebPushFaults::default())
        .map_err(|e| anyhow::anyhow!("starting the built-in Web Push simulator: {e}"))?;
    warn!(
        channel = "webpush",
        mode = "simulator",
        origin = %sim.origin(),
        "channel mode: Web Push deliveries go to the built-in push service simulator (subscriptions from POST {}/subscribe), not to browsers",
        sim.origin()
    );
    let ca = sim.ca_pem().as_bytes().to_vec();
    Ok((sim, ca))
}
