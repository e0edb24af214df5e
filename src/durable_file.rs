//! Writing a file so that it survives a power cut: the bytes go to a temporary file beside it,
//! which is fsynced, renamed over the target, and the directory fsynced, so after a crash the
//! file is either the old one or the new one, whole. Every file Clarion writes outside fjall
//! goes through [`write_durably`], and every directory it makes through [`create_dir_durably`]
//! (a new directory's name lives in its parent, which a power cut reverts unless it is fsynced).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Replaces `path` with `bytes` durably; `mode` is the file's Unix permission bits (`0o600` for
/// a private key).
pub fn write_durably(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Creates `path` and any missing parent, fsyncing the parent of each directory it creates, so
/// the whole chain survives a power cut. Nothing is done for a directory that exists.
pub fn create_dir_durably(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durably(parent)?;
    }
    match fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(parent)?.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_file_is_replaced_whole_with_its_mode_and_no_temporary_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        write_durably(&path, b"first", 0o600).unwrap();
        write_durably(&path, b"second", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "only the file itself");
        let missing = dir.path().join("no/such/dir/file");
        assert!(write_durably(&missing, b"x", 0o644).is_err());
    }

    #[test]
    fn a_directory_chain_is_created_and_an_existing_one_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_durably(&deep).unwrap();
        assert!(deep.is_dir());
        fs::write(deep.join("kept"), b"x").unwrap();
        create_dir_durably(&deep).unwrap();
        assert!(
            deep.join("kept").exists(),
            "an existing directory is not touched"
        );
        let file = dir.path().join("a/file");
        fs::write(&file, b"x").unwrap();
        assert!(
            create_dir_durably(&file).is_err(),
            "a file in the way is an error"
        );
    }
}
