//! RFC 8292 VAPID: the application server's P-256 key pair, every browser subscription is bound
//! to (web apps subscribe with its public key, `GET /v1/webpush/vapid-public-key`), and the
//! ES256 JWT each request carries (`Authorization: vapid t=<jwt>, k=<public key>`), with `aud`
//! the push service's origin, `exp` within 24 hours and `sub` the operator's contact.
//!
//! The key comes from `[webpush] vapid_private_key_file`, or is generated on first start and
//! kept in the data directory (written durably), because a new key would orphan every
//! subscription. Each shard signs a token per origin and reuses it until it nears its expiry.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

/// The file a generated key is kept in, inside the data directory.
pub const GENERATED_KEY_FILE: &str = "webpush-vapid.pem";
/// A token's life: push services refuse more than 24 hours.
pub const TOKEN_LIFETIME_S: u64 = 12 * 3600;
/// A cached token is signed again when less than this of its life is left.
pub const RESIGN_BEFORE_S: u64 = 3600;
/// Origins whose token a shard keeps; past it the cache starts again (push services are few).
pub const MAX_CACHED_ORIGINS: usize = 256;

/// The application server's key pair.
pub struct VapidKey {
    pair: EcdsaKeyPair,
    /// The public key, uncompressed, in base64url: the `k=` of every request and what web apps
    /// subscribe with.
    pub public_key: String,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

fn pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

impl VapidKey {
    /// A PKCS#8 PEM P-256 private key.
    pub fn from_pem(text: &[u8]) -> Result<VapidKey, String> {
        let der = match PrivateKeyDer::from_pem_slice(text) {
            Ok(PrivateKeyDer::Pkcs8(der)) => der,
            Ok(_) => return Err("not a PKCS#8 key (BEGIN PRIVATE KEY)".into()),
            Err(e) => return Err(format!("not a PEM key: {e}")),
        };
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &SystemRandom::new(),
        )
        .map_err(|e| format!("not a P-256 key: {e}"))?;
        let public_key = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        Ok(VapidKey { pair, public_key })
    }

    /// The configured key file's key, or the data directory's generated one, generating and
    /// keeping it on first start. Says which in the log.
    pub fn load_or_generate(file: Option<&Path>, data_dir: &Path) -> Result<VapidKey, String> {
        if let Some(file) = file {
            let text =
                std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            return VapidKey::from_pem(&text).map_err(|e| format!("{}: {e}", file.display()));
        }
        let kept = data_dir.join(GENERATED_KEY_FILE);
        match std::fs::read(&kept) {
            Ok(text) => VapidKey::from_pem(&text).map_err(|e| format!("{}: {e}", kept.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let der = EcdsaKeyPair::generate_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &SystemRandom::new(),
                )
                .map_err(|_| "generating the VAPID key failed".to_string())?;
                let text = pem(der.as_ref());
                std::fs::create_dir_all(data_dir)
                    .map_err(|e| format!("creating {}: {e}", data_dir.display()))?;
                crate::durable_file::write_durably(&kept, text.as_bytes(), 0o600)
                    .map_err(|e| format!("writing {}: {e}", kept.display()))?;
                let key = VapidKey::from_pem(text.as_bytes())?;
                tracing::warn!(
                    file = %kept.display(),
                    public_key = %key.public_key,
                    "generated the Web Push VAPID key: every browser subscription is bound to it, keep the data directory (or set [webpush] vapid_private_key_file)"
                );
                Ok(key)
            }
            Err(e) => Err(format!("cannot read {}: {e}", kept.display())),
        }
    }

    /// The ES256 JWT for `aud` (an origin), expiring at `exp_s`, naming `sub`.
    pub fn token(&self, aud: &str, exp_s: u64, sub: &str) -> Result<String, String> {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({"aud": aud, "exp": exp_s, "sub": sub}).to_string();
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|_| "ES256 signing failed".to_string())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }
}

/// One shard's VAPID `Authorization` values, per origin, reused while fresh.
pub struct VapidSigner {
    key: Arc<VapidKey>,
    subject: String,
    cache: RefCell<HashMap<String, (Arc<str>, u64)>>,
}

impl VapidSigner {
    pub fn new(key: Arc<VapidKey>, subject: String) -> VapidSigner {
        VapidSigner {
            key,
            subject,
            cache: RefCell::new(HashMap::new()),
        }
    }

    /// `vapid t=<jwt>, k=<public key>` for `origin` (`https://host[:port]`).
    pub fn authorization(&self, origin: &str) -> Result<Arc<str>, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Some((value, exp)) = self.cache.borrow().get(origin) {
            if *exp > now + RESIGN_BEFORE_S {
                return Ok(value.clone());
            }
        }
        let exp = now + TOKEN_LIFETIME_S;
        let jwt = self.key.token(origin, exp, &self.subject)?;
        let value: Arc<str> = Arc::from(format!("vapid t={jwt}, k={}", self.key.public_key));
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= MAX_CACHED_ORIGINS {
            cache.clear();
        }
        cache.insert(origin.to_string(), (value.clone(), exp));
        Ok(value)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    #[test]
    fn a_generated_key_is_kept_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = VapidKey::load_or_generate(None, dir.path()).unwrap();
        let b = VapidKey::load_or_generate(None, dir.path()).unwrap();
        assert_eq!(a.public_key, b.public_key, "the same key after a restart");
        assert_eq!(URL_SAFE_NO_PAD.decode(&a.public_key).unwrap().len(), 65);
        let file = dir.path().join(GENERATED_KEY_FILE);
        let c = VapidKey::load_or_generate(Some(&file), Path::new("/nonexistent")).unwrap();
        assert_eq!(c.public_key, a.public_key);
        std::fs::write(&file, "garbage").unwrap();
        assert!(VapidKey::load_or_generate(None, dir.path()).is_err());
    }

    #[test]
    fn the_authorization_carries_a_verifiable_es256_token_for_the_origin() {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(VapidKey::load_or_generate(None, dir.path()).unwrap());
        let signer = VapidSigner::new(key.clone(), "mailto:ops@example.com".into());
        let value = signer.authorization("https://push.example.net").unwrap();
        assert!(
            Arc::ptr_eq(
                &value,
                &signer.authorization("https://push.example.net").unwrap()
            ),
            "reused"
        );
        let (t, k) = value
            .strip_prefix("vapid t=")
            .and_then(|r| r.split_once(", k="))
            .unwrap();
        assert_eq!(k, key.public_key);
        let parts: Vec<&str> = t.split('.').collect();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://push.example.net");
        assert_eq!(claims["sub"], "mailto:ops@example.com");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let exp = claims["exp"].as_u64().unwrap();
        assert!(exp > now && exp <= now + 24 * 3600);
        let public =
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, URL_SAFE_NO_PAD.decode(k).unwrap());
        public
            .verify(
                format!("{}.{}", parts[0], parts[1]).as_bytes(),
                &URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
            )
            .unwrap();
    }
}
