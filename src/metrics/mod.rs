//! Prometheus metrics at `GET /metrics`: the text exposition format, rendered at scrape time from
//! every shard's probe (`engine/probe.rs`), which each shard keeps in plain cells on its own core.
//! Nothing here is shared between shards or touched by another thread on the hot path: a scrape
//! asks each shard for a snapshot over the mesh, as `GET /v1/stats` does, and sums them.
//!
//! The exposition is written by hand (`text.rs`, about a hundred lines) rather than through the
//! `prometheus` or `prometheus-client` crates: both keep each metric in a shared atomic that
//! every recording thread updates, which is what the shards must not do; what they would add
//! over this is the format's escaping and layout, which `promtool check metrics` checks in the
//! test suite.

pub mod counts;
pub mod histogram;
mod render;
mod text;

pub use render::{CONTENT_TYPE, render};
