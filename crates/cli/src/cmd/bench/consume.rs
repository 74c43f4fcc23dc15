//! `fjord bench consume`: read N records from the beginning of every
//! partition with one [`Consumer`].
//!
//! The consumer stops at the high watermarks it reads before starting, so
//! the run ends even when the topic holds fewer records than asked for
//! (which is then an error, after the figures for what was read).

use anyhow::{bail, Context};
use fjord_client::{Client, Consumer, ConsumerConfig, Seek};
use tokio::time::Instant;

use super::report::Summary;
use super::{print, progress_bar, ConsumeArgs};

/// Runs `fjord bench consume`.
pub(super) async fn run(client: Client, args: ConsumeArgs) -> anyhow::Result<()> {
    let mut consumer = Consumer::new(client, ConsumerConfig { start: Seek::Beginning, ..Default::default() });
    consumer.assign(&args.topic, None).await.with_context(|| format!("assigning topic {}", args.topic))?;
    consumer.stop_at_high_watermark().await.context("reading the high watermarks")?;
    let want = args.records.unwrap_or(u64::MAX);
    let progress = args.records.and_then(|n| progress_bar(n, "read"));
    let (mut records, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    let mut last = start;
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
        last = Instant::now();
    }
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    let summary = Summary {
        kind: "consume",
        records,
        bytes,
        elapsed: last - start,
        rate: None,
        latency_of: None,
        latency: None,
    };
    print(&summary, args.json);
    if let Some(n) = args.records.filter(|n| records < *n) {
        bail!("topic {} holds only {records} records below its high watermarks; asked for {n}", args.topic);
    }
    Ok(())
}
