//! The request fuzz targets' bounded run in `cargo test`: each target gets a fixed number of
//! generated bodies (JSON built from the API's own field names with values near every limit,
//! sometimes damaged byte by byte), every body in `fuzz/seeds/<target>/`, and a ceiling on the
//! memory one body may take.

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

/// Generated bodies per target and run: about a second per target in a debug build.
const CASES: u32 = 1_000;
/// Peak heap a body may take while it is parsed, per body byte, plus [`MEMORY_SLACK`]. A
/// batch of empty objects (`{},` per item) is the densest body: each 3 bytes become an item
/// with its parsed fields and its answer.
const MEMORY_PER_BODY_BYTE: usize = 256;
/// The fixed part of the memory ceiling: the parsers' and the payload check's small buffers.
const MEMORY_SLACK: usize = 64 * 1024;

/// A fuzz target: panics if the parser is wrong.
type Target = fn(&[u8]);

/// Runs `target` on `body`, asserting that it stays under the memory ceiling.
fn run(target: Target, body: &[u8]) {
    // A panic must not unwind through `measure`, which would then stay nested for good.
    let mut outcome = Ok(());
    let info = allocation_counter::measure(|| {
        outcome = std::panic::catch_unwind(|| target(body));
    });
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    let ceiling = MEMORY_PER_BODY_BYTE * body.len() + MEMORY_SLACK;
    assert!(
        info.bytes_max as usize <= ceiling,
        "{} bytes of body took {} bytes of heap (ceiling {ceiling})",
        body.len(),
        info.bytes_max
    );
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        ..ProptestConfig::default()
    }
}

/// A JSON string literal of `s`.
fn quoted(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// Any JSON value as text, small and nested, with whitespace here and there.
fn any_json() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| Value::from(f).to_string()),
        Just("1e400".to_owned()),
        Just("18446744073709551616".to_owned()),
        "\\PC{0,8}".prop_map(|s| quoted(&s)),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((prop_oneof!["[a-c]", Just("aps".to_owned())], inner), 0..4)
                .prop_map(|m| {
                    let members: Vec<String> = m
                        .iter()
                        .map(|(k, v)| format!("{} : {v}", quoted(k)))
                        .collect();
                    format!("{{ {} }}", members.join(", "))
                }),
        ]
    })
}

/// A string value near a field's limits and formats, or a value of another type.
fn string_near(valid: &'static [&'static str], limit: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(valid).prop_map(quoted),
        1 => Just(quoted(&"x".repeat(limit))),
        1 => Just(quoted(&"x".repeat(limit + 1))),
        1 => Just(quoted("")),
        1 => "\\PC{0,12}".prop_map(|s| quoted(&s)),
        1 => Just(quoted("a\u{1}b")),
        1 => any_json(),
    ]
}

