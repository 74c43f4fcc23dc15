//! `fjord.v1.Consumer`: fetch (long-poll), subscribe (follow the tail),
//! list offsets. Reads never go past the high watermark.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fjord_proto::pb::{self, consumer_server::Consumer};
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::broker::Broker;
use crate::config::{FETCH_BYTES_DEFAULT, FETCH_BYTES_MAX, FETCH_WAIT_MS_MAX, SUBSCRIBE_BUFFER};
use crate::partition::Partition;
use crate::service::read::{long_poll_records, ReadParams};
use crate::{Error, Result};

/// The consumer service.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerService {
    pub(crate) broker: Arc<Broker>,
    /// Becomes true when the broker shuts down: long polls return, streams end.
    pub(crate) shutdown: watch::Receiver<bool>,
}

type FetchStream = Pin<Box<dyn Stream<Item = std::result::Result<pb::FetchResponse, Status>> + Send>>;
type RecordStream = Pin<Box<dyn Stream<Item = std::result::Result<pb::ReadResponse, Status>> + Send>>;

/// A fetch's parameters, checked and clamped.
struct FetchParams {
    partition: Arc<Partition>,
    offset: u64,
    max_bytes: usize,
    min_bytes: usize,
    max_wait: Duration,
}

impl ConsumerService {
    fn params(&self, req: &pb::FetchRequest) -> Result<FetchParams> {
        let partition = self.broker.partition(&req.topic, req.partition)?;
        if req.max_wait_ms > FETCH_WAIT_MS_MAX {
            return Err(Error::InvalidArgument(format!(
                "max_wait_ms {} exceeds the limit of {FETCH_WAIT_MS_MAX}",
                req.max_wait_ms
            )));
        }
        let max_bytes = match req.max_bytes {
            0 => FETCH_BYTES_DEFAULT,
            n => n.min(FETCH_BYTES_MAX),
        } as usize;
        Ok(FetchParams {
            partition,
            offset: req.offset,
            max_bytes,
            min_bytes: (req.min_bytes as usize).min(max_bytes),
            max_wait: Duration::from_millis(req.max_wait_ms as u64),
        })
    }
}

/// Reads committed batches at `offset`, checking the offset against the
/// range a consumer may read: `[log start, high watermark]`.
pub(crate) fn read(p: &Partition, offset: u64, max_bytes: usize) -> Result<pb::FetchResponse> {
    p.check_serving()?;
    let hw = p.high_watermark();
    let start = p.log.log_start_offset();
    let out_of_range = || Error::OffsetOutOfRange {
        topic: p.topic.clone(),
        partition: p.id,
        offset,
        log_start: start,
        log_end: hw,
    };
    if offset < start || offset > hw {
        return Err(out_of_range());
    }
    let r = p.log.read(offset, max_bytes, hw).map_err(|e| match e {
        fjord_storage::Error::OffsetOutOfRange { .. } => out_of_range(),
        fjord_storage::Error::Damaged { start_offset, end_offset, reason, .. } => {
            Error::Damaged { topic: p.topic.clone(), partition: p.id, start_offset, end_offset, reason }
        }
        e => Error::PartitionStorage {
            topic: p.topic.clone(),
            partition: p.id,
            source: std::sync::Arc::new(e),
        },
    })?;
    Ok(pb::FetchResponse {
        topic: p.topic.clone(),
        partition: p.id,
        batches: r.batches,
        next_offset: r.next_offset,
        high_watermark: hw,
        log_start_offset: start,
    })
}

