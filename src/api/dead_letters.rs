//! `GET /v1/dead-letters`, `POST /v1/dead-letters/replay` and `DELETE /v1/dead-letters`: the
//! list's query string, the replay and purge bodies (delivery ids or a filter), and the list's
//! answer merged from every shard's page, newest first, with a cursor that resumes it.

use clarion_shards::{Channel, DeadFilter, DeadKey, DeadLetter, DeadReason, DeadSelection};
use serde_json::{Value, json};
use uuid::Uuid;

use super::error::ApiError;
use super::fields::{Fields, parse_object};
use super::status::rfc3339_ms;
use crate::channels::rules;
use crate::engine::dead::DeadPage;

/// Letters a list answers when the query does not say.
pub const DEFAULT_LIST_LIMIT: usize = 100;
/// Most letters one list answers: one page stays small to render and to send.
pub const MAX_LIST_LIMIT: usize = 1000;
/// Most delivery ids one replay or purge names.
pub const MAX_DELIVERY_IDS: usize = 1000;

const LIST_PARAMS: &[&str] = &["channel", "reason", "since", "until", "limit", "cursor"];
const SELECTION_FIELDS: &[&str] = &["delivery_ids", "channel", "reason", "since", "until", "all"];

/// A parsed `GET /v1/dead-letters` query.
#[derive(Debug, Default, PartialEq)]
pub struct ListQuery {
    pub filter: DeadFilter,
    pub limit: usize,
    /// List below this key (the previous page's `next_cursor`).
    pub below: Option<DeadKey>,
}

