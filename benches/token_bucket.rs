//! Benchmarks of frequency caps: `UserBuckets::try_take` across 100k users (the per-request cost
//! on the accept path), a single `TokenBucket`, and the periodic `evict_full` sweep.

use std::hint::black_box;
use std::time::Duration;

use clarion_shards::{TokenBucket, UserBuckets};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// Users with a live bucket: an hour of a busy shard's distinct recipients.
const USERS: usize = 100_000;
/// The cap under test.
const PER_HOUR: u32 = 100;

fn users() -> Vec<String> {
    (0..USERS).map(|i| format!("user-{i:08}")).collect()
}

fn token_bucket(c: &mut Criterion) {
    let users = users();
    let mut g = c.benchmark_group("token_bucket");
    g.throughput(Throughput::Elements(1));

    let mut buckets = UserBuckets::new(PER_HOUR);
    for u in &users {
        buckets.try_take(u, 0);
    }
    let (mut i, mut now) = (0usize, 0u64);
    g.bench_function("user_buckets_try_take/100k", |b| {
        b.iter(|| {
            i = (i + 7919) % USERS;
            now += 1;
            buckets.try_take(black_box(&users[i]), now)
        })
    });
    assert!(buckets.len() >= USERS);

    let mut bucket = TokenBucket::new(PER_HOUR, PER_HOUR, 3_600_000, 0);
    let mut now = 0u64;
    g.bench_function("token_bucket_try_take", |b| {
        b.iter(|| {
            now += 37;
            bucket.try_take(black_box(now))
        })
    });

    g.throughput(Throughput::Elements(USERS as u64));
    g.bench_function("evict_full/100k", |b| {
        b.iter_batched(
            || {
                let mut buckets = UserBuckets::new(PER_HOUR);
                for (n, u) in users.iter().enumerate() {
                    buckets.try_take(u, n as u64);
                }
                buckets
            },
            // Half an hour on, every bucket has refilled its one token: all are evicted.
            |mut buckets| buckets.evict_full(black_box(1_800_000)),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = token_bucket
}
criterion_main!(benches);
