//! Record-level produce (`Publish`, `PublishStream`): the broker places
//! records on partitions and builds the batches a batch-level producer
//! would have sent, then takes the same path as `Produce`
//! ([`ProducerService::submit`]), so validation limits, idempotence,
//! acknowledgement and errors are the same.
//!
//! Placement: a record that names a partition goes there; a keyed record
//! goes where Kafka's default partitioner puts it (murmur2); keyless
//! records of one request all go to one partition this broker leads, and
//! the next request's to the next one (sticky round-robin, KIP-480 at
//! request granularity). Records of one partition keep their request
//! order, and become as few batches as `batch_bytes_max` allows.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use fjord_codec::format::{BATCH_HEADER_LEN, HEADER_KEY_LEN_MAX};
use fjord_codec::{BatchBuilder, Compression};
use fjord_proto::limits::PUBLISH_RECORDS_MAX;
use fjord_proto::pb;

use super::producer::{produce_timeout, wait_commit, ProducerService, Validated};
use crate::broker::{now_ms, Topic};
use crate::partition::Partition;
use crate::{Error, Result};

/// The idempotent-producer fields of a request, when it sets them.
#[derive(Clone, Copy)]
struct ProducerFields {
    id: i64,
    epoch: i16,
    base_sequence: i32,
}

/// Where each record of a request went: the batch (index into the
/// validated batches) and its offset delta within it.
struct Placement {
    batch: usize,
    delta: u32,
}

/// The batches being built for one partition.
struct PartitionBatches {
    partition: Arc<Partition>,
    /// Finished batches, in order; each becomes one entry of `Validated`.
    done: Vec<Bytes>,
    current: BatchBuilder,
    /// Records of this partition so far: the next record's sequence delta.
    records: u32,
}

impl ProducerService {
    /// Validates a publish request, builds its batches and submits them;
    /// the returned future yields one result per record.
    pub(crate) async fn publish_records(
        &self,
        req: pb::PublishRequest,
    ) -> Result<impl std::future::Future<Output = Result<pb::PublishResponse>> + Send + 'static> {
        let (validated, placements) = self.plan(&req)?;
        let acked = self.submit(validated, req.topic).await;
        let correlation_id = req.correlation_id;
        Ok(async move {
            let batches = acked.await?;
            let results = placements
                .into_iter()
                .map(|Placement { batch, delta }| {
                    let b = &batches[batch];
                    pb::RecordResult {
                        partition: b.partition,
                        offset: if b.error.is_none() { b.base_offset + delta as u64 } else { 0 },
                        error: b.error.clone(),
                        duplicate: b.duplicate,
                    }
                })
                .collect();
            Ok(pb::PublishResponse { correlation_id, results, error: None })
        })
    }

    /// Checks the whole request, places its records and builds the batches.
    /// Nothing is written if any record is refused.
    fn plan(&self, req: &pb::PublishRequest) -> Result<(Validated, Vec<Placement>)> {
        if req.records.is_empty() {
            return Err(Error::InvalidArgument("records: the request has none; send at least one".into()));
        }
        if req.records.len() > PUBLISH_RECORDS_MAX {
            return Err(Error::InvalidArgument(format!(
                "records: {} in one request exceed the limit of {PUBLISH_RECORDS_MAX} (PUBLISH_RECORDS_MAX)",
                req.records.len()
            )));
        }
        let wait_commit = wait_commit(req.acks)?;
        let timeout = produce_timeout(req.timeout_ms)?;
        let producer = producer_fields(req)?;
        crate::topics::validate_topic_name(&req.topic)
            .map_err(|e| Error::InvalidArgument(format!("topic: {e}")))?;
        crate::topics::check_user_topic(&req.topic)?;
        let topic = self.broker.topic(&req.topic)?;
        self.broker.disk.check_produce()?;
        let count = topic.meta.partitions();
        let max = self.broker.config.batch_bytes_max;
        let compression = topic.meta.settings.forced_compression().unwrap_or(Compression::None);
        let keyless = self.keyless_partition(&topic);
        let now = now_ms();

        // Partition index → its slot in `parts`, in order of first use.
        let mut slot_of: Vec<Option<usize>> = vec![None; count as usize];
        let mut parts: Vec<PartitionBatches> = Vec::new();
        // Per record: (slot, batch within the slot, delta within that batch).
        let mut at: Vec<(usize, usize, u32)> = Vec::with_capacity(req.records.len());
        for (i, r) in req.records.iter().enumerate() {
            let partition = match (r.partition, &r.key) {
                (Some(p), _) if p >= count => {
                    return Err(Error::InvalidArgument(format!(
                        "records[{i}].partition is {p}, but topic {:?} has {count} partition(s), 0 to {}",
                        req.topic,
                        count - 1
                    )))
                }
                (Some(p), _) => p,
                (None, Some(key)) => fjord_codec::partition_for_key(key, count),
                (None, None) => keyless,
            };
            if r.key.is_none() && topic.meta.settings.compacted() {
                return Err(Error::InvalidArgument(format!(
                    "records[{i}].key is unset; topic {:?} has cleanup_policy compact, which keeps the last \
                     record of each key, so every record needs one",
                    req.topic
                )));
            }
            if r.timestamp_ms < 0 {
                return Err(Error::InvalidArgument(format!(
                    "records[{i}].timestamp_ms is {}; it must be at least 0 (0 takes the broker's clock)",
                    r.timestamp_ms
                )));
            }
            let headers = headers_of(r, i)?;
            let (key, value) = (r.key.as_deref(), r.value.as_deref());
            let len = BatchBuilder::record_len(key, value, &headers);
            if BATCH_HEADER_LEN + len > max {
                return Err(Error::RecordTooLarge {
                    index: i,
                    size: len as u64,
                    max: (max - BATCH_HEADER_LEN) as u64,
                });
            }
            let slot = match slot_of[partition as usize] {
                Some(s) => s,
                None => {
                    parts.push(PartitionBatches {
                        partition: self.broker.partition_in(&topic, partition)?,
                        done: Vec::new(),
                        current: BatchBuilder::new(max).compression(compression),
                        records: 0,
                    });
                    slot_of[partition as usize] = Some(parts.len() - 1);
                    parts.len() - 1
                }
            };
            let ts = if r.timestamp_ms == 0 { now } else { r.timestamp_ms };
            let part = &mut parts[slot];
            if part.current.push(key, value, &headers, ts).is_err() {
                // The batch is full (the record alone fits, checked above).
                part.finish(max, compression, producer);
                part.current
                    .push(key, value, &headers, ts)
                    .map_err(|e| Error::InvalidArgument(format!("records[{i}]: {e}")))?;
            }
            at.push((slot, part.done.len(), part.current.record_count() - 1));
            part.records += 1;
        }

        // Lay the batches out slot by slot; a record's batch index is its
        // slot's first batch plus the batch within the slot.
        let mut first_batch = Vec::with_capacity(parts.len());
        let mut batches = Vec::new();
        for mut part in parts {
            part.finish(max, compression, producer);
            first_batch.push(batches.len());
            batches.extend(part.done.into_iter().map(|b| (part.partition.clone(), b)));
        }
        let placements = at
            .into_iter()
            .map(|(slot, batch, delta)| Placement { batch: first_batch[slot] + batch, delta })
            .collect();
        Ok((Validated { batches, wait_commit, timeout }, placements))
    }

    /// The partition keyless records of the next request go to: the next one
    /// in round-robin order that this broker leads, so that a client
    /// talking to any broker of a cluster can publish keyless records; the
    /// next one in order if this broker leads none (it then answers
    /// NOT_LEADER naming the leader).
    fn keyless_partition(&self, topic: &Topic) -> u32 {
        let count = topic.meta.partitions();
        let start = topic.next_keyless.fetch_add(1, Ordering::Relaxed) % count;
        (0..count)
            .map(|i| (start + i) % count)
            .find(|&p| topic.partitions[p as usize].as_ref().is_some_and(|r| r.group.status().is_leader()))
            .unwrap_or(start)
    }
}

