//! `GET /v1/notifications/{id}`: renders a notification record (each delivery's state and its
//! history) as the JSON the API returns, with RFC 3339 UTC timestamps.

use clarion_shards::{DeliveryRecord, NotificationRecord};

use crate::channels::rules;
use serde_json::{Value, json};

/// Formats milliseconds since the Unix epoch as RFC 3339 UTC with millisecond precision.
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

/// A short summary of where a notification stands, from its deliveries' states.
fn overall_state(n: &NotificationRecord) -> &'static str {
    if n.deliveries.is_empty() {
        "no_targets"
    } else if n.is_finished() {
        "finished"
    } else {
        "in_progress"
    }
}

fn delivery_json(d: &DeliveryRecord) -> Value {
    let history: Vec<Value> = d
        .history
        .iter()
        .map(|e| {
            let mut v = json!({ "at": rfc3339_ms(e.at_ms), "state": e.state.as_str(), "attempt": e.attempt });
            if let Some(r) = &e.reason {
                v["reason"] = json!(r);
            }
            v
        })
        .collect();
    let mut v = json!({
        "id": d.id.to_string(),
        "channel": d.channel.as_str(),
        "device_id": rules::of(d.channel).device_id(&d.target),
        "state": d.state.as_str(),
        "attempts": d.attempts,
        "history": history,
    });
    if let Some(at) = d.next_attempt_at_ms.filter(|_| !d.state.is_terminal()) {
        v["next_attempt_at"] = json!(rfc3339_ms(at));
    }
    v
}

pub fn notification_json(n: &NotificationRecord) -> Value {
    json!({
        "id": n.id.to_string(),
        "user_id": n.user_id,
        "idempotency_key": n.idempotency_key,
        "accepted_at": rfc3339_ms(n.accepted_at_ms),
        "state": overall_state(n),
        "deliveries": n.deliveries.iter().map(delivery_json).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_795_305_600_000), "2026-11-22T00:00:00.000Z");
    }
}
