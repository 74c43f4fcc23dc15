//! The producer's background task: feeds records into the accumulator,
//! sends ready batches, retries them in order, and resolves deliveries.
//!
//! Ready batches of one topic whose partitions share a leader go to it in
//! one produce request. An idempotent producer sends them on the leader's
//! ordered produce stream (see [`super::stream`]) and keeps up to
//! [`MAX_IN_FLIGHT_PER_PARTITION`] batches of a partition in flight, all to
//! the same broker; others send unary requests, one batch per partition in
//! flight. Each partition's result is handled on its own.
//!
//! **Failures.** A batch that fails is held, and its partition stops
//! sending ("recovering") until every other batch of it in flight has come
//! back; then the held batches are resent one at a time, in the order they
//! were drained, each with retries and backoff and the same bytes. So a
//! partition's batches are appended in order even when several were in
//! flight when its leader changed: a later one refused as out of sequence
//! (its predecessor never arrived) simply goes again after it. If a batch
//! fails for good, the held batches after it fail with it: they carry
//! sequences that can no longer follow, and the partition starts over with
//! a new epoch.
//!
//! One loop owns the accumulator, so no lock guards it. The loop stops
//! reading new records while `buffer_bytes` are held, which makes the
//! bounded command channel fill and `send` wait: backpressure reaches the
//! caller instead of memory growing.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::accumulator::{Accumulator, ReadyBatch, Sequences};
use super::stream::Streams;
use super::{Command, ProducerConfig, MAX_IN_FLIGHT_PER_PARTITION};
use crate::client::{produce_request, produce_results};
use crate::cluster::{at_broker, deadline};
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
                acc = acc
                    .with_sequences(Sequences::new(id, epoch))
                    .with_max_in_flight(MAX_IN_FLIGHT_PER_PARTITION);
            }
            Err(e) => return fail_all(rx, e).await,
        }
    }
    let mut out = Outgoing {
        client: client.clone(),
        config: config.clone(),
        streams: config.idempotent.then(Streams::default),
        routes: HashMap::new(),
        held: HashMap::new(),
        in_flight: FuturesUnordered::new(),
    };
    let mut flush_waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut closed = false;
    loop {
        let flushing = closed || !flush_waiters.is_empty();
        // Grouping may fill fewer slots than batches were taken: drain again.
        loop {
            let room = config.max_in_flight_requests.saturating_sub(out.in_flight.len());
            let batches = acc.drain(Instant::now(), room, flushing);
            if batches.is_empty() {
                break;
            }
            out.send(&mut acc, batches);
        }
        out.resend_held(&mut acc);
        if acc.is_empty() && out.in_flight.is_empty() {
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
            Some(sent) = out.in_flight.next(), if !out.in_flight.is_empty() => out.settle(&mut acc, sent),
            _ = sleep_until(wakeup), if wakeup.is_some() && !flushing => {}
        }
    }
}

type TopicPartition = (String, u32);

/// Everything between the accumulator and the brokers: requests in flight,
/// where each partition's in-flight batches went, and failed batches held
/// for an in-order resend.
struct Outgoing {
    client: Client,
    config: ProducerConfig,
    /// Produce streams of an idempotent producer; `None`: unary requests.
    streams: Option<Streams>,
    /// Broker address and count of each partition's batches in flight on a
    /// stream: later batches follow them there, whatever the metadata now
    /// says, so that they are appended after them.
    routes: HashMap<TopicPartition, (String, usize)>,
    /// Failed batches waiting for their partition's other batches in flight.
    held: HashMap<TopicPartition, Vec<(ReadyBatch, Error)>>,
    in_flight: FuturesUnordered<BoxFuture<'static, Sent>>,
}

