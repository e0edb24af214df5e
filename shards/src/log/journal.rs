//! The check of a shard's fjall journals before fjall opens them: finds where each journal's last
//! good batch ends, and if anything but the zeros fjall preallocates follows it, copies those bytes
//! to `data/shards/NN.quarantine/`, reports them (what they were, which keys they held), and cuts
//! the journal back to its last good batch.
//!
//! fjall tolerates an unfinished last batch (it cuts it off, silently), but refuses to open a
//! journal whose batch fails its checksum, so one flipped bit in the tail would stop the shard
//! from starting; and an invalid tag makes it cut everything after, silently. Here both become
//! one clear log line and a file that keeps the bytes: an *unfinished* batch (a write cut short by
//! a crash: never acknowledged, since a `202` follows the batch's fsync) is a warning; a *damaged*
//! one (a checksum that does not match, a broken structure, data after an unfinished batch) is an
//! error, since it may hold acknowledged writes.
//!
//! The journal format is fjall 3's (`fjall/src/journal/entry.rs`): a batch is a start
//! `[1][item count u32][seqno u64]`, its items `[2][value type u8][compression u8][keyspace u64]
//! [key len u16][value len u32][stored len u32][key][stored value]` (or clears `[4][keyspace
//! u64]`), then an end `[3][xxh3 of the items' bytes u64]["FJL" 3]`, all little-endian. A test
//! checks this reader against journals fjall writes, and a journal in which not one batch reads
//! is refused rather than cut, so a format this build does not know is never taken for damage.

use std::fs::{File, OpenOptions};
use std::hash::Hasher;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use uuid::Uuid;
use xxhash_rust::xxh3::Xxh3;

use crate::error::Error;

const TAG_START: u8 = 1;
const TAG_ITEM: u8 = 2;
const TAG_END: u8 = 3;
const TAG_CLEAR: u8 = 4;
const END_TRAILER: [u8; 4] = [b'F', b'J', b'L', 3];

/// Keys of a damaged batch named in its report; the rest are counted.
const REPORTED_KEYS: usize = 20;

/// Why the last good batch is not the end of a journal's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Damage {
    /// A batch without its end, followed only by zeros: a write cut short.
    Unfinished,
    /// Anything else: the text says what.
    Corrupt(String),
}

/// One journal's scan.
#[derive(Debug)]
pub(crate) struct JournalScan {
    pub(crate) path: PathBuf,
    /// Bytes of whole, valid batches from the start.
    pub(crate) valid_end: u64,
    /// Whole, valid batches.
    pub(crate) batches: u64,
    /// One past the last non-zero byte of the file.
    pub(crate) data_end: u64,
    /// `None` when only zeros follow the last good batch.
    pub(crate) damage: Option<Damage>,
    /// Keys of the items read from the first bad batch (at most [`REPORTED_KEYS`]).
    pub(crate) keys: Vec<Vec<u8>>,
    /// Items read from the first bad batch.
    pub(crate) items: u64,
}

/// BLOCKING: checks every journal in the fjall database at `dir` and cuts back each damaged one,
/// keeping the bytes cut in `quarantine_dir`. Returns the journals that were cut.
pub(crate) fn repair_journals(
    dir: &Path,
    quarantine_dir: &Path,
    shard: u16,
) -> Result<Vec<JournalScan>, Error> {
    let mut journals = journal_files(dir)?;
    journals.sort();
    let mut cut = Vec::new();
    for (_, path) in journals {
        let scan = scan(&path)?;
        let Some(damage) = scan.damage.clone() else {
            continue;
        };
        if scan.batches == 0 && damage != Damage::Unfinished {
            return Err(Error::corrupt(format!(
                "journal {}: not one batch reads in its {} bytes ({}); refusing to cut it (a \
                 journal format this build does not know?). Move it aside to start without it",
                path.display(),
                scan.data_end,
                describe(&damage),
            )));
        }
        let kept = keep(&scan, quarantine_dir)?;
        let journal = OpenOptions::new().write(true).open(&path)?;
        journal.set_len(scan.valid_end)?;
        journal.sync_all()?;
        report(shard, &scan, &damage, &kept);
        cut.push(scan);
    }
    Ok(cut)
}

