//! Freeing the disk space of fjall's deleted files a little at a time, as RocksDB's
//! `DeleteScheduler` does (fjall deletes its files at once).
//!
//! On a filesystem mounted with `discard` (this machine's `/`), freeing a file's blocks stalls the
//! filesystem's journal, and every group commit's `fdatasync` waits for that journal. fjall
//! deletes whole files at once: a flushed journal (about 80 MB; 100–170 ms each, and 4–7 of them
//! back to back when its journal limit makes it flush the small keyspaces) or a compaction's input
//! tables (20–40 ms each). Measured at 30,000 notifications/s with `perf trace`: the shard logs'
//! `fdatasync` took 18–89 ms, for about a second, every time.
//!
//! The trash hard-links every journal and table file of a shard's database into a directory of its
//! own beside it (`data/shards/NN.trash/`) when it first sees it. fjall's later deletion then only
//! removes a name, which frees nothing. Once a file's fjall name is gone, the trash frees the file
//! from the end, [`STEP`] bytes per look (`ftruncate`), and unlinks it when empty. Nothing fjall
//! reads changes: fjall has let go of a file before its name goes, and the trash only shrinks a
//! file when its own link is the file's last name (`st_nlink` 1), so neither a renamed file nor
//! one that a crash left linked is ever touched. A file created and deleted between two looks is deleted by
//! fjall as before. Files left in the trash by a crash are freed the same way after a restart.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::writeback::table_dirs;

/// Bytes freed per look. At the reaper's look every 50 ms, 40 MB/s: more than a shard deletes at
/// the highest rate it sustains, in steps of a few milliseconds of discard each.
pub const STEP: u64 = 2 << 20;

/// Above this many bytes waiting to be freed the trash unlinks a whole file per look, so that under
/// a deletion rate above [`STEP`] per look it falls behind by at most this much disk space.
pub const MAX_PENDING: u64 = 1 << 30;

/// A shard's trash: the links it holds and the files it is freeing.
pub(super) struct Trash {
    db: PathBuf,
    dir: PathBuf,
    /// fjall's path of each linked file → its inode and the link.
    linked: HashMap<PathBuf, (u64, PathBuf)>,
    /// Links whose fjall name is gone, or left by an earlier run, until no other name refers to
    /// their file (fjall may have renamed it, or still use it after a crash left the link).
    waiting: Vec<PathBuf>,
    /// Links that are their file's only name, being freed (oldest first).
    freeing: Vec<(PathBuf, File)>,
    /// Set after the first failure to link (another filesystem, say): fjall deletes as before.
    disabled: bool,
}

impl Trash {
    /// The trash of the database in `db`; its directory is `db` with `.trash` appended. Links
    /// left there by an earlier run are freed first.
    pub(super) fn open(db: &Path) -> io::Result<Self> {
        let mut name = db.as_os_str().to_owned();
        name.push(".trash");
        let dir = PathBuf::from(name);
        std::fs::create_dir_all(&dir)?;
        let mut trash = Self {
            db: db.to_path_buf(),
            dir,
            linked: HashMap::new(),
            waiting: Vec::new(),
            freeing: Vec::new(),
            disabled: false,
        };
        for entry in std::fs::read_dir(&trash.dir)? {
            trash.waiting.push(entry?.path());
        }
        trash.check_waiting();
        Ok(trash)
    }

    /// One look: links new files, starts freeing the links whose fjall name is gone, and frees up
    /// to [`STEP`] bytes.
    pub(super) fn tick(&mut self) {
        if !self.disabled {
            if let Err(e) = self.link_new() {
                tracing::warn!(error = %e, dir = %self.dir.display(), "trash disabled: fjall deletes its files at once");
                self.disabled = true;
            }
        }
        // Gone, or the name now belongs to another file.
        let gone: Vec<PathBuf> = self
            .linked
            .iter()
            .filter(|(p, (ino, _))| std::fs::metadata(p).map(|m| m.ino()).ok() != Some(*ino))
            .map(|(p, _)| p.clone())
            .collect();
        for original in gone {
            if let Some((_, link)) = self.linked.remove(&original) {
                self.waiting.push(link);
            }
        }
        self.check_waiting();
        self.free_step();
    }

    /// Bytes held by links whose fjall name is gone.
    pub(super) fn pending_bytes(&self) -> u64 {
        self.freeing
            .iter()
            .map(|(_, f)| f.metadata().map_or(0, |m| m.len()))
            .sum()
    }

    /// Files linked and not yet given up by fjall.
    #[cfg(test)]
    fn linked(&self) -> usize {
        self.linked.len()
    }

