//! `fjord.v1.Producer`: validate batches, append them, acknowledge.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fjord_proto::pb::{self, producer_server::Producer};
use futures::stream::FuturesOrdered;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::broker::Broker;
use crate::config::{PRODUCE_PARTITIONS_MAX, PRODUCE_TIMEOUT_MS_DEFAULT, PRODUCE_TIMEOUT_MS_MAX};
use crate::partition::Partition;
use crate::{Error, Result};
use fjord_replication::Ack;

/// Produce requests a stream may have in flight before the broker stops reading it.
const STREAM_IN_FLIGHT_MAX: usize = 64;

/// The producer service.
#[derive(Debug, Clone)]
pub(crate) struct ProducerService {
    pub(crate) broker: Arc<Broker>,
}

/// A produce request that passed validation.
pub(crate) struct Validated {
    /// Each target partition with its batch, in request order.
    pub(crate) batches: Vec<(Arc<Partition>, bytes::Bytes)>,
    /// acks=all: respond after commit, not after append.
    pub(crate) wait_commit: bool,
    pub(crate) timeout: Duration,
}

/// Whether `acks` asks to wait for the commit (quorum) rather than the
/// leader's append.
pub(crate) fn wait_commit(acks: i32) -> Result<bool> {
    match pb::Acks::try_from(acks) {
        Ok(pb::Acks::Unspecified | pb::Acks::All) => Ok(true),
        Ok(pb::Acks::Leader) => Ok(false),
        Err(_) => Err(Error::InvalidArgument(format!("acks: unknown value {acks}"))),
    }
}

/// The request's `timeout_ms`, defaulted and bounded.
pub(crate) fn produce_timeout(timeout_ms: u32) -> Result<Duration> {
    let ms = match timeout_ms {
        0 => PRODUCE_TIMEOUT_MS_DEFAULT,
        t if t > PRODUCE_TIMEOUT_MS_MAX => {
            return Err(Error::InvalidArgument(format!(
                "timeout_ms {t} exceeds the limit of {PRODUCE_TIMEOUT_MS_MAX}"
            )))
        }
        t => t,
    };
    Ok(Duration::from_millis(ms as u64))
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send>>;

impl ProducerService {
    /// Validates the whole request before anything is written: one bad
    /// batch fails the request and leaves every partition untouched.
    fn validate(&self, req: &pb::ProduceRequest) -> Result<Validated> {
        if req.batches.is_empty() {
            return Err(Error::InvalidArgument("produce request has no batches".into()));
        }
        if req.batches.len() > PRODUCE_PARTITIONS_MAX {
            return Err(Error::InvalidArgument(format!(
                "produce request has {} batches; the limit is {PRODUCE_PARTITIONS_MAX}",
                req.batches.len()
            )));
        }
        let wait_commit = wait_commit(req.acks)?;
        let timeout = produce_timeout(req.timeout_ms)?;
        crate::topics::check_user_topic(&req.topic)?;
        let topic = self.broker.topic(&req.topic)?;
        self.broker.disk.check_produce()?;
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(req.batches.len());
        for pb in &req.batches {
            if !seen.insert(pb.partition) {
                return Err(Error::InvalidArgument(format!(
                    "partition {} appears twice in one produce request",
                    pb.partition
                )));
            }
            let partition = self.broker.partition_in(&topic, pb.partition)?;
            let max = self.broker.config.batch_bytes_max;
            let refused = |e| batch_refused(pb.partition, e);
            let header = fjord_codec::validate_batch(&pb.batch, max).map_err(refused)?;
            check_producer_fields(&header, pb.partition)?;
            if header.is_compacted() {
                return Err(Error::InvalidArgument(format!(
                    "batches[partition {}]: attribute bit 4 (compacted) is set only by a broker's compactor",
                    pb.partition
                )));
            }
            if topic.meta.settings.compacted() {
                check_keyed(&pb.batch, &header, pb.partition, &req.topic)?;
            }
            let batch = match topic.meta.settings.forced_compression() {
                // CPU-bound but bounded by the batch limit (a 256 KiB batch
                // takes well under a millisecond with either codec).
                Some(codec) => fjord_codec::recompress(&pb.batch, &header, codec, max).map_err(refused)?,
                None => pb.batch.clone(),
            };
            out.push((partition, batch));
        }
        Ok(Validated { batches: out, wait_commit, timeout })
    }

    /// Validates a produce request and submits its batches; the returned
    /// future yields the response once they are acknowledged.
    async fn append(
        &self,
        req: pb::ProduceRequest,
    ) -> Result<impl std::future::Future<Output = Result<pb::ProduceResponse>> + Send + 'static> {
        let validated = self.validate(&req)?;
        let acked = self.submit(validated, req.topic).await;
        let correlation_id = req.correlation_id;
        Ok(async move { Ok(pb::ProduceResponse { correlation_id, results: acked.await?, error: None }) })
    }

    /// Submits every batch to its partition's Raft group, in order, and
    /// returns a future that waits for their acknowledgements and yields
    /// one result per batch, in the same order. Submission happens before
    /// this returns, so requests on one stream are ordered in the log as
    /// they arrived, while their commits (fsyncs, replication) overlap.
    /// Batch-level and record-level produce share it.
    pub(crate) async fn submit(
        &self,
        validated: Validated,
        topic: String,
    ) -> impl std::future::Future<Output = Result<Vec<pb::PartitionResult>>> + Send + 'static {
        let Validated { batches, wait_commit, timeout } = validated;
        let ack = if wait_commit { Ack::Quorum } else { Ack::Leader };
        let mut submitted = Vec::with_capacity(batches.len());
        for (p, batch) in batches {
            submitted.push((p.id, p.submit(batch, ack).await));
        }
        let ack_delay = self.broker.faults.ack_delay();
        async move {
            let acks = submitted.into_iter().map(|(partition, submitted)| async move {
                let acked = match submitted {
                    Ok(pending) => pending.await,
                    Err(e) => Err(e),
                };
                match acked {
                    Ok(c) => {
                        if c.duplicate {
                            tracing::info!(
                                partition,
                                base_offset = c.base_offset,
                                "idempotent retry answered with the offsets of its first copy"
                            );
                        }
                        pb::PartitionResult {
                            partition,
                            base_offset: c.base_offset,
                            record_count: (c.next_offset - c.base_offset) as u32,
                            error: None,
                            duplicate: c.duplicate,
                        }
                    }
                    Err(e) => {
                        pb::PartitionResult { partition, error: Some(e.detail()), ..Default::default() }
                    }
                }
            });
            let results =
                tokio::time::timeout(timeout, futures::future::join_all(acks)).await.map_err(|_| {
                    Error::Timeout(format!(
                        "produce to {topic:?} was not acknowledged within {} ms; it may still be committed",
                        timeout.as_millis()
                    ))
                })?;
            if !ack_delay.is_zero() {
                tokio::time::sleep(ack_delay).await;
            }
            Ok(results)
        }
    }
}

