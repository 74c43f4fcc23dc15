//! `fjord bench e2e`: producers and a consumer at once. A record's latency
//! is its receipt time minus the send (or due) time its producer stamped
//! into its value, both read from this process's wall clock.
//!
//! The consumer is positioned at every partition's high watermark before
//! the first record is sent, so it sees exactly this run's records (as long
//! as nobody else writes the topic meanwhile) and reads until it has all N.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use fjord_client::{Client, Consumer, ConsumerConfig, OffsetSpec, Seek};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use tokio::time::Instant;

use super::load::{self, micros, wall_clock_us, Origin};
use super::payload::read_stamp;
use super::report::{latency_histogram, process_cpu, Percentiles, Summary};
use super::{ensure_topic, failures, print, progress_bar, LoadArgs};

/// What the consumer saw.
struct Received {
    records: u64,
    bytes: u64,
    latency: Histogram<u64>,
    last: Option<Instant>,
}

/// Runs `fjord bench e2e`.
pub(super) async fn run(client: Client, args: LoadArgs, timeout: Duration) -> anyhow::Result<()> {
    ensure_topic(&client, &args).await?;
    let summary = run_once(&client, &args, timeout, true).await?;
    print(&summary, args.json);
    Ok(())
}

/// One paced or unpaced run of `args`, from a consumer at the partitions' ends.
async fn run_once(client: &Client, args: &LoadArgs, timeout: Duration, bar: bool) -> anyhow::Result<Summary> {
    let config = ConsumerConfig {
        min_bytes: args.fetch_min_bytes,
        max_wait: args.fetch_max_wait,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client.clone(), config);
    consumer.assign(&args.topic, None).await.with_context(|| format!("assigning topic {}", args.topic))?;
    for (topic, p) in consumer.assignment() {
        let end = client.list_offsets(&topic, p, OffsetSpec::Latest).await.context("reading the end")?;
        consumer.seek(&topic, p, Seek::Offset(end.high_watermark))?;
    }
    let progress = if bar { progress_bar(args.records(), "received") } else { None };
    let count = Arc::new(AtomicU64::new(0));
    let cpu = process_cpu();
    let origin = Origin::now();
    let measure_from_us = origin.wall_us + args.warmup.as_micros() as u64;
    let reader =
        tokio::spawn(receive(consumer, args.records(), measure_from_us, count.clone(), progress.clone()));
    let sent = load::run(client, args, timeout, origin, None).await?;
    if sent.failed > 0 {
        reader.abort();
        failures(sent.failed, args.records(), sent.first_error)?;
    }
    let received = match tokio::time::timeout(timeout, reader).await {
        Ok(joined) => joined.context("the consumer task panicked")??,
        Err(_) => bail!(
            "the consumer received {} of {} acknowledged records within --timeout {timeout:?} after the \
             last ack",
            count.load(Ordering::Relaxed),
            args.records()
        ),
    };
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    let summary = Summary {
        kind: "e2e",
        records: received.records,
        bytes: received.bytes,
        elapsed: received.last.map(|t| t - origin.at).unwrap_or_default(),
        rate: args.rate,
        latency_of: Some(if args.rate.is_some() { "due to receipt" } else { "send to receipt" }),
        latency: Percentiles::of(&received.latency),
        warmup: args.warmup,
        client_cpu: process_cpu().saturating_sub(cpu),
    };
    Ok(summary)
}

/// One step of the rate search.
struct Step {
    rate: f64,
    summary: Summary,
    /// Records/s delivered over the schedule's length.
    delivered: f64,
    held: bool,
}

/// Least share of the schedule's time a step may take beyond it and still
/// count as keeping the schedule.
const SCHEDULE_SLACK: f64 = 0.05;

