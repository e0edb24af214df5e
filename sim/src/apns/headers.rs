//! One pass over a request's headers: the first value of each header APNs reads, and whether
//! any of them was sent twice. Replaces a dozen map lookups by name (each parsing and hashing
//! the name) with a single walk; `first` is what `HeaderMap::get` would return.

use http::{HeaderMap, HeaderValue};

/// Headers that APNs rejects with `DuplicateHeaders` when sent twice, in slot order.
const SINGLE_HEADERS: [&str; 7] = [
    "authorization",
    "apns-id",
    "apns-topic",
    "apns-push-type",
    "apns-priority",
    "apns-expiration",
    "apns-collapse-id",
];

/// Slots of [`HeaderScan::get`].
#[derive(Clone, Copy)]
pub(crate) enum Slot {
    Authorization = 0,
    ApnsId = 1,
    Topic = 2,
    PushType = 3,
    Priority = 4,
    Expiration = 5,
    CollapseId = 6,
}

/// The APNs headers of one request, found in one pass.
pub(crate) struct HeaderScan<'a> {
    first: [Option<&'a HeaderValue>; SINGLE_HEADERS.len()],
    duplicated: bool,
}

impl<'a> HeaderScan<'a> {
    pub(crate) fn new(h: &'a HeaderMap) -> Self {
        let mut scan = HeaderScan {
            first: [None; SINGLE_HEADERS.len()],
            duplicated: false,
        };
        for (name, value) in h {
            let name = name.as_str();
            if let Some(i) = SINGLE_HEADERS.iter().position(|n| *n == name) {
                match scan.first[i] {
                    Some(_) => scan.duplicated = true,
                    None => scan.first[i] = Some(value),
                }
            }
        }
        scan
    }

    /// The header's first value.
    pub(crate) fn get(&self, slot: Slot) -> Option<&'a HeaderValue> {
        self.first[slot as usize]
    }

    /// Whether one of the single-valued headers came more than once.
    pub(crate) fn duplicated(&self) -> bool {
        self.duplicated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_first_values_and_duplicates() {
        let mut h = HeaderMap::new();
        h.append("apns-topic", HeaderValue::from_static("a"));
        h.append("x-other", HeaderValue::from_static("x"));
        let s = HeaderScan::new(&h);
        assert_eq!(
            s.get(Slot::Topic).map(HeaderValue::as_bytes),
            Some(&b"a"[..])
        );
        assert!(s.get(Slot::ApnsId).is_none());
        assert!(!s.duplicated());
        h.append("apns-topic", HeaderValue::from_static("b"));
        let s = HeaderScan::new(&h);
        assert_eq!(
            s.get(Slot::Topic).map(HeaderValue::as_bytes),
            Some(&b"a"[..])
        );
        assert!(s.duplicated());
    }
}