    fn link_new(&mut self) -> io::Result<()> {
        for file in fjall_files(&self.db)? {
            if self.linked.contains_key(&file) {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&file) else {
                continue; // deleted meanwhile
            };
            let link = self.dir.join(format!("{}-{}", meta.dev(), meta.ino()));
            match std::fs::hard_link(&file, &link) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                // Linked by an earlier run (a crash): tracked again under its name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    self.waiting.retain(|w| w != &link);
                }
                Err(e) => return Err(e),
            }
            self.linked.insert(file, (meta.ino(), link));
        }
        Ok(())
    }

    /// Moves each waiting link whose file has no other name left to the files being freed. A
    /// file another name still refers to is never shrunk: only the link's own name would go.
    fn check_waiting(&mut self) {
        let mut still = Vec::new();
        for link in std::mem::take(&mut self.waiting) {
            match std::fs::metadata(&link) {
                Ok(m) if m.nlink() > 1 => still.push(link),
                Ok(_) => match OpenOptions::new().write(true).open(&link) {
                    Ok(f) => self.freeing.push((link, f)),
                    Err(_) => {
                        let _ = std::fs::remove_file(&link);
                    }
                },
                Err(_) => {} // gone already
            }
        }
        self.waiting = still;
    }

    /// Frees up to [`STEP`] bytes from the end of the oldest file being freed; unlinks it when
    /// it is empty, or at once when more than [`MAX_PENDING`] bytes wait.
    fn free_step(&mut self) {
        let Some((link, file)) = self.freeing.first() else {
            return;
        };
        let Ok(meta) = file.metadata() else { return };
        if meta.nlink() > 1 {
            // Named again (cannot happen with fjall's files; checked all the same).
            let (link, _) = self.freeing.remove(0);
            self.waiting.push(link);
            return;
        }
        let len = meta.len();
        let shorter = len.saturating_sub(STEP);
        let behind = self.freeing.len() > 1 && self.pending_bytes() > MAX_PENDING;
        if shorter > 0 && !behind && file.set_len(shorter).is_ok() {
            return;
        }
        if let Err(e) = std::fs::remove_file(link) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(error = %e, path = %link.display(), "could not free a trashed file");
            }
        }
        self.freeing.remove(0);
    }
}

