//! Record-level reads (`Read`, `ReadStream`): the committed batches a
//! `Fetch` would return, checked (CRC) and decoded into records, with
//! control batches and records below the start skipped.
//!
//! Decoding costs the broker CPU that a batch-level consumer spends itself;
//! it is bounded per call by `max_records` (at most `READ_RECORDS_MAX`)
//! and by the bytes read (at most `FETCH_BYTES_MAX`).

use std::sync::Arc;
use std::time::Duration;

use fjord_proto::limits::{READ_RECORDS_DEFAULT, READ_RECORDS_MAX};
use fjord_proto::pb;
use tokio::sync::watch;
use tokio::time::Instant;

use super::consumer::{read, resolve_spec};
use crate::broker::Broker;
use crate::config::{FETCH_BYTES_DEFAULT, FETCH_BYTES_MAX, FETCH_WAIT_MS_MAX};
use crate::partition::Partition;
use crate::{Error, Result};

/// A read's parameters, checked, with its start resolved to an offset.
pub(crate) struct ReadParams {
    pub(crate) partition: Arc<Partition>,
    pub(crate) offset: u64,
    pub(crate) max_records: usize,
    pub(crate) max_bytes: usize,
    pub(crate) max_wait: Duration,
}

impl ReadParams {
    /// Checks `req` and resolves where it starts.
    pub(crate) async fn new(broker: &Broker, req: &pb::ReadRequest) -> Result<ReadParams> {
        crate::topics::validate_topic_name(&req.topic)
            .map_err(|e| Error::InvalidArgument(format!("topic: {e}")))?;
        if req.max_records > READ_RECORDS_MAX {
            return Err(Error::InvalidArgument(format!(
                "max_records {} exceeds the limit of {READ_RECORDS_MAX} (READ_RECORDS_MAX)",
                req.max_records
            )));
        }
        if req.max_bytes > FETCH_BYTES_MAX {
            return Err(Error::InvalidArgument(format!(
                "max_bytes {} exceeds the limit of {FETCH_BYTES_MAX}",
                req.max_bytes
            )));
        }
        if req.max_wait_ms > FETCH_WAIT_MS_MAX {
            return Err(Error::InvalidArgument(format!(
                "max_wait_ms {} exceeds the limit of {FETCH_WAIT_MS_MAX}",
                req.max_wait_ms
            )));
        }
        let partition = broker.partition(&req.topic, req.partition)?;
        let offset = match pb::OffsetSpec::try_from(req.start) {
            Ok(pb::OffsetSpec::Unspecified) => req.offset,
            Ok(spec) => resolve_spec(&partition, spec, req.timestamp_ms).await?,
            Err(_) => {
                return Err(Error::InvalidArgument(format!(
                    "start must be UNSPECIFIED (read from `offset`), EARLIEST, LATEST or TIMESTAMP, got {}",
                    req.start
                )))
            }
        };
        let max_records = match req.max_records {
            0 => READ_RECORDS_DEFAULT,
            n => n,
        } as usize;
        let max_bytes = match req.max_bytes {
            0 => FETCH_BYTES_DEFAULT,
            n => n,
        } as usize;
        Ok(ReadParams {
            partition,
            offset,
            max_records,
            max_bytes,
            max_wait: Duration::from_millis(req.max_wait_ms as u64),
        })
    }
}

/// Decoded records at `offset`, at most `max_records`, from at most
/// `max_bytes` of batches (at least one batch). Every batch's CRC is
/// checked before it is decoded: a stored batch that fails is refused
/// with a typed error naming where it is, never served.
fn decode(p: &Partition, offset: u64, max_records: usize, max_bytes: usize) -> Result<pb::ReadResponse> {
    let fetched = read(p, offset, max_bytes)?;
    let mut records = Vec::new();
    let mut next_offset = fetched.next_offset;
    let corrupt = |at: u64| {
        move |source| Error::CorruptData { topic: p.topic.clone(), partition: p.id, offset: at, source }
    };
    'batches: for part in fjord_codec::split_batches(fetched.batches) {
        let (h, batch) = part.map_err(corrupt(offset))?;
        fjord_codec::verify_crc(&batch, &h).map_err(corrupt(h.base_offset))?;
        if h.is_control() || h.last_offset() < offset {
            continue;
        }
        for r in fjord_codec::records(&batch).map_err(corrupt(h.base_offset))? {
            let r = r.map_err(corrupt(h.base_offset))?;
            if r.offset < offset {
                continue;
            }
            if records.len() == max_records {
                next_offset = r.offset;
                break 'batches;
            }
            records.push(pb::ConsumerRecord {
                partition: p.id,
                offset: r.offset,
                timestamp_ms: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r.headers.into_iter().map(|h| pb::Header { key: h.key, value: h.value }).collect(),
            });
        }
    }
    Ok(pb::ReadResponse {
        topic: fetched.topic,
        partition: p.id,
        records,
        next_offset,
        high_watermark: fetched.high_watermark,
        log_start_offset: fetched.log_start_offset,
    })
}

/// Reads from `offset`, waiting up to `max_wait` for a first record.
/// Batches without records for the reader (control batches) move the
/// position on without ending the wait.
pub(crate) async fn long_poll_records(
    f: &ReadParams,
    mut offset: u64,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<pb::ReadResponse> {
    let deadline = Instant::now() + f.max_wait;
    let mut hw = f.partition.watch_hw();
    loop {
        hw.borrow_and_update();
        let p = f.partition.clone();
        let (max_records, max_bytes) = (f.max_records, f.max_bytes);
        // Decompressing and decoding up to 16 MiB is CPU work: off the
        // async threads, as the log's own blocking reads are.
        let resp = crate::broker::blocking(move || decode(&p, offset, max_records, max_bytes)).await?;
        let done = !resp.records.is_empty() || Instant::now() >= deadline || *shutdown.borrow();
        if done {
            let bytes = resp
                .records
                .iter()
                .map(|r| r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len()))
                .sum();
            f.partition.traffic.fetched(offset, resp.next_offset, bytes);
            return Ok(resp);
        }
        if resp.next_offset > offset {
            offset = resp.next_offset;
            continue;
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
