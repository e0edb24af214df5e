//! `/v1/keys`: the body of `POST /v1/keys` (`{"name","scopes","rate_limit_per_s"?}`, nothing
//! else), the answers' shapes, and the keys' refusals in HTTP terms.

use serde_json::{Value, json};

use super::error::ApiError;
use super::status::rfc3339_ms;
use crate::keys::{KeyEntry, KeyError, KeySet, MAX_RATE_LIMIT, Scopes, validate_name};

/// A key to create.
#[derive(Debug, PartialEq, Eq)]
pub struct NewKey {
    pub name: String,
    pub scopes: Scopes,
    pub rate_limit_per_s: Option<u32>,
}

pub fn parse_create(body: &[u8]) -> Result<NewKey, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, "invalid_json", format!("the body is not JSON: {e}")))?;
    let Value::Object(map) = v else {
        return Err(ApiError::new(
            400,
            "invalid_json",
            "the body must be a JSON object",
        ));
    };
    if let Some(k) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "name" | "scopes" | "rate_limit_per_s"))
    {
        return Err(ApiError::field(
            k,
            "unknown_field",
            "unknown field; expected one of: name, scopes, rate_limit_per_s",
        ));
    }
    let name = match map.get("name") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::field("name", "invalid_type", "must be a string")),
        None => return Err(ApiError::field("name", "missing_field", "is required")),
    };
    validate_name(&name).map_err(key_error)?;
    let scopes = match map.get("scopes") {
        Some(Value::Array(items)) => {
            let mut names = Vec::with_capacity(items.len());
            for item in items {
                let Value::String(s) = item else {
                    return Err(ApiError::field(
                        "scopes",
                        "invalid_type",
                        "must be an array of strings",
                    ));
                };
                names.push(s.as_str());
            }
            if let Some(d) = names
                .iter()
                .enumerate()
                .find_map(|(i, n)| names[..i].contains(n).then_some(n))
            {
                return Err(ApiError::field(
                    "scopes",
                    "invalid_scope",
                    format!("`{d}` is listed twice"),
                ));
            }
            Scopes::parse_list(names).map_err(|m| ApiError::field("scopes", "invalid_scope", m))?
        }
        Some(_) => {
            return Err(ApiError::field(
                "scopes",
                "invalid_type",
                "must be an array of strings",
            ));
        }
        None => return Err(ApiError::field("scopes", "missing_field", "is required")),
    };
    let rate_limit_per_s = match map.get("rate_limit_per_s") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n @ 1..) if n <= u64::from(MAX_RATE_LIMIT) => u32::try_from(n).ok(),
            _ => {
                return Err(ApiError::field(
                    "rate_limit_per_s",
                    "invalid_value",
                    format!("must be an integer between 1 and {MAX_RATE_LIMIT}"),
                ));
            }
        },
    };
    Ok(NewKey {
        name,
        scopes,
        rate_limit_per_s,
    })
}

/// `201`'s body: the key, shown this once.
pub fn created_json(entry: &KeyEntry, key: &str) -> Value {
    let mut v = json!({"name": entry.name, "key": key, "scopes": entry.scopes.names()});
    if let Some(r) = entry.rate_limit_per_s {
        v["rate_limit_per_s"] = json!(r);
    }
    v
}

/// `GET /v1/keys`: names, scopes, limits, creation times and where each comes from.
pub fn list_json(keys: &KeySet) -> Value {
    let keys: Vec<Value> = keys
        .entries()
        .iter()
        .map(|e| {
            let mut v = json!({
                "name": e.name,
                "scopes": e.scopes.names(),
                "source": if e.from_config { "config" } else { "stored" },
            });
            // A configured key has no creation time of its own.
            if !e.from_config {
                v["created_at"] = json!(rfc3339_ms(e.created_at_ms));
            }
            if let Some(r) = e.rate_limit_per_s {
                v["rate_limit_per_s"] = json!(r);
            }
            v
        })
        .collect();
    json!({ "keys": keys })
}

/// A key operation's refusal in HTTP terms.
pub fn key_error(e: KeyError) -> ApiError {
    let message = e.to_string();
    match e {
        KeyError::Exists(_) => ApiError::new(409, "key_exists", message),
        KeyError::NotFound(_) => ApiError::not_found("key_not_found", message),
        KeyError::FromConfig(_) => ApiError::new(409, "config_key", message),
        KeyError::Invalid { field, message } => ApiError::field(field, "invalid_value", message),
        KeyError::TooMany => ApiError::new(409, "too_many_keys", message),
        KeyError::Corrupt(_) => ApiError::new(
            500,
            "keys_file_damaged",
            "the data directory's keys file does not parse: see the server's log",
        ),
        _ => ApiError {
            retry_after_s: Some(1),
            ..ApiError::new(503, "keys_unavailable", message)
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_create_body_names_the_field_at_fault() {
        let ok = parse_create(
            br#"{"name":"billing","scopes":["send","users:write"],"rate_limit_per_s":50}"#,
        )
        .unwrap();
        assert_eq!(ok.name, "billing");
        assert_eq!(ok.scopes.to_string(), "send,users:write");
        assert_eq!(ok.rate_limit_per_s, Some(50));
        for (body, field) in [
            (r#"{"scopes":["send"]}"#, "name"),
            (r#"{"name":"a b","scopes":["send"]}"#, "name"),
            (r#"{"name":"a","scopes":[]}"#, "scopes"),
            (r#"{"name":"a","scopes":["root"]}"#, "scopes"),
            (r#"{"name":"a","scopes":"send"}"#, "scopes"),
            (r#"{"name":"a","scopes":["send","send"]}"#, "scopes"),
            (
                r#"{"name":"a","scopes":["send"],"rate_limit_per_s":0}"#,
                "rate_limit_per_s",
            ),
            (r#"{"name":"a","scopes":["send"],"extra":1}"#, "extra"),
        ] {
            let e = parse_create(body.as_bytes()).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.field.as_deref(), Some(field), "{body}: {}", e.message);
        }
    }
}
