//! What an APNs answer means: [`Verdict`] for the caller, and the follow-up the sender owes
//! (refresh the token and retry, hold token refreshes, replace the connection), mapped row by row
//! from Apple's status and reason table.

use clarion_shards::Verdict;
use http::{HeaderMap, StatusCode};

pub use crate::h2client::MAX_RETRY_AFTER;
use crate::h2client::retry_after_ms;

/// What the sender does besides reporting the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FollowUp {
    None,
    /// 403 on the token: maybe refresh it, then retry once within the same `send()`; the
    /// verdict's outcome (a `ConfigFault`) stands if that retry fails too.
    RetryWithToken(super::jwt::TokenRejection),
    /// `429 TooManyProviderTokenUpdates`: stop refreshing for a while.
    HoldTokenRefresh,
    /// `503 Shutdown`: this connection is going away; replace it.
    Reconnect,
}

/// An answer classified: the verdict for the caller and what the sender owes besides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Classified {
    pub(crate) outcome: Verdict,
    pub(crate) follow_up: FollowUp,
}

/// Maps one answer. `body` is the (possibly truncated) response body. (A `200`'s `apns-id`
/// echoes the delivery id we sent: nothing to read in it.)
pub(crate) fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Classified {
    use super::jwt::TokenRejection::{Expired, Invalid};
    let parsed = error_body(body);
    let reason = parsed.reason.as_deref().unwrap_or("");
    let described = || match reason {
        "" => status.as_u16().to_string(),
        r => format!("{} {r}", status.as_u16()),
    };
    let retry = || Verdict::Retry {
        reason: described(),
        retry_after_ms: retry_after_ms(headers),
    };
    let unavailable = || Verdict::Unavailable {
        reason: described(),
        retry_after_ms: retry_after_ms(headers),
    };
    // A gone token is deactivated with Apple's reason (`BadDeviceToken`, `Unregistered`).
    let gone_because = || {
        Some(if reason.is_empty() {
            described()
        } else {
            reason.to_string()
        })
    };
    let permanent = |deactivate: bool| Verdict::Permanent {
        reason: described(),
        deactivate: deactivate.then(gone_because).flatten(),
        unregistered_at_ms: None,
    };
    let verdict = |outcome, follow_up| Classified { outcome, follow_up };
    match (status.as_u16(), reason) {
        (200, _) => verdict(Verdict::Sent, FollowUp::None),
        (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => {
            verdict(permanent(true), FollowUp::None)
        }
        (400, _) => verdict(permanent(false), FollowUp::None),
        (403, r) => {
            let fault = Verdict::ConfigFault {
                reason: described(),
            };
            let follow_up = match r {
                "ExpiredProviderToken" => FollowUp::RetryWithToken(Expired),
                "InvalidProviderToken" => FollowUp::RetryWithToken(Invalid),
                _ => FollowUp::None,
            };
            verdict(fault, follow_up)
        }
        (404 | 405, _) => verdict(permanent(false), FollowUp::None),
        (410, _) => {
            let gone = Verdict::Permanent {
                reason: described(),
                deactivate: gone_because(),
                unregistered_at_ms: parsed.timestamp_ms,
            };
            verdict(gone, FollowUp::None)
        }
        (413, _) => verdict(permanent(false), FollowUp::None),
        (429, "TooManyProviderTokenUpdates") => verdict(retry(), FollowUp::HoldTokenRefresh),
        (429, _) => verdict(retry(), FollowUp::None),
        (503, "Shutdown") => verdict(unavailable(), FollowUp::Reconnect),
        (code, _) if (500..600).contains(&code) => verdict(unavailable(), FollowUp::None),
        _ => verdict(permanent(false), FollowUp::None),
    }
}

/// What an error body says: `{"reason":"...","timestamp":<unix ms>}`, each part only if usable.
#[derive(Debug, Default, PartialEq, Eq)]
struct ErrorBody {
    reason: Option<String>,
    timestamp_ms: Option<u64>,
}

/// Parses an error body. Not JSON, or not an object: nothing. A reason that is not a short
/// alphanumeric word is dropped (it goes into logs and delivery histories); a timestamp that is
/// not a positive integer is dropped without losing the reason.
fn error_body(body: &[u8]) -> ErrorBody {
    #[derive(serde::Deserialize)]
    struct Raw {
        reason: Option<String>,
        // Any JSON value: a malformed timestamp must not cost the reason.
        timestamp: Option<serde_json::Value>,
    }
    if body.is_empty() {
        return ErrorBody::default();
    }
    let Ok(raw) = serde_json::from_slice::<Raw>(body) else {
        return ErrorBody::default();
    };
    ErrorBody {
        reason: raw.reason.filter(|r| {
            !r.is_empty() && r.len() <= 64 && r.bytes().all(|b| b.is_ascii_alphanumeric())
        }),
        timestamp_ms: raw
            .timestamp
            .as_ref()
            .and_then(serde_json::Value::as_u64)
            .filter(|&ms| ms > 0),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::jwt::TokenRejection;
    use super::*;

    fn answer(status: u16, reason: &str) -> Classified {
        let body = if reason.is_empty() {
            String::new()
        } else {
            format!(r#"{{"reason":"{reason}"}}"#)
        };
        classify(
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            body.as_bytes(),
        )
    }

    /// A permanent answer `reason` ("400 BadDeviceToken"); deactivating, with Apple's reason.
    fn permanent(reason: &str, deactivate: bool) -> Verdict {
        Verdict::Permanent {
            reason: reason.into(),
            deactivate: deactivate.then(|| apple_reason(reason)),
            unregistered_at_ms: None,
        }
    }

    /// "410 Unregistered" -> "Unregistered"; a bare status stays as it is.
    fn apple_reason(described: &str) -> String {
        described
            .split_once(' ')
            .map_or(described, |(_, r)| r)
            .to_string()
    }

    fn gone(reason: &str, unregistered_at_ms: Option<u64>) -> Verdict {
        Verdict::Permanent {
            reason: reason.into(),
            deactivate: Some(apple_reason(reason)),
            unregistered_at_ms,
        }
    }

    fn body_answer(status: u16, body: &str) -> Verdict {
        let status = StatusCode::from_u16(status).unwrap();
        classify(status, &HeaderMap::new(), body.as_bytes()).outcome
    }

    fn retry(reason: &str) -> Verdict {
        Verdict::Retry {
            reason: reason.into(),
            retry_after_ms: None,
        }
    }

    fn unavailable(reason: &str) -> Verdict {
        Verdict::Unavailable {
            reason: reason.into(),
            retry_after_ms: None,
        }
    }

    #[test]
    fn ok_is_sent_whatever_it_echoes() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "apns-id",
            "5c1e7e5a-0000-4000-8000-00000000e40e".parse().unwrap(),
        );
        assert_eq!(
            classify(StatusCode::OK, &headers, b"").outcome,
            Verdict::Sent
        );
        headers.insert("apns-id", "not-a-uuid".parse().unwrap());
        assert_eq!(
            classify(StatusCode::OK, &headers, b"").outcome,
            Verdict::Sent
        );
        assert_eq!(answer(200, "").outcome, Verdict::Sent);
        assert!(!answer(200, "").outcome.retry_can_help());
    }

    #[test]
    fn every_400_is_permanent_and_bad_tokens_deactivate() {
        for reason in ["BadDeviceToken", "DeviceTokenNotForTopic"] {
            assert_eq!(
                answer(400, reason).outcome,
                permanent(&format!("400 {reason}"), true)
            );
        }
        for reason in [
            "BadCollapseId",
            "BadExpirationDate",
            "BadMessageId",
            "BadPriority",
            "BadTopic",
            "DuplicateHeaders",
            "IdleTimeout",
            "InvalidPushType",
            "MissingDeviceToken",
            "MissingTopic",
            "PayloadEmpty",
            "TopicDisallowed",
        ] {
            let v = answer(400, reason);
            assert_eq!(v.outcome, permanent(&format!("400 {reason}"), false));
            assert_eq!(v.follow_up, FollowUp::None);
        }
    }

    #[test]
    fn provider_token_403s_retry_once_then_fault_and_other_403s_fault_at_once() {
        let expired = answer(403, "ExpiredProviderToken");
        assert_eq!(
            expired.outcome,
            Verdict::ConfigFault {
                reason: "403 ExpiredProviderToken".into()
            }
        );
        assert_eq!(
            expired.follow_up,
            FollowUp::RetryWithToken(TokenRejection::Expired)
        );
        let invalid = answer(403, "InvalidProviderToken");
        assert_eq!(
            invalid.follow_up,
            FollowUp::RetryWithToken(TokenRejection::Invalid)
        );
        for reason in [
            "BadCertificate",
            "BadCertificateEnvironment",
            "Forbidden",
            "MissingProviderToken",
        ] {
            let v = answer(403, reason);
            assert_eq!(
                v.outcome,
                Verdict::ConfigFault {
                    reason: format!("403 {reason}")
                }
            );
            assert_eq!(v.follow_up, FollowUp::None);
            assert!(!v.outcome.retry_can_help());
        }
    }

    #[test]
    fn bad_path_method_and_size_are_permanent_and_gone_tokens_deactivate() {
        assert_eq!(
            answer(404, "BadPath").outcome,
            permanent("404 BadPath", false)
        );
        assert_eq!(
            answer(405, "MethodNotAllowed").outcome,
            permanent("405 MethodNotAllowed", false)
        );
        assert_eq!(
            answer(413, "PayloadTooLarge").outcome,
            permanent("413 PayloadTooLarge", false)
        );
        let body = br#"{"reason":"Unregistered","timestamp":1700000000000}"#;
        let unregistered = classify(StatusCode::GONE, &HeaderMap::new(), body);
        assert_eq!(
            unregistered.outcome,
            gone("410 Unregistered", Some(1_700_000_000_000))
        );
        assert_eq!(
            answer(410, "ExpiredToken").outcome,
            gone("410 ExpiredToken", None)
        );
    }

    #[test]
    fn a_410_timestamp_is_read_and_a_missing_or_malformed_one_is_none() {
        let with = |ts: &str| {
            body_answer(
                410,
                &format!(r#"{{"reason":"Unregistered","timestamp":{ts}}}"#),
            )
        };
        assert_eq!(with("1"), gone("410 Unregistered", Some(1)));
        assert_eq!(
            with("18446744073709551615"),
            gone("410 Unregistered", Some(u64::MAX))
        );
        // Not a positive integer in ms: no timestamp, the reason kept, the token still deactivated.
        for bad in [
            "0",
            "-5",
            "1.7e12",
            "1700000000000.5",
            r#""1700000000000""#,
            "null",
            "[]",
            "{}",
            "18446744073709551616",
        ] {
            assert_eq!(with(bad), gone("410 Unregistered", None), "timestamp {bad}");
        }
        assert_eq!(
            body_answer(410, r#"{"timestamp":1700000000000}"#),
            gone("410", Some(1_700_000_000_000)),
            "a timestamp without a reason still counts"
        );
        assert_eq!(body_answer(410, ""), gone("410", None));
        assert_eq!(
            body_answer(410, r#"{"reason":"Unregistered","timestamp":17"#),
            gone("410", None),
            "truncated body"
        );
        // Only a 410's timestamp means anything.
        assert_eq!(
            body_answer(
                400,
                r#"{"reason":"BadDeviceToken","timestamp":1700000000000}"#
            ),
            permanent("400 BadDeviceToken", true)
        );
    }

    #[test]
    fn throttling_retries_and_server_errors_are_unavailable() {
        assert_eq!(
            answer(429, "TooManyRequests").outcome,
            retry("429 TooManyRequests")
        );
        let updates = answer(429, "TooManyProviderTokenUpdates");
        assert_eq!(updates.outcome, retry("429 TooManyProviderTokenUpdates"));
        assert_eq!(updates.follow_up, FollowUp::HoldTokenRefresh);
        assert_eq!(
            answer(500, "InternalServerError").outcome,
            unavailable("500 InternalServerError")
        );
        let service = answer(503, "ServiceUnavailable");
        assert_eq!(
            (service.outcome, service.follow_up),
            (unavailable("503 ServiceUnavailable"), FollowUp::None)
        );
        let shutdown = answer(503, "Shutdown");
        assert_eq!(
            (shutdown.outcome, shutdown.follow_up),
            (unavailable("503 Shutdown"), FollowUp::Reconnect)
        );
        assert!(answer(503, "Shutdown").outcome.retry_can_help());
    }

    #[test]
    fn unknown_statuses_are_unavailable_if_5xx_else_fail_and_odd_bodies_are_tolerated() {
        assert_eq!(answer(502, "").outcome, unavailable("502"));
        assert_eq!(
            answer(418, "Teapot").outcome,
            permanent("418 Teapot", false)
        );
        let html = classify(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b"<html>");
        assert_eq!(html.outcome, unavailable("502"));
        let injected = classify(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            br#"{"reason":"a\nb"}"#,
        );
        assert_eq!(injected.outcome, permanent("400", false));
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "120".parse().unwrap());
        let v = classify(
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            br#"{"reason":"TooManyRequests"}"#,
        );
        assert_eq!(
            v.outcome,
            Verdict::Retry {
                reason: "429 TooManyRequests".into(),
                retry_after_ms: Some(120_000)
            }
        );
        headers.insert("retry-after", "999999".parse().unwrap());
        let capped = classify(StatusCode::SERVICE_UNAVAILABLE, &headers, b"");
        assert!(
            matches!(capped.outcome, Verdict::Unavailable { retry_after_ms: Some(ms), .. } if u128::from(ms) == MAX_RETRY_AFTER.as_millis())
        );
        headers.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        let date = classify(StatusCode::SERVICE_UNAVAILABLE, &headers, b"");
        assert!(matches!(
            date.outcome,
            Verdict::Unavailable {
                retry_after_ms: None,
                ..
            }
        ));
    }
}
