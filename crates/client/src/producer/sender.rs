//! The producer's background task: feeds records into the accumulator,
//! sends ready batches, retries them in order, and resolves deliveries.
//!
//! Ready batches of one topic whose partitions share a leader go to it in
//! one produce request. An idempotent producer sends them on the leader's
//! ordered produce stream (see [`super::stream`]) and keeps up to
//! [`MAX_IN_FLIGHT_PER_PARTITION`] batches of a partition in flight, all on
//! the same stream; others send unary requests, one batch per partition in
//! flight. Each partition's result is handled on its own.
//!
//! **Failures.** A batch that fails is held, and its partition stops
//! sending ("recovering") until every other batch of it in flight has come
//! back; then the held batches are resent one at a time, in the order they
//! were drained, each with retries and backoff and the same bytes. So a
//! partition's batches are appended in order even when several were in
//! flight when its leader changed: a later one refused as out of sequence
//! (its predecessor never arrived) simply goes again after it. A batch
//! whose first answer was a refusal no retry can change (too large, bad
//! request) is not resent. A request still unanswered when metadata names
//! another leader for one of its partitions ([`Client::leader_moved`]) fails
//! as if it had timed out, so a paused broker costs no more than a dead
//! one. If a batch fails for good, its partition starts
//! over with a new epoch; the held batches after it are restamped into
//! that epoch and go on, unless it failed because the cluster did not take
//! it within the retries, in which case they fail with it.
//!
//! **Completion order.** Callers hear of a partition's batches in the
//! order they were sent, as Kafka promises for callbacks: an outcome that
//! arrives before an earlier batch's (a batch acknowledged while the one
//! before it waits to be resent) waits for it.
//!
//! One loop owns the accumulator, so no lock guards it. The loop stops
//! reading new records while `buffer_bytes` are held, which makes the
//! bounded command channel fill and `send` wait: backpressure reaches the
//! caller instead of memory growing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::accumulator::{Accumulator, Outcome, ReadyBatch, Sequences};
use super::stream::Streams;
use super::{Command, ProducerConfig, MAX_IN_FLIGHT_PER_PARTITION};
use crate::client::{produce_request, produce_results};
use crate::cluster::at_broker;
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
/// The broker's timeout is shorter than the producer's by this share of
/// it ([`broker_timeout`])...
const BROKER_TIMEOUT_MARGIN_DIVISOR: u32 = 10;
/// ...and by at most this much.
const BROKER_TIMEOUT_MARGIN_MAX: Duration = Duration::from_secs(1);
/// The broker is asked to answer a stream request this much sooner than
/// the producer's own deadline (`request_timeout`): a tenth of it, at most
/// a second. A commit that takes too long then comes back as the broker's
/// in-band timeout, answered in order on the stream, rather than as the
/// producer giving up on the stream, which replaces it; the producer's
/// deadline stays the one the caller configured.
fn broker_timeout(request_timeout: Duration) -> Duration {
    let margin = (request_timeout / BROKER_TIMEOUT_MARGIN_DIVISOR).min(BROKER_TIMEOUT_MARGIN_MAX);
    // At least 1 ms: the broker reads 0 as "its default".
    request_timeout.saturating_sub(margin).max(Duration::from_millis(1))
}

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
        completions: Completions::default(),
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

/// Where a partition's batches in flight on a produce stream went.
struct Route {
    addr: String,
    /// The stream's generation ([`Streams::live`]).
    generation: u64,
    /// Batches of the partition in flight on it.
    count: usize,
}

/// Everything between the accumulator and the brokers: requests in flight,
/// where each partition's in-flight batches went, failed batches held for
/// an in-order resend, and outcomes waiting for earlier ones.
struct Outgoing {
    client: Client,
    config: ProducerConfig,
    /// Produce streams of an idempotent producer; `None`: unary requests.
    streams: Option<Streams>,
    /// The stream each partition's batches last went out on. While some
    /// are in flight there, later batches follow them on that stream,
    /// whatever the metadata now says, so that they are appended after
    /// them; or wait, if that stream was replaced. One entry per partition
    /// written, like the accumulator's sequences.
    routes: HashMap<TopicPartition, Route>,
    /// Failed batches waiting for their partition's other batches in flight.
    held: HashMap<TopicPartition, Vec<(ReadyBatch, Error)>>,
    completions: Completions,
    in_flight: FuturesUnordered<BoxFuture<'static, Sent>>,
}

