//! Clarion: a sharded notification dispatcher (see ARCHITECTURE.md for the map of the code).
pub mod apns;
