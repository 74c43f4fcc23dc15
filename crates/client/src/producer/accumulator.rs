//! The record accumulator: per-partition open batches, closed batches
//! waiting their turn, and which partitions have a batch in flight.
//!
//! Pure bookkeeping, no I/O and no timers: the caller passes the current
//! time in and asks when to wake up next, which keeps the linger and
//! ordering logic testable without a broker or a clock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::time::Duration;

use bytes::Bytes;
use fjord_codec::format::RECORD_LEN_MIN;
use fjord_codec::{BatchBuilder, Compression};
use tokio::time::Instant;

use super::{Notify, Pending, RecordMetadata, Target};
use crate::partitioner::Sticky;
use crate::{Error, Result};

/// Who hears of a record's outcome, and what its metadata will say.
#[derive(Debug)]
pub(crate) struct Waiter {
    notify: Notify,
    timestamp: i64,
}

/// How a drained batch ended, for the accumulator's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The broker acknowledged it.
    Acked,
    /// It failed for good: its partition starts over with a new epoch,
    /// since the batch may or may not have been written.
    GaveUp,
    /// It failed unsent, with the error of an earlier batch of its
    /// partition that gave up (which already started the partition over).
    Abandoned,
}

/// A closed batch, ready to send.
#[derive(Debug)]
pub(crate) struct ReadyBatch {
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) bytes: Bytes,
    /// Drain order: a partition's batches must be appended in this order.
    pub(crate) order: u64,
    waiters: Vec<Waiter>,
}

impl ReadyBatch {
    /// Resolves each record's delivery: offsets `base_offset..` on success,
    /// a clone of the error on failure.
    pub(crate) fn complete(self, result: Result<u64>) {
        for (i, w) in self.waiters.into_iter().enumerate() {
            let outcome = match &result {
                Ok(base) => Ok(RecordMetadata {
                    partition: self.partition,
                    // A broker's base offset is below 2^63 (§2); saturating
                    // keeps a bad answer from panicking a debug build.
                    offset: base.saturating_add(i as u64),
                    timestamp: w.timestamp,
                }),
                Err(e) => Err(e.clone()),
            };
            w.notify.resolve(outcome);
        }
    }

    /// Number of records in the batch.
    pub(crate) fn record_count(&self) -> usize {
        self.waiters.len()
    }

    /// A batch with no one waiting on it, for tests of what happens to
    /// batches after the accumulator.
    #[cfg(test)]
    pub(crate) fn for_test(topic: &str, partition: u32, bytes: Bytes) -> Self {
        ReadyBatch { topic: topic.into(), partition, bytes, order: 0, waiters: Vec::new() }
    }

    /// A batch of one record whose outcome goes to `notify`, for tests of
    /// the order outcomes reach callers in.
    #[cfg(test)]
    pub(crate) fn for_test_with(
        topic: &str,
        partition: u32,
        order: u64,
        notify: Box<dyn FnOnce(Result<RecordMetadata>) + Send>,
    ) -> Self {
        let waiter = Waiter { notify: Notify::callback(notify), timestamp: 0 };
        ReadyBatch { topic: topic.into(), partition, bytes: Bytes::new(), order, waiters: vec![waiter] }
    }
}

#[derive(Debug)]
struct OpenBatch {
    builder: BatchBuilder,
    created: Instant,
    waiters: Vec<Waiter>,
}

/// A batch no record is added to any more. It is finished (header, CRC,
/// compression) only when it is sent, because an idempotent producer
/// stamps it with its sequence then (see [`Sequences`]).
#[derive(Debug)]
struct ClosedBatch {
    builder: BatchBuilder,
    waiters: Vec<Waiter>,
}

#[derive(Debug, Default)]
struct PartitionQueue {
    open: Option<OpenBatch>,
    ready: VecDeque<ClosedBatch>,
    /// Batches drained and not yet completed.
    in_flight: usize,
    /// Set while the sender resends failed batches in order: nothing new
    /// goes out meanwhile.
    recovering: bool,
    /// A batch was acknowledged since the queue was created, last
    /// recovered or last moved to another stream ([`Accumulator::set_cold`]).
    /// Until then one batch at a time goes: a leader that does not know the
    /// producer accepts any first sequence, so a second batch in flight
    /// could be appended although the first one failed.
    warm: bool,
}

