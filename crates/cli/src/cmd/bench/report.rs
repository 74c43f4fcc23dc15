//! The result of a benchmark run and its two renderings: lines for people
//! and one JSON object for scripts.
//!
//! Rates use decimal units (1 MB = 10^6 bytes) of record value bytes only:
//! keys, headers, batch framing and gRPC overhead are not counted, so the
//! figure is what an application gets through.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Latencies are recorded in µs up to an hour; longer ones are clamped to
/// an hour (and a run that slow has bigger problems).
pub(crate) const LATENCY_US_MAX: u64 = 3_600 * 1_000_000;
/// Significant decimal digits the histogram keeps: values are exact to 0.1%.
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// An empty latency histogram in µs.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Summary {
    /// `produce`, `consume` or `e2e`.
    pub(crate) kind: &'static str,
    /// Records acknowledged (produce) or received (consume, e2e).
    pub(crate) records: u64,
    /// Their value bytes.
    pub(crate) bytes: u64,
    /// Wall time from the first send (or fetch) to the last ack (or receipt).
    pub(crate) elapsed: Duration,
    /// The target rate, records/s, if the run was paced.
    pub(crate) rate: Option<f64>,
    /// What the latency measures, e.g. "send to ack"; `None` with no latency.
    pub(crate) latency_of: Option<&'static str>,
    /// Latency percentiles in µs.
    pub(crate) latency: Option<Percentiles>,
    /// Records due in this first part of the run are not in `latency`.
    pub(crate) warmup: Duration,
    /// CPU time (user + system) this process spent on the run.
    pub(crate) client_cpu: Duration,
}

/// CPU time (user + system) this process has used so far: the difference
/// of two readings is what a run cost the client, which on a shared
/// machine is a steadier figure than its rate.
pub(crate) fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// Latency percentiles of one run, µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Percentiles {
    pub(crate) count: u64,
    pub(crate) mean: u64,
    pub(crate) p50: u64,
    pub(crate) p90: u64,
    pub(crate) p99: u64,
    pub(crate) p999: u64,
    pub(crate) max: u64,
}

impl Percentiles {
    /// The percentiles of `h`; `None` if it is empty.
    pub(crate) fn of(h: &Histogram<u64>) -> Option<Self> {
        (!h.is_empty()).then(|| Percentiles {
            count: h.len(),
            mean: h.mean().round() as u64,
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        })
    }
}

impl Summary {
    /// Records per second over the elapsed time.
    pub(crate) fn records_per_sec(&self) -> f64 {
        per_sec(self.records as f64, self.elapsed)
    }

    /// Value megabytes (10^6 bytes) per second over the elapsed time.
    pub(crate) fn mb_per_sec(&self) -> f64 {
        per_sec(self.bytes as f64 / 1e6, self.elapsed)
    }

    /// Client CPU seconds per GB (10^9 value bytes); 0 with no bytes.
    pub(crate) fn client_cpu_s_per_gb(&self) -> f64 {
        if self.bytes == 0 {
            0.0
        } else {
            self.client_cpu.as_secs_f64() / (self.bytes as f64 / 1e9)
        }
    }

    /// Two or three lines for a terminal.
    pub(crate) fn render_text(&self) -> String {
        let mut out = format!(
            "{}: {} records, {:.1} MB in {:.2} s: {:.0} records/s, {:.2} MB/s",
            self.kind,
            self.records,
            self.bytes as f64 / 1e6,
            self.elapsed.as_secs_f64(),
            self.records_per_sec(),
            self.mb_per_sec(),
        );
        if let Some(rate) = self.rate {
            out.push_str(&format!(" (target {rate:.0} records/s)"));
        }
        if let (Some(of), Some(p)) = (self.latency_of, self.latency) {
            let after = if self.warmup.is_zero() {
                String::new()
            } else {
                format!(", after a {} warm-up: {} records", humantime::format_duration(self.warmup), p.count)
            };
            out.push_str(&format!(
                "\n{}: latency ({of}{after}), ms: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}",
                self.kind,
                ms(p.p50),
                ms(p.p90),
                ms(p.p99),
                ms(p.p999),
                ms(p.max),
                ms(p.mean),
            ));
        }
        out.push_str(&format!(
            "\n{}: client CPU {:.2} s: {:.2} CPU-s/GB",
            self.kind,
            self.client_cpu.as_secs_f64(),
            self.client_cpu_s_per_gb()
        ));
        out
    }

