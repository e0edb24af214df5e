//! An HTTP/1.1 request head past the transport's bounds (`H1_MAX_BUF_SIZE` bytes,
//! `H1_MAX_HEADERS` headers) is refused with `431` and its connection closed, instead of being
//! buffered without bound.
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use clarion::http::{H1_MAX_BUF_SIZE, H1_MAX_HEADERS};
use clarion_sim::apns::Faults;

fn answer_to(addr: std::net::SocketAddr, head: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may close before it has read everything; what it answered is still there.
    let _ = s.write_all(head.as_bytes());
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn oversized_http1_heads_are_refused_with_431() {
    let h = common::start(1, Faults::default(), "");
    let addr = h.server.addr;
    let long = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(H1_MAX_BUF_SIZE)
    );
    let answer = answer_to(addr, &long);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");

    let many: String = (0..=H1_MAX_HEADERS)
        .map(|i| format!("X-H{i}: v\r\n"))
        .collect();
    let answer = answer_to(
        addr,
        &format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n"),
    );
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");

    // Within both bounds, the same request is served.
    let fits: String = (0..H1_MAX_HEADERS - 2)
        .map(|i| format!("X-H{i}: v\r\n"))
        .collect();
    let answer = answer_to(
        addr,
        &format!("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{fits}\r\n"),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.200}");
}
