//! Alerts to developers: a channel failing (its provider answering 503) fires `failure_rate`,
//! POSTed as JSON to `[alerts] webhook_url` (retried when the webhook answers 500) and logged;
//! when the provider recovers, the alert's resolution is posted too. The webhook is a small
//! HTTP server in this test.
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clarion_sim::apns::Faults;
use serde_json::{Value, json};

/// A webhook on loopback: answers `500` to the first `fail_first` posts, `200` after; keeps
/// every post's JSON body.
fn webhook(fail_first: usize) -> (u16, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let posts = Arc::new(Mutex::new(Vec::new()));
    let seen = posts.clone();
    std::thread::spawn(move || {
        let mut answered = 0;
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            // Keep-alive: one request after another on the connection.
            loop {
                let mut len = 0usize;
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    if h == "\r\n" || h.is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0u8; len];
                reader.read_exact(&mut body).unwrap();
                answered += 1;
                let status = if answered <= fail_first {
                    "500 Internal Server Error"
                } else {
                    seen.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                    "200 OK"
                };
                let _ = write!(conn, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            }
        }
    });
    (port, posts)
}

#[test]
fn a_failing_channel_fires_an_alert_and_its_recovery_resolves_it() {
    let (port, posts) = webhook(1);
    let faults = Faults {
        unavailable_rate: 1.0,
        ..Faults::default()
    };
    let h = common::start(
        1,
        faults,
        &format!(
            "[alerts]\nwebhook_url = \"http://127.0.0.1:{port}/hooks/clarion\"\ninterval_seconds = 0.2\nmin_attempts = 1\ncooldown_seconds = 0\n"
        ),
    );
    h.register("a1", &[common::token(1)]);
    for i in 0..5 {
        h.notify_accepted("a1", &format!("a{i}"), json!({}));
    }
    let firing = common::wait_for(Duration::from_secs(15), || {
        posts
            .lock()
            .unwrap()
            .iter()
            .find(|p| p["alert"] == "failure_rate" && p["status"] == "firing")
            .cloned()
    })
    .expect("the failure_rate alert is posted (after a retry)");
    assert_eq!(firing["channel"], "apns");
    assert!(
        firing["message"].as_str().unwrap().contains("apns"),
        "{firing}"
    );
    assert!(firing["at"].as_str().is_some() && firing["instance"].as_str().is_some());
    assert!(
        h.server.log().contains("alert firing"),
        "{}",
        h.server.log()
    );

    h.sim.set_faults(Faults::default());
    let resolved = common::wait_for(Duration::from_secs(30), || {
        posts
            .lock()
            .unwrap()
            .iter()
            .find(|p| p["alert"] == "failure_rate" && p["status"] == "resolved")
            .cloned()
    });
    assert!(
        resolved.is_some(),
        "posts: {:?}\n{}",
        posts.lock().unwrap(),
        h.server.log()
    );
    assert!(h.server.log().contains("alert resolved"));
}