impl Outgoing {
    /// Starts requests for drained batches.
    fn send(&mut self, acc: &mut Accumulator, batches: Vec<ReadyBatch>) {
        let routes = &self.routes;
        let client = &self.client;
        let leader = |b: &ReadyBatch| match routes.get(&(b.topic.clone(), b.partition)) {
            Some((addr, n)) if *n > 0 => Some(addr.clone()),
            _ => client.cached_leader(&b.topic, b.partition),
        };
        for work in group_by_leader(batches, leader) {
            match work {
                Work::Group { addr, batches } => self.start(addr, batches),
                // Finding the leader is part of the first (in-order) attempt.
                Work::Each(unknown) => {
                    for (b, _) in unknown {
                        let e = Error::NotLeader { leader_id: None, leader_address: None };
                        self.hold(acc, b, e);
                    }
                }
            }
        }
    }

    /// Sends one request: on the broker's produce stream (queued now, so
    /// requests go out in the order this is called) or unary.
    fn start(&mut self, addr: String, batches: Vec<ReadyBatch>) {
        let (acks, timeout) = (self.config.acks, self.config.request_timeout);
        let topic = batches[0].topic.clone();
        debug_assert!(batches.iter().all(|b| b.topic == topic));
        let parts: Vec<(u32, Bytes)> = batches.iter().map(|b| (b.partition, b.bytes.clone())).collect();
        let partitions: Vec<u32> = parts.iter().map(|(p, _)| *p).collect();
        let Some(streams) = &mut self.streams else {
            let client = self.client.clone();
            self.in_flight.push(
                async move {
                    let results = client.produce_to(&addr, &topic, parts, acks, timeout).await;
                    settle_request(batches, results, None)
                }
                .boxed(),
            );
            return;
        };
        for p in &partitions {
            let route = self.routes.entry((topic.clone(), *p)).or_insert_with(|| (addr.clone(), 0));
            route.0.clone_from(&addr);
            route.1 += 1;
        }
        let answer = streams.send(&self.client, &addr, produce_request(&topic, parts, acks, timeout));
        self.in_flight.push(
            async move {
                let results = match answer {
                    Ok(rx) => deadline(timeout, async {
                        let resp = rx.await.map_err(|_| Error::Unavailable {
                            message: format!("broker {addr}: produce stream closed"),
                        })??;
                        produce_results(&partitions, resp)
                    })
                    .await
                    .map_err(|e| at_broker(&addr, e)),
                    Err(e) => Err(e),
                };
                // A stream that let a request time out is replaced.
                let broken = matches!(results, Err(Error::Timeout { .. })).then(|| addr.clone());
                settle_request(batches, results, broken)
            }
            .boxed(),
        );
    }

    /// Takes in what a request or a resend came to.
    fn settle(&mut self, acc: &mut Accumulator, sent: Sent) {
        if let (Some(addr), Some(streams)) = (&sent.broken_stream, &mut self.streams) {
            streams.close(addr);
        }
        for (topic, partition) in &sent.on_stream {
            if let Some(route) = self.routes.get_mut(&(topic.clone(), *partition)) {
                route.1 -= 1;
            }
        }
        for (topic, partition, failed) in sent.done {
            acc.complete(&topic, partition, failed);
        }
        for (batch, error) in sent.failed {
            self.hold(acc, batch, error);
        }
        for (topic, partition) in sent.recovered {
            acc.set_recovering(&topic, partition, false);
        }
        self.routes.retain(|_, (_, n)| *n > 0);
    }

    fn hold(&mut self, acc: &mut Accumulator, batch: ReadyBatch, error: Error) {
        acc.set_recovering(&batch.topic, batch.partition, true);
        self.held.entry((batch.topic.clone(), batch.partition)).or_default().push((batch, error));
    }

