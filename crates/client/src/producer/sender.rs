//! The producer's background task: feeds records into the accumulator,
//! sends ready batches, retries them in place, and resolves deliveries.
//!
//! One loop owns the accumulator, so no lock guards it. The loop stops
//! reading new records while `buffer_bytes` are held, which makes the
//! bounded command channel fill and `send` wait: backpressure reaches the
//! caller instead of memory growing.

use std::time::{SystemTime, UNIX_EPOCH};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::accumulator::{Accumulator, ReadyBatch};
use super::{Command, ProducerConfig};
use crate::{Client, Result};

/// Runs until every `Producer` handle is gone and everything buffered has
/// been acknowledged or has failed.
pub(super) async fn run(client: Client, config: ProducerConfig, mut rx: mpsc::Receiver<Command>) {
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
    let mut acc = Accumulator::new(config.batch_bytes, config.linger, seed);
    let mut in_flight = FuturesUnordered::new();
    let mut flush_waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut closed = false;
    loop {
        let flushing = closed || !flush_waiters.is_empty();
        let room = config.max_in_flight_requests - in_flight.len();
        for batch in acc.drain(Instant::now(), room, flushing) {
            in_flight.push(send_batch(client.clone(), config.clone(), batch));
        }
        if acc.is_empty() && in_flight.is_empty() {
            flush_waiters.drain(..).for_each(|w| {
                let _ = w.send(());
            });
            if closed {
                return;
            }
        }
        let wakeup = acc.next_wakeup();
        let accepting = !closed && acc.buffered_bytes() < config.buffer_bytes;
        tokio::select! {
            cmd = rx.recv(), if accepting => match cmd {
                Some(Command::Send(rec)) => {
                    acc.append(rec, Instant::now());
                }
                Some(Command::Flush(w)) => flush_waiters.push(w),
                None => closed = true,
            },
            Some((topic, partition)) = in_flight.next(), if !in_flight.is_empty() => {
                acc.complete(&topic, partition);
            }
            _ = sleep_until(wakeup), if wakeup.is_some() && !flushing => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sends one batch, retrying retriable failures with backoff (same bytes,
/// so a retry is byte-identical), then resolves its records' deliveries.
/// Returns the partition so the loop can let its next batch go.
async fn send_batch(client: Client, config: ProducerConfig, batch: ReadyBatch) -> (String, u32) {
    let (topic, partition, bytes) = (batch.topic.clone(), batch.partition, batch.bytes.clone());
    let (acks, timeout) = (config.acks, config.request_timeout);
    let result: Result<u64> = client
        .with_retry(true, |attempt| {
            let client = &client;
            let (topic, bytes) = (&topic, bytes.clone());
            let hint = attempt.hint;
            async move { client.produce_once(topic, partition, bytes, acks, hint, timeout).await }
        })
        .await;
    if let Err(e) = &result {
        tracing::warn!(%topic, partition, records = batch.record_count(), error = %e, "batch failed");
    }
    batch.complete(result);
    (topic, partition)
}
