//! The consumer-group coordinator.
//!
//! Groups live in the internal topic `__consumer_offsets`
//! ([`OFFSETS_TOPIC`], created through the metadata group on first use).
//! A group belongs to partition `crc32(group id) mod
//! OFFSETS_TOPIC_PARTITIONS`, and that partition's Raft leader is the
//! group's coordinator. Every change (membership, assignment, committed
//! offsets, deletion) is appended to the partition as a record and
//! committed by a quorum *before* it takes effect in memory and the RPC
//! answers; so the in-memory state is always what the log says.
//!
//! When this broker becomes the serving leader of an offsets partition it
//! rebuilds that partition's groups by replaying it from its start to the
//! high watermark ([`records`]) on a blocking thread; when it loses leadership (or its term
//! changes) it drops them, and the next leader does the same replay.
//! Members keep their ids and epochs across a coordinator change; their
//! sessions restart with the new coordinator. The topic is compacted by
//! key ([`records`] says how its keys make that safe), so the replay reads
//! about one record per group and partition rather than every commit.

pub(crate) mod assignor;
pub(crate) mod limits;
mod lookup;
pub(crate) mod records;
mod snapshot;
pub(crate) use snapshot::Snapshot;
pub(crate) mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fjord_proto::pb;
use fjord_replication::Ack;
use tokio::sync::{watch, MutexGuard};

use crate::broker::{now_ms, Broker, Topic};
use crate::error::quoted;
use crate::partition::Partition;
use crate::topics::{validate_topic_name, RESERVED_TOPIC_PREFIX};
use crate::{Error, Result};
use limits::*;
pub(crate) use lookup::ResetTo;
use records::{Entry, OffsetEntry};
use state::{Committed, Group, GroupState, Heartbeat, Reply, Tp};

/// The internal topic holding group state and committed offsets.
pub(crate) const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The offsets partition of a group: a stable hash, so every broker agrees
/// (storage-format.md §11).
pub(crate) fn partition_for(group: &str) -> u32 {
    crc32fast::hash(group.as_bytes()) % OFFSETS_TOPIC_PARTITIONS
}

/// The settings of [`OFFSETS_TOPIC`]: compacted by key (records.rs),
/// never deleted by age or size (group state is rebuilt by replay), in
/// segments of `offsets_segment_bytes`.
pub(crate) fn offsets_topic_config(config: &crate::BrokerConfig) -> pb::TopicConfig {
    pb::TopicConfig {
        retention_ms: Some(-1),
        retention_bytes: Some(-1),
        cleanup_policy: Some(OFFSETS_CLEANUP_POLICY.into()),
        segment_bytes: Some(config.offsets_segment_bytes),
        ..Default::default()
    }
}

/// Cleanup policy of [`OFFSETS_TOPIC`].
pub(crate) const OFFSETS_CLEANUP_POLICY: &str = "compact";

/// Checks a group id: 1 to [`GROUP_ID_LEN_MAX`] characters, no control characters.
pub(crate) fn validate_group_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidArgument("group_id must not be empty".into()));
    }
    check_text("group_id", id, GROUP_ID_LEN_MAX)
}

/// Checks an id that is stored and shown: at most `max` bytes, no control characters.
pub(crate) fn check_text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(Error::InvalidArgument(format!("{field} is {} bytes; the limit is {max}", value.len())));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!("{field} {value:?} contains a control character")));
    }
    Ok(())
}

/// The groups of one offsets partition, while this broker coordinates it.
#[derive(Debug, Default)]
struct Shard {
    /// Raft term in which the groups were loaded; `None` when not loaded.
    term: Option<u64>,
    groups: BTreeMap<String, Group>,
    /// Groups that records from before compaction still hold some of.
    legacy: records::Legacy,
    /// A replay in this term failed on a damaged log: answered at once
    /// rather than replayed again on every request.
    failed: Option<(u64, String)>,
}

impl Shard {
    fn unload(&mut self) {
        self.term = None;
        self.groups.clear();
        self.legacy.clear();
    }

