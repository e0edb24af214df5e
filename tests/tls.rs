//! TLS on the API: rustls with HTTP/2 and HTTP/1.1 by ALPN, from `[api] tls_cert_file` and
//! `tls_key_file`; SIGHUP reloads the certificate without dropping open connections (they keep
//! the old one; new connections get the new one), and a bad file on reload keeps the old one.
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use clarion_sim::apns::Faults;
use rustls::pki_types::{CertificateDer, ServerName};

/// Writes a self-signed certificate for 127.0.0.1 into `cert`/`key`; returns it (the client's
/// root).
fn make_cert(dir: &std::path::Path) -> CertificateDer<'static> {
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(dir.join("api-cert.pem"), c.cert.pem()).unwrap();
    std::fs::write(dir.join("api-key.pem"), c.signing_key.serialize_pem()).unwrap();
    c.cert.der().clone()
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection trusting only `root`, offering `alpn`.
fn connect(
    addr: std::net::SocketAddr,
    root: &CertificateDer<'static>,
    alpn: &[u8],
) -> std::io::Result<Tls> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("127.0.0.1").unwrap())
            .unwrap();
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// One HTTP/1.1 keep-alive request on `tls`: the status and body.
fn get(tls: &mut Tls, path: &str) -> (u16, String) {
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\r\n",
        common::server::API_KEY
    )
    .unwrap();
    tls.flush().unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    tls.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

fn wait_ready(h: &mut common::Harness, root: &CertificateDer<'static>) {
    let ready = common::wait_for(Duration::from_secs(30), || {
        let mut tls = connect(h.server.addr, root, b"http/1.1").ok()?;
        (get(&mut tls, "/readyz").0 == 200).then_some(())
    });
    assert!(ready.is_some(), "never ready over TLS: {}", h.server.log());
}

#[test]
fn the_api_serves_tls_by_alpn_and_sighup_reloads_the_certificate_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let first = make_cert(dir.path());
    let extra = format!(
        "[api]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        dir.path().join("api-cert.pem").display(),
        dir.path().join("api-key.pem").display()
    );
    // The harness's own [api] section holds the key: put the TLS keys there.
    let mut h = common::start_tls(1, Faults::default(), &extra);
    wait_ready(&mut h, &first);

    // HTTP/1.1 by ALPN, a keep-alive connection kept open across the reload.
    let mut kept = connect(h.server.addr, &first, b"http/1.1").unwrap();
    assert_eq!(kept.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, body) = get(&mut kept, "/v1/stats");
    assert_eq!(status, 200, "{body}");

    // HTTP/2 by ALPN: the server's first frame is its SETTINGS.
    let mut h2 = connect(h.server.addr, &first, b"h2").unwrap();
    assert_eq!(h2.conn.alpn_protocol(), Some(&b"h2"[..]));
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    h2.flush().unwrap();
    let mut frame = [0u8; 9];
    h2.read_exact(&mut frame).unwrap();
    assert_eq!(frame[3], 0x4, "a SETTINGS frame");

    // Plain HTTP on the TLS port gets no answer.
    let plain = h.client().try_raw("GET", "/healthz", None);
    assert!(plain.map_or(true, |r| r.status != 200));

    // A new certificate, and SIGHUP.
    let second = make_cert(dir.path());
    h.server.signal(libc::SIGHUP);
    let reloaded = common::wait_for(Duration::from_secs(5), || {
        let mut tls = connect(h.server.addr, &second, b"http/1.1").ok()?;
        (get(&mut tls, "/readyz").0 == 200).then_some(())
    });
    assert!(reloaded.is_some(), "{}", h.server.log());
    assert!(
        connect(h.server.addr, &first, b"http/1.1").is_err(),
        "new connections get the new certificate"
    );
    let (status, _) = get(&mut kept, "/v1/stats");
    assert_eq!(status, 200, "the open connection was kept");
    assert!(h.server.log().contains("TLS certificate reloaded"));

    // A broken file: the reload is refused, the served certificate stays.
    std::fs::write(dir.path().join("api-key.pem"), "nope").unwrap();
    h.server.signal(libc::SIGHUP);
    common::wait_for(Duration::from_secs(5), || {
        h.server
            .log()
            .contains("TLS certificate not reloaded")
            .then_some(())
    })
    .expect("the refused reload is logged");
    let mut tls = connect(h.server.addr, &second, b"http/1.1").unwrap();
    assert_eq!(get(&mut tls, "/readyz").0, 200);
    assert!(h.server.terminate().success());
}
