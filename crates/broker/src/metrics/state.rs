//! The families read from the broker's state at each scrape: cluster and
//! partition health, per-partition offsets, sizes, traffic and Raft, the
//! consumer groups this broker coordinates, and the data directory's disk.
//!
//! Per-partition offsets and Raft term are reported by the partition's
//! leader only, so summing over brokers counts each partition once; sizes
//! and traffic by every replica that has them (each is about that broker's
//! disk and clients). Group offsets and lag come from the group's
//! coordinator; lag needs the partition's high watermark, which it knows
//! when it holds a replica of the partition (always on a single broker;
//! in a cluster a partition with no replica on the coordinator gets a
//! committed offset but no lag series).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::broker::Broker;
use crate::groups::{Coordinator, Snapshot};
use crate::partition::Partition;

/// Records read per scrape to find the age of a group's oldest unconsumed
/// record (`fjord_group_lag_seconds`): one batch each (up to the batch
/// limit, 8 MiB by default, decoded when compressed). 1,000 bounds a
/// scrape's extra reading at a few hundred MB in the worst case and a few
/// MB in the usual one (batches of tens of KiB); lagging partitions beyond
/// it get no lag-seconds series in that scrape.
const LAG_SECONDS_READS_MAX: usize = 1_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupStateLabels {
    group: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupPartitionLabels {
    group: String,
    topic: String,
    partition: u32,
}

/// Reads the broker's state when encoded.
#[derive(Debug)]
pub(super) struct StateCollector {
    broker: Arc<Broker>,
    coordinator: Arc<Coordinator>,
}

impl StateCollector {
    pub(super) fn new(broker: Arc<Broker>, coordinator: Arc<Coordinator>) -> StateCollector {
        StateCollector { broker, coordinator }
    }
}

/// One family: its descriptor, then one sample per label set.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, M)>,
) -> Result<(), std::fmt::Error> {
    let mut samples = samples.into_iter().peekable();
    let Some((_, first)) = samples.peek() else { return Ok(()) };
    let mut e = encoder.encode_descriptor(name, help, None, first.metric_type())?;
    for (labels, m) in samples {
        m.encode(e.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A family of one sample without labels.
fn single<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    m: M,
) -> Result<(), std::fmt::Error> {
    let e = encoder.encode_descriptor(name, help, None, m.metric_type())?;
    m.encode(e)
}

/// One local replica, read once per scrape.
struct Replica {
    labels: PartitionLabels,
    p: Arc<Partition>,
    leader: u64,
    is_leader: bool,
    stopped: bool,
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let b = &self.broker;
        let me = b.config.broker_id;
        let replicas: Vec<Replica> = b
            .topics()
            .iter()
            .flat_map(|t| {
                t.partitions.iter().enumerate().filter_map(|(i, p)| {
                    let p = p.clone()?;
                    let s = p.group.status();
                    let labels = PartitionLabels { topic: t.meta.name.clone(), partition: i as u32 };
                    let (leader, is_leader, stopped) = (s.leader(), s.is_leader(), s.is_stopped());
                    Some(Replica { labels, p, leader, is_leader, stopped })
                })
            })
            .collect();
        self.cluster(&mut encoder, &replicas, me)?;
        self.partitions(&mut encoder, &replicas)?;
        self.groups(&mut encoder, self.coordinator.snapshot())?;
        self.disk(&mut encoder)
    }
}

impl StateCollector {
    fn cluster(
        &self,
        e: &mut DescriptorEncoder,
        replicas: &[Replica],
        me: u64,
    ) -> Result<(), std::fmt::Error> {
        let b = &self.broker;
        // As DescribeCluster: the metadata leader hears from every broker;
        // elsewhere only this broker is known to be up.
        let in_sync = b.metadata_status().in_sync();
        let alive = b.peers.keys().filter(|&&id| id == me || in_sync.contains(&id)).count();
        single(
            e,
            "fjord_brokers",
            "Brokers in the cluster's configuration",
            ConstGauge::new(b.peers.len() as i64),
        )?;
        single(
            e,
            "fjord_brokers_alive",
            "Brokers known to be up (all of them as seen by the metadata leader; take the max over brokers)",
            ConstGauge::new(alive as i64),
        )?;
        let led = replicas.iter().filter(|r| r.is_leader).count();
        let under = replicas
            .iter()
            .filter(|r| r.is_leader && r.p.group.status().in_sync().len() < r.p.replicas.len())
            .count();
        let unavailable = replicas.iter().filter(|r| r.leader == 0 || r.stopped).count();
        single(
            e,
            "fjord_partitions",
            "Partition replicas on this broker",
            ConstGauge::new(replicas.len() as i64),
        )?;
        single(e, "fjord_partitions_led", "Partitions this broker leads", ConstGauge::new(led as i64))?;
        single(
            e,
            "fjord_partitions_under_replicated",
            "Partitions this broker leads with fewer in-sync replicas than replicas",
            ConstGauge::new(under as i64),
        )?;
        single(
            e,
            "fjord_partitions_unavailable",
            "Replicas on this broker whose partition has no known leader, or whose replica stopped",
            ConstGauge::new(unavailable as i64),
        )
    }

    fn partitions(&self, e: &mut DescriptorEncoder, replicas: &[Replica]) -> Result<(), std::fmt::Error> {
        let leaders = || replicas.iter().filter(|r| r.is_leader);
        let gauge =
            |f: fn(&Replica) -> u64| move |r: &Replica| (r.labels.clone(), ConstGauge::new(f(r) as i64));
        family(
            e,
            "fjord_partition_log_start_offset",
            "First offset kept (reported by the leader)",
            leaders().map(gauge(|r| r.p.log.log_start_offset())),
        )?;
        family(
            e,
            "fjord_partition_high_watermark",
            "Offset after the last committed record (reported by the leader)",
            leaders().map(gauge(|r| r.p.high_watermark())),
        )?;
        family(
            e,
            "fjord_partition_size_bytes",
            "Bytes of the replica's log on this broker",
            replicas.iter().map(gauge(|r| r.p.log.size_bytes())),
        )?;
        family(
            e,
            "fjord_raft_term",
            "Raft term of the partition (reported by the leader)",
            leaders().map(gauge(|r| r.p.group.status().term())),
        )?;
        family(
            e,
            "fjord_raft_leader_changes",
            "Leader changes this broker's replica saw since it started",
            replicas
                .iter()
                .map(|r| (r.labels.clone(), ConstCounter::new(r.p.group.status().leader_changes()))),
        )?;
        let mut traffic = |name: &str, help: &str, f: fn(&crate::partition::Traffic) -> u64| {
            let samples = replicas.iter().filter_map(|r| {
                let v = f(&r.p.traffic);
                (r.is_leader || v > 0).then(|| (r.labels.clone(), ConstCounter::new(v)))
            });
            family(e, name, help, samples)
        };
        use std::sync::atomic::Ordering::Relaxed;
        traffic("fjord_records_produced", "Records acknowledged to producers", |t| {
            t.records_produced.load(Relaxed)
        })?;
        traffic("fjord_bytes_produced", "Batch bytes acknowledged to producers", |t| {
            t.bytes_produced.load(Relaxed)
        })?;
        traffic("fjord_records_fetched", "Records returned to consumers", |t| {
            t.records_fetched.load(Relaxed)
        })?;
        traffic(
            "fjord_bytes_fetched",
            "Bytes returned to consumers (batch bytes for Fetch, key and value bytes for Read)",
            |t| t.bytes_fetched.load(Relaxed),
        )?;
        traffic("fjord_scrub_bytes", "Bytes of closed segments scrubs re-read on this replica", |t| {
            t.scrubbed_bytes.load(Relaxed)
        })?;
        traffic("fjord_scrub_damaged_ranges", "Damaged ranges scrubs found on this replica", |t| {
            t.damaged_ranges_found.load(Relaxed)
        })?;
        traffic("fjord_scrub_repaired_ranges", "Damaged ranges repaired from another replica", |t| {
            t.damaged_ranges_repaired.load(Relaxed)
        })?;
        family(
            e,
            "fjord_compaction_records_removed",
            "Records (and expired tombstones) compaction removed from this replica",
            replicas.iter().filter_map(|r| {
                let c = &r.p.compaction;
                (c.passes.load(Relaxed) > 0)
                    .then(|| (r.labels.clone(), ConstCounter::new(c.records_removed.load(Relaxed))))
            }),
        )?;
        family(
            e,
            "fjord_compaction_last_run_timestamp_seconds",
            "When compaction last ran on this replica",
            replicas.iter().filter_map(|r| {
                let ms = r.p.compaction.last_ms.load(Relaxed);
                (ms > 0).then(|| (r.labels.clone(), ConstGauge::new(ms / 1000)))
            }),
        )?;
        family(
            e,
            "fjord_partition_damaged_ranges",
            "Ranges of this replica a scrub found damaged and not yet repaired (not served)",
            replicas.iter().map(gauge(|r| r.p.log.damaged().len() as u64)),
        )
    }
}

impl StateCollector {
    fn groups(&self, e: &mut DescriptorEncoder, snap: Snapshot) -> Result<(), std::fmt::Error> {
        family(
            e,
            "fjord_group_members",
            "Members of each consumer group this broker coordinates",
            snap.groups
                .iter()
                .map(|g| (GroupLabels { group: g.group.clone() }, ConstGauge::new(g.members as i64))),
        )?;
        family(
            e,
            "fjord_group_state",
            "State of each consumer group (1 for its current state)",
            snap.groups
                .iter()
                .map(|g| (GroupStateLabels { group: g.group.clone(), state: g.state }, ConstGauge::new(1))),
        )?;
        let mut committed = Vec::new();
        let mut lag = Vec::new();
        let mut lag_seconds = Vec::new();
        let mut reads_left = LAG_SECONDS_READS_MAX;
        for g in &snap.groups {
            for (topic, partition, offset) in &g.offsets {
                let labels = GroupPartitionLabels {
                    group: g.group.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                };
                committed.push((labels.clone(), ConstGauge::new(*offset as i64)));
                let Ok(p) = self.broker.partition(topic, *partition) else { continue };
                if !p.group.status().is_serving() {
                    continue; // only the leader knows the commit point
                }
                let records = p.high_watermark().saturating_sub(*offset);
                lag.push((labels.clone(), ConstGauge::new(records as i64)));
                if records > 0 {
                    if reads_left == 0 {
                        continue;
                    }
                    reads_left -= 1;
                }
                if let Some(ms) = self.coordinator.lag_ms(topic, *partition, *offset, records) {
                    lag_seconds.push((labels, ConstGauge::new(ms as f64 / 1000.0)));
                }
            }
        }
        family(
            e,
            "fjord_group_committed_offset",
            "Committed offset (next to read) of a group in a partition",
            committed,
        )?;
        family(
            e,
            "fjord_group_lag",
            "Records a group has not consumed: high watermark minus committed offset",
            lag,
        )?;
        family(
            e,
            "fjord_group_lag_seconds",
            "Age of the oldest record a group has not consumed (0 when caught up)",
            lag_seconds,
        )?;
        single(
            e,
            "fjord_group_offsets_truncated",
            "1 when this scrape left committed offsets out (over its limit)",
            ConstGauge::new(i64::from(snap.truncated)),
        )?;
        single(
            e,
            "fjord_group_shards_skipped",
            "Offsets partitions skipped by this scrape because they were busy",
            ConstGauge::new(snap.busy_shards as i64),
        )
    }

    fn disk(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(st) = rustix::fs::statvfs(&self.broker.config.data_dir) else { return Ok(()) };
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        let total = st.f_blocks.saturating_mul(st.f_frsize);
        single(
            e,
            "fjord_disk_free_bytes",
            "Bytes free for the broker on the data directory's filesystem",
            ConstGauge::new(free as i64),
        )?;
        single(
            e,
            "fjord_disk_total_bytes",
            "Size of the data directory's filesystem",
            ConstGauge::new(total as i64),
        )
    }
}
