//! [`JsonObject`]: a notification's custom `data` as compact JSON object text. It is checked once
//! where it enters (valid JSON, an object, no key twice) and then carried as text: stored in the
//! log as text (as it always was) and spliced into a provider's payload as text. The hot path
//! never builds, walks or drops a JSON tree for data it only carries.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// A JSON object's compact text: `{}` when empty, otherwise `{"k":v,...}` with no whitespace
/// outside strings and no key twice.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct JsonObject(Box<str>);

/// Why text is not acceptable as notification data.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonObjectError {
    /// Not valid JSON.
    Invalid { reason: String },
    /// Valid JSON, but not an object (`got` says what: "an array", "a string", ...).
    NotAnObject { got: &'static str },
    /// The same key appears twice.
    DuplicateKey { key: String },
}

/// Longest key a [`JsonObjectError::DuplicateKey`] message quotes in full: the message reaches
/// clients and logs, the key may be as long as the data.
const MAX_QUOTED_KEY: usize = 64;

impl fmt::Display for JsonObjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonObjectError::Invalid { reason } => write!(f, "not valid JSON: {reason}"),
            JsonObjectError::NotAnObject { got } => write!(f, "must be an object, got {got}"),
            JsonObjectError::DuplicateKey { key } if key.len() > MAX_QUOTED_KEY => {
                let end = (0..=MAX_QUOTED_KEY)
                    .rev()
                    .find(|&i| key.is_char_boundary(i))
                    .unwrap_or(0);
                let start = &key[..end];
                write!(f, "key {start:?}… ({} bytes) appears twice", key.len())
            }
            JsonObjectError::DuplicateKey { key } => write!(f, "key {key:?} appears twice"),
        }
    }
}

impl std::error::Error for JsonObjectError {}

impl JsonObject {
    /// The empty object, `{}`.
    pub fn empty() -> JsonObject {
        JsonObject("{}".into())
    }

    /// Checks `text` (valid JSON as strictly as `serde_json::Value` reads it, an object, no key
    /// twice in it or in any object nested in it) and keeps it compact. Text that is already
    /// compact is kept without a copy.
    pub fn parse(text: impl Into<Box<str>>) -> Result<JsonObject, JsonObjectError> {
        let text = text.into();
        object_keys(&text)?;
        Ok(JsonObject(compact(text)))
    }

    /// The object from a parsed JSON map (the slow path of request parsing, and tests).
    pub fn from_map(map: &serde_json::Map<String, serde_json::Value>) -> JsonObject {
        // A map's keys are unique and its serialization compact: nothing to check.
        JsonObject(serde_json::Value::Object(map.clone()).to_string().into())
    }

    pub fn is_empty(&self) -> bool {
        self.0.len() <= 2
    }

    /// The whole text, braces included.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The members between the braces (`"k":v,...`), empty for `{}`.
    pub fn members(&self) -> &str {
        self.0.get(1..self.0.len().saturating_sub(1)).unwrap_or("")
    }

    /// Whether `key` is one of the object's keys.
    pub fn contains_key(&self, key: &str) -> bool {
        // Cheap refusal first: a plain key is present only if its quoted text is, unless a
        // `\u` escape spells it differently. Anything else gets the exact check.
        let plain = key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if plain && !self.0.contains("\\u") && !self.quotes(key) {
            return false;
        }
        object_keys(&self.0).is_ok_and(|keys| keys.iter().any(|k| k == key))
    }

    /// Whether `"key"` (quoted) appears anywhere in the text.
    fn quotes(&self, key: &str) -> bool {
        let text = self.0.as_bytes();
        self.0.match_indices(key).any(|(at, _)| {
            at > 0 && text[at - 1] == b'"' && text.get(at + key.len()) == Some(&b'"')
        })
    }

    /// The parsed map (for tests and tools; not for the hot path).
    pub fn to_map(&self) -> Result<serde_json::Map<String, serde_json::Value>, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

impl Default for JsonObject {
    fn default() -> JsonObject {
        JsonObject::empty()
    }
}

impl fmt::Debug for JsonObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for JsonObject {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match serde_json::value::RawValue::from_string(self.0.to_string()) {
            Ok(raw) => raw.serialize(s),
            Err(e) => Err(serde::ser::Error::custom(e)),
        }
    }
}

