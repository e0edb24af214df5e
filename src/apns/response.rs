//! What an APNs answer means: [`SendOutcome`] for the caller, and the follow-up the sender owes
//! (refresh the token and retry, hold token refreshes, replace the connection), mapped row by row
//! from Apple's status and reason table.

use http::{HeaderMap, StatusCode};
use std::time::Duration;

/// A `retry-after` longer than this is treated as this: the caller's own backoff takes over.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How one `send()` ended, and whether a retry can help.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// APNs accepted it; `apns_id` is the id it echoed (the one sent, if it echoed none or
    /// something that is not a UUID).
    Sent { apns_id: uuid::Uuid },
    /// Not delivered, but the same notification may succeed later: APNs answered about it
    /// (`429`, this device throttled). `retry_after` is APNs' hint when it gave one.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Not delivered, and APNs said nothing about this notification: it failed as a service
    /// (5xx) or could not be reached (connection refused or lost, TLS failure, timeout).
    Unavailable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Never deliverable as is; `deactivate_token` when the device token is gone for good.
    /// `unregistered_at_ms` is a `410`'s `timestamp`: when APNs last confirmed the token was no
    /// longer valid for the topic (unix ms). A device registered with us after it has been
    /// reinstalled and keeps its token; `None` when APNs gave no usable timestamp.
    Permanent {
        reason: String,
        deactivate_token: bool,
        unregistered_at_ms: Option<u64>,
    },
    /// Our credentials or topic are wrong: retrying burns the queue, an operator must act.
    ConfigFault { reason: String },
}

impl SendOutcome {
    /// Whether sending the same notification again could succeed.
    pub fn retry_can_help(&self) -> bool {
        matches!(
            self,
            SendOutcome::Retry { .. } | SendOutcome::Unavailable { .. }
        )
    }
}

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) outcome: SendOutcome,
    pub(crate) follow_up: FollowUp,
}

/// The answer's echo of the request's `apns-id` (a static name: no parsing per answer).
const APNS_ID: http::HeaderName = http::HeaderName::from_static("apns-id");

/// Maps one answer. `body` is the (possibly truncated) response body; `sent_id` the `apns-id`
/// we sent, used if APNs did not echo one.
pub(crate) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    sent_id: uuid::Uuid,
) -> Verdict {
    use super::jwt::TokenRejection::{Expired, Invalid};
    let parsed = error_body(body);
    let reason = parsed.reason.as_deref().unwrap_or("");
    let described = || match reason {
        "" => status.as_u16().to_string(),
        r => format!("{} {r}", status.as_u16()),
    };
    let retry = || SendOutcome::Retry {
        reason: described(),
        retry_after: retry_after(headers),
    };
    let unavailable = || SendOutcome::Unavailable {
        reason: described(),
        retry_after: retry_after(headers),
    };
    let permanent = |deactivate_token| SendOutcome::Permanent {
        reason: described(),
        deactivate_token,
        unregistered_at_ms: None,
    };
    let verdict = |outcome, follow_up| Verdict { outcome, follow_up };
    match (status.as_u16(), reason) {
        (200, _) => {
            let echoed = headers
                .get(APNS_ID)
                .and_then(|v| uuid::Uuid::try_parse_ascii(v.as_bytes()).ok());
            let apns_id = echoed.unwrap_or(sent_id);
            verdict(SendOutcome::Sent { apns_id }, FollowUp::None)
        }
        (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => {
            verdict(permanent(true), FollowUp::None)
        }
        (400, _) => verdict(permanent(false), FollowUp::None),
        (403, r) => {
            let fault = SendOutcome::ConfigFault {
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
            let gone = SendOutcome::Permanent {
                reason: described(),
                deactivate_token: true,
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

/// `retry-after` in delay-seconds form, capped at [`MAX_RETRY_AFTER`]. (HTTP-date values are
/// ignored: APNs does not send them.)
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::jwt::TokenRejection;
    use super::*;

    const SENT: uuid::Uuid = uuid::Uuid::from_u128(0x0F8FAD5B_D9CB_469F_A165_70867728950E);
    const ECHOED: &str = "5c1e7e5a-0000-4000-8000-00000000e40e";

    fn answer(status: u16, reason: &str) -> Verdict {
        let body = if reason.is_empty() {
            String::new()
        } else {
            format!(r#"{{"reason":"{reason}"}}"#)
        };
        classify(
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            body.as_bytes(),
            SENT,
        )
    }

    fn permanent(reason: &str, deactivate_token: bool) -> SendOutcome {
        SendOutcome::Permanent {
            reason: reason.into(),
            deactivate_token,
            unregistered_at_ms: None,
        }
    }

    fn gone(reason: &str, unregistered_at_ms: Option<u64>) -> SendOutcome {
        SendOutcome::Permanent {
            reason: reason.into(),
            deactivate_token: true,
            unregistered_at_ms,
        }
    }

    fn body_answer(status: u16, body: &str) -> SendOutcome {
        let status = StatusCode::from_u16(status).unwrap();
        classify(status, &HeaderMap::new(), body.as_bytes(), SENT).outcome
    }

    fn retry(reason: &str) -> SendOutcome {
        SendOutcome::Retry {
            reason: reason.into(),
            retry_after: None,
        }
    }

    fn unavailable(reason: &str) -> SendOutcome {
        SendOutcome::Unavailable {
            reason: reason.into(),
            retry_after: None,
        }
    }

    #[test]
    fn ok_is_sent_with_the_echoed_or_sent_id() {
        let mut headers = HeaderMap::new();
        headers.insert("apns-id", ECHOED.parse().unwrap());
        let v = classify(StatusCode::OK, &headers, b"", SENT);
        assert_eq!(
            v.outcome,
            SendOutcome::Sent {
                apns_id: ECHOED.parse().unwrap()
            }
        );
        assert_eq!(answer(200, "").outcome, SendOutcome::Sent { apns_id: SENT });
        // Not an id: the one sent stands.
        headers.insert("apns-id", "not-a-uuid".parse().unwrap());
        let v = classify(StatusCode::OK, &headers, b"", SENT);
        assert_eq!(v.outcome, SendOutcome::Sent { apns_id: SENT });
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
            SendOutcome::ConfigFault {
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
                SendOutcome::ConfigFault {
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
        let unregistered = classify(StatusCode::GONE, &HeaderMap::new(), body, SENT);
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
        let html = classify(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b"<html>", SENT);
        assert_eq!(html.outcome, unavailable("502"));
        let injected = classify(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            br#"{"reason":"a\nb"}"#,
            SENT,
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
            SENT,
        );
        let expected = Some(Duration::from_secs(120));
        assert_eq!(
            v.outcome,
            SendOutcome::Retry {
                reason: "429 TooManyRequests".into(),
                retry_after: expected
            }
        );
        headers.insert("retry-after", "999999".parse().unwrap());
        let capped = classify(StatusCode::SERVICE_UNAVAILABLE, &headers, b"", SENT);
        assert!(
            matches!(capped.outcome, SendOutcome::Unavailable { retry_after: Some(d), .. } if d == MAX_RETRY_AFTER)
        );
        headers.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        let date = classify(StatusCode::SERVICE_UNAVAILABLE, &headers, b"", SENT);
        assert!(matches!(
            date.outcome,
            SendOutcome::Unavailable {
                retry_after: None,
                ..
            }
        ));
    }
}
