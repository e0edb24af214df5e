//! `GET /metrics`: the Prometheus text format (checked by `promtool check metrics`, from
//! Debian's `prometheus` package, which `.ci/run` installs), on the API port behind a key and on
//! `[metrics] listen` without one; and the metrics move as notifications are accepted, refused,
//! delivered and retried.
mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use clarion_sim::apns::Faults;
use common::http::Client;
use serde_json::json;

/// The value of the sample line `name{labels}` (exactly as written), or 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's `prometheus` package; .ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_pass_promtool_and_move_with_the_traffic() {
    let port = common::server::free_port();
    let faults = Faults::default();
    let h = common::start(
        2,
        faults,
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let open = Client {
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        key: None,
    };
    let before = open.raw("GET", "/metrics", None);
    assert_eq!(before.status, 200);
    assert_eq!(
        before.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    promtool_check(&before.text);
    // Only /metrics there.
    assert_eq!(open.raw("GET", "/v1/stats", None).status, 404);

    // On the API port: a key is needed.
    let anonymous = Client {
        addr: h.server.addr,
        key: None,
    };
    assert_eq!(anonymous.raw("GET", "/metrics", None).status, 401);
    assert_eq!(h.client().raw("GET", "/metrics", None).status, 200);

    for u in 0..10 {
        h.register(&format!("m{u}"), &[common::token(100 + u)]);
    }
    let mut ids = Vec::new();
    for i in 0..30u64 {
        ids.push(h.notify_accepted(&format!("m{}", i % 10), &format!("k{i}"), json!({})));
    }
    // A duplicate, a refusal and a batch with one refused item.
    assert_eq!(
        h.notify(json!({"user_id": "m0", "idempotency_key": "k0", "body": "x"}))
            .status,
        202
    );
    assert_eq!(
        h.notify(json!({"user_id": "m0", "body": "no key"})).status,
        400
    );
    let r = h.client().call(
        "POST",
        "/v1/notifications/batch",
        Some(json!({"notifications": [
            {"user_id": "m1", "idempotency_key": "b1", "body": "x"},
            {"user_id": "nobody", "idempotency_key": "b2", "body": "x"},
        ]})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    h.wait_all_sent(&ids, Duration::from_secs(20));

    let after = open.raw("GET", "/metrics", None);
    promtool_check(&after.text);
    let t = &after.text;
    assert_eq!(sample(t, "clarion_notifications_accepted_total"), 31.0);
    assert_eq!(sample(t, "clarion_dedup_hits_total"), 1.0);
    assert_eq!(
        sample(
            t,
            "clarion_notifications_refused_total{reason=\"missing_field\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            t,
            "clarion_notifications_refused_total{reason=\"user_not_found\"}"
        ),
        1.0
    );
    assert!(
        sample(
            t,
            "clarion_deliveries_total{channel=\"apns\",outcome=\"sent\"}"
        ) >= 30.0,
        "{t}"
    );
    assert_eq!(
        sample(
            t,
            "clarion_http_requests_total{route=\"/v1/notifications\",status=\"202\"}"
        ),
        31.0
    );
    assert_eq!(
        sample(
            t,
            "clarion_http_requests_total{route=\"/v1/notifications\",status=\"400\"}"
        ),
        1.0
    );
    assert_eq!(sample(t, "clarion_accept_latency_seconds_count"), 32.0);
    assert!(
        sample(
            t,
            "clarion_end_to_end_latency_seconds_count{channel=\"apns\"}"
        ) >= 30.0
    );
    assert!(
        sample(
            t,
            "clarion_provider_request_seconds_count{channel=\"apns\"}"
        ) >= 30.0
    );
    assert!(sample(t, "clarion_log_fsync_seconds_count") >= 1.0);
    assert_eq!(sample(t, "clarion_ready"), 1.0);
    assert_eq!(sample(t, "clarion_shards"), 2.0);
    for shard in 0..2 {
        let series = format!("clarion_queue_depth{{channel=\"apns\",shard=\"{shard}\"}} ");
        assert!(t.lines().any(|l| l.starts_with(&series)), "{series}missing");
        assert_eq!(
            sample(
                t,
                &format!("clarion_queue_depth{{channel=\"apns\",shard=\"{shard}\"}}")
            ),
            0.0,
            "everything was sent"
        );
    }
}

#[test]
fn queue_depth_oldest_age_and_retries_show_a_provider_outage() {
    let faults = Faults {
        unavailable_rate: 1.0,
        ..Faults::default()
    };
    let h = common::start(1, faults, "");
    h.register("o1", &[common::token(7)]);
    for i in 0..5 {
        h.notify_accepted("o1", &format!("o{i}"), json!({}));
    }
    let c = h.client();
    let moved = common::wait_for(Duration::from_secs(20), || {
        let t = c.raw("GET", "/metrics", None).text;
        (sample(&t, "clarion_delivery_retries_total{channel=\"apns\"}") >= 1.0
            && sample(
                &t,
                "clarion_queue_oldest_age_seconds{channel=\"apns\",shard=\"0\"}",
            ) > 0.0)
            .then_some(t)
    })
    .expect("retries and the queue's age show");
    assert_eq!(
        sample(&moved, "clarion_queue_depth{channel=\"apns\",shard=\"0\"}"),
        5.0,
        "{moved}"
    );
    promtool_check(&moved);
}
