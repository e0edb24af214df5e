//! Provider-token (JWT) checks as APNs makes them: `authorization: bearer <ES256 JWT>` with
//! header `kid` = the key id and claims `iss` = the team id and `iat`; a token older than an hour
//! is expired; a connection whose token changes to a newer one within 20 minutes of its current
//! token's `iat` gets `TooManyProviderTokenUpdates` (and keeps its current token). The rule is
//! per connection, as APNs ties the provider token to the connection: other connections (other
//! servers, shards or a restarted process signing their own tokens with the same key) and the
//! first token on a fresh connection are never refused by it.
//!
//! Verification is cached: a connection remembers its last accepted token (a byte compare on
//! every request, no lock), and a simulator-wide cache remembers every token it verified (good
//! or bad), so each distinct token string costs one ECDSA verification.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use serde::Deserialize;

use super::config::{PROVIDER_TOKEN_MAX_AGE_SECS, SimError};
use super::keys::p256_point_from_spki_pem;
use super::reason::Reason;

/// Distinct tokens remembered simulator-wide; the cache is emptied when it fills (each sender
/// uses one token per key per 20 to 60 minutes, so this only bounds abuse).
const TOKEN_CACHE_CAPACITY: usize = 4096;

/// A connection's current (last accepted) token and its `iat`: checked before the shared cache,
/// and the reference for the per-connection refresh-interval rule.
#[derive(Default)]
pub(crate) struct ConnTokenCache {
    token: Vec<u8>,
    iat: u64,
}

#[derive(Clone, Copy)]
enum Verdict {
    /// Signature and claims are good.
    Valid {
        iat: u64,
    },
    Invalid,
}

#[derive(Default)]
struct VerifierState {
    cache: HashMap<Box<[u8]>, Verdict>,
}

/// Checks provider tokens for one key; shared by all connections.
pub(crate) struct TokenVerifier {
    team_id: String,
    key_id: String,
    key: UnparsedPublicKey<Vec<u8>>,
    min_refresh_secs: Option<u64>,
    state: Mutex<VerifierState>,
    verifications: AtomicU64,
}

#[derive(Deserialize)]
struct JwtHeader {
    alg: String,
    kid: Option<String>,
}

#[derive(Deserialize)]
struct JwtClaims {
    iss: Option<String>,
    iat: Option<u64>,
}

impl TokenVerifier {
    pub(crate) fn new(
        team_id: &str,
        key_id: &str,
        public_key_pem: &str,
        min_refresh: Option<std::time::Duration>,
    ) -> Result<Self, SimError> {
        let point = p256_point_from_spki_pem(public_key_pem)?;
        Ok(TokenVerifier {
            team_id: team_id.to_string(),
            key_id: key_id.to_string(),
            key: UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point),
            min_refresh_secs: min_refresh.map(|d| d.as_secs()),
            state: Mutex::new(VerifierState::default()),
            verifications: AtomicU64::new(0),
        })
    }

    /// ECDSA verifications performed so far (cache misses).
    pub(crate) fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    pub(crate) fn reset_verifications(&self) {
        self.verifications.store(0, Ordering::Relaxed);
    }

    /// Checks an `authorization` header value at unix time `now`.
    pub(crate) fn check(
        &self,
        authorization: Option<&[u8]>,
        conn: &mut ConnTokenCache,
        now: u64,
    ) -> Result<(), Reason> {
        let value = match authorization {
            None | Some([]) => return Err(Reason::MissingProviderToken),
            Some(v) => v,
        };
        let token = strip_bearer(value).ok_or(Reason::InvalidProviderToken)?;
        if !conn.token.is_empty() && conn.token == token {
            return check_age(conn.iat, now);
        }
        let cached = self.lock().cache.get(token).copied();
        let verdict = match cached {
            Some(v) => v,
            None => {
                let v = self.verify(token);
                let mut state = self.lock();
                if state.cache.len() >= TOKEN_CACHE_CAPACITY {
                    state.cache.clear();
                }
                state.cache.insert(token.into(), v);
                v
            }
        };
        let iat = match verdict {
            Verdict::Invalid => return Err(Reason::InvalidProviderToken),
            Verdict::Valid { iat } => iat,
        };
        check_age(iat, now)?;
        self.check_refresh(conn, iat)?;
        conn.token.clear();
        conn.token.extend_from_slice(token);
        conn.iat = iat;
        Ok(())
    }

    /// The refresh-interval rule, per connection: replacing the connection's current token with
    /// a newer one (by `iat`) too soon is refused. A fresh connection has no current token.
    fn check_refresh(&self, conn: &ConnTokenCache, iat: u64) -> Result<(), Reason> {
        match self.min_refresh_secs {
            Some(min) if !conn.token.is_empty() && iat > conn.iat && iat - conn.iat < min => {
                Err(Reason::TooManyProviderTokenUpdates)
            }
            _ => Ok(()),
        }
    }

    fn verify(&self, token: &[u8]) -> Verdict {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        self.verify_inner(token)
            .map_or(Verdict::Invalid, |iat| Verdict::Valid { iat })
    }

    fn verify_inner(&self, token: &[u8]) -> Option<u64> {
        let mut parts = token.split(|b| *b == b'.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: JwtHeader = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
        let claims: JwtClaims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).ok()?).ok()?;
        if header.alg != "ES256" || header.kid.as_deref() != Some(self.key_id.as_str()) {
            return None;
        }
        if claims.iss.as_deref() != Some(self.team_id.as_str()) {
            return None;
        }
        let sig = URL_SAFE_NO_PAD.decode(s).ok()?;
        let signed_len = h.len() + 1 + c.len();
        self.key.verify(&token[..signed_len], &sig).ok()?;
        claims.iat
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VerifierState> {
        // A panic while holding this lock cannot leave the cache inconsistent: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    Some(value[SCHEME.len()..].trim_ascii())
}

