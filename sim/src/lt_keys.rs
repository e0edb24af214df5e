//! The load-test keys (`lt_seq`, `lt_ts`) in a message's `data`, for the simulators whose
//! messages carry data as JSON (FCM's string map, Web Push's decrypted plaintext): numbers or
//! digit strings, as FCM turns every value into a string.

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
