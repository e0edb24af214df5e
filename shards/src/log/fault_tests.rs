//! Tests of the shard log where time and faults matter: lazy writes synced on time under a steady
//! stream, writes handed to the OS per group (so a process crash loses none), corrupt records
//! quarantined at recovery, damaged journal tails cut back to their last good batch.

use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use tempfile::TempDir;

use super::fold::delivery_update_key;
use super::journal;
use super::*;
use crate::ids::IdGenerator;
use crate::record::{Channel, DeliveryRecord, NotificationContent, NotificationRecord, UserRecord};

const NOW: u64 = 1_700_000_000_000;

fn config(dir: &TempDir, fsync: bool) -> LogConfig {
    LogConfig {
        dir: dir.path().join("shard-00"),
        shard: 0,
        fsync,
        dedup_window_ms: 60_000,
    }
}

/// Whether any file under `dir` holds `needle` (what the OS has, whatever fjall still buffers).
fn on_disk(dir: &std::path::Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let path = e.path();
        if path.is_dir() {
            on_disk(&path, needle)
        } else {
            std::fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        }
    })
}

#[test]
fn lazy_writes_in_a_steady_stream_are_synced_within_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(config(&dir, true), NOW).unwrap();
    let before = log.stats().fsyncs;
    let started = Instant::now();
    let mut first_sync = None;
    // One lazy write every 5 ms for 400 ms: the timer used to restart at each, so none synced.
    for i in 0..80u32 {
        let mut b = WriteBatch::new();
        b.put(Keyspace::Users, format!("u{i}"), b"v");
        log.submit_nowait(b).unwrap();
        if first_sync.is_none() && log.stats().fsyncs > before {
            first_sync = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let first = first_sync.expect("a steady stream of lazy writes was never synced");
    assert!(
        first <= LAZY_SYNC_INTERVAL + Duration::from_millis(150),
        "first fsync after {first:?}"
    );
    let synced = log.stats().fsyncs - before;
    assert!(synced >= 2, "{synced} fsyncs in 400 ms of lazy writes");
    log.join().unwrap();
}

#[test]
fn without_fsync_an_acknowledged_write_is_already_in_the_os() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(config(&dir, false), NOW).unwrap();
    let mut b = WriteBatch::new();
    b.put(Keyspace::Users, "u", b"durable-marker-0123456789");
    block_on(log.submit(b).unwrap()).unwrap();
    assert!(
        on_disk(&dir.path().join("shard-00"), b"durable-marker-0123456789"),
        "an acknowledged write is still in fjall's buffer"
    );
    assert_eq!(log.stats().fsyncs, 0, "fsync off");
    log.join().unwrap();
}

#[test]
fn a_lazy_write_is_in_the_os_once_its_group_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(config(&dir, true), NOW).unwrap();
    let mut b = WriteBatch::new();
    b.put(Keyspace::Users, "u", b"lazy-marker-0123456789");
    log.submit_nowait(b).unwrap();
    // A read is answered after every group before it.
    block_on(log.get(Keyspace::Meta, META_FORMAT).unwrap()).unwrap();
    assert!(
        on_disk(&dir.path().join("shard-00"), b"lazy-marker-0123456789"),
        "a lazy write is still in fjall's buffer"
    );
    log.join().unwrap();
}

fn notification(id: uuid::Uuid) -> NotificationRecord {
    NotificationRecord {
        id,
        user_id: "alice".into(),
        idempotency_key: format!("key-{id}"),
        accepted_at_ms: NOW,
        content: NotificationContent::default(),
        deliveries: vec![DeliveryRecord::new_queued(id, Channel::Apns, "token", NOW)],
    }
}

/// The notifications waiting in the APNs backlog, once each, in backlog order (a key whose
/// notification is gone is skipped, as the shard drops it).
fn open_records(log: &ShardLog) -> Vec<NotificationRecord> {
    let scan = block_on(
        log.scan_pending(Channel::Apns, None, u64::MAX, SCAN_PENDING_MAX)
            .unwrap(),
    )
    .unwrap();
    let mut seen = Vec::new();
    for (_, slot) in scan.items {
        if let Some(i) = slot {
            if !seen.contains(&i) {
                seen.push(i);
            }
        }
    }
    seen.into_iter().map(|i| scan.records[i].clone()).collect()
}

/// Adds `n` and its backlog keys, as the shard accepts it.
fn put_accepted(batch: &mut WriteBatch, n: &NotificationRecord) {
    batch.put_notification(n);
    for key in crate::PendingKey::for_open_deliveries(n) {
        batch.put_pending(&key);
    }
}

