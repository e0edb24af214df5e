//! Benchmarks of the APNs sender's per-notification CPU work: encoding a typical ~250-byte
//! payload, and building the full HTTP/2 request (path, `apns-*` headers, authorization) for it.

use bytes::Bytes;
use clarion::channels::apns::{
    ApnsConfig, ApnsNotification, PayloadFields, PushType, RequestEncoder, encode_payload,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::HeaderValue;
use std::hint::black_box;

const TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
/// The shape of a real provider token header: `bearer` + ES256 JWT (~200 bytes).
const AUTHORIZATION: &str = "bearer eyJhbGciOiJFUzI1NiIsImtpZCI6IktFWTEyMzQ1NjcifQ.eyJpc3MiOiJURUFNMTIzNDU2IiwiaWF0IjoxNzAwMDAwMDAwfQ.MEUCIQDx3kz8b3Vh7qg1c2m9yq0Vt6bXhP4cXxk2gJ1nT0Z9pwIgQx7Vt6bXhP4cXxk2gJ1nT0Z9pwIgQx7Vt6bXhP4cXxk2gJ1nT0";

fn typical_data() -> clarion_shards::JsonObject {
    let data = serde_json::json!({
        "order_id": "ord_8f14e45fceea167a5a36dedd4bea2543",
        "deep_link": "acme://orders/ord_8f14e45fceea167a5a36dedd4bea2543",
    });
    clarion_shards::JsonObject::from_map(data.as_object().unwrap_or(&serde_json::Map::new()))
}

fn payload(c: &mut Criterion) {
    let data = typical_data();
    let fields = PayloadFields {
        title: Some("Order shipped"),
        body: Some("Your order #12345 from ACME Store is on the way and should arrive by Friday."),
        category: Some("ORDER_UPDATE"),
        data: &data,
    };
    let size = encode_payload(&fields).map(|b| b.len()).unwrap_or(0);
    let mut group = c.benchmark_group("apns");
    group.throughput(Throughput::Bytes(size as u64));
    group.bench_function(format!("encode_payload_{size}_bytes"), |b| {
        b.iter(|| encode_payload(black_box(&fields)))
    });
    group.finish();
}

fn request(c: &mut Criterion) {
    let config = ApnsConfig {
        team_id: "TEAM123456".into(),
        key_id: "KEY1234567".into(),
        topic: "com.acme.store".into(),
        ..ApnsConfig::default()
    };
    let Ok(encoder) = RequestEncoder::new(&config) else {
        panic!("benchmark config is valid");
    };
    let authorization = HeaderValue::from_static(AUTHORIZATION);
    let payload = Bytes::from(vec![b'x'; 250]);
    let mut id = 0u128;
    c.bench_function("apns/build_request", |b| {
        b.iter(|| {
            id += 1;
            let n = ApnsNotification {
                delivery_id: uuid::Uuid::from_u128(id),
                device_token: TOKEN,
                push_type: PushType::Alert,
                priority: 10,
                expiration_unix_s: 1_700_086_400,
                collapse_id: Some("order-12345"),
                payload: payload.clone(),
            };
            encoder.encode(black_box(&n), &authorization)
        })
    });
}

criterion_group!(benches, payload, request);
criterion_main!(benches);
