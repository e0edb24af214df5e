//! The server's own view of a run, read from `GET /v1/stats` before and after it: how long its
//! logs' group commits took to write into fjall (`log_write`: where waits on fjall's locks show)
//! and to fsync (`log_fsync`: the disk), as cumulative buckets summed over shards. Every `202`
//! waits for one of each, so this is the log's share of accept latency, in the same run.

use http::Method;
use serde::Serialize;
use serde_json::Value;

use super::client::ApiClient;

/// One histogram (`log_write` or `log_fsync`) of a `/v1/stats` answer: `(upper bound in µs, cumulative count)`,
/// the last bound `None` (`+Inf`), the sum and the slowest since the server started.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencyBuckets {
    pub cumulative: Vec<(Option<u64>, u64)>,
    pub sum_micros: u64,
    pub max_micros: u64,
}

/// Both histograms of one reading.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogReading {
    pub write: LatencyBuckets,
    pub fsync: LatencyBuckets,
}

/// The server's log during a run: its commits' writes and its fsyncs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ServerLog {
    pub write: ServerLatency,
    pub fsync: ServerLatency,
}

impl ServerLog {
    /// The log's work between two readings of the same server.
    #[must_use]
    pub fn between(start: &LogReading, end: &LogReading) -> Option<ServerLog> {
        Some(ServerLog {
            write: ServerLatency::between(&start.write, &end.write)?,
            fsync: ServerLatency::between(&start.fsync, &end.fsync)?,
        })
    }
}

/// One of the log's histograms during a run (the difference of two [`LatencyBuckets`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ServerLatency {
    pub count: u64,
    pub mean_us: f64,
    /// Bucket bounds (µs) under which 50%, 99% and 99.9% of the run's durations fell; `None`
    /// when past the last bound.
    pub p50_at_most_us: Option<u64>,
    pub p99_at_most_us: Option<u64>,
    pub p999_at_most_us: Option<u64>,
    /// Durations over 5, 10 and 50 ms.
    pub over_5ms: u64,
    pub over_10ms: u64,
    pub over_50ms: u64,
    /// The slowest since the server started (the only figure not limited to the run).
    pub max_since_start_us: u64,
}

/// Reads the server's `log_write` and `log_fsync` histograms; `None` when the server does not
/// answer or has none (an older build), so a load against any server still runs.
pub(crate) async fn fetch(client: &ApiClient) -> Option<LogReading> {
    let resp = client
        .send(Method::GET, "/v1/stats", Default::default())
        .await
        .ok()?;
    if resp.status != 200 {
        return None;
    }
    let v: Value = serde_json::from_slice(&resp.body).ok()?;
    Some(LogReading {
        write: parse(&v["total"]["log_write"])?,
        fsync: parse(&v["total"]["log_fsync"])?,
    })
}

fn parse(v: &Value) -> Option<LatencyBuckets> {
    let mut cumulative = Vec::new();
    for pair in v["buckets"].as_array()? {
        let le = pair.get(0)?.as_str()?;
        let bound = if le == "+Inf" {
            None
        } else {
            Some(le.parse().ok()?)
        };
        cumulative.push((bound, pair.get(1)?.as_u64()?));
    }
    Some(LatencyBuckets {
        cumulative,
        sum_micros: v["sum_micros"].as_u64()?,
        max_micros: v["max_micros"].as_u64()?,
    })
}