/// Every `(key, value)` of fjall keyspace `name` in the closed log at `dir`.
fn raw_entries(dir: &std::path::Path, name: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = fjall::Database::builder(dir).open().unwrap();
    let ks = db
        .keyspace(name, fjall::KeyspaceCreateOptions::default)
        .unwrap();
    ks.iter()
        .map(|g| {
            let (k, v) = g.into_inner().unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

#[test]
fn corrupt_records_are_quarantined_with_their_bytes_and_recovery_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir, true);
    let (log, _) = open(cfg.clone(), NOW).unwrap();
    let mut ids = IdGenerator::new(0, 1);
    let (a, b, c) = (
        notification(ids.next(NOW)),
        notification(ids.next(NOW)),
        notification(ids.next(NOW)),
    );
    let alice = UserRecord {
        user_id: "alice".into(),
        ..UserRecord::default()
    };
    let mut batch = WriteBatch::new();
    batch.put_user(&alice);
    batch.put(Keyspace::Users, "bob", vec![9, b'{', b'}']);
    put_accepted(&mut batch, &a);
    put_accepted(&mut batch, &c);
    for key in crate::PendingKey::for_open_deliveries(&b) {
        batch.put_pending(&key);
    }
    // b's record does not decode; its update goes with it. a's update does not decode.
    batch.put(
        Keyspace::Notifications,
        b.id.as_bytes().as_slice(),
        b"\x02\xff\xff",
    );
    let b_update = b.deliveries[0].encode_update();
    batch.put(
        Keyspace::Notifications,
        delivery_update_key(b.id, 0).as_slice(),
        b_update.clone(),
    );
    batch.put(
        Keyspace::Notifications,
        delivery_update_key(a.id, 0).as_slice(),
        b"\x02\x99",
    );
    block_on(log.submit(batch).unwrap()).unwrap();
    log.join().unwrap();

    let (log, rec) = open(cfg.clone(), NOW).expect("a corrupt record no longer stops recovery");
    assert_eq!(rec.users, vec![alice]);
    assert_eq!(
        rec.backlog,
        vec![3, 0, 0],
        "b's key stays until the shard meets it"
    );
    assert_eq!(
        open_records(&log),
        vec![a.clone(), c.clone()],
        "a keeps its state before the bad update"
    );
    assert_eq!(log.stats().quarantined, 4);
    assert!(
        block_on(log.get_notification(b.id).unwrap())
            .unwrap()
            .is_none()
    );
    log.join().unwrap();

    let held = raw_entries(&cfg.dir, "quarantine");
    let originals: Vec<(Vec<u8>, Vec<u8>)> = held
        .iter()
        .map(|(k, v)| (k[..k.len() - 8].to_vec(), v.clone()))
        .collect();
    let q = |ks: &str, key: &[u8]| [ks.as_bytes(), b"\0", key].concat();
    for expected in [
        (q("users", b"bob"), vec![9, b'{', b'}']),
        (
            q("notifications", b.id.as_bytes()),
            b"\x02\xff\xff".to_vec(),
        ),
        (q("notifications", &delivery_update_key(b.id, 0)), b_update),
        (
            q("notifications", &delivery_update_key(a.id, 0)),
            b"\x02\x99".to_vec(),
        ),
    ] {
        assert!(
            originals.contains(&expected),
            "{expected:?} not in {originals:?}"
        );
    }

    // Moved, not copied: the next start finds nothing new, and still counts what is held.
    let (log, _) = open(cfg, NOW).unwrap();
    assert_eq!(open_records(&log).len(), 2);
    assert_eq!(log.stats().quarantined, 4);
    log.join().unwrap();
}

#[test]
fn a_corrupt_backlog_key_is_quarantined_and_recovery_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir, true);
    let (log, _) = open(cfg.clone(), NOW).unwrap();
    let n = notification(IdGenerator::new(0, 2).next(NOW));
    let mut batch = WriteBatch::new();
    put_accepted(&mut batch, &n);
    batch.put(Keyspace::Pending, b"short", []);
    block_on(log.submit(batch).unwrap()).unwrap();
    log.join().unwrap();
    let (log, rec) = open(cfg, NOW).unwrap();
    assert_eq!(rec.backlog, vec![1, 0, 0]);
    assert_eq!(open_records(&log), vec![n]);
    assert_eq!(log.stats().quarantined, 1);
    log.join().unwrap();
}

#[test]
fn a_sweep_quarantines_a_corrupt_record_below_the_recovery_scan() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir, true);
    let (log, _) = open(cfg.clone(), NOW).unwrap();
    let mut ids = IdGenerator::new(0, 3);
    let old = ids.next(NOW - 3_600_000);
    let mark = ids.next(NOW);
    let mut batch = WriteBatch::new();
    batch.put(
        Keyspace::Notifications,
        old.as_bytes().as_slice(),
        b"\x02\xff",
    );
    block_on(log.submit(batch).unwrap()).unwrap();
    log.join().unwrap();
    // Below the dedup window: recovery does not read it, the sweep does.
    let (log, _) = open(cfg, NOW).unwrap();
    assert_eq!(log.stats().quarantined, 0);
    let swept = block_on(log.sweep(*mark.as_bytes()).unwrap()).unwrap();
    assert_eq!(swept, 0);
    assert_eq!(log.stats().quarantined, 1);
    let again = block_on(log.sweep(*mark.as_bytes()).unwrap());
    assert_eq!(again.unwrap(), 0, "the sweep is not stuck on it");
    assert_eq!(log.stats().quarantined, 1);
    log.join().unwrap();
}

