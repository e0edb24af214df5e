//! Power cuts: the data directory is on an ext4 file system on a loop device, and a cut makes
//! the device fail every read and write at once (as a disk does when the power goes), then kills
//! the server, unmounts (what the page cache still held for the device is lost), checks the file
//! system (`e2fsck` replays its journal, as the boot after a cut does) and mounts it again. So
//! whatever was written but not fsynced before the cut is gone, as after a real power loss: file
//! data still in the page cache, and the directory entries and sizes of the file system's last
//! seconds not yet in its journal. The load and the accounting are the crash campaign's
//! (`crash_campaign/campaign.rs`): nothing answered `202` lost, re-sends bounded by what was in
//! flight, and the server starts again after every cut.
//!
//! Bounded form (in the suite): 10 cuts (some while the server recovers), about 20 seconds. By
//! hand, more:
//!
//! ```sh
//! CLARION_POWER_CUTS=50 CLARION_POWER_SEED=0x5eed \
//!     cargo test -p clarion --test power_cut -- --nocapture
//! ```
#[path = "crash_campaign/campaign.rs"]
mod campaign;
mod common;

use common::disk::Mount;

/// The seed when `CLARION_POWER_SEED` is not set.
const DEFAULT_SEED: u64 = 0x90E2_C075_EED0_0001;
/// Cuts when `CLARION_POWER_CUTS` is not set.
const DEFAULT_CUTS: u64 = 10;
/// The file system: sparse, so only what the server writes takes space.
const FS_BYTES: u64 = 2 << 30;

#[test]
fn power_cuts_under_load_lose_nothing_and_the_server_starts_after_each() {
    let setup = campaign::Setup::new(
        "power cuts",
        "CLARION_POWER_SEED",
        DEFAULT_SEED,
        "CLARION_POWER_CUTS",
        DEFAULT_CUTS,
    );
    let dir = tempfile::tempdir().unwrap();
    let mut mount = Mount::ext4(
        &dir.path().join("disk.img"),
        &dir.path().join("data"),
        FS_BYTES,
    );
    let mut h = common::start_in(dir, campaign::SHARDS, setup.sim(), campaign::SERVER_TOML);
    campaign::run(&mut h, &setup, &mut |h| {
        mount.cut_power(|| h.server.kill9());
    });
    drop(h);
    drop(mount);
}
