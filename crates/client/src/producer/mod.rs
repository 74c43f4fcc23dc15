//! [`Producer`]: batches records per partition and sends them in the
//! background.
//!
//! `send` picks the partition, checks the record against the batch limit and
//! hands it to a background task over a bounded channel (so a slow cluster
//! slows the caller instead of growing memory). The task appends it to its
//! partition's open batch in the [`accumulator`]; a batch is sent when it
//! is full or its linger time has passed.
//!
//! **Ordering.** An idempotent producer (the default) keeps up to
//! [`MAX_IN_FLIGHT_PER_PARTITION`] batches of a partition in flight, all on
//! one ordered produce stream to one broker, so the broker sees their
//! sequences in order and the partition's Raft group folds the batches
//! that arrive during one fsync into the next (one partition: 269 -> 511
//! MB/s in `fjord bench produce`, 1 KiB records, fsync per batch). It does
//! so only after a batch of the partition was acknowledged: a leader that
//! does not know the producer accepts any first sequence. A
//! non-idempotent producer keeps one batch per partition in flight on
//! unary requests. Either way a failed batch is held, the partition sends
//! nothing new until its other batches in flight have come back, and then
//! the held batches are resent one at a time in their original order
//! (same bytes, retries with backoff): batches are appended in the order
//! their records were sent. A partition whose batches are in flight on a
//! stream that was replaced (a request went unanswered) sends nothing on
//! the new one until they are back, and pipelines again only after an
//! acknowledgement there. Batches of different partitions are in flight
//! concurrently, up to `max_in_flight_requests` requests; ready batches of
//! one topic whose partitions share a leader go in one request, and each
//! partition's result in it is handled on its own. Deliveries and
//! callbacks of one partition complete in the order the records were sent.
//!
//! **Delivery.** Exactly once into the log by default (idempotent, see
//! [`ProducerConfig::idempotent`]): a batch whose request timed out is
//! resent with the same producer id and sequence, and a partition leader
//! that already holds it - the same leader, a new one after failover, or a
//! restarted one - answers with the offsets of the first copy instead of
//! writing it again. Non-idempotent producers deliver at least once: the
//! records of a retried batch can appear twice. A batch that fails for
//! good fails each of its records' [`Delivery`]; later batches of the
//! partition are still sent (an idempotent producer starts that
//! partition's sequence over with a new epoch, since the failed batch may
//! or may not have been written, and restamps the batches it held behind
//! it), except when it failed because the cluster did not take it within
//! the retries: then the batches held behind it fail with it.

pub(crate) mod accumulator;
mod sender;
mod stream;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fjord_codec::format::BATCH_HEADER_LEN;
use fjord_codec::BatchBuilder;
pub use fjord_codec::Compression;
use tokio::sync::{mpsc, oneshot};

use crate::{Client, Error, Result, REQUEST_TIMEOUT_DEFAULT};
use fjord_codec::partition_for_key;

/// Default time a batch waits for more records before it is sent.
pub const LINGER_DEFAULT: Duration = Duration::from_millis(5);
/// Default batch size limit, header included: 256 KiB.
pub const BATCH_BYTES_DEFAULT: usize = 256 * 1024;
/// Default bound on produce requests in flight across all partitions and
/// brokers. Not Kafka's 5: with the sticky partitioner batches fill one
/// partition at a time, so a request mostly carries one batch, and each
/// waits for its fsync; 5 requests then meant 5 batches in flight for the
/// whole producer, and batches queued for a slot. With 32, an 8-partition
/// topic can keep most of its 5 batches per partition in flight. A/B,
/// `fjord bench`, 1 KiB records, 8 partitions, one broker, fsync per batch,
/// three rounds: produce 420 / 460 / 444 -> 484 / 560 / 526 MB/s; p99
/// produce-to-consume at 200k records/s 14 / 26 / 25 -> 6.6 / 13.6 / 12.6
/// ms (172-200 ms in earlier rounds against 8-11 ms with 16). Memory stays
/// bounded by `buffer_bytes`.
pub const MAX_IN_FLIGHT_REQUESTS_DEFAULT: usize = 32;
/// Batches of one partition an idempotent producer keeps in flight at
/// once, as Kafka's `max.in.flight.requests.per.connection` (5) with
/// idempotence; a non-idempotent producer keeps one. See the module doc on
/// ordering.
pub const MAX_IN_FLIGHT_PER_PARTITION: usize = 5;
/// Default bound on bytes held in batches not yet acknowledged: 32 MiB, 128
/// full default batches. When reached, `send` waits.
pub const BUFFER_BYTES_DEFAULT: usize = 32 * 1024 * 1024;
/// Largest linger accepted: longer would make `flush`-less callers wait
/// noticeably for no throughput gain.
pub const LINGER_MAX: Duration = Duration::from_secs(60);
/// Records queued between `send` callers and the background task.
const COMMAND_QUEUE_LEN: usize = 1024;
/// Most in-flight requests a producer may be configured for.
const MAX_IN_FLIGHT_REQUESTS_MAX: usize = 1024;
/// Smallest batch limit: a header plus a small record.
const BATCH_BYTES_MIN: usize = BATCH_HEADER_LEN + 64;

