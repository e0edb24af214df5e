//! The APNs provider token: an ES256 JWT signed with the team's `.p8` key, cached as a ready-made
//! `authorization` header value, and the policy for when it may be re-signed.

use super::config::ApnsError;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderValue;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A token this old is replaced before use: Apple rejects tokens older than 60 minutes with
/// `403 ExpiredProviderToken`, and 10 minutes of margin absorbs clock skew.
pub const TOKEN_REFRESH_AGE: Duration = Duration::from_secs(50 * 60);
/// Never re-sign more often than this on our own initiative: more frequent updates are answered
/// with `429 TooManyProviderTokenUpdates`. An `ExpiredProviderToken` answer may force one early
/// refresh per interval (the token is certainly stale), so clock skew cannot cause a refresh storm.
pub const TOKEN_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(20 * 60);

/// Wall-clock seconds, behind a trait so tests can move time.
pub(crate) trait Clock {
    fn unix_seconds(&self) -> u64;
}

/// The real clock.
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn unix_seconds(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// One signed token, ready to go into a request.
#[derive(Debug, Clone)]
pub(crate) struct IssuedToken {
    pub(crate) issued_at: u64,
    /// `bearer <jwt>`, shared by every request until the next refresh.
    pub(crate) authorization: HeaderValue,
}

/// Why APNs turned a token down (both arrive as 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenRejection {
    /// `ExpiredProviderToken`: certainly stale, re-signing helps.
    Expired,
    /// `InvalidProviderToken`: only a new key helps; re-sign only if the token is past the floor.
    Invalid,
}

/// Signing failed: only the random number generator can fail here, so a later try may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SigningFailed;

/// Signs and caches the provider token of one shard.
pub(crate) struct ProviderToken {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    /// base64url of `{"alg":"ES256","kid":...}`, fixed for the key's life.
    header_segment: String,
    team_id: String,
    clock: Rc<dyn Clock>,
    current: RefCell<Option<IssuedToken>>,
    /// No refresh at all before this unix second (set by `429 TooManyProviderTokenUpdates`).
    hold_until: Cell<u64>,
    /// No refresh forced by `ExpiredProviderToken` before this unix second.
    next_forced_at: Cell<u64>,
    refreshes: Cell<u64>,
}

