//! `fjord bench produce --api records`: the load of a client that does not
//! build batches. Each producer task keeps requests of whole records in
//! flight on one `Producer.PublishStream`, and the broker places the
//! records and builds the batches; latency runs from a request's send to
//! its answer and counts for each of its records.
//!
//! Records are keyless (the broker spreads requests round-robin over the
//! partitions it leads), without producer ids: the figure is the cost of
//! the record-level path itself, to set beside the batch path's.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use fjord_client::Client;
use fjord_proto::http2;
use fjord_proto::limits::PUBLISH_RECORDS_MAX;
use fjord_proto::pb::{self, producer_client::ProducerClient};
use tokio::sync::{mpsc, Mutex, Semaphore};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

use super::load::Origin;
use super::report::{latency_histogram, process_cpu, Percentiles, Summary, LATENCY_US_MAX};
use super::{ensure_topic, failures, print, LoadArgs};
use crate::args::AcksArg;

/// Requests each producer task keeps in flight on its stream, as the batch
/// producer's `max_in_flight_requests` default.
const REQUESTS_IN_FLIGHT: usize = 32;
/// Largest gRPC message either side accepts here: a request of
/// `--batch-bytes` of records plus their framing, well within it.
const MESSAGE_BYTES_MAX: usize = 80 * 1024 * 1024;

/// Runs `fjord bench produce --api records`.
pub(super) async fn run(client: Client, args: LoadArgs, timeout: Duration) -> anyhow::Result<()> {
    if args.rate.is_some() {
        bail!("--api records sends as fast as it can; --rate is for --api batches");
    }
    if args.keys.is_some() {
        bail!("--api records sends keyless records; --keys is for --api batches");
    }
    ensure_topic(&client, &args).await?;
    let addr = client.config().bootstrap.first().cloned().ok_or_else(|| anyhow!("no broker address"))?;
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .initial_stream_window_size(http2::STREAM_WINDOW_BYTES)
        .initial_connection_window_size(http2::CONNECTION_WINDOW_BYTES)
        .max_frame_size(http2::FRAME_BYTES_MAX)
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let per_request = (args.batch_bytes / args.record_size.max(1) as usize).clamp(1, PUBLISH_RECORDS_MAX);
    let value = Bytes::from(vec![b'x'; args.record_size as usize]);
    let cpu = process_cpu();
    let origin = Origin::now();
    let tasks: Vec<_> = (0..u64::from(args.producers))
        .map(|i| {
            let share = args.records() / u64::from(args.producers)
                + u64::from(i < args.records() % u64::from(args.producers));
            let (channel, value, topic) = (channel.clone(), value.clone(), args.topic.clone());
            let acks = match args.acks {
                AcksArg::All => pb::Acks::All,
                AcksArg::Leader => pb::Acks::Leader,
            };
            tokio::spawn(stream_records(channel, topic, acks, value, share, per_request, timeout))
        })
        .collect();
    let (mut acked, mut failed, mut first_error, mut latency, mut last) =
        (0, 0, None, latency_histogram(), None::<Instant>);
    for t in tasks {
        let r = t.await.context("a producer task failed")??;
        acked += r.acked;
        failed += r.failed;
        first_error = first_error.or(r.first_error);
        latency.add(&r.latency).expect("histograms share their bounds");
        last = last.max(r.last_ack);
    }
    let summary = Summary {
        kind: "produce",
        records: acked,
        bytes: acked * u64::from(args.record_size),
        elapsed: last.map(|t| t - origin.at).unwrap_or_default(),
        rate: None,
        latency_of: Some("request send to answer"),
        latency: Percentiles::of(&latency),
        warmup: Duration::ZERO,
        client_cpu: process_cpu().saturating_sub(cpu),
    };
    print(&summary, args.json);
    failures(failed, args.records(), first_error.map(|e: String| anyhow!(e)))
}

/// What one producer task saw.
struct Streamed {
    acked: u64,
    failed: u64,
    first_error: Option<String>,
    latency: hdrhistogram::Histogram<u64>,
    last_ack: Option<Instant>,
}

/// Sends `records` records in requests of `per_request` on one
/// PublishStream, at most REQUESTS_IN_FLIGHT unanswered.
async fn stream_records(
    channel: Channel,
    topic: String,
    acks: pb::Acks,
    value: Bytes,
    records: u64,
    per_request: usize,
    timeout: Duration,
) -> anyhow::Result<Streamed> {
    let mut producer = ProducerClient::new(channel)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX);
    let slots = Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT));
    // Send times of unanswered requests: answers come in request order.
    let sent: Arc<Mutex<VecDeque<(Instant, u64)>>> = Arc::new(Mutex::new(VecDeque::new()));
    let (tx, rx) = mpsc::channel(REQUESTS_IN_FLIGHT);
    let sender = {
        let (slots, sent) = (slots.clone(), sent.clone());
        tokio::spawn(async move {
            let mut left = records;
            let mut id = 0;
            while left > 0 {
                let n = left.min(per_request as u64);
                let permit = slots.clone().acquire_owned().await.expect("never closed");
                permit.forget(); // given back when the answer arrives
                let records = (0..n).map(|_| pb::Record { value: Some(value.clone()), ..Default::default() });
                let req = pb::PublishRequest {
                    correlation_id: id,
                    topic: topic.clone(),
                    records: records.collect(),
                    acks: acks as i32,
                    ..Default::default()
                };
                sent.lock().await.push_back((Instant::now(), n));
                if tx.send(req).await.is_err() {
                    return;
                }
                id += 1;
                left -= n;
            }
        })
    };
    let mut answers = producer.publish_stream(ReceiverStream::new(rx)).await?.into_inner();
    let mut out =
        Streamed { acked: 0, failed: 0, first_error: None, latency: latency_histogram(), last_ack: None };
    while out.acked + out.failed < records {
        let answer = tokio::time::timeout(timeout, answers.next())
            .await
            .map_err(|_| anyhow!("no answer within {timeout:?}"))?
            .ok_or_else(|| anyhow!("the broker ended the stream"))??;
        let now = Instant::now();
        let (at, n) = sent.lock().await.pop_front().ok_or_else(|| anyhow!("an answer to no request"))?;
        slots.add_permits(1);
        let us = (now - at).as_micros().min(LATENCY_US_MAX as u128) as u64;
        let errors = answer.results.iter().filter(|r| r.error.is_some()).count() as u64;
        let whole = answer.error.map(|e| e.message);
        if let Some(e) =
            whole.or_else(|| answer.results.iter().find_map(|r| r.error.as_ref().map(|e| e.message.clone())))
        {
            out.first_error.get_or_insert(e);
        }
        let failed = if answer.results.is_empty() { n } else { errors };
        out.failed += failed;
        out.acked += n - failed;
        out.latency.record_n(us.max(1), n - failed).expect("clamped to the histogram's bounds");
        out.last_ack = Some(now);
    }
    sender.abort();
    Ok(out)
}
