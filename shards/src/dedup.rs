//! Client idempotency keys: a client retry of an accepted notification gets the original id back
//! instead of a second send, for as long as the dedup window (`[storage] dedup_window_seconds`).
//!
//! The keys live on disk, in the log's `dedup` keyspace (one entry per accepted notification:
//! keyed hash → id and accept time), written with the notification itself; the storage thread
//! checks a new notification's key there before it writes it (a *claim*, `log/claims.rs`), so the
//! window is bounded by the disk, not by memory. In front of it each shard keeps a bounded
//! [`DedupCache`] of its newest keys: it answers a client's quick retries without a read, and it
//! can prove a key absent (no disk read needed) while it has forgotten nothing younger than the
//! window.
//!
//! Keys are [`DedupHasher`] hashes: SipHash-2-4 (128 bits) under a secret each log draws once
//! and keeps in its `meta` keyspace, so no client can craft an `(user_id, idempotency_key)` pair
//! that collides with another's and gets that notification dropped as a duplicate.

mod cache;
mod hasher;
#[cfg(test)]
mod properties;

pub use cache::{DEDUP_CACHE_KEYS, DedupCache};
pub use hasher::{DEDUP_SECRET_LEN, DedupHasher};
