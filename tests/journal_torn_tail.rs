//! `kill -9` under load, then the newest journal cut in the middle of its last record (as a
//! crash in the middle of a write leaves it): the server starts, recovers everything up to the
//! last whole batch, says so in a warning naming what was cut, and keeps the cut bytes.
mod common;

use clarion_sim::apns::Faults;
use serde_json::json;

const NOTIFICATIONS: u64 = 40;

#[test]
fn a_journal_cut_mid_record_after_kill_9_recovers_up_to_its_last_whole_batch() {
    let mut h = common::start(1, Faults::default(), "");
    h.register("torn", &[common::token(7)]);
    let mut ids = Vec::new();
    for seq in 0..NOTIFICATIONS {
        let r = h.notify(
            json!({"user_id": "torn", "idempotency_key": format!("t{seq}"),
                                "body": "hi", "data": {"lt_seq": seq}}),
        );
        assert_eq!(r.status, 202, "{}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    h.server.kill9();
    let data = h.dir.path().join("data");
    let journal = common::disk::newest_journal(&data, 0);
    let end = common::disk::data_end(&journal);
    assert!(end > 100, "the journal holds the load: {end} bytes");
    common::disk::truncate(&journal, end - 5);

    h.server.spawn();
    let log = h.server.log();
    let report = log
        .lines()
        .find(|l| {
            l.contains("WARN") && l.contains("journal recovered up to its last complete batch")
        })
        .unwrap_or_else(|| panic!("no report of the cut batch: {log}"));
    assert!(report.contains("kept_at"), "{report}");
    let kept = std::fs::read_dir(data.join("shards/00.quarantine"))
        .expect("the cut bytes are kept")
        .count();
    assert_eq!(kept, 1);
    // Everything acknowledged is there, except what the cut batch held, which the report names.
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
}