/// An idempotent producer's id and, per partition, the epoch and the
/// sequence its next batch gets (storage-format.md §2.4).
///
/// A sequence is given when a batch is sent, not when it closes, so that
/// giving up on a batch (whose outcome is then unknown: it may have been
/// written) can start the partition over - epoch + 1, sequence 0, which
/// the broker accepts whatever it holds - without re-stamping batches
/// already waiting. Retries resend the stamped bytes unchanged, which is
/// what lets the broker recognise them.
#[derive(Debug)]
pub(crate) struct Sequences {
    producer_id: i64,
    base_epoch: i16,
    next: HashMap<TopicPartition, (i16, i32)>,
}

impl Sequences {
    /// Sequences for the producer id and epoch the cluster handed out.
    pub(crate) fn new(producer_id: i64, epoch: i16) -> Self {
        Sequences { producer_id, base_epoch: epoch, next: HashMap::new() }
    }

    /// Epoch and first sequence for the next batch of `key`, of `count` records.
    fn take(&mut self, key: &TopicPartition, count: u32) -> (i16, i32) {
        let slot = self.next.entry(key.clone()).or_insert((self.base_epoch, 0));
        let taken = *slot;
        slot.1 = fjord_codec::sequence_add(slot.1, count);
        taken
    }

    /// Starts `key` over after a batch was given up on: a new epoch, sequence 0.
    fn restart(&mut self, key: &TopicPartition) {
        let slot = self.next.entry(key.clone()).or_insert((self.base_epoch, 0));
        // After 32767 restarts of one partition the epoch wraps to 0, which
        // the broker would fence; a producer that fails that often has a
        // bigger problem, and a new Producer gets a new id.
        *slot = (slot.0.wrapping_add(1).max(0), 0);
    }
}

type TopicPartition = (String, u32);

/// Open and closed batches of every partition the producer writes to.
#[derive(Debug)]
pub(crate) struct Accumulator {
    batch_bytes: usize,
    linger: Duration,
    /// Ordered so that `drain` can go round-robin from `drain_after`.
    queues: BTreeMap<TopicPartition, PartitionQueue>,
    /// The partition `drain` took last; the next scan starts after it, as
    /// Kafka's `RecordAccumulator` rotates its drain index, so that when
    /// more partitions are ready than there are free slots every one of
    /// them gets a turn instead of the first few in map order winning
    /// every freed slot.
    drain_after: Option<TopicPartition>,
    /// Sticky choice and latest known partition count, per topic.
    sticky: HashMap<String, (Sticky, u32)>,
    /// Bytes reserved by open, ready and in-flight batches: `batch_bytes`
    /// each, because every batch reserves its full size when it opens.
    buffered_bytes: usize,
    seed: u64,
    /// How finished batches are compressed.
    compression: Compression,
    /// Set for an idempotent producer.
    sequences: Option<Sequences>,
    /// Batches of one partition that may be in flight at once.
    max_in_flight: usize,
    /// Batches drained so far, which numbers them (`ReadyBatch::order`).
    drained: u64,
}

impl Accumulator {
    /// Stamps the batches it sends with `sequences` (an idempotent producer).
    pub(crate) fn with_sequences(mut self, sequences: Sequences) -> Self {
        self.sequences = Some(sequences);
        self
    }

    /// Lets up to `n` batches of one partition be in flight at once (the
    /// default is one). Only for a producer whose requests reach the broker
    /// in order, see [`super::stream`].
    pub(crate) fn with_max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Compresses the batches it builds with `compression`.
    pub(crate) fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// An empty accumulator; `seed` seeds the sticky partitioner.
    pub(crate) fn new(batch_bytes: usize, linger: Duration, seed: u64) -> Self {
        Accumulator {
            batch_bytes,
            linger,
            queues: BTreeMap::new(),
            drain_after: None,
            sticky: HashMap::new(),
            buffered_bytes: 0,
            seed,
            compression: Compression::None,
            sequences: None,
            max_in_flight: 1,
            drained: 0,
        }
    }

    /// Bytes reserved by batches not yet acknowledged.
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    /// Whether nothing is buffered or in flight.
    pub(crate) fn is_empty(&self) -> bool {
        self.queues.values().all(|q| q.open.is_none() && q.ready.is_empty() && q.in_flight == 0)
    }

