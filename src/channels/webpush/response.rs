//! A push service's answers (RFC 8030), each as a [`Verdict`]: `201` delivered to the push
//! service; `404` and `410` the subscription is gone (deactivated with the status's reason);
//! `413` too large and other `4xx` permanent, `403` among them (RFC 8292 4.2: our VAPID key is
//! not the one this subscription was made with, a fault of that subscription, not of the
//! channel); `401` our VAPID token refused, a configuration fault; `429` and `5xx` the service
//! failing, waited out honouring `retry-after`.

use clarion_shards::Verdict;
use http::{HeaderMap, StatusCode};

use crate::h2client::retry_after_ms;

pub(crate) fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Verdict {
    let reason = status.canonical_reason().unwrap_or("");
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let described = format!("{} {reason}", status.as_u16())
        .trim_end()
        .to_string();
    match status.as_u16() {
        200..=299 => Verdict::Sent,
        404 | 410 => Verdict::Permanent {
            reason: described,
            deactivate: Some(reason.to_string()),
            unregistered_at_ms: None,
        },
        403 => Verdict::permanent(format!(
            "{described}: the subscription was made for another VAPID key: {text}"
        )),
        401 => Verdict::ConfigFault {
            reason: format!("{described}: the push service refused our VAPID token: {text}"),
        },
        429 | 500..=599 => Verdict::Unavailable {
            reason: described,
            retry_after_ms: retry_after_ms(headers),
        },
        _ => Verdict::permanent(if text.is_empty() {
            described
        } else {
            format!("{described}: {text}")
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn answer(status: u16, retry_after: Option<&str>) -> Verdict {
        let mut h = HeaderMap::new();
        if let Some(r) = retry_after {
            h.insert(http::header::RETRY_AFTER, r.parse().unwrap());
        }
        classify(StatusCode::from_u16(status).unwrap(), &h, b"")
    }

    #[test]
    fn gone_subscriptions_deactivate_and_the_rest_follow_rfc_8030() {
        assert_eq!(answer(201, None), Verdict::Sent);
        for (status, why) in [(404, "Not Found"), (410, "Gone")] {
            assert!(
                matches!(answer(status, None), Verdict::Permanent { deactivate: Some(ref r), .. } if r == why),
                "{status}"
            );
        }
        assert!(matches!(
            answer(413, None),
            Verdict::Permanent {
                deactivate: None,
                ..
            }
        ));
        assert!(matches!(
            answer(400, None),
            Verdict::Permanent {
                deactivate: None,
                ..
            }
        ));
        assert!(matches!(answer(401, None), Verdict::ConfigFault { .. }));
        assert!(
            matches!(
                answer(403, None),
                Verdict::Permanent {
                    deactivate: None,
                    ..
                }
            ),
            "one subscription's key, not the channel's setup"
        );
        assert_eq!(
            answer(429, Some("3")),
            Verdict::Unavailable {
                reason: "429 Too Many Requests".into(),
                retry_after_ms: Some(3000)
            }
        );
        assert!(matches!(
            answer(503, None),
            Verdict::Unavailable {
                retry_after_ms: None,
                ..
            }
        ));
    }
}
