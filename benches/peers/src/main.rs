//! Client side of `scripts/bench-peers.sh`: the workload of `fjord bench
//! produce` and `fjord bench consume` (N records of one size, acknowledged
//! writes in pipelined batches, then a read of everything from the start)
//! against a peer system, printed as one JSON object per phase in the
//! shape `fjord bench --json` prints, so the script parses both alike.
//!
//! Usage: `fjord-bench-peers redis|nats URL RECORDS RECORD_SIZE BATCH`.
//! It never starts or stops a server: the script does.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde_json::json;

mod nats;
mod redis_streams;

/// Largest record accepted: both peers' default message limits (NATS
/// max_payload 1 MiB) sit above this, and the workload uses 1 KiB.
const RECORD_SIZE_MAX: usize = 512 * 1024;
/// Largest pipeline (records in flight): bounds the memory of the window.
const BATCH_MAX: usize = 65_536;
/// Records read per request on the read path.
pub(crate) const READ_BATCH: usize = 1000;

/// What one run asks for.
#[derive(Debug, Clone)]
pub(crate) struct Workload {
    pub(crate) url: String,
    pub(crate) records: u64,
    pub(crate) record_size: usize,
    /// Records in flight at once on the write path.
    pub(crate) batch: usize,
}

/// What one phase measured.
pub(crate) struct Phase {
    pub(crate) kind: &'static str,
    pub(crate) records: u64,
    pub(crate) bytes: u64,
    pub(crate) elapsed: Duration,
    /// Per-record latency in µs, send to ack; `None` on the read path.
    pub(crate) latency: Option<Histogram<u64>>,
}

impl Phase {
    fn to_json(&self) -> serde_json::Value {
        let s = self.elapsed.as_secs_f64().max(1e-9);
        let latency = self.latency.as_ref().map(|h| {
            json!({
                "of": "send to ack",
                "count": h.len(),
                "p50_us": h.value_at_quantile(0.50),
                "p99_us": h.value_at_quantile(0.99),
                "max_us": h.max(),
            })
        });
        json!({
            "kind": self.kind,
            "records": self.records,
            "bytes": self.bytes,
            "elapsed_s": s,
            "records_per_sec": self.records as f64 / s,
            "mb_per_sec": self.bytes as f64 / 1e6 / s,
            "latency": latency,
        })
    }
}

/// An empty latency histogram in µs, up to an hour, 3 significant digits.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

/// µs since `start`, at least 1 (the histogram's floor).
pub(crate) fn micros_since(start: Instant) -> u64 {
    (start.elapsed().as_micros() as u64).max(1)
}

fn parse_args() -> anyhow::Result<(String, Workload)> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [system, url, records, record_size, batch] = args.as_slice() else {
        bail!("usage: fjord-bench-peers redis|nats URL RECORDS RECORD_SIZE BATCH");
    };
    let w = Workload {
        url: url.clone(),
        records: records.parse().context("RECORDS")?,
        record_size: record_size.parse().context("RECORD_SIZE")?,
        batch: batch.parse().context("BATCH")?,
    };
    if w.records == 0 || !(1..=RECORD_SIZE_MAX).contains(&w.record_size) {
        bail!("RECORDS must be > 0 and RECORD_SIZE in 1..={RECORD_SIZE_MAX}");
    }
    if !(1..=BATCH_MAX).contains(&w.batch) {
        bail!("BATCH must be in 1..={BATCH_MAX}");
    }
    Ok((system.clone(), w))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (system, w) = parse_args()?;
    let (write, read) = match system.as_str() {
        "redis" => redis_streams::run(&w).await?,
        "nats" => nats::run(&w).await?,
        other => bail!("unknown system {other}: redis or nats"),
    };
    for phase in [write, read] {
        if phase.records != w.records {
            bail!("{}: {} records, expected {}", phase.kind, phase.records, w.records);
        }
        println!("{}", phase.to_json());
    }
    Ok(())
}