    /// Adds a record to its partition's open batch, closing that batch first
    /// if the record does not fit and afterwards if no further record could.
    /// A record the codec refuses fails its delivery at once. Returns the
    /// partition chosen.
    pub(crate) fn append(&mut self, rec: Pending, now: Instant) -> u32 {
        // Called once per record: the topic moves into the map key, so a
        // partition that already has a queue costs no allocation.
        let Pending { topic, target, partitions, key, value, headers, timestamp, notify } = rec;
        let partition = match target {
            Target::Partition(p) => p,
            Target::Sticky => {
                if !self.sticky.contains_key(topic.as_str()) {
                    let seed = self.seed.wrapping_add(self.sticky.len() as u64);
                    self.sticky.insert(topic.clone(), (Sticky::new(seed), 0));
                }
                let entry = self.sticky.get_mut(topic.as_str()).expect("inserted above");
                entry.1 = partitions;
                entry.0.partition(partitions)
            }
        };
        let headers: Vec<(&str, Option<&[u8]>)> =
            headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
        let tp = (topic, partition);
        if !self.queues.contains_key(&tp) {
            self.queues.insert(tp.clone(), PartitionQueue::default());
        }
        let queue = self.queues.get_mut(&tp).expect("inserted above");
        if let Some(open) = queue.open.as_mut() {
            if open.builder.push(key.as_deref(), value.as_deref(), &headers, timestamp).is_ok() {
                open.waiters.push(Waiter { notify, timestamp });
                if open.builder.len() + RECORD_LEN_MIN > self.batch_bytes {
                    self.close_open(&tp);
                }
                return partition;
            }
            self.close_open(&tp);
        }
        // Reserving the whole batch up front means a batch filled to
        // `batch_bytes` is never reallocated and copied as it grows; the
        // reservation is what counts against `buffered_bytes`, so the
        // memory really held stays bounded however many partitions
        // have a batch open.
        let mut builder =
            BatchBuilder::with_capacity(self.batch_bytes, self.batch_bytes).compression(self.compression);
        if let Err(e) = builder.push(key.as_deref(), value.as_deref(), &headers, timestamp) {
            notify.resolve(Err(Error::InvalidArgument { message: e.to_string() }));
            return partition;
        }
        self.buffered_bytes += self.batch_bytes;
        let full = builder.len() + RECORD_LEN_MIN > self.batch_bytes;
        let queue = self.queues.get_mut(&tp).expect("queue exists");
        queue.open = Some(OpenBatch { builder, created: now, waiters: vec![Waiter { notify, timestamp }] });
        if full {
            self.close_open(&tp);
        }
        partition
    }

    /// Moves a partition's open batch to its ready queue and lets keyless
    /// records of the topic move to another partition.
    fn close_open(&mut self, key: &TopicPartition) {
        let Some(queue) = self.queues.get_mut(key) else { return };
        let Some(open) = queue.open.take() else { return };
        queue.ready.push_back(ClosedBatch { builder: open.builder, waiters: open.waiters });
        if let Some((s, partitions)) = self.sticky.get_mut(&key.0) {
            s.batch_closed(key.1, *partitions);
        }
    }