impl<'de> Deserialize<'de> for JsonObject {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<JsonObject, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
        JsonObject::parse(Box::<str>::from(raw)).map_err(de::Error::custom)
    }
}

/// What JSON text holds, named as in error messages, from its first significant byte.
fn kind_of(text: &str) -> &'static str {
    match text.trim_start().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// The top-level keys of the JSON object `text` (borrowed where they hold no escapes), after
/// checking all of `text` as strictly as building a `serde_json::Value` would (string escapes,
/// number range, nesting depth), and that no object in it, nested ones included, has a key twice.
fn object_keys(text: &str) -> Result<Keys<'_>, JsonObjectError> {
    let got = kind_of(text);
    if got != "an object" {
        return Err(JsonObjectError::NotAnObject { got });
    }
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let checked = Check {
        duplicate: &duplicate,
        keys: Some(Keys::new()),
    }
    .deserialize(&mut de)
    .and_then(|keys| de.end().map(|()| keys));
    match checked {
        Ok(keys) => Ok(keys.unwrap_or_default()),
        Err(e) => Err(match duplicate.into_inner() {
            Some(key) => JsonObjectError::DuplicateKey { key },
            None if e.is_data() => JsonObjectError::NotAnObject { got },
            None => JsonObjectError::Invalid {
                reason: e.to_string(),
            },
        }),
    }
}

/// One object's keys: on the stack for the usual handful, so checking `data` allocates nothing
/// per object.
type Keys<'de> = smallvec::SmallVec<[Cow<'de, str>; 8]>;

/// Checks one JSON value without keeping it; for the top-level object (`keys` is `Some`) it
/// returns that object's keys. A key seen twice in any object is written to `duplicate`.
struct Check<'a, 'de> {
    duplicate: &'a RefCell<Option<String>>,
    keys: Option<Keys<'de>>,
}

impl<'de> DeserializeSeed<'de> for Check<'_, 'de> {
    type Value = Option<Keys<'de>>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check<'_, 'de> {
    type Value = Option<Keys<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq
            .next_element_seed(Check {
                duplicate: self.duplicate,
                keys: None,
            })?
            .is_some()
        {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let top = self.keys.is_some();
        let mut keys = self.keys.unwrap_or_default();
        while let Some(Key(k)) = map.next_key()? {
            keys.push(k);
            map.next_value_seed(Check {
                duplicate: self.duplicate,
                keys: None,
            })?;
        }
        // Sorted in place (callers only ask whether a key is there), so no second list.
        keys.sort_unstable();
        if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
            *self.duplicate.borrow_mut() = Some(w[0].clone().into_owned());
            return Err(de::Error::custom(format_args!(
                "key {:?} appears twice",
                w[0]
            )));
        }
        Ok(top.then_some(keys))
    }
}

