//! A bad configuration stops the server before any executor starts, with an error naming the
//! key; `clarion check-config` validates without starting.
use std::process::Command;

fn run(args: &[&str], toml: &str, env_key: bool) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, toml).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clarion"));
    cmd.args(args)
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("d"));
    if env_key {
        cmd.env("CLARION_API_KEYS", "env-key-0123456789abcdef");
    } else {
        cmd.env_remove("CLARION_API_KEYS");
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn each_bad_key_is_named() {
    let cases = [
        ("listen = \"nowhere\"", "`listen`"),
        ("shards = 0", "`shards`"),
        ("colour = \"blue\"", "`colour`"),
        ("[storage]\nfsync = \"yes\"", "fsync"),
        (
            "[storage]\nretention_seconds = 10\ndedup_window_seconds = 20",
            "`storage.dedup_window_seconds`",
        ),
        ("[apns]\nteam_id = \"ABCDE12345\"", "`apns.key_file`"),
        (
            "[apns]\nkey_file = \"/nonexistent/key.p8\"\nteam_id = \"ABCDE12345\"\nkey_id = \"ABCDE12345\"\ntopic = \"a.b\"",
            "`apns.key_file`",
        ),
        (
            "[apns]\nendpoint = \"http://plain\"\nkey_file = \"/x\"\nteam_id = \"ABCDE12345\"\nkey_id = \"ABCDE12345\"",
            "`apns.endpoint`",
        ),
        ("[delivery]\nmax_attempts = 0", "`delivery.max_attempts`"),
        (
            "[contacts]\nmax_devices_per_user = 0",
            "`contacts.max_devices_per_user`",
        ),
        (
            "[contacts]\nmax_devices_per_user = 70000",
            "`contacts.max_devices_per_user`",
        ),
    ];
    for (toml, key) in cases {
        let (ok, out) = run(&["serve"], toml, true);
        assert!(!ok, "{toml} should be refused");
        assert!(
            out.contains(key),
            "error for {toml:?} should name {key}: {out}"
        );
    }
    let (ok, out) = run(&["serve"], "", false);
    assert!(!ok);
    assert!(out.contains("api.keys"), "{out}");
    let (ok, out) = run(&["check-config"], "[caps]\nper_user_per_hour = 10", true);
    assert!(ok, "{out}");
    assert!(out.contains("configuration is valid"), "{out}");
}