/// `fjord bench e2e --find-max-rate`: the highest rate whose step held
/// (see `LoadArgs::find_max_rate`), each step printed as it ends.
pub(super) async fn find_max_rate(client: Client, args: LoadArgs, timeout: Duration) -> anyhow::Result<()> {
    if args.rate.is_some() {
        bail!("--find-max-rate chooses each step's rate; leave out --rate");
    }
    if args.start_rate > args.max_rate {
        bail!("--start-rate {} is above --max-rate {}", args.start_rate, args.max_rate);
    }
    ensure_topic(&client, &args).await?;
    let bound_us = (args.p99_ms * 1e3) as u64;
    let mut steps: Vec<Step> = Vec::new();
    let mut run_step = async |rate: f64| -> anyhow::Result<bool> {
        let secs = args.step_duration.as_secs_f64();
        let records = ((rate * secs).round() as u64).max(1);
        let step_args = LoadArgs {
            rate: Some(rate),
            records: Some(records),
            warmup: args.step_duration / 4,
            ..args.clone()
        };
        let summary = run_once(&client, &step_args, timeout, false).await?;
        let scheduled = records as f64 / rate;
        let delivered = summary.records as f64 / summary.elapsed.as_secs_f64().max(scheduled);
        let kept = summary.elapsed.as_secs_f64() <= scheduled * (1.0 + SCHEDULE_SLACK);
        let held = kept && summary.latency.is_some_and(|p| p.p99 <= bound_us);
        if !args.json {
            let p99 = summary.latency.map_or("-".into(), |p| format!("{:.1}", p.p99 as f64 / 1e3));
            println!(
                "step {}: {rate:.0} records/s for {}: delivered {delivered:.0}/s, p99 {p99} ms: {}",
                steps.len() + 1,
                humantime::format_duration(args.step_duration),
                if held { "held" } else { "did not hold" }
            );
        }
        steps.push(Step { rate, summary, delivered, held });
        Ok(held)
    };
    // Doubling until a step fails (or the cap), then bisection.
    let (mut good, mut bad) = (None::<f64>, None::<f64>);
    let mut rate = args.start_rate;
    loop {
        if run_step(rate).await? {
            good = Some(rate);
            if rate >= args.max_rate {
                break;
            }
            rate = (rate * 2.0).min(args.max_rate);
        } else {
            bad = Some(rate);
            break;
        }
    }
    if let Some(mut hi) = bad {
        let mut lo = good.unwrap_or(0.0);
        for _ in 0..args.search_steps {
            let mid = (lo + hi) / 2.0;
            if mid < 1.0 {
                break;
            }
            if run_step(mid).await? {
                lo = mid;
                good = Some(mid);
            } else {
                hi = mid;
            }
        }
    }
    let record_bytes = f64::from(args.record_size);
    if args.json {
        let steps: Vec<serde_json::Value> = steps
            .iter()
            .map(|s| {
                serde_json::json!({
                    "rate": s.rate,
                    "delivered_per_sec": s.delivered,
                    "held": s.held,
                    "summary": s.summary.to_json(),
                })
            })
            .collect();
        let out = serde_json::json!({
            "kind": "e2e-max-rate",
            "p99_ms_bound": args.p99_ms,
            "max_rate": good,
            "max_mb_per_sec": good.map(|r| r * record_bytes / 1e6),
            "steps": steps,
        });
        println!("{out}");
    } else {
        match good {
            Some(r) => println!(
                "e2e: highest rate held at p99 <= {} ms: {r:.0} records/s ({:.1} MB/s)",
                args.p99_ms,
                r * record_bytes / 1e6
            ),
            None => println!(
                "e2e: no rate from {:.0} records/s held at p99 <= {} ms",
                args.start_rate, args.p99_ms
            ),
        }
    }
    Ok(())
}

/// Reads until `want` records have arrived, timing each from its stamp
/// unless it was due before `measure_from_us` (wall clock, µs).
async fn receive(
    mut consumer: Consumer,
    want: u64,
    measure_from_us: u64,
    count: Arc<AtomicU64>,
    progress: Option<ProgressBar>,
) -> anyhow::Result<Received> {
    let mut got = Received { records: 0, bytes: 0, latency: latency_histogram(), last: None };
    while got.records < want {
        let rec = match consumer.next().await {
            Some(Ok(rec)) => rec,
            Some(Err(e)) if e.is_retriable() => {
                tracing::warn!(error = %e, "fetch failed; retrying");
                continue;
            }
            Some(Err(e)) => return Err(e).context(format!("after {} records", got.records)),
            None => bail!("the consumer stopped after {} records", got.records),
        };
        let now_us = wall_clock_us();
        let value = rec.value.unwrap_or_default();
        let Some((due_us, _index)) = read_stamp(&value) else {
            bail!("record {}/{} is not a bench record: {} bytes", rec.partition, rec.offset, value.len());
        };
        if due_us >= measure_from_us {
            got.latency.saturating_record(micros(Duration::from_micros(now_us.saturating_sub(due_us))));
        }
        got.records += 1;
        got.bytes += value.len() as u64;
        got.last = Some(Instant::now());
        count.store(got.records, Ordering::Relaxed);
        if let Some(p) = &progress {
            p.inc(1);
        }
    }
    Ok(got)
}
