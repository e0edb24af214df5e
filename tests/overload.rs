//! Overload: about three times what the server can take, open loop, for a few seconds. The
//! excess is answered quickly with `503 overloaded` and `Retry-After` (before its body is
//! parsed), what is admitted keeps a bounded accept latency, the server's memory stays bounded,
//! every `202` is delivered exactly once, and once the load drops to a normal rate every request
//! succeeds again with a normal latency. The long form (a minute at three times this machine's
//! sustainable rate, release build) is `clarion-loadtest bench ... --then-rate` (RELIABILITY.md).
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use clarion_loadtest::load::{LoadConfig, LoadReport, Protocol, SimLink, run};
use clarion_sim::apns::Faults;
use clarion_sim::histogram::LatencySummary;
use serde_json::Value;

/// Offered during the overload, notifications per second in batches of 100: about three times
/// what the build takes on this 2-core VM with the load generator beside it. A debug build
/// takes about 10,000/s (measured: 12,900/s accepted out of 24,000/s offered); the release
/// build the suite runs about 30,000/s.
const OVERLOAD_RATE: f64 = if cfg!(debug_assertions) {
    30_000.0
} else {
    90_000.0
};
const OVERLOAD: Duration = Duration::from_secs(8);
/// The normal load after it: a fifth of what the debug build takes.
const NORMAL_RATE: f64 = 2_000.0;
const NORMAL: Duration = Duration::from_secs(3);
const USERS: u32 = 1_000;

/// Refusals must come fast: their median well under the admitted requests' (measured 7–21 ms
/// against 47–142 ms), their p99 within this. Measured from each request's intended send time,
/// so it includes the wait for the overloaded core to read the request (53–182 ms seen, the
/// higher with other work on the machine: load average 5).
const REFUSAL_P99_BOUND_MS: f64 = 500.0;
/// Admitted requests' p99 accept latency during the overload (238–351 ms seen on a quiet
/// machine, 742 ms at load average 5). Without admission control it grew by about 150 ms
/// every second at only twice the debug build's capacity (1 s after 6 s), so it would be
/// several seconds here; the test also requires that it does not grow over the run.
const ADMITTED_P99_BOUND_MS: f64 = 1500.0;
/// Growth of the server's resident memory over the overload (59–154 MiB seen): mostly the
/// two shards' fjall memtables filling (up to 20 MiB each, and 8 and 4 MiB of two others), plus bodies and answers in flight.
const RSS_GROWTH_BOUND_MIB: u64 = 320;
/// After the overload, at the normal rate (14-29 ms seen).
const RECOVERED_P99_BOUND_MS: f64 = 100.0;
/// Normal windows tried after the overload; the server must be normal in one of them.
const RECOVERY_WINDOWS: usize = 2;