/// When the broker acknowledges a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Acks {
    /// Once a quorum of replicas holds it durably.
    #[default]
    All,
    /// Once the leader has appended it.
    Leader,
}

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How long a batch waits for more records. Default [`LINGER_DEFAULT`] (5 ms).
    pub linger: Duration,
    /// Batch size limit in bytes, header included; also the largest record
    /// accepted. Default [`BATCH_BYTES_DEFAULT`] (256 KiB), at most
    /// `fjord_codec::format::BATCH_LEN_MAX`.
    pub batch_bytes: usize,
    /// Produce requests in flight across partitions, each carrying the
    /// batches of one topic for one broker. Default
    /// [`MAX_IN_FLIGHT_REQUESTS_DEFAULT`] (32). Per partition at most
    /// [`MAX_IN_FLIGHT_PER_PARTITION`] batches (idempotent) or one. A
    /// partition's in-order resend of failed batches takes one slot.
    pub max_in_flight_requests: usize,
    /// Bytes buffered before `send` waits. Default [`BUFFER_BYTES_DEFAULT`]
    /// (32 MiB). Each batch counts as `batch_bytes` from the moment it
    /// opens until it is acknowledged, because it reserves that much memory
    /// up front; so this also bounds how many batches can be open at once.
    pub buffer_bytes: usize,
    /// Acknowledgement level. Default [`Acks::All`].
    pub acks: Acks,
    /// Timeout of each produce attempt. Default 30 s.
    pub request_timeout: Duration,
    /// Batch compression (storage-format.md §2.3); consumers decompress.
    /// Default none.
    pub compression: Compression,
    /// Idempotent delivery (default on, as in current Kafka): the producer
    /// obtains a producer id from the cluster and stamps each batch with a
    /// per-partition sequence, so a retried batch is stored once even
    /// across leader changes and broker restarts. Off: at least once.
    pub idempotent: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger: LINGER_DEFAULT,
            batch_bytes: BATCH_BYTES_DEFAULT,
            max_in_flight_requests: MAX_IN_FLIGHT_REQUESTS_DEFAULT,
            buffer_bytes: BUFFER_BYTES_DEFAULT,
            acks: Acks::All,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            compression: Compression::None,
            idempotent: true,
        }
    }
}

impl ProducerConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad field and its limit.
    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| Err(Error::Config { message });
        let max = fjord_codec::format::BATCH_LEN_MAX;
        if !(BATCH_BYTES_MIN..=max).contains(&self.batch_bytes) {
            return bad(format!("batch_bytes {} is outside {BATCH_BYTES_MIN}..={max}", self.batch_bytes));
        }
        if self.linger > LINGER_MAX {
            return bad(format!("linger {:?} exceeds {LINGER_MAX:?}", self.linger));
        }
        if !(1..=MAX_IN_FLIGHT_REQUESTS_MAX).contains(&self.max_in_flight_requests) {
            return bad(format!(
                "max_in_flight_requests {} is outside 1..={MAX_IN_FLIGHT_REQUESTS_MAX}",
                self.max_in_flight_requests
            ));
        }
        if self.buffer_bytes < self.batch_bytes {
            return bad(format!(
                "buffer_bytes {} is below batch_bytes {}",
                self.buffer_bytes, self.batch_bytes
            ));
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout must be above 0".into());
        }
        Ok(())
    }
}

/// A record to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    /// Topic name.
    pub topic: String,
    /// Partition; `None` lets the partitioner choose (murmur2 of the key, or sticky).
    pub partition: Option<u32>,
    /// Key, if any.
    pub key: Option<Bytes>,
    /// Value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Timestamp in ms since the Unix epoch; `None` for the time of `send`.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A keyless record with a value.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        ProducerRecord { topic: topic.into(), value: Some(value.into()), ..Default::default() }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the partition explicitly.
    pub fn with_partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Appends a header.
    pub fn with_header(mut self, key: impl Into<String>, value: Option<Bytes>) -> Self {
        self.headers.push((key.into(), value));
        self
    }

    /// Sets the timestamp (ms since the Unix epoch).
    pub fn with_timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp = Some(timestamp_ms);
        self
    }
}

