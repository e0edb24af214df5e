//! The `clarion` binary: parse the command line, load and validate the configuration, run.

use anyhow::Context;
use clap::Parser;
use clarion::cli::{Cli, Command, ServeArgs};
use clarion::config::{Config, Overrides, RawConfig};

/// mimalloc: batches are built on the executors and freed on the storage threads, a pattern
/// glibc malloc handles poorly (it showed up as ~20% of the server's CPU in profiles).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn load(args: &ServeArgs) -> anyhow::Result<Config> {
    let raw = match &args.config {
        Some(p) => RawConfig::from_file(p)?,
        None => RawConfig::default(),
    };
    let overrides = Overrides {
        listen: args.listen.clone(),
        data_dir: args.data_dir.clone(),
        shards: args.shards,
    };
    let env_keys = std::env::var("CLARION_API_KEYS").ok();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(raw.validate(&overrides, env_keys.as_deref(), cores)?)
}

/// Transparent huge pages off for this process. mimalloc asks for huge pages on its arenas, and
/// the kernel then zeroes a fresh 2 MiB page on first touch, on whichever executor thread
/// touched it: in the load test that was some 300 such faults per 20-second run, each a stall
/// of up to a millisecond on a virtual machine, and without them p90 accept latency at 30,000
/// notifications/s fell by about half (README, "Figures"). Best effort: a kernel without
/// `PR_SET_THP_DISABLE` just keeps its default.
fn disable_transparent_huge_pages() {
    // SAFETY: prctl(2) with PR_SET_THP_DISABLE reads only its integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        tracing::debug!(error = %e, "could not turn transparent huge pages off");
    }
}

fn main() -> anyhow::Result<()> {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CLARION_LOG")
                .unwrap_or_else(|_| "info,fjall=warn,lsm_tree=warn".into()),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let cfg = load(&args).context("invalid configuration")?;
            clarion::server::run(cfg)
        }
        Command::CheckConfig(args) => {
            let cfg = load(&args).context("invalid configuration")?;
            println!(
                "configuration is valid: listen {} with {} shards, data in {}",
                cfg.listen,
                cfg.shards,
                cfg.data_dir.display()
            );
            Ok(())
        }
    }
}
