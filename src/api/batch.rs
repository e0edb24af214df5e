//! Reading a batch body's `notifications` array one item at a time, as the text each item was
//! sent as, and refusing at item `MAX_BATCH + 1` before reading further: an 8 MiB body of `{},`
//! is millions of items, and no more than `MAX_BATCH` of them is ever held. Nothing here builds
//! a JSON value tree of the body; the top level's errors (not an object, an unknown field, no
//! `notifications`, not an array) name the field as `Fields` would.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::error::ApiError;
use super::notifications::MAX_BATCH;

/// The array's items as sent (at most `MAX_BATCH`), or the error naming what is wrong with the
/// body's shape.
pub fn item_texts(body: &[u8]) -> Result<Vec<&RawValue>, ApiError> {
    let failure = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(body);
    let read = Body { failure: &failure }
        .deserialize(&mut de)
        .and_then(|items| de.end().map(|()| items));
    match (read, failure.into_inner()) {
        (Ok(items), _) => Ok(items),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(ApiError::new(
            400,
            "invalid_json",
            format!("request body is not valid JSON: {e}"),
        )),
    }
}

/// The error a bounded reader gives when a batch holds more than `MAX_BATCH` items.
pub fn too_many() -> ApiError {
    ApiError::field(
        "notifications",
        "invalid_batch_size",
        format!("must hold 1 to {MAX_BATCH} notifications, got more than {MAX_BATCH}"),
    )
}

/// Deserializes a sequence into a `Vec`, failing at element `MAX_BATCH + 1` without reading it
/// (for `#[serde(deserialize_with)]` on the typed fast path; the caller then reads the body
/// again with `item_texts` for the error).
pub fn at_most_max_batch<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct Bounded<T>(std::marker::PhantomData<T>);
    impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for Bounded<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "an array of at most {MAX_BATCH} items")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::new();
            while items.len() < MAX_BATCH {
                match seq.next_element()? {
                    Some(item) => items.push(item),
                    None => return Ok(items),
                }
            }
            match seq.next_element::<IgnoredAny>()? {
                None => Ok(items),
                Some(_) => Err(de::Error::custom(too_many().message)),
            }
        }
    }
    d.deserialize_seq(Bounded(std::marker::PhantomData))
}

/// Records the API error and hands serde an error that stops the parse.
fn fail<E: de::Error>(failure: &RefCell<Option<ApiError>>, e: ApiError) -> E {
    let message = e.message.clone();
    *failure.borrow_mut() = Some(e);
    E::custom(message)
}

fn kind(unexpected: de::Unexpected<'_>) -> &'static str {
    match unexpected {
        de::Unexpected::Bool(_) => "a boolean",
        de::Unexpected::Unsigned(_) | de::Unexpected::Signed(_) | de::Unexpected::Float(_) => {
            "a number"
        }
        de::Unexpected::Str(_) => "a string",
        de::Unexpected::Map => "an object",
        de::Unexpected::Seq => "an array",
        _ => "null",
    }
}

/// The top level: an object whose one field is `notifications`.
struct Body<'f> {
    failure: &'f RefCell<Option<ApiError>>,
}

impl<'de> DeserializeSeed<'de> for Body<'_> {
    type Value = Vec<&'de RawValue>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Body<'_> {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut items = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != "notifications" {
                return Err(fail(
                    self.failure,
                    ApiError::field(
                        &key,
                        "unknown_field",
                        "unknown field; expected one of: notifications",
                    ),
                ));
            }
            if items.is_some() {
                return Err(fail(
                    self.failure,
                    ApiError::field("notifications", "duplicate_key", "is given twice"),
                ));
            }
            items = Some(map.next_value_seed(Items {
                failure: self.failure,
            })?);
        }
        items.ok_or_else(|| {
            fail(
                self.failure,
                ApiError::field("notifications", "missing_field", "is required"),
            )
        })
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(self.not_an_object())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(self.not_an_object())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(self.not_an_object())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(self.not_an_object())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(self.not_an_object())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(self.not_an_object())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.not_an_object())
    }
}

