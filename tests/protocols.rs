//! The API speaks HTTP/1.1 keep-alive and HTTP/2 cleartext (prior knowledge) on the same port.
mod common;

use std::io::{Read, Write};

use bytes::Bytes;
use clarion_sim::apns::Faults;

#[test]
fn http1_keep_alive_serves_several_requests_on_one_connection() {
    let h = common::start(1, Faults::default(), "");
    let mut s = std::net::TcpStream::connect(h.server.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    for _ in 0..3 {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    }
}

#[test]
fn http2_prior_knowledge_on_the_same_port() {
    let h = common::start(2, Faults::default(), "");
    h.register("h2user", &[common::token(77)]);
    let addr = h.server.addr;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        for i in 0..5 {
            let req = http::Request::post(format!("http://{addr}/v1/notifications"))
                .header("authorization", format!("Bearer {}", common::API_KEY))
                .header("content-type", "application/json")
                .body(())
                .unwrap();
            let (resp, mut body) = client.send_request(req, false).unwrap();
            let json =
                format!(r#"{{"user_id":"h2user","idempotency_key":"h2-{i}","body":"over h2"}}"#);
            body.send_data(Bytes::from(json), true).unwrap();
            let resp = resp.await.unwrap();
            assert_eq!(resp.status(), 202);
            assert_eq!(resp.version(), http::Version::HTTP_2);
        }
        // HEAD over h2: GET's status, and the stream ends with the headers (no DATA).
        let req = http::Request::head(format!("http://{addr}/v1/users/h2user"))
            .header("authorization", format!("Bearer {}", common::API_KEY))
            .body(())
            .unwrap();
        let (resp, _) = client.send_request(req, true).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.body().is_end_stream(),
            "no body after a HEAD's headers"
        );
    });
}

/// A load balancer keeps one HTTP/2 connection for hours. Its task waits for stop beside the
/// connection and is woken for every frame; each wake-up once left a waker behind, and the
/// 32,768th panicked the shard. 40,000 requests on one connection must leave it serving. One at
/// a time, so that each wakes the connection task (with many in flight, one wake-up reads many).
#[test]
fn one_http2_connection_carries_40_000_requests() {
    const REQUESTS: usize = 40_000;
    const IN_FLIGHT: usize = 1;
    let mut h = common::start(1, Faults::default(), "");
    let addr = h.server.addr;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ok = rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut pending = futures_util::stream::FuturesUnordered::new();
        let mut ok = 0;
        let mut sent = 0;
        while ok < REQUESTS {
            while sent < REQUESTS && pending.len() < IN_FLIGHT {
                let mut client = client.clone().ready().await.unwrap();
                let req = http::Request::get(format!("http://{addr}/healthz"))
                    .body(())
                    .unwrap();
                let (resp, _) = client.send_request(req, true).unwrap();
                pending.push(resp);
                sent += 1;
            }
            let resp = futures_util::StreamExt::next(&mut pending)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(resp.status(), 200);
            ok += 1;
        }
        ok
    });
    assert_eq!(ok, REQUESTS);
    let status = h.server.terminate();
    assert!(
        status.success(),
        "exit {status:?}; log:\n{}",
        h.server.log()
    );
    assert!(!h.server.log().contains("panicked"), "{}", h.server.log());
}
