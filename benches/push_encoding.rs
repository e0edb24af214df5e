//! Benchmarks of the per-notification CPU work of the Android and browser channels: building an
//! FCM HTTP v1 message body, and a Web Push message's RFC 8291 encryption (a fresh P-256 key,
//! an ECDH, three HKDFs and AES-128-GCM per message: what a browser delivery costs beyond an
//! iPhone's).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clarion::channels::webpush::{Subscription, encrypt};
use clarion_shards::{JsonObject, NotificationContent};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn content() -> NotificationContent {
    let data = serde_json::json!({
        "order_id": "ord_8f14e45fceea167a5a36dedd4bea2543",
        "deep_link": "acme://orders/ord_8f14e45fceea167a5a36dedd4bea2543",
        "items": 3,
    });
    NotificationContent {
        title: Some("Order shipped".into()),
        body: Some(
            "Your order #12345 from ACME Store is on the way and should arrive by Friday.".into(),
        ),
        data: JsonObject::from_map(data.as_object().unwrap_or(&serde_json::Map::new())),
        ..NotificationContent::default()
    }
}

fn fcm(c: &mut Criterion) {
    let content = content();
    let token = "dGVzdC10b2tlbi1mb3ItYmVuY2g:APA91bHPRgkF3JUikC4ENAHEeMrd41Zxv3hVZjC9KtT8OvPVGJ-hQMRKRrZuJAEcl7B338qju59zJMjw2DELjzEvxwYv7hH5Ynpc1ODQ0aT4U4OFEeco8ohsN5PjL1iC2dNtk2BAokeMCg2ZXKqpc8FXKmhX94kIxQ";
    c.bench_function("fcm/encode_message", |b| {
        b.iter(|| clarion::channels::fcm::encode(black_box(token), black_box(&content)))
    });
}

fn webpush(c: &mut Criterion) {
    let p256dh = URL_SAFE_NO_PAD
        .decode("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4")
        .unwrap_or_default();
    let sub = Subscription {
        endpoint: "https://fcm.googleapis.com/fcm/send/abc".into(),
        p256dh: p256dh.try_into().unwrap_or([4; 65]),
        auth: [7; 16],
    };
    let plaintext = br#"{"id":"0193c5a2-7b1e-7c3d-9f00-0123456789ab","title":"Order shipped","body":"Your order #12345 from ACME Store is on the way and should arrive by Friday.","data":{"order_id":"ord_8f14e45fceea167a5a36dedd4bea2543","deep_link":"acme://orders/ord_8f14e45fceea167a5a36dedd4bea2543","items":3}}"#;
    c.bench_function("webpush/encrypt_270_bytes", |b| {
        b.iter(|| encrypt(black_box(&sub), black_box(plaintext)))
    });
}

criterion_group!(benches, fcm, webpush);
criterion_main!(benches);
