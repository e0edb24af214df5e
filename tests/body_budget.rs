//! Request bodies are bounded in memory: bodies being received at once count against a budget
//! per connection (HTTP/2 carries many at once) and per shard, and the one that would pass
//! either is answered `503 body_budget_exceeded` with `Retry-After` while the others are served;
//! and a batch body of millions of tiny items is refused at item 1,001 without the server's
//! memory growing with it.
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use clarion_sim::apns::Faults;

const MIB: usize = 1 << 20;

/// A batch body of `len` bytes: whitespace, then an empty batch (400 `invalid_batch_size` once
/// read in full).
fn padded_empty_batch(len: usize) -> Vec<u8> {
    let tail = br#"{"notifications":[]}"#;
    let mut b = vec![b' '; len - tail.len()];
    b.extend_from_slice(tail);
    b
}

async fn answer(resp: h2::client::ResponseFuture) -> (u16, Option<String>, serde_json::Value) {
    let resp = tokio::time::timeout(Duration::from_secs(30), resp)
        .await
        .expect("answered")
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let mut body = resp.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    (status, retry, serde_json::from_slice(&bytes).unwrap())
}

#[test]
fn http2_bodies_past_the_connection_budget_are_answered_503() {
    let h = common::start(
        1,
        Faults::default(),
        "[http]\nbody_buffer_per_connection_bytes = 8388608\n",
    );
    let addr = h.server.addr;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut client = client.ready().await.unwrap();
        // Three bodies of 4 MiB at once: 3 MiB of each is sent before any ends, so the server
        // holds 9 MiB of bodies being received against a budget of 8.
        let body = Bytes::from(padded_empty_batch(4 * MIB));
        let mut streams = Vec::new();
        for _ in 0..3 {
            let req = http::Request::post(format!("http://{addr}/v1/notifications/batch"))
                .header("authorization", format!("Bearer {}", common::API_KEY))
                .body(())
                .unwrap();
            let (resp, send) = client.send_request(req, false).unwrap();
            streams.push((resp, send));
        }
        for (_, send) in streams.iter_mut() {
            send.send_data(body.slice(..3 * MIB), false).unwrap();
        }
        for (_, send) in streams.iter_mut() {
            let _ = send.send_data(body.slice(3 * MIB..), true);
        }
        let mut answers = Vec::new();
        for (resp, _) in streams {
            answers.push(answer(resp).await);
        }
        let refused: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
        let served: Vec<_> = answers.iter().filter(|a| a.0 == 400).collect();
        assert!(!refused.is_empty(), "{answers:?}");
        assert_eq!(refused.len() + served.len(), 3, "{answers:?}");
        for (_, retry, json) in &refused {
            assert_eq!(retry.as_deref(), Some("1"));
            assert_eq!(json["error"]["code"], "body_budget_exceeded", "{json}");
            assert!(
                json["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("this connection"),
                "{json}"
            );
        }
        for (_, _, json) in &served {
            assert_eq!(json["error"]["code"], "invalid_batch_size", "{json}");
        }
        // The budget is given back: the same connection takes a full-size body again.
        let req = http::Request::post(format!("http://{addr}/v1/notifications/batch"))
            .header("authorization", format!("Bearer {}", common::API_KEY))
            .body(())
            .unwrap();
        let (resp, mut send) = client.send_request(req, false).unwrap();
        send.send_data(Bytes::from(padded_empty_batch(8 * MIB)), true)
            .unwrap();
        let (status, _, json) = answer(resp).await;
        assert_eq!(
            (status, &json["error"]["code"]),
            (400, &"invalid_batch_size".into())
        );
    });
}

/// Starts a request with a body of `declared` bytes, sending only `sent` of them.
fn half_body(addr: std::net::SocketAddr, declared: usize, sent: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /v1/notifications/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {declared}\r\n\r\n",
        common::API_KEY
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&vec![b' '; sent]).unwrap();
    s
}

#[test]
fn bodies_past_the_shard_budget_are_answered_503() {
    let h = common::start(
        1,
        Faults::default(),
        "[http]\nbody_buffer_per_connection_bytes = 8388608\nbody_buffer_per_shard_bytes = 8388608\n",
    );
    let addr = h.server.addr;
    let _first = half_body(addr, 6 * MIB, 5 * MIB);
    std::thread::sleep(Duration::from_millis(300));
    // The second's body is written from a thread while its answer is read here: the server may
    // answer `503` and close before the client has written it all (a broken pipe there).
    let mut second = TcpStream::connect(addr).unwrap();
    write!(
        second,
        "POST /v1/notifications/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        common::API_KEY,
        6 * MIB
    )
    .unwrap();
    let mut writer = second.try_clone().unwrap();
    let body = std::thread::spawn(move || {
        let _ = writer.write_all(&vec![b' '; 5 * MIB]);
    });
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let _ = second.read_to_end(&mut got);
    let _ = body.join();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("body_budget_exceeded"), "{text}");
    assert!(text.contains("on this core"), "{text}");
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// An 8 MiB batch of `{},` is 2.8 million items; the parser built every one (the server's peak
/// memory grew by hundreds of MB) before it checked the 1,000-item limit.
#[test]
fn an_8_mib_batch_of_empty_items_is_refused_without_building_them() {
    let h = common::start(1, Faults::default(), "");
    let pid = h.server.child.as_ref().unwrap().id();
    let before = peak_rss_kib(pid);
    let mut body = br#"{"notifications":["#.to_vec();
    while body.len() < 8 * MIB - 8 {
        body.extend_from_slice(b"{},");
    }
    body.extend_from_slice(b"{}]}");
    let r = h
        .client()
        .raw("POST", "/v1/notifications/batch", Some(&body));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "invalid_batch_size");
    assert_eq!(r.body["error"]["field"], "notifications");
    let grew_mib = (peak_rss_kib(pid).saturating_sub(before)) / 1024;
    // The body itself (8 MiB, perhaps twice while it is gathered) and little else.
    assert!(grew_mib < 48, "peak memory grew by {grew_mib} MiB");
}
