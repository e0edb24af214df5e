//! The `clarion` binary: parse the command line, load and validate the configuration, run.

mod dead_letters_cmd;

use anyhow::Context;
use clap::Parser;
use clarion::cli::{Cli, Command, ServeArgs};
use clarion::config::{Config, Overrides, RawConfig};

/// mimalloc: batches are built on the executors and freed on the storage threads, a pattern
/// glibc malloc handles poorly (it showed up as ~20% of the server's CPU in profiles). Its v2
/// (see Cargo.toml) returns more of what a backlog's drain frees than v3 does.
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
        simulate: args.simulate,
    };
    let env_keys = std::env::var("CLARION_API_KEYS").ok();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(raw.validate(&overrides, env_keys.as_deref(), cores)?)
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
    // Huge pages off: see `clarion_shards::process` for why.
    if let Err(e) = clarion_shards::process::disable_transparent_huge_pages() {
        tracing::debug!(error = %e, "could not turn transparent huge pages off");
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let cfg = load(&args).context("invalid configuration")?;
            clarion::server::run(cfg)
        }
        Command::CheckConfig(args) => {
            let cfg = load(&args).context("invalid configuration")?;
            println!(
                "configuration is valid: listen {} with {} shards, data in {}; apns {}",
                cfg.listen,
                cfg.shards,
                cfg.data_dir.display(),
                cfg.apns.mode().name()
            );
            Ok(())
        }
        Command::DeadLetters(cmd) => dead_letters_cmd::run(cmd),
    }
}
