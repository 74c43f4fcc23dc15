//! Domain types returned by [`crate::Client`], converted from `pb` at the edge
//! so callers never see generated protobuf types.

use std::collections::BTreeMap;

use bytes::Bytes;
use fjord_codec::{records, split_batches, verify_crc, Record};
use fjord_proto::pb;

use crate::{Error, Result};

/// Per-topic settings; `None` means the broker default (on create) or
/// "not reported" (on describe).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopicSettings {
    /// Delete closed segments whose newest record is older than this many ms; -1 keeps forever.
    pub retention_ms: Option<i64>,
    /// Delete the oldest closed segments while a partition exceeds this many bytes; -1 for no limit.
    pub retention_bytes: Option<i64>,
    /// Roll the active segment at this many bytes.
    pub segment_bytes: Option<u64>,
    /// Roll the active segment when its first record is older than this many ms.
    pub segment_ms: Option<i64>,
    /// "producer" (store batches as sent, the default) or "none", "lz4",
    /// "zstd": the broker stores every batch of the topic in that codec.
    pub compression: Option<String>,
    /// "delete" (the default), "compact" (keep the last record of each
    /// key; records need a key) or "compact,delete".
    pub cleanup_policy: Option<String>,
    /// On a compacted topic, ms a tombstone that is last of its key is kept.
    pub delete_retention_ms: Option<i64>,
    /// Share of a partition's closed bytes, 0 to 1, written since its last
    /// compaction at which it is compacted again.
    pub min_cleanable_dirty_ratio: Option<f64>,
    /// ms; records younger than this are never compacted.
    pub min_compaction_lag_ms: Option<i64>,
    /// ms; a partition whose oldest uncompacted record is older is
    /// compacted whatever its dirty ratio; -1 for no limit.
    pub max_compaction_lag_ms: Option<i64>,
}

impl From<TopicSettings> for pb::TopicConfig {
    fn from(s: TopicSettings) -> Self {
        pb::TopicConfig {
            retention_ms: s.retention_ms,
            retention_bytes: s.retention_bytes,
            segment_bytes: s.segment_bytes,
            segment_ms: s.segment_ms,
            compression: s.compression,
            cleanup_policy: s.cleanup_policy,
            delete_retention_ms: s.delete_retention_ms,
            min_cleanable_dirty_ratio: s.min_cleanable_dirty_ratio,
            min_compaction_lag_ms: s.min_compaction_lag_ms,
            max_compaction_lag_ms: s.max_compaction_lag_ms,
        }
    }
}

impl From<pb::TopicConfig> for TopicSettings {
    fn from(c: pb::TopicConfig) -> Self {
        TopicSettings {
            retention_ms: c.retention_ms,
            retention_bytes: c.retention_bytes,
            segment_bytes: c.segment_bytes,
            segment_ms: c.segment_ms,
            compression: c.compression,
            cleanup_policy: c.cleanup_policy,
            delete_retention_ms: c.delete_retention_ms,
            min_cleanable_dirty_ratio: c.min_cleanable_dirty_ratio,
            min_compaction_lag_ms: c.min_compaction_lag_ms,
            max_compaction_lag_ms: c.max_compaction_lag_ms,
        }
    }
}

/// One line of a topic listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSummary {
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    pub partitions: u32,
    /// Replicas per partition.
    pub replication_factor: u32,
}

/// A topic with its effective settings and the state of each partition.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicDescription {
    /// Topic name.
    pub name: String,
    /// Replicas per partition.
    pub replication_factor: u32,
    /// Effective settings, broker defaults filled in.
    pub settings: TopicSettings,
    /// Partitions in partition order.
    pub partitions: Vec<PartitionDescription>,
}

