//! Disk-level helpers for the storage-fault tests: find a shard's newest fjall journal and where
//! its data ends, damage it, and make small file systems (tmpfs, a loop-mounted ext4 image) to
//! put a data directory on.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The journal with the highest number in shard `shard`'s database under `data_dir`.
pub fn newest_journal(data_dir: &Path, shard: usize) -> PathBuf {
    let dir = data_dir.join("shards").join(format!("{shard:02}"));
    let mut journals: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let id = p
                .file_name()?
                .to_str()?
                .strip_suffix(".jnl")?
                .parse()
                .ok()?;
            Some((id, p))
        })
        .collect();
    journals.sort();
    journals
        .pop()
        .unwrap_or_else(|| panic!("no journal in {}", dir.display()))
        .1
}

/// One past the last non-zero byte of `path` (fjall preallocates journals with zeros, as a
/// hole, so only the data regions are read).
pub fn data_end(path: &Path) -> u64 {
    let mut f = std::fs::File::open(path).unwrap();
    let fd = f.as_raw_fd();
    let (mut pos, mut last) = (0i64, 0u64);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        // SAFETY: lseek on a descriptor owned by `f`, with a valid whence.
        let start = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if start < 0 {
            return last;
        }
        // SAFETY: as above.
        let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
        f.seek(SeekFrom::Start(start as u64)).unwrap();
        let mut at = start;
        while at < end {
            let want = ((end - at) as usize).min(buf.len());
            let n = f.read(&mut buf[..want]).unwrap();
            if n == 0 {
                break;
            }
            if let Some(i) = buf[..n].iter().rposition(|&b| b != 0) {
                last = at as u64 + i as u64 + 1;
            }
            at += n as i64;
        }
        pos = end;
    }
}

/// XORs the byte at `at` of `path` with 0x5a.
pub fn flip_byte(path: &Path, at: u64) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0x5a]).unwrap();
    f.sync_all().unwrap();
}

/// Cuts `path` to `len` bytes.
pub fn truncate(path: &Path, len: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len).unwrap();
    f.sync_all().unwrap();
}
