//! NATS JetStream: one file-backed stream, publishes with acks kept up to
//! `batch` in flight, then a pull consumer fetching in batches.

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::Context;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;

use crate::{latency_histogram, micros_since, Phase, Workload, READ_BATCH};

const STREAM: &str = "BENCH";
const SUBJECT: &str = "bench";

/// Writes then reads `w.records` records.
pub(crate) async fn run(w: &Workload) -> anyhow::Result<(Phase, Phase)> {
    let client = async_nats::connect(w.url.as_str()).await.context("connecting to nats")?;
    let js = jetstream::new(client);
    let _ = js.delete_stream(STREAM).await;
    let stream = js
        .create_stream(stream::Config {
            name: STREAM.to_string(),
            subjects: vec![SUBJECT.to_string()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .context("creating the stream")?;
    let payload = Bytes::from(vec![0x5a_u8; w.record_size]);

    let mut latency = latency_histogram();
    let mut in_flight = VecDeque::with_capacity(w.batch);
    let start = Instant::now();
    let mut acked = 0_u64;
    for _ in 0..w.records {
        if in_flight.len() == w.batch {
            let (t, ack): (Instant, jetstream::context::PublishAckFuture) =
                in_flight.pop_front().expect("window is full");
            ack.await.context("publish ack")?;
            latency.record(micros_since(t))?;
            acked += 1;
        }
        let t = Instant::now();
        let ack = js.publish(SUBJECT, payload.clone()).await.context("publish")?;
        in_flight.push_back((t, ack));
    }
    for (t, ack) in in_flight {
        ack.await.context("publish ack")?;
        latency.record(micros_since(t))?;
        acked += 1;
    }
    let write = Phase {
        kind: "produce",
        records: acked,
        bytes: acked * w.record_size as u64,
        elapsed: start.elapsed(),
        latency: Some(latency),
    };

    let consumer = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .context("creating the consumer")?;
    let start = Instant::now();
    let (mut records, mut bytes) = (0_u64, 0_u64);
    while records < w.records {
        let mut batch = consumer.fetch().max_messages(READ_BATCH).messages().await.context("fetch")?;
        let before = records;
        while let Some(msg) = batch.next().await {
            let msg = msg.map_err(|e| anyhow::anyhow!("fetched message: {e}"))?;
            bytes += msg.payload.len() as u64;
            records += 1;
        }
        anyhow::ensure!(records > before, "fetch returned nothing at {records} records");
    }
    let read = Phase { kind: "consume", records, bytes, elapsed: start.elapsed(), latency: None };
    Ok((write, read))
}
