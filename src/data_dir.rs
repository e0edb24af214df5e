//! The data directory's layout and its metadata file, `clarion-meta.json`, which records the
//! shard count the data was written with: users are placed by `jump_hash(user, shards)`, so a
//! different count would orphan their data.
//!
//! Everything here is written to survive a power cut: the shard directories are created and
//! their parents fsynced before the metadata file is written (durably, through
//! [`write_durably`]), so after a cut at any moment the shard directories tell the count the file
//! would have held. A metadata file that is missing, empty or unreadable while shard directories
//! exist is derived again from them, with a warning; one that cannot be derived (the shard
//! directories have gaps) stops the start with an error naming the file and what to write into it.

use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;
use tracing::{info, warn};

use crate::durable_file::{create_dir_durably, write_durably};

pub const META_FILE: &str = "clarion-meta.json";
/// The metadata's format; a file with a higher one was written by a newer Clarion.
const META_FORMAT: u64 = 1;

/// Shard `shard`'s database directory.
pub fn shard_dir(data_dir: &Path, shard: usize) -> PathBuf {
    data_dir.join("shards").join(format!("{shard:02}"))
}

/// What `clarion-meta.json` says, or why it says nothing.
enum Meta {
    Shards(usize),
    Missing,
    Unreadable(String),
}

fn read_meta(path: &Path) -> anyhow::Result<Meta> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Meta::Missing),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Meta::Unreadable("it is empty".into()));
    }
    let v: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return Ok(Meta::Unreadable(format!("it is not JSON ({e})"))),
    };
    if let Some(format) = v["format"].as_u64()
        && format > META_FORMAT
    {
        bail!(
            "{} has format {format}: it was written by a newer Clarion than this one (format {META_FORMAT})",
            path.display()
        );
    }
    match v["shards"].as_u64() {
        Some(n) if n > 0 => Ok(Meta::Shards(n as usize)),
        _ => Ok(Meta::Unreadable(
            "it has no positive \"shards\" count".into(),
        )),
    }
}

/// The shard count the shard directories tell: `Ok(0)` when there are none, `Err` with what was
/// found when they are not `00` to `N-1` without a gap.
fn shards_on_disk(data_dir: &Path) -> anyhow::Result<Result<usize, Vec<usize>>> {
    let root = data_dir.join("shards");
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ok(0)),
        Err(e) => return Err(e).with_context(|| format!("listing {}", root.display())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", root.display()))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        // `00`, `01`, ... (the trash and quarantine beside them have a suffix).
        if let Ok(n) = name.parse::<usize>()
            && name == format!("{n:02}")
            && entry.file_type().is_ok_and(|t| t.is_dir())
        {
            found.push(n);
        }
    }
    found.sort_unstable();
    if found.iter().enumerate().all(|(i, &n)| i == n) {
        Ok(Ok(found.len()))
    } else {
        Ok(Err(found))
    }
}

/// Checks (or records) the shard count the data directory was written with, creating the
/// directory and its shard directories durably, and returns the count to run with: the recorded
/// one when `shards` is only the default (`from_data`: no `--shards` or `shards` was given), so a
/// data directory moved to a machine with more or fewer cores keeps its count; an explicit
/// `shards` that differs from the recorded count is refused.
pub fn check(dir: &Path, shards: usize, from_data: bool) -> anyhow::Result<usize> {
    let meta = dir.join(META_FILE);
    let was = match read_meta(&meta)? {
        Meta::Shards(n) => n,
        found => write_meta_again(dir, &meta, &found, shards)?,
    };
    if was == 0 || was > crate::config::MAX_SHARDS {
        bail!(
            "{} records {was} shards: not between 1 and {}; restore the file from a backup",
            meta.display(),
            crate::config::MAX_SHARDS
        );
    }
    if was != shards {
        if !from_data {
            bail!(
                "data directory {} was written with {was} shards; start with --shards {was} or without --shards (re-sharding is not supported yet)",
                dir.display()
            );
        }
        warn!(
            data_dir = %dir.display(),
            shards = was,
            cores = shards,
            "the data directory was written with {was} shards: running {was} shards (not one per core)"
        );
    }
    create_shard_dirs(dir, was)?;
    Ok(was)
}

/// Writes a missing or unreadable metadata file again: with the count the shard directories
/// tell, or with `shards` when there are none yet (their directories first, so that a cut
/// between the two leaves the count findable). Returns the count written.
fn write_meta_again(dir: &Path, meta: &Path, found: &Meta, shards: usize) -> anyhow::Result<usize> {
    let derived = match shards_on_disk(dir)? {
        Ok(n) => n,
        Err(found_dirs) => bail!(
            "{} is {} and the shard directories in {} do not tell the shard count the data was \
             written with (found {found_dirs:?}, not 00 to N-1). Write \
             {{\"shards\": N, \"format\": 1}} into it with that count, or restore it from a backup",
            meta.display(),
            describe(found),
            dir.join("shards").display(),
        ),
    };
    match (found, derived) {
        (Meta::Missing, 0) => info!(data_dir = %dir.display(), shards, "new data directory"),
        (_, 0) => warn!(
            file = %meta.display(),
            problem = %describe(found),
            shards,
            "the data directory's metadata was lost before any shard was created; written again with the configured shard count"
        ),
        (_, n) => warn!(
            file = %meta.display(),
            problem = %describe(found),
            shards = n,
            "the data directory's metadata was lost (as a power cut during the first start can leave it); the shard count is derived from the shard directories and the file written again"
        ),
    }
    let count = if derived == 0 { shards } else { derived };
    if count == shards {
        create_shard_dirs(dir, count)?;
    }
    let v = serde_json::json!({"shards": count, "format": META_FORMAT});
    write_durably(meta, &serde_json::to_vec_pretty(&v)?, 0o644)
        .with_context(|| format!("writing {}", meta.display()))?;
    Ok(count)
}