/// State of one partition as the answering broker sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionDescription {
    /// Partition number.
    pub partition: u32,
    /// Broker id of the leader, if one is known.
    pub leader: Option<u64>,
    /// Broker ids holding a replica.
    pub replicas: Vec<u64>,
    /// Replicas caught up with the leader.
    pub in_sync_replicas: Vec<u64>,
    /// First offset still in the log.
    pub log_start_offset: u64,
    /// Offset the next appended record will get.
    pub log_end_offset: u64,
    /// Offsets below it are committed and readable.
    pub high_watermark: u64,
    /// Bytes on disk in the answering broker's replica.
    pub size_bytes: u64,
    /// Ranges the answering broker's replica holds damaged and refuses to
    /// serve until repaired (`fjord topic scrub`).
    pub damaged: Vec<DamagedRange>,
    /// On a compacted topic: share of the replica's closed bytes written
    /// since its last compaction.
    pub dirty_ratio: f64,
    /// When the replica was last compacted, ms since the epoch, if it was
    /// since its broker started.
    pub last_compaction_ms: Option<i64>,
}

/// A broker as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// Broker id.
    pub id: u64,
    /// Address clients connect to, `host:port`.
    pub address: String,
    /// Whether the cluster currently considers it alive.
    pub alive: bool,
}

/// The answer to `describe_cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    /// The broker that answered.
    pub broker_id: u64,
    /// Leader of the metadata group, if any.
    pub controller_id: Option<u64>,
    /// Every broker.
    pub brokers: Vec<BrokerInfo>,
}

/// Brokers and partition leaders, as used for routing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// Every broker, by id.
    pub brokers: BTreeMap<u64, BrokerInfo>,
    /// Every topic, by name.
    pub topics: BTreeMap<String, TopicMetadata>,
}

/// Partitions of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// Topic name.
    pub name: String,
    /// Partitions in partition order.
    pub partitions: Vec<PartitionMetadata>,
}

/// Leader and replicas of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// Partition number.
    pub partition: u32,
    /// Broker id of the leader, if one is known.
    pub leader: Option<u64>,
    /// Broker ids holding a replica.
    pub replicas: Vec<u64>,
}

impl Metadata {
    /// Address of the leader of `topic`/`partition`.
    ///
    /// # Errors
    /// [`Error::UnknownTopic`] or [`Error::UnknownPartition`] if metadata does
    /// not know them, [`Error::Unavailable`] if the partition has no known
    /// leader or the leader's address is unknown.
    pub fn leader_address(&self, topic: &str, partition: u32) -> Result<&str> {
        let p = self.partition(topic, partition)?;
        let unavailable =
            || Error::Unavailable { message: format!("no known leader for {topic}/{partition}") };
        let leader = p.leader.ok_or_else(unavailable)?;
        self.brokers.get(&leader).map(|b| b.address.as_str()).ok_or_else(unavailable)
    }

    /// Metadata of one partition.
    ///
    /// # Errors
    /// [`Error::UnknownTopic`] or [`Error::UnknownPartition`].
    pub fn partition(&self, topic: &str, partition: u32) -> Result<&PartitionMetadata> {
        let t = self.topic(topic)?;
        t.partitions.iter().find(|p| p.partition == partition).ok_or_else(|| Error::UnknownPartition {
            message: format!(
                "topic {topic} has no partition {partition} ({} partitions)",
                t.partitions.len()
            ),
        })
    }

    /// Metadata of one topic.
    ///
    /// # Errors
    /// [`Error::UnknownTopic`].
    pub fn topic(&self, topic: &str) -> Result<&TopicMetadata> {
        self.topics.get(topic).ok_or_else(|| Error::UnknownTopic { message: format!("topic {topic}") })
    }
}

impl From<pb::BrokerInfo> for BrokerInfo {
    fn from(b: pb::BrokerInfo) -> Self {
        BrokerInfo { id: b.id, address: b.address, alive: b.alive }
    }
}

