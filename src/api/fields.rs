//! Reading a JSON object field by field, so every error names its field: unknown fields, wrong
//! types and length limits each get a 400 with a machine-readable code.

use serde_json::{Map, Value};

use super::error::ApiError;

/// Parses a request body as a JSON object.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::new(
            400,
            "invalid_json",
            "request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::new(
            400,
            "invalid_json",
            format!("request body is not valid JSON: {e}"),
        )),
    }
}

/// A JSON object whose fields are taken one by one; `finish` rejects whatever is left.
pub struct Fields {
    map: Map<String, Value>,
}

impl Fields {
    pub fn new(map: Map<String, Value>) -> Fields {
        Fields { map }
    }

    /// Rejects any field the caller did not take. A long unknown name is quoted cut short.
    pub fn finish(self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(ApiError::field(
                &quoted_name(k),
                "unknown_field",
                format!("unknown field; expected one of: {}", allowed.join(", ")),
            )),
        }
    }

    /// The field's value as it is, taken out (`None` when absent).
    pub fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key)
    }

    /// An optional string (null counts as absent) of at most `max` bytes.
    pub fn opt_str(&mut self, key: &str, max: usize) -> Result<Option<String>, ApiError> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() <= max => Ok(Some(s)),
            Some(Value::String(s)) => Err(ApiError::field(
                key,
                "too_long",
                format!("at most {max} bytes, got {}", s.len()),
            )),
            Some(other) => Err(type_error(key, "a string", &other)),
        }
    }

    /// A required non-empty string of at most `max` bytes.
    pub fn req_str(&mut self, key: &str, max: usize) -> Result<String, ApiError> {
        match self.opt_str(key, max)? {
            Some(s) if !s.is_empty() => Ok(s),
            Some(_) => Err(ApiError::field(key, "empty_field", "must not be empty")),
            None => Err(ApiError::field(key, "missing_field", "is required")),
        }
    }

    pub fn opt_u64(&mut self, key: &str, max: u64) -> Result<Option<u64>, ApiError> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if v <= max => Ok(Some(v)),
                _ => Err(ApiError::field(
                    key,
                    "out_of_range",
                    format!("must be an integer from 0 to {max}"),
                )),
            },
            Some(other) => Err(type_error(key, "an integer", &other)),
        }
    }

    pub fn opt_object(&mut self, key: &str) -> Result<Option<Map<String, Value>>, ApiError> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(other) => Err(type_error(key, "an object", &other)),
        }
    }

    pub fn req_array(&mut self, key: &str) -> Result<Vec<Value>, ApiError> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Err(ApiError::field(key, "missing_field", "is required")),
            Some(Value::Array(a)) => Ok(a),
            Some(other) => Err(type_error(key, "an array", &other)),
        }
    }
}

/// Longest client-chosen field name an error quotes in full: errors stay small (and so do the
/// log lines that carry them) however long a name a client sends.
pub const MAX_QUOTED_NAME: usize = 64;

/// `name`, or its first [`MAX_QUOTED_NAME`] bytes (to a character boundary) and `…`.
pub fn quoted_name(name: &str) -> String {
    if name.len() <= MAX_QUOTED_NAME {
        return name.to_owned();
    }
    let end = (0..=MAX_QUOTED_NAME)
        .rev()
        .find(|&i| name.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}…", &name[..end])
}

fn type_error(key: &str, expected: &str, got: &Value) -> ApiError {
    let kind = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    ApiError::field(
        key,
        "invalid_type",
        format!("must be {expected}, got {kind}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: &str) -> Fields {
        Fields::new(parse_object(json.as_bytes()).unwrap())
    }

    #[test]
    fn errors_name_fields() {
        let mut f = fields(r#"{"a": 3, "b": "xxxx", "c": ""}"#);
        assert_eq!(f.opt_str("a", 10).unwrap_err().field.as_deref(), Some("a"));
        assert_eq!(f.opt_str("b", 2).unwrap_err().code, "too_long");
        assert_eq!(f.req_str("c", 2).unwrap_err().code, "empty_field");
        assert_eq!(f.req_str("d", 2).unwrap_err().code, "missing_field");
        let f = fields(r#"{"zzz": 1}"#);
        let e = f.finish(&["a"]).unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), ("unknown_field", Some("zzz")));
        assert_eq!(parse_object(b"[1]").unwrap_err().code, "invalid_json");
        assert_eq!(parse_object(b"{").unwrap_err().code, "invalid_json");
    }

    #[test]
    fn unknown_field_error_quotes_a_long_name_cut_short() {
        // Found by `fuzz_user_profile`: a 2,000-byte unknown name came back whole, twice.
        let name = format!("é{}", "x".repeat(2000));
        let e = fields(&format!(r#"{{"{name}": 1}}"#))
            .finish(&["a"])
            .unwrap_err();
        let field = e.field.as_deref().unwrap();
        assert_eq!(field, format!("é{}…", "x".repeat(MAX_QUOTED_NAME - 2)));
        assert!(e.message.len() < 200, "{}", e.message);
        assert_eq!(quoted_name("short"), "short");
        assert_eq!(quoted_name(&"é".repeat(40)), format!("{}…", "é".repeat(32)));
    }
}
