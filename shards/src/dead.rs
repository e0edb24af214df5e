//! Dead letters: deliveries that failed for good (their attempts ran out, or they sat behind a
//! configuration fault too long), kept in the log's `dead` keyspace where people can list them,
//! send them again (replay) or throw them away (purge). A delivery with a dead letter keeps its
//! notification past the retention sweep until the letter is replayed or purged.
//!
//! Two kinds of key share the keyspace, told apart by their first byte:
//!
//! - `0x00 ++ dead_at_ms (u64 BE) ++ notification id (16) ++ delivery index (u16 BE)`, 27 bytes
//!   ([`DeadKey`]) → the [`DeadLetter`] (versioned, below). Byte order is time order, so a list
//!   newest first is one reverse range scan, and `since`/`until` bound the range.
//! - `0x01 ++ delivery id (16)`, 17 bytes ([`id_key`]) → the 26 bytes of the time key after its
//!   prefix: finds a dead letter by its delivery id (replay by id, and the sweep's question
//!   whether a dead delivery still has its letter).
//!
//! A letter and its id key are always written and removed together, in the batch that settles
//! the delivery dead (or replays or purges it).
//!
//! Value, version 1: `[1] ++ delivery id (16) ++ channel (u8) ++ reason (u8) ++ attempts (u32
//! BE) ++ user id, target (u16 BE length ++ UTF-8 each) ++ error (u32 BE length ++ UTF-8)`.
//! Everything a list shows is in it, so listing reads no notification.

use uuid::Uuid;

use crate::error::Error;
use crate::record::{Channel, DeliveryRecord, DeliveryState};

/// First byte of a time-ordered key.
const TIME_PREFIX: u8 = 0;
/// First byte of a delivery-id key.
const ID_PREFIX: u8 = 1;
/// Length of an encoded [`DeadKey`].
pub const DEAD_KEY_LEN: usize = 1 + 8 + 16 + 2;
/// Length of a delivery-id key.
pub const DEAD_ID_KEY_LEN: usize = 1 + 16;
/// The version byte [`DeadLetter::encode`] writes.
const DEAD_FORMAT_VERSION: u8 = 1;
/// Longest error text kept in a letter: the provider's reason with our prefix fits many times
/// over; a longer one is cut (at a character boundary), so one letter stays small.
pub const MAX_DEAD_ERROR_BYTES: usize = 1024;

/// Where a dead letter sits in time order: when its delivery died, then which delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeadKey {
    pub dead_at_ms: u64,
    pub notification: Uuid,
    pub index: u16,
}

impl DeadKey {
    /// The key's bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; DEAD_KEY_LEN] {
        let mut k = [0u8; DEAD_KEY_LEN];
        k[0] = TIME_PREFIX;
        k[1..].copy_from_slice(&self.body());
        k
    }

    /// The key without its prefix: what an id key points at, and what a cursor carries.
    #[must_use]
    pub fn body(&self) -> [u8; DEAD_KEY_LEN - 1] {
        let mut b = [0u8; DEAD_KEY_LEN - 1];
        b[..8].copy_from_slice(&self.dead_at_ms.to_be_bytes());
        b[8..24].copy_from_slice(self.notification.as_bytes());
        b[24..].copy_from_slice(&self.index.to_be_bytes());
        b
    }

    /// Reads a key written by [`DeadKey::encode`].
    pub fn decode(bytes: &[u8]) -> Result<DeadKey, Error> {
        match bytes.split_first() {
            Some((&TIME_PREFIX, body)) => DeadKey::from_body(body),
            _ => Err(Error::corrupt(format!(
                "dead key: expected {DEAD_KEY_LEN} bytes starting {TIME_PREFIX}, found {} bytes",
                bytes.len()
            ))),
        }
    }

    /// Reads what [`DeadKey::body`] wrote.
    pub fn from_body(body: &[u8]) -> Result<DeadKey, Error> {
        let b: &[u8; DEAD_KEY_LEN - 1] = body.try_into().map_err(|_| {
            Error::corrupt(format!(
                "dead key: expected {} bytes, found {}",
                DEAD_KEY_LEN - 1,
                body.len()
            ))
        })?;
        let mut at = [0u8; 8];
        at.copy_from_slice(&b[..8]);
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[8..24]);
        Ok(DeadKey {
            dead_at_ms: u64::from_be_bytes(at),
            notification: Uuid::from_bytes(id),
            index: u16::from_be_bytes([b[24], b[25]]),
        })
    }

    /// The key as an opaque cursor for the API (lower-case hex of [`DeadKey::body`]).
    #[must_use]
    pub fn cursor(&self) -> String {
        use std::fmt::Write;
        self.body().iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// Reads a cursor made by [`DeadKey::cursor`]; `None` if it is not one.
    #[must_use]
    pub fn from_cursor(cursor: &str) -> Option<DeadKey> {
        if cursor.len() != 2 * (DEAD_KEY_LEN - 1) || !cursor.is_ascii() {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..cursor.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&cursor[i..i + 2], 16).ok())
            .collect();
        DeadKey::from_body(&bytes?).ok()
    }
}

