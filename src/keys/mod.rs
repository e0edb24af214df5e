//! API keys that can be managed: stored hashed in the data directory (`store.rs`), each with a
//! name, scopes (`scope.rs`) and an optional rate limit; the configuration's `[api] keys` /
//! `CLARION_API_KEYS` are bootstrap `admin` keys. The keys' thread (`watch.rs`) owns the file
//! while the server runs and hands every shard the whole set (`set.rs`) on every change, from
//! the API (`/v1/keys`) or from `clarion keys` (the file, polled).

mod error;
pub mod scope;
mod set;
mod store;
pub mod watch;

pub use error::KeyError;
pub use scope::{Scope, Scopes};
pub use set::{KeyEntry, KeySet, config_key_name};
pub use store::{KEYS_FILE, KeyStore, MAX_RATE_LIMIT, StoredKey, validate_name};
