//! Half-sent HTTP/1.1 requests (a head that never ends) are closed after the header timeout,
//! while normal requests on other connections keep their latency. An idle half-sent request
//! once held its connection for good: 2,000 of them were all still open after 12 seconds.
//!
//! The suite runs the bounded form (300 connections, a 1 s timeout). The long form is run by
//! hand (2,000 connections, the default 10 s timeout; needs `ulimit -n` above 2,100):
//!
//! ```sh
//! cargo test -p clarion --test half_sent_requests -- --ignored --nocapture
//! ```
mod common;

use std::time::{Duration, Instant};

use clarion_sim::apns::Faults;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Run {
    /// Each half-sent connection's time from its last byte to the server's close.
    closed_after: Vec<Duration>,
    /// Normal requests' latencies before the half-sent connections, and while they were open.
    before: Vec<Duration>,
    during: Vec<Duration>,
    /// The server's resident memory before and with every half-sent connection open, in KiB.
    rss_kib: (u64, u64),
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(name: &str, l: &mut [Duration]) -> String {
    l.sort();
    format!(
        "{name}: {} requests, p50 {:?}, p99 {:?}, max {:?}",
        l.len(),
        percentile(l, 0.5),
        percentile(l, 0.99),
        l[l.len() - 1]
    )
}

fn run(connections: usize, http_toml: &str) -> Run {
    let h = common::start(2, Faults::default(), http_toml);
    h.register("steady", &[common::token(1)]);
    let pid = h.server.child.as_ref().unwrap().id();
    let addr = h.server.addr;
    let normal = |n: usize, tag: &str| -> Vec<Duration> {
        let c = h.client();
        (0..n)
            .map(|i| {
                let started = Instant::now();
                let r = c.call(
                    "POST",
                    "/v1/notifications",
                    Some(json!({"user_id": "steady", "idempotency_key": format!("{tag}-{i}"), "body": "hi"})),
                );
                assert_eq!(r.status, 202, "{}", r.body);
                std::thread::sleep(Duration::from_millis(10));
                started.elapsed() - Duration::from_millis(10)
            })
            .collect()
    };
    let before = normal(50, "before");
    let rss_before = rss_kib(pid);

    let all_open = std::sync::Arc::new(std::sync::Barrier::new(2));
    let half_sent = std::thread::spawn({
        let all_open = all_open.clone();
        move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut tasks = Vec::new();
                for _ in 0..connections {
                    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                    s.write_all(b"POST /v1/notifications HTTP/1.1\r\nHost: x\r\nContent-Type: app")
                        .await
                        .unwrap();
                    let sent = Instant::now();
                    tasks.push(tokio::spawn(async move {
                        let mut buf = [0u8; 512];
                        let read = tokio::time::timeout(Duration::from_secs(60), async {
                            loop {
                                match s.read(&mut buf).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(_) => {}
                                }
                            }
                        });
                        read.await.expect("the server closes a half-sent request");
                        sent.elapsed()
                    }));
                }
                all_open.wait();
                let mut closed = Vec::new();
                for t in tasks {
                    closed.push(t.await.unwrap());
                }
                closed
            })
        }
    });
    all_open.wait();
    let rss_open = rss_kib(pid);
    let mut during = Vec::new();
    while !half_sent.is_finished() {
        during.extend(normal(10, &format!("during-{}", during.len())));
    }
    Run {
        closed_after: half_sent.join().unwrap(),
        before,
        during,
        rss_kib: (rss_before, rss_open),
    }
}

fn check(mut r: Run, connections: usize, timeout: Duration, slack: Duration) {
    r.closed_after.sort();
    let first = r.closed_after[0];
    let last = r.closed_after[r.closed_after.len() - 1];
    eprintln!(
        "{connections} half-sent connections closed {first:?} to {last:?} after their last byte (timeout {timeout:?})"
    );
    eprintln!(
        "server RSS {} KiB before, {} KiB with all open ({} bytes a connection)",
        r.rss_kib.0,
        r.rss_kib.1,
        (r.rss_kib.1.saturating_sub(r.rss_kib.0) * 1024) / connections as u64
    );
    let (before, during) = (
        summary("before", &mut r.before),
        summary("during", &mut r.during),
    );
    eprintln!("{before}\n{during}");
    assert_eq!(r.closed_after.len(), connections);
    assert!(first >= timeout - Duration::from_millis(100), "{first:?}");
    assert!(last <= timeout + slack, "{last:?}");
    let p50 = percentile(&r.during, 0.5);
    let max = r.during[r.during.len() - 1];
    assert!(!r.during.is_empty());
    assert!(
        p50 <= percentile(&r.before, 0.5) * 3 + Duration::from_millis(20),
        "{during} vs {before}"
    );
    assert!(max < Duration::from_secs(1), "{during}");
}

#[test]
fn half_sent_requests_are_closed_after_the_header_timeout() {
    const CONNECTIONS: usize = 300;
    let timeout = Duration::from_millis(1000);
    let r = run(CONNECTIONS, "[http]\nheader_timeout_ms = 1000\n");
    check(r, CONNECTIONS, timeout, Duration::from_millis(800));
}

#[test]
#[ignore = "long form, run by hand: 2,000 connections and the default 10 s timeout"]
fn two_thousand_half_sent_requests_are_closed_after_the_default_header_timeout() {
    const CONNECTIONS: usize = 2000;
    let r = run(CONNECTIONS, "");
    check(
        r,
        CONNECTIONS,
        Duration::from_secs(10),
        Duration::from_secs(3),
    );
}
