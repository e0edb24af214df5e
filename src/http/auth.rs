//! Who may call: the bearer key checked against this shard's copy of the key set (replaced
//! whole by the keys' thread on every change, `keys/watch.rs`), the scope the route needs, and
//! the key's rate limit, enforced per shard as its share of the limit.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use clarion_shards::TokenBucket;
use http::{HeaderMap, Method};

use crate::api::error::ApiError;
use crate::keys::{KeySet, Scope};

/// This shard's keys and the rate limiters of the keys that have one.
pub struct Auth {
    keys: RefCell<Arc<KeySet>>,
    /// Per key name: its limit and bucket. At most one per key with a limit (bounded by
    /// `keys::MAX_KEYS`); dropped when the key goes.
    limiters: RefCell<HashMap<String, (u32, TokenBucket)>>,
    /// Shards sharing each key's limit.
    shards: u32,
}

/// The scope a route needs; `None` for a path that is no route (any valid key then gets the
/// `404`).
pub fn scope_for(method: &Method, segs: &[&str]) -> Option<Scope> {
    Some(match segs {
        ["users", _] if method == Method::GET => Scope::UsersRead,
        ["users", _] | ["users", _, "devices"] | ["users", _, "devices", _] => Scope::UsersWrite,
        ["notifications"] | ["notifications", _] => Scope::Send,
        ["stats"] => Scope::Metrics,
        ["dead-letters"] | ["dead-letters", "replay"] => Scope::DeadLetters,
        ["keys"] | ["keys", _] => Scope::Admin,
        _ => return None,
    })
}

impl Auth {
    pub fn new(keys: Arc<KeySet>, shards: usize) -> Auth {
        Auth {
            keys: RefCell::new(keys),
            limiters: RefCell::default(),
            shards: u32::try_from(shards.max(1)).unwrap_or(u32::MAX),
        }
    }

    /// A new key set from the keys' thread.
    pub fn replace(&self, keys: Arc<KeySet>) {
        let names: std::collections::HashSet<&str> =
            keys.entries().iter().map(|e| e.name.as_str()).collect();
        self.limiters
            .borrow_mut()
            .retain(|name, _| names.contains(name.as_str()));
        *self.keys.borrow_mut() = keys;
    }

    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.borrow().clone()
    }

    /// `401` without a known key, `403` when it lacks `needed`, `429` past its rate limit.
    /// `now_ms` is read only for a key with a rate limit.
    pub fn check(
        &self,
        headers: &HeaderMap,
        needed: Option<Scope>,
        now_ms: impl FnOnce() -> u64,
    ) -> Result<(), ApiError> {
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|h| h.as_bytes().strip_prefix(b"Bearer "))
            .ok_or_else(ApiError::unauthorized)?;
        let keys = self.keys.borrow();
        let entry = keys.find(presented).ok_or_else(ApiError::unauthorized)?;
        if let Some(scope) = needed
            && !entry.scopes.allows(scope)
        {
            return Err(ApiError::new(
                403,
                "forbidden",
                format!(
                    "the key `{}` lacks the `{}` scope this call needs (it has: {})",
                    entry.name,
                    scope.as_str(),
                    entry.scopes
                ),
            ));
        }
        if let Some(rate) = entry.rate_limit_per_s {
            self.take(&entry.name, rate, now_ms())?;
        }
        Ok(())
    }

    fn take(&self, name: &str, rate: u32, now_ms: u64) -> Result<(), ApiError> {
        let share = (rate / self.shards).max(1);
        let mut limiters = self.limiters.borrow_mut();
        if !limiters.contains_key(name) {
            limiters.insert(
                name.to_string(),
                (rate, TokenBucket::new(share, share, 1000, now_ms)),
            );
        }
        let Some((limit, bucket)) = limiters.get_mut(name) else {
            return Ok(());
        };
        if *limit != rate {
            *limit = rate;
            *bucket = TokenBucket::new(share, share, 1000, now_ms);
        }
        if bucket.try_take(now_ms) {
            return Ok(());
        }
        let wait_s = bucket.ms_until_token(now_ms).unwrap_or(1000).div_ceil(1000);
        Err(ApiError {
            retry_after_s: Some(u32::try_from(wait_s.max(1)).unwrap_or(1)),
            ..ApiError::new(
                429,
                "rate_limited",
                format!("the key `{name}` is over its rate limit of {rate} requests/s"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Scopes, StoredKey};

    fn headers(key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {key}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn unknown_keys_missing_scopes_and_rates_are_refused_in_turn() {
        let stored = StoredKey {
            name: "billing".into(),
            scopes: vec!["send".into()],
            rate_limit_per_s: Some(4),
            created_at_ms: 0,
            sha256: ring::digest::digest(&ring::digest::SHA256, b"clk_b")
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        };
        let auth = Auth::new(
            Arc::new(KeySet::build(&["admin-key-0123456789".into()], &[stored])),
            2,
        );
        assert_eq!(
            auth.check(&HeaderMap::new(), None, || 0)
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            auth.check(&headers("clk_c"), None, || 0)
                .unwrap_err()
                .status,
            401
        );
        let e = auth
            .check(&headers("clk_b"), Some(Scope::UsersWrite), || 0)
            .unwrap_err();
        assert_eq!((e.status, e.code), (403, "forbidden"));
        assert!(e.message.contains("users:write"), "{}", e.message);
        // 4/s over 2 shards: 2 here each second.
        assert!(
            auth.check(&headers("clk_b"), Some(Scope::Send), || 0)
                .is_ok()
        );
        assert!(
            auth.check(&headers("clk_b"), Some(Scope::Send), || 0)
                .is_ok()
        );
        let e = auth
            .check(&headers("clk_b"), Some(Scope::Send), || 0)
            .unwrap_err();
        assert_eq!((e.status, e.retry_after_s), (429, Some(1)));
        assert!(
            auth.check(&headers("clk_b"), Some(Scope::Send), || 1000)
                .is_ok()
        );
        // The admin key may do anything; an empty set refuses everyone.
        assert!(
            auth.check(&headers("admin-key-0123456789"), Some(Scope::Admin), || 0)
                .is_ok()
        );
        auth.replace(Arc::new(KeySet::default()));
        assert_eq!(
            auth.check(&headers("admin-key-0123456789"), None, || 0)
                .unwrap_err()
                .status,
            401
        );
        assert!(Scopes::ADMIN.allows(Scope::Metrics));
    }

    #[test]
    fn each_route_needs_its_scope() {
        let m = |s: &str| Method::from_bytes(s.as_bytes()).unwrap();
        assert_eq!(
            scope_for(&m("GET"), &["users", "a"]),
            Some(Scope::UsersRead)
        );
        assert_eq!(
            scope_for(&m("PUT"), &["users", "a"]),
            Some(Scope::UsersWrite)
        );
        assert_eq!(
            scope_for(&m("DELETE"), &["users", "a", "devices", "d"]),
            Some(Scope::UsersWrite)
        );
        assert_eq!(
            scope_for(&m("POST"), &["notifications", "batch"]),
            Some(Scope::Send)
        );
        assert_eq!(scope_for(&m("GET"), &["stats"]), Some(Scope::Metrics));
        assert_eq!(
            scope_for(&m("POST"), &["dead-letters", "replay"]),
            Some(Scope::DeadLetters)
        );
        assert_eq!(scope_for(&m("DELETE"), &["keys", "x"]), Some(Scope::Admin));
        assert_eq!(scope_for(&m("GET"), &["nope"]), None);
    }
}
