//! The data directory's metadata file (`clarion-meta.json`, the shard count) lost or damaged, as
//! a power cut during the first start could leave it before it was written durably: the server
//! derives the count from the shard directories, says so in its log, starts, and serves what the
//! log holds; where the shard directories cannot tell, it refuses to start with an error naming
//! the file and what to write into it.
mod common;

use std::time::Duration;

use clarion_sim::apns::Faults;

const META: &str = "clarion-meta.json";

#[test]
fn an_empty_metadata_file_is_derived_again_and_the_server_starts() {
    let mut h = common::start(2, Faults::default(), "");
    h.register("meta", &[common::token(7)]);
    let id = h.notify_accepted("meta", "m1", serde_json::json!({}));
    assert!(h.server.terminate().success());

    let data = h.server.dir.join("data");
    std::fs::write(data.join(META), "").unwrap();
    h.server.spawn();
    let log = h.server.log();
    assert!(
        log.contains("the shard count is derived from the shard directories"),
        "the log says what was done: {log}"
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join(META)).unwrap()).unwrap();
    assert_eq!(meta["shards"], 2, "written again: {meta}");
    assert_eq!(h.status(&id)["id"], id.as_str(), "the log's data is served");
    let again = h.notify_accepted("meta", "m2", serde_json::json!({}));
    let sent = common::wait_for(Duration::from_secs(20), || {
        (h.status(&again)["deliveries"][0]["state"] == "sent").then_some(())
    });
    assert!(sent.is_some(), "and it delivers: {}", h.status(&again));
}

#[test]
fn a_metadata_file_the_shard_directories_cannot_replace_stops_the_start_with_what_to_do() {
    let mut h = common::start(3, Faults::default(), "");
    assert!(h.server.terminate().success());
    let data = h.server.dir.join("data");
    std::fs::write(data.join(META), "{\"sha").unwrap();
    std::fs::remove_dir_all(data.join("shards").join("01")).unwrap();
    h.server.spawn_unwaited();
    let status = common::wait_for(Duration::from_secs(20), || {
        h.server.child.as_mut().unwrap().try_wait().unwrap()
    })
    .expect("the server stops");
    assert!(!status.success());
    let log = h.server.log();
    assert!(
        log.contains(META) && log.contains("not JSON") && log.contains("{\"shards\": N"),
        "the error names the file, its fault and the fix: {log}"
    );
}

/// A data directory keeps its shard count: started on a machine whose core count differs (here:
/// a directory written with one shard more than this machine has cores, started without
/// `shards`), the server runs the recorded count, says so, and serves the data.
#[test]
fn a_data_directory_without_a_configured_shard_count_runs_the_count_it_recorded() {
    let n = std::thread::available_parallelism().map_or(1, |c| c.get()) + 1;
    let mut h = common::start(n, Faults::default(), "");
    h.register("kept", &[common::token(9)]);
    let id = h.notify_accepted("kept", "k1", serde_json::json!({}));
    assert!(h.server.terminate().success());
    let config = std::fs::read_to_string(&h.server.config).unwrap();
    std::fs::write(
        &h.server.config,
        config.replace(&format!("shards = {n}\n"), ""),
    )
    .unwrap();
    h.server.spawn();
    let log = h.server.log();
    assert!(
        log.contains(&format!(
            "the data directory was written with {n} shards: running {n} shards"
        )),
        "the log says which count it runs: {log}"
    );
    let r = h.client().call("GET", "/healthz", None);
    assert_eq!(r.body["shards"], n, "{:?}", r.body);
    assert_eq!(h.status(&id)["id"], id.as_str(), "the log's data is served");
}
