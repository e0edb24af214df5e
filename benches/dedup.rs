//! Benchmarks of the dedup cache at its bound (`DEDUP_CACHE_KEYS` newest keys): lookups that hit
//! and miss, the steady state of insert with eviction, and the keyed hash itself.

use std::hint::black_box;
use std::time::Duration;

use clarion_shards::{DEDUP_CACHE_KEYS, DedupCache, DedupHasher};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use uuid::Uuid;

/// A day: keys never expire during the benchmark, so inserts evict for room.
const WINDOW_MS: u64 = 86_400_000;

/// A full cache: `DEDUP_CACHE_KEYS` keys inserted one per ms.
fn full_cache(h: &DedupHasher) -> (DedupCache, Vec<u128>) {
    let mut cache = DedupCache::new(WINDOW_MS, DEDUP_CACHE_KEYS);
    let mut keys = Vec::with_capacity(DEDUP_CACHE_KEYS);
    for t in 0..DEDUP_CACHE_KEYS as u64 {
        let key = h.key(&format!("user-{}", t % 50_000), &format!("key-{t}"));
        cache.insert(key, Uuid::from_u128(u128::from(t)), t);
        keys.push(key);
    }
    (cache, keys)
}

fn dedup(c: &mut Criterion) {
    let h = DedupHasher::from_secret([7; 16]);
    let (mut cache, keys) = full_cache(&h);
    let now = DEDUP_CACHE_KEYS as u64;
    let mut g = c.benchmark_group("dedup");
    g.throughput(Throughput::Elements(1));

    let mut i = 0usize;
    g.bench_function("get_hit/64k", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            cache.get(black_box(keys[i]), now)
        })
    });
    let mut miss = 0u128;
    g.bench_function("get_miss/64k", |b| {
        b.iter(|| {
            miss = miss.wrapping_add(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834);
            cache.get(black_box(miss), now)
        })
    });
    // Steady state: each new key pushes the oldest out for room.
    let mut t = now;
    g.bench_function("insert_evicting/64k", |b| {
        b.iter(|| {
            t += 1;
            let key = u128::from(t).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834);
            cache.insert(key, Uuid::from_u128(u128::from(t)), t);
        })
    });
    assert_eq!(
        cache.len(),
        DEDUP_CACHE_KEYS,
        "the cache stays at its bound"
    );
    assert!(
        !cache.proves_absent(t),
        "it evicted keys still in the window"
    );

    let mut n = 0u64;
    g.bench_function("key_siphash24_128", |b| {
        b.iter(|| {
            n += 1;
            h.key(black_box("user-12345"), black_box(&n.to_string()))
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