/// Where an acknowledged record was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Partition it went to.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: u64,
    /// Its timestamp (ms since the Unix epoch), as sent.
    pub timestamp: i64,
}

/// Resolves when the broker acknowledged (or finally refused) one record.
#[derive(Debug)]
#[must_use = "a Delivery reports whether the record was stored"]
pub struct Delivery {
    rx: oneshot::Receiver<Result<RecordMetadata>>,
}

impl Future for Delivery {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| r.unwrap_or(Err(Error::ProducerClosed)))
    }
}

/// How a record's outcome reaches its sender: the [`Delivery`] of
/// [`Producer::send`] or the callback of [`Producer::send_with`]. Dropped
/// unresolved (the producer's task ended), it reports
/// [`Error::ProducerClosed`], so a callback is always called exactly once.
pub(crate) struct Notify(Option<NotifyTo>);

enum NotifyTo {
    Delivery(oneshot::Sender<Result<RecordMetadata>>),
    Callback(Box<dyn FnOnce(Result<RecordMetadata>) + Send>),
}

impl Notify {
    pub(crate) fn delivery(tx: oneshot::Sender<Result<RecordMetadata>>) -> Self {
        Notify(Some(NotifyTo::Delivery(tx)))
    }

    pub(crate) fn callback(f: impl FnOnce(Result<RecordMetadata>) + Send + 'static) -> Self {
        Notify(Some(NotifyTo::Callback(Box::new(f))))
    }

    /// Reports the record's outcome.
    pub(crate) fn resolve(mut self, outcome: Result<RecordMetadata>) {
        match self.0.take() {
            // The caller may have dropped its Delivery; that is fine.
            Some(NotifyTo::Delivery(tx)) => {
                let _ = tx.send(outcome);
            }
            Some(NotifyTo::Callback(f)) => f(outcome),
            None => {}
        }
    }

    /// Forgets the record without reporting it: `send_with` returned the
    /// error instead.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        if self.0.is_some() {
            Notify(self.0.take()).resolve(Err(Error::ProducerClosed));
        }
    }
}

impl std::fmt::Debug for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let to = match &self.0 {
            Some(NotifyTo::Delivery(_)) => "delivery",
            Some(NotifyTo::Callback(_)) => "callback",
            None => "resolved",
        };
        f.debug_tuple("Notify").field(&to).finish()
    }
}

/// Where the partitioner sends a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// A known partition (explicit or by key).
    Partition(u32),
    /// The topic's sticky partition, chosen by the background task.
    Sticky,
}

/// A record on its way to the background task.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) topic: String,
    pub(crate) target: Target,
    pub(crate) partitions: u32,
    pub(crate) key: Option<Bytes>,
    pub(crate) value: Option<Bytes>,
    pub(crate) headers: Vec<(String, Option<Bytes>)>,
    pub(crate) timestamp: i64,
    pub(crate) notify: Notify,
}

/// What `Producer` handles tell the background task.
#[derive(Debug)]
pub(crate) enum Command {
    Send(Pending),
    Flush(oneshot::Sender<()>),
}

/// A batching producer. Share it behind an `Arc` to send from many tasks.
///
/// ```no_run
/// use fjord_client::{Client, ClientConfig, Producer, ProducerConfig, ProducerRecord};
/// # async fn demo(client: Client) -> fjord_client::Result<()> {
/// let producer = Producer::new(client, ProducerConfig::default())?;
/// let mut deliveries = Vec::new();
/// for i in 0..1000 {
///     let rec = ProducerRecord::new("events", format!("event {i}")).with_key(format!("user-{}", i % 10));
///     deliveries.push(producer.send(rec).await?); // waits only if the buffer is full
/// }
/// producer.flush().await;
/// for d in deliveries {
///     d.await?;
/// }
/// producer.close().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Producer {
    client: Client,
    config: ProducerConfig,
    tx: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
}

