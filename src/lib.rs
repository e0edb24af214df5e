//! Clarion: a sharded notification dispatcher. Services call its HTTP API; it delivers push
//! notifications to every device of a user, durably, without duplicates on client retries.
//!
//! # Layout
//! - `config`, `cli`: the TOML file and flags, validated once into `Config`.
//! - `server`: start and stop order; one pinned glommio executor per shard.
//! - `http`: hyper on glommio (HTTP/1.1 and h2c on one port) and the API routes.
//! - `api`: request parsing and validation per resource, the error shape, the status view.
//! - `mesh`: routing commands to the owning shard over the glommio channel mesh.
//! - `engine`: the shard engine (accept, group commit, dispatch, retries, recovery).
//! - `channels`: the sender abstraction, each channel's rules and sender with its provider's
//!   wire format, auth and answers (`channels::apns`, `channels::fcm`, `channels::webpush`),
//!   what the senders share (`channels::sending`), the sender of a channel that is off.
//! - `h2client`: the provider-neutral HTTP/2 + TLS client (pool, stream line, deadlines).
//! - `builtin_sim`: starts `clarion-sim`'s simulators for the channels in simulator mode.
//! - `data_dir`: the data directory's layout and metadata (the shard count), derived again from
//!   the shard directories when a power cut took it.
//! - `durable_file`: files written outside fjall, made durable (temporary file, fsync, rename,
//!   directory fsync).
//! - `health`: every shard's state, readable from any core (`/healthz`).
//! - `sync`: single-threaded wake-up primitives.
#![deny(clippy::unwrap_used)]

pub mod alerts;
pub mod api;
pub mod builtin_sim;
pub mod channels;
pub mod cli;
pub mod config;
pub mod data_dir;
pub mod durable_file;
pub mod engine;
pub mod h1client;
pub mod h2client;
pub mod health;
pub mod http;
pub mod keys;
pub mod mesh;
pub mod metrics;
pub mod server;
pub mod sync;
mod wait;
