//! Benchmark of HTTP ingress's per-notification CPU work: parsing and validating a batch request
//! of 100 typical notifications (fields, `data`, the rendered APNs payload's size check).

use clarion::api::notifications::parse_batch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const BATCH: usize = 100;

/// A batch body shaped like the load generator's and like a product's order updates.
fn batch_body() -> Vec<u8> {
    let items: Vec<serde_json::Value> = (0..BATCH)
        .map(|i| {
            serde_json::json!({
                "user_id": format!("user-{i:08}"),
                "idempotency_key": format!("order-{i}-shipped"),
                "title": "Order shipped",
                "body": "Your order #12345 from ACME Store is on the way and should arrive by Friday.",
                "data": {
                    "order_id": "ord_8f14e45fceea167a5a36dedd4bea2543",
                    "deep_link": "acme://orders/ord_8f14e45fceea167a5a36dedd4bea2543",
                    "seq": i,
                },
                "category": "ORDER_UPDATE",
                "priority": "high",
                "ttl_seconds": 3600,
            })
        })
        .collect();
    serde_json::json!({ "notifications": items })
        .to_string()
        .into_bytes()
}

fn parsing(c: &mut Criterion) {
    let body = batch_body();
    let mut g = c.benchmark_group("api");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("parse_batch_of_100", |b| {
        b.iter(|| {
            let parsed = parse_batch(black_box(&body));
            assert!(
                parsed
                    .as_ref()
                    .is_ok_and(|items| items.iter().all(Result::is_ok))
            );
            parsed
        })
    });
    g.finish();
}

criterion_group!(benches, parsing);
criterion_main!(benches);
