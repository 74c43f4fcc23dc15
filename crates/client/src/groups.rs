//! Consumer-group calls on [`Client`]: finding a group's coordinator and
//! the membership, offset and admin RPCs of the `Groups` service, routed
//! to the coordinator (following `NotCoordinator` hints, or finding it
//! again), plus the domain types they return.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use fjord_proto::pb;
use fjord_proto::pb::groups_client::GroupsClient;
use tonic::transport::Channel;

use crate::cluster::{at_broker, deadline, request};
use crate::{Client, Error, Result};

/// A committed offset of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The next offset the group reads.
    pub offset: u64,
    /// Free-form metadata stored with it.
    pub metadata: String,
}

/// Where [`Client::reset_offsets`] moves a group's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    /// The start of each partition's log.
    Earliest,
    /// The end (high watermark) of each partition.
    Latest,
    /// The first record at or after this time (ms since the Unix epoch), else the end.
    Timestamp(i64),
    /// This offset in every partition, clamped to the log.
    Offset(u64),
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// Member id, given by the coordinator.
    pub member_id: String,
    /// Its epoch.
    pub member_epoch: i64,
    /// Client id it gave.
    pub client_id: String,
    /// Address it connected from.
    pub client_host: String,
    /// Subscribed topics.
    pub topics: Vec<String>,
    /// Partitions it reports consuming.
    pub owned: Vec<(String, u32)>,
    /// Partitions the coordinator assigned it.
    pub assigned: Vec<(String, u32)>,
}

/// One partition of a group, with its lag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The member it is assigned to, if any.
    pub member_id: Option<String>,
    /// Committed offset, if any.
    pub committed: Option<u64>,
    /// High watermark, if its leader answered.
    pub log_end: Option<u64>,
    /// `log_end - committed`, when both are known.
    pub lag: Option<u64>,
    /// Age of the oldest unconsumed record, ms (0 when `lag` is 0), when
    /// the coordinator could read it.
    pub lag_ms: Option<i64>,
}

/// A group as its coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Group id.
    pub group_id: String,
    /// "empty", "stable" or "assigning".
    pub state: String,
    /// Group epoch.
    pub group_epoch: i64,
    /// Assignor in use.
    pub assignor: String,
    /// Broker id of the coordinator.
    pub coordinator_id: u64,
    /// Members, by id.
    pub members: Vec<GroupMember>,
    /// Partitions with a committed offset or an assignment.
    pub partitions: Vec<GroupPartition>,
}

/// One heartbeat's answer, for the group consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeartbeatReply {
    pub(crate) member_id: String,
    pub(crate) member_epoch: i64,
    pub(crate) assigned: BTreeSet<(String, u32)>,
    pub(crate) heartbeat_interval: Duration,
}

fn pairs(list: Vec<pb::TopicPartition>) -> Vec<(String, u32)> {
    list.into_iter().map(|tp| (tp.topic, tp.partition)).collect()
}

fn committed(o: pb::OffsetCommit) -> CommittedOffset {
    CommittedOffset { topic: o.topic, partition: o.partition, offset: o.offset, metadata: o.metadata }
}

impl Client {
    /// The address of a group's coordinator. The first call for any group
    /// makes the cluster create its internal offsets topic.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad group id, or a
    /// transport/availability error after retries.
    pub async fn find_coordinator(&self, group: &str) -> Result<String> {
        self.find_coordinator_from(group, 0).await
    }

    /// [`Client::find_coordinator`], asking the known brokers starting at
    /// the `start`-th: a caller that found a dead coordinator asks the next
    /// broker, whose view may be fresher.
    pub(crate) async fn find_coordinator_from(&self, group: &str, start: usize) -> Result<String> {
        let timeout = self.config().request_timeout;
        let msg = pb::FindCoordinatorRequest { group_id: group.to_string() };
        let resp = self
            .with_retry(true, |attempt| {
                let msg = msg.clone();
                async move {
                    let addr = match attempt.hint {
                        Some(a) => a,
                        None => {
                            let addrs = self.cluster.any_addresses();
                            addrs[(start + attempt.number as usize) % addrs.len()].clone()
                        }
                    };
                    let mut client = GroupsClient::new(self.cluster.channel(&addr)?);
                    deadline(timeout, async {
                        Ok(client.find_coordinator(request(msg, timeout)).await?.into_inner())
                    })
                    .await
                    .map_err(|e| at_broker(&addr, e))
                }
            })
            .await?;
        Ok(resp.coordinator_address)
    }