fn load(h: &common::Harness, rate: f64, duration: Duration, seq_start: u64) -> LoadReport {
    let cfg = LoadConfig {
        target: h.server.addr,
        api_key: common::API_KEY.to_string(),
        protocol: Protocol::H2,
        connections: 4,
        users: USERS,
        rate,
        duration,
        batch: 100,
        seq_start,
        register: seq_start == 0,
        reset_sim: seq_start == 0,
        drain_timeout: Duration::from_secs(60),
        worker_threads: 2,
        ..LoadConfig::default()
    };
    run(&cfg, SimLink::InProcess(&h.sim)).expect("load run")
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn stats(h: &common::Harness) -> Value {
    let r = h.client().call("GET", "/v1/stats", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["total"].clone()
}

/// Every 202 reached the simulator exactly once, and nothing else did.
fn assert_delivered(r: &LoadReport, phase: &str) {
    let l = r.ledger.as_ref().expect("ledger checked");
    assert!(l.drained, "{phase}: not drained: {l:?}");
    assert_eq!(l.accepted, r.accepted, "{phase}: {l:?}");
    assert_eq!(
        (l.lost, l.short, l.duplicated, l.unexpected),
        (0, 0, 0, 0),
        "{phase}: {l:?}"
    );
}

#[test]
fn three_times_the_sustainable_rate_is_shed_fast_and_the_server_recovers() {
    let h = common::start(2, Faults::default(), "");
    let pid = h.server.child.as_ref().expect("running").id();
    // A first, gentle run registers the users and warms the server up.
    let warm = load(&h, NORMAL_RATE, Duration::from_secs(1), 0);
    assert_eq!(warm.notification_status.get(&202), Some(&warm.scheduled));
    let base_rss = rss_kib(pid);

    let peak = Arc::new(AtomicU64::new(base_rss));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // Beside the load, batches of 100 over HTTP/1.1 (about 16 KB, more than the guaranteed rate
    // lends at once): their refusals are read in full. Singles at this trickle would pass on the
    // core's guaranteed rate (`GUARANTEED_BYTES_PER_S`), as a normal intake should.
    let prober = {
        let (done, addr) = (done.clone(), h.server.addr);
        std::thread::spawn(move || {
            let c = common::http::Client::new(addr, common::API_KEY);
            let mut answers = Vec::new();
            let mut i = 0;
            while !done.load(Ordering::Relaxed) {
                let items: Vec<_> = (0..100)
                    .map(|j| {
                        serde_json::json!({"user_id": "lt-u0",
                            "idempotency_key": format!("probe-{i}-{j}"),
                            "body": "a probe of the overload, about as long as a real notification's text"})
                    })
                    .collect();
                let body = serde_json::json!({ "notifications": items });
                answers.push(c.call("POST", "/v1/notifications/batch", Some(body)));
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            answers
        })
    };
    let over = load(&h, OVERLOAD_RATE, OVERLOAD, warm.next_seq);
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let probes = prober.join().expect("prober");
    let probe_refusals: Vec<_> = probes.iter().filter(|r| r.status == 503).collect();
    assert!(
        probes
            .iter()
            .all(|r| r.status == 200 || r.status == 202 || r.status == 503),
        "probe batches answered 2xx or 503"
    );
    assert!(
        !probe_refusals.is_empty(),
        "some of {} probe batches refused",
        probes.len()
    );
    for r in &probe_refusals {
        assert_eq!(r.body["error"]["code"], "overloaded", "{}", r.body);
        assert_eq!(r.header("retry-after"), Some("1"), "{}", r.body);
    }
    let peak_rss = peak.load(Ordering::Relaxed);
    let during = stats(&h);

    let (admitted, rejected) = (
        LatencySummary::of(&over.accept_latency_us),
        LatencySummary::of(&over.rejected_latency_us),
    );
    let refused = over.http_status.get(&503).copied().unwrap_or(0);
    let requests = over.completed_requests;
    eprintln!(
        "overload: {} requests, {} answered 503 (shed_overload {}, rejected_overload {}), \
         accepted {} ({:.0}/s); admitted accept p50/p99/max {:.1}/{:.1}/{:.1} ms; 503 p50/p99/max \
         {:.1}/{:.1}/{:.1} ms; RSS {} → peak {} MiB; statuses {:?}; load generator's send lag p99 {:.1} ms",
        requests,
        refused,
        during["shed_overload"],
        during["rejected_overload"],
        over.accepted,
        over.achieved_rate,
        admitted.p50_ms,
        admitted.p99_ms,
        admitted.max_ms,
        rejected.p50_ms,
        rejected.p99_ms,
        rejected.max_ms,
        base_rss / 1024,
        peak_rss / 1024,
        over.notification_status,
        over.send_lag_us.value_at_quantile(0.99) as f64 / 1000.0,
    );
    // Everything was answered: shed or served, nothing timed out or broke.
    assert_eq!(requests, over.sent_requests, "every request answered");
    assert_eq!((over.timeouts, over.transport_errors), (0, 0));
    // The excess was refused, a real share of it, by admission control, with Retry-After.
    assert!(
        refused * 5 >= requests,
        "at least a fifth of the requests refused: {refused} of {requests}"
    );
    assert!(
        during["shed_overload"].as_u64().expect("shed_overload")
            >= refused + probe_refusals.len() as u64,
        "{during}"
    );
    let r = h
        .client()
        .call("GET", "/v1/notifications/not-an-id", None)
        .status;
    assert_eq!(r, 400, "the server still answers other calls");
    // ... while what was admitted was served at a useful rate.
    assert!(
        over.achieved_rate >= OVERLOAD_RATE / 10.0,
        "admitted {:.0}/s",
        over.achieved_rate
    );
    // Refusals are fast; admitted requests keep a bounded latency.
    assert!(
        rejected.p50_ms * 2.0 <= admitted.p50_ms,
        "503 p50 {} ms against admitted p50 {} ms",
        rejected.p50_ms,
        admitted.p50_ms
    );
    let refusal_p99 = rejected.p99_ms;
    assert!(
        refusal_p99 <= REFUSAL_P99_BOUND_MS,
        "503 p99 {refusal_p99} ms"
    );
    let admitted_p99 = admitted.p99_ms;
    assert!(
        admitted_p99 <= ADMITTED_P99_BOUND_MS,
        "admitted p99 {admitted_p99} ms"
    );
    // ... and it does not grow with time, as a queue would: the worst of each second in the
    // run's second half is no worse than in its first half (onset included), give or take.
    let worst = &over.accept_worst_by_second_us;
    let half = worst.len() / 2;
    let mean = |w: &[u64]| w.iter().sum::<u64>() as f64 / w.len().max(1) as f64 / 1000.0;
    let (first, second) = (mean(&worst[..half]), mean(&worst[half..]));
    assert!(
        second <= 1.5 * first + 100.0,
        "admitted latency grew: worst by second {worst:?} µs"
    );
    // Memory stays bounded.
    assert!(
        peak_rss.saturating_sub(base_rss) <= RSS_GROWTH_BOUND_MIB << 10,
        "RSS grew from {} to {} MiB",
        base_rss >> 10,
        peak_rss >> 10
    );
    // Every 202 was delivered, once.
    assert_delivered(&over, "overload");

    // The load drops: normal requests succeed with a normal latency. One window of this
    // trickle is 60 requests, so its p99 is its slowest request, and one fsync stall of the
    // disk (278 ms seen once in CI, against 14-29 ms otherwise) decides it: the server must be
    // back to normal in one of two consecutive windows, which a server still suffering from the
    // overload (a queue draining, memory paging) would not be. Every request of both windows
    // must succeed, and be delivered once.
    let mut seq = over.next_seq;
    let mut windows = Vec::new();
    for _ in 0..RECOVERY_WINDOWS {
        let after = load(&h, NORMAL_RATE, NORMAL, seq);
        seq = after.next_seq;
        let normal = LatencySummary::of(&after.accept_latency_us);
        eprintln!(
            "after: statuses {:?}, accept p50/p99/max {:.1}/{:.1}/{:.1} ms, worst by second {:?} µs",
            after.notification_status,
            normal.p50_ms,
            normal.p99_ms,
            normal.max_ms,
            after.accept_worst_by_second_us,
        );
        assert_eq!(
            after.notification_status.get(&202),
            Some(&after.scheduled),
            "all accepted after the overload: {:?}",
            after.notification_status
        );
        assert_delivered(&after, "after");
        windows.push(normal.p99_ms);
        if normal.p99_ms <= RECOVERED_P99_BOUND_MS {
            break;
        }
    }
    assert!(
        windows.iter().any(|p99| *p99 <= RECOVERED_P99_BOUND_MS),
        "p99 after the overload, by window: {windows:?} ms"
    );
}