/// A map key, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Key<'de>, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// `text` (valid JSON) without whitespace outside strings; returned as is when it has none.
fn compact(text: Box<str>) -> Box<str> {
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let bytes = text.as_bytes();
    let mut in_string = false;
    let mut escaped = false;
    let mut first_space = None;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if is_space(b) {
            first_space = Some(i);
            break;
        }
    }
    let Some(start) = first_space else {
        return text;
    };
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..start]);
    // `start` is outside a string: resume the scan there.
    let mut in_string = false;
    let mut escaped = false;
    for c in text[start..].chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            out.push(c);
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !(c.is_ascii() && is_space(c as u8)) {
            out.push(c);
        }
    }
    out.into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_kept_compact() {
        let o = JsonObject::parse(r#" { "a" : 1 , "b c" : [ 1, 2 ], "s": " x \" y " } "#).unwrap();
        assert_eq!(o.as_str(), r#"{"a":1,"b c":[1,2],"s":" x \" y "}"#);
        assert_eq!(o.members(), r#""a":1,"b c":[1,2],"s":" x \" y ""#);
        assert!(!o.is_empty());
        let same = JsonObject::parse(o.as_str()).unwrap();
        assert_eq!(same, o);
        assert_eq!(o.to_map().unwrap()["b c"], serde_json::json!([1, 2]));
    }

    #[test]
    fn empty_object() {
        let o = JsonObject::parse(" {\n} ").unwrap();
        assert!(o.is_empty());
        assert_eq!(o.members(), "");
        assert_eq!(o, JsonObject::default());
    }

    #[test]
    fn non_objects_say_what_they_are() {
        for (text, got) in [
            ("[1]", "an array"),
            ("\"s\"", "a string"),
            ("true", "a boolean"),
            ("null", "null"),
            ("12", "a number"),
        ] {
            assert_eq!(
                JsonObject::parse(text),
                Err(JsonObjectError::NotAnObject { got }),
                "{text}"
            );
        }
        assert!(matches!(
            JsonObject::parse("{\"a\":"),
            Err(JsonObjectError::Invalid { .. })
        ));
        assert!(matches!(
            JsonObject::parse("{} x"),
            Err(JsonObjectError::Invalid { .. })
        ));
    }

    #[test]
    fn duplicate_keys_are_refused_even_when_escaped() {
        assert_eq!(
            JsonObject::parse(r#"{"a":1,"b":2,"a":3}"#),
            Err(JsonObjectError::DuplicateKey { key: "a".into() })
        );
        assert_eq!(
            JsonObject::parse(r#"{"a":1,"\u0061":3}"#),
            Err(JsonObjectError::DuplicateKey { key: "a".into() })
        );
    }

    #[test]
    fn duplicate_key_error_quotes_a_long_key_cut_short() {
        // Found by `fuzz_single_notification`: a 2,000-byte key twice came back whole.
        let key = format!("é{}", "k".repeat(2000));
        let e = JsonObject::parse(format!(r#"{{"{key}":1,"{key}":2}}"#)).unwrap_err();
        assert_eq!(e, JsonObjectError::DuplicateKey { key: key.clone() });
        let shown = format!("{:?}", &key[..MAX_QUOTED_KEY]);
        assert_eq!(
            e.to_string(),
            format!("key {shown}… (2002 bytes) appears twice")
        );
    }

    #[test]
    fn values_are_checked_as_strictly_as_a_json_tree_would_be() {
        let invalid = |text: &str| {
            assert!(
                matches!(
                    JsonObject::parse(text),
                    Err(JsonObjectError::Invalid { .. })
                ),
                "{text} should be refused"
            );
            assert!(serde_json::from_str::<serde_json::Value>(text).is_err());
        };
        invalid(r#"{"a":"\ud800"}"#);
        invalid(r#"{"a":1e999}"#);
        invalid(&format!(
            r#"{{"a":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        ));
        assert!(
            JsonObject::parse(format!(
                r#"{{"a":{}1{}}}"#,
                "[".repeat(100),
                "]".repeat(100)
            ))
            .is_ok()
        );
        assert_eq!(
            JsonObject::parse(r#"{"a":{"b":1,"c":[{"d":1,"d":2}]}}"#),
            Err(JsonObjectError::DuplicateKey { key: "d".into() })
        );
        // Numbers keep their text: nothing is re-serialized.
        let o = JsonObject::parse(r#"{"big":123456789012345678901234567890,"f":1.0}"#).unwrap();
        assert_eq!(
            o.as_str(),
            r#"{"big":123456789012345678901234567890,"f":1.0}"#
        );
    }

    #[test]
    fn contains_key_is_exact() {
        let o = JsonObject::parse(r#"{"aps":1,"x":"\"apsx\"","\u0062":2}"#).unwrap();
        assert!(o.contains_key("aps"));
        assert!(o.contains_key("b"));
        assert!(!o.contains_key("apsx"));
        assert!(!o.contains_key("y"));
        let nested = JsonObject::parse(r#"{"x":{"aps":1}}"#).unwrap();
        assert!(!nested.contains_key("aps"));
    }

    #[test]
    fn serde_round_trip_as_raw_json() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct W {
            data: JsonObject,
        }
        let w: W = serde_json::from_str(r#"{"data": { "k" : [true] }}"#).unwrap();
        assert_eq!(w.data.as_str(), r#"{"k":[true]}"#);
        assert_eq!(
            serde_json::to_string(&w).unwrap(),
            r#"{"data":{"k":[true]}}"#
        );
        assert!(serde_json::from_str::<W>(r#"{"data":[1]}"#).is_err());
    }

    #[test]
    fn from_map_matches_parse() {
        let map = serde_json::json!({"z": 1, "a": {"b": "c"}});
        let o = JsonObject::from_map(map.as_object().unwrap());
        assert_eq!(o, JsonObject::parse(map.to_string()).unwrap());
    }
}