/// A member whose key is long: unknown as a field, or repeated inside `data`.
fn long_key_member() -> BoxedStrategy<String> {
    ("[a-z]{100,2000}", any::<bool>())
        .prop_map(|(key, in_data)| {
            let key = quoted(&key);
            if in_data {
                format!(r#""data":{{{key}:1,{key}:2}}"#)
            } else {
                format!("{key}:1")
            }
        })
        .boxed()
}

/// One member of a notification object: a known field (sometimes twice) or an unknown one.
fn notification_member() -> impl Strategy<Value = String> {
    let member = |key: &'static str, value: BoxedStrategy<String>| {
        value.prop_map(move |v| format!("{}:{v}", quoted(key)))
    };
    prop_oneof![
        member(
            "user_id",
            string_near(&["u1", "user-1@tenant", "a b"], 128).boxed()
        ),
        member("idempotency_key", string_near(&["k1", "k2"], 255).boxed()),
        member("title", string_near(&["Hi", "Tïtle \"q\""], 1024).boxed()),
        member("body", string_near(&["There", "ünï ✉️"], 4096).boxed()),
        member("data", any_json().boxed()),
        member("data", Just(r#"{"a":1,"a":2}"#.to_owned()).boxed()),
        member("category", string_near(&["c"], 64).boxed()),
        member(
            "priority",
            string_near(&["high", "normal", "max"], 16).boxed()
        ),
        member(
            "ttl_seconds",
            prop_oneof![
                Just("60".to_owned()),
                Just("2419200".to_owned()),
                Just("2419201".to_owned()),
                Just("-1".to_owned()),
                Just("1.5".to_owned()),
                Just("\"60\"".to_owned()),
                any::<u64>().prop_map(|n| n.to_string()),
            ]
            .boxed()
        ),
        member("collapse_id", string_near(&["c1"], 64).boxed()),
        member("extra", any_json().boxed()),
        long_key_member(),
    ]
    .boxed()
}

/// A notification object's text: a valid core, most of the time, plus generated members.
fn notification_text() -> impl Strategy<Value = String> {
    (
        prop::bool::weighted(0.8),
        prop::collection::vec(notification_member(), 0..4),
    )
        .prop_map(|(core, mut members)| {
            if core {
                members.insert(
                    0,
                    r#""user_id":"u1","idempotency_key":"k1","body":"b""#.into(),
                );
            }
            format!("{{{}}}", members.join(","))
        })
}

/// `text` with a few bytes changed, inserted or cut off, now and then.
fn damaged(text: impl Strategy<Value = String>) -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((any::<Index>(), any::<u8>(), 0..3u8), 1..4);
    (text, prop::bool::weighted(0.2), edits).prop_map(|(text, damage, edits)| {
        let mut b = text.into_bytes();
        if damage && !b.is_empty() {
            for (at, byte, op) in edits {
                match op {
                    0 if !b.is_empty() => {
                        let i = at.index(b.len());
                        b[i] = byte;
                    }
                    1 => b.insert(at.index(b.len() + 1), byte),
                    _ => b.truncate(at.index(b.len() + 1)),
                }
            }
        }
        b
    })
}

fn batch_text() -> impl Strategy<Value = String> {
    let item = prop_oneof![8 => notification_text(), 1 => any_json()];
    (prop::collection::vec(item, 0..5), prop::bool::weighted(0.1)).prop_map(|(items, extra)| {
        let extra = if extra { r#","extra":1"# } else { "" };
        format!(r#"{{"notifications":[{}]{extra}}}"#, items.join(","))
    })
}

fn profile_text() -> impl Strategy<Value = String> {
    let member = prop_oneof![
        string_near(
            &["a@b.co", "first.last+tag@sub.example.org", "a@-b.co", "a@b"],
            254
        )
        .prop_map(|v| format!(r#""email":{v}"#)),
        string_near(&["+14155550123", "+04155550123", "555"], 16)
            .prop_map(|v| format!(r#""phone":{v}"#)),
        string_near(&["en-US", "zh-Hant-TW", "english!"], 35)
            .prop_map(|v| format!(r#""locale":{v}"#)),
        string_near(&["Europe/Paris", "UTC", "Mars", "a//b"], 64)
            .prop_map(|v| format!(r#""timezone":{v}"#)),
        any_json().prop_map(|v| format!(r#""name":{v}"#)),
        long_key_member(),
    ];
    prop::collection::vec(member, 0..5).prop_map(|m| format!("{{{}}}", m.join(",")))
}

fn device_text() -> impl Strategy<Value = String> {
    const TOKENS: &[&str] = &[
        "abababababababababababababababababababababababababababababababab",
        "ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB",
        "abababababababababababababababababababababababababababababababag",
        "abc",
    ];
    let member = prop_oneof![
        string_near(&["ios", "android"], 16).prop_map(|v| format!(r#""platform":{v}"#)),
        string_near(TOKENS, 4096).prop_map(|v| format!(r#""token":{v}"#)),
        any_json().prop_map(|v| format!(r#""extra":{v}"#)),
    ];
    let core = format!(r#""platform":"ios","token":{}"#, quoted(TOKENS[0]));
    (
        prop::bool::weighted(0.7),
        prop::collection::vec(member, 0..3),
    )
        .prop_map(move |(valid, mut m)| {
            if valid {
                m.insert(0, core.clone());
            }
            format!("{{{}}}", m.join(","))
        })
}

fn selection_text() -> impl Strategy<Value = String> {
    let member = prop_oneof![
        prop::collection::vec(
            string_near(&["0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "nope"], 40),
            0..4
        )
        .prop_map(|ids| format!(r#""delivery_ids":[{}]"#, ids.join(","))),
        string_near(&["fcm", "webpush", "sms"], 16).prop_map(|v| format!(r#""channel":{v}"#)),
        string_near(&["retries_exhausted", "config_fault"], 32)
            .prop_map(|v| format!(r#""reason":{v}"#)),
        string_near(&["2026-12-06T10:00:00Z", "1700000000000", "yesterday"], 40)
            .prop_map(|v| format!(r#""since":{v}"#)),
        any_json().prop_map(|v| format!(r#""until":{v}"#)),
        any_json().prop_map(|v| format!(r#""all":{v}"#)),
    ];
    prop::collection::vec(member, 0..4).prop_map(|m| format!("{{{}}}", m.join(",")))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_single_notification(body in damaged(notification_text())) {
        run(single_notification, &body);
    }

    #[test]
    fn fuzz_batch(body in damaged(batch_text())) {
        run(batch, &body);
    }

    #[test]
    fn fuzz_user_profile(body in damaged(profile_text())) {
        run(user_profile, &body);
    }

    #[test]
    fn fuzz_device(body in damaged(device_text())) {
        run(device, &body);
    }

    #[test]
    fn fuzz_dead_letter_selection(body in damaged(selection_text())) {
        run(dead_letter_selection, &body);
    }
}

/// Every body kept in `fuzz/seeds/<target>/` (the libFuzzer seeds and any body a long run
/// found), and a batch of empty items, the densest body there is, under the memory ceiling.
#[test]
fn fuzz_seeds_replay() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let targets: [(&str, Target); 5] = [
        ("single_notification", single_notification),
        ("batch", batch),
        ("user_profile", user_profile),
        ("device", device),
        ("dead_letter_selection", dead_letter_selection),
    ];
    for (name, target) in targets {
        let Ok(dir) = std::fs::read_dir(root.join(name)) else {
            continue;
        };
        for entry in dir.flatten() {
            run(target, &std::fs::read(entry.path()).expect("read seed"));
        }
    }
    let dense = format!(
        r#"{{"notifications":[{}{{}}]}}"#,
        "{},".repeat(MAX_BATCH - 1)
    );
    run(batch, dense.as_bytes());
}

/// Found by `fuzz_single_notification` (the known difference `data_type_checked_first`
/// allows): a notification whose `data` is not an object is refused for another field alone,
/// and for `data` beside a badly typed batch item. For the owner of `notifications.rs`.
#[test]
#[ignore = "notifications.rs: the field-by-field path checks data's type before validating"]
fn batch_item_error_names_the_same_field_as_alone() {
    let alone = parse_single(br#"{"data":true}"#).unwrap_err();
    let items = parse_batch(br#"{"notifications":[{"data":true},{"body":7}]}"#).unwrap();
    let item = items[0].as_ref().unwrap_err();
    assert_eq!(
        (
            alone.code,
            alone.field.map(|f| format!("notifications[0].{f}"))
        ),
        (item.code, item.field.clone())
    );
}