impl Outgoing {
    /// Starts requests for drained batches (at most one per partition).
    fn send(&mut self, acc: &mut Accumulator, batches: Vec<ReadyBatch>) {
        let live = |streams: &Option<Streams>, addr: &str| streams.as_ref().and_then(|s| s.live(addr));
        let mut routed = Vec::with_capacity(batches.len());
        for b in batches {
            self.completions.track(&b);
            let route = self.routes.get(&(b.topic.clone(), b.partition));
            let leader = match route {
                Some(r) if r.count > 0 && live(&self.streams, &r.addr) == Some(r.generation) => {
                    Some(r.addr.clone())
                }
                Some(r) if r.count > 0 => {
                    // Its predecessors are on a stream that was replaced: a
                    // new stream could overtake them. It goes after them.
                    let message = format!(
                        "broker {}: an earlier batch of {}/{} is in flight on a replaced produce stream",
                        r.addr, b.topic, b.partition
                    );
                    self.hold(acc, b, Error::Unavailable { message });
                    continue;
                }
                _ => {
                    let leader = self.client.cached_leader(&b.topic, b.partition);
                    // The route is where its last batches went, and a batch
                    // acknowledged since recovery made it warm: pipelining
                    // on any other stream starts cold.
                    let same_stream = |a: &String| {
                        route.is_some_and(|r| r.addr == *a && live(&self.streams, a) == Some(r.generation))
                    };
                    if !leader.as_ref().is_some_and(same_stream) {
                        acc.set_cold(&b.topic, b.partition);
                    }
                    leader
                }
            };
            routed.push((b, leader));
        }
        for work in group_by_leader(routed) {
            match work {
                Work::Group { addr, batches } => self.start(addr, batches),
                // Finding the leader is part of the first (in-order) attempt.
                Work::Each(unknown) => {
                    for b in unknown {
                        self.hold(acc, b, Error::NotLeader { leader_id: None, leader_address: None });
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
        // Partitions with batches in flight here follow them on the same
        // stream; if it ended since `send` looked, nothing goes out on a
        // new one ahead of them.
        let expected = partitions.iter().find_map(|p| {
            self.routes.get(&(topic.clone(), *p)).filter(|r| r.count > 0).map(|r| r.generation)
        });
        let request = produce_request(&topic, parts, acks, broker_timeout(timeout));
        let (generation, answer) = match streams.send(&self.client, &addr, request, expected) {
            Ok(sent) => sent,
            Err(e) => {
                // Nothing went out: the batches are held and resent in order.
                let e = at_broker(&addr, e);
                self.in_flight.push(async move { settle_request(batches, Err(e), None) }.boxed());
                return;
            }
        };
        for p in &partitions {
            let route = self.routes.entry((topic.clone(), *p)).or_insert_with(|| Route {
                addr: addr.clone(),
                generation,
                count: 0,
            });
            debug_assert!(route.count == 0 || (route.addr == addr && route.generation == generation));
            route.addr.clone_from(&addr);
            route.generation = generation;
            route.count += 1;
        }
        let client = self.client.clone();
        self.in_flight.push(
            async move {
                let mut timed_out = false;
                let answered = tokio::select! {
                    answered = tokio::time::timeout(timeout, answer) => answered,
                    moved = client.leader_moved(&topic, &partitions, &addr) => {
                        // Abandoned like a timeout: the stream is replaced
                        // and the batches go again, in order, to the new leader.
                        timed_out = true;
                        Ok(Ok(Err(moved)))
                    }
                };
                let results = match answered {
                    Ok(Ok(resp)) => resp.and_then(|resp| produce_results(&partitions, resp)),
                    Ok(Err(_)) => Err(Error::Unavailable { message: "produce stream closed".into() }),
                    Err(_) => {
                        timed_out = true;
                        Err(Error::Timeout { message: format!("no answer within {timeout:?}") })
                    }
                }
                .map_err(|e| at_broker(&addr, e));
                let stream = OnStream { addr, generation, timed_out };
                settle_request(batches, results, Some(stream))
            }
            .boxed(),
        );
    }

    /// Takes in what a request or a resend came to.
    fn settle(&mut self, acc: &mut Accumulator, sent: Sent) {
        if let Some(on) = &sent.stream {
            if let (true, Some(streams)) = (on.timed_out, &mut self.streams) {
                // A stream that let a request go unanswered is replaced.
                streams.close(&on.addr, on.generation);
            }
            // Every batch of a stream request came back, one way or the other.
            let batches = sent.done.iter().map(|(b, ..)| b).chain(sent.failed.iter().map(|(b, _)| b));
            for b in batches {
                if let Some(route) = self.routes.get_mut(&(b.topic.clone(), b.partition)) {
                    route.count -= 1;
                }
            }
        }
        for (batch, result, outcome) in sent.done {
            acc.complete(&batch.topic, batch.partition, outcome);
            self.completions.finish(batch, result);
        }
        for (batch, error) in sent.failed {
            self.hold(acc, batch, error);
        }
        // Done with the batch that gave up (which started the partition
        // over) before these take its new epoch's sequences.
        for (mut batch, error) in sent.again {
            acc.restamp(&mut batch);
            self.held.entry((batch.topic.clone(), batch.partition)).or_default().push((batch, error));
        }
        if let Some((topic, partition)) = sent.recovered {
            if !self.held.contains_key(&(topic.clone(), partition)) {
                acc.set_recovering(&topic, partition, false);
            }
        }
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

/// Each partition's batches whose outcome is known but may not reach the
/// caller yet, because a batch drained before them has none yet.
#[derive(Default)]
struct Completions {
    by_partition: HashMap<TopicPartition, InOrder>,
}

#[derive(Default)]
struct InOrder {
    /// Drain order of the batches the caller has not heard of.
    outstanding: BTreeSet<u64>,
    /// Outcomes known, by drain order.
    known: BTreeMap<u64, (ReadyBatch, Result<u64>)>,
}

impl Completions {
    /// Notes a batch just drained.
    fn track(&mut self, batch: &ReadyBatch) {
        let key = (batch.topic.clone(), batch.partition);
        self.by_partition.entry(key).or_default().outstanding.insert(batch.order);
    }

    /// Takes a batch's outcome and tells the caller of every outcome of
    /// its partition that no earlier batch now holds back.
    fn finish(&mut self, batch: ReadyBatch, result: Result<u64>) {
        let key = (batch.topic.clone(), batch.partition);
        let Some(p) = self.by_partition.get_mut(&key).filter(|p| p.outstanding.contains(&batch.order)) else {
            debug_assert!(false, "outcome of a batch that was not tracked");
            return batch.complete(result);
        };
        // Only its waiters matter now: the bytes go (the accumulator has
        // already stopped counting them against the buffer).
        let mut batch = batch;
        batch.bytes = Bytes::new();
        p.known.insert(batch.order, (batch, result));
        while let Some(first) = p.outstanding.first().copied() {
            let Some((batch, result)) = p.known.remove(&first) else { break };
            p.outstanding.remove(&first);
            batch.complete(result);
        }
        if p.outstanding.is_empty() {
            self.by_partition.remove(&key);
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
    /// Batches whose leader is not known.
    Each(Vec<ReadyBatch>),
}

/// The produce stream a request went out on.
struct OnStream {
    addr: String,
    generation: u64,
    /// It went unanswered past its deadline: the stream is replaced.
    timed_out: bool,
}

/// What one request or resend came to.
#[derive(Default)]
struct Sent {
    /// Batches with an outcome, for the caller and the accumulator.
    done: Vec<(ReadyBatch, Result<u64>, Outcome)>,
    /// Batches that failed and are to be resent in order.
    failed: Vec<(ReadyBatch, Error)>,
    /// Batches of a resend to go again, restamped, after an earlier one
    /// of their partition gave up; their partition stays recovering.
    again: Vec<(ReadyBatch, Error)>,
    /// The stream a request went on, if it did: its batches' routes
    /// count down.
    stream: Option<OnStream>,
    /// A partition whose in-order resend is over.
    recovered: Option<TopicPartition>,
}

/// Sorts a request's batches: those acknowledged are done, the others
/// (all of them if the request failed as a whole) failed.
fn settle_request(
    batches: Vec<ReadyBatch>,
    results: Result<Vec<Result<u64>>>,
    stream: Option<OnStream>,
) -> Sent {
    let mut sent = Sent { stream, ..Sent::default() };
    let results = match results {
        Ok(results) => results,
        Err(e) => {
            sent.failed = batches.into_iter().map(|b| (b, e.clone())).collect();
            return sent;
        }
    };
    for (batch, result) in batches.into_iter().zip(results) {
        match result {
            Ok(base) => sent.done.push((batch, Ok(base), Outcome::Acked)),
            Err(e) => sent.failed.push((batch, e)),
        }
    }
    sent
}

/// Whether a batch whose send failed with `e` goes again: all but the
/// broker's refusals of the batch itself (too large, malformed, invalid),
/// which a resend of the same bytes would only meet again. An error that
/// ended a whole stream or request (a reset, a missing result) says
/// nothing about the batch, and out of sequence is what a pipelined batch
/// meets when the one before it did not arrive: in order, it may well be
/// taken.
fn worth_resending(e: &Error) -> bool {
    !matches!(
        e,
        Error::MessageTooLarge { .. }
            | Error::RecordTooLarge { .. }
            | Error::CorruptBatch { .. }
            | Error::InvalidArgument { .. }
    )
}

/// Resends a partition's failed batches one at a time in drain order, each
/// with retries. When one fails for good the rest go again restamped
/// (see [`Sent::again`]), unless the cluster did not take it within the
/// retries, which they would wait out as well: then they fail with it,
/// unsent.
async fn resend_in_order(
    client: Client,
    config: ProducerConfig,
    (topic, partition): TopicPartition,
    batches: Vec<(ReadyBatch, Error)>,
) -> Sent {
    if let Some((_, e)) = batches.first() {
        client.refresh_after(e).await;
    }
    let mut sent = Sent { recovered: Some((topic.clone(), partition)), ..Sent::default() };
    let mut batches = batches.into_iter();
    while let Some((batch, first_error)) = batches.next() {
        let result = if worth_resending(&first_error) {
            send_batch(&client, &config, &topic, partition, batch.bytes.clone()).await
        } else {
            Err(first_error)
        };
        let e = match result {
            Ok(base) => {
                sent.done.push((batch, Ok(base), Outcome::Acked));
                continue;
            }
            Err(e) => e,
        };
        tracing::warn!(%topic, partition, records = batch.record_count(), error = %e, "batch failed");
        sent.done.push((batch, Err(e.clone()), Outcome::GaveUp));
        if e.is_retriable() {
            sent.done.extend(batches.map(|(b, _)| (b, Err(e.clone()), Outcome::Abandoned)));
        } else {
            // Nothing has refused them in the new epoch they move to.
            let restamped = || Error::Unavailable {
                message: format!(
                    "resent in a new epoch after an earlier batch of {topic}/{partition} failed"
                ),
            };
            sent.again = batches.map(|(b, _)| (b, restamped())).collect();
        }
        break;
    }
    sent
}

/// Splits drained batches, each with the broker it goes to, into
/// requests: one per topic and broker, bounded by [`REQUEST_BATCHES_MAX`]
/// and [`REQUEST_BYTES_MAX`]. Batches whose leader is not known go one by
/// one (finding the leader is then part of their first attempt).
fn group_by_leader(batches: Vec<(ReadyBatch, Option<String>)>) -> Vec<Work> {
    let mut unknown = Vec::new();
    let mut groups: HashMap<(String, String), Vec<Vec<ReadyBatch>>> = HashMap::new();
    for (batch, leader) in batches {
        let Some(addr) = leader else {
            unknown.push(batch);
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
                    ("?".into(), String::new(), batches.iter().map(|b| b.partition).collect())
                }
            })
            .collect();
        out.sort();
        out
    }

    /// Pairs each batch with the broker `leader` names for it.
    fn led(
        batches: Vec<ReadyBatch>,
        leader: impl Fn(&ReadyBatch) -> Option<String>,
    ) -> Vec<(ReadyBatch, Option<String>)> {
        batches
            .into_iter()
            .map(|b| {
                let l = leader(&b);
                (b, l)
            })
            .collect()
    }

    /// Only the broker's refusals of the batch itself stop a resend; an
    /// error that ended a whole stream says nothing about the batch.
    #[test]
    fn only_refusals_of_the_batch_are_not_resent() {
        let m = || "x".to_string();
        for e in [
            Error::MessageTooLarge { message: m() },
            Error::CorruptBatch { message: m() },
            Error::InvalidArgument { message: m() },
        ] {
            assert!(!worth_resending(&e), "{e}");
        }
        for e in [
            Error::Other { code: tonic::Code::Internal, message: m() },
            Error::Other { code: tonic::Code::Unimplemented, message: m() },
            Error::OutOfOrderSequence { message: m() },
            Error::Unavailable { message: m() },
            Error::Timeout { message: m() },
        ] {
            assert!(worth_resending(&e), "{e}");
        }
    }

    #[test]
    fn the_broker_is_asked_to_answer_before_the_producer_gives_up() {
        let ms = Duration::from_millis;
        assert_eq!(broker_timeout(Duration::from_secs(30)), Duration::from_secs(29));
        assert_eq!(broker_timeout(ms(800)), ms(720));
        assert_eq!(broker_timeout(ms(1)), ms(1), "never 0, which the broker reads as its default");
    }

    /// An outcome that arrives before an earlier batch's waits for it;
    /// partitions do not wait for each other.
    #[test]
    fn outcomes_reach_the_caller_in_drain_order_per_partition() {
        let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let batch = |p: u32, order: u64| {
            let heard = heard.clone();
            ReadyBatch::for_test_with(
                "t",
                p,
                order,
                Box::new(move |r: Result<super::super::RecordMetadata>| {
                    heard.lock().unwrap().push((p, order, r.is_ok()))
                }),
            )
        };
        let mut c = Completions::default();
        let (a1, a2, a3, b4) = (batch(0, 1), batch(0, 2), batch(0, 3), batch(1, 4));
        for b in [&a1, &a2, &a3, &b4] {
            c.track(b);
        }
        c.finish(a3, Ok(20));
        c.finish(a2, Ok(10));
        assert!(heard.lock().unwrap().is_empty(), "batch 1 has no outcome yet");
        c.finish(b4, Ok(0));
        assert_eq!(*heard.lock().unwrap(), [(1, 4, true)], "another partition does not wait");
        c.finish(a1, Err(Error::Timeout { message: "x".into() }));
        assert_eq!(*heard.lock().unwrap(), [(1, 4, true), (0, 1, false), (0, 2, true), (0, 3, true)]);
        assert!(c.by_partition.is_empty(), "nothing left behind");
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
            shape(&group_by_leader(led(batches, leaders))),
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
        let shapes = shape(&group_by_leader(led(vec![big(0), big(1), small("t", 2)], one)));
        assert_eq!(shapes, [(s("a:1"), s("t"), vec![0]), (s("a:1"), s("t"), vec![1, 2])]);

        // And by count.
        let many = (0..REQUEST_BATCHES_MAX as u32 + 1).map(|p| small("t", p)).collect();
        let sizes: Vec<usize> =
            shape(&group_by_leader(led(many, one))).iter().map(|(_, _, ps)| ps.len()).collect();
        assert_eq!(sizes, [REQUEST_BATCHES_MAX, 1]);
    }
}