    /// Fails if `group` is new and the shard already holds its limit of groups.
    fn check_room(&self, group: &str) -> Result<()> {
        if self.groups.contains_key(group) || self.groups.len() < GROUPS_PER_PARTITION_MAX {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "cannot create group {group:?}: its coordinator already holds the limit of \
             {GROUPS_PER_PARTITION_MAX} groups in this offsets partition; delete unused groups"
        )))
    }
}

/// A group as `DescribeGroup` shows it.
#[derive(Debug, Clone)]
pub(crate) struct Description {
    pub(crate) state: GroupState,
    pub(crate) group: Group,
    /// Per partition: (member assigned it or "", committed, log end offset if known).
    pub(crate) partitions: Vec<(Tp, String, Option<Committed>, Option<u64>)>,
}

/// The coordinator of the groups whose offsets partitions this broker leads.
#[derive(Debug)]
pub(crate) struct Coordinator {
    broker: Arc<Broker>,
    shards: Vec<tokio::sync::Mutex<Shard>>,
    /// Channels to other brokers, for their partitions' offsets.
    channels: Mutex<HashMap<String, tonic::transport::Channel>>,
    next_member: AtomicU64,
}

impl Coordinator {
    pub(crate) fn new(broker: Arc<Broker>) -> Arc<Coordinator> {
        Arc::new(Coordinator {
            broker,
            shards: (0..OFFSETS_TOPIC_PARTITIONS).map(|_| tokio::sync::Mutex::default()).collect(),
            channels: Mutex::default(),
            next_member: AtomicU64::new(0),
        })
    }

    /// This broker's id.
    pub(crate) fn broker_id(&self) -> u64 {
        self.broker.config.broker_id
    }

    /// The coordinator of `group`: (broker id, address, offsets partition).
    /// Creates the offsets topic if it does not exist yet (only the
    /// metadata leader can; elsewhere this fails with NOT_LEADER naming it).
    pub(crate) async fn find(&self, group: &str) -> Result<(u64, String, u32)> {
        validate_group_id(group)?;
        let topic = match self.broker.topic(OFFSETS_TOPIC) {
            Ok(t) => t,
            Err(Error::UnknownTopic(_)) => self.create_offsets_topic().await?,
            Err(e) => return Err(e),
        };
        let partition = partition_for(group);
        let leader = self.broker.leader_of(&topic, partition);
        let address = self.broker.peers.get(&leader).cloned().unwrap_or_default();
        if leader == 0 || address.is_empty() {
            return Err(Error::Unavailable(format!(
                "group {group:?} has no coordinator yet ({OFFSETS_TOPIC}/{partition} is electing a leader); retry"
            )));
        }
        Ok((leader, address, partition))
    }

    async fn create_offsets_topic(&self) -> Result<Arc<Topic>> {
        let req = pb::CreateTopicRequest {
            name: OFFSETS_TOPIC.into(),
            partitions: OFFSETS_TOPIC_PARTITIONS,
            replication_factor: 0, // the broker default (3) capped at the cluster size
            config: Some(offsets_topic_config(&self.broker.config)),
        };
        match self.broker.create_topic(req).await {
            Ok(t) => Ok(t),
            Err(Error::TopicAlreadyExists(_)) => self.broker.topic(OFFSETS_TOPIC),
            Err(e) => Err(e),
        }
    }

    /// This broker's offsets partition of `group`, if it is its serving
    /// leader; NOT_COORDINATOR (with a hint when known) otherwise.
    fn offsets_partition(&self, index: u32, group: &str) -> Result<Arc<Partition>> {
        let not_coordinator = |coordinator: u64| Error::NotCoordinator {
            group: group.to_owned(),
            coordinator,
            coordinator_address: self.broker.peers.get(&coordinator).cloned().unwrap_or_default(),
        };
        let topic = self.broker.topic(OFFSETS_TOPIC).map_err(|_| not_coordinator(0))?;
        let p = match self.broker.partition_in(&topic, index) {
            Ok(p) => p,
            Err(Error::NotLeader { leader, .. }) => return Err(not_coordinator(leader)),
            Err(e) => return Err(e),
        };
        let status = p.group.status();
        if status.is_serving() {
            return Ok(p);
        }
        if status.is_leader() {
            return Err(Error::Unavailable(format!("the coordinator of group {group:?} is starting; retry")));
        }
        let leader = status.leader();
        Err(not_coordinator(if leader == self.broker.config.broker_id { 0 } else { leader }))
    }

