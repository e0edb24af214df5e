//! Dead letters over real sockets (issue 13, item 6): an FCM or Web Push delivery whose
//! provider keeps failing runs out of attempts, is `dead`, and is listed by
//! `GET /v1/dead-letters`; once the provider recovers, a replay (sent twice at once) queues it
//! once and it is delivered once. Deliveries held behind a configuration fault (a channel that
//! is off) go dead after `config_fault_dead_after_seconds` without an attempt, stay findable
//! past the retention sweep, are held that long again when replayed, and are purged; the same
//! calls through `clarion dead-letters`.
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use clarion_sim::apns::Faults;
use clarion_sim::fcm::{self, FcmFaults, FcmSimConfig};
use clarion_sim::webpush::{self, WebPushFaults};
use serde_json::{Value, json};

/// Three attempts, 50 to 400 ms apart (the harness's backoff): a failing delivery dies fast.
const FEW_ATTEMPTS: &str = "max_attempts = 3\n";

/// The dead letters the list shows for `query`, once there are `n`.
fn wait_letters(h: &common::Harness, query: &str, n: usize) -> Vec<Value> {
    common::wait_for(Duration::from_secs(30), || {
        let r = h
            .client()
            .call("GET", &format!("/v1/dead-letters{query}"), None);
        assert_eq!(r.status, 200, "{}", r.body);
        let items = r.body["dead_letters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (items.len() >= n).then_some(items)
    })
    .unwrap_or_else(|| panic!("{n} dead letters did not appear for {query}"))
}

/// Replays `ids` with two requests at once; the sum of their `replayed`.
fn replay_twice_at_once(h: &common::Harness, ids: &[String]) -> u64 {
    let body = json!({ "delivery_ids": ids });
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (c, body) = (h.client(), body.clone());
            std::thread::spawn(move || c.call("POST", "/v1/dead-letters/replay", Some(body)))
        })
        .collect();
    threads
        .into_iter()
        .map(|t| {
            let r = t.join().unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
            r.body["replayed"].as_u64().unwrap()
        })
        .sum()
}

/// Checks a listed letter of a delivery that ran out of attempts against its notification.
fn check_letter(letter: &Value, status: &Value, channel: &str, device_id: &str) {
    let d = &status["deliveries"][0];
    assert_eq!(d["state"], "dead", "{status}");
    assert_eq!(letter["delivery_id"], d["id"], "{letter}");
    assert_eq!(letter["notification_id"], status["id"], "{letter}");
    assert_eq!(letter["user_id"], status["user_id"], "{letter}");
    assert_eq!(letter["channel"], channel, "{letter}");
    assert_eq!(letter["device_id"], device_id, "{letter}");
    assert_eq!(letter["reason"], "retries_exhausted", "{letter}");
    assert_eq!(letter["attempts"], 3, "{letter}");
    assert!(
        letter["error"].as_str().unwrap().contains("503"),
        "the last error: {letter}"
    );
    assert!(
        letter["dead_at"].as_str().unwrap().ends_with('Z'),
        "{letter}"
    );
}

/// After a replay: sent, attempts counted afresh, the dead part of its history kept.
fn check_replayed(status: &Value) {
    let d = &status["deliveries"][0];
    assert_eq!(
        (d["state"].as_str(), d["attempts"].as_u64()),
        (Some("sent"), Some(1)),
        "{status}"
    );
    let states = common::history_states(d);
    let dead_at = states
        .iter()
        .position(|s| *s == "dead")
        .expect("history kept");
    assert_eq!(&states[dead_at..], ["dead", "queued", "sent"], "{status}");
    let replayed = &d["history"][dead_at + 1];
    assert_eq!(
        replayed["reason"], "replayed from the dead letters",
        "{status}"
    );
}