/// Where a database's cut journal tails are kept: `dir` with `.quarantine` appended
/// (`data/shards/NN.quarantine/`).
pub(crate) fn quarantine_dir(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".quarantine");
    PathBuf::from(name)
}

fn journal_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".jnl"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(id) = id {
            out.push((id, path));
        }
    }
    Ok(out)
}

fn describe(damage: &Damage) -> String {
    match damage {
        Damage::Unfinished => "a batch without its end, then zeros".into(),
        Damage::Corrupt(what) => what.clone(),
    }
}

/// Copies the bytes after the last good batch into `quarantine_dir`; returns the copy's path.
fn keep(scan: &JournalScan, quarantine_dir: &Path) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(quarantine_dir)?;
    let name = scan
        .path
        .file_name()
        .map_or_else(|| "journal".into(), |n| n.to_string_lossy().into_owned());
    let at = super::quarantine::wall_clock_ms();
    let copy = quarantine_dir.join(format!("{name}-from-{}-at-{at}.bin", scan.valid_end));
    let mut from = File::open(&scan.path)?;
    from.seek(SeekFrom::Start(scan.valid_end))?;
    let mut to = File::create(&copy)?;
    io::copy(&mut from.take(scan.data_end - scan.valid_end), &mut to)?;
    to.flush()?;
    to.sync_all()?;
    File::open(quarantine_dir)?.sync_all()?;
    Ok(copy)
}

fn report(shard: u16, scan: &JournalScan, damage: &Damage, kept: &Path) {
    let keys: Vec<String> = scan.keys.iter().map(|k| describe_key(k)).collect();
    let keys = keys.join(", ");
    let bytes = scan.data_end - scan.valid_end;
    let journal = scan.path.display();
    let kept = kept.display();
    match damage {
        Damage::Unfinished => tracing::warn!(
            shard,
            %journal,
            kept_at = %kept,
            "journal recovered up to its last complete batch ({} of them, {} bytes): an unfinished \
             batch after it ({bytes} bytes, {} items, keys: [{keys}]), a write cut short by a crash or \
             a failed write and so never acknowledged, is discarded; its bytes are kept",
            scan.batches,
            scan.valid_end,
            scan.items,
        ),
        Damage::Corrupt(what) => tracing::error!(
            shard,
            %journal,
            kept_at = %kept,
            "journal DAMAGED: recovered up to its last good batch ({} of them, {} bytes); the \
             {bytes} bytes after it are cut off and kept ({what}). The first bad batch held {} \
             items (keys: [{keys}]); it and anything after it may have been acknowledged",
            scan.batches,
            scan.valid_end,
            scan.items,
        ),
    }
}

/// A key on one printable line: ids as UUIDs, backlog keys decoded, anything else as text or hex.
pub(super) fn describe_key(key: &[u8]) -> String {
    if let Ok(pending) = crate::PendingKey::decode(key) {
        return format!(
            "pending {}/{}/delivery-{} due {}",
            pending.channel.as_str(),
            pending.notification,
            pending.index,
            pending.due_ms
        );
    }
    match (key.len(), key.get(..16).map(<[u8; 16]>::try_from)) {
        // Notification ids are UUIDv7; a 16-byte key that is not one is an idempotency-key hash.
        (16, Some(Ok(id))) if Uuid::from_bytes(id).get_version_num() == 7 => {
            Uuid::from_bytes(id).to_string()
        }
        (18, Some(Ok(id))) => format!(
            "{}/delivery-{}",
            Uuid::from_bytes(id),
            u16::from_be_bytes([key[16], key[17]])
        ),
        _ if key.iter().all(|b| b.is_ascii_graphic()) => String::from_utf8_lossy(key).into_owned(),
        // Anything else is shown in hex: raw bytes (a newline among them) would break the line.
        _ => key.iter().fold(String::from("0x"), |mut s, b| {
            s.push_str(&format!("{b:02x}"));
            s
        }),
    }
}

/// How reading a batch ended, when it did not end well.
enum Stop {
    /// End of file, or a zero where a tag belongs: clean at a batch boundary, else unfinished.
    Ended,
    /// Bytes that are not a batch.
    Bad(String),
}