    /// One call to the coordinator at `addr`, bounded by `timeout`.
    pub(crate) async fn coordinator_once<Req, Resp, F, Fut>(
        &self,
        addr: &str,
        timeout: Duration,
        msg: Req,
        call: F,
    ) -> Result<Resp>
    where
        F: FnOnce(GroupsClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let client = GroupsClient::new(self.cluster.channel(addr)?);
        let fut = call(client, request(msg, timeout));
        deadline(timeout, async { Ok(fut.await?.into_inner()) }).await.map_err(|e| at_broker(addr, e))
    }

    /// A call to a group's coordinator, retried: `NotCoordinator` with a
    /// hint goes to the hint, without one finds the coordinator again.
    pub(crate) async fn at_coordinator<Req, Resp, F, Fut>(
        &self,
        group: &str,
        hint: Option<String>,
        msg: Req,
        call: F,
    ) -> Result<(Resp, String)>
    where
        Req: Clone,
        F: Fn(GroupsClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let timeout = self.config().request_timeout;
        let next = Mutex::new(hint);
        self.with_retry(true, |attempt| {
            let msg = msg.clone();
            let (call, next) = (&call, &next);
            async move {
                let cached = next.lock().expect("hint lock").take();
                let addr = match cached {
                    Some(a) => a,
                    None => self.find_coordinator_from(group, attempt.number as usize).await?,
                };
                match self.coordinator_once(&addr, timeout, msg, call).await {
                    Ok(resp) => Ok((resp, addr)),
                    Err(e) => {
                        if let Error::NotCoordinator { coordinator_address: Some(a), .. } = &e {
                            *next.lock().expect("hint lock") = Some(a.clone());
                        }
                        Err(e)
                    }
                }
            }
        })
        .await
    }

    /// One heartbeat (join, stay, leave) at the coordinator at `addr`.
    pub(crate) async fn heartbeat_once(
        &self,
        addr: &str,
        timeout: Duration,
        req: pb::GroupHeartbeatRequest,
    ) -> Result<HeartbeatReply> {
        let resp = self
            .coordinator_once(addr, timeout, req, |mut c, r| async move { c.group_heartbeat(r).await })
            .await?;
        Ok(HeartbeatReply {
            member_id: resp.member_id,
            member_epoch: resp.member_epoch,
            assigned: pairs(resp.assigned).into_iter().collect(),
            heartbeat_interval: Duration::from_millis(resp.heartbeat_interval_ms as u64),
        })
    }

    /// Commits offsets (the next offset to read) for a group member; with
    /// `member_id` "" and `member_epoch` -1, for a group without members.
    /// Returns the coordinator's address.
    ///
    /// # Errors
    /// [`Error::StaleMemberEpoch`] if the member's epoch is stale or it
    /// does not own a partition, [`Error::UnknownMember`],
    /// [`Error::GroupNotEmpty`] for an admin commit to an active group.
    pub async fn commit_offsets(
        &self,
        group: &str,
        member_id: &str,
        member_epoch: i64,
        offsets: &[CommittedOffset],
        coordinator: Option<String>,
    ) -> Result<String> {
        let msg = pb::CommitOffsetsRequest {
            group_id: group.to_string(),
            member_id: member_id.to_string(),
            member_epoch,
            offsets: offsets
                .iter()
                .map(|o| pb::OffsetCommit {
                    topic: o.topic.clone(),
                    partition: o.partition,
                    offset: o.offset,
                    metadata: o.metadata.clone(),
                })
                .collect(),
        };
        let (_, addr) = self
            .at_coordinator(group, coordinator, msg, |mut c, r| async move { c.commit_offsets(r).await })
            .await?;
        Ok(addr)
    }

