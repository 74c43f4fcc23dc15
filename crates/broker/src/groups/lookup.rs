//! Offsets of data partitions the coordinator needs (log ends for lag,
//! targets of an offset reset): read locally where this broker leads the
//! partition, else asked of its leader with a `ListOffsets` call.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use fjord_proto::pb;
use fjord_proto::pb::consumer_client::ConsumerClient;
use tonic::transport::{Channel, Endpoint};

use super::limits::REMOTE_CALL_TIMEOUT_MS;
use crate::broker::{blocking, Broker};
use crate::{Error, Result};

/// Where `ResetOffsets` moves a group's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResetTo {
    Earliest,
    Latest,
    /// The first offset at or after this time (ms since the epoch), else the end.
    Timestamp(i64),
    /// This offset, clamped to the partition's log.
    Offset(u64),
}

/// (offset for `spec`, log start, high watermark) of a partition.
async fn list_offsets(
    broker: &Broker,
    channels: &Mutex<HashMap<String, Channel>>,
    topic: &str,
    partition: u32,
    spec: pb::OffsetSpec,
    timestamp_ms: i64,
) -> Result<(u64, u64, u64)> {
    let t = broker.topic(topic)?;
    if let Some(Some(p)) = t.partitions.get(partition as usize) {
        if p.group.status().is_serving() {
            let (hw, start) = (p.high_watermark(), p.log.log_start_offset());
            let offset = match spec {
                pb::OffsetSpec::Earliest => start,
                pb::OffsetSpec::Timestamp => {
                    let log = p.log.clone();
                    blocking(move || Ok(log.offset_for_timestamp(timestamp_ms, hw)?)).await?.unwrap_or(hw)
                }
                _ => hw,
            };
            return Ok((offset, start, hw));
        }
    }
    if partition >= t.meta.partitions() {
        return Err(Error::UnknownPartition {
            topic: topic.to_owned(),
            partition,
            count: t.meta.partitions(),
        });
    }
    let leader = broker.leader_of(&t, partition);
    let addr = match broker.peers.get(&leader) {
        Some(a) if leader != broker.config.broker_id => a.clone(),
        _ => return Err(Error::Unavailable(format!("{topic}/{partition} has no serving leader; retry"))),
    };
    let channel = {
        let mut map = channels.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&addr) {
            Some(c) => c.clone(),
            None => {
                let c = Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| Error::Unavailable(format!("broker address {addr:?}: {e}")))?
                    .connect_timeout(Duration::from_millis(REMOTE_CALL_TIMEOUT_MS))
                    .connect_lazy();
                map.insert(addr.clone(), c.clone());
                c
            }
        }
    };
    let req = pb::ListOffsetsRequest { topic: topic.to_owned(), partition, spec: spec as i32, timestamp_ms };
    let mut client = ConsumerClient::new(channel);
    let call = client.list_offsets(req);
    let resp = tokio::time::timeout(Duration::from_millis(REMOTE_CALL_TIMEOUT_MS), call)
        .await
        .map_err(|_| {
            Error::Unavailable(format!("broker {leader} did not answer for {topic}/{partition}; retry"))
        })?
        .map_err(|s| Error::Unavailable(format!("broker {leader} for {topic}/{partition}: {}", s.message())))?
        .into_inner();
    Ok((resp.offset, resp.log_start_offset, resp.high_watermark))
}

/// The high watermark of a partition.
pub(crate) async fn end_offset(
    broker: &Broker,
    channels: &Mutex<HashMap<String, Channel>>,
    topic: &str,
    partition: u32,
) -> Result<u64> {
    Ok(list_offsets(broker, channels, topic, partition, pb::OffsetSpec::Latest, 0).await?.2)
}

/// Refuses a committed offset above a partition's high watermark with
/// OUT_OF_RANGE naming the valid range: a group positioned past the end
/// would show a lag of 0 and skip every record written until the log
/// reaches it. (Below the log start is allowed, as in Kafka: retention may
/// remove what a slow group has not read, and its reader then resets.)
///
/// A commit at or below this broker's own replica's high watermark needs
/// no call, since no replica's high watermark is ahead of the leader's;
/// only an offset above it asks the leader, so members' routine commits
/// cost nothing extra.
pub(crate) async fn check_committable(
    broker: &Broker,
    channels: &Mutex<HashMap<String, Channel>>,
    topic: &str,
    partition: u32,
    offset: u64,
) -> Result<()> {
    let t = broker.topic(topic)?;
    if let Some(Some(p)) = t.partitions.get(partition as usize) {
        if offset <= p.high_watermark() {
            return Ok(());
        }
    }
    let (_, start, end) = list_offsets(broker, channels, topic, partition, pb::OffsetSpec::Latest, 0).await?;
    if offset > end {
        return Err(Error::OffsetOutOfRange {
            topic: topic.to_owned(),
            partition,
            offset,
            log_start: start,
            log_end: end,
        });
    }
    Ok(())
}

/// The offset a reset moves a partition to.
pub(crate) async fn resolve(
    broker: &Broker,
    channels: &Mutex<HashMap<String, Channel>>,
    topic: &str,
    partition: u32,
    to: ResetTo,
) -> Result<u64> {
    let (spec, ts) = match to {
        ResetTo::Earliest => (pb::OffsetSpec::Earliest, 0),
        ResetTo::Latest | ResetTo::Offset(_) => (pb::OffsetSpec::Latest, 0),
        ResetTo::Timestamp(ts) => (pb::OffsetSpec::Timestamp, ts),
    };
    let (offset, start, end) = list_offsets(broker, channels, topic, partition, spec, ts).await?;
    Ok(match to {
        ResetTo::Offset(o) => o.clamp(start, end),
        _ => offset,
    })
}