    /// Takes up to `max` batches to send now, at most one per partition (a
    /// request holds one batch per partition) and none from a partition
    /// with its most batches in flight or recovering: a closed batch first,
    /// else an open one whose linger has passed (or any open one if
    /// `flushing`). The batches taken count as in flight until completed.
    ///
    /// The scan is round-robin: it starts after the partition the previous
    /// call took last and wraps around, so a partition that is ready waits
    /// at most one rotation for a free slot.
    pub(crate) fn drain(&mut self, now: Instant, max: usize, flushing: bool) -> Vec<ReadyBatch> {
        let sendable = |q: &PartitionQueue| {
            q.in_flight < if q.warm { self.max_in_flight } else { 1 }
                && !q.recovering
                && (!q.ready.is_empty()
                    || q.open.as_ref().is_some_and(|o| flushing || now >= o.created + self.linger))
        };
        // After the cursor to the end, then wrapping round from the start.
        let start = self.drain_after.as_ref();
        let tail = self
            .queues
            .range::<TopicPartition, _>((start.map_or(Bound::Unbounded, Bound::Excluded), Bound::Unbounded));
        let head = start.into_iter().flat_map(|k| self.queues.range::<TopicPartition, _>(..=k));
        let keys: Vec<TopicPartition> =
            tail.chain(head).filter(|(_, q)| sendable(q)).map(|(k, _)| k.clone()).take(max).collect();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let queue = self.queues.get_mut(&key).expect("key from map");
            if queue.ready.is_empty() {
                self.close_open(&key);
            }
            let queue = self.queues.get_mut(&key).expect("key from map");
            let ClosedBatch { mut builder, waiters } = queue.ready.pop_front().expect("a batch is ready");
            queue.in_flight += 1;
            if let Some(seq) = &mut self.sequences {
                let (epoch, first) = seq.take(&key, builder.record_count());
                builder.set_producer(seq.producer_id, epoch, first);
            }
            self.drained += 1;
            let order = self.drained;
            out.push(ReadyBatch {
                topic: key.0.clone(),
                partition: key.1,
                bytes: builder.finish(),
                order,
                waiters,
            });
            self.drain_after = Some(key);
        }
        out
    }

    /// Marks a partition's in-flight batch as done so its next batch may go.
    pub(crate) fn complete(&mut self, topic: &str, partition: u32, outcome: Outcome) {
        let key = (topic.to_string(), partition);
        if let (Outcome::GaveUp, Some(seq)) = (outcome, &mut self.sequences) {
            seq.restart(&key);
        }
        if let Some(q) = self.queues.get_mut(&key) {
            assert!(q.in_flight > 0, "completing {topic}/{partition} which has no batch in flight");
            q.in_flight -= 1;
            // An acknowledgement during recovery proves nothing about the
            // leader the resent batches will meet: the partition restarts cold.
            q.warm |= outcome == Outcome::Acked && !q.recovering;
            self.buffered_bytes -= self.batch_bytes;
            if q.open.is_none() && q.ready.is_empty() && q.in_flight == 0 && !q.recovering {
                self.queues.remove(&key);
            }
        }
    }

    /// Stamps a held batch with the partition's next epoch and sequence, for
    /// a batch that still has to go after an earlier one gave up (which
    /// started the partition over). A producer without sequences leaves it.
    pub(crate) fn restamp(&mut self, batch: &mut ReadyBatch) {
        let Some(seq) = &mut self.sequences else { return };
        let key = (batch.topic.clone(), batch.partition);
        let (epoch, first) = seq.take(&key, batch.waiters.len() as u32);
        let mut bytes = batch.bytes.to_vec();
        fjord_codec::restamp_producer(&mut bytes, seq.producer_id, epoch, first);
        batch.bytes = Bytes::from(bytes);
    }

    /// Lets only one batch of the partition be in flight until one is
    /// acknowledged again: its batches are about to go to a stream no
    /// batch of it was acknowledged on (a new leader, or a new stream to
    /// the same broker, which may have restarted).
    pub(crate) fn set_cold(&mut self, topic: &str, partition: u32) {
        if let Some(q) = self.queues.get_mut(&(topic.to_string(), partition)) {
            q.warm = false;
        }
    }

    /// Batches of a partition drained and not yet completed.
    pub(crate) fn in_flight(&self, topic: &str, partition: u32) -> usize {
        self.queues.get(&(topic.to_string(), partition)).map_or(0, |q| q.in_flight)
    }

    /// Stops (or resumes) draining a partition while its failed batches
    /// are resent in order.
    pub(crate) fn set_recovering(&mut self, topic: &str, partition: u32, on: bool) {
        let key = (topic.to_string(), partition);
        if let Some(q) = self.queues.get_mut(&key) {
            q.recovering = on;
            q.warm &= !on;
            if !on && q.open.is_none() && q.ready.is_empty() && q.in_flight == 0 {
                self.queues.remove(&key);
            }
        }
    }

    /// When the next open batch's linger ends, among partitions that could
    /// send now; `None` if no timer is needed.
    pub(crate) fn next_wakeup(&self) -> Option<Instant> {
        self.queues
            .values()
            .filter(|q| q.in_flight < if q.warm { self.max_in_flight } else { 1 })
            .filter(|q| !q.recovering && q.ready.is_empty())
            .filter_map(|q| q.open.as_ref().map(|o| o.created + self.linger))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;

    const LINGER: Duration = Duration::from_millis(5);

    fn pending(
        topic: &str,
        target: Target,
        value: &[u8],
    ) -> (Pending, oneshot::Receiver<Result<RecordMetadata>>) {
        let (tx, rx) = oneshot::channel();
        let p = Pending {
            topic: topic.into(),
            target,
            partitions: 4,
            key: None,
            value: Some(Bytes::copy_from_slice(value)),
            headers: vec![],
            timestamp: 1000,
            notify: Notify::delivery(tx),
        };
        (p, rx)
    }

    fn batch_for_records(n: usize, value_len: usize) -> usize {
        fjord_codec::format::BATCH_HEADER_LEN
            + n * BatchBuilder::record_len(None, Some(&vec![0; value_len]), &[])
    }

    #[tokio::test(start_paused = true)]
    async fn linger_holds_a_batch_until_it_expires() {
        let mut acc = Accumulator::new(1 << 20, LINGER, 1);
        let t0 = Instant::now();
        let (p, _rx1) = pending("t", Target::Partition(0), b"a");
        acc.append(p, t0);
        tokio::time::advance(Duration::from_millis(3)).await;
        let (p, _rx2) = pending("t", Target::Partition(0), b"b");
        acc.append(p, Instant::now());
        assert!(acc.drain(Instant::now(), 10, false).is_empty());
        assert_eq!(acc.next_wakeup(), Some(t0 + LINGER));
        tokio::time::advance(Duration::from_millis(2)).await;
        let sent = acc.drain(Instant::now(), 10, false);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].record_count(), 2);
        assert_eq!(acc.next_wakeup(), None);
    }

    /// A partition pipelines only once a batch of it was acknowledged, and
    /// stops while it recovers; recovering makes it start cold again, even
    /// if a batch sent before the failure is acknowledged meanwhile, and so
    /// does moving to another stream.
    #[tokio::test(start_paused = true)]
    async fn batches_pipeline_once_acknowledged_and_stop_while_recovering() {
        let mut acc = Accumulator::new(batch_for_records(1, 100), LINGER, 1).with_max_in_flight(3);
        let now = Instant::now();
        let mut rxs = Vec::new();
        for _ in 0..12 {
            let (p, rx) = pending("t", Target::Partition(0), &[7; 100]);
            acc.append(p, now);
            rxs.push(rx);
        }
        let first = acc.drain(now, 10, false);
        assert_eq!(first.len(), 1);
        assert!(acc.drain(now, 10, false).is_empty(), "cold: one batch until one is acknowledged");
        first.into_iter().for_each(|b| b.complete(Ok(0)));
        acc.complete("t", 0, Outcome::Acked);
        let mut orders = Vec::new();
        for _ in 0..5 {
            orders.extend(acc.drain(now, 10, false).into_iter().map(|b| b.order));
        }
        assert_eq!(orders, [2, 3, 4], "warm: up to 3 in flight, in drain order");
        assert_eq!(acc.in_flight("t", 0), 3);

        acc.set_recovering("t", 0, true);
        acc.complete("t", 0, Outcome::GaveUp);
        assert!(acc.drain(now, 10, false).is_empty(), "nothing goes while recovering");
        acc.complete("t", 0, Outcome::Acked);
        acc.complete("t", 0, Outcome::Abandoned);
        acc.set_recovering("t", 0, false);
        assert_eq!(acc.drain(now, 10, false).len(), 1);
        assert!(acc.drain(now, 10, false).is_empty(), "after failures it starts cold again");

        acc.complete("t", 0, Outcome::Acked);
        assert_eq!(acc.drain(now, 10, false).len(), 1, "warm again");
        acc.set_cold("t", 0);
        assert!(acc.drain(now, 10, false).is_empty(), "a new stream: cold until acknowledged there");
    }

    /// A batch held behind one that gave up moves to the new epoch, right
    /// after the sequences already taken there.
    #[tokio::test(start_paused = true)]
    async fn a_restamped_batch_follows_the_new_epoch() {
        let mut acc = Accumulator::new(batch_for_records(2, 1), LINGER, 1)
            .with_sequences(Sequences::new(42, 0))
            .with_max_in_flight(5);
        let now = Instant::now();
        let mut rxs = Vec::new();
        for _ in 0..6 {
            let (p, rx) = pending("t", Target::Partition(0), b"x");
            acc.append(p, now);
            rxs.push(rx);
        }
        let header = |b: &ReadyBatch| {
            let h = fjord_codec::validate_batch(&b.bytes, 1 << 20).unwrap();
            (h.producer_epoch, h.base_sequence)
        };
        let first = acc.drain(now, 1, false).pop().unwrap();
        acc.complete("t", 0, Outcome::Acked);
        let second = acc.drain(now, 1, false).pop().unwrap();
        let mut third = acc.drain(now, 1, false).pop().unwrap();
        assert_eq!([header(&first), header(&second), header(&third)], [(0, 0), (0, 2), (0, 4)]);
        acc.complete("t", 0, Outcome::GaveUp);
        acc.restamp(&mut third);
        assert_eq!(header(&third), (1, 0));
        assert_eq!(third.record_count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn full_batch_goes_at_once_and_flush_ignores_linger() {
        // Room for exactly three 100-byte records.
        let mut acc = Accumulator::new(batch_for_records(3, 100), LINGER, 1);
        let now = Instant::now();
        let mut rxs = Vec::new();
        for _ in 0..4 {
            let (p, rx) = pending("t", Target::Partition(1), &[7; 100]);
            acc.append(p, now);
            rxs.push(rx);
        }
        let sent = acc.drain(now, 10, false);
        assert_eq!(sent.len(), 1, "the full batch goes before linger");
        assert_eq!(sent[0].record_count(), 3);
        assert!(acc.drain(now, 10, true).is_empty(), "one batch in flight per partition");
        sent.into_iter().for_each(|b| b.complete(Ok(10)));
        acc.complete("t", 1, Outcome::Acked);
        let sent = acc.drain(now, 10, true);
        assert_eq!(sent.len(), 1, "flush sends the partial batch");
        sent.into_iter().for_each(|b| b.complete(Ok(13)));
        acc.complete("t", 1, Outcome::Acked);
        assert!(acc.is_empty());
        assert_eq!(acc.buffered_bytes(), 0);
        let offsets: Vec<u64> =
            rxs.into_iter().map(|mut rx| rx.try_recv().unwrap().unwrap().offset).collect();
        assert_eq!(offsets, [10, 11, 12, 13]);
    }

    #[tokio::test(start_paused = true)]
    async fn partitions_drain_concurrently_up_to_max_and_failures_reach_every_record() {
        let mut acc = Accumulator::new(1 << 20, LINGER, 1);
        let now = Instant::now();
        let mut rxs = Vec::new();
        for p in 0..3 {
            let (rec, rx) = pending("t", Target::Partition(p), b"x");
            acc.append(rec, now);
            rxs.push(rx);
        }
        let later = now + LINGER;
        let first = acc.drain(later, 2, false);
        assert_eq!(first.len(), 2);
        let second = acc.drain(later, 2, false);
        assert_eq!(second.len(), 1);
        for b in first.into_iter().chain(second) {
            let (t, p) = (b.topic.clone(), b.partition);
            b.complete(Err(Error::Timeout { message: "x".into() }));
            acc.complete(&t, p, Outcome::GaveUp);
        }
        for mut rx in rxs {
            assert!(matches!(rx.try_recv().unwrap(), Err(Error::Timeout { .. })));
        }
        assert!(acc.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_reserves_and_is_charged_its_full_size() {
        const BATCH_BYTES: usize = 64 * 1024;
        let mut acc = Accumulator::new(BATCH_BYTES, LINGER, 1);
        let now = Instant::now();
        let mut rxs = Vec::new();
        for p in 0..2 {
            let (rec, rx) = pending("t", Target::Partition(p), b"small");
            acc.append(rec, now);
            rxs.push(rx);
        }
        let open = acc.queues[&("t".to_string(), 0)].open.as_ref().expect("a batch is open");
        assert!(open.builder.capacity() >= BATCH_BYTES, "filling the batch would reallocate it");
        assert_eq!(acc.buffered_bytes(), 2 * BATCH_BYTES);
        let sent = acc.drain(now, 1, true);
        assert_eq!(acc.buffered_bytes(), 2 * BATCH_BYTES, "in flight, still held");
        for b in sent {
            acc.complete(&b.topic, b.partition, Outcome::Acked);
        }
        assert_eq!(acc.buffered_bytes(), BATCH_BYTES);
    }

    #[tokio::test(start_paused = true)]
    async fn more_ready_partitions_than_slots_all_get_turns() {
        // The bench's shape: 8 partitions, each with a backlog of full
        // batches, and 5 slots of which the oldest frees up at a time.
        const PARTITIONS: u32 = 8;
        const SLOTS: usize = 5;
        const BACKLOG: usize = 10;
        let mut acc = Accumulator::new(batch_for_records(1, 100), LINGER, 1);
        let now = Instant::now();
        let mut rxs = Vec::new();
        for _ in 0..BACKLOG {
            for p in 0..PARTITIONS {
                let (rec, rx) = pending("t", Target::Partition(p), &[1; 100]);
                acc.append(rec, now);
                rxs.push(rx);
            }
        }
        let mut in_flight: VecDeque<ReadyBatch> = acc.drain(now, SLOTS, false).into();
        let mut sent = vec![0usize; PARTITIONS as usize];
        in_flight.iter().for_each(|b| sent[b.partition as usize] += 1);
        let mut drains = 1;
        while !in_flight.is_empty() {
            let done = in_flight.pop_front().expect("not empty");
            acc.complete(&done.topic, done.partition, Outcome::Acked);
            done.complete(Ok(0));
            for b in acc.drain(now, SLOTS - in_flight.len(), false) {
                sent[b.partition as usize] += 1;
                in_flight.push_back(b);
            }
            drains += 1;
            // Each slot that frees goes to the next partition in turn, so
            // after one rotation (and from then on) the counts differ by at
            // most one.
            if drains > PARTITIONS as usize {
                let (min, max) = (sent.iter().min().unwrap(), sent.iter().max().unwrap());
                assert!(max - min <= 1, "after {drains} drains the partitions were sent {sent:?} times");
            }
        }
        assert_eq!(sent, vec![BACKLOG; PARTITIONS as usize]);
        assert!(acc.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn sticky_moves_when_its_batch_is_sent() {
        let mut acc = Accumulator::new(1 << 20, LINGER, 9);
        let now = Instant::now();
        let (p, _a) = pending("t", Target::Sticky, b"1");
        let first = acc.append(p, now);
        let (p, _b) = pending("t", Target::Sticky, b"2");
        assert_eq!(acc.append(p, now), first, "sticks while the batch is open");
        let sent = acc.drain(now, 10, true);
        assert_eq!(sent.len(), 1);
        let (p, _c) = pending("t", Target::Sticky, b"3");
        let second = acc.append(p, now);
        assert_ne!(second, first, "moves on once the batch is sent");
        assert!(second < 4);
    }

    #[tokio::test(start_paused = true)]
    async fn idempotent_batches_get_consecutive_sequences_and_restart_after_a_failure() {
        let mut acc = Accumulator::new(1 << 20, LINGER, 1).with_sequences(Sequences::new(42, 0));
        let now = Instant::now();
        let send = |acc: &mut Accumulator, p: u32, n: usize| {
            for _ in 0..n {
                let (rec, _rx) = pending("t", Target::Partition(p), b"x");
                acc.append(rec, now);
            }
            let b = acc.drain(now + LINGER, 1, true).pop().expect("a batch");
            let h = fjord_codec::BatchHeader::parse(&b.bytes).unwrap();
            (h.producer_id, h.producer_epoch, h.base_sequence)
        };
        assert_eq!(send(&mut acc, 0, 3), (42, 0, 0));
        acc.complete("t", 0, Outcome::Acked);
        assert_eq!(send(&mut acc, 0, 2), (42, 0, 3));
        // Other partitions count on their own.
        assert_eq!(send(&mut acc, 1, 1), (42, 0, 0));
        acc.complete("t", 1, Outcome::Acked);
        // The batch at sequence 3 is given up on: a new epoch from 0.
        acc.complete("t", 0, Outcome::GaveUp);
        assert_eq!(send(&mut acc, 0, 1), (42, 1, 0));
        acc.complete("t", 0, Outcome::Acked);
        assert_eq!(send(&mut acc, 0, 1), (42, 1, 1));
    }
}
