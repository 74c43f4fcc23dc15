//! The producer's background task: feeds records into the accumulator,
//! sends ready batches, retries them in place, and resolves deliveries.
//!
//! Ready batches of one topic whose partitions the cached metadata says
//! share a leader go to it in one produce request. Each partition's
//! result is handled on its own: one that failed is retried alone, with
//! backoff and the leader hint of its own error, while the partitions that
//! succeeded are released at once.
//!
//! One loop owns the accumulator, so no lock guards it. The loop stops
//! reading new records while `buffer_bytes` are held, which makes the
//! bounded command channel fill and `send` wait: backpressure reaches the
//! caller instead of memory growing.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::accumulator::{Accumulator, ReadyBatch, Sequences};
use super::{Command, ProducerConfig};
use crate::{Client, Error, Result};

/// Most batch bytes grouped into one produce request: 64 default batches,
/// well under the broker's request limit (its largest batch plus 1 MiB).
/// A single larger batch still goes, alone.
const REQUEST_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most batches grouped into one produce request; the broker refuses more
/// than 4096.
const REQUEST_BATCHES_MAX: usize = 256;
const _: () = assert!(REQUEST_BATCHES_MAX <= 4096);
/// Most queued records taken per wake-up of the loop before it looks for
/// batches to send again; bounds how long a full batch waits for the
/// records queued behind it.
const COMMANDS_PER_WAKE_MAX: usize = 256;

/// Runs until every `Producer` handle is gone and everything buffered has
/// been acknowledged or has failed.
pub(super) async fn run(client: Client, config: ProducerConfig, mut rx: mpsc::Receiver<Command>) {
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
    let mut acc =
        Accumulator::new(config.batch_bytes, config.linger, seed).with_compression(config.compression);
    if config.idempotent {
        // Records queue in the bounded channel meanwhile (backpressure).
        match client.init_producer().await {
            Ok((id, epoch)) => {
                tracing::debug!(producer_id = id, "idempotent producer");
                acc = acc.with_sequences(Sequences::new(id, epoch));
            }
            Err(e) => return fail_all(rx, e).await,
        }
    }
    let mut in_flight = FuturesUnordered::new();
    let mut flush_waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut closed = false;
    loop {
        let flushing = closed || !flush_waiters.is_empty();
        // Grouping may fill fewer slots than batches were taken: drain again.
        loop {
            let room = config.max_in_flight_requests.saturating_sub(in_flight.len());
            let batches = acc.drain(Instant::now(), room, flushing);
            if batches.is_empty() {
                break;
            }
            let leader = |b: &ReadyBatch| client.cached_leader(&b.topic, b.partition);
            for work in group_by_leader(batches, leader) {
                in_flight.push(do_work(client.clone(), config.clone(), work));
            }
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
            cmd = rx.recv(), if accepting => {
                // Take what else is queued before draining again: draining,
                // timers and the select cost per wake-up, not per record.
                let now = Instant::now();
                let mut cmd = cmd;
                for taken in 1.. {
                    match cmd {
                        Some(Command::Send(rec)) => {
                            acc.append(rec, now);
                        }
                        Some(Command::Flush(w)) => flush_waiters.push(w),
                        None => {
                            closed = true;
                            break;
                        }
                    }
                    if taken == COMMANDS_PER_WAKE_MAX || acc.buffered_bytes() >= config.buffer_bytes {
                        break;
                    }
                    match rx.try_recv() {
                        Ok(next) => cmd = Some(next),
                        Err(_) => break,
                    }
                }
            }
            Some(Sent { done, retry }) = in_flight.next(), if !in_flight.is_empty() => {
                for (topic, partition, failed) in done {
                    acc.complete(&topic, partition, failed);
                }
                if !retry.is_empty() {
                    in_flight.push(do_work(client.clone(), config.clone(), Work::Each(retry)));
                }
            }
            _ = sleep_until(wakeup), if wakeup.is_some() && !flushing => {}
        }
    }
}

