//! The load-test keys (`lt_seq`, `lt_ts`) in a message's `data`, for the simulators whose
//! messages carry data as JSON (FCM's string map, Web Push's decrypted plaintext): numbers or
//! digit strings, as FCM turns every value into a string.
//!
//! [`DataKeys`] reads them while the `data` object is parsed, borrowing from the body, and
//! notes whether every value was a string (FCM's rule). It replaces a `serde_json::Value` parse
//! that allocated for every key and value: in the 45/45/10 mix bench that parse was the FCM
//! simulator's largest cost.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// `(lt_seq, lt_ts)` of a `data` object.
pub(crate) fn read(data: &Value) -> (Option<u64>, Option<u64>) {
    (number(&data["lt_seq"]), number(&data["lt_ts"]))
}

/// Unix time now in nanoseconds.
pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A `data` object as it is parsed: its load-test keys and whether all its values are strings.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DataKeys {
    pub(crate) seq: Option<u64>,
    pub(crate) ts: Option<u64>,
    pub(crate) all_strings: bool,
}

/// A string borrowed from the body when it holds no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// One value of a `data` object: a string, an unsigned number, or anything else (skipped).
enum Scalar {
    Str(Option<u64>),
    Num(Option<u64>),
    Other,
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.parse().ok()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar::Num(Some(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Num(u64::try_from(v).ok()))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalar, E> {
                Ok(Scalar::Num(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for DataKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DataKeys;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DataKeys, A::Error> {
                let mut out = DataKeys {
                    all_strings: true,
                    ..DataKeys::default()
                };
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    let value: Scalar = map.next_value()?;
                    let n = match value {
                        Scalar::Str(n) => n,
                        Scalar::Num(n) => {
                            out.all_strings = false;
                            n
                        }
                        Scalar::Other => {
                            out.all_strings = false;
                            None
                        }
                    };
                    // The last of a repeated key wins, as in a `serde_json::Value`.
                    match &*key {
                        "lt_seq" => out.seq = n,
                        "lt_ts" => out.ts = n,
                        _ => {}
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn data_keys_read_as_the_value_path_does() {
        for body in [
            r#"{"lt_seq":"12","lt_ts":"34","other":"x"}"#,
            r#"{"lt_seq":12,"lt_ts":34}"#,
            r#"{"lt_seq":"1\u0032","x":{"a":[1,2]},"y":null,"z":true,"w":-1.5}"#,
            r#"{"lt_seq":"nope","lt_ts":-3}"#,
            r#"{"lt_seq":"1","lt_seq":"2"}"#,
            r#"{}"#,
        ] {
            let keys: DataKeys = serde_json::from_str(body).unwrap();
            let value: Value = serde_json::from_str(body).unwrap();
            assert_eq!((keys.seq, keys.ts), read(&value), "{body}");
            let strings = value.as_object().unwrap().values().all(Value::is_string);
            assert_eq!(keys.all_strings, strings, "{body}");
        }
        assert!(serde_json::from_str::<DataKeys>(r#""not a map""#).is_err());
    }
}