/// BLOCKING: reads the journal at `path` batch by batch.
pub(crate) fn scan(path: &Path) -> Result<JournalScan, Error> {
    let file = File::open(path)?;
    let mut r = Reader {
        inner: BufReader::with_capacity(1 << 16, file),
        pos: 0,
        at_end: false,
    };
    let mut s = JournalScan {
        path: path.to_path_buf(),
        valid_end: 0,
        batches: 0,
        data_end: 0,
        damage: None,
        keys: Vec::new(),
        items: 0,
    };
    let stop = loop {
        s.keys.clear();
        s.items = 0;
        match read_batch(&mut r, &mut s)? {
            Ok(()) => {
                s.valid_end = r.pos;
                s.batches += 1;
            }
            Err(stop) => break stop,
        }
    };
    // Where the data really ends: past the reading point, only zeros are expected.
    let mut file = r.inner.into_inner();
    let read_to = if r.at_end {
        file.metadata()?.len()
    } else {
        r.pos
    };
    s.data_end = last_non_zero(&mut file, s.valid_end)?;
    s.damage = match stop {
        _ if s.data_end <= s.valid_end => None,
        Stop::Ended if s.data_end <= read_to => Some(Damage::Unfinished),
        Stop::Ended if read_to == s.valid_end || read_to == s.valid_end + 1 => {
            Some(Damage::Corrupt(format!(
                "non-zero bytes after the last batch, up to byte {}",
                s.data_end
            )))
        }
        Stop::Ended => Some(Damage::Corrupt(format!(
            "an unfinished batch at byte {} followed by more data, up to byte {}",
            s.valid_end, s.data_end
        ))),
        Stop::Bad(what) => Some(Damage::Corrupt(format!("at byte {}: {what}", s.valid_end))),
    };
    Ok(s)
}

/// Reads one batch; the outer error is a failed read, the inner one where the batch stops.
fn read_batch(r: &mut Reader, s: &mut JournalScan) -> io::Result<Result<(), Stop>> {
    match r.tag()? {
        None | Some(0) => return Ok(Err(Stop::Ended)),
        Some(TAG_START) => {}
        Some(t) => return Ok(Err(Stop::Bad(format!("tag {t} where a batch starts")))),
    }
    let Some(head) = r.exact::<12>()? else {
        return Ok(Err(Stop::Ended));
    };
    let count = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let mut hasher = Xxh3::new();
    for _ in 0..count {
        match r.tag()? {
            None | Some(0) => return Ok(Err(Stop::Ended)),
            Some(TAG_ITEM) => {
                let Some(h) = r.exact::<20>()? else {
                    return Ok(Err(Stop::Ended));
                };
                if h[1] > 1 {
                    return Ok(Err(Stop::Bad(format!("compression tag {}", h[1]))));
                }
                hasher.update(&[TAG_ITEM]);
                hasher.update(&h);
                let key_len = usize::from(u16::from_le_bytes([h[10], h[11]]));
                let stored_len = u64::from(u32::from_le_bytes([h[16], h[17], h[18], h[19]]));
                let mut key = vec![0; key_len];
                if !r.fill(&mut key)? {
                    return Ok(Err(Stop::Ended));
                }
                hasher.update(&key);
                if !r.hash(stored_len, &mut hasher)? {
                    return Ok(Err(Stop::Ended));
                }
                s.items += 1;
                if s.keys.len() < REPORTED_KEYS {
                    s.keys.push(key);
                }
            }
            Some(TAG_CLEAR) => {
                let Some(ks) = r.exact::<8>()? else {
                    return Ok(Err(Stop::Ended));
                };
                hasher.update(&[TAG_CLEAR]);
                hasher.update(&ks);
                s.items += 1;
            }
            Some(t) => return Ok(Err(Stop::Bad(format!("tag {t} inside a batch")))),
        }
    }
    match r.tag()? {
        None | Some(0) => return Ok(Err(Stop::Ended)),
        Some(TAG_END) => {}
        Some(t) => {
            let what = format!("tag {t} where the end of a batch of {count} items belongs");
            return Ok(Err(Stop::Bad(what)));
        }
    }
    let Some(end) = r.exact::<12>()? else {
        return Ok(Err(Stop::Ended));
    };
    if end[8..] != END_TRAILER {
        return Ok(Err(Stop::Bad("a batch end without its trailer".into())));
    }
    let checksum = u64::from_le_bytes([
        end[0], end[1], end[2], end[3], end[4], end[5], end[6], end[7],
    ]);
    if hasher.finish() != checksum {
        return Ok(Err(Stop::Bad(format!(
            "a batch of {count} items whose checksum does not match"
        ))));
    }
    Ok(Ok(()))
}

