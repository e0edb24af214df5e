//! A Google service account as its JSON key file gives it (`client_email`, `private_key`,
//! `private_key_id`, `token_uri`): who FCM's OAuth assertions come from, the RSA key they are
//! signed with, and where they are exchanged for access tokens.

use std::sync::Arc;

use ring::signature::RsaKeyPair;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;

use super::config::FcmError;

/// A service account key, parsed and ready to sign with. Shared by every shard (the key pair
/// is immutable).
#[derive(Clone)]
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key_id: String,
    /// Where assertions are exchanged for access tokens (`https://oauth2.googleapis.com/token`).
    pub token_uri: String,
    pub(crate) key: Arc<RsaKeyPair>,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    token_uri: Option<String>,
}

impl ServiceAccount {
    /// Reads a key file's bytes; every fault names the field.
    pub fn parse(json: &[u8]) -> Result<ServiceAccount, FcmError> {
        let bad = |reason: String| FcmError::ServiceAccount { reason };
        let f: KeyFile = serde_json::from_slice(json)
            .map_err(|e| bad(format!("not a service account JSON file: {e}")))?;
        if let Some(kind) = f.kind.as_deref().filter(|k| *k != "service_account") {
            return Err(bad(format!(
                "`type` is {kind:?}, expected \"service_account\""
            )));
        }
        let field = |v: Option<String>, name: &str| {
            v.filter(|s| !s.is_empty())
                .ok_or_else(|| bad(format!("`{name}` is missing")))
        };
        let client_email = field(f.client_email, "client_email")?;
        let private_key_id = field(f.private_key_id, "private_key_id")?;
        let token_uri = field(f.token_uri, "token_uri")?;
        if !token_uri.starts_with("https://") {
            return Err(bad(format!(
                "`token_uri` must be an https URL, got {token_uri:?}"
            )));
        }
        let pem = field(f.private_key, "private_key")?;
        let der = match PrivateKeyDer::from_pem_slice(pem.as_bytes()) {
            Ok(PrivateKeyDer::Pkcs8(der)) => der,
            Ok(_) => {
                return Err(bad(
                    "`private_key` must be a PKCS#8 PEM (BEGIN PRIVATE KEY)".into(),
                ));
            }
            Err(e) => return Err(bad(format!("`private_key` is not a PEM key: {e}"))),
        };
        let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(|e| {
            bad(format!(
                "`private_key` is not an RSA key ring can sign with: {e}"
            ))
        })?;
        Ok(ServiceAccount {
            client_email,
            private_key_id,
            token_uri,
            key: Arc::new(key),
        })
    }
}

#[cfg(test)]
impl ServiceAccount {
    /// A key file naming `token_uri`, with the simulator's published key (tests).
    pub fn test_key_file(token_uri: &str) -> String {
        tests::key_file(token_uri)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The built-in simulator's service account key (not a secret: it signs for the simulator).
    pub const TEST_KEY_PEM: &str = clarion_sim::fcm::SIMULATOR_SERVICE_ACCOUNT_KEY_PEM;

    pub fn key_file(token_uri: &str) -> String {
        serde_json::json!({
            "type": "service_account",
            "project_id": "demo",
            "private_key_id": "k1",
            "private_key": TEST_KEY_PEM,
            "client_email": "sender@demo.iam.gserviceaccount.com",
            "token_uri": token_uri,
        })
        .to_string()
    }

    #[test]
    fn a_key_file_is_read_and_its_faults_named() {
        let sa = ServiceAccount::parse(key_file("https://oauth2.googleapis.com/token").as_bytes())
            .unwrap();
        assert_eq!(sa.client_email, "sender@demo.iam.gserviceaccount.com");
        assert_eq!(sa.private_key_id, "k1");
        let reason = |json: String| match ServiceAccount::parse(json.as_bytes()) {
            Err(FcmError::ServiceAccount { reason }) => reason,
            other => panic!("{other:?}"),
        };
        assert!(reason("{".into()).contains("not a service account"));
        assert!(reason(key_file("http://x/token")).contains("token_uri"));
        let no_email = key_file("https://t/token").replace("client_email", "other");
        assert!(reason(no_email).contains("client_email"));
        let bad_key = key_file("https://t/token").replace("BEGIN PRIVATE KEY", "BEGIN NOTHING");
        assert!(reason(bad_key).contains("private_key"));
    }
}
