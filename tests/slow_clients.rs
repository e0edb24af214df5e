//! Slow, silent and idle clients are cut off by the `[http]` time limits, over HTTP/1.1 and
//! HTTP/2, while a connection that keeps to them is served: a new connection must send a
//! request head within the header timeout, an HTTP/1.1 head must be complete within it of its
//! first byte, a body must arrive within the body timeout (`408`), and a connection with
//! nothing in flight is closed after the idle timeout (HTTP/2 with GOAWAY).
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clarion_sim::apns::Faults;

const HEADER_MS: u64 = 400;
const BODY_MS: u64 = 400;
const IDLE_MS: u64 = 1500;
/// What a loaded 2-core machine may add to a timer.
const SLACK: Duration = Duration::from_millis(800);

fn start() -> common::Harness {
    common::start(
        1,
        Faults::default(),
        &format!(
            "[http]\nheader_timeout_ms = {HEADER_MS}\nbody_timeout_ms = {BODY_MS}\nidle_timeout_ms = {IDLE_MS}\n"
        ),
    )
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Reads until the server closes the connection; returns what it sent and when it closed,
/// measured from `since`.
fn until_closed(s: &mut TcpStream, since: Instant) -> (Vec<u8>, Duration) {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
    (got, since.elapsed())
}

/// Sends one keep-alive request and reads its answer (a `/healthz`, whose body is short).
fn healthz(s: &mut TcpStream) -> String {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let h = start();
    let started = Instant::now();
    let mut s = TcpStream::connect(h.server.addr).unwrap();
    let (got, after) = until_closed(&mut s, started);
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert!(
        after >= ms(HEADER_MS - 50) && after < ms(HEADER_MS) + SLACK,
        "{after:?}"
    );
}

#[test]
fn a_half_sent_head_after_a_request_is_closed_after_the_header_timeout() {
    let h = start();
    let mut s = TcpStream::connect(h.server.addr).unwrap();
    assert!(healthz(&mut s).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let (_, after) = until_closed(&mut s, started);
    // The header timeout, counted from the head's first byte: well before the idle timeout.
    assert!(
        after >= ms(HEADER_MS - 50) && after < ms(HEADER_MS) + SLACK,
        "{after:?}"
    );
    assert!(after < ms(IDLE_MS), "{after:?}");
}

#[test]
fn an_idle_http1_connection_outlives_the_header_timeout_and_closes_at_the_idle_timeout() {
    let h = start();
    let mut s = TcpStream::connect(h.server.addr).unwrap();
    assert!(healthz(&mut s).starts_with("HTTP/1.1 200"));
    std::thread::sleep(ms(2 * HEADER_MS));
    assert!(healthz(&mut s).starts_with("HTTP/1.1 200"));
    let quiet = Instant::now();
    let (_, after) = until_closed(&mut s, quiet);
    assert!(
        after >= ms(IDLE_MS - 50) && after < ms(IDLE_MS) + SLACK,
        "{after:?}"
    );
}

#[test]
fn a_body_that_stops_arriving_is_answered_408_and_closed() {
    let h = start();
    let mut s = TcpStream::connect(h.server.addr).unwrap();
    let started = Instant::now();
    s.write_all(
        format!(
            "POST /v1/notifications HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 100\r\n\r\n{{\"user_id\":",
            common::API_KEY
        )
        .as_bytes(),
    )
    .unwrap();
    let (got, after) = until_closed(&mut s, started);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains(r#""code":"body_timeout""#), "{text}");
    assert!(
        after >= ms(BODY_MS - 50) && after < ms(BODY_MS) + SLACK,
        "{after:?}"
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn http2_connections_keep_the_same_limits() {
    let h = start();
    let addr = h.server.addr;
    runtime().block_on(async move {
        // Only the preface, no request: closed after the header timeout.
        let started = Instant::now();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (_client, conn) = h2::client::handshake(tcp).await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(20), conn).await;
        let after = started.elapsed();
        assert!(ended.is_ok(), "not closed");
        assert!(
            after >= ms(HEADER_MS - 50) && after < ms(HEADER_MS) + SLACK,
            "{after:?}"
        );

        // A body that stops arriving: 408 on its stream, while the connection stays up.
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
        let conn = tokio::spawn(async move {
            let started = Instant::now();
            let r = conn.await;
            (r.map_err(|e| e.to_string()), started.elapsed())
        });
        let req = http::Request::post(format!("http://{addr}/v1/notifications"))
            .header("authorization", format!("Bearer {}", common::API_KEY))
            .body(())
            .unwrap();
        let (resp, mut body) = client.send_request(req, false).unwrap();
        body.send_data(Bytes::from_static(b"{\"user_id\":"), false)
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), resp)
            .await
            .expect("answered")
            .unwrap();
        assert_eq!(resp.status(), 408);
        let mut data = resp.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = data.data().await {
            text.extend_from_slice(&chunk.unwrap());
        }
        assert!(
            String::from_utf8_lossy(&text).contains("body_timeout"),
            "{}",
            String::from_utf8_lossy(&text)
        );

        // Then nothing in flight: GOAWAY after the idle timeout, and the connection ends.
        let quiet = Instant::now();
        let (ended, _) = tokio::time::timeout(Duration::from_secs(20), conn)
            .await
            .expect("closed")
            .unwrap();
        let after = quiet.elapsed();
        assert!(ended.is_ok(), "{ended:?}");
        assert!(
            after >= ms(IDLE_MS - 100) && after < ms(IDLE_MS) + SLACK,
            "{after:?}"
        );
    });
}
