//! `fjord.v1.Groups`: consumer-group membership, offsets and
//! administration, converted at the edge and handed to the coordinator
//! ([`crate::groups`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use fjord_proto::pb::{self, groups_server::Groups};
use tonic::{Request, Response, Status};

use crate::groups::limits::{MEMBER_ID_LEN_MAX, REQUEST_PARTITIONS_MAX, SUBSCRIBED_TOPICS_MAX};
use crate::groups::records::OffsetEntry;
use crate::groups::state::{Heartbeat, Tp};
use crate::groups::{check_text, Coordinator, ResetTo};
use crate::{Error, Result};

/// The groups service.
#[derive(Debug, Clone)]
pub(crate) struct GroupsService {
    pub(crate) coordinator: Arc<Coordinator>,
}

fn tps(list: Vec<pb::TopicPartition>, field: &str) -> Result<Vec<Tp>> {
    if list.len() > REQUEST_PARTITIONS_MAX {
        return Err(Error::InvalidArgument(format!(
            "{field}: {} partitions exceed the limit of {REQUEST_PARTITIONS_MAX}",
            list.len()
        )));
    }
    Ok(list.into_iter().map(|tp| Tp { topic: tp.topic, partition: tp.partition }).collect())
}

fn to_pb(set: &BTreeSet<Tp>) -> Vec<pb::TopicPartition> {
    set.iter().map(|tp| pb::TopicPartition { topic: tp.topic.clone(), partition: tp.partition }).collect()
}

fn commit_pb(o: OffsetEntry) -> pb::OffsetCommit {
    pb::OffsetCommit { topic: o.topic, partition: o.partition, offset: o.offset, metadata: o.metadata }
}

#[tonic::async_trait]
impl Groups for GroupsService {
    async fn find_coordinator(
        &self,
        request: Request<pb::FindCoordinatorRequest>,
    ) -> std::result::Result<Response<pb::FindCoordinatorResponse>, Status> {
        let req = request.into_inner();
        let (id, address, partition) = self.coordinator.find(&req.group_id).await?;
        Ok(Response::new(pb::FindCoordinatorResponse {
            coordinator_id: id,
            coordinator_address: address,
            partition,
        }))
    }

    async fn group_heartbeat(
        &self,
        request: Request<pb::GroupHeartbeatRequest>,
    ) -> std::result::Result<Response<pb::GroupHeartbeatResponse>, Status> {
        let host = request.remote_addr().map(|a| a.ip().to_string()).unwrap_or_default();
        let req = request.into_inner();
        if req.topics.len() > SUBSCRIBED_TOPICS_MAX {
            return Err(Error::InvalidArgument(format!(
                "topics: {} exceed the limit of {SUBSCRIBED_TOPICS_MAX}",
                req.topics.len()
            ))
            .into());
        }
        check_text("member_id", &req.member_id, MEMBER_ID_LEN_MAX)?;
        check_text("client_id", &req.client_id, MEMBER_ID_LEN_MAX)?;
        check_text("assignor", &req.assignor, MEMBER_ID_LEN_MAX)?;
        for t in &req.topics {
            crate::topics::validate_topic_name(t)
                .map_err(|e| Error::InvalidArgument(format!("topics: {e}")))?;
        }
        let hb = Heartbeat {
            member_id: req.member_id,
            member_epoch: req.member_epoch,
            topics: req.topics,
            owned: tps(req.owned, "owned")?.into_iter().collect(),
            assignor: req.assignor,
            session_timeout_ms: req.session_timeout_ms,
            client_id: req.client_id,
            client_host: host,
        };
        let reply = self.coordinator.heartbeat(&req.group_id, hb).await?;
        Ok(Response::new(pb::GroupHeartbeatResponse {
            member_id: reply.member_id,
            member_epoch: reply.member_epoch,
            assigned: to_pb(&reply.assigned),
            heartbeat_interval_ms: reply.heartbeat_interval_ms,
        }))
    }

