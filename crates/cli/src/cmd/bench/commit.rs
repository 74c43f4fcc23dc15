//! `fjord bench commit`: N offset commits of one group, as fast as the
//! coordinator takes them from `--concurrency` callers; commits per second
//! and the latency of each. Each commit names `--partitions-per-commit`
//! partitions of the topic, at offsets that cycle below their high
//! watermarks (a commit may not pass a partition's end), so every commit
//! writes new values. The group must have no members: these are admin
//! commits, as `fjord group reset-offsets` makes.
//!
//! What it is for: how fast a coordinator commits, and how large
//! `__consumer_offsets` and its replay grow with commits (see
//! `scripts/bench-offsets.sh`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use fjord_client::{Client, CommittedOffset, OffsetSpec};
use serde_json::json;
use tokio::time::Instant;

use super::report::{latency_histogram, ms, Percentiles, LATENCY_US_MAX};
use super::{progress_bar, CommitArgs};

/// Runs `fjord bench commit`.
pub(super) async fn run(client: Client, args: CommitArgs) -> anyhow::Result<()> {
    let partitions =
        client.partition_count(&args.topic).await.with_context(|| format!("topic {}", args.topic))?;
    if args.partitions_per_commit > partitions {
        bail!(
            "--partitions-per-commit {} is more than topic {}'s {partitions} partitions",
            args.partitions_per_commit,
            args.topic
        );
    }
    let mut ends = Vec::new();
    for p in 0..args.partitions_per_commit {
        let hw = client.list_offsets(&args.topic, p, OffsetSpec::Latest).await?.high_watermark;
        ends.push(hw);
    }
    let ends = Arc::new(ends);
    let next = Arc::new(AtomicU64::new(0));
    let progress = progress_bar(args.commits, "committed");
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, args, ends, next, progress) =
            (client.clone(), args.clone(), ends.clone(), next.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = latency_histogram();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= args.commits {
                    return Ok::<_, anyhow::Error>(h);
                }
                let offsets: Vec<CommittedOffset> = ends
                    .iter()
                    .enumerate()
                    .map(|(p, end)| CommittedOffset {
                        topic: args.topic.clone(),
                        partition: p as u32,
                        offset: i % (end + 1),
                        metadata: String::new(),
                    })
                    .collect();
                let sent = Instant::now();
                client
                    .commit_offsets(&args.group, "", -1, &offsets, None)
                    .await
                    .with_context(|| format!("commit {i} of group {}", args.group))?;
                let us = (sent.elapsed().as_micros() as u64).clamp(1, LATENCY_US_MAX);
                h.record(us).expect("clamped into the histogram's range");
                if let Some(p) = &progress {
                    p.inc(1);
                }
            }
        }));
    }
    let mut h = latency_histogram();
    for t in tasks {
        h.add(t.await.context("a commit task panicked")??).expect("same bounds");
    }
    let elapsed = start.elapsed();
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    print(&args, elapsed, Percentiles::of(&h));
    Ok(())
}

fn print(args: &CommitArgs, elapsed: Duration, latency: Option<Percentiles>) {
    let per_sec = args.commits as f64 / elapsed.as_secs_f64().max(1e-9);
    if args.json {
        let latency = latency.map(|p| {
            json!({"count": p.count, "mean_us": p.mean, "p50_us": p.p50, "p90_us": p.p90,
                   "p99_us": p.p99, "p999_us": p.p999, "max_us": p.max})
        });
        let out = json!({
            "kind": "commit",
            "commits": args.commits,
            "partitions_per_commit": args.partitions_per_commit,
            "concurrency": args.concurrency,
            "elapsed_s": elapsed.as_secs_f64(),
            "commits_per_sec": per_sec,
            "latency": latency,
        });
        println!("{out}");
        return;
    }
    println!(
        "commit: {} commits of {} partition(s) in {:.2} s: {per_sec:.0} commits/s ({} at once)",
        args.commits,
        args.partitions_per_commit,
        elapsed.as_secs_f64(),
        args.concurrency
    );
    if let Some(p) = latency {
        println!(
            "commit: latency, ms: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}",
            ms(p.p50),
            ms(p.p90),
            ms(p.p99),
            ms(p.p999),
            ms(p.max),
            ms(p.mean)
        );
    }
}
