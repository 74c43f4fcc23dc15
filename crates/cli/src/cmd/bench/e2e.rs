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
use super::report::{latency_histogram, Percentiles, Summary};
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
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    consumer.assign(&args.topic, None).await.with_context(|| format!("assigning topic {}", args.topic))?;
    for (topic, p) in consumer.assignment() {
        let end = client.list_offsets(&topic, p, OffsetSpec::Latest).await.context("reading the end")?;
        consumer.seek(&topic, p, Seek::Offset(end.high_watermark))?;
    }
    let progress = progress_bar(args.records, "received");
    let count = Arc::new(AtomicU64::new(0));
    let origin = Origin::now();
    let measure_from_us = origin.wall_us + args.warmup.as_micros() as u64;
    let reader =
        tokio::spawn(receive(consumer, args.records, measure_from_us, count.clone(), progress.clone()));
    let sent = load::run(&client, &args, timeout, origin, None).await?;
    if sent.failed > 0 {
        reader.abort();
        return failures(sent.failed, args.records, sent.first_error);
    }
    let received = match tokio::time::timeout(timeout, reader).await {
        Ok(joined) => joined.context("the consumer task panicked")??,
        Err(_) => bail!(
            "the consumer received {} of {} acknowledged records within --timeout {timeout:?} after the \
             last ack",
            count.load(Ordering::Relaxed),
            args.records
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
    };
    print(&summary, args.json);
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