/// Reads, waiting up to `max_wait` for `min_bytes` to be committed.
async fn long_poll(
    f: &FetchParams,
    offset: u64,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<pb::FetchResponse> {
    let deadline = Instant::now() + f.max_wait;
    let mut hw = f.partition.watch_hw();
    loop {
        hw.borrow_and_update();
        let resp = read(&f.partition, offset, f.max_bytes)?;
        if resp.batches.len() >= f.min_bytes.max(1) || Instant::now() >= deadline || *shutdown.borrow() {
            f.partition.traffic.fetched(offset, resp.next_offset, resp.batches.len());
            return Ok(resp);
        }
        tokio::select! {
            changed = hw.changed() => if changed.is_err() || f.partition.is_closed() {
                return Err(Error::UnknownTopic(f.partition.topic.clone()));
            },
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.changed() => {}
        }
    }
}

fn bad_spec(spec: i32) -> Error {
    Error::InvalidArgument(format!("spec must be EARLIEST, LATEST or TIMESTAMP, got {spec}"))
}

/// The offset an [`pb::OffsetSpec`] names in `p`: the log start, the high
/// watermark, or the first record at or after `timestamp_ms` (the high
/// watermark if none is).
pub(crate) async fn resolve_spec(p: &Partition, spec: pb::OffsetSpec, timestamp_ms: i64) -> Result<u64> {
    p.check_serving()?;
    let hw = p.high_watermark();
    match spec {
        pb::OffsetSpec::Earliest => Ok(p.log.log_start_offset()),
        pb::OffsetSpec::Latest => Ok(hw),
        pb::OffsetSpec::Timestamp => {
            let log = p.log.clone();
            Ok(crate::broker::blocking(move || Ok(log.offset_for_timestamp(timestamp_ms, hw)?))
                .await?
                .unwrap_or(hw))
        }
        pb::OffsetSpec::Unspecified => Err(bad_spec(spec as i32)),
    }
}

#[tonic::async_trait]
impl Consumer for ConsumerService {
    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> std::result::Result<Response<pb::FetchResponse>, Status> {
        let req = request.into_inner();
        let f = self.params(&req)?;
        let mut shutdown = self.shutdown.clone();
        Ok(Response::new(long_poll(&f, f.offset, &mut shutdown).await?))
    }

    type SubscribeStream = FetchStream;

    async fn subscribe(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> std::result::Result<Response<Self::SubscribeStream>, Status> {
        let req = request.into_inner();
        let mut f = self.params(&req)?;
        // Each chunk waits for min_bytes as a fetch would, but never more
        // than this, so a quiet partition still sends what it has.
        if f.max_wait.is_zero() {
            f.max_wait = Duration::from_millis(FETCH_WAIT_MS_MAX as u64);
        }
        read(&f.partition, f.offset, 0)?; // an offset out of range fails the call, not the stream
        let (offset, f) = (f.offset, Arc::new(f));
        let stream = follow(offset, self.shutdown.clone(), move |offset, mut shutdown| {
            let f = f.clone();
            async move {
                let r = long_poll(&f, offset, &mut shutdown).await?;
                Ok((r.next_offset, !r.batches.is_empty(), r))
            }
        });
        Ok(Response::new(stream))
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> std::result::Result<Response<pb::ListOffsetsResponse>, Status> {
        let req = request.into_inner();
        let p = self.broker.partition(&req.topic, req.partition)?;
        p.check_serving()?;
        let spec = pb::OffsetSpec::try_from(req.spec).map_err(|_| bad_spec(req.spec))?;
        let offset = resolve_spec(&p, spec, req.timestamp_ms).await?;
        let (hw, start) = (p.high_watermark(), p.log.log_start_offset());
        Ok(Response::new(pb::ListOffsetsResponse { offset, log_start_offset: start, high_watermark: hw }))
    }

    async fn read(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> std::result::Result<Response<pb::ReadResponse>, Status> {
        let req = request.into_inner();
        let f = ReadParams::new(&self.broker, &req).await?;
        let mut shutdown = self.shutdown.clone();
        Ok(Response::new(long_poll_records(&f, f.offset, &mut shutdown).await?))
    }

    type ReadStreamStream = RecordStream;

    async fn read_stream(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> std::result::Result<Response<Self::ReadStreamStream>, Status> {
        let req = request.into_inner();
        let mut f = ReadParams::new(&self.broker, &req).await?;
        // Each response waits for a first record, but a wait is bounded so
        // that a stream whose client went away is noticed.
        f.max_wait = Duration::from_millis(FETCH_WAIT_MS_MAX as u64);
        read(&f.partition, f.offset, 0)?; // an offset out of range fails the call, not the stream
        let (offset, f) = (f.offset, Arc::new(f));
        let stream = follow(offset, self.shutdown.clone(), move |offset, mut shutdown| {
            let f = f.clone();
            async move {
                let r = long_poll_records(&f, offset, &mut shutdown).await?;
                Ok((r.next_offset, !r.records.is_empty(), r))
            }
        });
        Ok(Response::new(stream))
    }
}

/// Follows a partition's tail for `Subscribe` and `ReadStream`: `poll`
/// long-polls from an offset and answers the next offset, whether the
/// response has anything to send, and the response. Empty ones are not
/// sent (the position still moves past control batches); the stream ends
/// on an error (sent last), at shutdown, or when the client goes away.
fn follow<R, Fut>(
    mut offset: u64,
    mut shutdown: watch::Receiver<bool>,
    poll: impl Fn(u64, watch::Receiver<bool>) -> Fut + Send + 'static,
) -> Pin<Box<dyn Stream<Item = std::result::Result<R, Status>> + Send>>
where
    R: Send + 'static,
    Fut: std::future::Future<Output = Result<(u64, bool, R)>> + Send,
{
    let (tx, rx) = mpsc::channel(SUBSCRIBE_BUFFER);
    tokio::spawn(async move {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let (next, has_data, resp) = match poll(offset, shutdown.clone()).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(Status::from(e))).await;
                    return;
                }
            };
            offset = next;
            if !has_data {
                if tx.is_closed() {
                    return;
                }
                continue;
            }
            tokio::select! {
                sent = tx.send(Ok(resp)) => if sent.is_err() { return },
                _ = shutdown.changed() => return,
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}