impl ServerLatency {
    /// The durations recorded between two readings of the same server.
    #[must_use]
    pub fn between(start: &LatencyBuckets, end: &LatencyBuckets) -> Option<ServerLatency> {
        // Other bounds, or a count that went down (the server restarted during the run): no
        // difference to take.
        let same_bounds = start.cumulative.len() == end.cumulative.len()
            && start
                .cumulative
                .iter()
                .zip(&end.cumulative)
                .all(|(s, e)| s.0 == e.0 && s.1 <= e.1);
        if !same_bounds || end.sum_micros < start.sum_micros {
            return None;
        }
        let during: Vec<(Option<u64>, u64)> = end
            .cumulative
            .iter()
            .zip(&start.cumulative)
            .map(|(&(bound, e), &(_, s))| (bound, e.saturating_sub(s)))
            .collect();
        let count = during.last().map_or(0, |&(_, c)| c);
        let at_most = |q: f64| -> Option<u64> {
            let want = ((q * count as f64).ceil() as u64).max(1);
            during
                .iter()
                .find(|&&(_, c)| c >= want)
                .and_then(|&(b, _)| b)
        };
        let over = |micros: u64| -> u64 {
            during
                .iter()
                .find(|&&(b, _)| b == Some(micros))
                .map_or(0, |&(_, c)| count - c)
        };
        let sum = end.sum_micros.saturating_sub(start.sum_micros);
        Some(ServerLatency {
            count,
            mean_us: if count == 0 {
                0.0
            } else {
                sum as f64 / count as f64
            },
            p50_at_most_us: at_most(0.5),
            p99_at_most_us: at_most(0.99),
            p999_at_most_us: at_most(0.999),
            over_5ms: over(5_000),
            over_10ms: over(10_000),
            over_50ms: over(50_000),
            max_since_start_us: end.max_micros,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reading(counts: &[(&str, u64)], sum: u64, max: u64) -> LatencyBuckets {
        let v = json!({"count": 0, "sum_micros": sum, "max_micros": max, "buckets": counts});
        parse(&v).expect("parses")
    }

    #[test]
    fn parses_the_stats_api_form() {
        let r = reading(&[("100", 3), ("5000", 7), ("+Inf", 8)], 90_000, 70_000);
        assert_eq!(
            r.cumulative,
            vec![(Some(100), 3), (Some(5000), 7), (None, 8)]
        );
        assert_eq!((r.sum_micros, r.max_micros), (90_000, 70_000));
        assert_eq!(parse(&json!({"buckets": [["x", 1]]})), None);
        assert_eq!(parse(&Value::Null), None);
    }

    #[test]
    fn the_run_is_the_difference_of_two_readings() {
        let bounds = ["200", "1000", "5000", "10000", "50000", "+Inf"];
        let with = |counts: [u64; 6], sum, max| {
            let pairs: Vec<(&str, u64)> = bounds.iter().copied().zip(counts).collect();
            reading(&pairs, sum, max)
        };
        // Before the run: 10 fast fsyncs (registration). During it: 1000 more, of which
        // 900 ≤ 200 µs, 95 ≤ 1 ms, 3 ≤ 5 ms, 1 ≤ 10 ms and 1 past 50 ms.
        let start = with([10, 10, 10, 10, 10, 10], 1_000, 150);
        let end = with([910, 1005, 1008, 1009, 1009, 1010], 301_000, 80_000);
        let f = ServerLatency::between(&start, &end).expect("same buckets");
        assert_eq!(f.count, 1000);
        assert!((f.mean_us - 300.0).abs() < 1e-9);
        assert_eq!(f.p50_at_most_us, Some(200));
        assert_eq!(f.p99_at_most_us, Some(1000));
        assert_eq!(f.p999_at_most_us, Some(10_000));
        assert_eq!((f.over_5ms, f.over_10ms, f.over_50ms), (2, 1, 1));
        assert_eq!(f.max_since_start_us, 80_000);
        let restarted = with([1, 1, 1, 1, 1, 1], 10, 10);
        assert_eq!(
            ServerLatency::between(&start, &restarted),
            None,
            "counts went down"
        );
        let moved = reading(
            &[
                ("100", 10),
                ("1000", 10),
                ("5000", 10),
                ("10000", 10),
                ("50000", 10),
                ("+Inf", 10),
            ],
            1_000,
            150,
        );
        assert_eq!(ServerLatency::between(&start, &moved), None, "other bounds");
        let none = ServerLatency::between(&start, &start).expect("same buckets");
        assert_eq!(
            (none.count, none.p50_at_most_us, none.p99_at_most_us),
            (0, None, None)
        );
        let other = with([0; 6], 0, 0);
        assert_eq!(
            ServerLatency::between(&reading(&[("+Inf", 0)], 0, 0), &other),
            None
        );
        let log = |r: LatencyBuckets| LogReading {
            write: r.clone(),
            fsync: r,
        };
        let both = ServerLog::between(&log(start), &log(end)).expect("both");
        assert_eq!(both.write, f);
        assert_eq!(both.fsync, f);
    }
}
