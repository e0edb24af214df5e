//! `clarion-loadtest`: the thin binary over the `clarion_loadtest` library. Parses the command
//! line (see `cli.rs`), runs the subcommand, prints what it found.
//!
//! ```text
//! clarion-loadtest keygen --out DIR
//! clarion-loadtest apns-sim --listen 127.0.0.1:2197 --control 127.0.0.1:8091 --key-file DIR/apns-key.p8 --ca-out DIR/apns-ca.pem
//! clarion-loadtest run --target 127.0.0.1:8080 --api-key K --sim-control 127.0.0.1:8091 --rate 5000 --duration 20s --out DIR
//! clarion-loadtest wake-probe
//! clarion-loadtest ecdh-probe --web-share 0.1
//! clarion-loadtest bench --server-bin target/release/clarion --rate 5000 --duration 20s --out DIR
//! clarion-loadtest outage --server-bin target/release/clarion --rate 2000 --outage 10m --out DIR
//! clarion-loadtest backlog --server-bin target/release/clarion --count 5000000 --batch 1000 --out DIR
//! ```

mod cli;

/// mimalloc: the simulator and load generator allocate per request across tokio threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::Parser;

use clarion_loadtest::load::{LoadReport, SimLink};
use clarion_loadtest::{bench, load, outage, report};
use clarion_sim::apns::{Simulator, generate_apns_key};

fn main() -> anyhow::Result<()> {
    match run() {
        // The reader of stdout went away (`| head -1`): what it read stands, as with any Unix
        // tool, and the files were written before the summary was printed.
        Err(e) if e.is::<StdoutClosed>() => Ok(()),
        other => other,
    }
}

/// Stdout was closed by its reader.
#[derive(Debug)]
struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Prints `text` to stdout: written, never `println!`, so a closed pipe is [`StdoutClosed`]
/// rather than a panic.
fn say(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        other => Ok(other?),
    }
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    // Huge pages off: see `clarion_shards::process` for why.
    if let Err(e) = clarion_shards::process::disable_transparent_huge_pages() {
        tracing::debug!(error = %e, "could not turn transparent huge pages off");
    }
    match cli::Cli::parse().command {
        cli::Command::Keygen { out } => keygen(&out),
        cli::Command::ApnsSim(args) => apns_sim(&args),
        cli::Command::Run(args) => {
            let mut cfg = args.load.to_config();
            if !cfg.platforms.only_ios() {
                anyhow::bail!(
                    "`run` drives iOS devices only (its simulator is APNs'); `bench --platforms` runs a mix"
                );
            }
            cfg.target = args.target;
            cfg.api_key = args.api_key.clone();
            let link = args.sim_control.map_or(SimLink::None, SimLink::Control);
            // Before the load (and the fsync probe), never beside it.
            let wake_probe = (!args.no_wake_probe)
                .then(clarion_loadtest::wake_probe::measure)
                .transpose()
                .context("wake probe (--no-wake-probe leaves it out)")?;
            let probe = (!args.no_fsync_probe)
                .then(|| clarion_loadtest::fsync_probe::ProbeProcess::start(&args.fsync_probe_dir))
                .transpose()?;
            let mut report = load::run(&cfg, link)?;
            report.fsync_probe = probe.map(|p| p.finish()).transpose()?;
            report.wake_probe = wake_probe;
            finish(&report, args.load.out.as_deref())
        }
        cli::Command::FsyncProbe { dir } => clarion_loadtest::fsync_probe::probe_main(&dir),
        cli::Command::WakeProbe => {
            let p = clarion_loadtest::wake_probe::measure()?;
            say(&format!(
                "Wake probe    {}\n{}\n",
                p.line(),
                serde_json::to_string(&p)?
            ))
        }
        cli::Command::EcdhProbe { web_share } => {
            let p = clarion_loadtest::ecdh_probe::measure(web_share)?;
            say(&format!(
                "ECDH probe    {}\n{}\n",
                p.line(),
                serde_json::to_string(&p)?
            ))
        }
        cli::Command::Bench(args) => {
            let report = bench::bench(&args.to_config()?)?;
            finish(&report, args.load.out.as_deref())
        }
        cli::Command::Outage(args) => {
            let (report, samples) = outage::run_outage(&args.to_config())?;
            finish_outage(&report, &samples, args.rig.out.as_deref())
        }
        cli::Command::Backlog(args) => {
            let (report, samples) = outage::run_backlog(&args.to_config())?;
            finish_outage(&report, &samples, args.rig.out.as_deref())
        }
    }
}

/// Prints an outage or backlog run's summary and writes its files; exits with status 1 when the
/// verdict fails.
fn finish_outage(
    r: &outage::OutageReport,
    samples: &[outage::sampler::Sample],
    out: Option<&Path>,
) -> anyhow::Result<()> {
    let mut text = outage::report::summary_text(r);
    if let Some(dir) = out {
        outage::report::write_outputs(r, samples, dir)?;
        text.push_str(&format!(
            "  Wrote         {}/{{summary.json,samples.csv,accept.hgrm,e2e.hgrm}}\n",
            dir.display()
        ));
    }
    say(&text)?;
    if !r.verdict.pass {
        // A measurement that came out short is not a crash: no backtrace, exit status 1.
        eprintln!("the {} run did not meet its targets (see above)", r.kind);
        std::process::exit(1);
    }
    Ok(())
}

fn keygen(out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let (p8, public) = generate_apns_key()?;
    std::fs::write(out.join("apns-key.p8"), p8)?;
    std::fs::write(out.join("apns-key.pub.pem"), public)?;
    say(&format!(
        "wrote {0}/apns-key.p8 and {0}/apns-key.pub.pem\n",
        out.display()
    ))
}

fn apns_sim(args: &cli::SimArgs) -> anyhow::Result<()> {
    let sim = Simulator::start(args.to_config()?)?;
    if let Some(path) = &args.ca_out {
        sim.write_ca_file(path)?;
    }
    let mut text = format!("apns-sim listening on https://{}\n", sim.addr());
    if let Some(c) = sim.control_addr() {
        text.push_str(&format!("apns-sim control on http://{c}\n"));
    }
    if let Some(path) = &args.ca_out {
        text.push_str(&format!("apns-sim certificate in {}\n", path.display()));
    }
    say(&text)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok::<(), std::io::Error>(())
    })?;
    let stats = sim.stats();
    sim.shutdown();
    say(&format!(
        "apns-sim stopped: {}\n",
        serde_json::to_string(&stats)?
    ))
}

fn finish(r: &LoadReport, out: Option<&Path>) -> anyhow::Result<()> {
    let mut text = report::summary_text(r);
    if let Some(dir) = out {
        report::write_outputs(r, dir)?;
        text.push_str(&format!(
            "  Wrote         {}/{{summary.json,accept.hgrm,e2e.hgrm}}\n",
            dir.display()
        ));
    }
    say(&text)
}
