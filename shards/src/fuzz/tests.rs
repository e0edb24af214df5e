//! The fuzz targets' bounded run in `cargo test`: each target gets a fixed number of random and
//! mutated inputs (proptest, so a failure shrinks to a small input and is saved under
//! `proptest-regressions/`), every input in `fuzz/seeds/<target>/` (the libFuzzer seeds and any
//! input a long run found), and a ceiling on the memory one input may take.

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;
use crate::record::{DeviceRecord, Platform};

/// Random and mutated inputs per target and run: about a second per target in a debug build.
const CASES: u32 = 2_000;
/// Longest random input: longer than any seed, so mutations reach every field.
const MAX_RANDOM_LEN: usize = 600;
/// Peak heap one input may take while it is decoded, per input byte, plus [`MEMORY_SLACK`]:
/// decoding allocates in proportion to its input (every count is checked against the bytes
/// left), so a fixed multiple bounds it. The densest records take about 10 bytes per input byte
/// (`densest_records_stay_under_the_memory_ceiling`).
const MEMORY_PER_INPUT_BYTE: usize = 64;
/// The fixed part of the memory ceiling: a decoded record's smallest allocations.
const MEMORY_SLACK: usize = 16 * 1024;

/// A fuzz target: panics if the code under test is wrong.
type Target = fn(&[u8]);

/// Runs `target` on `input`, asserting that it stays under the memory ceiling.
fn run(target: Target, input: &[u8]) {
    // A panic must not unwind through `measure`, which would then stay nested for good.
    let mut outcome = Ok(());
    let info = allocation_counter::measure(|| {
        outcome = std::panic::catch_unwind(|| target(input));
    });
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    let ceiling = MEMORY_PER_INPUT_BYTE * input.len() + MEMORY_SLACK;
    assert!(
        info.bytes_max as usize <= ceiling,
        "{} bytes of input took {} bytes of heap (ceiling {ceiling})",
        input.len(),
        info.bytes_max
    );
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        ..ProptestConfig::default()
    }
}

/// Random bytes, or a seed with a few bytes changed, inserted or cut off.
fn input(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let random = prop::collection::vec(any::<u8>(), 0..MAX_RANDOM_LEN);
    let edits = prop::collection::vec((any::<Index>(), any::<u8>(), 0..4u8), 1..5);
    let mutated = (any::<Index>(), edits).prop_map(move |(seed, edits)| {
        let mut b = seed.get(&seeds).clone();
        for (at, byte, op) in edits {
            match op {
                0 | 1 if !b.is_empty() => {
                    let i = at.index(b.len());
                    b[i] = byte;
                }
                2 => b.insert(at.index(b.len() + 1), byte),
                _ => b.truncate(at.index(b.len() + 1)),
            }
        }
        b
    });
    prop_oneof![1 => random, 3 => mutated]
}

/// The directory of a target's libFuzzer seeds.
fn seed_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target)
}

/// Every file in `fuzz/seeds/<target>/`, run through the target.
fn replay_seed_files(name: &str, target: Target) {
    let Ok(dir) = std::fs::read_dir(seed_dir(name)) else {
        return;
    };
    for entry in dir.flatten() {
        let bytes = std::fs::read(entry.path()).expect("read seed");
        run(target, &bytes);
    }
}

fn notification(deliveries: usize) -> NotificationRecord {
    let mut data = serde_json::Map::new();
    data.insert(
        "order".into(),
        serde_json::json!({"id": 12345, "tags": ["a", "ü"]}),
    );
    NotificationRecord {
        id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
        user_id: "user-1".into(),
        idempotency_key: "k-1".into(),
        accepted_at_ms: 1_700_000_000_000,
        content: NotificationContent {
            title: Some("Order shipped".into()),
            body: Some("On its way".into()),
            data: JsonObject::from_map(&data),
            category: Some("orders".into()),
            priority: Priority::Normal,
            ttl_seconds: Some(3600),
            collapse_id: Some("c".into()),
        },
        deliveries: (0..deliveries)
            .map(|i| DeliveryRecord {
                id: Uuid::from_u128(2 + i as u128),
                history: (0..i)
                    .map(|a| DeliveryEvent {
                        at_ms: 1_700_000_000_000 + a as u64,
                        state: DeliveryState::Retrying,
                        attempt: a as u32,
                        reason: Some("503 ServiceUnavailable".into()),
                    })
                    .collect(),
                ..base_delivery()
            })
            .collect(),
    }
}

fn user() -> UserRecord {
    UserRecord {
        user_id: "u-1".into(),
        email: Some("u@example.com".into()),
        phone: Some("+14155550123".into()),
        locale: Some("fr-CA".into()),
        timezone: None,
        devices: (0..3)
            .map(|i| DeviceRecord {
                platform: Platform::Ios,
                token: format!("{i:064x}"),
                active: i != 1,
                created_at_ms: 1_700_000_000_000 + i,
                registered_at_ms: 1_700_000_000_000 + 2 * i,
                deactivated_reason: (i == 1).then(|| "Unregistered".into()),
                deactivated_at_ms: (i == 1).then_some(1_700_000_000_100),
                device_id: format!("{i:064x}"),
            })
            .collect(),
        updated_at_ms: 1_700_000_000_009,
    }
}

/// `[1]` then the record's JSON: how format-1 records are stored.
fn json_v1<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![1];
    out.extend_from_slice(serde_json::to_string(value).expect("json").as_bytes());
    out
}

fn notification_seeds() -> Vec<Vec<u8>> {
    let bare = NotificationRecord {
        content: NotificationContent::default(),
        deliveries: Vec::new(),
        ..notification(0)
    };
    vec![
        notification(1).encode(),
        notification(3).encode(),
        bare.encode(),
        json_v1(&notification(2)),
    ]
}

