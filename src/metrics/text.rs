//! The Prometheus text exposition format (version 0.0.4): a `# HELP` and `# TYPE` line per
//! family, then its samples, label values escaped as the format says.

use std::fmt::Write;

use super::histogram::Histogram;

/// A family's type, as its `# TYPE` line says.
#[derive(Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// The exposition being written.
#[derive(Default)]
pub struct Text {
    out: String,
}

impl Text {
    /// Starts a family: `name` without the `_total` of a counter's samples.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.name());
    }

    /// One sample: `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", format_value(value));
    }

    /// A histogram's samples: cumulative `_bucket`s in seconds with `+Inf`, `_sum`, `_count`.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let mut running = 0u64;
        for (i, c) in h.counts.iter().enumerate() {
            running += c;
            let le = h
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |&us| format_value(us as f64 / 1e6));
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {running}");
        }
        if h.counts.is_empty() {
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some("+Inf"));
            let _ = writeln!(self.out, " 0");
        }
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", format_value(h.sum_micros as f64 / 1e6));
        let _ = write!(self.out, "{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {running}");
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let mut first = true;
        for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
            if !first {
                self.out.push(',');
            }
            first = false;
            let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
        }
        self.out.push('}');
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn format_value(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// Label values escape backslash, double quote and newline.
fn escape_label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// Help text escapes backslash and newline.
fn escape_help(v: &str) -> String {
    v.replace('\\', r"\\").replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_families_samples_and_cumulative_buckets() {
        let mut t = Text::default();
        t.family("clarion_x_total", Kind::Counter, "Things.\nMore");
        t.sample("clarion_x_total", &[("route", "/a\"b\\")], 3.0);
        t.family("clarion_y_seconds", Kind::Histogram, "Time.");
        let h = Histogram {
            bounds: &[1_000, 500_000],
            counts: vec![2, 1, 1],
            sum_micros: 1_501_000,
        };
        t.histogram("clarion_y_seconds", &[("channel", "apns")], &h);
        let s = t.finish();
        assert_eq!(
            s,
            "# HELP clarion_x_total Things.\\nMore\n# TYPE clarion_x_total counter\n\
             clarion_x_total{route=\"/a\\\"b\\\\\"} 3\n\
             # HELP clarion_y_seconds Time.\n# TYPE clarion_y_seconds histogram\n\
             clarion_y_seconds_bucket{channel=\"apns\",le=\"0.001\"} 2\n\
             clarion_y_seconds_bucket{channel=\"apns\",le=\"0.5\"} 3\n\
             clarion_y_seconds_bucket{channel=\"apns\",le=\"+Inf\"} 4\n\
             clarion_y_seconds_sum{channel=\"apns\"} 1.501\n\
             clarion_y_seconds_count{channel=\"apns\"} 4\n"
        );
    }
}
