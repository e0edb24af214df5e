//! A provider's `retry-after` header (RFC 9110 section 10.2.3) in delay-seconds form, which is
//! what APNs, FCM and the push services send. A delay past [`MAX_RETRY_AFTER`] is held to it:
//! the caller's own backoff takes over from there. HTTP-date values are ignored.

use std::time::Duration;

use http::HeaderMap;

/// The longest `retry-after` believed.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The header's delay in milliseconds, if it holds delay-seconds.
pub(crate) fn retry_after_ms(headers: &HeaderMap) -> Option<u64> {
    let seconds: u64 = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(
        seconds
            .saturating_mul(1000)
            .min(MAX_RETRY_AFTER.as_millis() as u64),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn with(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, v.parse().unwrap());
        h
    }

    #[test]
    fn delay_seconds_are_read_and_capped() {
        assert_eq!(retry_after_ms(&with("7")), Some(7000));
        assert_eq!(retry_after_ms(&with(" 2 ")), Some(2000));
        assert_eq!(retry_after_ms(&with("999999")), Some(3_600_000));
        assert_eq!(retry_after_ms(&with("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after_ms(&HeaderMap::new()), None);
    }
}