impl PartitionBatches {
    /// Finishes the batch being built (if it has records) and starts another.
    fn finish(&mut self, max: usize, compression: Compression, producer: Option<ProducerFields>) {
        let next = BatchBuilder::new(max).compression(compression);
        let mut b = std::mem::replace(&mut self.current, next);
        if b.is_empty() {
            return;
        }
        if let Some(p) = producer {
            // Sequences count records of the partition from the request's
            // base sequence on (storage-format.md §2.4).
            let first = self.records - b.record_count();
            b.set_producer(p.id, p.epoch, fjord_codec::sequence_add(p.base_sequence, first));
        }
        self.done.push(b.finish());
    }
}

/// Headers as the batch builder takes them.
type HeaderRefs<'a> = Vec<(&'a str, Option<&'a [u8]>)>;

/// The record's headers, checked: keys at most `HEADER_KEY_LEN_MAX` bytes.
fn headers_of(r: &pb::Record, i: usize) -> Result<HeaderRefs<'_>> {
    r.headers
        .iter()
        .enumerate()
        .map(|(j, h)| {
            if h.key.len() > HEADER_KEY_LEN_MAX {
                return Err(Error::InvalidArgument(format!(
                    "records[{i}].headers[{j}].key is {} bytes; the limit is {HEADER_KEY_LEN_MAX}",
                    h.key.len()
                )));
            }
            Ok((h.key.as_str(), h.value.as_deref()))
        })
        .collect()
}

/// The idempotent-producer fields: all unset, or all set and in range, with
/// every record naming one partition (sequences are per partition).
fn producer_fields(req: &pb::PublishRequest) -> Result<Option<ProducerFields>> {
    let (id, epoch, seq) = match (req.producer_id, req.producer_epoch, req.base_sequence) {
        (None, None, None) => return Ok(None),
        (Some(id), Some(epoch), Some(seq)) => (id, epoch, seq),
        _ => {
            return Err(Error::InvalidArgument(
                "producer_id, producer_epoch and base_sequence: set all three (idempotent) or none".into(),
            ))
        }
    };
    if id < 0 {
        return Err(Error::InvalidArgument(format!("producer_id is {id}; it must come from InitProducer")));
    }
    let epoch = i16::try_from(epoch).ok().filter(|e| *e >= 0).ok_or_else(|| {
        Error::InvalidArgument(format!("producer_epoch is {epoch}; it must be 0 to {}", i16::MAX))
    })?;
    if seq < 0 {
        return Err(Error::InvalidArgument(format!("base_sequence is {seq}; it must be at least 0")));
    }
    let first = req.records.first().and_then(|r| r.partition);
    if first.is_none() || req.records.iter().any(|r| r.partition != first) {
        return Err(Error::InvalidArgument(
            "records[].partition: an idempotent publish (producer_id set) must name the same partition \
             in every record, since sequences are per partition"
                .into(),
        ));
    }
    Ok(Some(ProducerFields { id, epoch, base_sequence: seq }))
}
