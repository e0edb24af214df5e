//! Keys and certificates of the APNs simulator: Apple-style `.p8` signing keys (P-256,
//! PKCS#8 PEM) with their SPKI public halves, ES256 provider-token signing for tests and tools,
//! and the self-signed TLS certificate the simulator serves.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

use super::config::SimError;

/// DER prefix of a P-256 SubjectPublicKeyInfo; the 65-byte uncompressed point follows it.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// Length of an uncompressed P-256 point (`0x04 || x || y`).
const P256_POINT_LEN: usize = 65;

/// A new P-256 key like the `.p8` Apple issues: (PKCS#8 private key PEM, SPKI public key PEM).
/// Clarion signs with the first (`EcdsaKeyPair::from_pkcs8`), the simulator verifies with the
/// second.
pub fn generate_apns_key() -> Result<(String, String), SimError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| SimError::Key(format!("generate P-256 key: {e}")))?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

/// The SPKI public key PEM of a `.p8` (PKCS#8 PEM) private key.
pub fn public_key_from_p8(p8_pem: &str) -> Result<String, SimError> {
    let pair = load_p8(p8_pem)?;
    let mut der = P256_SPKI_PREFIX.to_vec();
    der.extend_from_slice(pair.public_key().as_ref());
    Ok(to_pem("PUBLIC KEY", &der))
}

/// Signs an APNs provider token (`{"alg":"ES256","kid"}` / `{"iss","iat"}`) with a `.p8` key.
/// The simulator and Clarion's sender both accept what this produces.
pub fn sign_provider_token(
    p8_pem: &str,
    key_id: &str,
    team_id: &str,
    iat: u64,
) -> Result<String, SimError> {
    let pair = load_p8(p8_pem)?;
    let header = serde_json::json!({"alg": "ES256", "kid": key_id}).to_string();
    let claims = serde_json::json!({"iss": team_id, "iat": iat}).to_string();
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let sig = pair
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .map_err(|_| SimError::Key("ES256 signing failed".into()))?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(sig.as_ref())
    ))
}

/// The uncompressed P-256 point of an SPKI public key PEM, as `ring` verifies with it.
pub(crate) fn p256_point_from_spki_pem(pem: &str) -> Result<Vec<u8>, SimError> {
    let der = pem_to_der(pem, "PUBLIC KEY")?;
    if der.len() != P256_SPKI_PREFIX.len() + P256_POINT_LEN || !der.starts_with(&P256_SPKI_PREFIX) {
        return Err(SimError::Key(
            "public key is not a P-256 SubjectPublicKeyInfo".into(),
        ));
    }
    Ok(der[P256_SPKI_PREFIX.len()..].to_vec())
}

fn load_p8(p8_pem: &str) -> Result<EcdsaKeyPair, SimError> {
    let der = pem_to_der(p8_pem, "PRIVATE KEY")?;
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &SystemRandom::new())
        .map_err(|e| SimError::Key(format!("not a P-256 PKCS#8 key: {e}")))
}

/// The DER inside the first PEM block labelled `label`.
pub(crate) fn pem_to_der(pem: &str, label: &str) -> Result<Vec<u8>, SimError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem
        .find(&begin)
        .ok_or_else(|| SimError::Key(format!("no {begin} block")))?
        + begin.len();
    let stop = pem[start..]
        .find(&end)
        .ok_or_else(|| SimError::Key(format!("no {end} line")))?
        + start;
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD
        .decode(b64)
        .map_err(|e| SimError::Key(format!("bad base64 in {label} PEM: {e}")))
}

fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The simulator's TLS identity: a self-signed certificate for `localhost` and 127.0.0.1.
pub(crate) struct TlsIdentity {
    pub(crate) cert_pem: String,
    pub(crate) server_config: rustls::ServerConfig,
}

/// A fresh self-signed certificate and a rustls server config offering ALPN `h2` only.
pub(crate) fn tls_identity() -> Result<TlsIdentity, SimError> {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let ck = rcgen::generate_simple_self_signed(names)
        .map_err(|e| SimError::Tls(format!("self-signed certificate: {e}")))?;
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SimError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .map_err(|e| SimError::Tls(e.to_string()))?;
    server_config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsIdentity {
        cert_pem: ck.cert.pem(),
        server_config,
    })
}

/// A rustls client config (ALPN `h2`) that trusts `ca_pem` (e.g. [`super::SimHandle::ca_pem`])
/// and nothing else: what an APNs client needs to talk to the simulator.
pub fn client_tls_config(ca_pem: &str) -> Result<rustls::ClientConfig, SimError> {
    let der = pem_to_der(ca_pem, "CERTIFICATE")?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(der))
        .map_err(|e| SimError::Tls(format!("ca certificate: {e}")))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SimError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_roundtrips_through_p8_and_spki() {
        let (p8, public) = generate_apns_key().expect("keygen");
        assert!(p8.contains("BEGIN PRIVATE KEY"));
        assert_eq!(public_key_from_p8(&p8).expect("derive"), public);
        let point = p256_point_from_spki_pem(&public).expect("point");
        assert_eq!(point.len(), P256_POINT_LEN);
        assert_eq!(point[0], 0x04);
    }

    #[test]
    fn signed_token_verifies_with_the_public_key() {
        let (p8, public) = generate_apns_key().expect("keygen");
        let jwt =
            sign_provider_token(&p8, "KEY1234567", "TEAM123456", 1_700_000_000).expect("sign");
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], "KEY1234567");
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64");
        let point = p256_point_from_spki_pem(&public).expect("point");
        let key = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            point,
        );
        let input = format!("{}.{}", parts[0], parts[1]);
        assert!(key.verify(input.as_bytes(), &sig).is_ok());
    }

    #[test]
    fn garbage_keys_are_errors_not_panics() {
        assert!(public_key_from_p8("not a pem").is_err());
        assert!(
            p256_point_from_spki_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
                .is_err()
        );
    }

    #[test]
    fn tls_identity_offers_h2_only() {
        let id = tls_identity().expect("tls");
        assert_eq!(id.server_config.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(id.cert_pem.contains("BEGIN CERTIFICATE"));
    }
}
