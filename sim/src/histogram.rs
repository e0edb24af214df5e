//! HDR histogram helpers shared by the simulator and the load generator: the one latency
//! histogram shape used everywhere (µs, 1 µs to 1 h, 3 significant digits), its base64 V2 wire
//! form, quantile read-outs, and the `.hgrm` text that HdrHistogram's
//! `outputPercentileDistribution` prints (values in milliseconds), so the files plot with the
//! usual HdrHistogram plotter and compare with wrk2's output.

use std::fmt::Write as _;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::Serialize;

/// Lowest latency told apart, in µs.
pub const LOWEST_US: u64 = 1;
/// Highest latency recorded as itself, in µs (one hour); larger values saturate.
pub const HIGHEST_US: u64 = 3_600_000_000;
/// Significant value digits kept.
pub const SIGFIG: u8 = 3;
/// Percentile ticks per half distance in `.hgrm` output (HdrHistogram's default).
const TICKS_PER_HALF_DISTANCE: u32 = 5;
/// `.hgrm` values are milliseconds; histograms hold microseconds.
const US_PER_MS: f64 = 1_000.0;

/// An empty latency histogram (µs).
pub fn latency_histogram() -> Histogram<u64> {
    // The bounds are constants that `new_with_bounds` accepts (1 <= low, high >= 2 * low,
    // sigfig <= 5), so the error arm cannot be reached.
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIG)
        .unwrap_or_else(|e| unreachable!("constant histogram bounds rejected: {e}"))
}

/// Base64 of the V2 (uncompressed) HdrHistogram serialization.
pub fn encode_base64_v2(h: &Histogram<u64>) -> Result<String, String> {
    let mut buf = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut buf)
        .map_err(|e| format!("serialize histogram: {e:?}"))?;
    Ok(STANDARD.encode(buf))
}

/// The inverse of [`encode_base64_v2`] (any V2 or V2-deflate serialization is accepted).
pub fn decode_base64_v2(s: &str) -> Result<Histogram<u64>, String> {
    let bytes = STANDARD
        .decode(s)
        .map_err(|e| format!("histogram base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| format!("deserialize histogram: {e:?}"))
}

/// The read-outs printed in summaries, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / US_PER_MS;
        LatencySummary {
            count: h.len(),
            mean_ms: h.mean() / US_PER_MS,
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// HdrHistogram's sub-bucket count for a precision (not exposed by the crate).
fn sub_bucket_count(sigfig: u8) -> u64 {
    let largest = 2 * 10u64.pow(u32::from(sigfig));
    1u64 << (largest as f64).log2().ceil() as u32
}

/// The percentile distribution in the exact text format of HdrHistogram's
/// `outputPercentileDistribution(out, 5, 1000.0)`: values in ms from a µs histogram.
pub fn percentile_distribution(h: &Histogram<u64>) -> String {
    let p = usize::from(h.sigfig());
    let mut out = String::new();
    let _ = write!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for v in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
        total += v.count_since_last_iteration();
        let value = v.value_iterated_to() as f64 / US_PER_MS;
        let q = v.quantile_iterated_to();
        if q < 1.0 {
            let _ = writeln!(
                out,
                "{value:12.p$} {q:2.12} {total:10} {:14.2}",
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(out, "{value:12.p$} {q:2.12} {total:10}");
        }
    }
    let (mean, stdev) = if h.is_empty() {
        (0.0, 0.0)
    } else {
        (h.mean(), h.stdev())
    };
    let _ = writeln!(
        out,
        "#[Mean    = {:12.p$}, StdDeviation   = {:12.p$}]",
        mean / US_PER_MS,
        stdev / US_PER_MS
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.p$}, Total count    = {:12}]",
        h.max() as f64 / US_PER_MS,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_bucket_count(h.sigfig())
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_v2_roundtrips() {
        let mut h = latency_histogram();
        for v in [1, 10, 100, 1_000, 123_456] {
            h.record(v).expect("record");
        }
        let back = decode_base64_v2(&encode_base64_v2(&h).expect("encode")).expect("decode");
        assert_eq!(back.len(), 5);
        assert_eq!(back.max(), h.max());
        assert_eq!(back.value_at_quantile(0.5), h.value_at_quantile(0.5));
        assert!(decode_base64_v2("!!!").is_err());
    }

    #[test]
    fn hgrm_matches_hdrhistogram_layout() {
        let mut h = latency_histogram();
        for v in 1..=1000u64 {
            h.record(v * 1_000).expect("record"); // 1 ms .. 1000 ms
        }
        let text = percentile_distribution(&h);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        // First row: the minimum at percentile 0, one value counted, 1/(1-0) = 1.00.
        assert_eq!(
            lines[2],
            "       1.000 0.000000000000          1           1.00"
        );
        let median = lines
            .iter()
            .find(|l| l.contains(" 0.500000000000 "))
            .expect("p50 row");
        assert!(median.trim_start().starts_with("500."), "{median}");
        let last_row = lines[lines.len() - 4];
        assert!(
            last_row.contains(" 1.000000000000       1000"),
            "{last_row}"
        );
        assert_eq!(
            last_row.split_whitespace().count(),
            3,
            "100% row has no 1/(1-p)"
        );
        assert!(lines[lines.len() - 3].starts_with("#[Mean    =      500."));
        assert!(lines[lines.len() - 2].ends_with("Total count    =         1000]"));
        assert_eq!(
            lines[lines.len() - 1],
            "#[Buckets =           22, SubBuckets     =         2048]"
        );
    }

    #[test]
    fn summary_reads_quantiles_in_ms() {
        let mut h = latency_histogram();
        for v in 1..=100u64 {
            h.record(v * 100).expect("record");
        }
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 100);
        assert!((s.p50_ms - 5.0).abs() < 0.01, "{}", s.p50_ms);
        assert!((s.max_ms - 10.0).abs() < 0.01, "{}", s.max_ms);
        assert_eq!(LatencySummary::of(&latency_histogram()).count, 0);
    }
}