/// Parses the list's query string; every parameter is optional.
pub fn parse_list_query(query: Option<&str>) -> Result<ListQuery, ApiError> {
    let mut q = ListQuery {
        limit: DEFAULT_LIST_LIMIT,
        ..ListQuery::default()
    };
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let value = value.as_ref();
        match name.as_ref() {
            "channel" => q.filter.channel = Some(channel(&name, value)?),
            "reason" => q.filter.reason = Some(reason(&name, value)?),
            "since" => q.filter.since_ms = Some(time_ms(&name, value)?),
            "until" => q.filter.until_ms = Some(time_ms(&name, value)?),
            "limit" => {
                q.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::field(
                            "limit",
                            "out_of_range",
                            format!("must be an integer from 1 to {MAX_LIST_LIMIT}"),
                        )
                    })?;
            }
            "cursor" => {
                q.below = Some(DeadKey::from_cursor(value).ok_or_else(|| {
                    ApiError::field(
                        "cursor",
                        "invalid_cursor",
                        "not a cursor this API gave (use a list's next_cursor as it is)",
                    )
                })?);
            }
            other => {
                return Err(ApiError::field(
                    &super::fields::quoted_name(other),
                    "unknown_parameter",
                    format!(
                        "unknown parameter; expected one of: {}",
                        LIST_PARAMS.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(q)
}

/// Parses a replay or purge body: `{"delivery_ids":[...]}`, or a filter with at least one of
/// `channel`, `reason`, `since`, `until`, or `{"all":true}` for every letter.
pub fn parse_selection(body: &[u8]) -> Result<DeadSelection, ApiError> {
    let mut f = Fields::new(parse_object(body)?);
    let ids = f.take("delivery_ids");
    let channel_v = f.opt_str("channel", 32)?;
    let reason_v = f.opt_str("reason", 32)?;
    let since = f.take("since");
    let until = f.take("until");
    let all = f.take("all");
    f.finish(SELECTION_FIELDS)?;
    let filter = DeadFilter {
        channel: channel_v.map(|v| channel("channel", &v)).transpose()?,
        reason: reason_v.map(|v| reason("reason", &v)).transpose()?,
        since_ms: since.map(|v| json_time("since", &v)).transpose()?,
        until_ms: until.map(|v| json_time("until", &v)).transpose()?,
    };
    let all = match all {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => {
            return Err(ApiError::field(
                "all",
                "invalid_type",
                "must be true or false",
            ));
        }
    };
    match ids {
        None | Some(Value::Null) => {}
        Some(v) => {
            if filter != DeadFilter::default() || all {
                return Err(ApiError::field(
                    "delivery_ids",
                    "conflicting_fields",
                    "name delivery ids or give a filter, not both",
                ));
            }
            return delivery_ids(v).map(DeadSelection::Ids);
        }
    }
    if filter == DeadFilter::default() && !all {
        return Err(ApiError::new(
            400,
            "empty_selection",
            "say which dead letters: delivery_ids, a filter (channel, reason, since, until), or \"all\": true",
        ));
    }
    Ok(DeadSelection::Filter(filter))
}

fn delivery_ids(v: Value) -> Result<Vec<Uuid>, ApiError> {
    let Value::Array(items) = v else {
        return Err(ApiError::field(
            "delivery_ids",
            "invalid_type",
            "must be an array of delivery ids",
        ));
    };
    if items.is_empty() || items.len() > MAX_DELIVERY_IDS {
        return Err(ApiError::field(
            "delivery_ids",
            "out_of_range",
            format!("must name 1 to {MAX_DELIVERY_IDS} delivery ids"),
        ));
    }
    let mut ids = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let id = item.as_str().and_then(|s| Uuid::parse_str(s).ok());
        ids.push(id.ok_or_else(|| {
            ApiError::field(
                &format!("delivery_ids[{i}]"),
                "invalid_id",
                "not a delivery id (a UUID, as `GET /v1/notifications/{id}` shows it)",
            )
        })?);
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

fn channel(field: &str, v: &str) -> Result<Channel, ApiError> {
    Channel::ALL
        .iter()
        .copied()
        .find(|c| c.as_str() == v)
        .ok_or_else(|| {
            let names: Vec<&str> = Channel::ALL.iter().map(Channel::as_str).collect();
            ApiError::field(
                field,
                "invalid_channel",
                format!("expected one of: {}", names.join(", ")),
            )
        })
}

fn reason(field: &str, v: &str) -> Result<DeadReason, ApiError> {
    DeadReason::parse(v).ok_or_else(|| {
        let names: Vec<&str> = DeadReason::ALL.iter().map(DeadReason::as_str).collect();
        ApiError::field(
            field,
            "invalid_reason",
            format!("expected one of: {}", names.join(", ")),
        )
    })
}

/// A time as Unix milliseconds or RFC 3339 (`2026-12-06T10:00:00Z`).
fn time_ms(field: &str, v: &str) -> Result<u64, ApiError> {
    if let Ok(ms) = v.parse::<u64>() {
        return Ok(ms);
    }
    let parsed = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok());
    parsed.ok_or_else(|| {
        ApiError::field(
            field,
            "invalid_time",
            "must be Unix milliseconds or an RFC 3339 time such as 2026-12-06T10:00:00Z",
        )
    })
}

fn json_time(field: &str, v: &Value) -> Result<u64, ApiError> {
    match v {
        Value::Number(n) => n.as_u64().ok_or_else(|| {
            ApiError::field(
                field,
                "invalid_time",
                "must be non-negative Unix milliseconds",
            )
        }),
        Value::String(s) => time_ms(field, s),
        _ => Err(ApiError::field(
            field,
            "invalid_time",
            "must be Unix milliseconds or an RFC 3339 time",
        )),
    }
}

/// Every shard's page merged, newest first: the newest `limit` letters that every shard has
/// examined down to, and the cursor of the next page (`None` when every shard is done).
pub fn merge_pages(
    pages: Vec<DeadPage>,
    limit: usize,
) -> (Vec<(DeadKey, DeadLetter)>, Option<DeadKey>) {
    // Below the highest place a shard stopped, that shard has not looked yet.
    let floor = pages.iter().filter_map(|p| p.resume).max();
    let mut items: Vec<(DeadKey, DeadLetter)> = pages
        .into_iter()
        .flat_map(|p| p.items)
        .filter(|(k, _)| floor.is_none_or(|f| *k >= f))
        .collect();
    items.sort_unstable_by_key(|(k, _)| std::cmp::Reverse(*k));
    if items.len() >= limit {
        items.truncate(limit);
        let next = items.last().map(|(k, _)| *k);
        return (items, next);
    }
    (items, floor)
}

/// A letter as the list shows it.
pub fn letter_json(key: &DeadKey, l: &DeadLetter) -> Value {
    json!({
        "delivery_id": l.delivery_id.to_string(),
        "notification_id": key.notification.to_string(),
        "user_id": l.user_id,
        "channel": l.channel.as_str(),
        "device_id": rules::of(l.channel).device_id(&l.target),
        "reason": l.reason.as_str(),
        "error": l.error,
        "attempts": l.attempts,
        "dead_at": rfc3339_ms(key.dead_at_ms),
    })
}

/// The list's answer.
pub fn list_json(items: &[(DeadKey, DeadLetter)], next: Option<DeadKey>) -> Value {
    json!({
        "dead_letters": items.iter().map(|(k, l)| letter_json(k, l)).collect::<Vec<_>>(),
        "next_cursor": next.map(|k| k.cursor()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(at: u64, n: u128) -> DeadKey {
        DeadKey {
            dead_at_ms: at,
            notification: Uuid::from_u128(n),
            index: 0,
        }
    }

    fn letter(n: u128) -> DeadLetter {
        DeadLetter {
            delivery_id: Uuid::from_u128(n),
            user_id: "u".into(),
            channel: Channel::Fcm,
            target: "tok".into(),
            reason: DeadReason::RetriesExhausted,
            error: "retries exhausted: 503".into(),
            attempts: 8,
        }
    }

    fn page(keys: &[(u64, u128)], resume: Option<(u64, u128)>) -> DeadPage {
        DeadPage {
            items: keys.iter().map(|&(a, n)| (key(a, n), letter(n))).collect(),
            resume: resume.map(|(a, n)| key(a, n)),
        }
    }

    #[test]
    fn the_query_string_parses_and_names_what_is_wrong() {
        let q = parse_list_query(Some(
            "channel=fcm&reason=config_fault&since=1000&until=2026-12-06T10%3A00%3A00Z&limit=5",
        ))
        .unwrap();
        assert_eq!(q.filter.channel, Some(Channel::Fcm));
        assert_eq!(q.filter.reason, Some(DeadReason::ConfigFault));
        assert_eq!(q.filter.since_ms, Some(1000));
        assert_eq!(q.filter.until_ms, Some(1_796_551_200_000));
        assert_eq!(q.limit, 5);
        assert_eq!(parse_list_query(None).unwrap().limit, DEFAULT_LIST_LIMIT);
        let k = key(7, 9);
        let q = parse_list_query(Some(&format!("cursor={}", k.cursor()))).unwrap();
        assert_eq!(q.below, Some(k));
        for (query, field, code) in [
            ("channel=sms", "channel", "invalid_channel"),
            ("reason=bored", "reason", "invalid_reason"),
            ("since=yesterday", "since", "invalid_time"),
            ("limit=0", "limit", "out_of_range"),
            ("limit=1001", "limit", "out_of_range"),
            ("cursor=abc", "cursor", "invalid_cursor"),
            ("colour=red", "colour", "unknown_parameter"),
        ] {
            let e = parse_list_query(Some(query)).unwrap_err();
            assert_eq!((e.field.as_deref(), e.code), (Some(field), code), "{query}");
        }
    }

    #[test]
    fn a_selection_is_ids_or_a_filter_and_never_empty_by_accident() {
        let id = Uuid::from_u128(5);
        let body = format!(r#"{{"delivery_ids":["{id}","{id}"]}}"#);
        assert_eq!(
            parse_selection(body.as_bytes()).unwrap(),
            DeadSelection::Ids(vec![id])
        );
        assert_eq!(
            parse_selection(br#"{"channel":"webpush","since":"1970-01-01T00:00:01Z"}"#).unwrap(),
            DeadSelection::Filter(DeadFilter {
                channel: Some(Channel::Webpush),
                since_ms: Some(1000),
                ..DeadFilter::default()
            })
        );
        assert_eq!(
            parse_selection(br#"{"all":true}"#).unwrap(),
            DeadSelection::Filter(DeadFilter::default())
        );
        for (body, code) in [
            (&br#"{}"#[..], "empty_selection"),
            (br#"{"all":false}"#, "empty_selection"),
            (
                br#"{"delivery_ids":[],"channel":"fcm"}"#,
                "conflicting_fields",
            ),
            (br#"{"delivery_ids":[]}"#, "out_of_range"),
            (br#"{"delivery_ids":["x"]}"#, "invalid_id"),
            (br#"{"until":-1}"#, "invalid_time"),
            (br#"{"colour":"red"}"#, "unknown_field"),
        ] {
            let e = parse_selection(body).unwrap_err();
            assert_eq!(e.code, code, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn pages_merge_newest_first_down_to_where_every_shard_has_looked() {
        // Shard 0 stopped at 50 (more below); shard 1 read to its end.
        let merged = merge_pages(
            vec![
                page(&[(90, 1), (50, 2)], Some((50, 2))),
                page(&[(70, 3), (40, 4)], None),
            ],
            10,
        );
        let times: Vec<u64> = merged.0.iter().map(|(k, _)| k.dead_at_ms).collect();
        assert_eq!(times, vec![90, 70, 50], "40 waits for the next page");
        assert_eq!(merged.1, Some(key(50, 2)));
        // A full page resumes below its last letter.
        let merged = merge_pages(
            vec![page(&[(90, 1), (50, 2)], None), page(&[(70, 3)], None)],
            2,
        );
        assert_eq!(merged.0.len(), 2);
        assert_eq!(merged.1, Some(key(70, 3)));
        // Everything read: no cursor.
        let merged = merge_pages(vec![page(&[(90, 1)], None), page(&[], None)], 2);
        assert_eq!((merged.0.len(), merged.1), (1, None));
    }
}
