//! `/healthz` covers every shard, and a shard that cannot start stops the server. A shard
//! whose log had failed answered `503` to everything it owned, forever, while `/healthz` said
//! `200`; and a shard that failed to start left the others serving without it.
mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

/// A small tmpfs, unmounted (lazily) on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    /// Mounts one, or says why not (it needs root, or CAP_SYS_ADMIN).
    fn mount(at: &Path, size: &str) -> Result<SmallDisk, String> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(SmallDisk(at.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Users owned by shard `shard` of two.
fn users_of(shard: u32, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("user-{i}"))
        .filter(|u| clarion_shards::shard_for_user(u, 2) == shard)
        .take(n)
        .collect()
}

#[test]
fn a_shard_whose_log_failed_turns_healthz_503_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    // Shard 1's database (and its trash, which hard-links into it) on a 2 MiB disk of its own.
    let disk = match SmallDisk::mount(&dir.path().join("disk"), "2m") {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED: cannot mount a tmpfs here ({why}); run as root");
            return;
        }
    };
    let shards = dir.path().join("data/shards");
    std::fs::create_dir_all(&shards).unwrap();
    for name in ["01", "01.trash"] {
        std::fs::create_dir_all(disk.0.join(name)).unwrap();
        std::os::unix::fs::symlink(disk.0.join(name), shards.join(name)).unwrap();
    }
    let h = common::start_in(dir, 2, |_| {}, "");
    let healthz = |h: &common::Harness| {
        common::http::Client {
            addr: h.server.addr,
            key: None,
        }
        .raw("GET", "/healthz", None)
    };
    let ok = healthz(&h);
    assert_eq!((ok.status, &ok.body["shards"]), (200, &json!(2)));

    // Fill shard 1's disk: its log fails, and it answers 503 from then on.
    let users = users_of(1, 20);
    for u in &users {
        h.register(u, &[common::token(7)]);
    }
    let c = h.client();
    let mut refused = None;
    for round in 0..200 {
        let items: Vec<_> = (0..500)
            .map(|i| {
                json!({
                    "user_id": users[i % users.len()],
                    "idempotency_key": format!("fill-{round}-{i}"),
                    "body": "x".repeat(200),
                })
            })
            .collect();
        let r = c.call(
            "POST",
            "/v1/notifications/batch",
            Some(json!({ "notifications": items })),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        if let Some(e) = r.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["status"] == 503)
        {
            refused = Some(e.clone());
            break;
        }
    }
    let refused = refused.expect("shard 1's disk filled up");
    eprintln!("shard 1 refused: {refused}");

    let r = healthz(&h);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "shard_failed", "{}", r.body);
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("shard 1 failed"), "{message}");
    assert!(!message.contains("shard 0"), "{message}");
    assert_eq!(r.body["shards"][1]["state"], "failed");
    assert_eq!(r.body["shards"][0]["state"], "serving");
    drop(h);
    drop(disk);
}

/// Runs the server with `config` until it exits (bounded); its exit code and log.
fn run_to_exit(dir: &Path, config: &str) -> (Option<i32>, String) {
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_clarion"))
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("clarion kept running with a shard that could not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    (status.code(), log)
}

fn config(dir: &Path, listen: &str) -> String {
    format!(
        "listen = \"{listen}\"\ndata_dir = \"{}\"\nshards = 2\n\n[api]\nkeys = [\"{}\"]\n",
        dir.join("data").display(),
        common::API_KEY
    )
}

#[test]
fn a_shard_that_cannot_start_stops_the_server_with_a_clear_error() {
    // Its listener cannot bind: the port is held without SO_REUSEPORT.
    let dir = tempfile::tempdir().unwrap();
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let (code, log) = run_to_exit(dir.path(), &config(dir.path(), &addr));
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains(&format!("binding {addr}")), "{log}");
    assert!(log.contains("the server stops"), "{log}");
    assert!(!log.contains("clarion started"), "{log}");

    // Its log cannot be opened: shard 1's database directory is a file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data/shards")).unwrap();
    std::fs::write(dir.path().join("data/shards/01"), b"not a database").unwrap();
    let (code, log) = run_to_exit(dir.path(), &config(dir.path(), "127.0.0.1:0"));
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("shard 1"), "{log}");
}
