//! How many pushes per second the APNs simulator takes on one core: the simulator on its own
//! one-thread runtime, a closed-loop h2-over-TLS client on another thread sending valid,
//! ledger-tracked pushes (`lt_seq` and `lt_ts` set) with a real provider token.
//!
//! ```text
//! cargo run --release -p clarion-sim --example apns_throughput -- [total] [conns] [streams]
//! ```
//! Defaults: 400000 pushes, 2 connections, 512 concurrent streams in all.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use clarion_sim::apns::{
    SimConfig, Simulator, client_tls_config, generate_apns_key, sign_provider_token,
};
use clarion_sim::histogram::{LatencySummary, latency_histogram};

const TEAM: &str = "TEAMTHRU01";
const KEY: &str = "KEYTHRU001";
const TOPIC: &str = "com.clarion.throughput";

fn arg(n: usize, default: i64) -> anyhow::Result<i64> {
    Ok(match std::env::args().nth(n) {
        Some(a) => a.parse().with_context(|| format!("argument {n}: {a}"))?,
        None => default,
    })
}

fn main() -> anyhow::Result<()> {
    let total = arg(1, 400_000)?;
    let conns = arg(2, 2)?.max(1) as usize;
    let streams = arg(3, 512)?.max(1) as usize;
    let (p8, public) = generate_apns_key()?;
    let sim = Simulator::start(SimConfig::new(TEAM, KEY, &public, TOPIC))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let auth = format!("bearer {}", sign_provider_token(&p8, KEY, TEAM, now)?);
    let tls = Arc::new(client_tls_config(sim.ca_pem())?);
    let addr = sim.addr();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (elapsed, hist, errors) = rt.block_on(async move {
        let connector = tokio_rustls::TlsConnector::from(tls);
        let mut senders = Vec::new();
        for _ in 0..conns {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let name = rustls_pki_types::ServerName::try_from("localhost")?;
            let stream = connector.connect(name, tcp).await?;
            let (sender, conn) = h2::client::Builder::new()
                .initial_window_size(1 << 20)
                .initial_connection_window_size(1 << 24)
                .handshake::<_, Bytes>(stream)
                .await?;
            tokio::spawn(conn);
            senders.push(sender);
        }
        let remaining = Arc::new(AtomicI64::new(total));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..streams {
            let sender = senders[w % conns].clone();
            let (remaining, auth) = (remaining.clone(), auth.clone());
            tasks.push(tokio::spawn(async move {
                let mut hist = latency_histogram();
                let mut errors = 0u64;
                loop {
                    let seq = remaining.fetch_sub(1, Ordering::Relaxed);
                    if seq <= 0 {
                        break;
                    }
                    let t0 = Instant::now();
                    match push(sender.clone(), &auth, seq as u64).await {
                        Ok(200) => hist.saturating_record(t0.elapsed().as_micros() as u64),
                        _ => errors += 1,
                    }
                }
                (hist, errors)
            }));
        }
        let mut hist = latency_histogram();
        let mut errors = 0;
        for t in tasks {
            let (h, e) = t.await?;
            hist.add(h).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            errors += e;
        }
        Ok::<_, anyhow::Error>((started.elapsed(), hist, errors))
    })?;
    let stats = sim.stats();
    let ledger = sim.ledger();
    let l = LatencySummary::of(&hist);
    println!(
        "pushes={} errors={errors} secs={:.2} rate={:.0}/s p50={:.2}ms p99={:.2}ms max={:.2}ms",
        hist.len(),
        elapsed.as_secs_f64(),
        hist.len() as f64 / elapsed.as_secs_f64(),
        l.p50_ms,
        l.p99_ms,
        l.max_ms
    );
    println!(
        "sim: accepted={} connections={} jwt_verifications={} ledger distinct={} e2e p99={:.2}ms",
        stats.accepted,
        stats.connections,
        stats.jwt_verifications,
        ledger.distinct(),
        LatencySummary::of(ledger.e2e_us()).p99_ms
    );
    sim.shutdown();
    Ok(())
}

async fn push(sender: h2::client::SendRequest<Bytes>, auth: &str, seq: u64) -> anyhow::Result<u16> {
    let mut sender = sender.ready().await?;
    let ts = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let body = format!(
        r#"{{"aps":{{"alert":{{"title":"Order shipped","body":"Your order is on the way"}},"badge":1,"sound":"default"}},"order_id":"ord_8f14e45fceea167a","lt_seq":{seq},"lt_ts":{ts}}}"#
    );
    let req = http::Request::post(format!(
        "https://localhost/3/device/{:064x}",
        seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    ))
    .header("authorization", auth)
    .header("apns-topic", TOPIC)
    .header("apns-push-type", "alert")
    .header("apns-priority", "10")
    .body(())?;
    let (resp, mut stream) = sender.send_request(req, false)?;
    stream.send_data(Bytes::from(body), true)?;
    let resp = resp.await?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk?.len());
    }
    Ok(status)
}