impl From<pb::MetadataResponse> for Metadata {
    fn from(m: pb::MetadataResponse) -> Self {
        let brokers = m.brokers.into_iter().map(|b| (b.id, BrokerInfo::from(b))).collect();
        let topics = m
            .topics
            .into_iter()
            .map(|t| {
                let mut partitions: Vec<_> = t
                    .partitions
                    .into_iter()
                    .map(|p| PartitionMetadata {
                        partition: p.partition,
                        leader: nonzero(p.leader),
                        replicas: p.replicas,
                    })
                    .collect();
                partitions.sort_by_key(|p| p.partition);
                (t.name.clone(), TopicMetadata { name: t.name, partitions })
            })
            .collect();
        Metadata { brokers, topics }
    }
}

impl From<pb::TopicDescription> for TopicDescription {
    fn from(t: pb::TopicDescription) -> Self {
        let mut partitions: Vec<_> = t
            .partitions
            .into_iter()
            .map(|p| PartitionDescription {
                partition: p.partition,
                leader: nonzero(p.leader),
                replicas: p.replicas,
                in_sync_replicas: p.in_sync_replicas,
                log_start_offset: p.log_start_offset,
                log_end_offset: p.log_end_offset,
                high_watermark: p.high_watermark,
                size_bytes: p.size_bytes,
                damaged: p.damaged.into_iter().map(DamagedRange::from).collect(),
                dirty_ratio: p.dirty_ratio,
                last_compaction_ms: (p.last_compaction_ms > 0).then_some(p.last_compaction_ms),
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        TopicDescription {
            name: t.name,
            replication_factor: t.replication_factor,
            settings: t.config.map(TopicSettings::from).unwrap_or_default(),
            partitions,
        }
    }
}

impl From<pb::DescribeClusterResponse> for ClusterDescription {
    fn from(c: pb::DescribeClusterResponse) -> Self {
        ClusterDescription {
            broker_id: c.broker_id,
            controller_id: nonzero(c.controller_id),
            brokers: c.brokers.into_iter().map(BrokerInfo::from).collect(),
        }
    }
}

fn nonzero(id: u64) -> Option<u64> {
    (id != 0).then_some(id)
}

/// Which offset [`crate::Client::list_offsets`] looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The high watermark: the offset the next record will get.
    Latest,
    /// The first offset whose record timestamp is at or after this time (ms
    /// since the Unix epoch); the high watermark if there is none.
    Timestamp(i64),
}

/// The answer to `list_offsets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    /// The offset asked for.
    pub offset: u64,
    /// First offset still in the log.
    pub log_start_offset: u64,
    /// Offsets below it are committed and readable.
    pub high_watermark: u64,
}

/// The answer to one `fetch`: whole batches as the broker stored them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Consecutive whole batches; the first may start before the requested offset.
    pub batches: Bytes,
    /// Offset to fetch next.
    pub next_offset: u64,
    /// Offsets below it are committed and readable.
    pub high_watermark: u64,
    /// First offset still in the log.
    pub log_start_offset: u64,
}