fn check_age(iat: u64, now: u64) -> Result<(), Reason> {
    if now.saturating_sub(iat) > PROVIDER_TOKEN_MAX_AGE_SECS {
        Err(Reason::ExpiredProviderToken)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apns::keys::{generate_apns_key, sign_provider_token};
    use std::time::Duration;

    const NOW: u64 = 1_800_000_000;

    fn setup(min_refresh: Option<Duration>) -> (TokenVerifier, String) {
        let (p8, public) = generate_apns_key().expect("keygen");
        let v = TokenVerifier::new("TEAM000001", "KEY0000001", &public, min_refresh).expect("v");
        (v, p8)
    }

    fn bearer(p8: &str, kid: &str, iss: &str, iat: u64) -> Vec<u8> {
        format!(
            "bearer {}",
            sign_provider_token(p8, kid, iss, iat).expect("sign")
        )
        .into_bytes()
    }

    #[test]
    fn valid_token_is_verified_once_then_cached() {
        let (v, p8) = setup(None);
        let t = bearer(&p8, "KEY0000001", "TEAM000001", NOW - 10);
        let (mut a, mut b) = (ConnTokenCache::default(), ConnTokenCache::default());
        for _ in 0..5 {
            assert_eq!(v.check(Some(&t), &mut a, NOW), Ok(()));
            assert_eq!(v.check(Some(&t), &mut b, NOW), Ok(()));
        }
        assert_eq!(v.verifications(), 1);
    }

    #[test]
    fn wrong_kid_iss_or_key_is_invalid_and_missing_is_missing() {
        let (v, p8) = setup(None);
        let mut c = ConnTokenCache::default();
        let (other, _) = generate_apns_key().expect("keygen");
        for t in [
            bearer(&p8, "OTHERKEY01", "TEAM000001", NOW),
            bearer(&p8, "KEY0000001", "OTHERTEAM1", NOW),
            bearer(&other, "KEY0000001", "TEAM000001", NOW),
            b"bearer not.a.jwt".to_vec(),
            b"basic abc".to_vec(),
        ] {
            assert_eq!(
                v.check(Some(&t), &mut c, NOW),
                Err(Reason::InvalidProviderToken)
            );
        }
        assert_eq!(
            v.check(None, &mut c, NOW),
            Err(Reason::MissingProviderToken)
        );
    }

    #[test]
    fn old_token_expires_even_when_cached() {
        let (v, p8) = setup(None);
        let t = bearer(&p8, "KEY0000001", "TEAM000001", NOW);
        let mut c = ConnTokenCache::default();
        assert_eq!(v.check(Some(&t), &mut c, NOW + 3600), Ok(()));
        assert_eq!(
            v.check(Some(&t), &mut c, NOW + 3601),
            Err(Reason::ExpiredProviderToken)
        );
    }

    #[test]
    fn refreshing_within_twenty_minutes_is_too_many_updates() {
        let (v, p8) = setup(Some(Duration::from_secs(1200)));
        let mut c = ConnTokenCache::default();
        let first = bearer(&p8, "KEY0000001", "TEAM000001", NOW);
        let early = bearer(&p8, "KEY0000001", "TEAM000001", NOW + 600);
        let later = bearer(&p8, "KEY0000001", "TEAM000001", NOW + 1200);
        assert_eq!(v.check(Some(&first), &mut c, NOW + 600), Ok(()));
        let r = v.check(Some(&early), &mut c, NOW + 600);
        assert_eq!(r, Err(Reason::TooManyProviderTokenUpdates));
        // Refused again (not remembered as accepted), and the connection kept its old token.
        let r = v.check(Some(&early), &mut c, NOW + 601);
        assert_eq!(r, Err(Reason::TooManyProviderTokenUpdates));
        assert_eq!(v.check(Some(&first), &mut c, NOW + 601), Ok(()));
        // The refused token is fine as the first token of another connection.
        let mut other = ConnTokenCache::default();
        assert_eq!(v.check(Some(&early), &mut other, NOW + 601), Ok(()));
        assert_eq!(v.check(Some(&later), &mut c, NOW + 1200), Ok(()));
        // The older token is still good on another connection until it expires.
        assert_eq!(
            v.check(Some(&first), &mut ConnTokenCache::default(), NOW + 1200),
            Ok(())
        );
        assert_eq!(v.verifications(), 3);
    }

    #[test]
    fn each_connection_may_sign_its_own_fresh_token() {
        let (v, p8) = setup(Some(Duration::from_secs(1200)));
        let (mut a, mut b) = (ConnTokenCache::default(), ConnTokenCache::default());
        let ta = bearer(&p8, "KEY0000001", "TEAM000001", NOW);
        let tb = bearer(&p8, "KEY0000001", "TEAM000001", NOW + 3);
        assert_eq!(v.check(Some(&ta), &mut a, NOW + 3), Ok(()));
        assert_eq!(v.check(Some(&tb), &mut b, NOW + 3), Ok(()));
        // Both stay accepted on their own connections.
        assert_eq!(v.check(Some(&ta), &mut a, NOW + 10), Ok(()));
        assert_eq!(v.check(Some(&tb), &mut b, NOW + 10), Ok(()));
        // A restarted sender (a fresh connection) signs yet another one: also fine.
        let tc = bearer(&p8, "KEY0000001", "TEAM000001", NOW + 8);
        let mut c = ConnTokenCache::default();
        assert_eq!(v.check(Some(&tc), &mut c, NOW + 10), Ok(()));
    }
}
