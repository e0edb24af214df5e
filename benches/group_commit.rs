//! Benchmark of the shard log's group commit: records/s made durable (fsync on, real disk) when
//! submissions arrive in bursts of 1, 64 and 512 single-record batches, each burst awaited before
//! the next — the shape of a shard accepting notifications while earlier ones are being fsynced.

use std::time::{Duration, Instant};

use clarion_shards::{
    Durable, Error, IdGenerator, Keyspace, LogConfig, NotificationContent, NotificationRecord,
    ShardLog, WriteBatch, open,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_lite::future::block_on;

/// Submissions that arrive together before anyone awaits.
const ARRIVAL_SIZES: [usize; 3] = [1, 64, 512];

/// A typical notification record (about 130 bytes in record format v2; the fjall ceilings were
/// measured with ~300-byte values):
/// content and idempotency key, deliveries left out to stay at that size.
fn sample_value() -> Vec<u8> {
    let data = clarion_shards::JsonObject::parse(r#"{"order_id":"12345"}"#).unwrap_or_default();
    let n = NotificationRecord {
        id: IdGenerator::new(0, 1).next(1_700_000_000_000),
        user_id: "user-00012345".into(),
        idempotency_key: "order-12345-shipped".into(),
        accepted_at_ms: 1_700_000_000_000,
        content: NotificationContent {
            title: Some("Order shipped".into()),
            body: Some("Your order #12345 is on the way".into()),
            data,
            ..NotificationContent::default()
        },
        deliveries: Vec::new(),
    };
    n.encode()
}

fn submit_burst(log: &ShardLog, ids: &mut IdGenerator, value: &[u8], size: usize, now: u64) {
    let mut waiters: Vec<Durable> = Vec::with_capacity(size);
    for _ in 0..size {
        let mut b = WriteBatch::new();
        b.put(
            Keyspace::Notifications,
            ids.next(now).as_bytes().as_slice(),
            value,
        );
        loop {
            match log.submit(b.clone()) {
                Ok(d) => break waiters.push(d),
                // Queue full: let the storage thread catch up, then retry.
                Err(Error::Busy) => std::thread::sleep(Duration::from_micros(50)),
                Err(e) => panic!("submit failed: {e}"),
            }
        }
    }
    for w in waiters {
        if let Err(e) = block_on(w) {
            panic!("commit failed: {e}");
        }
    }
}

fn group_commit(c: &mut Criterion) {
    let value = sample_value();
    let mut g = c.benchmark_group("group_commit");
    g.throughput(Throughput::Elements(1));
    for size in ARRIVAL_SIZES {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let config = LogConfig {
            dir: dir.path().join("shard-00"),
            shard: 0,
            fsync: true,
            dedup_window_ms: 60_000,
        };
        let (log, _) = open(config, 0).unwrap_or_else(|e| panic!("open: {e}"));
        let mut ids = IdGenerator::new(0, 7);
        let mut now = 1_700_000_000_000u64;
        g.bench_function(BenchmarkId::new("fsync_records", size), |b| {
            b.iter_custom(|iters| {
                // `iters` records, in bursts of `size`.
                let started = Instant::now();
                let mut left = iters as usize;
                while left > 0 {
                    let burst = left.min(size);
                    now += 1;
                    submit_burst(&log, &mut ids, &value, burst, now);
                    left -= burst;
                }
                started.elapsed()
            })
        });
        let s = log.stats();
        eprintln!(
            "group_commit/{size}: value_bytes={} batches={} fsyncs={} records/fsync={:.1} \
             max_group={} last_fsync_us={}",
            value.len(),
            s.batches,
            s.fsyncs,
            s.records as f64 / s.fsyncs.max(1) as f64,
            s.max_batch_records,
            s.last_fsync_micros
        );
        log.join().unwrap_or_else(|e| panic!("join: {e}"));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = group_commit
}
criterion_main!(benches);