/// A batch the codec refused: too large, or malformed.
fn batch_refused(partition: u32, e: fjord_codec::Error) -> Error {
    match e {
        fjord_codec::Error::TooLarge { size, max, .. } => Error::MessageTooLarge { size, max },
        source => Error::CorruptBatch { partition, source },
    }
}

/// Producer fields are all unset (-1) or all set: an id from InitProducer,
/// an epoch and a sequence of at least 0 (storage-format.md §2.4). Control
/// batches are the brokers' own.
fn check_producer_fields(h: &fjord_codec::BatchHeader, partition: u32) -> Result<()> {
    if h.is_control() {
        return Err(Error::InvalidArgument(format!(
            "batch for partition {partition} has the control attribute, which only brokers may set"
        )));
    }
    let unset = (h.producer_id, h.producer_epoch, h.base_sequence) == (-1, -1, -1);
    let set = h.producer_id >= 0 && h.producer_epoch >= 0 && h.base_sequence >= 0;
    if unset || set {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "batch for partition {partition} has producer id {}, epoch {}, base sequence {}: \
         either all are -1 (not idempotent) or all are at least 0",
        h.producer_id, h.producer_epoch, h.base_sequence
    )))
}

fn failed(correlation_id: u64, e: Error) -> pb::ProduceResponse {
    pb::ProduceResponse { correlation_id, results: Vec::new(), error: Some(e.detail()) }
}

#[tonic::async_trait]
impl Producer for ProducerService {
    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> std::result::Result<Response<pb::ProduceResponse>, Status> {
        let committed = self.append(request.into_inner()).await?;
        Ok(Response::new(committed.await?))
    }