/// fjall's journals (`NN.jnl` in the database directory) and tables (`keyspaces/*/tables/*`).
fn fjall_files(db: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(db)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "jnl") {
            out.push(path);
        }
    }
    // A database that has not written its keyspaces yet has no tables.
    let Ok(dirs) = table_dirs(db) else {
        return Ok(out);
    };
    for tables in dirs {
        let Ok(entries) = std::fs::read_dir(&tables) else {
            continue;
        };
        for t in entries {
            let t = t?;
            if t.file_type()?.is_file() {
                out.push(t.path());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_of(path: &Path, bytes: usize) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut f = File::create(path).unwrap();
        f.write_all(&vec![7u8; bytes]).unwrap();
    }

    #[test]
    fn a_deleted_file_is_freed_a_step_at_a_time_then_unlinked() {
        let root = tempfile::tempdir().unwrap();
        let db = root.path().join("00");
        let journal = db.join("3.jnl");
        let table = db.join("keyspaces/2/tables/7");
        file_of(&journal, (STEP * 3 + 5) as usize);
        file_of(&table, 10);
        file_of(&db.join("version"), 4); // not fjall's journal or table: left alone
        let mut trash = Trash::open(&db).unwrap();
        trash.tick();
        assert_eq!(trash.linked(), 2);
        let links: Vec<_> = std::fs::read_dir(root.path().join("00.trash"))
            .unwrap()
            .collect();
        assert_eq!(links.len(), 2, "one link per journal and table");

        // fjall deletes the journal: only its name goes, the trash still holds the blocks.
        std::fs::remove_file(&journal).unwrap();
        trash.tick();
        assert_eq!(trash.linked(), 1);
        assert_eq!(
            trash.pending_bytes(),
            STEP * 2 + 5,
            "one step freed per look"
        );
        trash.tick();
        assert_eq!(trash.pending_bytes(), STEP + 5);
        trash.tick();
        assert_eq!(trash.pending_bytes(), 5);
        trash.tick();
        assert_eq!(trash.pending_bytes(), 0);
        let left = std::fs::read_dir(root.path().join("00.trash"))
            .unwrap()
            .count();
        assert_eq!(
            left, 1,
            "the journal's link is gone, the live table's stays"
        );
        // The live table is untouched.
        assert_eq!(std::fs::metadata(&table).unwrap().len(), 10);
    }

    #[test]
    fn links_left_by_a_crash_are_freed_after_a_restart() {
        let root = tempfile::tempdir().unwrap();
        let db = root.path().join("01");
        file_of(&db.join("keyspaces/0/tables/1"), 100);
        {
            let mut trash = Trash::open(&db).unwrap();
            trash.tick();
            std::fs::remove_file(db.join("keyspaces/0/tables/1")).unwrap();
            // dropped without freeing: as if the process died
        }
        let mut trash = Trash::open(&db).unwrap();
        assert_eq!(trash.pending_bytes(), 100);
        trash.tick();
        assert_eq!(trash.pending_bytes(), 0);
        assert_eq!(
            std::fs::read_dir(root.path().join("01.trash"))
                .unwrap()
                .count(),
            0
        );
    }

    /// The names it looks for are the ones fjall uses: a real database's journal and tables are
    /// linked, and a compaction's inputs are freed through the trash.
    #[test]
    fn it_finds_a_real_fjall_databases_journal_and_tables() {
        use fjall::{Database, KeyspaceCreateOptions};
        let root = tempfile::tempdir().unwrap();
        let db_dir = root.path().join("04");
        let db = Database::builder(&db_dir).open().unwrap();
        let ks = db.keyspace("k", KeyspaceCreateOptions::default).unwrap();
        let mut trash = Trash::open(&db_dir).unwrap();
        for round in 0..4u32 {
            for i in 0..200u32 {
                ks.insert(format!("{i:05}-{round}"), [1u8; 100]).unwrap();
            }
            ks.rotate_memtable_and_wait().unwrap();
            trash.tick();
        }
        assert!(
            trash.linked() >= 5,
            "the journal and four tables: {}",
            trash.linked()
        );
        ks.major_compact().unwrap();
        ks.insert("z", "1").unwrap();
        ks.rotate_memtable_and_wait().unwrap();
        for _ in 0..10 {
            trash.tick();
        }
        assert_eq!(
            trash.pending_bytes(),
            0,
            "small files are freed in one step each"
        );
        let in_trash = std::fs::read_dir(root.path().join("04.trash"))
            .unwrap()
            .count();
        assert_eq!(in_trash, trash.linked(), "only live files stay linked");
        assert_eq!(ks.get("00199-3").unwrap().as_deref(), Some(&[1u8; 100][..]));
    }

    #[test]
    fn far_behind_it_unlinks_whole_files() {
        let root = tempfile::tempdir().unwrap();
        let db = root.path().join("03");
        let mut trash = Trash::open(&db).unwrap();
        // Two links of sparse files, together over the bound, as if fjall had just deleted them.
        for n in 0..2 {
            let link = root.path().join("03.trash").join(format!("x{n}"));
            File::create(&link).unwrap().set_len(MAX_PENDING).unwrap();
            trash.waiting.push(link);
        }
        trash.tick();
        assert_eq!(trash.pending_bytes(), MAX_PENDING, "the oldest went whole");
        trash.tick();
        assert_eq!(
            trash.pending_bytes(),
            MAX_PENDING - STEP,
            "then a step at a time"
        );
    }

    /// A crash can leave links to files fjall still uses, and fjall could rename a file: a file
    /// that another name still refers to is never shrunk.
    #[test]
    fn a_file_with_another_name_is_never_shrunk() {
        let root = tempfile::tempdir().unwrap();
        let db = root.path().join("05");
        let table = db.join("keyspaces/1/tables/9");
        file_of(&table, (STEP * 2) as usize);
        {
            let mut trash = Trash::open(&db).unwrap();
            trash.tick(); // linked; then the process "dies"
        }
        let mut trash = Trash::open(&db).unwrap();
        trash.tick();
        assert_eq!(std::fs::metadata(&table).unwrap().len(), STEP * 2);
        assert_eq!(trash.pending_bytes(), 0);

        // Renamed: the old name is gone but the file lives on under the new one.
        let renamed = db.join("keyspaces/1/tables/10");
        std::fs::rename(&table, &renamed).unwrap();
        for _ in 0..3 {
            trash.tick();
        }
        assert_eq!(std::fs::metadata(&renamed).unwrap().len(), STEP * 2);
        // Deleted for good: now it is freed.
        std::fs::remove_file(&renamed).unwrap();
        for _ in 0..4 {
            trash.tick();
        }
        assert_eq!(
            std::fs::read_dir(root.path().join("05.trash"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn a_file_fjall_still_names_is_never_shrunk() {
        let root = tempfile::tempdir().unwrap();
        let db = root.path().join("02");
        let journal = db.join("0.jnl");
        file_of(&journal, (STEP * 2) as usize);
        let mut trash = Trash::open(&db).unwrap();
        for _ in 0..5 {
            trash.tick();
        }
        assert_eq!(std::fs::metadata(&journal).unwrap().len(), STEP * 2);
        assert_eq!(trash.pending_bytes(), 0);
    }
}