/// One past the last non-zero byte of `file` at or after `from` (`from` if there is none). Reads
/// only the file's data regions: the zeros fjall preallocates (64 MiB a journal) are a hole.
fn last_non_zero(file: &mut File, from: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 16];
    let (mut pos, mut last) = (from, from);
    while let Some((start, end)) = next_data(file, pos)? {
        file.seek(SeekFrom::Start(start))?;
        let mut at = start;
        while at < end {
            let want = usize::try_from(end - at).map_or(buf.len(), |n| n.min(buf.len()));
            let n = file.read(&mut buf[..want])?;
            if n == 0 {
                return Ok(last);
            }
            if let Some(i) = buf[..n].iter().rposition(|&b| b != 0) {
                last = at + i as u64 + 1;
            }
            at += n as u64;
        }
        pos = end;
    }
    Ok(last)
}

/// The next data region `[start, end)` of `file` at or after `pos` (`SEEK_DATA`/`SEEK_HOLE`; a
/// file system without them reports the whole rest of the file as data), `None` past the last.
fn next_data(file: &File, pos: u64) -> io::Result<Option<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let Ok(at) = libc::off_t::try_from(pos) else {
        return Ok(None);
    };
    // SAFETY: lseek on a descriptor this function borrows, with a valid whence.
    let start = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
    if start < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: as above.
    let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
    if end < 0 {
        return Err(io::Error::last_os_error());
    }
    let (start, end) = (start as u64, end as u64);
    Ok((end > start).then_some((start, end)))
}

/// A buffered reader that knows its position and tells a short read from a failed one.
struct Reader {
    inner: BufReader<File>,
    /// Bytes read by whole reads.
    pos: u64,
    /// A read ran into the end of the file (having consumed the rest of it).
    at_end: bool,
}

impl Reader {
    fn tag(&mut self) -> io::Result<Option<u8>> {
        Ok(self.exact::<1>()?.map(|[t]| t))
    }

    fn exact<const N: usize>(&mut self) -> io::Result<Option<[u8; N]>> {
        let mut b = [0u8; N];
        Ok(self.fill(&mut b)?.then_some(b))
    }

    /// Fills `buf`; `false` at the end of the file.
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.at_end = true;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Feeds the next `len` bytes to `hasher` without holding them; `false` at the end of the file.
    fn hash(&mut self, len: u64, hasher: &mut Xxh3) -> io::Result<bool> {
        let mut left = len;
        let mut buf = [0u8; 8192];
        while left > 0 {
            let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            if !self.fill(&mut buf[..n])? {
                return Ok(false);
            }
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::describe_key;
    use crate::{Channel, PendingKey};
    use uuid::Uuid;

    #[test]
    fn every_key_is_described_on_one_printable_line() {
        let id = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0a0a);
        let pending = PendingKey {
            channel: Channel::Apns,
            due_ms: 0x0a0a_0a0a_0a0a,
            notification: id,
            index: 10,
        };
        let described = describe_key(&pending.encode());
        assert_eq!(
            described,
            format!("pending apns/{id}/delivery-10 due {}", 0x0a0a_0a0a_0a0a_u64)
        );
        assert_eq!(describe_key(id.as_bytes()), id.to_string());
        // A 16-byte idempotency-key hash (not a UUIDv7) with a newline among its bytes.
        let hash = [b'\n'; 16];
        assert_eq!(describe_key(&hash), format!("0x{}", "0a".repeat(16)));
        assert_eq!(describe_key(b"meta/format"), "meta/format");
        for key in [&pending.encode()[..], &hash, b"a\nb", &[0xff, 0x00]] {
            let d = describe_key(key);
            assert!(d.chars().all(|c| c.is_ascii_graphic() || c == ' '), "{d:?}");
        }
    }
}
