//! `fjord bench produce`: send N records and time each to its ack.

use std::time::Duration;

use fjord_client::Client;

use super::load::{self, Origin};
use super::report::{process_cpu, Percentiles, Summary};
use super::{ensure_topic, failures, print, progress_bar, LoadArgs};

/// Runs `fjord bench produce`.
pub(super) async fn run(client: Client, args: LoadArgs, timeout: Duration) -> anyhow::Result<()> {
    ensure_topic(&client, &args).await?;
    let progress = progress_bar(args.records(), "acknowledged");
    let cpu = process_cpu();
    let origin = Origin::now();
    let sent = load::run(&client, &args, timeout, origin, progress.clone()).await?;
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    let summary = Summary {
        kind: "produce",
        records: sent.acked,
        bytes: sent.acked * u64::from(args.record_size),
        elapsed: sent.last_ack.map(|t| t - origin.at).unwrap_or_default(),
        rate: args.rate,
        latency_of: Some(if args.rate.is_some() { "due to ack" } else { "send to ack" }),
        latency: Percentiles::of(&sent.latency),
        warmup: args.warmup,
        client_cpu: process_cpu().saturating_sub(cpu),
    };
    print(&summary, args.json);
    failures(sent.failed, args.records(), sent.first_error)
}