fn create_shard_dirs(dir: &Path, shards: usize) -> anyhow::Result<()> {
    for i in 0..shards {
        let path = shard_dir(dir, i);
        create_dir_durably(&path)
            .with_context(|| format!("creating shard {i}'s directory {}", path.display()))?;
    }
    Ok(())
}

fn describe(m: &Meta) -> String {
    match m {
        Meta::Missing => "missing".into(),
        Meta::Unreadable(why) => format!("unreadable ({why})"),
        Meta::Shards(n) => format!("{n} shards"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A temporary directory and the data directory's path in it (not created).
    fn data() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        (tmp, dir)
    }

    fn meta_shards(dir: &Path) -> u64 {
        let v: Value =
            serde_json::from_slice(&std::fs::read(dir.join(META_FILE)).unwrap()).unwrap();
        v["shards"].as_u64().unwrap()
    }

    #[test]
    fn a_new_directory_gets_its_shard_directories_and_the_count() {
        let (_tmp, dir) = data();
        check(&dir, 3, false).unwrap();
        assert_eq!(meta_shards(&dir), 3);
        for i in 0..3 {
            assert!(shard_dir(&dir, i).is_dir());
        }
        check(&dir, 3, false).unwrap();
        let e = check(&dir, 2, false).unwrap_err().to_string();
        assert!(
            e.contains("written with 3 shards; start with --shards 3"),
            "{e}"
        );
        // Without an explicit count (a machine with 2 cores), the recorded 3 is used.
        assert_eq!(check(&dir, 2, true).unwrap(), 3);
        assert_eq!(meta_shards(&dir), 3);
        // A new directory records the default count.
        let (_tmp2, fresh) = data();
        assert_eq!(check(&fresh, 2, true).unwrap(), 2);
        assert_eq!(meta_shards(&fresh), 2);
    }

    #[test]
    fn an_empty_or_unreadable_or_missing_file_is_derived_from_the_shard_directories() {
        for damage in ["", "   \n", "{\"shar", "{\"format\": 1}"] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("data");
            check(&dir, 2, false).unwrap();
            std::fs::create_dir_all(dir.join("shards").join("00.trash")).unwrap();
            std::fs::write(dir.join(META_FILE), damage).unwrap();
            check(&dir, 2, false).unwrap();
            assert_eq!(meta_shards(&dir), 2, "after {damage:?}");
            // Derived, not copied from the configuration: a different count is refused.
            std::fs::write(dir.join(META_FILE), damage).unwrap();
            let e = check(&dir, 4, false).unwrap_err().to_string();
            assert!(e.contains("written with 2 shards"), "{e}");
            assert_eq!(meta_shards(&dir), 2, "the derived count is kept");
        }
        let (_tmp, dir) = data();
        check(&dir, 2, false).unwrap();
        std::fs::remove_file(dir.join(META_FILE)).unwrap();
        let e = check(&dir, 1, false).unwrap_err().to_string();
        assert!(
            e.contains("written with 2 shards"),
            "a missing file too: {e}"
        );
    }

    #[test]
    fn a_file_lost_before_any_shard_existed_takes_the_configured_count() {
        let (_tmp, dir) = data();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(META_FILE), "").unwrap();
        check(&dir, 5, false).unwrap();
        assert_eq!(meta_shards(&dir), 5);
    }

    #[test]
    fn shard_directories_with_a_gap_give_an_error_that_says_what_to_write() {
        let (_tmp, dir) = data();
        check(&dir, 3, false).unwrap();
        std::fs::remove_dir(shard_dir(&dir, 1)).unwrap();
        std::fs::write(dir.join(META_FILE), "").unwrap();
        let e = format!("{:#}", check(&dir, 3, false).unwrap_err());
        assert!(e.contains(META_FILE) && e.contains("empty"), "{e}");
        assert!(e.contains("[0, 2]") && e.contains("\"shards\": N"), "{e}");
    }

    #[test]
    fn a_newer_format_is_refused() {
        let (_tmp, dir) = data();
        check(&dir, 1, false).unwrap();
        std::fs::write(dir.join(META_FILE), r#"{"shards": 1, "format": 2}"#).unwrap();
        let e = check(&dir, 1, false).unwrap_err().to_string();
        assert!(e.contains("newer Clarion"), "{e}");
    }
}
