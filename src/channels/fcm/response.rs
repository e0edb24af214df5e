//! FCM's answers (HTTP v1), each as a [`Verdict`]: the status, and the `errorCode` of the
//! `google.firebase.fcm.v1.FcmError` detail in the error body (`UNREGISTERED`, ...), or the
//! error's `status` when there is none.

use http::{HeaderMap, StatusCode};
use serde_json::Value;

use clarion_shards::Verdict;

use crate::h2client::retry_after_ms;

/// What the sender does besides reporting the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FollowUp {
    None,
    /// `401 UNAUTHENTICATED`: the access token was refused; fetch another and send again once.
    RetryWithNewToken,
}

/// An answer classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Classified {
    pub(crate) outcome: Verdict,
    pub(crate) follow_up: FollowUp,
}

/// The error body's code: the FcmError detail's `errorCode`, else the error's `status`.
fn error_code(body: &[u8]) -> (String, String) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = &v["error"];
    let detail = e["details"].as_array().and_then(|ds| {
        ds.iter()
            .filter(|d| {
                d["@type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("google.firebase.fcm.v1.FcmError"))
            })
            .find_map(|d| d["errorCode"].as_str())
    });
    let code = detail
        .or_else(|| e["status"].as_str())
        .unwrap_or("")
        .to_string();
    let message = e["message"].as_str().unwrap_or("").to_string();
    (code, message)
}

/// Maps one answer of the send endpoint.
pub(crate) fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Classified {
    let plain = |outcome| Classified {
        outcome,
        follow_up: FollowUp::None,
    };
    if status == StatusCode::OK {
        return plain(Verdict::Sent);
    }
    let (code, message) = error_code(body);
    let described = if code.is_empty() {
        status.as_u16().to_string()
    } else {
        format!("{} {code}", status.as_u16())
    };
    let permanent = |deactivate: Option<String>| Verdict::Permanent {
        reason: described.clone(),
        deactivate,
        unregistered_at_ms: None,
    };
    let unavailable = || Verdict::Unavailable {
        reason: described.clone(),
        retry_after_ms: retry_after_ms(headers),
    };
    let fault = || Verdict::ConfigFault {
        reason: if message.is_empty() {
            described.clone()
        } else {
            format!("{described}: {message}")
        },
    };
    match (status.as_u16(), code.as_str()) {
        (404, "UNREGISTERED") => plain(permanent(Some(code.clone()))),
        (403, "SENDER_ID_MISMATCH") => plain(permanent(Some(code.clone()))),
        // A malformed registration token: FCM says so in the message.
        (400, "INVALID_ARGUMENT") if message.contains("registration token") => {
            plain(permanent(Some(code.clone())))
        }
        (400, _) => plain(permanent(None)),
        (401, "THIRD_PARTY_AUTH_ERROR") => plain(fault()),
        (401, _) => Classified {
            outcome: fault(),
            follow_up: FollowUp::RetryWithNewToken,
        },
        // The project's credentials or setup: an operator must act.
        (403 | 404, _) => plain(fault()),
        // The project's quota, not this device's fault: wait, spending no attempt.
        (429, _) => plain(unavailable()),
        (500..=599, _) => plain(unavailable()),
        _ => plain(permanent(None)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn body(status: &str, code: Option<&str>, message: &str) -> String {
        let details = code.map_or(serde_json::json!([]), |c| {
            serde_json::json!([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": c}])
        });
        serde_json::json!({"error": {"code": 0, "message": message, "status": status, "details": details}}).to_string()
    }

    fn answer(status: u16, b: &str, retry_after: Option<&str>) -> Classified {
        let mut h = HeaderMap::new();
        if let Some(r) = retry_after {
            h.insert(http::header::RETRY_AFTER, r.parse().unwrap());
        }
        classify(StatusCode::from_u16(status).unwrap(), &h, b.as_bytes())
    }

    fn deactivates(c: &Classified) -> Option<&str> {
        match &c.outcome {
            Verdict::Permanent { deactivate, .. } => deactivate.as_deref(),
            _ => None,
        }
    }

    #[test]
    fn gone_tokens_deactivate_with_fcms_reason() {
        let c = answer(
            404,
            &body(
                "NOT_FOUND",
                Some("UNREGISTERED"),
                "Requested entity was not found.",
            ),
            None,
        );
        assert_eq!(deactivates(&c), Some("UNREGISTERED"));
        let c = answer(
            403,
            &body(
                "PERMISSION_DENIED",
                Some("SENDER_ID_MISMATCH"),
                "SenderId mismatch",
            ),
            None,
        );
        assert_eq!(deactivates(&c), Some("SENDER_ID_MISMATCH"));
        let c = answer(
            400,
            &body(
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                "The registration token is not a valid FCM registration token",
            ),
            None,
        );
        assert_eq!(deactivates(&c), Some("INVALID_ARGUMENT"));
        let c = answer(
            400,
            &body(
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                "Invalid value at 'message.android.ttl'",
            ),
            None,
        );
        assert!(
            matches!(
                c.outcome,
                Verdict::Permanent {
                    deactivate: None,
                    ..
                }
            ),
            "{c:?}"
        );
    }

    #[test]
    fn auth_and_project_faults_are_configuration_faults() {
        let c = answer(
            401,
            &body(
                "UNAUTHENTICATED",
                Some("THIRD_PARTY_AUTH_ERROR"),
                "APNs cert",
            ),
            None,
        );
        assert!(matches!(c.outcome, Verdict::ConfigFault { .. }));
        assert_eq!(c.follow_up, FollowUp::None);
        let c = answer(
            401,
            &body(
                "UNAUTHENTICATED",
                None,
                "Request had invalid authentication credentials.",
            ),
            None,
        );
        assert_eq!(c.follow_up, FollowUp::RetryWithNewToken);
        assert!(matches!(c.outcome, Verdict::ConfigFault { .. }));
        let c = answer(403, &body("PERMISSION_DENIED", None, "no permission"), None);
        assert!(matches!(c.outcome, Verdict::ConfigFault { .. }));
        let c = answer(404, &body("NOT_FOUND", None, "project not found"), None);
        assert!(matches!(c.outcome, Verdict::ConfigFault { .. }));
    }

    #[test]
    fn quota_and_server_errors_wait_for_retry_after() {
        let c = answer(
            429,
            &body("RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED"), "quota"),
            Some("7"),
        );
        assert_eq!(
            c.outcome,
            Verdict::Unavailable {
                reason: "429 QUOTA_EXCEEDED".into(),
                retry_after_ms: Some(7000)
            }
        );
        let c = answer(503, &body("UNAVAILABLE", Some("UNAVAILABLE"), "down"), None);
        assert!(matches!(
            c.outcome,
            Verdict::Unavailable {
                retry_after_ms: None,
                ..
            }
        ));
        let c = answer(500, "not json", None);
        assert_eq!(
            c.outcome,
            Verdict::Unavailable {
                reason: "500".into(),
                retry_after_ms: None
            }
        );
        assert_eq!(
            answer(200, r#"{"name":"projects/p/messages/1"}"#, None).outcome,
            Verdict::Sent
        );
    }
}
