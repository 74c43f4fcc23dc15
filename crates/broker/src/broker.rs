//! The broker's state: the cluster metadata (applied from the metadata Raft
//! group's log), the partition replicas this broker holds, the routing of
//! Raft messages to their groups, and topic creation and deletion.
//!
//! Topic changes go through the metadata group: the broker that leads it
//! proposes a command, every broker applies the committed log in order
//! (`apply_loop`) and creates or deletes its own replicas. A single broker
//! is a cluster of one and takes the same path.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fjord_codec::BatchBuilder;
use fjord_proto::pb;
use fjord_replication::{Ack, GroupConfig, GroupHandle, GroupStore, Message};
use fjord_storage::{FlushPolicy, Log, LogConfig};
use futures::StreamExt;
use tokio::sync::watch;

use crate::config::{BrokerConfig, PARTITIONS_MAX, TOPICS_MAX};
use crate::meta::{assign, Change, Command, MetaState, TopicMeta, METADATA_GROUP};
use crate::partition::{Partition, Peers};
use crate::topics::{validate_topic_name, TopicSettings};
use crate::transport::{Faults, PeerTransport};
use crate::{Error, Result};

/// Directory under the data directory that holds partition logs.
const TOPICS_DIR: &str = "topics";
/// Directory under the data directory that holds the metadata log.
const METADATA_DIR: &str = "metadata";
/// Segment size of the metadata log: it is small and never deleted.
const METADATA_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// How long a topic creation waits for its partitions to elect leaders
/// before it answers anyway (clients retry NOT_LEADER meanwhile).
const CREATE_WAIT_FOR_LEADERS: Duration = Duration::from_secs(10);
/// How often a wait for elections (after a create, at start-up) looks
/// again: elections take tens of milliseconds at the least, and the
/// checks read only atomics.
const ELECTION_POLL_INTERVAL: Duration = Duration::from_millis(5);
/// How long an admin change waits for its command to be committed.
const ADMIN_COMMIT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long it then waits for this broker to apply it (opening thousands
/// of partition replicas takes a while).
const ADMIN_APPLY_TIMEOUT: Duration = Duration::from_secs(120);
/// Bytes of metadata log read per step while applying it.
const METADATA_READ_BYTES: usize = 1024 * 1024;
/// Partition replicas opened at once when a topic is created or replayed.
const PARTITION_OPENS_PARALLEL: usize = 32;
/// First wait before a replica that could not be opened is tried again;
/// it doubles up to [`PARTITION_REOPEN_BACKOFF_MAX`].
const PARTITION_REOPEN_BACKOFF_MIN: Duration = Duration::from_secs(1);
const PARTITION_REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A topic and the replicas of its partitions on this broker.
#[derive(Debug)]
pub(crate) struct Topic {
    pub(crate) meta: TopicMeta,
    /// `None` where this broker holds no replica of the partition.
    pub(crate) partitions: Vec<Option<Arc<Partition>>>,
    /// Where record-level publishes put their next keyless records
    /// (round-robin over requests).
    pub(crate) next_keyless: AtomicU32,
}

/// The state shared by every service.
#[derive(Debug)]
pub(crate) struct Broker {
    pub(crate) config: BrokerConfig,
    /// Broker id → client address, this broker included.
    pub(crate) peers: Peers,
    pub(crate) faults: Arc<Faults>,
    /// Free space of the data directory against `min_free_bytes`.
    pub(crate) disk: crate::disk::DiskGuard,
    transport: Arc<PeerTransport>,
    metadata: GroupHandle,
    metadata_log: Arc<Log>,
    state: RwLock<MetaState>,
    /// Offset of the metadata log applied so far.
    applied: watch::Sender<u64>,
    /// End of the metadata log when this broker started: what it held
    /// then (committed as far as the cluster knows, maybe not as far as
    /// its persisted commit index says) must be applied before it answers
    /// metadata, or a restarted broker describes topics as they were
    /// before changes it already holds (a partition count, a setting).
    replay_to: u64,
    /// Set once the metadata is applied that far; never cleared.
    caught_up: std::sync::atomic::AtomicBool,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Raft group id → handle, for routing messages from peers.
    groups: RwLock<HashMap<u64, GroupHandle>>,
    /// Serializes admin changes proposed by this broker.
    admin: tokio::sync::Mutex<()>,
    /// Held while a metadata change is applied here, and while a replica
    /// that failed to open is retried, so a retry never races the
    /// deletion of its topic.
    applying: tokio::sync::Mutex<()>,
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Broker {
    /// Opens the data directory, starts the metadata group and the task
    /// that applies its log (which reopens this broker's partition
    /// replicas as it replays the topics that exist). The lowest broker id
    /// campaigns for metadata leadership at once.
    pub(crate) async fn start(
        config: BrokerConfig,
        peers: Peers,
        faults: Arc<Faults>,
    ) -> Result<Arc<Broker>> {
        let me = config.broker_id;
        let dir = config.data_dir.join(METADATA_DIR);
        let log_config = LogConfig {
            segment_bytes: METADATA_SEGMENT_BYTES,
            retention_ms: None,
            retention_bytes: None,
            flush: FlushPolicy::Always,
            fsync_observer: config.fsync_observer.clone(),
            ..LogConfig::default()
        };
        let log = {
            let dir = dir.clone();
            blocking(move || {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| Error::Metadata { path: dir.clone(), reason: e.to_string() })?;
                Ok(Arc::new(Log::open(&dir, log_config)?))
            })
            .await?
        };
        let disk = crate::disk::DiskGuard::new(config.data_dir.clone(), config.min_free_bytes)?;
        let transport = Arc::new(PeerTransport::start(me, &peers, faults.clone()));
        let voters: Vec<u64> = peers.keys().copied().collect();
        let store =
            GroupStore::open(log.clone(), voters.clone()).map_err(crate::partition::replication_err)?;
        let metadata = fjord_replication::start(
            GroupConfig::new(METADATA_GROUP, me, voters.clone()),
            store,
            transport.clone(),
        )
        .map_err(crate::partition::replication_err)?;
        if voters.first() == Some(&me) {
            metadata.campaign();
        }
        let replay_to = log.log_end_offset();
        let broker = Arc::new(Broker {
            config,
            peers,
            faults,
            disk,
            transport,
            metadata: metadata.clone(),
            metadata_log: log,
            state: RwLock::new(MetaState::default()),
            applied: watch::Sender::new(0),
            replay_to,
            caught_up: std::sync::atomic::AtomicBool::new(false),
            topics: RwLock::new(BTreeMap::new()),
            groups: RwLock::new(HashMap::from([(METADATA_GROUP, metadata)])),
            admin: tokio::sync::Mutex::new(()),
            applying: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(apply_loop(broker.clone()));
        Ok(broker)
    }

    /// Records that a peer's traffic arrived (liveness for quiescence).
    pub(crate) fn heard_from(&self, peer: u64, incarnation: u64) {
        self.transport.heard_from(peer, incarnation);
    }

    /// Hands a peer's Raft message to its group (dropped if the group is
    /// not here yet: Raft resends once the replica exists).
    pub(crate) fn step(&self, group: u64, msg: Message) {
        if let Some(h) = self.groups.read().unwrap_or_else(|p| p.into_inner()).get(&group) {
            h.step(msg);
        }
    }

    /// A topic by name. Every RPC that names a topic comes through here (or
    /// [`Broker::partition`]), so a name that could never exist is refused
    /// with INVALID_ARGUMENT in one place rather than per handler; only on
    /// a miss, since a name that is found is valid.
    pub(crate) fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        let found = self.topics.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned();
        match found {
            Some(t) => Ok(t),
            None => {
                validate_topic_name(name)?;
                self.check_metadata_loaded()?;
                Err(Error::UnknownTopic(name.to_owned()))
            }
        }
    }

    /// Fails (retriably) until this broker has applied the cluster metadata
    /// as far as the metadata group has committed it, so that a broker
    /// that just started does not answer "unknown topic" or an empty list
    /// for topics it has not replayed yet.
    pub(crate) fn check_metadata_loaded(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        let status = self.metadata.status();
        let hw = status.high_watermark();
        let applied = status.leader() != 0 && *self.applied.borrow() >= hw;
        // What the log held at start is committed once the high watermark
        // passes it, or was an uncommitted tail if the log was cut below it.
        let replayed = hw >= self.replay_to || self.metadata_log.log_end_offset() < self.replay_to;
        if applied && (replayed || self.caught_up.load(Ordering::Acquire)) {
            self.caught_up.store(true, Ordering::Release);
            Ok(())
        } else {
            Err(Error::Unavailable("this broker has not loaded the cluster metadata yet; retry".into()))
        }
    }

    pub(crate) fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// This broker's replica of a partition, or NOT_LEADER pointing at the
    /// partition's preferred replica when it holds none.
    pub(crate) fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        let t = self.topic(topic)?;
        self.partition_in(&t, partition)
    }

    /// [`Broker::partition`] for a topic already looked up.
    pub(crate) fn partition_in(&self, t: &Topic, partition: u32) -> Result<Arc<Partition>> {
        let topic = &t.meta.name;
        match t.partitions.get(partition as usize) {
            None => Err(Error::UnknownPartition {
                topic: topic.to_owned(),
                partition,
                count: t.meta.partitions(),
            }),
            Some(Some(p)) => Ok(p.clone()),
            Some(None) if t.meta.assignment[partition as usize].contains(&self.config.broker_id) => {
                Err(Error::Unavailable(format!(
                    "partition {partition} of topic {topic} could not be opened on broker {}; \
                     it is being retried (see the broker's log)",
                    self.config.broker_id
                )))
            }
            Some(None) => {
                let leader = t.meta.assignment[partition as usize][0];
                Err(Error::NotLeader {
                    topic: topic.to_owned(),
                    partition,
                    leader,
                    leader_address: self.peers.get(&leader).cloned().unwrap_or_default(),
                })
            }
        }
    }

    /// The leader of a partition as far as this broker knows: its own
    /// replica's view (0 if unknown), or the preferred replica where it
    /// holds none.
    pub(crate) fn leader_of(&self, t: &Topic, partition: u32) -> u64 {
        match &t.partitions[partition as usize] {
            // 0 while an election runs: clients then ask again.
            Some(p) => p.group.status().leader(),
            None => t.meta.assignment[partition as usize][0],
        }
    }

    /// The metadata leader, for admin requests; fails with NOT_LEADER elsewhere.
    fn check_metadata_leader(&self) -> Result<()> {
        let status = self.metadata.status();
        if status.is_serving() {
            return Ok(());
        }
        let leader = status.leader();
        if leader == 0 || leader == self.config.broker_id {
            return Err(Error::Unavailable("the cluster has no metadata leader yet; retry".into()));
        }
        Err(Error::NotMetadataLeader {
            leader,
            leader_address: self.peers.get(&leader).cloned().unwrap_or_default(),
        })
    }

    /// Allocates an idempotent producer's id through the metadata group:
    /// the offset its command got in the metadata log, so ids are unique
    /// in the cluster and never reused, and nothing else needs storing.
    pub(crate) async fn init_producer(&self) -> Result<i64> {
        self.check_metadata_leader()?;
        let committed = self.propose_metadata(&Command::AllocateProducerId).await?;
        Ok(committed.base_offset as i64)
    }

    /// Proposes a metadata command and waits until this broker applied it.
    async fn propose_metadata(&self, cmd: &Command) -> Result<fjord_replication::Committed> {
        let json = serde_json::to_vec(cmd).map_err(|e| Error::Replication(e.to_string()))?;
        let mut b = BatchBuilder::new(fjord_codec::format::BATCH_LEN_MAX);
        b.push(None, Some(&json), &[], now_ms()).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let committed =
            tokio::time::timeout(ADMIN_COMMIT_TIMEOUT, self.metadata.propose(b.finish(), Ack::Quorum))
                .await
                .map_err(|_| Error::Timeout("the metadata change was not committed in time".into()))?
                .map_err(|e| match e {
                    fjord_replication::Error::NotLeader { leader } => Error::NotMetadataLeader {
                        leader,
                        leader_address: self.peers.get(&leader).cloned().unwrap_or_default(),
                    },
                    e => crate::partition::replication_err(e),
                })?;
        let mut applied = self.applied.subscribe();
        tokio::time::timeout(ADMIN_APPLY_TIMEOUT, applied.wait_for(|a| *a >= committed.next_offset))
            .await
            .map_err(|_| Error::Timeout("the metadata change was not applied in time".into()))?
            .map_err(|_| Error::Unavailable("the broker is shutting down".into()))?;
        Ok(committed)
    }

    /// Creates a topic through the metadata group and waits (bounded) for
    /// its partitions to elect leaders, so it can be produced to at once.
    pub(crate) async fn create_topic(&self, req: pb::CreateTopicRequest) -> Result<Arc<Topic>> {
        validate_topic_name(&req.name)?;
        let partitions = match req.partitions {
            0 => self.config.default_partitions,
            n if n > PARTITIONS_MAX => {
                return Err(Error::InvalidArgument(format!(
                    "partitions {n} exceeds the limit of {PARTITIONS_MAX}"
                )))
            }
            n => n,
        };
        let brokers: Vec<u64> = self.peers.keys().copied().collect();
        let rf = match req.replication_factor {
            0 => self.config.default_replication_factor.min(brokers.len() as u32),
            rf => rf,
        };
        if rf as usize > brokers.len() {
            return Err(Error::InvalidArgument(format!(
                "replication factor {rf} exceeds the {} broker(s) in this cluster",
                brokers.len()
            )));
        }
        let settings = TopicSettings::from_request(req.config.as_ref())?;
        self.check_metadata_leader()?;
        let _admin = self.admin.lock().await;
        let offset = {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            if state.topics.contains_key(&req.name) {
                return Err(Error::TopicAlreadyExists(req.name));
            }
            if state.topics.len() >= TOPICS_MAX {
                return Err(Error::InvalidArgument(format!(
                    "the cluster already holds the limit of {TOPICS_MAX} topics"
                )));
            }
            state.next_group
        };
        let assignment = assign(&brokers, partitions, rf, offset);
        let here = assignment.iter().filter(|r| r.contains(&self.config.broker_id)).count() as u64;
        crate::fds::check_fd_budget(&self.config, &req.name, here)?;
        let cmd = Command::CreateTopic {
            name: req.name.clone(),
            replication_factor: rf,
            settings,
            assignment: assignment.clone(),
        };
        self.propose_metadata(&cmd).await?;
        let topic = self.topic(&req.name)?;
        if topic.meta.assignment != assignment {
            return Err(Error::TopicAlreadyExists(req.name));
        }
        self.wait_for_leaders(&topic, 0).await;
        tracing::info!(topic = %req.name, partitions, replication_factor = rf, "created topic");
        Ok(topic)
    }

    /// Waits (bounded) for leaders of partitions `from..` of `topic` that
    /// are hosted here, so that they can be produced to at once.
    async fn wait_for_leaders(&self, topic: &Topic, from: u32) {
        let deadline = tokio::time::Instant::now() + CREATE_WAIT_FOR_LEADERS;
        for p in topic.partitions.iter().skip(from as usize).flatten() {
            let settled = |s: &fjord_replication::GroupStatus| {
                let leader = s.leader();
                leader != 0 && (leader != self.config.broker_id || s.is_serving())
            };
            while !settled(p.group.status()) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(ELECTION_POLL_INTERVAL).await;
            }
        }
    }

    /// Raises a topic's partition count to `to` through the metadata group
    /// (Kafka's CreatePartitions): the new partitions are placed as if the
    /// topic had been created with `to`, every replica opens them as it
    /// applies the command, and producers' partitioners and consumer groups
    /// pick the new count up from metadata. Partitions are never removed:
    /// keyed records would move and offsets would be lost.
    pub(crate) async fn add_partitions(&self, name: &str, to: u32) -> Result<Arc<Topic>> {
        validate_topic_name(name)?;
        if to > PARTITIONS_MAX {
            return Err(Error::InvalidArgument(format!(
                "partitions {to} exceeds the limit of {PARTITIONS_MAX}"
            )));
        }
        self.check_metadata_leader()?;
        let _admin = self.admin.lock().await;
        let current = self.state.read().unwrap_or_else(|p| p.into_inner()).topics.get(name).cloned();
        let Some(current) = current else { return Err(Error::UnknownTopic(name.to_owned())) };
        let from = current.partitions();
        if to <= from {
            return Err(Error::InvalidArgument(format!(
                "partitions: topic {name} has {from} partitions and {to} is not more; \
                 partitions can be added, never removed"
            )));
        }
        let brokers: Vec<u64> = self.peers.keys().copied().collect();
        if current.replication_factor as usize > brokers.len() {
            return Err(Error::InvalidArgument(format!(
                "topic {name} has replication factor {} but the cluster has {} broker(s)",
                current.replication_factor,
                brokers.len()
            )));
        }
        let assignment =
            assign(&brokers, to, current.replication_factor, current.first_group).split_off(from as usize);
        let here = assignment.iter().filter(|r| r.contains(&self.config.broker_id)).count() as u64;
        crate::fds::check_fd_budget(&self.config, name, here)?;
        self.propose_metadata(&Command::AddPartitions { name: name.to_owned(), from, assignment }).await?;
        let topic = self.topic(name)?;
        self.wait_for_leaders(&topic, from).await;
        tracing::info!(topic = %name, from, to, "partitions added");
        Ok(topic)
    }

    /// Changes a topic's settings through the metadata group; every broker
    /// applies them to its replicas as it applies the command.
    pub(crate) async fn alter_topic(&self, name: &str, config: &pb::TopicConfig) -> Result<Arc<Topic>> {
        validate_topic_name(name)?;
        self.check_metadata_leader()?;
        let _admin = self.admin.lock().await;
        let current = self.state.read().unwrap_or_else(|p| p.into_inner()).topics.get(name).cloned();
        let Some(current) = current else { return Err(Error::UnknownTopic(name.to_owned())) };
        let settings = current.settings.altered(config)?;
        self.propose_metadata(&Command::AlterTopic { name: name.to_owned(), settings: settings.clone() })
            .await?;
        tracing::info!(topic = %name, ?settings, "altered topic");
        self.topic(name)
    }

    /// Deletes a topic through the metadata group.
    pub(crate) async fn delete_topic(&self, name: &str) -> Result<()> {
        validate_topic_name(name)?;
        if !self.state.read().unwrap_or_else(|p| p.into_inner()).topics.contains_key(name) {
            return Err(Error::UnknownTopic(name.to_owned()));
        }
        self.check_metadata_leader()?;
        let _admin = self.admin.lock().await;
        self.propose_metadata(&Command::DeleteTopic { name: name.to_owned() }).await?;
        tracing::info!(topic = %name, "deleted topic");
        Ok(())
    }

    fn partition_dir(&self, topic: &str, partition: u32) -> PathBuf {
        self.config.data_dir.join(TOPICS_DIR).join(topic).join(partition.to_string())
    }

    /// Applies one committed metadata change to this broker's replicas.
    async fn apply_change(self: &Arc<Self>, change: Change) -> Result<()> {
        match change {
            Change::None => {}
            Change::Created(meta) => {
                let (partitions, failed) = self.open_replicas(&meta, 0).await;
                self.insert_partitions(&meta, partitions.iter().flatten());
                let topic =
                    Arc::new(Topic { meta: meta.clone(), partitions, next_keyless: AtomicU32::new(0) });
                self.topics.write().unwrap_or_else(|p| p.into_inner()).insert(meta.name.clone(), topic);
                if !failed.is_empty() {
                    tokio::spawn(reopen_failed(self.clone(), meta, failed));
                }
            }
            Change::Grown { meta, from } => {
                let (added, failed) = self.open_replicas(&meta, from).await;
                self.insert_partitions(&meta, added.iter().flatten());
                let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
                let old = topics.get(&meta.name).cloned();
                let mut partitions = old.as_ref().map(|t| t.partitions.clone()).unwrap_or_default();
                partitions.resize(from as usize, None);
                partitions.extend(added);
                let next = old.map_or(0, |t| t.next_keyless.load(std::sync::atomic::Ordering::Relaxed));
                let topic = Topic { meta: meta.clone(), partitions, next_keyless: AtomicU32::new(next) };
                topics.insert(meta.name.clone(), Arc::new(topic));
                drop(topics);
                tracing::info!(topic = %meta.name, from, to = meta.partitions(), "added partitions");
                if !failed.is_empty() {
                    tokio::spawn(reopen_failed(self.clone(), meta, failed));
                }
            }
            Change::Altered(meta) => {
                let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
                if let Some(old) = topics.get(&meta.name).cloned() {
                    let log_config = meta.settings.log_config(self.config.flush);
                    for p in old.partitions.iter().flatten() {
                        // Validated before it was proposed; a refusal here
                        // would be a broker whose limits differ: keep the old.
                        if let Err(e) = p.log.set_config(&log_config) {
                            tracing::error!(topic = %meta.name, partition = p.id, error = %e, "cannot apply altered settings");
                        }
                    }
                    let next = old.next_keyless.load(std::sync::atomic::Ordering::Relaxed);
                    let topic = Topic {
                        meta: meta.clone(),
                        partitions: old.partitions.clone(),
                        next_keyless: AtomicU32::new(next),
                    };
                    topics.insert(meta.name.clone(), Arc::new(topic));
                }
            }
            Change::Deleted(meta) => {
                let topic = self.topics.write().unwrap_or_else(|p| p.into_inner()).remove(&meta.name);
                if let Some(topic) = topic {
                    for p in topic.partitions.iter().flatten() {
                        self.groups.write().unwrap_or_else(|p| p.into_inner()).remove(&meta.group(p.id));
                        p.close().await;
                    }
                }
                let dir = self.config.data_dir.join(TOPICS_DIR).join(&meta.name);
                blocking(move || match std::fs::remove_dir_all(&dir) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(Error::Metadata { path: dir, reason: e.to_string() }),
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Opens this broker's replicas of partitions `from..` of `meta`, in
    /// parallel (file creation and directory fsyncs overlap), a bounded
    /// number at a time. Returns one entry per partition from `from` on
    /// (`None` where this broker holds no replica or the open failed) and
    /// the partitions that failed.
    ///
    /// A replica that cannot be opened (no descriptors, a full or broken
    /// disk) stops neither the topic's other replicas nor the metadata log:
    /// it answers UNAVAILABLE and the caller has it retried in the
    /// background ([`reopen_failed`]) until it opens.
    async fn open_replicas(&self, meta: &TopicMeta, from: u32) -> (Vec<Option<Arc<Partition>>>, Vec<u32>) {
        let me = self.config.broker_id;
        let opens: Vec<_> = (from..meta.partitions())
            .map(|p| async move {
                match meta.assignment[p as usize].contains(&me) {
                    true => self.open_partition(meta, p).await.map(Some),
                    false => Ok(None),
                }
            })
            .collect();
        let opened: Vec<Result<Option<Arc<Partition>>>> =
            futures::stream::iter(opens).buffered(PARTITION_OPENS_PARALLEL).collect().await;
        let mut failed = Vec::new();
        let partitions = opened
            .into_iter()
            .zip(from..)
            .map(|(r, p)| {
                r.unwrap_or_else(|e| {
                    tracing::error!(topic = %meta.name, partition = p, error = %e,
                        "cannot open the partition replica; it is retried");
                    failed.push(p);
                    None
                })
            })
            .collect();
        (partitions, failed)
    }

    /// Opens (creating, the first time) this broker's replica of partition
    /// `p` of `meta`.
    async fn open_partition(&self, meta: &TopicMeta, p: u32) -> Result<Arc<Partition>> {
        let me = self.config.broker_id;
        let dir = self.partition_dir(&meta.name, p);
        let (name, group) = (meta.name.clone(), meta.group(p));
        let replicas = meta.assignment[p as usize].clone();
        let log_config = LogConfig {
            fsync_observer: self.config.fsync_observer.clone(),
            ..meta.settings.log_config(self.config.flush)
        };
        let (transport, peers) = (self.transport.clone(), self.peers.clone());
        blocking(move || Partition::open(&dir, &name, p, log_config, group, me, replicas, transport, peers))
            .await
            .map(Arc::new)
    }

    /// Routes peers' Raft messages for `partitions` of `meta` to them.
    fn insert_partitions<'a>(&self, meta: &TopicMeta, partitions: impl Iterator<Item = &'a Arc<Partition>>) {
        let mut groups = self.groups.write().unwrap_or_else(|p| p.into_inner());
        for p in partitions {
            groups.insert(meta.group(p.id), p.group.clone());
        }
    }

    /// Runs retention and interval flushes on every replica here, logging
    /// what was deleted; and hands leadership back to preferred replicas
    /// that have caught up.
    pub(crate) async fn maintain(&self) {
        if let Err(e) = self.disk.check() {
            tracing::warn!(error = %e, "cannot measure the data directory's free space");
        }
        self.compact_offsets_topic().await;
        let me = self.config.broker_id;
        for topic in self.topics() {
            for p in topic.partitions.iter().flatten() {
                match p.maintain(now_ms()).await {
                    Ok(deleted) => {
                        for d in deleted {
                            tracing::info!(
                                topic = %p.topic,
                                partition = p.id,
                                base_offset = d.base_offset,
                                next_offset = d.next_offset,
                                bytes = d.size,
                                "retention deleted a segment"
                            );
                        }
                    }
                    Err(e) => {
                        tracing::error!(topic = %p.topic, partition = p.id, error = %e, "maintenance failed")
                    }
                }
                crate::compaction::maybe_compact(p, &topic.meta.settings, now_ms());
                let preferred = p.replicas[0];
                if preferred != me && p.group.status().is_leader() {
                    p.group.transfer_leader(preferred);
                }
            }
        }
    }

    /// Makes an offsets topic created before it was compacted (storage-
    /// format.md §12) a compacted one, with the configured segment size;
    /// done by the metadata leader, retried at every tick until it is.
    async fn compact_offsets_topic(&self) {
        use crate::groups::{offsets_topic_config, OFFSETS_CLEANUP_POLICY, OFFSETS_TOPIC};
        let Ok(topic) = self.topic(OFFSETS_TOPIC) else { return };
        if topic.meta.settings.compacted() || !self.metadata.status().is_serving() {
            return;
        }
        let target = offsets_topic_config(&self.config);
        let change = pb::TopicConfig {
            cleanup_policy: target.cleanup_policy,
            segment_bytes: target.segment_bytes,
            ..Default::default()
        };
        match self.alter_topic(OFFSETS_TOPIC, &change).await {
            Ok(_) => tracing::info!(
                topic = OFFSETS_TOPIC,
                policy = OFFSETS_CLEANUP_POLICY,
                "offsets topic is now compacted"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "making the offsets topic compacted failed; retrying at the next tick")
            }
        }
    }

    /// Flushes every replica, for a graceful shutdown.
    pub(crate) async fn flush_all(&self) {
        let logs: Vec<Arc<Log>> = self
            .topics()
            .iter()
            .flat_map(|t| t.partitions.iter().flatten().map(|p| p.log.clone()).collect::<Vec<_>>())
            .chain(std::iter::once(self.metadata_log.clone()))
            .collect();
        let _ = blocking(move || {
            for log in logs {
                if let Err(e) = log.flush() {
                    tracing::error!(dir = %log.dir().display(), error = %e, "flush at shutdown failed");
                }
            }
            Ok(())
        })
        .await;
    }

    /// For a cluster of one: waits (bounded) until the metadata group leads,
    /// its log is applied and every partition serves, so that a broker that
    /// says it is listening can be used at once. A multi-broker cluster
    /// needs its peers for that and does not wait.
    pub(crate) async fn wait_ready(&self, timeout: Duration) {
        if self.peers.len() > 1 {
            return;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let ready = || {
            let status = self.metadata.status();
            status.is_serving()
                && *self.applied.borrow() >= status.high_watermark()
                && self
                    .topics()
                    .iter()
                    .all(|t| t.partitions.iter().flatten().all(|p| p.group.status().is_serving()))
        };
        while !ready() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(ELECTION_POLL_INTERVAL).await;
        }
    }

    /// The metadata group's live status.
    pub(crate) fn metadata_status(&self) -> &Arc<fjord_replication::GroupStatus> {
        self.metadata.status()
    }
}

/// Applies the committed metadata log, in order, as it grows.
async fn apply_loop(broker: Arc<Broker>) {
    let mut hw = broker.metadata.status().watch_high_watermark();
    let mut applied = broker.metadata_log.log_start_offset();
    loop {
        let target = *hw.borrow_and_update();
        while applied < target {
            let read = match broker.metadata_log.read(applied, METADATA_READ_BYTES, target) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "reading the metadata log failed; metadata is frozen");
                    return;
                }
            };
            for part in fjord_codec::split_batches(read.batches) {
                // Skipping a command would make this broker's metadata
                // diverge from the others': stop applying instead.
                let (h, batch) = match part
                    .and_then(|(h, b)| fjord_codec::verify_crc(&b, &h).map(|()| (h, b)))
                {
                    Ok(hb) => hb,
                    Err(e) => {
                        tracing::error!(offset = applied, error = %e, "corrupt metadata log; metadata is frozen");
                        return;
                    }
                };
                if h.is_control() {
                    continue;
                }
                let cmd = fjord_codec::records(&batch)
                    .ok()
                    .and_then(|mut r| r.next())
                    .and_then(|r| r.ok())
                    .and_then(|r| r.value)
                    .and_then(|v| serde_json::from_slice::<Command>(&v).ok());
                let Some(cmd) = cmd else {
                    tracing::error!(
                        offset = h.base_offset,
                        "unreadable metadata command; metadata is frozen"
                    );
                    return;
                };
                let change = broker.state.write().unwrap_or_else(|p| p.into_inner()).apply(cmd);
                let _applying = broker.applying.lock().await;
                if let Err(e) = broker.apply_change(change).await {
                    tracing::error!(error = %e, "applying a metadata change failed");
                }
            }
            applied = read.next_offset;
        }
        broker.applied.send_replace(applied);
        if hw.changed().await.is_err() || broker.metadata.status().is_stopped() {
            return;
        }
    }
}