    /// A group's committed offsets of `partitions` (all if empty); none for
    /// a group that does not exist.
    ///
    /// # Errors
    /// A transport/availability error after retries.
    pub async fn fetch_offsets(
        &self,
        group: &str,
        partitions: &[(String, u32)],
    ) -> Result<Vec<CommittedOffset>> {
        let msg = pb::FetchOffsetsRequest {
            group_id: group.to_string(),
            partitions: partitions
                .iter()
                .map(|(topic, partition)| pb::TopicPartition { topic: topic.clone(), partition: *partition })
                .collect(),
        };
        let (resp, _) =
            self.at_coordinator(group, None, msg, |mut c, r| async move { c.fetch_offsets(r).await }).await?;
        Ok(resp.offsets.into_iter().map(committed).collect())
    }

    /// A group's state, members, committed offsets and lag.
    ///
    /// # Errors
    /// [`Error::UnknownGroup`], or a transport/availability error after retries.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let msg = pb::DescribeGroupRequest { group_id: group.to_string() };
        let (d, _) = self
            .at_coordinator(group, None, msg, |mut c, r| async move { c.describe_group(r).await })
            .await?;
        Ok(GroupDescription {
            group_id: d.group_id,
            state: d.state,
            group_epoch: d.group_epoch,
            assignor: d.assignor,
            coordinator_id: d.coordinator_id,
            members: d
                .members
                .into_iter()
                .map(|m| GroupMember {
                    member_id: m.member_id,
                    member_epoch: m.member_epoch,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    topics: m.topics,
                    owned: pairs(m.owned),
                    assigned: pairs(m.assigned),
                })
                .collect(),
            partitions: d
                .partitions
                .into_iter()
                .map(|p| GroupPartition {
                    topic: p.topic,
                    partition: p.partition,
                    member_id: (!p.member_id.is_empty()).then_some(p.member_id),
                    committed: p.committed_offset,
                    log_end: p.log_end_offset,
                    lag: p.lag,
                    lag_ms: p.lag_ms,
                })
                .collect(),
        })
    }

    /// Every group of the cluster, sorted: each broker lists the groups it
    /// coordinates, and the answers are merged.
    ///
    /// # Errors
    /// A transport/availability error if a broker of the cluster does not answer.
    pub async fn list_groups(&self) -> Result<Vec<String>> {
        let meta = self.metadata().await?;
        let timeout = self.config().request_timeout;
        let mut all = BTreeSet::new();
        for b in meta.brokers.values() {
            let resp = self
                .coordinator_once(&b.address, timeout, pb::ListGroupsRequest {}, |mut c, r| async move {
                    c.list_groups(r).await
                })
                .await;
            match resp {
                Ok(r) => all.extend(r.group_ids),
                // A broker that is down coordinates nothing until it is back.
                Err(e) if e.is_retriable() => {
                    tracing::debug!(broker = %b.address, error = %e, "list groups skipped a broker")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(all.into_iter().collect())
    }

    /// Deletes a group that has no members, with its committed offsets.
    ///
    /// # Errors
    /// [`Error::UnknownGroup`], [`Error::GroupNotEmpty`].
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let msg = pb::DeleteGroupRequest { group_id: group.to_string() };
        self.at_coordinator(group, None, msg, |mut c, r| async move { c.delete_group(r).await }).await?;
        Ok(())
    }

    /// Moves a group's committed offsets of every partition of `topic`
    /// (the group must have no members; one that does not exist is
    /// created). Returns the new offsets.
    ///
    /// # Errors
    /// [`Error::GroupNotEmpty`], [`Error::UnknownTopic`].
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: OffsetReset,
    ) -> Result<Vec<CommittedOffset>> {
        let (spec, timestamp_ms, offset) = match to {
            OffsetReset::Earliest => (pb::OffsetSpec::Earliest, 0, None),
            OffsetReset::Latest => (pb::OffsetSpec::Latest, 0, None),
            OffsetReset::Timestamp(ts) => (pb::OffsetSpec::Timestamp, ts, None),
            OffsetReset::Offset(o) => (pb::OffsetSpec::Unspecified, 0, Some(o)),
        };
        let msg = pb::ResetOffsetsRequest {
            group_id: group.to_string(),
            topic: topic.to_string(),
            spec: spec as i32,
            timestamp_ms,
            offset,
        };
        let (resp, _) =
            self.at_coordinator(group, None, msg, |mut c, r| async move { c.reset_offsets(r).await }).await?;
        Ok(resp.offsets.into_iter().map(committed).collect())
    }
}
