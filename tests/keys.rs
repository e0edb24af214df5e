//! API keys that can be managed: created over the API (`admin` scope) and with `clarion keys`
//! (server running or not), stored hashed in the data directory, each with scopes and an
//! optional rate limit; a revoked key is refused on every shard within a second, without a
//! restart. `401` for a missing or unknown key, `403` for a missing scope.
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use clarion_sim::apns::Faults;
use common::http::Client;
use serde_json::{Value, json};

fn keys_cmd(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_clarion"))
        .arg("keys")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "clarion keys {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Statuses of `n` requests, each on a new connection (so the shards' listeners share them).
fn statuses(c: &Client, method: &str, path: &str, n: usize) -> Vec<u16> {
    (0..n).map(|_| c.raw(method, path, None).status).collect()
}

/// Waits (at most `within`) until every one of 40 fresh connections gets `status`.
fn every_shard_answers(c: &Client, path: &str, status: u16, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = statuses(c, "GET", path, 40);
        if got.iter().all(|s| *s == status) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "not every shard answers {status} on {path} after {within:?}: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn keys_over_the_api_have_scopes_and_are_revoked_on_every_shard_within_a_second() {
    let h = common::start(2, Faults::default(), "");
    let admin = h.client();
    h.register("k1", &[common::token(1)]);

    let anonymous = Client {
        addr: h.server.addr,
        key: None,
    };
    let r = anonymous.raw("GET", "/v1/users/k1", None);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(r.body["error"]["code"], "unauthorized");

    let r = admin.call(
        "POST",
        "/v1/keys",
        Some(json!({"name": "billing", "scopes": ["send", "users:read"]})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["name"], "billing");
    assert_eq!(r.body["scopes"], json!(["send", "users:read"]));
    let key = r.body["key"].as_str().unwrap().to_string();
    let billing = Client::new(h.server.addr, &key);

    // The key is stored hashed, never in clear.
    let file = std::fs::read_to_string(h.server.dir.join("data").join("keys.json")).unwrap();
    assert!(file.contains("billing") && !file.contains(&key), "{file}");

    // Its scopes: send and users:read, nothing else (every shard has it within a second; the
    // shard that made it, before it answered).
    every_shard_answers(&billing, "/v1/users/k1", 200, Duration::from_secs(1));
    let r = billing.call(
        "POST",
        "/v1/notifications",
        Some(json!({"user_id": "k1", "idempotency_key": "b1", "body": "hi"})),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let r = billing.call("PUT", "/v1/users/k2", Some(json!({})));
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "forbidden");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("users:write"),
        "{}",
        r.body
    );
    assert_eq!(billing.raw("GET", "/v1/keys", None).status, 403);
    assert_eq!(billing.raw("GET", "/metrics", None).status, 403);

    // Listed by name with its scopes; the configuration's key as `config:1`.
    let r = admin.call("GET", "/v1/keys", None);
    assert_eq!(r.status, 200);
    let keys = r.body["keys"].as_array().unwrap();
    let names: Vec<&str> = keys.iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["config:1", "billing"], "{}", r.body);
    assert_eq!(keys[0]["source"], "config");
    assert_eq!(keys[1]["source"], "stored");
    assert!(!r.text.contains(&key));

    let r = admin.call(
        "POST",
        "/v1/keys",
        Some(json!({"name": "billing", "scopes": ["send"]})),
    );
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (409, Some("key_exists"))
    );
    let r = admin.call(
        "POST",
        "/v1/keys",
        Some(json!({"name": "x", "scopes": ["root"]})),
    );
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (400, Some("scopes"))
    );
    let r = admin.raw("DELETE", "/v1/keys/config:1", None);
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (409, Some("config_key"))
    );
    assert_eq!(admin.raw("DELETE", "/v1/keys/nobody", None).status, 404);

    // Revoked: refused on every shard within a second.
    let r = admin.raw("DELETE", "/v1/keys/billing", None);
    assert_eq!(r.status, 204);
    let took = every_shard_answers(&billing, "/v1/users/k1", 401, Duration::from_secs(1));
    eprintln!("revocation seen by every shard after {took:?}");
}

#[test]
fn the_command_line_manages_keys_with_the_server_running_or_not() {
    let mut h = common::start(2, Faults::default(), "");
    let data = h.server.dir.join("data");
    let data = data.to_str().unwrap();

    // Running: a key made on the command line works within a second, on every shard.
    let made = keys_cmd(&[
        "create",
        "--data-dir",
        data,
        "--name",
        "scraper",
        "--scopes",
        "metrics",
    ]);
    assert_eq!(made["name"], "scraper");
    let scraper = Client::new(h.server.addr, made["key"].as_str().unwrap());
    every_shard_answers(&scraper, "/metrics", 200, Duration::from_secs(1));
    assert_eq!(scraper.raw("GET", "/v1/users/x", None).status, 403);
    keys_cmd(&["revoke", "--data-dir", data, "scraper"]);
    every_shard_answers(&scraper, "/metrics", 401, Duration::from_secs(1));

    // Stopped: created now, accepted once it starts.
    assert!(h.server.terminate().success());
    let made = keys_cmd(&[
        "create",
        "--data-dir",
        data,
        "--name",
        "sender",
        "--scopes",
        "send,users:write",
        "--rate-limit",
        "4",
    ]);
    let list = keys_cmd(&["list", "--data-dir", data]);
    assert_eq!(list["keys"][0]["name"], "sender");
    assert_eq!(list["keys"][0]["scopes"], json!(["send", "users:write"]));
    assert_eq!(list["keys"][0]["rate_limit_per_s"], 4);
    assert!(!list.to_string().contains(made["key"].as_str().unwrap()));
    h.server.spawn();
    let sender = Client::new(h.server.addr, made["key"].as_str().unwrap());
    let r = sender.call("PUT", "/v1/users/r1", Some(json!({})));
    assert!(r.status == 201 || r.status == 200, "{}", r.body);

    // Its rate limit: 4 requests/s across the 2 shards; a burst past it gets 429s.
    let got: Vec<(u16, Option<String>)> = (0..20)
        .map(|_| {
            let r = sender.call("PUT", "/v1/users/r1", Some(json!({})));
            (r.status, r.header("retry-after").map(str::to_string))
        })
        .collect();
    let limited: Vec<_> = got.iter().filter(|(s, _)| *s == 429).collect();
    assert!(!limited.is_empty(), "{got:?}");
    assert!(limited.iter().all(|(_, ra)| ra.is_some()), "{got:?}");
    assert!(got.iter().all(|(s, _)| *s == 200 || *s == 429), "{got:?}");
}
