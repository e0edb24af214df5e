//! Shared integration-test harness: an in-process APNs simulator (HTTP/2 + TLS, real JWT
//! checks) and the real `clarion` binary configured to deliver to it.
#![allow(dead_code)]

pub mod disk;
pub mod http;
pub mod server;

use std::time::Duration;

use clarion_sim::apns::{Faults, SimConfig, SimHandle, Simulator, generate_apns_key};
use serde_json::{Value, json};

#[allow(unused_imports)] // each test binary uses a different subset
pub use server::{API_KEY, Server, wait_for};

pub const TEAM_ID: &str = "TEAM000001";
pub const KEY_ID: &str = "KEY0000001";
pub const TOPIC: &str = "com.example.app";

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub sim: SimHandle,
    pub server: Server,
}

/// Deterministic 64-hex device token number `i`.
pub fn token(i: u64) -> String {
    format!(
        "{:016x}{:016x}{:016x}{:016x}",
        i,
        i ^ 0xdead_beef,
        i.wrapping_mul(31),
        0xabcdu64
    )
}

/// Starts the simulator with `faults`, then the server with `shards` shards delivering to it.
pub fn start(shards: usize, faults: Faults, extra_toml: &str) -> Harness {
    start_with(shards, |cfg| cfg.faults = faults, extra_toml)
}

/// Like `start`, with full control of the simulator's configuration.
pub fn start_with(shards: usize, sim: impl FnOnce(&mut SimConfig), extra_toml: &str) -> Harness {
    start_in(tempfile::tempdir().unwrap(), shards, sim, extra_toml)
}

/// Like `start_with`, in a directory the test has prepared (its data directory is `dir/data`).
/// Like `start`, for a server whose API serves TLS: not waited for over plain HTTP.
pub fn start_tls(shards: usize, faults: Faults, extra_toml: &str) -> Harness {
    start_inner(
        tempfile::tempdir().unwrap(),
        shards,
        |cfg| cfg.faults = faults,
        extra_toml,
        false,
    )
}

pub fn start_in(
    dir: tempfile::TempDir,
    shards: usize,
    sim: impl FnOnce(&mut SimConfig),
    extra_toml: &str,
) -> Harness {
    start_inner(dir, shards, sim, extra_toml, true)
}

fn start_inner(
    dir: tempfile::TempDir,
    shards: usize,
    sim: impl FnOnce(&mut SimConfig),
    extra_toml: &str,
    wait: bool,
) -> Harness {
    let (private_pem, public_pem) = generate_apns_key().unwrap();
    let mut cfg = SimConfig::new(TEAM_ID, KEY_ID, &public_pem, TOPIC);
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    sim(&mut cfg);
    let sim = Simulator::start(cfg).expect("simulator starts");
    std::fs::write(dir.path().join("apns.p8"), private_pem).unwrap();
    std::fs::write(dir.path().join("ca.pem"), sim.ca_pem()).unwrap();
    let toml = format!(
        "[apns]\nendpoint = \"https://{}\"\nteam_id = \"{TEAM_ID}\"\nkey_id = \"{KEY_ID}\"\nkey_file = \"{}\"\ntopic = \"{TOPIC}\"\nconnections = 2\nca_file = \"{}\"\n\n[delivery]\nbackoff_base_ms = 50\nbackoff_max_ms = 400\nshutdown_grace_ms = 2000\n{extra_toml}\n",
        sim.addr(),
        dir.path().join("apns.p8").display(),
        dir.path().join("ca.pem").display(),
    );
    let server = if wait {
        Server::start(dir.path(), shards, &toml)
    } else {
        Server::start_unwaited(dir.path(), shards, &toml)
    };
    Harness { dir, sim, server }
}

impl Harness {
    pub fn client(&self) -> http::Client {
        self.server.client()
    }

    /// Registers a user with the given device tokens.
    pub fn register(&self, user: &str, tokens: &[String]) {
        let c = self.client();
        let r = c.call(
            "PUT",
            &format!("/v1/users/{user}"),
            Some(json!({"email": "u@example.com", "locale": "en-US"})),
        );
        assert!(
            r.status == 200 || r.status == 201,
            "PUT user: {} {}",
            r.status,
            r.body
        );
        for t in tokens {
            let r = c.call(
                "POST",
                &format!("/v1/users/{user}/devices"),
                Some(json!({"platform": "ios", "token": t})),
            );
            assert!(
                r.status == 200 || r.status == 201,
                "POST device: {} {}",
                r.status,
                r.body
            );
        }
    }

    pub fn notify(&self, body: Value) -> http::Response {
        self.client().call("POST", "/v1/notifications", Some(body))
    }

    /// Sends `{"user_id","idempotency_key","title":"Hi","body":"there"}` with `extra`'s fields
    /// besides; asserts `202` and returns the id.
    pub fn notify_accepted(&self, user: &str, key: &str, extra: Value) -> String {
        let mut body =
            json!({"user_id": user, "idempotency_key": key, "title": "Hi", "body": "there"});
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        let r = self.notify(body);
        assert_eq!(r.status, 202, "{}", r.body);
        r.body["id"].as_str().unwrap().to_string()
    }

