//! A clean stop, then a flipped byte in the last record of the newest journal (bit rot, a bad
//! sector): fjall alone refuses such a journal, so the server would not start. It starts, keeps
//! everything up to the last good batch, reports the damage on an error line naming what the bad
//! batch held, and keeps the cut bytes.
mod common;

use clarion_sim::apns::Faults;
use serde_json::json;

const NOTIFICATIONS: u64 = 40;

#[test]
fn a_flipped_byte_in_the_journal_tail_is_cut_off_reported_and_the_server_starts() {
    let mut h = common::start(1, Faults::default(), "");
    h.register("rot", &[common::token(9)]);
    let mut ids = Vec::new();
    for seq in 0..NOTIFICATIONS {
        let r = h.notify(
            json!({"user_id": "rot", "idempotency_key": format!("r{seq}"),
                                "body": "hi", "data": {"lt_seq": seq}}),
        );
        assert_eq!(r.status, 202, "{}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    assert!(h.server.terminate().success(), "{}", h.server.log());
    let data = h.dir.path().join("data");
    let journal = common::disk::newest_journal(&data, 0);
    let end = common::disk::data_end(&journal);
    assert!(end > 100, "the journal holds the load: {end} bytes");
    // Inside the last batch's last record (its end marker is the last 13 bytes).
    common::disk::flip_byte(&journal, end - 20);

    h.server.spawn();
    let log = h.server.log();
    let report = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("journal DAMAGED"))
        .unwrap_or_else(|| panic!("no report of the damage: {log}"));
    assert!(report.contains("checksum does not match"), "{report}");
    let kept = std::fs::read_dir(data.join("shards/00.quarantine"))
        .expect("the cut bytes are kept")
        .count();
    assert_eq!(kept, 1);
    let mut missing = Vec::new();
    for id in &ids {
        let r = h
            .client()
            .call("GET", &format!("/v1/notifications/{id}"), None);
        match r.status {
            200 => {}
            404 => missing.push(id.clone()),
            s => panic!("GET {id}: {s} {}", r.body),
        }
    }
    assert!(
        missing.len() <= 1,
        "only the last batch was cut: {missing:?}"
    );
    for id in &missing {
        assert!(
            report.contains(id.as_str()),
            "{id} lost without a word: {report}"
        );
    }
    // The shard writes on after the cut.
    let r = h.notify(json!({"user_id": "rot", "idempotency_key": "after", "body": "hi"}));
    assert_eq!(r.status, 202, "{}", r.body);
}