    async fn commit_offsets(
        &self,
        request: Request<pb::CommitOffsetsRequest>,
    ) -> std::result::Result<Response<pb::CommitOffsetsResponse>, Status> {
        let req = request.into_inner();
        let offsets = req
            .offsets
            .into_iter()
            .map(|o| OffsetEntry {
                topic: o.topic,
                partition: o.partition,
                offset: o.offset,
                metadata: o.metadata,
            })
            .collect();
        self.coordinator.commit(&req.group_id, &req.member_id, req.member_epoch, offsets).await?;
        Ok(Response::new(pb::CommitOffsetsResponse {}))
    }

    async fn fetch_offsets(
        &self,
        request: Request<pb::FetchOffsetsRequest>,
    ) -> std::result::Result<Response<pb::FetchOffsetsResponse>, Status> {
        let req = request.into_inner();
        let want = tps(req.partitions, "partitions")?;
        let offsets = self.coordinator.fetch_offsets(&req.group_id, &want).await?;
        Ok(Response::new(pb::FetchOffsetsResponse {
            offsets: offsets
                .into_iter()
                .map(|(tp, c)| pb::OffsetCommit {
                    topic: tp.topic,
                    partition: tp.partition,
                    offset: c.offset,
                    metadata: c.metadata,
                })
                .collect(),
        }))
    }

    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> std::result::Result<Response<pb::DescribeGroupResponse>, Status> {
        let req = request.into_inner();
        let d = self.coordinator.describe(&req.group_id).await?;
        let meta = &d.group.meta;
        let members = meta
            .members
            .iter()
            .map(|(id, m)| pb::GroupMemberDescription {
                member_id: id.clone(),
                member_epoch: m.epoch,
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                topics: m.topics.iter().cloned().collect(),
                owned: to_pb(&m.owned),
                assigned: to_pb(&m.assigned),
            })
            .collect();
        let partitions = d
            .partitions
            .into_iter()
            .map(|(tp, member_id, committed, end)| {
                let committed = committed.map(|c| c.offset);
                let lag = committed.zip(end).map(|(c, e)| e.saturating_sub(c));
                let lag_ms = committed
                    .zip(lag)
                    .and_then(|(c, lag)| self.coordinator.lag_ms(&tp.topic, tp.partition, c, lag));
                pb::GroupPartitionDescription {
                    topic: tp.topic,
                    partition: tp.partition,
                    member_id,
                    committed_offset: committed,
                    log_end_offset: end,
                    lag,
                    lag_ms,
                }
            })
            .collect();
        Ok(Response::new(pb::DescribeGroupResponse {
            group_id: req.group_id,
            state: d.state.name().to_owned(),
            group_epoch: meta.epoch,
            assignor: meta.assignor.clone(),
            coordinator_id: self.coordinator.broker_id(),
            members,
            partitions,
        }))
    }

    async fn list_groups(
        &self,
        _: Request<pb::ListGroupsRequest>,
    ) -> std::result::Result<Response<pb::ListGroupsResponse>, Status> {
        Ok(Response::new(pb::ListGroupsResponse { group_ids: self.coordinator.list().await? }))
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> std::result::Result<Response<pb::DeleteGroupResponse>, Status> {
        self.coordinator.delete(&request.into_inner().group_id).await?;
        Ok(Response::new(pb::DeleteGroupResponse {}))
    }

    async fn reset_offsets(
        &self,
        request: Request<pb::ResetOffsetsRequest>,
    ) -> std::result::Result<Response<pb::ResetOffsetsResponse>, Status> {
        let req = request.into_inner();
        let to = match (pb::OffsetSpec::try_from(req.spec), req.offset) {
            (Ok(pb::OffsetSpec::Unspecified), Some(o)) => ResetTo::Offset(o),
            (Ok(pb::OffsetSpec::Earliest), None) => ResetTo::Earliest,
            (Ok(pb::OffsetSpec::Latest), None) => ResetTo::Latest,
            (Ok(pb::OffsetSpec::Timestamp), None) => ResetTo::Timestamp(req.timestamp_ms),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "give either spec EARLIEST, LATEST or TIMESTAMP, or an offset with spec UNSPECIFIED; got spec {} and offset {:?}",
                    req.spec, req.offset
                ))
                .into())
            }
        };
        let offsets = self.coordinator.reset(&req.group_id, &req.topic, to).await?;
        Ok(Response::new(pb::ResetOffsetsResponse { offsets: offsets.into_iter().map(commit_pb).collect() }))
    }
}