    /// Waits until each of `ids` is finished and asserts every delivery of it was sent.
    pub fn wait_all_sent(&self, ids: &[String], timeout: Duration) {
        for id in ids {
            let s = self.wait_finished(id, timeout);
            let deliveries = s["deliveries"].as_array().cloned().unwrap_or_default();
            assert!(deliveries.iter().all(|d| d["state"] == "sent"), "{s}");
        }
    }

    /// Waits (at most `timeout`) until the APNs simulator has received every `lt_seq` below
    /// `total`, and asserts each arrived exactly once.
    pub fn assert_each_delivered_once(&self, total: u64, timeout: Duration) {
        let ledger = wait_for(timeout, || {
            let l = self.sim.ledger();
            (0..total).all(|s| l.count(s) >= 1).then_some(l)
        })
        .expect("every accepted notification delivered");
        assert!(
            (0..total).all(|s| ledger.count(s) == 1),
            "each delivered once, never twice"
        );
    }

    /// Registers `device` (a registration body) for `user`; asserts `201` and returns its
    /// `device_id`.
    pub fn add_device(&self, user: &str, device: Value) -> String {
        let r = self
            .client()
            .call("POST", &format!("/v1/users/{user}/devices"), Some(device));
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["device_id"].as_str().unwrap().to_string()
    }

    pub fn status(&self, id: &str) -> Value {
        let r = self
            .client()
            .call("GET", &format!("/v1/notifications/{id}"), None);
        assert_eq!(r.status, 200, "status of {id}: {}", r.body);
        r.body
    }

    /// From now on the simulator answers `410 Unregistered` for `tokens` (other faults as
    /// they were), with now as Apple's timestamp: after every registration so far, so the
    /// server deactivates those devices unless they register again later. Sleeps a few ms on
    /// each side so that the millisecond clocks of both order the times strictly.
    pub fn unregister(&self, tokens: &[&String]) {
        std::thread::sleep(Duration::from_millis(20));
        let mut faults = self.sim.faults();
        faults
            .unregistered_tokens
            .extend(tokens.iter().map(|t| (*t).clone()));
        self.sim.set_faults(faults);
        std::thread::sleep(Duration::from_millis(20));
    }

    /// Waits until every delivery of the notification is in a terminal state.
    pub fn wait_finished(&self, id: &str, timeout: Duration) -> Value {
        wait_for(timeout, || {
            let s = self.status(id);
            (s["state"] == "finished").then_some(s)
        })
        .unwrap_or_else(|| panic!("notification {id} did not finish: {}", self.status(id)))
    }
}

/// The `[fcm]` section that sends to `sim` (project `clarion-test`), with the service account
/// and the simulator's CA written into `dir`.
pub fn fcm_section(sim: &clarion_sim::fcm::FcmSimHandle, dir: &std::path::Path) -> String {
    let sa = dir.join("service-account.json");
    let key = clarion_sim::fcm::SIMULATOR_SERVICE_ACCOUNT_KEY_PEM;
    std::fs::write(&sa, sim.service_account_json(key)).unwrap();
    let ca = dir.join("fcm-ca.pem");
    std::fs::write(&ca, sim.ca_pem()).unwrap();
    format!(
        "[fcm]\nproject_id = \"clarion-test\"\nservice_account_file = \"{}\"\nendpoint = \"{}\"\nca_file = \"{}\"\n",
        sa.display(),
        sim.endpoint(),
        ca.display()
    )
}

/// The `[webpush]` section that trusts `sim`'s CA (written into `dir`).
pub fn webpush_section(
    sim: &clarion_sim::webpush::WebPushSimHandle,
    dir: &std::path::Path,
) -> String {
    let ca = dir.join("webpush-ca.pem");
    std::fs::write(&ca, sim.ca_pem()).unwrap();
    format!(
        "[webpush]\nsubject = \"mailto:ops@example.com\"\nca_file = \"{}\"\n",
        ca.display()
    )
}

/// The device `device_id` in a user's record (`GET /v1/users/{id}`).
pub fn device<'a>(user: &'a Value, device_id: &str) -> &'a Value {
    find_by_device(&user["devices"], device_id)
        .unwrap_or_else(|| panic!("no device {device_id} in {user}"))
}

/// The delivery to `device_id` in a notification's status (`GET /v1/notifications/{id}`).
pub fn delivery<'a>(status: &'a Value, device_id: &str) -> &'a Value {
    find_by_device(&status["deliveries"], device_id)
        .unwrap_or_else(|| panic!("no delivery to {device_id} in {status}"))
}

fn find_by_device<'a>(list: &'a Value, device_id: &str) -> Option<&'a Value> {
    list.as_array()?
        .iter()
        .find(|d| d["device_id"] == device_id)
}

/// The states a delivery went through, in order.
pub fn history_states(delivery: &Value) -> Vec<String> {
    delivery["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|e| e["state"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}