    async fn init_producer(
        &self,
        _request: Request<pb::InitProducerRequest>,
    ) -> std::result::Result<Response<pb::InitProducerResponse>, Status> {
        let producer_id = self.broker.init_producer().await?;
        tracing::debug!(producer_id, "allocated a producer id");
        Ok(Response::new(pb::InitProducerResponse { producer_id, producer_epoch: 0 }))
    }

    type ProduceStreamStream = ResponseStream<pb::ProduceResponse>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<pb::ProduceRequest>>,
    ) -> std::result::Result<Response<Self::ProduceStreamStream>, Status> {
        let svc = self.clone();
        let stream = serve_ordered(request.into_inner(), move |req: pb::ProduceRequest| {
            let svc = svc.clone();
            Box::pin(async move {
                let id = req.correlation_id;
                match svc.append(req).await {
                    Ok(commit) => {
                        Box::pin(async move { commit.await.unwrap_or_else(|e| failed(id, e)) }) as Pending<_>
                    }
                    Err(e) => Box::pin(std::future::ready(failed(id, e))),
                }
            })
        });
        Ok(Response::new(stream))
    }

    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> std::result::Result<Response<pb::PublishResponse>, Status> {
        let committed = self.publish_records(request.into_inner()).await?;
        Ok(Response::new(committed.await?))
    }

    type PublishStreamStream = ResponseStream<pb::PublishResponse>;

    async fn publish_stream(
        &self,
        request: Request<Streaming<pb::PublishRequest>>,
    ) -> std::result::Result<Response<Self::PublishStreamStream>, Status> {
        let svc = self.clone();
        let failed = |correlation_id, e: Error| pb::PublishResponse {
            correlation_id,
            results: Vec::new(),
            error: Some(e.detail()),
        };
        let stream = serve_ordered(request.into_inner(), move |req: pb::PublishRequest| {
            let svc = svc.clone();
            Box::pin(async move {
                let id = req.correlation_id;
                match svc.publish_records(req).await {
                    Ok(commit) => {
                        Box::pin(async move { commit.await.unwrap_or_else(|e| failed(id, e)) }) as Pending<_>
                    }
                    Err(e) => Box::pin(std::future::ready(failed(id, e))),
                }
            })
        });
        Ok(Response::new(stream))
    }
}

/// A boxed future of the stream machinery.
type Pending<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Serves a stream of produce-like requests: `handle` appends a request
/// (awaited in arrival order, so a stream's writes reach the log in the
/// order sent) and returns the future of its response; commits overlap,
/// and responses are sent in request order. At most
/// STREAM_IN_FLIGHT_MAX requests wait for commit before the stream is
/// read further.
fn serve_ordered<Req, Resp>(
    mut requests: Streaming<Req>,
    handle: impl Fn(Req) -> Pending<Pending<Resp>> + Send + 'static,
) -> ResponseStream<Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    let (tx, rx) = mpsc::channel(STREAM_IN_FLIGHT_MAX);
    tokio::spawn(async move {
        let mut pending = FuturesOrdered::new();
        loop {
            tokio::select! {
                req = requests.next(), if pending.len() < STREAM_IN_FLIGHT_MAX => match req {
                    Some(Ok(req)) => pending.push_back(handle(req).await),
                    Some(Err(status)) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                    None => break,
                },
                Some(resp) = pending.next(), if !pending.is_empty() => {
                    if tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                }
            }
        }
        while let Some(resp) = pending.next().await {
            if tx.send(Ok(resp)).await.is_err() {
                return;
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// Refuses a batch with a record without a key for a compacted topic, as
/// Kafka does: compaction keeps the last record of each key, and a record
/// without one could never be superseded.
fn check_keyed(batch: &[u8], header: &fjord_codec::BatchHeader, partition: u32, topic: &str) -> Result<()> {
    let mut keyless = None;
    // Validated just before: the header and CRC are not checked twice.
    fjord_codec::record_keys_of_valid(batch, header, |k| {
        if k.key.is_none() && keyless.is_none() {
            keyless = Some(k.offset);
        }
    })
    .map_err(|e| batch_refused(partition, e))?;
    match keyless {
        Some(i) => Err(Error::InvalidArgument(format!(
            "batches[partition {partition}]: record {i} has no key; topic {topic:?} has cleanup_policy compact, \
             which keeps the last record of each key, so every record needs one"
        ))),
        None => Ok(()),
    }
}
