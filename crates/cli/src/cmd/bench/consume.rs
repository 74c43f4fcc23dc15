//! `fjord bench consume`: read N records from the beginning of every
//! partition with one [`Consumer`], or as one member of a consumer group.
//!
//! The plain consumer stops at the high watermarks it reads before
//! starting, so the run ends even when the topic holds fewer records than
//! asked for (which is then an error, after the figures for what was
//! read). A group member reads until it has the records asked for, from
//! the group's committed offsets (the beginning where there are none),
//! committing every second and when it leaves.

use std::time::Duration;

use anyhow::{bail, Context};
use fjord_client::{
    AutoOffsetReset, Client, Consumer, ConsumerConfig, GroupConsumer, GroupConsumerConfig, GroupEvent, Seek,
};
use tokio::time::Instant;

use super::report::{process_cpu, Summary};
use super::{print, progress_bar, ConsumeArgs};

/// Runs `fjord bench consume`.
pub(super) async fn run(client: Client, args: ConsumeArgs) -> anyhow::Result<()> {
    if let Some(group) = &args.group {
        return run_in_group(client, group, &args).await;
    }
    let mut consumer = Consumer::new(client, ConsumerConfig { start: Seek::Beginning, ..Default::default() });
    consumer.assign(&args.topic, None).await.with_context(|| format!("assigning topic {}", args.topic))?;
    consumer.stop_at_high_watermark().await.context("reading the high watermarks")?;
    let want = args.records.unwrap_or(u64::MAX);
    let progress = args.records.and_then(|n| progress_bar(n, "read"));
    let (mut records, mut bytes) = (0u64, 0u64);
    let cpu = process_cpu();
    let start = Instant::now();
    while records < want {
        match consumer.next().await {
            Some(Ok(rec)) => {
                records += 1;
                bytes += rec.value.as_ref().map_or(0, |v| v.len() as u64);
                if let Some(p) = &progress {
                    p.inc(1);
                }
            }
            // A retriable error pauses only its partition's current fetch.
            Some(Err(e)) if e.is_retriable() => tracing::warn!(error = %e, "fetch failed; retrying"),
            Some(Err(e)) => return Err(e).context(format!("after {records} records")),
            None => break,
        }
    }
    // The loop ends at the last record (or at the end of the partitions),
    // so the clock is read once, here, not per record.
    report(progress, records, bytes, start.elapsed(), process_cpu().saturating_sub(cpu), args.json);
    if let Some(n) = args.records.filter(|n| records < *n) {
        bail!("topic {} holds only {records} records below its high watermarks; asked for {n}", args.topic);
    }
    Ok(())
}

/// `fjord bench consume --group G`: one member of `group` reads `--records`.
async fn run_in_group(client: Client, group: &str, args: &ConsumeArgs) -> anyhow::Result<()> {
    let want = args.records.context("--group needs --records")?;
    let mut config = GroupConsumerConfig::new(group, &[args.topic.as_str()]);
    config.auto_offset_reset = AutoOffsetReset::Earliest;
    config.client_id = "fjord-bench".into();
    let mut consumer = GroupConsumer::new(client, config)?;
    let progress = progress_bar(want, "read");
    let (mut records, mut bytes) = (0u64, 0u64);
    let cpu = process_cpu();
    let mut start = None;
    while records < want {
        match consumer.poll().await.with_context(|| format!("after {records} records"))? {
            GroupEvent::Record(rec) => {
                // The clock starts at the first record, not at the join.
                start.get_or_insert_with(Instant::now);
                records += 1;
                bytes += rec.value.as_ref().map_or(0, |v| v.len() as u64);
                if let Some(p) = &progress {
                    p.inc(1);
                }
            }
            GroupEvent::Assigned(ps) => tracing::info!(partitions = ?ps, "assigned"),
            GroupEvent::Revoked(ps) => tracing::info!(partitions = ?ps, "revoked"),
        }
    }
    let last = Instant::now();
    consumer.close().await.context("committing and leaving the group")?;
    let client_cpu = process_cpu().saturating_sub(cpu);
    report(progress, records, bytes, last - start.unwrap_or(last), client_cpu, args.json);
    Ok(())
}

/// Clears the progress bar and prints what was read.
/// `client_cpu` is what the read cost this process.
fn report(
    progress: Option<indicatif::ProgressBar>,
    records: u64,
    bytes: u64,
    elapsed: Duration,
    client_cpu: Duration,
    json: bool,
) {
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    let summary = Summary {
        kind: "consume",
        records,
        bytes,
        elapsed,
        rate: None,
        latency_of: None,
        latency: None,
        warmup: Duration::ZERO,
        client_cpu,
    };
    print(&summary, json);
}