/// The key that finds delivery `id`'s dead letter.
#[must_use]
pub fn id_key(id: Uuid) -> [u8; DEAD_ID_KEY_LEN] {
    let mut k = [0u8; DEAD_ID_KEY_LEN];
    k[0] = ID_PREFIX;
    k[1..].copy_from_slice(id.as_bytes());
    k
}

/// The first key of the time-ordered part at or after `dead_at_ms`.
#[must_use]
pub fn time_floor(dead_at_ms: u64) -> [u8; DEAD_KEY_LEN] {
    DeadKey {
        dead_at_ms,
        notification: Uuid::nil(),
        index: 0,
    }
    .encode()
}

/// Why a delivery died.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeadReason {
    /// Every attempt the retry policy allows failed retryably.
    RetriesExhausted,
    /// Its channel answered with a configuration fault (bad credentials, a channel that is
    /// off) for longer than `[delivery] config_fault_dead_after_seconds`.
    ConfigFault,
}

impl DeadReason {
    /// Every reason.
    pub const ALL: &'static [DeadReason] = &[DeadReason::RetriesExhausted, DeadReason::ConfigFault];

    /// The reason's name in the API: `retries_exhausted` or `config_fault`.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            DeadReason::RetriesExhausted => "retries_exhausted",
            DeadReason::ConfigFault => "config_fault",
        }
    }

    /// The reason named `name` in the API.
    #[must_use]
    pub fn parse(name: &str) -> Option<DeadReason> {
        DeadReason::ALL.iter().copied().find(|r| r.as_str() == name)
    }

    fn byte(self) -> u8 {
        match self {
            DeadReason::RetriesExhausted => 0,
            DeadReason::ConfigFault => 1,
        }
    }
}

/// One dead delivery, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub delivery_id: Uuid,
    pub user_id: String,
    pub channel: Channel,
    /// The delivery's target as its channel sends to it (a token, a browser's subscription):
    /// its channel's rules give the device id the API shows.
    pub target: String,
    pub reason: DeadReason,
    /// The last error (the reason of the delivery's `dead` event), at most
    /// [`MAX_DEAD_ERROR_BYTES`].
    pub error: String,
    pub attempts: u32,
}

impl DeadLetter {
    /// The letter of `delivery`, dead for `reason`: its last error is the reason its `dead`
    /// event gives.
    #[must_use]
    pub fn of(user_id: &str, delivery: &DeliveryRecord, reason: DeadReason) -> DeadLetter {
        DeadLetter {
            delivery_id: delivery.id,
            user_id: user_id.to_string(),
            channel: delivery.channel,
            target: delivery.target.clone(),
            reason,
            error: delivery
                .history
                .iter()
                .rev()
                .find(|e| e.state == DeliveryState::Dead)
                .and_then(|e| e.reason.clone())
                .unwrap_or_default(),
            attempts: delivery.attempts,
        }
    }