impl ProviderToken {
    /// Parses the PKCS#8 PEM key now, so a bad key fails at start-up rather than on first send.
    pub(crate) fn new(
        key_pem: &[u8],
        key_id: &str,
        team_id: &str,
        clock: Rc<dyn Clock>,
    ) -> Result<ProviderToken, ApnsError> {
        let bad = |reason: String| ApnsError::InvalidKey { reason };
        let der = match PrivateKeyDer::from_pem_slice(key_pem) {
            Ok(PrivateKeyDer::Pkcs8(der)) => der,
            Ok(_) => return Err(bad("expected a PKCS#8 `PRIVATE KEY` (.p8) PEM".to_owned())),
            Err(e) => return Err(bad(format!("no PEM private key found: {e}"))),
        };
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| bad(format!("not a P-256 PKCS#8 key: {e}")))?;
        let header = serde_json::json!({"alg": "ES256", "kid": key_id}).to_string();
        Ok(ProviderToken {
            key,
            rng,
            header_segment: URL_SAFE_NO_PAD.encode(header),
            team_id: team_id.to_owned(),
            clock,
            current: RefCell::new(None),
            hold_until: Cell::new(0),
            next_forced_at: Cell::new(0),
            refreshes: Cell::new(0),
        })
    }

    /// The token to use now: the cached one unless it reached [`TOKEN_REFRESH_AGE`].
    pub(crate) fn current(&self) -> Result<IssuedToken, SigningFailed> {
        let now = self.clock.unix_seconds();
        if let Some(token) = self.current.borrow().as_ref() {
            let fresh = now.saturating_sub(token.issued_at) < TOKEN_REFRESH_AGE.as_secs();
            if fresh || now < self.hold_until.get() {
                return Ok(token.clone());
            }
        }
        self.sign(now)
    }

    /// APNs rejected `rejected`; re-sign if that can help and the policy allows. The caller
    /// then retries once with [`current`](Self::current).
    pub(crate) fn after_rejection(
        &self,
        rejected: &IssuedToken,
        why: TokenRejection,
    ) -> Result<(), SigningFailed> {
        let now = self.clock.unix_seconds();
        let Some(issued_at) = self.current.borrow().as_ref().map(|t| t.issued_at) else {
            return Ok(());
        };
        // Another request already replaced the token it was rejected with.
        let replaced = issued_at != rejected.issued_at;
        let held = now < self.hold_until.get();
        let past_floor = now.saturating_sub(issued_at) >= TOKEN_MIN_REFRESH_INTERVAL.as_secs();
        let allowed = match why {
            TokenRejection::Expired => past_floor || now >= self.next_forced_at.get(),
            TokenRejection::Invalid => past_floor,
        };
        if replaced || held || !allowed {
            return Ok(());
        }
        if why == TokenRejection::Expired && !past_floor {
            self.next_forced_at
                .set(now + TOKEN_MIN_REFRESH_INTERVAL.as_secs());
        }
        self.sign(now).map(drop)
    }

    /// APNs answered `429 TooManyProviderTokenUpdates`: keep the current token for a full interval.
    pub(crate) fn hold_refreshes(&self) {
        let until = self.clock.unix_seconds() + TOKEN_MIN_REFRESH_INTERVAL.as_secs();
        self.hold_until.set(self.hold_until.get().max(until));
    }

    /// Tokens signed after the first.
    pub(crate) fn refreshes(&self) -> u64 {
        self.refreshes.get()
    }

    fn sign(&self, now: u64) -> Result<IssuedToken, SigningFailed> {
        let claims = format!(r#"{{"iss":"{}","iat":{now}}}"#, self.team_id);
        let mut jwt = String::with_capacity(7 + self.header_segment.len() + 2 * claims.len() + 90);
        jwt.push_str("bearer ");
        jwt.push_str(&self.header_segment);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut jwt);
        let signature = self
            .key
            .sign(&self.rng, &jwt.as_bytes()[7..])
            .map_err(|_| SigningFailed)?;
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut jwt);
        let authorization = HeaderValue::try_from(jwt).map_err(|_| SigningFailed)?;
        let token = IssuedToken {
            issued_at: now,
            authorization,
        };
        if self.current.replace(Some(token.clone())).is_some() {
            self.refreshes.set(self.refreshes.get() + 1);
        }
        Ok(token)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    const MIN: u64 = 60;
    const T0: u64 = 1_700_000_000;

    struct FakeClock(Cell<u64>);
    impl Clock for FakeClock {
        fn unix_seconds(&self) -> u64 {
            self.0.get()
        }
    }

    fn token() -> (ProviderToken, Rc<FakeClock>, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let clock = Rc::new(FakeClock(Cell::new(T0)));
        let t = ProviderToken::new(
            key.serialize_pem().as_bytes(),
            "KEY1234567",
            "TEAM123456",
            clock.clone(),
        )
        .unwrap();
        (t, clock, key)
    }

    fn decode(segment: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
    }

    #[test]
    fn token_is_an_es256_jwt_that_verifies_with_the_public_key() {
        let (t, _, key) = token();
        let issued = t.current().unwrap();
        let value = issued.authorization.to_str().unwrap();
        let jwt = value.strip_prefix("bearer ").unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            decode(parts[0]),
            serde_json::json!({"alg": "ES256", "kid": "KEY1234567"})
        );
        assert_eq!(
            decode(parts[1]),
            serde_json::json!({"iss": "TEAM123456", "iat": T0})
        );
        assert!(!jwt.contains('='), "base64url without padding");
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        assert_eq!(signature.len(), 64, "JOSE signatures are raw r||s");
        let signed = format!("{}.{}", parts[0], parts[1]);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.public_key_raw())
            .verify(signed.as_bytes(), &signature)
            .unwrap();
    }

    #[test]
    fn token_is_reused_until_fifty_minutes_then_refreshed() {
        let (t, clock, _) = token();
        let first = t.current().unwrap();
        clock.0.set(T0 + 49 * MIN + 59);
        assert_eq!(t.current().unwrap().authorization, first.authorization);
        assert_eq!(t.refreshes(), 0);
        clock.0.set(T0 + 50 * MIN);
        let second = t.current().unwrap();
        assert_eq!(second.issued_at, T0 + 50 * MIN);
        assert_ne!(second.authorization, first.authorization);
        assert_eq!(t.refreshes(), 1);
    }

    #[test]
    fn expired_rejection_refreshes_at_once_but_forces_at_most_once_per_interval() {
        let (t, clock, _) = token();
        let first = t.current().unwrap();
        clock.0.set(T0 + MIN);
        t.after_rejection(&first, TokenRejection::Expired).unwrap();
        let second = t.current().unwrap();
        assert_eq!(
            (t.refreshes(), second.issued_at),
            (1, T0 + MIN),
            "stale: re-signed at once"
        );
        // Concurrent requests rejected with the old token do not refresh again.
        t.after_rejection(&first, TokenRejection::Expired).unwrap();
        assert_eq!(t.refreshes(), 1);
        // A brand-new token called expired means clock skew: no second forced refresh for 20 min.
        clock.0.set(T0 + 2 * MIN);
        t.after_rejection(&second, TokenRejection::Expired).unwrap();
        assert_eq!(t.refreshes(), 1);
        clock.0.set(T0 + 21 * MIN);
        t.after_rejection(&second, TokenRejection::Expired).unwrap();
        assert_eq!(t.refreshes(), 2);
    }

    #[test]
    fn invalid_rejection_refreshes_only_past_the_floor() {
        let (t, clock, _) = token();
        let first = t.current().unwrap();
        clock.0.set(T0 + 19 * MIN);
        t.after_rejection(&first, TokenRejection::Invalid).unwrap();
        assert_eq!(t.refreshes(), 0);
        clock.0.set(T0 + 20 * MIN);
        t.after_rejection(&first, TokenRejection::Invalid).unwrap();
        assert_eq!(t.refreshes(), 1);
    }

    #[test]
    fn too_many_updates_holds_every_refresh_for_an_interval() {
        let (t, clock, _) = token();
        let first = t.current().unwrap();
        clock.0.set(T0 + 45 * MIN);
        t.hold_refreshes();
        t.after_rejection(&first, TokenRejection::Expired).unwrap();
        clock.0.set(T0 + 55 * MIN);
        assert_eq!(
            t.current().unwrap().issued_at,
            T0,
            "routine refresh waits for the hold"
        );
        clock.0.set(T0 + 65 * MIN);
        assert_eq!(t.current().unwrap().issued_at, T0 + 65 * MIN);
        assert_eq!(t.refreshes(), 1);
    }

    #[test]
    fn bad_keys_are_refused_at_construction() {
        let clock: Rc<dyn Clock> = Rc::new(SystemClock);
        let garbage = ProviderToken::new(b"not a pem", "KEY1234567", "TEAM123456", clock.clone());
        assert!(matches!(garbage, Err(ApnsError::InvalidKey { .. })));
        let rsa_like = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let wrong_curve = ProviderToken::new(
            rsa_like.serialize_pem().as_bytes(),
            "KEY1234567",
            "TEAM123456",
            clock,
        );
        assert!(matches!(wrong_curve, Err(ApnsError::InvalidKey { .. })));
    }
}
