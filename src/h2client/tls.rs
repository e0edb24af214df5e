//! The transport under each provider connection: the rustls client configuration (webpki roots plus
//! any extra CA, and the ALPN protocols offered: `h2` for the HTTP/2 pools, `h2` and `http/1.1`
//! to learn what a Web Push origin speaks, `http/1.1` for `h1client`), name resolution off the
//! executor, and TCP + TLS set-up (failing, for the HTTP/2 pools, unless the server agreed to
//! speak HTTP/2).

use super::endpoint::Endpoint;
use super::error::Error;
use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream;
use glommio::net::TcpStream;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

/// ALPN names of HTTP/2 and HTTP/1.1.
const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// What a transport offers in ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alpn {
    /// `h2` only: the HTTP/2 pools.
    H2,
    /// `h2`, then `http/1.1`: to learn which one an origin speaks.
    H2OrHttp1,
    /// `http/1.1` only: `h1client`'s connections.
    Http1,
}

/// A TLS session to a provider over a glommio TCP stream.
pub(crate) type ProviderStream = TlsStream<TcpStream>;

/// Why one connection attempt failed; every kind is retried by the pool with backoff.
#[derive(Debug)]
pub(crate) enum ConnectError {
    Resolve(String),
    Tcp(std::io::Error),
    Tls(std::io::Error),
    NoH2,
    Handshake(h2::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Resolve(e) => write!(f, "resolving the host: {e}"),
            ConnectError::Tcp(e) => write!(f, "TCP connect: {e}"),
            ConnectError::Tls(e) => write!(f, "TLS handshake: {e}"),
            ConnectError::NoH2 => write!(f, "server did not negotiate ALPN h2"),
            ConnectError::Handshake(e) => write!(f, "HTTP/2 handshake: {e}"),
        }
    }
}

/// Where and how one shard connects: built once, used for every (re)connect.
pub(crate) struct Transport {
    /// The provider's name in logs (`apns`).
    provider: &'static str,
    endpoint: Endpoint,
    server_name: ServerName<'static>,
    connector: TlsConnector,
}

impl Transport {
    pub(crate) fn new(
        provider: &'static str,
        endpoint: Endpoint,
        ca_pem: Option<&[u8]>,
    ) -> Result<Transport, Error> {
        Transport::with_alpn(provider, endpoint, ca_pem, Alpn::H2)
    }

    /// A transport offering `alpn` (see [`Transport::connect_tls`]).
    pub(crate) fn with_alpn(
        provider: &'static str,
        endpoint: Endpoint,
        ca_pem: Option<&[u8]>,
        alpn: Alpn,
    ) -> Result<Transport, Error> {
        let server_name =
            ServerName::try_from(endpoint.host.clone()).map_err(|e| Error::InvalidEndpoint {
                reason: format!("{:?} is not a valid TLS server name: {e}", endpoint.host),
            })?;
        let connector = TlsConnector::from(client_config(ca_pem, alpn)?);
        Ok(Transport {
            provider,
            endpoint,
            server_name,
            connector,
        })
    }

    pub(crate) fn provider(&self) -> &'static str {
        self.provider
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Resolves, connects TCP (no Nagle delay) and runs the TLS handshake; fails without `h2`.
    pub(crate) async fn connect(&self) -> Result<ProviderStream, ConnectError> {
        let tls = self.connect_tls().await?;
        if !speaks_h2(&tls) {
            return Err(ConnectError::NoH2);
        }
        Ok(tls)
    }

    /// Resolves, connects TCP and runs the TLS handshake, whatever ALPN chose (see
    /// [`speaks_h2`]).
    pub(crate) async fn connect_tls(&self) -> Result<ProviderStream, ConnectError> {
        let tcp = connect_tcp(&self.endpoint.host, self.endpoint.port).await?;
        self.connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(ConnectError::Tls)
    }
}

/// Whether the server chose HTTP/2 in ALPN.
pub(crate) fn speaks_h2(tls: &ProviderStream) -> bool {
    tls.get_ref().1.alpn_protocol() == Some(ALPN_H2)
}

/// Resolves `host` and connects TCP (no Nagle delay) to the first address that answers.
pub(crate) async fn connect_tcp(host: &str, port: u16) -> Result<TcpStream, ConnectError> {
    let mut last = None;
    for addr in resolve(host, port).await? {
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                tcp.set_nodelay(true)
                    .map_err(|e| ConnectError::Tcp(e.into()))?;
                return Ok(tcp);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(
        || ConnectError::Resolve("no addresses".to_owned()),
        |e| ConnectError::Tcp(e.into()),
    ))
}

/// rustls client config: TLS 1.2+, webpki roots plus `ca_pem`, offering `alpn`.
fn client_config(ca_pem: Option<&[u8]>, alpn: Alpn) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = ca_pem {
        let bad = |reason: String| Error::InvalidCaPem { reason };
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad("no CERTIFICATE block found".to_owned()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::TlsSetup {
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = match alpn {
        Alpn::H2 => vec![ALPN_H2.to_vec()],
        Alpn::H2OrHttp1 => vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()],
        Alpn::Http1 => vec![ALPN_HTTP1.to_vec()],
    };
    Ok(Arc::new(config))
}

/// IP literals directly; names through the system resolver on a helper thread, because
/// `getaddrinfo` blocks and must never run on the executor. Connects are rare (backoff-paced),
/// so a short-lived thread per resolve is cheap enough.
async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = futures_channel::oneshot::channel();
    let name = host.to_owned();
    std::thread::Builder::new()
        .name("h2client-resolve".to_owned())
        .spawn(move || {
            let result = (name.as_str(), port)
                .to_socket_addrs()
                .map(Iterator::collect);
            let _ = tx.send(result);
        })
        .map_err(|e| ConnectError::Resolve(e.to_string()))?;
    match rx.await {
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(ConnectError::Resolve(e.to_string())),
        Err(_) => Err(ConnectError::Resolve("resolver thread vanished".to_owned())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ca_pem_must_hold_a_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        assert!(matches!(
            client_config(Some(key.serialize_pem().as_bytes()), Alpn::H2),
            Err(Error::InvalidCaPem { .. })
        ));
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let config = client_config(Some(cert.cert.pem().as_bytes()), Alpn::H2).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
        let both = client_config(None, Alpn::H2OrHttp1).unwrap();
        assert_eq!(
            both.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let http1 = client_config(None, Alpn::Http1).unwrap();
        assert_eq!(http1.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn names_resolve_off_the_executor_and_literals_directly() {
        let (literal, name) = crate::h2client::on_executor(|| async {
            let literal = resolve("127.0.0.1", 443).await.unwrap();
            let name = resolve("localhost", 2197).await.unwrap();
            (literal, name)
        });
        assert_eq!(literal, vec![SocketAddr::from(([127, 0, 0, 1], 443))]);
        assert!(
            name.iter()
                .all(|a| a.port() == 2197 && a.ip().is_loopback()),
            "{name:?}"
        );
    }
}