    /// Locks the shard of `group`, loading it first if this broker has
    /// just become its leader.
    async fn lock(&self, group: &str) -> Result<(Arc<Partition>, MutexGuard<'_, Shard>)> {
        validate_group_id(group)?;
        self.lock_at(partition_for(group), group).await
    }

    /// [`Coordinator::lock`] by partition; `group` names it in errors.
    async fn lock_at(&self, index: u32, group: &str) -> Result<(Arc<Partition>, MutexGuard<'_, Shard>)> {
        let p = self.offsets_partition(index, group)?;
        let mut shard = self.shards[index as usize].lock().await;
        // Leadership may have moved since the check above: load only for
        // a term in which this broker serves, or a follower's (possibly
        // stale) view would be answered from.
        let status = p.group.status();
        let term = status.term();
        if !status.is_serving() || status.term() != term {
            return Err(Error::Unavailable(format!("the coordinator of group {group:?} is changing; retry")));
        }
        if shard.term == Some(term) {
            return Ok((p, shard));
        }
        if let Some((t, e)) = &shard.failed {
            if *t == term {
                return Err(Error::Replication(e.clone()));
            }
        }
        shard.unload();
        let started = Instant::now();
        let hw = p.high_watermark();
        let log = p.log.clone();
        // The replay reads the partition from its start: off the async
        // threads, which Raft ticks and every other request share.
        let loaded = crate::broker::blocking(move || {
            let (mut groups, mut legacy) = (BTreeMap::new(), records::Legacy::new());
            let mut offset = log.log_start_offset();
            while offset < hw {
                let read = log.read(offset, LOAD_READ_BYTES, hw)?;
                if read.next_offset <= offset {
                    break;
                }
                records::replay(read.batches, &mut groups, &mut legacy)?;
                offset = read.next_offset;
            }
            Ok((groups, legacy))
        })
        .await;
        let (mut groups, legacy) = match loaded {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(partition = index, error = %e, "consumer groups could not be loaded");
                shard.failed = Some((term, e.to_string()));
                return Err(e);
            }
        };
        groups.retain(|_, g| !g.is_empty());
        let now = Instant::now();
        for g in groups.values_mut() {
            g.restart_sessions(now);
        }
        tracing::info!(
            partition = index,
            groups = groups.len(),
            bytes = hw,
            ms = started.elapsed().as_millis() as u64,
            "loaded consumer groups"
        );
        shard.groups = groups;
        shard.legacy = legacy;
        shard.term = Some(term);
        Ok((p, shard))
    }

    /// Appends records and waits for a quorum to commit them.
    async fn write(&self, p: &Partition, shard: &mut Shard, records: &[Entry]) -> Result<()> {
        let written = async {
            let batch = records::encode(records)?;
            let pending = p.submit(batch, Ack::Quorum).await?;
            match tokio::time::timeout(Duration::from_millis(WRITE_TIMEOUT_MS), pending).await {
                Ok(r) => r.map(|_| ()),
                Err(_) => Err(Error::Timeout(format!(
                    "group state was not committed within {WRITE_TIMEOUT_MS} ms; it may still be"
                ))),
            }
        }
        .await;
        if let Err(e) = written {
            // Whether it was written is unknown: reload from the log next time.
            shard.unload();
            return Err(match e {
                Error::NotLeader { leader, leader_address, .. } => Error::NotCoordinator {
                    group: records[0].group().to_owned(),
                    coordinator: leader,
                    coordinator_address: leader_address,
                },
                e => e,
            });
        }
        Ok(())
    }

    fn partition_count(&self, topic: &str) -> Option<u32> {
        if topic.starts_with(RESERVED_TOPIC_PREFIX) {
            return None;
        }
        self.broker.topic(topic).ok().map(|t| t.meta.partitions())
    }

    fn new_member_id(&self) -> String {
        let n = self.next_member.fetch_add(1, Ordering::Relaxed);
        // Unique across brokers and restarts: broker id, wall clock, counter.
        format!("{}-{:x}-{n}", self.broker.config.broker_id, now_ms())
    }

    /// Handles a heartbeat (join, stay, leave).
    pub(crate) async fn heartbeat(&self, group: &str, hb: Heartbeat) -> Result<Reply> {
        if let Some(t) = hb.topics.iter().find(|t| t.starts_with(RESERVED_TOPIC_PREFIX) || t.is_empty()) {
            return Err(Error::InvalidArgument(format!("topics: {t:?} cannot be subscribed to")));
        }
        let (p, mut shard) = self.lock(group).await?;
        shard.check_room(group)?;
        let mut g = shard.groups.get(group).cloned().unwrap_or_default();
        let before = g.meta.clone();
        let counts = |t: &str| self.partition_count(t);
        let result = g.heartbeat(group, hb, &counts, &|| self.new_member_id(), Instant::now());
        if g.meta != before {
            self.write(&p, &mut shard, &[Entry::meta(group, g.meta.clone())]).await?;
        }
        install(&mut shard, group, g);
        result
    }

    /// Commits offsets for a member (or, with member "" and epoch -1, for
    /// an admin while the group has no members).
    pub(crate) async fn commit(
        &self,
        group: &str,
        member: &str,
        epoch: i64,
        offsets: Vec<OffsetEntry>,
    ) -> Result<()> {
        if offsets.len() > REQUEST_PARTITIONS_MAX {
            return Err(Error::InvalidArgument(format!(
                "offsets: {} entries exceed the limit of {REQUEST_PARTITIONS_MAX}",
                offsets.len()
            )));
        }
        if let Some(o) = offsets.iter().find(|o| o.metadata.len() > OFFSET_METADATA_BYTES_MAX) {
            return Err(Error::InvalidArgument(format!(
                "offsets: metadata of {}/{} is {} bytes; the limit is {OFFSET_METADATA_BYTES_MAX}",
                quoted(&o.topic),
                o.partition,
                o.metadata.len()
            )));
        }
        if let Some(o) =
            offsets.iter().find(|o| o.topic.is_empty() || o.topic.starts_with(RESERVED_TOPIC_PREFIX))
        {
            return Err(Error::InvalidArgument(format!(
                "offsets: topic {} cannot have group offsets",
                quoted(&o.topic)
            )));
        }
        for o in &offsets {
            // Through `Broker::topic`, so a name that cannot exist is INVALID_ARGUMENT.
            let count = self.broker.topic(&o.topic)?.meta.partitions();
            if o.partition >= count {
                return Err(Error::UnknownPartition {
                    topic: o.topic.clone(),
                    partition: o.partition,
                    count,
                });
            }
        }
        for chunk in offsets.chunks(REMOTE_CALLS_IN_FLIGHT_MAX) {
            let checks: Vec<_> = chunk
                .iter()
                .map(|o| {
                    lookup::check_committable(&self.broker, &self.channels, &o.topic, o.partition, o.offset)
                })
                .collect();
            futures::future::try_join_all(checks).await?;
        }
        let (p, mut shard) = self.lock(group).await?;
        shard.check_room(group)?;
        let g = shard.groups.get(group).cloned().unwrap_or_default();
        let tps: Vec<Tp> = offsets.iter().map(|o| Tp::new(&o.topic, o.partition)).collect();
        g.check_commit(group, member, epoch, &tps)?;
        if offsets.is_empty() {
            return Ok(());
        }
        self.append_offsets(&p, &mut shard, group, g, offsets).await
    }

    async fn append_offsets(
        &self,
        p: &Partition,
        shard: &mut Shard,
        group: &str,
        mut g: Group,
        offsets: Vec<OffsetEntry>,
    ) -> Result<()> {
        let entries = Entry::offsets(group, now_ms(), offsets);
        self.write(p, shard, &entries).await?;
        let mut groups = BTreeMap::from([(group.to_owned(), std::mem::take(&mut g))]);
        for e in entries {
            e.apply(&mut groups, &mut shard.legacy);
        }
        let g = groups.remove(group).unwrap_or_default();
        install(shard, group, g);
        Ok(())
    }

    /// Committed offsets of `partitions` (all if empty); none for an unknown group.
    pub(crate) async fn fetch_offsets(&self, group: &str, partitions: &[Tp]) -> Result<Vec<(Tp, Committed)>> {
        if partitions.len() > REQUEST_PARTITIONS_MAX {
            return Err(Error::InvalidArgument(format!(
                "partitions: {} entries exceed the limit of {REQUEST_PARTITIONS_MAX}",
                partitions.len()
            )));
        }
        let (_, shard) = self.lock(group).await?;
        let Some(g) = shard.groups.get(group) else { return Ok(Vec::new()) };
        let want: BTreeSet<&Tp> = partitions.iter().collect();
        Ok(g.offsets
            .iter()
            .filter(|(tp, _)| want.is_empty() || want.contains(tp))
            .map(|(tp, c)| (tp.clone(), c.clone()))
            .collect())
    }

    /// A group's state, members, and per partition its committed offset and log end.
    pub(crate) async fn describe(&self, group: &str) -> Result<Description> {
        let g = {
            let (_, shard) = self.lock(group).await?;
            shard.groups.get(group).cloned().ok_or_else(|| Error::UnknownGroup(group.to_owned()))?
        };
        let mut tps: BTreeMap<Tp, String> = g.offsets.keys().map(|tp| (tp.clone(), String::new())).collect();
        for tp in g.meta.target.values().flatten() {
            tps.insert(tp.clone(), String::new());
        }
        for (id, m) in &g.meta.members {
            for tp in &m.assigned {
                tps.insert(tp.clone(), id.clone());
            }
        }
        let ends = futures::future::join_all(tps.keys().map(|tp| async move {
            lookup::end_offset(&self.broker, &self.channels, &tp.topic, tp.partition).await.ok()
        }))
        .await;
        let partitions = tps
            .into_iter()
            .zip(ends)
            .map(|((tp, member), end)| {
                let committed = g.offsets.get(&tp).cloned();
                (tp, member, committed, end)
            })
            .collect();
        Ok(Description { state: g.state(), group: g, partitions })
    }

    /// The groups of every offsets partition this broker leads.
    pub(crate) async fn list(&self) -> Result<Vec<String>> {
        let Ok(topic) = self.broker.topic(OFFSETS_TOPIC) else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for i in 0..OFFSETS_TOPIC_PARTITIONS {
            let serving =
                topic.partitions[i as usize].as_ref().is_some_and(|p| p.group.status().is_serving());
            if !serving {
                continue;
            }
            match self.lock_at(i, "").await {
                Ok((_, shard)) => out.extend(shard.groups.keys().cloned()),
                Err(e) => tracing::debug!(partition = i, error = %e, "listing groups skipped a partition"),
            }
        }
        Ok(out)
    }

    /// Deletes a group with no members, offsets included.
    pub(crate) async fn delete(&self, group: &str) -> Result<()> {
        let (p, mut shard) = self.lock(group).await?;
        let g = shard.groups.get(group).ok_or_else(|| Error::UnknownGroup(group.to_owned()))?;
        if !g.meta.members.is_empty() {
            return Err(Error::GroupNotEmpty { group: group.to_owned(), members: g.meta.members.len() });
        }
        let entries = Entry::deletion(group, g, &shard.legacy);
        self.write(&p, &mut shard, &entries).await?;
        shard.groups.remove(group);
        shard.legacy.remove(group);
        Ok(())
    }

    /// Sets the committed offsets of every partition of `topic` (the group
    /// must have no members; a group that does not exist yet is created).
    pub(crate) async fn reset(&self, group: &str, topic: &str, to: ResetTo) -> Result<Vec<OffsetEntry>> {
        let check_empty = |shard: &Shard| match shard.groups.get(group) {
            Some(g) if !g.meta.members.is_empty() => {
                Err(Error::GroupNotEmpty { group: group.to_owned(), members: g.meta.members.len() })
            }
            _ => Ok(()),
        };
        // Before finding the coordinator: a name that cannot exist is the
        // caller's mistake wherever the group lives.
        validate_topic_name(topic)?;
        check_empty(&self.lock(group).await?.1)?;
        if topic.starts_with(RESERVED_TOPIC_PREFIX) {
            return Err(Error::InvalidArgument(format!("topic {} cannot have group offsets", quoted(topic))));
        }
        let t = self.broker.topic(topic)?;
        let resolved = futures::future::join_all(
            (0..t.meta.partitions()).map(|p| lookup::resolve(&self.broker, &self.channels, topic, p, to)),
        )
        .await;
        let mut offsets = Vec::with_capacity(resolved.len());
        for (p, r) in resolved.into_iter().enumerate() {
            offsets.push(OffsetEntry {
                topic: topic.to_owned(),
                partition: p as u32,
                offset: r?,
                metadata: String::new(),
            });
        }
        let (p, mut shard) = self.lock(group).await?;
        check_empty(&shard)?;
        shard.check_room(group)?;
        let g = shard.groups.get(group).cloned().unwrap_or_default();
        self.append_offsets(&p, &mut shard, group, g, offsets.clone()).await?;
        Ok(offsets)
    }

    /// Until `stop`: expires members whose session ended, and drops the
    /// groups of partitions this broker no longer leads.
    pub(crate) async fn upkeep(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(UPKEEP_INTERVAL_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.upkeep_once().await,
                _ = stop.changed() => return,
            }
        }
    }

    async fn upkeep_once(&self) {
        let topic = self.broker.topic(OFFSETS_TOPIC).ok();
        for (i, shard) in self.shards.iter().enumerate() {
            let p = topic.as_ref().and_then(|t| t.partitions.get(i).cloned().flatten());
            let mut shard = shard.lock().await;
            let Some(term) = shard.term else { continue };
            let Some(p) = p.filter(|p| p.group.status().is_serving() && p.group.status().term() == term)
            else {
                tracing::info!(partition = i, "no longer coordinating the groups of this offsets partition");
                shard.unload();
                continue;
            };
            let now = Instant::now();
            let counts = |t: &str| self.partition_count(t);
            let mut changed = Vec::new();
            for (id, g) in &shard.groups {
                // Cloned only when something is due: most ticks change nothing.
                if !g.has_expired(now) {
                    continue;
                }
                let mut g = g.clone();
                let expired = g.expire(now, &counts);
                if !expired.is_empty() {
                    tracing::info!(group = %id, members = ?expired, "members' sessions expired");
                    changed.push((id.clone(), g));
                }
            }
            if changed.is_empty() {
                continue;
            }
            let recs: Vec<Entry> = changed.iter().map(|(id, g)| Entry::meta(id, g.meta.clone())).collect();
            match self.write(&p, &mut shard, &recs).await {
                Ok(()) => {
                    for (id, g) in changed {
                        install(&mut shard, &id, g);
                    }
                }
                Err(e) => tracing::warn!(partition = i, error = %e, "writing expired members failed"),
            }
        }
    }
}

/// Puts a group's new state in place, forgetting groups with nothing left.
fn install(shard: &mut Shard, group: &str, g: Group) {
    if g.is_empty() {
        shard.groups.remove(group);
    } else {
        shard.groups.insert(group.to_owned(), g);
    }
}
