//! One partition replica on this broker: its log and the Raft group that
//! replicates it.
//!
//! Every produce goes the same way, whatever the cluster size: the batch is
//! proposed to the partition's Raft group, appended once to the segment
//! log (which is the Raft log), fsynced as configured, and acknowledged at
//! commit, which is also when the high watermark that consumers read up to
//! advances. A single broker is a group of one.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use fjord_replication::{Ack, Committed, GroupConfig, GroupHandle, GroupStore, Transport};
use fjord_storage::{DeletedSegment, Log, LogConfig};
use tokio::sync::watch;

use crate::{Error, Result};

/// Batches [`Partition::timestamp_at`] reads past without finding a record
/// (control batches after each leader change, emptied compacted batches).
const TIMESTAMP_SCAN_BATCHES_MAX: usize = 64;

/// A partition replica on this broker.
#[derive(Debug)]
pub(crate) struct Partition {
    pub(crate) topic: String,
    pub(crate) id: u32,
    pub(crate) log: Arc<Log>,
    pub(crate) group: GroupHandle,
    /// Replicas, preferred leader first.
    pub(crate) replicas: Vec<u64>,
    /// Client addresses of the brokers, for leader hints.
    peers: Peers,
    /// Set when the topic is deleted; readers holding the partition stop.
    closed: AtomicBool,
    /// Records and bytes produced to and fetched from this replica, for metrics.
    pub(crate) traffic: Arc<Traffic>,
    /// Compaction of this replica (`compaction`).
    pub(crate) compaction: CompactionState,
}

/// Whether a compaction pass runs, and what passes did.
#[derive(Debug, Default)]
pub(crate) struct CompactionState {
    pub(crate) running: AtomicBool,
    pub(crate) passes: AtomicU64,
    pub(crate) bytes_read: AtomicU64,
    pub(crate) records_removed: AtomicU64,
    /// When the last pass ran, ms since the epoch; 0 if none has.
    pub(crate) last_ms: std::sync::atomic::AtomicI64,
}

/// Counters of one replica's traffic since it was opened: plain atomics on
/// the hot path, turned into Prometheus counters only when scraped.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    pub(crate) records_produced: AtomicU64,
    pub(crate) bytes_produced: AtomicU64,
    pub(crate) records_fetched: AtomicU64,
    pub(crate) bytes_fetched: AtomicU64,
    /// Bytes of closed segments scrubs read.
    pub(crate) scrubbed_bytes: AtomicU64,
    /// Damaged ranges scrubs found, and how many were repaired from a peer.
    pub(crate) damaged_ranges_found: AtomicU64,
    pub(crate) damaged_ranges_repaired: AtomicU64,
}

impl Traffic {
    /// Counts a fetch that returned `bytes` of batches ending at `next_offset`,
    /// asked from `offset` (the first batch may start before it: those
    /// records are not counted).
    pub(crate) fn fetched(&self, offset: u64, next_offset: u64, bytes: usize) {
        self.records_fetched.fetch_add(next_offset.saturating_sub(offset), Ordering::Relaxed);
        self.bytes_fetched.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

impl Partition {
    /// Opens (or creates) the replica's log in `dir` and starts its Raft
    /// group. The preferred replica campaigns at once, so a new or
    /// restarted partition has a leader without waiting for a timeout.
    /// Must run inside the tokio runtime (it spawns the group's task).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open<T: Transport>(
        dir: &Path,
        topic: &str,
        id: u32,
        log_config: LogConfig,
        group_id: u64,
        node_id: u64,
        replicas: Vec<u64>,
        transport: Arc<T>,
        peers: Peers,
    ) -> Result<Partition> {
        let flush = log_config.flush;
        let log = Arc::new(Log::open(dir, log_config)?);
        let store = GroupStore::open(log.clone(), replicas.clone())
            .map_err(|e| partition_err(topic, id, &peers, e))?;
        let mut config = GroupConfig::new(group_id, node_id, replicas.clone());
        config.flush = flush;
        let group = fjord_replication::start(config, store, transport)
            .map_err(|e| partition_err(topic, id, &peers, e))?;
        if replicas.first() == Some(&node_id) {
            group.campaign();
        }
        Ok(Partition {
            topic: topic.to_owned(),
            id,
            log,
            group,
            replicas,
            peers,
            closed: AtomicBool::new(false),
            traffic: Arc::default(),
            compaction: CompactionState::default(),
        })
    }

    /// The high watermark: offsets below it are committed.
    pub(crate) fn high_watermark(&self) -> u64 {
        self.group.status().high_watermark()
    }

    /// Timestamp of the first record at or after `offset` (below `hw`), for
    /// the age of a group's oldest unconsumed record: `Some(None)` when no
    /// record lies there, only control batches (a new leader's no-op,
    /// whose timestamp is a fixed 0, not a time) or batches compaction
    /// emptied. Reads one batch as a rule, at most
    /// [`TIMESTAMP_SCAN_BATCHES_MAX`]. `None` if it cannot be read
    /// (removed by retention meanwhile, damaged, or more batches without a
    /// record than that: a metric is no place to report those).
    pub(crate) fn timestamp_at(&self, offset: u64, hw: u64) -> Option<Option<i64>> {
        let mut at = offset;
        for _ in 0..TIMESTAMP_SCAN_BATCHES_MAX {
            if at >= hw {
                return Some(None);
            }
            // The log returns at least one whole batch whatever the limit.
            let read = self.log.read(at, 1, hw).ok()?;
            let (h, batch) = fjord_codec::split_batches(read.batches).next()?.ok()?;
            if !h.is_control() {
                if at == h.base_offset && !h.is_compacted() {
                    return Some(Some(h.first_timestamp));
                }
                let mut records = fjord_codec::records(&batch).ok()?;
                if let Some(ts) = records.find_map(|r| r.ok().filter(|r| r.offset >= at)).map(|r| r.timestamp)
                {
                    return Some(Some(ts));
                }
            }
            at = h.next_offset();
        }
        None
    }

    /// A receiver that sees every advance of the high watermark.
    pub(crate) fn watch_hw(&self) -> watch::Receiver<u64> {
        self.group.status().watch_high_watermark()
    }

    /// Marks the partition deleted, stops its group and wakes its readers.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.group.stop().await;
    }