#[test]
fn an_fcm_delivery_that_keeps_failing_is_dead_listed_and_delivered_once_after_replay() {
    let mut cfg = FcmSimConfig::builtin("127.0.0.1:0".parse().unwrap()).unwrap();
    cfg.project_id = "clarion-test".into();
    cfg.faults = FcmFaults {
        outage: true,
        ..FcmFaults::default()
    };
    let sim = fcm::start(cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{FEW_ATTEMPTS}{}", common::fcm_section(&sim, dir.path()));
    let h = common::start_in(dir, 2, |c| c.faults = Faults::default(), &extra);
    h.register("fay", &[]);
    h.add_device(
        "fay",
        json!({"platform": "android", "token": "fcm-token:F1"}),
    );
    let id = h.notify_accepted("fay", "n1", json!({}));

    let letters = wait_letters(&h, "?channel=fcm", 1);
    assert_eq!(letters.len(), 1);
    check_letter(&letters[0], &h.status(&id), "fcm", "fcm-token:F1");
    assert!(
        wait_letters(&h, "?channel=webpush", 0).is_empty(),
        "filtered by channel"
    );
    let stats = h.client().call("GET", "/v1/stats", None).body;
    assert_eq!(stats["total"]["by_channel"]["fcm"]["dead"], 1, "{stats}");

    let mut faults = sim.faults();
    faults.outage = false;
    sim.set_faults(faults);
    let delivery = letters[0]["delivery_id"].as_str().unwrap().to_string();
    assert_eq!(replay_twice_at_once(&h, &[delivery]), 1, "queued once");
    let s = h.wait_finished(&id, Duration::from_secs(20));
    check_replayed(&s);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sim.received("fcm-token:F1"), 1, "delivered once");
    assert!(
        wait_letters(&h, "", 0).is_empty(),
        "the letter went with the replay"
    );
    let stats = h.client().call("GET", "/v1/stats", None).body;
    assert_eq!(stats["total"]["replayed"], 1, "{stats}");
}

#[test]
fn a_web_push_delivery_that_keeps_failing_is_dead_listed_and_delivered_once_after_replay() {
    let faults = WebPushFaults {
        outage: true,
        ..WebPushFaults::default()
    };
    let sim = webpush::start("127.0.0.1:0".parse().unwrap(), faults).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{FEW_ATTEMPTS}{}",
        common::webpush_section(&sim, dir.path())
    );
    let h = common::start_in(dir, 2, |c| c.faults = Faults::default(), &extra);
    h.register("wes", &[]);
    let sub = sim.subscribe().unwrap();
    let device_id = h.add_device("wes", json!({"platform": "web", "subscription": sub.json}));
    let id = h.notify_accepted("wes", "n1", json!({"data": {"url": "/x"}}));

    let letters = wait_letters(&h, "?reason=retries_exhausted", 1);
    assert_eq!(letters.len(), 1);
    check_letter(&letters[0], &h.status(&id), "webpush", &device_id);

    let mut faults = sim.faults();
    faults.outage = false;
    sim.set_faults(faults);
    // By filter this time: every Web Push letter.
    let r = h.client().call(
        "POST",
        "/v1/dead-letters/replay",
        Some(json!({"channel": "webpush"})),
    );
    assert_eq!(
        (r.status, r.body["replayed"].as_u64()),
        (200, Some(1)),
        "{}",
        r.body
    );
    let r = h.client().call(
        "POST",
        "/v1/dead-letters/replay",
        Some(json!({"channel": "webpush"})),
    );
    assert_eq!(r.body["replayed"], 0, "nothing left to replay: {}", r.body);
    let s = h.wait_finished(&id, Duration::from_secs(20));
    check_replayed(&s);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sim.received(&sub.id), 1, "delivered once");
}

/// `clarion dead-letters <args>` against the harness's server: its exit status and stdout.
fn cli(h: &common::Harness, args: &[&str]) -> (bool, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_clarion"))
        .arg("dead-letters")
        .args(args)
        .args(["--server", &format!("http://{}", h.server.addr)])
        .env("CLARION_API_KEY", common::API_KEY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let body = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.success(), body)
}