    /// Resends the held batches of every partition that has nothing else in
    /// flight, in drain order. Each resend takes a request slot.
    fn resend_held(&mut self, acc: &mut Accumulator) {
        let ready: Vec<TopicPartition> = self
            .held
            .iter()
            .filter(|((topic, partition), batches)| acc.in_flight(topic, *partition) == batches.len())
            .map(|(key, _)| key.clone())
            .collect();
        for key in ready {
            let mut batches = self.held.remove(&key).expect("listed above");
            batches.sort_by_key(|(b, _)| b.order);
            let (client, config) = (self.client.clone(), self.config.clone());
            self.in_flight.push(resend_in_order(client, config, key, batches).boxed());
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

/// Drained batches grouped for sending.
#[derive(Debug)]
enum Work {
    /// Batches of one topic for the broker at `addr`, in one request.
    Group { addr: String, batches: Vec<ReadyBatch> },
    /// Batches whose leader is not known; the error is unused here.
    Each(Vec<(ReadyBatch, Option<Error>)>),
}

/// What one request or resend came to.
#[derive(Default)]
struct Sent {
    /// Partitions whose batch was acknowledged (false) or failed for good (true).
    done: Vec<(String, u32, bool)>,
    /// Batches that failed and are to be resent in order.
    failed: Vec<(ReadyBatch, Error)>,
    /// Partitions of a stream request, whose routes count down.
    on_stream: Vec<(String, u32)>,
    /// A partition whose in-order resend is over.
    recovered: Vec<(String, u32)>,
    /// The address of a stream to replace.
    broken_stream: Option<String>,
}

/// Resolves a request's batches: those acknowledged are done, the others
/// (all of them if the request failed as a whole) failed.
fn settle_request(
    batches: Vec<ReadyBatch>,
    results: Result<Vec<Result<u64>>>,
    broken: Option<String>,
) -> Sent {
    // `on_stream` counts only where a route was recorded (stream requests).
    let on_stream = batches.iter().map(|b| (b.topic.clone(), b.partition)).collect();
    let mut sent = Sent { broken_stream: broken, on_stream, ..Sent::default() };
    let results = match results {
        Ok(results) => results,
        Err(e) => {
            sent.failed = batches.into_iter().map(|b| (b, e.clone())).collect();
            return sent;
        }
    };
    for (batch, result) in batches.into_iter().zip(results) {
        match result {
            Ok(base) => {
                sent.done.push((batch.topic.clone(), batch.partition, false));
                batch.complete(Ok(base));
            }
            Err(e) => sent.failed.push((batch, e)),
        }
    }
    sent
}

/// Resends a partition's failed batches one at a time in drain order, each
/// with retries, and resolves their deliveries. After one fails for good,
/// the rest fail with its error unsent: their sequences follow a batch the
/// log does not hold.
async fn resend_in_order(
    client: Client,
    config: ProducerConfig,
    (topic, partition): TopicPartition,
    batches: Vec<(ReadyBatch, Error)>,
) -> Sent {
    if let Some((_, e)) = batches.first() {
        client.refresh_after(e).await;
    }
    let mut sent = Sent { recovered: vec![(topic.clone(), partition)], ..Sent::default() };
    let mut gave_up: Option<Error> = None;
    for (batch, _) in batches {
        let result = match &gave_up {
            Some(e) => Err(e.clone()),
            None => send_batch(&client, &config, &topic, partition, batch.bytes.clone()).await,
        };
        if let Err(e) = &result {
            tracing::warn!(%topic, partition, records = batch.record_count(), error = %e, "batch failed");
            gave_up.get_or_insert_with(|| e.clone());
        }
        sent.done.push((topic.clone(), partition, result.is_err()));
        batch.complete(result);
    }
    sent
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

/// Sends one batch alone (unary), retrying retriable failures with
/// backoff; the same bytes each time, so a retry is byte-identical.
async fn send_batch(
    client: &Client,
    config: &ProducerConfig,
    topic: &str,
    partition: u32,
    bytes: Bytes,
) -> Result<u64> {
    let (acks, timeout) = (config.acks, config.request_timeout);
    client
        .with_retry(true, |attempt| {
            let bytes = bytes.clone();
            async move { client.produce_once(topic, partition, bytes, acks, attempt.hint, timeout).await }
        })
        .await
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
