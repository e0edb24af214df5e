//! Crash campaign: `kill -9` of the real server at random moments of a mixed load, also while
//! the restarted server replays its log and while it drains the backlog a slow provider left;
//! nothing lost, re-sends bounded by what was in flight (the load and the accounting:
//! `crash_campaign/campaign.rs`).
//!
//! Bounded form (in the suite): 20 kills, about a minute on 2 cores. The run is drawn from a
//! seed printed at the start; replay a failure with the same seed. By hand, the long form:
//!
//! ```sh
//! CLARION_CRASH_KILLS=200 CLARION_CRASH_SEED=0x5eed \
//!     cargo test -p clarion --test crash_campaign -- --nocapture
//! ```
//!
//! (200 kills take about 15 minutes here: the backlog grows to some 50,000 deliveries a shard
//! and each restart of the debug build then spends seconds replaying it.)
#[path = "crash_campaign/campaign.rs"]
mod campaign;
mod common;

/// The seed when `CLARION_CRASH_SEED` is not set.
const DEFAULT_SEED: u64 = 0xC1A2_1011_C2A5_4001;
/// Kills when `CLARION_CRASH_KILLS` is not set.
const DEFAULT_KILLS: u64 = 20;

#[test]
fn kill_9_campaign_loses_nothing_and_resends_only_what_was_in_flight() {
    let setup = campaign::Setup::new(
        "crash campaign",
        "CLARION_CRASH_SEED",
        DEFAULT_SEED,
        "CLARION_CRASH_KILLS",
        DEFAULT_KILLS,
    );
    let mut h = common::start_with(campaign::SHARDS, setup.sim(), campaign::SERVER_TOML);
    campaign::run(&mut h, &setup, &mut |h| h.server.kill9());
}
