//! Decoding throughput of the codec's hot paths, each beside a reference
//! measured in the same run: `validate_batch` (what a leader does to every
//! produced batch) and walking every record with `records` (what a
//! consumer-side decode does), against a CRC-32 of the same bytes, the
//! floor any check of them costs.
//!
//! A plain `main` rather than criterion, which takes too long to build here.
//! Run with `cargo bench -p fjord-codec --bench decode`; `FJORD_BENCH_MIB`
//! (default 512) sets the bytes per case and `FJORD_BENCH_RUNS` (default 5)
//! the repetitions, of which the median is printed.

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use fjord_codec::{records, validate_batch, BatchBuilder};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A ~1 MiB batch of records with `value_len`-byte values, 16-byte keys and one header.
fn batch(value_len: usize) -> Bytes {
    let mut b = BatchBuilder::new(1 << 20);
    let value = vec![7u8; value_len];
    for i in 0u64.. {
        let key = format!("key-{i:012}");
        if b.push(Some(key.as_bytes()), Some(&value), &[("h", Some(b"v"))], 1_700_000_000_000 + i as i64)
            .is_err()
        {
            break;
        }
    }
    b.finish()
}

/// Median GB/s of `f` run over `bytes` bytes, `runs` times.
fn measure(runs: usize, bytes: usize, mut f: impl FnMut()) -> f64 {
    let mut rates: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            bytes as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn main() {
    let total = env("FJORD_BENCH_MIB", 512) << 20;
    let runs = env("FJORD_BENCH_RUNS", 5);
    println!(
        "{:>12} {:>10} {:>14} {:>12} {:>12}",
        "value bytes", "crc GB/s", "validate GB/s", "walk GB/s", "walk rec/s"
    );
    for value_len in [64usize, 1024] {
        let b = batch(value_len);
        let n = (total / b.len()).max(1);
        let bytes = n * b.len();
        let per_batch = records(&b).unwrap().count();
        let crc = measure(runs, bytes, || {
            for _ in 0..n {
                black_box(crc32fast::hash(black_box(&b[..])));
            }
        });
        let validate = measure(runs, bytes, || {
            for _ in 0..n {
                black_box(validate_batch(black_box(&b[..]), 1 << 20).unwrap());
            }
        });
        let walk = measure(runs, bytes, || {
            for _ in 0..n {
                for r in records(black_box(&b)).unwrap() {
                    black_box(r.unwrap());
                }
            }
        });
        let rec_per_s = walk * 1e9 / b.len() as f64 * per_batch as f64;
        println!("{value_len:>12} {crc:>10.2} {validate:>14.2} {walk:>12.2} {rec_per_s:>12.3e}");
    }
}