/// Without a producer id nothing can be sent idempotently: every record
/// fails with the reason, until the producer is dropped.
async fn fail_all(mut rx: mpsc::Receiver<Command>, e: Error) {
    tracing::warn!(error = %e, "could not obtain a producer id; every record fails");
    let e = Error::Unavailable { message: format!("could not obtain a producer id: {e}") };
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Send(rec) => {
                rec.notify.resolve(Err(e.clone()));
            }
            Command::Flush(w) => {
                let _ = w.send(());
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Produce work for one in-flight slot.
#[derive(Debug)]
enum Work {
    /// Batches of one topic for the broker at `addr`, in one request.
    Group { addr: String, batches: Vec<ReadyBatch> },
    /// Batches sent one request each and retried, concurrently; each with
    /// the error of an attempt already made, if any, so it counts as one.
    Each(Vec<(ReadyBatch, Option<Error>)>),
}

/// What one slot's work came to.
struct Sent {
    /// Partitions whose batch was acknowledged (false) or failed for good (true).
    done: Vec<(String, u32, bool)>,
    /// Batches of a group that failed, to retry one by one.
    retry: Vec<(ReadyBatch, Option<Error>)>,
}

/// Splits drained batches into requests: one per topic and `leader`
/// (the cached one), bounded by [`REQUEST_BATCHES_MAX`] and
/// [`REQUEST_BYTES_MAX`]. Batches whose leader is not cached go one by one
/// (finding the leader is then part of their first attempt).
fn group_by_leader(batches: Vec<ReadyBatch>, leader: impl Fn(&ReadyBatch) -> Option<String>) -> Vec<Work> {
    let mut unknown = Vec::new();
    let mut groups: HashMap<(String, String), Vec<Vec<ReadyBatch>>> = HashMap::new();
    for batch in batches {
        let Some(addr) = leader(&batch) else {
            unknown.push((batch, None));
            continue;
        };
        let requests = groups.entry((addr, batch.topic.clone())).or_default();
        let fits = requests.last().is_some_and(|r| {
            r.len() < REQUEST_BATCHES_MAX
                && r.iter().map(|b| b.bytes.len()).sum::<usize>() + batch.bytes.len() <= REQUEST_BYTES_MAX
        });
        match requests.last_mut() {
            Some(r) if fits => r.push(batch),
            _ => requests.push(vec![batch]),
        }
    }
    let mut works: Vec<Work> = groups
        .into_iter()
        .flat_map(|((addr, _), requests)| {
            requests.into_iter().map(move |batches| Work::Group { addr: addr.clone(), batches })
        })
        .collect();
    if !unknown.is_empty() {
        works.push(Work::Each(unknown));
    }
    works
}

/// Does one slot's work and resolves the deliveries of every batch that
/// is done.
async fn do_work(client: Client, config: ProducerConfig, work: Work) -> Sent {
    let (acks, timeout) = (config.acks, config.request_timeout);
    let mut sent = Sent { done: Vec::new(), retry: Vec::new() };
    match work {
        Work::Group { addr, batches } => {
            let topic = batches[0].topic.clone();
            debug_assert!(batches.iter().all(|b| b.topic == topic));
            let parts = batches.iter().map(|b| (b.partition, b.bytes.clone())).collect();
            let results = match client.produce_to(&addr, &topic, parts, acks, timeout).await {
                Ok(results) => results,
                Err(e) => {
                    // A leader hint in a request-wide error is about one
                    // partition; the others find theirs in fresh metadata.
                    let e = match e {
                        Error::NotLeader { leader_id, .. } if batches.len() > 1 => {
                            Error::NotLeader { leader_id, leader_address: None }
                        }
                        e => e,
                    };
                    sent.retry = batches.into_iter().map(|b| (b, Some(e.clone()))).collect();
                    return sent;
                }
            };
            for (batch, result) in batches.into_iter().zip(results) {
                match result {
                    Ok(base) => {
                        sent.done.push((batch.topic.clone(), batch.partition, false));
                        batch.complete(Ok(base));
                    }
                    Err(e) => sent.retry.push((batch, Some(e))),
                }
            }
        }
        Work::Each(batches) => {
            let sends =
                batches.into_iter().map(|(b, first)| send_batch(client.clone(), config.clone(), b, first));
            sent.done = join_all(sends).await;
        }
    }
    sent
}

/// Sends one batch, retrying retriable failures with backoff (same bytes,
/// so a retry is byte-identical), then resolves its records' deliveries.
/// `first` is the error of an attempt already made as part of a group.
/// Returns the partition and whether the batch failed for good, so the
/// loop can let its next batch go.
async fn send_batch(
    client: Client,
    config: ProducerConfig,
    batch: ReadyBatch,
    first: Option<Error>,
) -> (String, u32, bool) {
    let (topic, partition, bytes) = (batch.topic.clone(), batch.partition, batch.bytes.clone());
    let (acks, timeout) = (config.acks, config.request_timeout);
    let mut first = first;
    let result: Result<u64> = client
        .with_retry(true, |attempt| {
            let client = &client;
            let (topic, bytes) = (&topic, bytes.clone());
            let hint = attempt.hint;
            let first = first.take();
            async move {
                match first {
                    Some(e) => Err(e),
                    None => client.produce_once(topic, partition, bytes, acks, hint, timeout).await,
                }
            }
        })
        .await;
    if let Err(e) = &result {
        tracing::warn!(%topic, partition, records = batch.record_count(), error = %e, "batch failed");
    }
    let failed = result.is_err();
    batch.complete(result);
    (topic, partition, failed)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    /// Each request as `(address, topic, partitions)`; `"?"` for those
    /// sent one by one. Sorted, since grouping order does not matter.
    fn shape(works: &[Work]) -> Vec<(String, String, Vec<u32>)> {
        let mut out: Vec<_> = works
            .iter()
            .map(|w| match w {
                Work::Group { addr, batches } => {
                    (addr.clone(), batches[0].topic.clone(), batches.iter().map(|b| b.partition).collect())
                }
                Work::Each(batches) => {
                    ("?".into(), String::new(), batches.iter().map(|(b, _)| b.partition).collect())
                }
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn batches_group_by_topic_and_leader_within_bounds() {
        let small = |topic: &str, p: u32| ReadyBatch::for_test(topic, p, Bytes::from(vec![0; 100]));
        let leaders = |b: &ReadyBatch| match (b.topic.as_str(), b.partition) {
            (_, 0 | 1) => Some("a:1".to_string()),
            (_, 2) => Some("b:1".to_string()),
            _ => None,
        };
        let batches =
            vec![small("t", 0), small("t", 1), small("t", 2), small("t", 3), small("u", 0), small("u", 4)];
        let s = |x: &str| x.to_string();
        assert_eq!(
            shape(&group_by_leader(batches, leaders)),
            [
                (s("?"), s(""), vec![3, 4]),
                (s("a:1"), s("t"), vec![0, 1]),
                (s("a:1"), s("u"), vec![0]),
                (s("b:1"), s("t"), vec![2]),
            ]
        );

        // Bounded by bytes: two batches of just over half the limit cannot share a request.
        let big = |p: u32| ReadyBatch::for_test("t", p, Bytes::from(vec![0; REQUEST_BYTES_MAX / 2 + 1]));
        let one = |_: &ReadyBatch| Some("a:1".to_string());
        let shapes = shape(&group_by_leader(vec![big(0), big(1), small("t", 2)], one));
        assert_eq!(shapes, [(s("a:1"), s("t"), vec![0]), (s("a:1"), s("t"), vec![1, 2])]);

        // And by count.
        let many = (0..REQUEST_BATCHES_MAX as u32 + 1).map(|p| small("t", p)).collect();
        let sizes: Vec<usize> =
            shape(&group_by_leader(many, one)).iter().map(|(_, _, ps)| ps.len()).collect();
        assert_eq!(sizes, [REQUEST_BATCHES_MAX, 1]);
    }
}
