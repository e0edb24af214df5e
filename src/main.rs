//! The `clarion` binary: parse the command line, load and validate the configuration, run.

mod dead_letters_cmd;
mod keys_cmd;

use anyhow::Context;
use clap::Parser;
use clarion::cli::{Cli, Command, ServeArgs};
use clarion::config::ops::LogFormat;
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

/// The default log filter: Clarion's state changes, fjall's warnings.
const DEFAULT_LOG_FILTER: &str = "info,fjall=warn,lsm_tree=warn";

/// Logs to stderr, as text (coloured on a terminal) or one JSON object per line; the filter is
/// `CLARION_LOG`, else `[log] level`, else [`DEFAULT_LOG_FILTER`].
fn init_logs(format: LogFormat, level: Option<&str>) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLARION_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::try_new(level.unwrap_or(DEFAULT_LOG_FILTER))
            .unwrap_or_else(|_| DEFAULT_LOG_FILTER.into())
    });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The server's configuration says how to log; a configuration error is printed as text.
    let serve = match &cli.command {
        Command::Serve(args) => match load(args) {
            Ok(cfg) => Some(cfg),
            Err(e) => {
                init_logs(LogFormat::Text, None);
                return Err(e.context("invalid configuration"));
            }
        },
        _ => None,
    };
    match &serve {
        Some(cfg) => init_logs(cfg.ops.log_format, cfg.ops.log_level.as_deref()),
        None => init_logs(LogFormat::Text, None),
    }
    // Huge pages off: see `clarion_shards::process` for why.
    if let Err(e) = clarion_shards::process::disable_transparent_huge_pages() {
        tracing::debug!(error = %e, "could not turn transparent huge pages off");
    }
    match cli.command {
        Command::Serve(_) => serve.map_or(Ok(()), clarion::server::run),
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
        Command::Keys(cmd) => keys_cmd::run(cmd),
    }
}