fn user_seeds() -> Vec<Vec<u8>> {
    vec![
        user().encode(),
        UserRecord::default().encode(),
        json_v1(&user()),
    ]
}

fn update_seeds() -> Vec<Vec<u8>> {
    notification(4)
        .deliveries
        .iter()
        .map(DeliveryRecord::encode_update)
        .collect()
}

fn json_seeds() -> Vec<Vec<u8>> {
    [
        r#"{}"#,
        r#" { "a" : [1, 2.5e3, -0, null, true] , "b" : { "c" : "\"q\" \u00e9" } } "#,
        r#"{"aps":{"alert":"x"},"x":"\"aps\""}"#,
        r#"{"\u0061ps":1,"a":{"b":1,"b":2}}"#,
        r#"{"n":123456789012345678901234567890,"f":1.0,"s":"\ud83d\ude00"}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// JSON-like text from a soup of JSON's tokens: mostly near misses of valid JSON.
fn json_soup() -> impl Strategy<Value = Vec<u8>> {
    const TOKENS: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\"a\"",
        "\"aps\"",
        "\"\\u0061ps\"",
        "\"\"",
        "1",
        "-0.5e3",
        "1e999",
        "true",
        "null",
        "\"\\ud800\"",
        "\"x\\\"y\"",
        "\"\\\\\"",
        "\n",
    ];
    let token = (0..TOKENS.len()).prop_map(|i| TOKENS[i]);
    prop::collection::vec(token, 0..40).prop_map(|t| {
        let mut text = String::from("{");
        text.extend(t);
        text.into_bytes()
    })
}

/// Fold inputs are read through `Unstructured`: any bytes will do as seeds.
fn fold_seeds() -> Vec<Vec<u8>> {
    vec![(0..=255).collect(), (0..=255).rev().collect(), vec![7; 300]]
}

/// Fold inputs are read through `Unstructured`: random bytes are as good as any.
fn fold_input() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..MAX_RANDOM_LEN)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_notification_record(bytes in input(notification_seeds())) {
        run(notification_record, &bytes);
    }

    #[test]
    fn fuzz_user_record(bytes in input(user_seeds())) {
        run(user_record, &bytes);
    }

    #[test]
    fn fuzz_delivery_update(bytes in input(update_seeds())) {
        run(delivery_update, &bytes);
    }

    #[test]
    fn fuzz_json_object(bytes in prop_oneof![input(json_seeds()), json_soup()]) {
        run(json_object, &bytes);
    }

    #[test]
    fn fuzz_notification_fold(bytes in fold_input()) {
        run(notification_fold, &bytes);
    }
}

/// Records made of the smallest elements their counts allow (the most elements per input byte)
/// stay under the memory ceiling, whole or cut short (where a count claims more than is left).
#[test]
fn densest_records_stay_under_the_memory_ceiling() {
    let event = DeliveryEvent {
        at_ms: 0,
        state: DeliveryState::Queued,
        attempt: 0,
        reason: None,
    };
    let dense_delivery = DeliveryRecord {
        target: String::new(),
        next_attempt_at_ms: None,
        history: vec![event; 5_000],
        ..base_delivery()
    };
    let many_deliveries = NotificationRecord {
        deliveries: vec![
            DeliveryRecord {
                history: Vec::new(),
                ..dense_delivery.clone()
            };
            2_000
        ],
        ..notification(0)
    };
    let device = DeviceRecord {
        platform: Platform::Ios,
        token: String::new(),
        active: true,
        created_at_ms: 0,
        registered_at_ms: 0,
        deactivated_reason: None,
        deactivated_at_ms: None,
        device_id: String::new(),
    };
    let many_devices = UserRecord {
        devices: vec![device; 5_000],
        ..UserRecord::default()
    };
    let cases: [(Target, Vec<u8>); 3] = [
        (notification_record, many_deliveries.encode()),
        (user_record, many_devices.encode()),
        (delivery_update, dense_delivery.encode_update()),
    ];
    for (target, bytes) in cases {
        run(target, &bytes);
        run(target, &bytes[..bytes.len() - 1]);
    }
}

/// The seeds themselves, and every input kept in `fuzz/seeds/`.
#[test]
fn fuzz_seeds_replay() {
    let targets: [(&str, Target, Vec<Vec<u8>>); 5] = [
        (
            "notification_record",
            notification_record,
            notification_seeds(),
        ),
        ("user_record", user_record, user_seeds()),
        ("delivery_update", delivery_update, update_seeds()),
        ("json_object", json_object, json_seeds()),
        ("notification_fold", notification_fold, fold_seeds()),
    ];
    for (name, target, seeds) in targets {
        for seed in &seeds {
            run(target, seed);
        }
        replay_seed_files(name, target);
    }
}

/// Writes the seeds to `fuzz/seeds/<target>/`, where libFuzzer starts from:
/// `cargo test -p clarion-shards --lib -- --ignored write_fuzz_seeds`.
#[test]
#[ignore = "writes fuzz/seeds; run by hand when the seeds change"]
fn write_fuzz_seeds() {
    for (name, seeds) in [
        ("notification_record", notification_seeds()),
        ("user_record", user_seeds()),
        ("delivery_update", update_seeds()),
        ("json_object", json_seeds()),
        ("notification_fold", fold_seeds()),
    ] {
        let dir = seed_dir(name);
        std::fs::create_dir_all(&dir).expect("create seed dir");
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed).expect("write seed");
        }
    }
}