impl Producer {
    /// Starts a producer (and its background task) on the current Tokio runtime.
    ///
    /// # Errors
    /// [`Error::Config`] if `config` is invalid.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn new(client: Client, config: ProducerConfig) -> Result<Self> {
        config.validate()?;
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE_LEN);
        let task = tokio::spawn(sender::run(client.clone(), config.clone(), rx));
        Ok(Producer { client, config, tx, task })
    }

    /// Queues a record and returns a [`Delivery`] that resolves when it is
    /// acknowledged. Waits only while the producer's buffer is full.
    ///
    /// # Errors
    /// At once, without sending: [`Error::RecordTooLarge`] if the record
    /// alone exceeds `batch_bytes`, [`Error::UnknownTopic`] or
    /// [`Error::UnknownPartition`], [`Error::ProducerClosed`] after
    /// [`close`](Self::close). Broker failures arrive through the `Delivery`.
    pub async fn send(&self, record: ProducerRecord) -> Result<Delivery> {
        let (tx, rx) = oneshot::channel();
        self.submit(record, Notify::delivery(tx)).await?;
        Ok(Delivery { rx })
    }

    /// Queues a record like [`send`](Self::send), but reports its outcome by
    /// calling `callback` once instead of through a [`Delivery`], as Kafka's
    /// `send(record, callback)` does: cheaper when millions of records are
    /// outstanding. The callback runs on the producer's background task
    /// when the record's batch is acknowledged or fails for good (or with
    /// [`Error::ProducerClosed`] if the task ends first), so it must be
    /// quick and must not block.
    ///
    /// # Errors
    /// As [`send`](Self::send), at once; `callback` is then not called.
    pub async fn send_with(
        &self,
        record: ProducerRecord,
        callback: impl FnOnce(Result<RecordMetadata>) + Send + 'static,
    ) -> Result<()> {
        self.submit(record, Notify::callback(callback)).await
    }

    /// Checks a record against the limits and picks its partition (or
    /// leaves a keyless one to the sticky partitioner).
    async fn route(&self, record: &ProducerRecord) -> Result<(Target, u32)> {
        let headers: Vec<(&str, Option<&[u8]>)> =
            record.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
        let size = BATCH_HEADER_LEN
            + BatchBuilder::record_len(record.key.as_deref(), record.value.as_deref(), &headers);
        if size > self.config.batch_bytes {
            return Err(Error::RecordTooLarge { size, max: self.config.batch_bytes });
        }
        let partitions = self.client.partition_count(&record.topic).await?;
        if partitions == 0 {
            return Err(Error::Unavailable {
                message: format!("topic {} has no partitions yet", record.topic),
            });
        }
        let target = match (record.partition, &record.key) {
            (Some(p), _) if p >= partitions => {
                return Err(Error::UnknownPartition {
                    message: format!("topic {} has no partition {p} ({partitions} partitions)", record.topic),
                })
            }
            (Some(p), _) => Target::Partition(p),
            (None, Some(key)) => Target::Partition(partition_for_key(key, partitions)),
            (None, None) => Target::Sticky,
        };
        Ok((target, partitions))
    }

    async fn submit(&self, record: ProducerRecord, notify: Notify) -> Result<()> {
        let (target, partitions) = match self.route(&record).await {
            Ok(routed) => routed,
            Err(e) => {
                notify.disarm();
                return Err(e);
            }
        };
        let pending = Pending {
            topic: record.topic,
            target,
            partitions,
            key: record.key,
            value: record.value,
            headers: record.headers,
            timestamp: record.timestamp.unwrap_or_else(now_ms),
            notify,
        };
        if let Err(mpsc::error::SendError(cmd)) = self.tx.send(Command::Send(pending)).await {
            if let Command::Send(p) = cmd {
                p.notify.disarm();
            }
            return Err(Error::ProducerClosed);
        }
        Ok(())
    }

    /// Sends every buffered batch now, ignoring linger, and waits until all
    /// records sent before this call are acknowledged or failed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Flushes, then stops the background task.
    ///
    /// # Errors
    /// [`Error::ProducerClosed`] if the background task had panicked.
    pub async fn close(self) -> Result<()> {
        let Producer { tx, task, .. } = self;
        drop(tx);
        task.await.map_err(|_| Error::ProducerClosed)
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn recorder() -> (Arc<Mutex<Vec<Result<RecordMetadata>>>>, Notify) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let c = calls.clone();
        (calls, Notify::callback(move |r| c.lock().unwrap().push(r)))
    }

    #[test]
    fn a_callback_runs_once_even_when_its_record_is_dropped() {
        let (calls, notify) = recorder();
        let meta = RecordMetadata { partition: 1, offset: 7, timestamp: 3 };
        notify.resolve(Ok(meta));
        assert!(matches!(calls.lock().unwrap().as_slice(), [Ok(m)] if *m == meta));

        let (calls, notify) = recorder();
        drop(notify);
        assert!(matches!(calls.lock().unwrap().as_slice(), [Err(Error::ProducerClosed)]));

        let (calls, notify) = recorder();
        notify.disarm();
        assert!(calls.lock().unwrap().is_empty(), "a disarmed callback must not run");
    }
}