/// Tries again, with a growing pause, to open the replicas of `meta` that
/// could not be opened when it was applied, until each opens or the topic
/// is deleted (or the broker stops).
async fn reopen_failed(broker: Arc<Broker>, meta: TopicMeta, mut failed: Vec<u32>) {
    let mut backoff = PARTITION_REOPEN_BACKOFF_MIN;
    while !failed.is_empty() {
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(PARTITION_REOPEN_BACKOFF_MAX);
        if broker.metadata.status().is_stopped() {
            return;
        }
        let _applying = broker.applying.lock().await;
        // Deleted (and perhaps created again) meanwhile: not ours any more.
        let current = broker.topics.read().unwrap_or_else(|p| p.into_inner()).get(&meta.name).cloned();
        let Some(current) = current.filter(|t| t.meta.first_group == meta.first_group) else { return };
        let mut partitions = current.partitions.clone();
        let mut still = Vec::new();
        for p in failed {
            match broker.open_partition(&current.meta, p).await {
                Ok(opened) => {
                    tracing::info!(topic = %meta.name, partition = p, "opened the partition replica on a retry");
                    partitions[p as usize] = Some(opened);
                }
                Err(e) => {
                    tracing::warn!(topic = %meta.name, partition = p, error = %e, retry_in = ?backoff,
                        "still cannot open the partition replica");
                    still.push(p);
                }
            }
        }
        broker.insert_partitions(&current.meta, partitions.iter().flatten());
        let next = current.next_keyless.load(std::sync::atomic::Ordering::Relaxed);
        let topic = Topic { meta: current.meta.clone(), partitions, next_keyless: AtomicU32::new(next) };
        broker.topics.write().unwrap_or_else(|p| p.into_inner()).insert(meta.name.clone(), Arc::new(topic));
        failed = still;
    }
}

/// Runs blocking file work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Unavailable(format!("worker thread failed: {e}")))?
}