    /// The stored value.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let error = cut(&self.error, MAX_DEAD_ERROR_BYTES);
        let mut out = Vec::with_capacity(
            1 + 16 + 2 + 4 + 2 + self.user_id.len() + 2 + self.target.len() + 4 + error.len(),
        );
        out.push(DEAD_FORMAT_VERSION);
        out.extend_from_slice(self.delivery_id.as_bytes());
        out.push(self.channel.index() as u8);
        out.push(self.reason.byte());
        out.extend_from_slice(&self.attempts.to_be_bytes());
        for s in [
            cut(&self.user_id, usize::from(u16::MAX)),
            cut(&self.target, usize::from(u16::MAX)),
        ] {
            // `cut` bounds it to u16::MAX bytes.
            out.extend_from_slice(&(s.len() as u16).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out.extend_from_slice(&(error.len() as u32).to_be_bytes());
        out.extend_from_slice(error.as_bytes());
        out
    }

    /// Reads a value written by [`DeadLetter::encode`]: a letter or `Corrupt`, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<DeadLetter, Error> {
        let mut r = Reader(bytes);
        let version = r.take::<1>()?[0];
        if version != DEAD_FORMAT_VERSION {
            return Err(Error::corrupt(format!(
                "dead letter: unknown format version {version}"
            )));
        }
        let delivery_id = Uuid::from_bytes(r.take::<16>()?);
        let c = r.take::<1>()?[0];
        let channel = Channel::ALL
            .iter()
            .copied()
            .find(|x| x.index() == usize::from(c))
            .ok_or_else(|| Error::corrupt(format!("dead letter: unknown channel {c}")))?;
        let b = r.take::<1>()?[0];
        let reason = DeadReason::ALL
            .iter()
            .copied()
            .find(|x| x.byte() == b)
            .ok_or_else(|| Error::corrupt(format!("dead letter: unknown reason {b}")))?;
        let attempts = u32::from_be_bytes(r.take::<4>()?);
        let user_len = usize::from(u16::from_be_bytes(r.take::<2>()?));
        let user_id = r.text(user_len)?;
        let target_len = usize::from(u16::from_be_bytes(r.take::<2>()?));
        let target = r.text(target_len)?;
        let error_len = u32::from_be_bytes(r.take::<4>()?) as usize;
        let error = r.text(error_len)?;
        if !r.0.is_empty() {
            return Err(Error::corrupt("dead letter: trailing bytes"));
        }
        Ok(DeadLetter {
            delivery_id,
            user_id,
            channel,
            target,
            reason,
            error,
            attempts,
        })
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or_else(|| Error::corrupt("dead letter: truncated"))?;
        self.0 = rest;
        Ok(*head)
    }

    fn text(&mut self, len: usize) -> Result<String, Error> {
        if self.0.len() < len {
            return Err(Error::corrupt("dead letter: truncated"));
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(head.to_vec()).map_err(|_| Error::corrupt("dead letter: not UTF-8"))
    }
}

/// Which dead letters a list, replay or purge is about: every field that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeadFilter {
    pub channel: Option<Channel>,
    pub reason: Option<DeadReason>,
    /// Died at or after this time (Unix ms).
    pub since_ms: Option<u64>,
    /// Died before this time (Unix ms).
    pub until_ms: Option<u64>,
}

impl DeadFilter {
    /// Whether the letter under `key` matches.
    #[must_use]
    pub fn matches(&self, key: &DeadKey, letter: &DeadLetter) -> bool {
        self.channel.is_none_or(|c| c == letter.channel)
            && self.reason.is_none_or(|r| r == letter.reason)
            && self.since_ms.is_none_or(|t| key.dead_at_ms >= t)
            && self.until_ms.is_none_or(|t| key.dead_at_ms < t)
    }
}

