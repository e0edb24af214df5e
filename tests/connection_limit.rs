//! Past `[http] max_connections_per_shard`, a new connection is answered `503` with
//! `Retry-After` and a JSON error (over HTTP/1.1 and HTTP/2), then closed; the connections
//! already open keep being served, and once one closes a new one is served again.
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use clarion_sim::apns::Faults;

const LIMIT: usize = 8;

fn request(s: &mut TcpStream) -> String {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 2048];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn a_connection_past_the_limit_is_answered_503_and_closed() {
    let h = common::start(
        1,
        Faults::default(),
        &format!("[http]\nmax_connections_per_shard = {LIMIT}\n"),
    );
    let addr = h.server.addr;
    // The harness's own connections (waiting for health) close as they are answered.
    std::thread::sleep(Duration::from_millis(200));
    let mut open: Vec<TcpStream> = (0..LIMIT)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            let answer = request(&mut s);
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            s
        })
        .collect();

    // One more: 503, Retry-After, the project's error body, and the server closes it.
    let mut extra = TcpStream::connect(addr).unwrap();
    extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    extra
        .read_to_end(&mut answer)
        .expect("closed by the server");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("retry-after: 1\r\n"), "{answer}");
    assert!(lower.contains("connection: close\r\n"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["error"]["code"], "too_many_connections", "{body}");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&LIMIT.to_string())
    );

    // Over HTTP/2 the refusal is the same answer on the stream.
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
        let req = http::Request::get(format!("http://{addr}/healthz"))
            .body(())
            .unwrap();
        let (resp, _) = client.send_request(req, true).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["retry-after"], "1");
    });

    // The open connections are still served; once one closes, a new one is served again.
    for s in open.iter_mut() {
        assert!(request(s).starts_with("HTTP/1.1 200"));
    }
    drop(open.pop());
    let served = common::wait_for(Duration::from_secs(10), || {
        let mut s = TcpStream::connect(addr).ok()?;
        request(&mut s).starts_with("HTTP/1.1 200").then_some(s)
    });
    assert!(served.is_some(), "no connection served after one closed");
}