#[test]
fn deliveries_held_behind_a_configuration_fault_go_dead_stay_past_retention_and_are_purged() {
    // No [fcm] section: FCM is off. APNs delivers as usual.
    let h = common::start(
        2,
        Faults::default(),
        "config_fault_dead_after_seconds = 1\n[storage]\nretention_seconds = 1\ndedup_window_seconds = 1\n",
    );
    h.register("ola", &[common::token(1)]);
    h.add_device(
        "ola",
        json!({"platform": "android", "token": "fcm-token:O1"}),
    );
    let id = h.notify_accepted("ola", "n1", json!({}));

    let letters = wait_letters(&h, "?reason=config_fault", 1);
    assert_eq!(letters.len(), 1);
    let l = &letters[0];
    assert_eq!(
        (l["channel"].as_str(), l["attempts"].as_u64()),
        (Some("fcm"), Some(0)),
        "{l}"
    );
    assert!(
        l["error"]
            .as_str()
            .unwrap()
            .starts_with("configuration fault for over 1 s: fcm is off"),
        "{l}"
    );
    let s = h.wait_finished(&id, Duration::from_secs(10));
    let states: Vec<&str> = s["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["sent", "dead"], "APNs delivered, FCM dead: {s}");

    // The retention sweep (every quarter of a second here) keeps it while its letter is kept.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        h.status(&id)["id"],
        id.as_str(),
        "still findable past retention"
    );

    let (ok, listed) = cli(&h, &["list", "--channel", "fcm", "--limit", "10"]);
    assert!(ok, "{listed}");
    assert_eq!(
        listed["dead_letters"][0]["delivery_id"], l["delivery_id"],
        "{listed}"
    );
    assert_eq!(listed["next_cursor"], Value::Null, "{listed}");
    // Replayed while FCM is still off, it is held again for the full second before it dies.
    let replayed_at = Instant::now();
    let (ok, replayed) = cli(&h, &["replay", "--reason", "config_fault"]);
    assert!(ok, "{replayed}");
    assert_eq!(replayed["replayed"], 1, "{replayed}");
    wait_letters(&h, "?reason=config_fault", 1);
    assert!(
        replayed_at.elapsed() >= Duration::from_millis(900),
        "dead again only a full second after the replay: {:?}",
        replayed_at.elapsed()
    );
    let (ok, refused) = cli(&h, &["purge"]);
    assert!(!ok, "a purge must say which letters: {refused}");
    let (ok, purged) = cli(&h, &["purge", "--reason", "config_fault"]);
    assert!(ok, "{purged}");
    assert_eq!(purged["purged"], 1, "{purged}");
    assert!(wait_letters(&h, "", 0).is_empty());
    let gone = common::wait_for(Duration::from_secs(10), || {
        (h.client()
            .call("GET", &format!("/v1/notifications/{id}"), None)
            .status
            == 404)
            .then_some(())
    });
    assert!(gone.is_some(), "swept once its letter was purged");
}

#[test]
fn a_long_list_pages_newest_first_with_its_cursor() {
    let h = common::start(
        2,
        Faults::default(),
        "config_fault_dead_after_seconds = 1\n",
    );
    // Users on both shards, each with an Android device FCM (off) never takes.
    let users: Vec<String> = (0..6).map(|i| format!("pager-{i}")).collect();
    let mut ids = Vec::new();
    for u in &users {
        h.register(u, &[]);
        h.add_device(
            u,
            json!({"platform": "android", "token": format!("tok-{u}")}),
        );
        ids.push(h.notify_accepted(u, "n", json!({})));
    }
    wait_letters(&h, "", users.len());
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let q = match &cursor {
            Some(c) => format!("?limit=4&cursor={c}"),
            None => "?limit=4".to_string(),
        };
        let r = h
            .client()
            .call("GET", &format!("/v1/dead-letters{q}"), None);
        assert_eq!(r.status, 200, "{}", r.body);
        for l in r.body["dead_letters"].as_array().unwrap() {
            seen.push((
                l["dead_at"].as_str().unwrap().to_string(),
                l["notification_id"].as_str().unwrap().to_string(),
            ));
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first across pages and shards");
    let mut got: Vec<&String> = seen.iter().map(|(_, n)| n).collect();
    got.sort();
    let mut want: Vec<&String> = ids.iter().collect();
    want.sort();
    assert_eq!(got, want, "each letter once");
    let r = h.client().call("GET", "/v1/dead-letters?cursor=nope", None);
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (400, Some("invalid_cursor"))
    );
}