impl Fetched {
    /// The user records at or after `from`, in offset order: each batch's
    /// CRC is checked, control batches and records below `from` are skipped.
    ///
    /// # Errors
    /// [`Error::Codec`] if a batch is malformed or fails its CRC.
    pub fn records(&self, from: u64) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        for item in split_batches(self.batches.clone()) {
            let (header, batch) = item.map_err(Error::Codec)?;
            verify_crc(&batch, &header).map_err(Error::Codec)?;
            if header.is_control() || header.next_offset() <= from {
                continue;
            }
            for rec in records(&batch).map_err(Error::Codec)? {
                let rec = rec.map_err(Error::Codec)?;
                if rec.offset >= from {
                    out.push(rec);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_codec::{stamp_batch, BatchBuilder};

    fn batch(base: u64, values: &[&str]) -> Vec<u8> {
        let mut b = BatchBuilder::new(1 << 20);
        for v in values {
            b.push(None, Some(v.as_bytes()), &[], 1000).unwrap();
        }
        let mut bytes = b.finish().to_vec();
        stamp_batch(&mut bytes, base, 1, 1);
        bytes
    }

    #[test]
    fn records_skip_control_batches_and_offsets_below_start() {
        let mut all = batch(0, &["a", "b", "c"]);
        let mut control = BatchBuilder::control(fjord_codec::format::CONTROL_NOOP, b"", 1000).to_vec();
        stamp_batch(&mut control, 3, 1, 2);
        all.extend_from_slice(&control);
        all.extend_from_slice(&batch(4, &["d"]));
        let f = Fetched { batches: Bytes::from(all), next_offset: 5, high_watermark: 5, log_start_offset: 0 };
        let got: Vec<(u64, Bytes)> =
            f.records(1).unwrap().into_iter().map(|r| (r.offset, r.value.unwrap())).collect();
        assert_eq!(got, vec![(1, "b".into()), (2, "c".into()), (4, "d".into())]);
    }

    #[test]
    fn records_reject_a_bad_crc() {
        let mut bytes = batch(0, &["a"]);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let f =
            Fetched { batches: Bytes::from(bytes), next_offset: 1, high_watermark: 1, log_start_offset: 0 };
        let err = f.records(0).unwrap_err();
        assert!(matches!(err, Error::Codec(fjord_codec::Error::CrcMismatch { .. })), "{err:?}");
    }

    #[test]
    fn leader_lookup() {
        let m = Metadata::from(pb::MetadataResponse {
            brokers: vec![pb::BrokerInfo { id: 1, address: "a:1".into(), alive: true }],
            topics: vec![pb::TopicMetadata {
                name: "t".into(),
                partitions: vec![
                    pb::PartitionMetadata { partition: 1, leader: 0, replicas: vec![1] },
                    pb::PartitionMetadata { partition: 0, leader: 1, replicas: vec![1] },
                ],
            }],
        });
        assert_eq!(m.leader_address("t", 0).unwrap(), "a:1");
        assert!(matches!(m.leader_address("t", 1), Err(Error::Unavailable { .. })));
        assert!(matches!(m.leader_address("t", 2), Err(Error::UnknownPartition { .. })));
        assert!(matches!(m.leader_address("u", 0), Err(Error::UnknownTopic { .. })));
        assert_eq!(m.topics["t"].partitions[0].partition, 0);
    }
}

/// What a scrub found on one replica of a partition ([`crate::Client::scrub_topic`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaScrub {
    /// The broker holding the replica.
    pub broker: u64,
    /// The partition.
    pub partition: u32,
    /// Closed segments, bytes and batches checked.
    pub segments: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Batches that passed.
    pub batches: u64,
    /// Damaged ranges found, repaired or not.
    pub damaged: Vec<DamagedRange>,
    /// Offset-index entries that do not name the batch they point at.
    pub index_damage: Vec<String>,
    /// Why the replica could not be scrubbed, if it could not.
    pub error: Option<String>,
}

/// A range a scrub found damaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRange {
    /// First damaged offset.
    pub start_offset: u64,
    /// The offset after the range.
    pub end_offset: u64,
    /// Its length on the replica.
    pub bytes: u64,
    /// What failed.
    pub reason: String,
    /// Replaced with another replica's good copy.
    pub repaired: bool,
    /// Why it was not, if it was not.
    pub repair_error: Option<String>,
}

impl From<pb::DamagedRange> for DamagedRange {
    fn from(d: pb::DamagedRange) -> Self {
        DamagedRange {
            start_offset: d.start_offset,
            end_offset: d.end_offset,
            bytes: d.bytes,
            reason: d.reason,
            repaired: d.repaired,
            repair_error: (!d.repair_error.is_empty()).then_some(d.repair_error),
        }
    }
}

impl From<pb::ReplicaScrub> for ReplicaScrub {
    fn from(r: pb::ReplicaScrub) -> Self {
        let some = |s: String| (!s.is_empty()).then_some(s);
        ReplicaScrub {
            broker: r.broker,
            partition: r.partition,
            segments: r.segments,
            bytes: r.bytes,
            batches: r.batches,
            damaged: r.damaged.into_iter().map(DamagedRange::from).collect(),
            index_damage: r.index_damage,
            error: some(r.error),
        }
    }
}
