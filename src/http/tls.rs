//! TLS on the API (`[api] tls_cert_file`, `tls_key_file`): rustls with ALPN `h2` and
//! `http/1.1`, the certificate and key read from PEM files and read again on SIGHUP. A new
//! certificate applies to the connections that arrive after the reload; open connections keep
//! theirs, so none is dropped.
//!
//! Each shard has its own rustls configuration (and so its own session cache); the certificate
//! sits behind a lock they share: a handshake (not a request) reads it, for a pointer copy, and
//! only a reload writes it, so it costs nothing a request would notice.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate being served, and where it is read from.
#[derive(Debug)]
pub struct ReloadableCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<CertifiedKey>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| format!("reading {}: {e}", cert_file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("{}: no private key ({e})", key_file.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(certs, key, &provider)
        .map_err(|e| format!("{} and {}: {e}", cert_file.display(), key_file.display()))?;
    Ok(Arc::new(certified))
}

impl ReloadableCert {
    /// Reads the files again; on an error the served certificate stays.
    pub fn reload(&self) -> Result<(), String> {
        let new = load(&self.cert_file, &self.key_file)?;
        if let Ok(mut c) = self.current.write() {
            *c = new;
        }
        Ok(())
    }
}

/// The API's TLS: the acceptor the shards share and the certificate SIGHUP reloads.
#[derive(Clone)]
pub struct ApiTls {
    pub acceptor: futures_rustls::TlsAcceptor,
    pub cert: Arc<ReloadableCert>,
}

impl std::fmt::Debug for ApiTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiTls").field("cert", &self.cert).finish()
    }
}

impl ApiTls {
    pub fn new(cert_file: &Path, key_file: &Path) -> Result<ApiTls, String> {
        let cert = Arc::new(ReloadableCert {
            current: RwLock::new(load(cert_file, key_file)?),
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
        });
        ApiTls::with_cert(cert)
    }

    /// The same certificate with a configuration of a shard's own: rustls keeps its session
    /// cache (a mutex) in the configuration, so each shard's handshakes use their own.
    pub fn for_shard(&self) -> Result<ApiTls, String> {
        ApiTls::with_cert(self.cert.clone())
    }

    fn with_cert(cert: Arc<ReloadableCert>) -> Result<ApiTls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ApiTls {
            acceptor: futures_rustls::TlsAcceptor::from(Arc::new(config)),
            cert,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_reloads_and_keeps_the_old_certificate_on_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_file, key_file) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let write = |name: &str| {
            let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
            std::fs::write(&cert_file, c.cert.pem()).unwrap();
            std::fs::write(&key_file, c.signing_key.serialize_pem()).unwrap();
            c.cert.der().clone()
        };
        let first = write("one.test");
        let tls = ApiTls::new(&cert_file, &key_file).unwrap();
        let served = || tls.cert.current.read().unwrap().cert[0].clone();
        assert_eq!(served(), first);
        let second = write("two.test");
        tls.cert.reload().unwrap();
        assert_eq!(served(), second);
        std::fs::write(&key_file, "not a key").unwrap();
        assert!(tls.cert.reload().unwrap_err().contains("k.pem"));
        assert_eq!(served(), second, "a bad file leaves the served certificate");
        std::fs::write(&cert_file, "").unwrap();
        assert!(ApiTls::new(&cert_file, &key_file).is_err());
    }
}
