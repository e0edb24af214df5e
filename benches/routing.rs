//! Benchmarks of user routing: `shard_for_user` (FNV-1a + splitmix64, then jump consistent hash)
//! for 2 and 64 shards, and the two halves on their own.

use std::hint::black_box;
use std::time::Duration;

use clarion_shards::{jump_hash, shard_for_user, user_hash};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Distinct user ids cycled through, so the benchmark is not one cached key.
const USERS: usize = 4096;

fn users() -> Vec<String> {
    (0..USERS)
        .map(|i| format!("user-{i:08}@example.com"))
        .collect()
}

fn routing(c: &mut Criterion) {
    let users = users();
    let mut g = c.benchmark_group("routing");
    g.throughput(Throughput::Elements(1));
    for shards in [2u32, 64] {
        let mut i = 0usize;
        g.bench_function(format!("shard_for_user/{shards}"), |b| {
            b.iter(|| {
                i = (i + 1) % USERS;
                shard_for_user(black_box(&users[i]), black_box(shards))
            })
        });
    }
    let mut i = 0usize;
    g.bench_function("user_hash", |b| {
        b.iter(|| {
            i = (i + 1) % USERS;
            user_hash(black_box(&users[i]))
        })
    });
    let mut key = 0x9e37_79b9_7f4a_7c15u64;
    g.bench_function("jump_hash/64", |b| {
        b.iter(|| {
            key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
            jump_hash(black_box(key), black_box(64))
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
    targets = routing
}
criterion_main!(benches);
