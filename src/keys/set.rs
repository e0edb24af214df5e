//! The keys a server accepts, as each shard holds them: by SHA-256 of the key, with name, scopes
//! and rate limit. Built by the keys' thread (`watch.rs`) from the configuration's bootstrap keys
//! and the stored ones, and handed to every shard whole, so a request's check reads only its own
//! shard's copy.

use std::collections::HashMap;
use std::sync::Arc;

use tracing::warn;

use super::scope::Scopes;
use super::store::{StoredKey, digest, parse_hex_digest};

/// One accepted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub name: String,
    pub scopes: Scopes,
    pub rate_limit_per_s: Option<u32>,
    pub created_at_ms: u64,
    /// From `[api] keys` / `CLARION_API_KEYS`: an `admin` key that only the configuration
    /// changes.
    pub from_config: bool,
}

/// Every accepted key.
#[derive(Debug, Default)]
pub struct KeySet {
    by_digest: HashMap<[u8; 32], Arc<KeyEntry>>,
    entries: Vec<Arc<KeyEntry>>,
}

/// The name a bootstrap key from the configuration is listed under (`config:1`, ...): a `:` no
/// stored key's name may hold.
pub fn config_key_name(i: usize) -> String {
    format!("config:{}", i + 1)
}

impl KeySet {
    /// The configuration's keys (as `admin`) and the stored ones; a stored entry that does not
    /// parse is skipped with a warning.
    pub fn build(config_keys: &[String], stored: &[StoredKey]) -> KeySet {
        let mut set = KeySet::default();
        for (i, k) in config_keys.iter().enumerate() {
            set.insert(
                digest(k.as_bytes()),
                KeyEntry {
                    name: config_key_name(i),
                    scopes: Scopes::ADMIN,
                    rate_limit_per_s: None,
                    created_at_ms: 0,
                    from_config: true,
                },
            );
        }
        for s in stored {
            let scopes = Scopes::parse_list(s.scopes.iter().map(String::as_str));
            match (parse_hex_digest(&s.sha256), scopes) {
                (Some(d), Ok(scopes)) => set.insert(
                    d,
                    KeyEntry {
                        name: s.name.clone(),
                        scopes,
                        rate_limit_per_s: s.rate_limit_per_s,
                        created_at_ms: s.created_at_ms,
                        from_config: false,
                    },
                ),
                (_, Err(why)) => {
                    warn!(key = %s.name, %why, "stored API key skipped: its scopes do not parse");
                }
                (None, _) => {
                    warn!(key = %s.name, "stored API key skipped: its sha256 is not 64 hex digits");
                }
            }
        }
        set
    }

    fn insert(&mut self, d: [u8; 32], e: KeyEntry) {
        let e = Arc::new(e);
        self.by_digest.insert(d, e.clone());
        self.entries.push(e);
    }

    /// The entry of a presented key. The lookup is by the key's SHA-256, so its time tells
    /// nothing about the keys (a guess differs from them in a hash, not in its bytes).
    pub fn find(&self, presented: &[u8]) -> Option<&Arc<KeyEntry>> {
        self.by_digest.get(&digest(presented))
    }

    pub fn entries(&self) -> &[Arc<KeyEntry>] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_config_and_stored_keys_and_skips_damaged_entries() {
        let stored = vec![
            StoredKey {
                name: "billing".into(),
                scopes: vec!["send".into()],
                rate_limit_per_s: Some(5),
                created_at_ms: 1,
                sha256: super::super::store::tests_hex(&digest(b"clk_billing")),
            },
            StoredKey {
                name: "broken".into(),
                scopes: vec!["send".into()],
                rate_limit_per_s: None,
                created_at_ms: 1,
                sha256: "zz".into(),
            },
        ];
        let set = KeySet::build(&["bootstrap-key-0123456789".into()], &stored);
        assert_eq!(set.entries().len(), 2);
        let admin = set.find(b"bootstrap-key-0123456789").unwrap();
        assert!(admin.from_config && admin.scopes == Scopes::ADMIN);
        assert_eq!(admin.name, "config:1");
        let billing = set.find(b"clk_billing").unwrap();
        assert_eq!(billing.rate_limit_per_s, Some(5));
        assert!(set.find(b"clk_billin").is_none());
    }
}
