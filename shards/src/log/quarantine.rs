//! Quarantine: where the log moves a stored entry that does not decode, so that one corrupt record
//! neither stops the shard from starting nor disappears. The raw key and value leave the live
//! keyspace and enter the `quarantine` keyspace in one fjall batch (durable at recovery, with the
//! group's fsync in a sweep), each is reported on an error line naming its key and why, and the
//! log's stats count the entries held (`LogStats::quarantined`). Nothing reads them back: they
//! are kept for a person to inspect (or repair and re-insert).
//!
//! A quarantine key is `<keyspace name> 0x00 <original key> <quarantined at, ms, u64 BE>`, so the
//! same key quarantined twice keeps both values.

use fjall::{Database, OwnedWriteBatch, PersistMode};

use super::fold::CorruptEntry;
use super::storage::Handles;
use super::{Keyspace, SWEEP_CHUNK_RECORDS};
use crate::error::Error;

/// The fjall keyspace that holds quarantined entries.
pub(crate) const QUARANTINE_KEYSPACE: &str = "quarantine";

/// Entries reported one error line each per recovery or sweep; past it, one summary line counts
/// the rest, so a badly damaged log cannot flood the server's log.
const REPORTED_ENTRIES: u64 = 100;

/// Milliseconds since the Unix epoch (0 if the clock is before it): when an entry was quarantined.
pub(super) fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The quarantine key of `key` from keyspace `ks`, quarantined at `now_ms`.
pub(crate) fn quarantine_key(ks: Keyspace, key: &[u8], now_ms: u64) -> Vec<u8> {
    let name = ks.name().as_bytes();
    let mut out = Vec::with_capacity(name.len() + 1 + key.len() + 8);
    out.extend_from_slice(name);
    out.push(0);
    out.extend_from_slice(key);
    out.extend_from_slice(&now_ms.to_be_bytes());
    out
}

/// Moves corrupt entries into quarantine through the batches it is given, and reports them.
pub(super) struct Quarantine {
    shard: u16,
    now_ms: u64,
    moved: u64,
}

impl Quarantine {
    pub(super) fn new(shard: u16, now_ms: u64) -> Self {
        Quarantine {
            shard,
            now_ms,
            moved: 0,
        }
    }

    /// Adds the move of `entry` (from keyspace `ks`) to `batch`, and reports it.
    pub(super) fn stage(
        &mut self,
        batch: &mut OwnedWriteBatch,
        h: &Handles,
        ks: Keyspace,
        entry: &CorruptEntry,
    ) {
        let live = h.get(ks);
        batch.insert(
            &h.quarantine,
            quarantine_key(ks, &entry.key, self.now_ms),
            entry.value.as_slice(),
        );
        batch.remove(live, entry.key.as_slice());
        self.moved += 1;
        if self.moved <= REPORTED_ENTRIES {
            tracing::error!(
                shard = self.shard,
                keyspace = ks.name(),
                error = %entry.why,
                bytes = entry.value.len(),
                "corrupt record moved to quarantine; its raw bytes are kept in the quarantine keyspace"
            );
        }
    }

    /// Entries moved so far.
    pub(super) fn moved(&self) -> u64 {
        self.moved
    }

    /// Reports the entries not reported one by one.
    pub(super) fn finish(self) {
        if self.moved > REPORTED_ENTRIES {
            tracing::error!(
                shard = self.shard,
                moved = self.moved,
                unreported = self.moved - REPORTED_ENTRIES,
                "corrupt records moved to quarantine (only the first {REPORTED_ENTRIES} were reported one by one)"
            );
        }
    }
}

/// Quarantine at recovery, before the storage thread starts: each move is committed with an
/// fsync, in chunks of [`SWEEP_CHUNK_RECORDS`] entries, so a damaged log never builds one huge
/// batch.
pub(super) struct DurableMoves<'a> {
    db: &'a Database,
    batch: Option<OwnedWriteBatch>,
    staged: usize,
    quarantine: Quarantine,
}

impl<'a> DurableMoves<'a> {
    pub(super) fn new(db: &'a Database, shard: u16, now_ms: u64) -> Self {
        DurableMoves {
            db,
            batch: None,
            staged: 0,
            quarantine: Quarantine::new(shard, now_ms),
        }
    }

    /// Moves `entry` of keyspace `ks` into quarantine (durable by [`DurableMoves::finish`]).
    pub(super) fn add(
        &mut self,
        h: &Handles,
        ks: Keyspace,
        entry: &CorruptEntry,
    ) -> Result<(), Error> {
        let db = self.db;
        let batch = self
            .batch
            .get_or_insert_with(|| db.batch().durability(Some(PersistMode::SyncData)));
        self.quarantine.stage(batch, h, ks, entry);
        self.staged += 1;
        if self.staged >= SWEEP_CHUNK_RECORDS {
            self.commit()?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), Error> {
        self.staged = 0;
        match self.batch.take() {
            Some(batch) => batch.commit().map_err(Error::from),
            None => Ok(()),
        }
    }

    /// Commits what is left; returns how many entries were moved.
    pub(super) fn finish(mut self) -> Result<u64, Error> {
        self.commit()?;
        let moved = self.quarantine.moved();
        self.quarantine.finish();
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quarantine_key_names_its_keyspace_key_and_time() {
        let k = quarantine_key(Keyspace::Users, b"bob", 0x0102);
        assert_eq!(&k[..6], b"users\0");
        assert_eq!(&k[6..9], b"bob");
        assert_eq!(&k[9..], &0x0102u64.to_be_bytes());
    }
}