/// Writes one notification per durable batch; returns them.
fn write_each(log: &ShardLog, ids: &mut IdGenerator, n: usize) -> Vec<NotificationRecord> {
    (0..n)
        .map(|_| {
            let rec = notification(ids.next(NOW));
            let mut b = WriteBatch::new();
            put_accepted(&mut b, &rec);
            block_on(log.submit(b).unwrap()).unwrap();
            rec
        })
        .collect()
}

/// The journal of the log at `dir` with the highest number (fjall's active one).
fn newest_journal(dir: &std::path::Path) -> std::path::PathBuf {
    let mut journals: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir)
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
    journals.pop().expect("a journal").1
}

/// A log with five notifications, each in its own batch, closed; and its newest journal.
fn five_in_a_journal(dir: &TempDir) -> (LogConfig, Vec<NotificationRecord>, std::path::PathBuf) {
    let cfg = config(dir, true);
    let (log, _) = open(cfg.clone(), NOW).unwrap();
    let written = write_each(&log, &mut IdGenerator::new(0, 9), 5);
    log.join().unwrap();
    let journal = newest_journal(&cfg.dir);
    (cfg, written, journal)
}

fn kept_tails(cfg: &LogConfig) -> Vec<Vec<u8>> {
    std::fs::read_dir(journal::quarantine_dir(&cfg.dir))
        .map(|d| {
            d.map(|e| std::fs::read(e.unwrap().path()).unwrap())
                .collect()
        })
        .unwrap_or_default()
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}

fn flip(path: &std::path::Path, at: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
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
}

#[test]
fn fjalls_journals_read_whole_batch_by_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _, journal) = five_in_a_journal(&dir);
    let scan = journal::scan(&journal).unwrap();
    assert_eq!(scan.damage, None, "{scan:?}");
    assert!(scan.batches >= 5, "{scan:?}");
    assert_eq!(scan.valid_end, scan.data_end);
    assert!(
        std::fs::metadata(&journal).unwrap().len() > scan.data_end,
        "fjall preallocates zeros past the data"
    );
    // Reopened, written again and closed, it still reads whole.
    let (log, _) = open(cfg.clone(), NOW).unwrap();
    assert_eq!(open_records(&log).len(), 5);
    write_each(&log, &mut IdGenerator::new(0, 10), 3);
    log.join().unwrap();
    let scan = journal::scan(&newest_journal(&cfg.dir)).unwrap();
    assert_eq!(scan.damage, None, "{scan:?}");
    assert!(kept_tails(&cfg).is_empty());
}

#[test]
fn a_journal_cut_mid_batch_recovers_up_to_its_last_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, written, journal) = five_in_a_journal(&dir);
    let end = journal::scan(&journal).unwrap().data_end;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap()
        .set_len(end - 5)
        .unwrap();
    let scan = journal::scan(&journal).unwrap();
    assert_eq!(scan.damage, Some(journal::Damage::Unfinished), "{scan:?}");
    let (log, _) = open(cfg.clone(), NOW).unwrap();
    assert_eq!(
        open_records(&log),
        written[..4],
        "the last batch was cut in two"
    );
    let kept = kept_tails(&cfg);
    assert_eq!(kept.len(), 1);
    assert!(kept[0].windows(16).any(|w| w == written[4].id.as_bytes()));
    log.join().unwrap();
}

#[test]
fn a_flipped_byte_in_the_last_batch_cuts_it_off_instead_of_stopping_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, written, journal) = five_in_a_journal(&dir);
    let end = journal::scan(&journal).unwrap().data_end;
    flip(&journal, end - 20);
    // fjall alone refuses the journal: its last batch fails its checksum.
    let copy = tempfile::tempdir().unwrap();
    copy_tree(&cfg.dir, copy.path());
    let refused = fjall::Database::builder(copy.path()).open();
    assert!(
        refused.is_err(),
        "fjall opened a journal with a bad checksum"
    );
    let scan = journal::scan(&journal).unwrap();
    assert!(
        matches!(scan.damage, Some(journal::Damage::Corrupt(ref w)) if w.contains("checksum")),
        "{scan:?}"
    );
    let (log, _) = open(cfg.clone(), NOW).unwrap();
    assert_eq!(open_records(&log), written[..4]);
    assert_eq!(kept_tails(&cfg).len(), 1);
    log.join().unwrap();
}

#[test]
fn garbage_after_the_last_batch_is_cut_and_kept_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, written, journal) = five_in_a_journal(&dir);
    let end = journal::scan(&journal).unwrap().data_end;
    flip(&journal, end + 100);
    let (log, _) = open(cfg.clone(), NOW).unwrap();
    assert_eq!(open_records(&log), written);
    let kept = kept_tails(&cfg);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].len(), 101, "from the last batch to the garbage");
    log.join().unwrap();
}

#[test]
fn a_journal_in_which_no_batch_reads_is_refused_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _, journal) = five_in_a_journal(&dir);
    flip(&journal, 0);
    let len = std::fs::metadata(&journal).unwrap().len();
    match open(cfg.clone(), NOW) {
        Err(Error::Corrupt { what }) => assert!(what.contains("refusing to cut"), "{what}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        std::fs::metadata(&journal).unwrap().len(),
        len,
        "left as it was"
    );
}