/// The dead letters a replay or purge acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeadSelection {
    /// Every letter the filter matches.
    Filter(DeadFilter),
    /// The letters of these deliveries (those that have one).
    Ids(Vec<Uuid>),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn letter() -> DeadLetter {
        DeadLetter {
            delivery_id: Uuid::from_u128(42),
            user_id: "alice".into(),
            channel: Channel::Fcm,
            target: "tok:1".into(),
            reason: DeadReason::RetriesExhausted,
            error: "retries exhausted: 503 UNAVAILABLE".into(),
            attempts: 8,
        }
    }

    #[test]
    fn a_letter_reads_back_as_written() {
        let l = letter();
        assert_eq!(DeadLetter::decode(&l.encode()).unwrap(), l);
        let c = DeadLetter {
            reason: DeadReason::ConfigFault,
            channel: Channel::Webpush,
            ..letter()
        };
        assert_eq!(DeadLetter::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn a_long_error_is_cut_at_a_character_boundary() {
        let l = DeadLetter {
            error: "é".repeat(MAX_DEAD_ERROR_BYTES),
            ..letter()
        };
        let back = DeadLetter::decode(&l.encode()).unwrap();
        assert_eq!(back.error.len(), MAX_DEAD_ERROR_BYTES);
        assert!(back.error.chars().all(|c| c == 'é'));
    }

    #[test]
    fn keys_sort_by_time_then_delivery_and_cursors_round_trip() {
        let a = DeadKey {
            dead_at_ms: 5,
            notification: Uuid::from_u128(9),
            index: 1,
        };
        let b = DeadKey {
            dead_at_ms: 6,
            notification: Uuid::from_u128(1),
            index: 0,
        };
        assert!(a.encode() < b.encode());
        assert!(time_floor(6) <= b.encode() && time_floor(6) > a.encode());
        assert_eq!(DeadKey::decode(&a.encode()).unwrap(), a);
        assert_eq!(DeadKey::from_cursor(&a.cursor()), Some(a));
        assert_eq!(DeadKey::from_cursor("zz"), None);
        assert_eq!(DeadKey::from_cursor(&"g".repeat(52)), None);
        assert!(id_key(Uuid::from_u128(1))[..] > time_floor(u64::MAX)[..]);
    }

    #[test]
    fn a_filter_matches_on_every_field_it_sets() {
        let key = DeadKey {
            dead_at_ms: 100,
            notification: Uuid::from_u128(1),
            index: 0,
        };
        let l = letter();
        assert!(DeadFilter::default().matches(&key, &l));
        let f = |f: DeadFilter| f.matches(&key, &l);
        assert!(f(DeadFilter {
            channel: Some(Channel::Fcm),
            ..Default::default()
        }));
        assert!(!f(DeadFilter {
            channel: Some(Channel::Apns),
            ..Default::default()
        }));
        assert!(!f(DeadFilter {
            reason: Some(DeadReason::ConfigFault),
            ..Default::default()
        }));
        assert!(f(DeadFilter {
            since_ms: Some(100),
            until_ms: Some(101),
            ..Default::default()
        }));
        assert!(!f(DeadFilter {
            until_ms: Some(100),
            ..Default::default()
        }));
        assert!(!f(DeadFilter {
            since_ms: Some(101),
            ..Default::default()
        }));
    }

    proptest! {
        #[test]
        fn any_bytes_decode_to_a_letter_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = DeadLetter::decode(&bytes);
            let _ = DeadKey::decode(&bytes);
        }

        #[test]
        fn any_letter_reads_back(user in "\\PC{0,40}", target in "\\PC{0,40}", error in "\\PC{0,80}", attempts in any::<u32>(), id in any::<u128>()) {
            let l = DeadLetter { delivery_id: Uuid::from_u128(id), user_id: user, target, error, attempts, ..letter() };
            prop_assert_eq!(DeadLetter::decode(&l.encode()).unwrap(), l);
        }

        #[test]
        fn a_damaged_letter_never_panics(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = letter().encode();
            let i = pos.index(bytes.len());
            bytes[i] = byte;
            let _ = DeadLetter::decode(&bytes);
        }
    }
}
