//! Benchmarks of the dedup set at a realistic size (1M idempotency keys in the window): lookups
//! that hit and miss, the steady state of insert + expire, and the key hash itself.

use std::hint::black_box;
use std::time::Duration;

use clarion_shards::{DedupSet, dedup_key};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use uuid::Uuid;

/// Keys in the set: a day of a busy shard's idempotency keys.
const ENTRIES: u64 = 1_000_000;

/// A set of `ENTRIES` keys inserted one per ms, with a window of exactly `ENTRIES` ms.
fn full_set() -> (DedupSet, Vec<u128>) {
    let mut set = DedupSet::new(ENTRIES);
    let mut keys = Vec::with_capacity(ENTRIES as usize);
    for t in 0..ENTRIES {
        let key = dedup_key(&format!("user-{}", t % 50_000), &format!("key-{t}"));
        set.insert(key, Uuid::from_u128(u128::from(t)), t);
        keys.push(key);
    }
    (set, keys)
}

fn dedup(c: &mut Criterion) {
    let (mut set, keys) = full_set();
    let mut g = c.benchmark_group("dedup");
    g.throughput(Throughput::Elements(1));

    let mut i = 0usize;
    g.bench_function("get_hit/1M", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            set.get(black_box(keys[i]))
        })
    });
    let mut miss = 0u128;
    g.bench_function("get_miss/1M", |b| {
        b.iter(|| {
            miss = miss.wrapping_add(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834);
            set.get(black_box(miss))
        })
    });
    // Steady state: each new key arrives one ms later and pushes the oldest one out of the window.
    let mut t = ENTRIES;
    g.bench_function("insert_and_expire/1M", |b| {
        b.iter(|| {
            t += 1;
            let key = u128::from(t).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834);
            set.insert(key, Uuid::from_u128(u128::from(t)), t);
            set.expire(black_box(t))
        })
    });
    // One key per ms over an inclusive `[now - window, now]`: the set stays at 1M (+1), however
    // many iterations ran (one in `cargo test --benches`, millions under `cargo bench`).
    let len = set.len() as u64;
    assert!(
        (ENTRIES..=ENTRIES + 1).contains(&len),
        "steady state keeps the set at 1M, got {len}"
    );

    let mut n = 0u64;
    g.bench_function("dedup_key", |b| {
        b.iter(|| {
            n += 1;
            dedup_key(black_box("user-12345"), black_box(&n.to_string()))
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = dedup
}
criterion_main!(benches);