    /// Whether the partition's topic was deleted.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Fails unless this replica may serve reads: it leads the group and
    /// knows the commit point.
    pub(crate) fn check_serving(&self) -> Result<()> {
        if self.is_closed() {
            return Err(Error::UnknownTopic(self.topic.clone()));
        }
        let status = self.group.status();
        if status.is_serving() {
            return Ok(());
        }
        if status.is_leader() {
            return Err(Error::Unavailable(format!(
                "{}/{} has just elected this broker leader and is not serving yet",
                self.topic, self.id
            )));
        }
        Err(self.not_leader(status.leader()))
    }

    /// This partition's replication error as the broker's.
    fn replication_err(&self, e: fjord_replication::Error) -> Error {
        partition_err(&self.topic, self.id, &self.peers, e)
    }

    /// The error that sends a client to `leader` (no hint if unknown).
    pub(crate) fn not_leader(&self, leader: u64) -> Error {
        not_leader(&self.topic, self.id, leader, &self.peers)
    }

    /// Enqueues a validated batch for the partition's log; the returned
    /// future resolves at commit (`acks=all`) or local append (`acks=leader`).
    pub(crate) async fn submit(
        &self,
        batch: Bytes,
        ack: Ack,
    ) -> Result<impl std::future::Future<Output = Result<Committed>> + Send + 'static> {
        if self.is_closed() {
            return Err(Error::UnknownTopic(self.topic.clone()));
        }
        let bytes = batch.len() as u64;
        let pending = self.group.submit(batch, ack).await.map_err(|e| self.replication_err(e))?;
        let (topic, id, peers) = (self.topic.clone(), self.id, self.peers.clone());
        let traffic = self.traffic.clone();
        Ok(async move {
            let acked = pending.await;
            if let Ok(c) = &acked {
                if !c.duplicate {
                    traffic.records_produced.fetch_add(c.next_offset - c.base_offset, Ordering::Relaxed);
                    traffic.bytes_produced.fetch_add(bytes, Ordering::Relaxed);
                }
            }
            acked.map_err(|e| partition_err(&topic, id, &peers, e))
        })
    }

    /// Retention and interval flushes, run by the group (see `GroupHandle::maintain`).
    pub(crate) async fn maintain(&self, now_ms: i64) -> Result<Vec<DeletedSegment>> {
        self.group.maintain(now_ms).await.map_err(|e| self.replication_err(e))
    }
}

/// Broker id → client address of every broker in the cluster.
pub(crate) type Peers = Arc<std::collections::BTreeMap<u64, String>>;

/// NOT_LEADER naming `leader`, or naming no one (0) when this replica does
/// not know it: a guess could send the client back here in a loop, while
/// no hint makes it refresh its metadata from another broker.
fn not_leader(topic: &str, partition: u32, leader: u64, peers: &Peers) -> Error {
    Error::NotLeader {
        topic: topic.to_owned(),
        partition,
        leader,
        leader_address: peers.get(&leader).cloned().unwrap_or_default(),
    }
}

/// Maps a replication error outside any partition (the metadata group,
/// opening a group) to the broker's.
pub(crate) fn replication_err(e: fjord_replication::Error) -> Error {
    use fjord_replication::Error as R;
    match e {
        R::NotLeader { leader } => {
            Error::Unavailable(format!("not the leader (the leader is broker {leader})"))
        }
        R::Stopped => Error::Unavailable("the raft group has stopped".into()),
        R::NotServing => Error::Unavailable("the new leader is not serving yet; retry".into()),
        R::Storage(s) => Error::Storage(s),
        e => Error::Replication(e.to_string()),
    }
}

/// Maps a replication error of partition `partition` of `topic` to the
/// broker's, naming the partition: the one mapping for every partition
/// path (produce, maintenance, open).
pub(crate) fn partition_err(
    topic: &str,
    partition: u32,
    peers: &Peers,
    e: fjord_replication::Error,
) -> Error {
    use fjord_replication::Error as R;
    let topic = topic.to_owned();
    match e {
        R::NotLeader { leader } => not_leader(&topic, partition, leader, peers),
        R::Stopped => Error::Unavailable(format!("{topic}/{partition}: the replica has stopped")),
        R::NotServing => {
            Error::Unavailable(format!("{topic}/{partition}: the new leader is not serving yet; retry"))
        }
        R::DuplicateInFlight => Error::Unavailable(format!(
            "{topic}/{partition}: an earlier copy of this batch is still being replicated; retry to get its offsets"
        )),
        R::OutOfOrderSequence { producer_id, expected, got } => {
            Error::OutOfOrderSequence { topic, partition, producer_id, expected, got }
        }
        R::ProducerFenced { producer_id, epoch, current_epoch } => {
            Error::ProducerFenced { topic, partition, producer_id, epoch, current_epoch }
        }
        R::Storage(source) => Error::PartitionStorage { topic, partition, source },
        e => Error::Replication(format!("{topic}/{partition}: {e}")),
    }
}