impl Body<'_> {
    fn not_an_object<E: de::Error>(&self) -> E {
        fail(
            self.failure,
            ApiError::new(400, "invalid_json", "request body must be a JSON object"),
        )
    }
}

/// The `notifications` value: an array, read item by item as raw text.
struct Items<'f> {
    failure: &'f RefCell<Option<ApiError>>,
}

impl<'de> DeserializeSeed<'de> for Items<'_> {
    type Value = Vec<&'de RawValue>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Items<'_> {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while items.len() < MAX_BATCH {
            match seq.next_element::<&'de RawValue>()? {
                Some(item) => items.push(item),
                None => return Ok(items),
            }
        }
        match seq.next_element::<IgnoredAny>()? {
            None => Ok(items),
            Some(_) => Err(fail(self.failure, too_many())),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(fail(
            self.failure,
            ApiError::field("notifications", "missing_field", "is required"),
        ))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Err(self.not_an_array(de::Unexpected::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Err(self.not_an_array(de::Unexpected::Signed(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Err(self.not_an_array(de::Unexpected::Unsigned(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Err(self.not_an_array(de::Unexpected::Float(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Err(self.not_an_array(de::Unexpected::Str(v)))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.not_an_array(de::Unexpected::Map))
    }
}

impl Items<'_> {
    fn not_an_array<E: de::Error>(&self, got: de::Unexpected<'_>) -> E {
        fail(
            self.failure,
            ApiError::field(
                "notifications",
                "invalid_type",
                format!("must be an array, got {}", kind(got)),
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> ApiError {
        item_texts(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn items_are_read_as_sent() {
        let items = item_texts(br#"{"notifications":[ {"a" : 1}, 7 ,"x"]}"#).unwrap();
        let texts: Vec<_> = items.iter().map(|r| r.get()).collect();
        assert_eq!(texts, [r#"{"a" : 1}"#, "7", r#""x""#]);
    }

    #[test]
    fn the_top_level_errors_name_the_field() {
        let cases = [
            ("[1]", "invalid_json", None),
            ("{", "invalid_json", None),
            (r#"{"notifications":[]} x"#, "invalid_json", None),
            ("{}", "missing_field", Some("notifications")),
            (
                r#"{"notifications":null}"#,
                "missing_field",
                Some("notifications"),
            ),
            (
                r#"{"notifications":{}}"#,
                "invalid_type",
                Some("notifications"),
            ),
            (
                r#"{"notifications":[],"extra":1}"#,
                "unknown_field",
                Some("extra"),
            ),
            (
                r#"{"notifications":[],"notifications":[]}"#,
                "duplicate_key",
                Some("notifications"),
            ),
        ];
        for (body, code, field) in cases {
            let e = err(body);
            assert_eq!((e.code, e.field.as_deref()), (code, field), "{body}");
        }
        assert!(
            err(r#"{"notifications":"x"}"#)
                .message
                .contains("got a string")
        );
    }

    /// A body of millions of `{}` items once became millions of JSON values before its size
    /// was checked. The reader stops at item 1,001: whatever follows it, even bytes that are
    /// not JSON at all, is never read.
    #[test]
    fn a_batch_of_millions_of_items_is_refused_at_item_1001() {
        let mut body = String::from(r#"{"notifications":["#);
        for _ in 0..=MAX_BATCH {
            body.push_str("{},");
        }
        body.push_str("this is never read");
        let e = err(&body);
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("invalid_batch_size", Some("notifications"))
        );
        let mut exact = String::from(r#"{"notifications":["#);
        exact.push_str(&vec!["{}"; MAX_BATCH].join(","));
        exact.push_str("]}");
        assert_eq!(item_texts(exact.as_bytes()).unwrap().len(), MAX_BATCH);
    }
}
