//! Scenario: the harness's output piped into a reader that has already gone (`| head -0`). The
//! command still does its work (the files it writes are there) and exits 0 without a panic or
//! an error message, as Unix tools do.

use std::process::{Command, Stdio};

#[test]
fn a_closed_stdout_ends_the_command_quietly_after_its_work() {
    let dir = std::env::temp_dir().join(format!("clarion-closed-stdout-{}", std::process::id()));
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_clarion-loadtest"))
        .args(["keygen", "--out"])
        .arg(&dir)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.trim().is_empty(), "nothing to say: {stderr}");
    assert!(dir.join("apns-key.p8").exists());
    assert!(dir.join("apns-key.pub.pem").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
