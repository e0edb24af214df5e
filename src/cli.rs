//! The command line: `clarion serve` with the common configuration keys as flags.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "clarion", version, about = "A sharded notification dispatcher")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the dispatcher: the HTTP API on every core, one shard per core.
    Serve(ServeArgs),
    /// Validate a configuration file and print the result, without starting anything.
    CheckConfig(ServeArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file (every key optional; see README.md).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// API address (IP:port), overriding `listen`.
    #[arg(long)]
    pub listen: Option<String>,
    /// Data directory, overriding `data_dir`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Number of shards (one pinned executor each), overriding `shards`; default: all cores.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Deliver every channel to its built-in simulator on loopback (a demo or a test; never a
    /// production setting): overrides each channel's `mode` and credentials.
    #[arg(long)]
    pub simulate: bool,
}