    /// One JSON object; latencies in µs.
    pub(crate) fn to_json(&self) -> Value {
        let latency = match (self.latency_of, self.latency) {
            (Some(of), Some(p)) => json!({
                "of": of,
                "count": p.count,
                "mean_us": p.mean,
                "p50_us": p.p50,
                "p90_us": p.p90,
                "p99_us": p.p99,
                "p999_us": p.p999,
                "max_us": p.max,
            }),
            _ => Value::Null,
        };
        json!({
            "kind": self.kind,
            "records": self.records,
            "bytes": self.bytes,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "records_per_sec": self.records_per_sec(),
            "mb_per_sec": self.mb_per_sec(),
            "target_rate": self.rate,
            "warmup_s": self.warmup.as_secs_f64(),
            "latency": latency,
            "client_cpu_s": self.client_cpu.as_secs_f64(),
            "client_cpu_s_per_gb": self.client_cpu_s_per_gb(),
        })
    }
}

fn per_sec(amount: f64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 {
        amount / s
    } else {
        0.0
    }
}

/// µs as ms with three decimals: 1234 -> "1.234".
/// µs as ms with three decimals.
pub(crate) fn ms(us: u64) -> String {
    format!("{}.{:03}", us / 1000, us % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        Summary {
            kind: "produce",
            records: 1_000_000,
            bytes: 1_024_000_000,
            elapsed: Duration::from_secs(8),
            rate: None,
            latency_of: Some("send to ack"),
            latency: Some(Percentiles {
                count: 1_000_000,
                mean: 5_003,
                p50: 5_000,
                p90: 9_000,
                p99: 9_903,
                p999: 10_007,
                max: 12_345_678,
            }),
            warmup: Duration::ZERO,
            client_cpu: Duration::from_millis(2048),
        }
    }

    #[test]
    fn rates_use_decimal_megabytes() {
        let s = summary();
        assert_eq!(s.records_per_sec(), 125_000.0);
        assert_eq!(s.mb_per_sec(), 128.0);
        let empty = Summary { elapsed: Duration::ZERO, ..s };
        assert_eq!((empty.records_per_sec(), empty.mb_per_sec()), (0.0, 0.0));
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut h = latency_histogram();
        for i in 1..=1000 {
            h.record(i * 10).unwrap();
        }
        h.saturating_record(LATENCY_US_MAX * 2);
        let p = Percentiles::of(&h).unwrap();
        // 10, 20, .. 10000 µs and one clamped to an hour; the histogram is
        // exact to 3 significant digits.
        let near = |got: u64, want: u64| got.abs_diff(want) * 1000 <= want;
        assert_eq!(p.count, 1001);
        assert!(near(p.p50, 5_010), "p50 {}", p.p50);
        assert!(near(p.p90, 9_010), "p90 {}", p.p90);
        assert!(near(p.p99, 9_910), "p99 {}", p.p99);
        assert!(near(p.p999, 10_000), "p99.9 {}", p.p999);
        assert!(near(p.max, LATENCY_US_MAX), "max {}", p.max);
        assert!(near(p.mean, (5_005_000 + LATENCY_US_MAX) / 1001), "mean {}", p.mean);
        assert_eq!(Percentiles::of(&latency_histogram()), None);
    }

    #[test]
    fn text_has_throughput_and_latency_lines() {
        let text = summary().render_text();
        assert_eq!(
            text,
            "produce: 1000000 records, 1024.0 MB in 8.00 s: 125000 records/s, 128.00 MB/s\n\
             produce: latency (send to ack), ms: p50 5.000  p90 9.000  p99 9.903  p99.9 10.007  \
             max 12345.678  mean 5.003\n\
             produce: client CPU 2.05 s: 2.00 CPU-s/GB"
        );
        let consume = Summary { kind: "consume", latency_of: None, latency: None, ..summary() };
        assert_eq!(consume.render_text().lines().count(), 2);
        let paced = Summary { rate: Some(50_000.0), ..summary() };
        assert!(paced.render_text().lines().next().unwrap().ends_with("(target 50000 records/s)"));
        let warmed = Summary { warmup: Duration::from_secs(2), ..summary() };
        let latency = warmed.render_text().lines().nth(1).unwrap().to_string();
        assert!(
            latency.starts_with("produce: latency (send to ack, after a 2s warm-up: 1000000 records), ms:"),
            "{latency}"
        );
    }

    #[test]
    fn json_has_every_figure() {
        let j = summary().to_json();
        assert_eq!(j["kind"], "produce");
        assert_eq!(j["records"], 1_000_000);
        assert_eq!(j["mb_per_sec"], 128.0);
        assert_eq!(j["target_rate"], Value::Null);
        assert_eq!(j["warmup_s"], 0.0);
        assert_eq!(j["latency"]["of"], "send to ack");
        assert_eq!(j["latency"]["p50_us"], 5_000);
        assert_eq!(j["latency"]["max_us"], 12_345_678);
        assert_eq!(j["latency"]["mean_us"], 5_003);
        assert_eq!((j["client_cpu_s"].as_f64(), j["client_cpu_s_per_gb"].as_f64()), (Some(2.048), Some(2.0)));
        let consume = Summary { latency_of: None, latency: None, ..summary() };
        assert_eq!(consume.to_json()["latency"], Value::Null);
    }
}
