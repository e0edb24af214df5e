//! The command line: `clarion serve` with the common configuration keys as flags,
//! `check-config`, and `dead-letters list|replay|purge` (a client of a running server).

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
    /// List, replay or purge a running server's dead letters (deliveries that failed for good).
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Create, list or revoke API keys in a data directory (a running server picks the change
    /// up within a second).
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// `clarion keys ...`: the keys stored (hashed) in a data directory.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print `{"name","key","scopes"}`: the key is shown this once.
    Create {
        #[command(flatten)]
        store: KeyStoreArgs,
        /// The key's name: letters, digits, `_`, `.`, `-` (up to 64).
        #[arg(long)]
        name: String,
        /// Comma-separated: send, users:read, users:write, dead_letters, metrics, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Requests per second this key may make (across the server's shards).
        #[arg(long)]
        rate_limit: Option<u32>,
    },
    /// Print the stored keys' names, scopes, limits and creation times (never the keys).
    List {
        #[command(flatten)]
        store: KeyStoreArgs,
    },
    /// Delete a stored key: refused on every shard of a running server within a second.
    Revoke {
        #[command(flatten)]
        store: KeyStoreArgs,
        name: String,
    },
}

/// Which data directory's keys.
#[derive(Debug, clap::Args)]
pub struct KeyStoreArgs {
    /// The server's data directory (as `data_dir` or `--data-dir` of `serve`).
    #[arg(long, required_unless_present = "config")]
    pub data_dir: Option<PathBuf>,
    /// Or the server's configuration file, to read its `data_dir`.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// `clarion dead-letters ...`: the `/v1/dead-letters` calls from the command line.
#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// Print a page of dead letters, newest first (JSON, with `next_cursor` for the next page).
    List {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        filter: DeadFilterArgs,
        /// Letters in the page (1 to 1000; the server's default is 100).
        #[arg(long)]
        limit: Option<usize>,
        /// The `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Send dead deliveries again (attempts reset, history kept); prints `{"replayed": N}`.
    Replay {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        selection: DeadSelectionArgs,
    },
    /// Delete dead letters for good; prints `{"purged": N}`.
    Purge {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        selection: DeadSelectionArgs,
    },
}

/// Which server to ask, and with which key.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The server's API address, such as `http://127.0.0.1:8080`.
    #[arg(long, env = "CLARION_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// An API key the server accepts.
    #[arg(long, env = "CLARION_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// Seconds to wait for the answer (a replay of many letters takes a while).
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

/// A dead-letter filter: every option given must match.
#[derive(Debug, Default, clap::Args)]
pub struct DeadFilterArgs {
    /// `apns`, `fcm` or `webpush`.
    #[arg(long)]
    pub channel: Option<String>,
    /// `retries_exhausted` or `config_fault`.
    #[arg(long)]
    pub reason: Option<String>,
    /// Died at or after this time (Unix ms or RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Died before this time (Unix ms or RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
}

/// The letters a replay or purge acts on: delivery ids, a filter, or all of them.
#[derive(Debug, clap::Args)]
pub struct DeadSelectionArgs {
    /// A delivery id (repeat for several).
    #[arg(long = "delivery-id", conflicts_with_all = ["channel", "reason", "since", "until", "all"])]
    pub delivery_ids: Vec<String>,
    #[command(flatten)]
    pub filter: DeadFilterArgs,
    /// Every dead letter.
    #[arg(long)]
    pub all: bool,
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
