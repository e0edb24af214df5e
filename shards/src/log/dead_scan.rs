//! Dead letters read by the storage thread (see `dead.rs` for the keyspace's layout): a page of
//! the time-ordered letters, newest first, that a filter matches, or the letters of given
//! delivery ids; with their notifications when the caller is to replay them.
//!
//! One scan examines at most [`MAX_DEAD_EXAMINED`] letters, so a filter that matches few of
//! many never holds the storage thread for long: it answers what it found with where it stopped
//! (`resume`), and the caller goes on from there.

use std::ops::Bound;

use uuid::Uuid;

use super::scan::Reader;
use super::storage::Handles;
use crate::dead::{DeadKey, DeadLetter, DeadSelection, id_key, time_floor};
use crate::error::Error;
use crate::record::NotificationRecord;

/// Most letters one scan decodes and tests against its filter.
pub const MAX_DEAD_EXAMINED: usize = 65_536;

/// Most letters one scan returns (the caller's `limit` is bounded by it).
pub const SCAN_DEAD_MAX: usize = 4096;

/// A page of dead letters, from [`ShardLog::scan_dead`](super::ShardLog::scan_dead).
#[derive(Debug, Default)]
pub struct DeadScan {
    /// The letters found, newest first (by id: in the order asked, those that exist).
    pub items: Vec<(DeadKey, DeadLetter)>,
    /// Their notifications, each once, updates folded in (only when asked for).
    pub records: Vec<NotificationRecord>,
    /// Where the scan stopped short of the end of its range (its limit, or the examined
    /// bound): everything above this key was examined, nothing at or below it. `None` when the
    /// range was read to its end.
    pub resume: Option<DeadKey>,
}

/// Reads the letters `selection` picks below `below` (exclusive; from the newest when `None`),
/// up to `limit`.
pub(super) fn scan_dead(
    handles: &Handles,
    selection: &DeadSelection,
    below: Option<DeadKey>,
    limit: usize,
    with_records: bool,
) -> Result<DeadScan, Error> {
    let limit = limit.clamp(1, SCAN_DEAD_MAX);
    let mut scan = match selection {
        DeadSelection::Filter(filter) => {
            let lower = time_floor(filter.since_ms.unwrap_or(0));
            let mut upper = Bound::Excluded(time_floor(filter.until_ms.unwrap_or(u64::MAX)));
            if let Some(b) = below {
                let b = b.encode();
                if filter.until_ms.is_none_or(|t| b < time_floor(t)) {
                    upper = Bound::Excluded(b);
                }
            }
            let mut scan = DeadScan::default();
            let mut examined = 0;
            let mut last_examined = None;
            for guard in handles.dead.range((Bound::Included(lower), upper)).rev() {
                let (key, value) = guard.into_inner()?;
                let Some((key, letter)) = decode(&key, &value) else {
                    continue;
                };
                if scan.items.len() >= limit || examined >= MAX_DEAD_EXAMINED {
                    // Stopped before `key`: everything down to the last examined one was seen.
                    scan.resume = last_examined;
                    break;
                }
                examined += 1;
                last_examined = Some(key);
                if filter.matches(&key, &letter) {
                    scan.items.push((key, letter));
                }
            }
            scan
        }
        DeadSelection::Ids(ids) => {
            let mut scan = DeadScan::default();
            for id in ids.iter().take(limit) {
                let Some(body) = handles.dead.get(id_key(*id))? else {
                    continue;
                };
                let Ok(key) = DeadKey::from_body(&body) else {
                    tracing::error!(delivery = %id, "a dead letter's id key does not decode; skipped");
                    continue;
                };
                let Some(value) = handles.dead.get(key.encode())? else {
                    continue;
                };
                if let Some(found) = decode(&key.encode(), &value) {
                    scan.items.push(found);
                }
            }
            scan
        }
    };
    if with_records {
        let mut ids: Vec<Uuid> = scan.items.iter().map(|(k, _)| k.notification).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut reader = Reader::new(handles);
        for id in ids {
            match reader.read(id) {
                Ok(Some(n)) => scan.records.push(n),
                Ok(None) => {}
                Err(e @ Error::Corrupt { .. }) => {
                    tracing::error!(error = %e, "a dead letter's notification does not decode; skipped");
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(scan)
}

/// A stored letter, or `None` (reported) when it does not decode: one bad letter must not make
/// every list fail.
fn decode(key: &[u8], value: &[u8]) -> Option<(DeadKey, DeadLetter)> {
    match (DeadKey::decode(key), DeadLetter::decode(value)) {
        (Ok(k), Ok(l)) => Some((k, l)),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "a dead letter does not decode; skipped");
            None
        }
    }
}
