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

/// What a cut device keeps: one sector, so that no write of the file system's, not even its
/// superblock's (at byte 1024), lands after the cut.
const DEAD_DEVICE_BYTES: u64 = 512;

/// A small file system mounted for one test, unmounted (and its loop device freed) on drop.
pub struct Mount {
    pub path: PathBuf,
    loop_device: Option<String>,
}

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Fails the test loudly: a storage-fault test that cannot make its file system must not pass.
fn cannot(what: &str, why: String) -> ! {
    panic!(
        "STORAGE-FAULT TEST CANNOT RUN: {what}: {why}\n\
         These tests need root (CAP_SYS_ADMIN) on Linux to mount a small file system \
         (tmpfs, or ext4 on a loop device: util-linux and e2fsprogs)."
    )
}

impl Mount {
    /// A tmpfs of `bytes` at `path` (created).
    pub fn tmpfs(path: &Path, bytes: u64) -> Mount {
        std::fs::create_dir_all(path).unwrap();
        let size = format!("size={bytes}");
        let target = path.to_str().unwrap();
        if let Err(e) = run("mount", &["-t", "tmpfs", "-o", &size, "tmpfs", target]) {
            cannot("mounting a tmpfs", e);
        }
        Mount {
            path: path.to_path_buf(),
            loop_device: None,
        }
    }

    /// An ext4 file system of `bytes` in the image file `image`, on a loop device, at `path`.
    pub fn ext4(image: &Path, path: &Path, bytes: u64) -> Mount {
        std::fs::create_dir_all(path).unwrap();
        std::fs::File::create(image)
            .and_then(|f| f.set_len(bytes))
            .unwrap();
        let image = image.to_str().unwrap();
        if let Err(e) = run("mkfs.ext4", &["-q", "-F", image]) {
            cannot("making an ext4 image", e);
        }
        let device = run("losetup", &["-f", "--show", image])
            .unwrap_or_else(|e| cannot("attaching a loop device", e));
        let mut m = Mount {
            path: path.to_path_buf(),
            loop_device: Some(device),
        };
        m.mount_ext4();
        m
    }

    fn device(&self) -> &str {
        self.loop_device
            .as_deref()
            .expect("a loop-mounted file system")
    }

    fn mount_ext4(&mut self) {
        let target = self.path.to_str().unwrap().to_string();
        if let Err(e) = run("mount", &["-o", "errors=continue", self.device(), &target]) {
            cannot("mounting ext4 from a loop device", e);
        }
    }

    /// Makes the loop device end after `bytes` (0: the whole image again): I/O past it fails
    /// with EIO, as a failing disk's would.
    pub fn limit_device(&self, bytes: u64) {
        set_loop_size_limit(self.device(), bytes)
            .unwrap_or_else(|e| cannot("changing a loop device's size limit", e.to_string()));
    }

    /// A power cut: the device stops (every read and write fails with EIO: it keeps one sector,
    /// below ext4's superblock), `during` runs (it kills the server), and the file system is
    /// unmounted, so what the page cache held and the journal's uncommitted transaction never
    /// reach the disk. Then the device comes back, `e2fsck` replays the journal (as the boot
    /// after a cut does) and the file system is mounted again.
    ///
    /// A canary file written just before the cut, never fsynced, must not come back whole: the
    /// proof, at every cut, that the cut dropped what was not synced.
    pub fn cut_power(&mut self, during: impl FnOnce()) {
        let canary = self.path.join("power-cut-canary");
        std::fs::write(&canary, [0x43u8; 4096]).unwrap();
        self.limit_device(DEAD_DEVICE_BYTES);
        during();
        let target = self.path.to_str().unwrap().to_string();
        if let Err(e) = run("umount", &[&target]) {
            cannot("unmounting the cut file system", e);
        }
        self.limit_device(0);
        self.fsck();
        self.mount_ext4();
        let kept = std::fs::metadata(&canary).map_or(0, |m| m.len());
        assert!(
            kept < 4096,
            "the unsynced canary survived the cut whole: the cut did not drop unsynced data"
        );
        let _ = std::fs::remove_file(&canary);
    }

    fn fsck(&self) {
        // Exit code 1 means "errors corrected"; only 4 and above is a failure.
        let out = std::process::Command::new("e2fsck")
            .args(["-y", self.device()])
            .output()
            .unwrap();
        assert!(out.status.code().is_some_and(|c| c < 4), "e2fsck: {out:?}");
    }

    /// Unmounts, checks and repairs the file system (`e2fsck -y`, as after a disk fault), and
    /// mounts it again.
    pub fn fsck_and_remount(&mut self) {
        run("umount", &[self.path.to_str().unwrap()]).unwrap();
        self.fsck();
        self.mount_ext4();
    }

    /// Bytes free for an unprivileged writer.
    pub fn available(&self) -> u64 {
        let path = std::ffi::CString::new(self.path.to_str().unwrap()).unwrap();
        // SAFETY: statvfs fills the zeroed struct for a valid NUL-terminated path.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
        assert_eq!(rc, 0, "statvfs {}", self.path.display());
        st.f_bavail as u64 * st.f_frsize as u64
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Lazy: detached at once even if something still holds a file open.
        let _ = run("umount", &["-l", self.path.to_str().unwrap()]);
        if let Some(device) = &self.loop_device {
            let _ = set_loop_size_limit(device, 0);
            let _ = run("losetup", &["-d", device]);
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// `struct loop_info64` of `<linux/loop.h>`.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    size_limit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
const LOOP_SET_CAPACITY: libc::c_ulong = 0x4C07;

fn set_loop_size_limit(device: &str, bytes: u64) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)?;
    let fd = f.as_raw_fd();
    // SAFETY: LOOP_GET/SET_STATUS64 read and write a `struct loop_info64`, which `LoopInfo64`
    // mirrors; LOOP_SET_CAPACITY takes no argument. `fd` is open for the whole block.
    unsafe {
        let mut info: LoopInfo64 = std::mem::zeroed();
        if libc::ioctl(fd, LOOP_GET_STATUS64 as _, &mut info) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        info.size_limit = bytes;
        if libc::ioctl(fd, LOOP_SET_STATUS64 as _, &info) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::ioctl(fd, LOOP_SET_CAPACITY as _, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
