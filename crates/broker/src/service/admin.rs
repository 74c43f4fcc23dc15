//! `fjord.v1.Admin`: topics and cluster metadata.

use std::sync::Arc;

use fjord_proto::pb::{self, admin_server::Admin};
use tonic::{Request, Response, Status};

use crate::broker::{Broker, Topic};

/// The admin service.
#[derive(Debug, Clone)]
pub(crate) struct AdminService {
    pub(crate) broker: Arc<Broker>,
}

impl AdminService {
    fn describe(&self, t: &Topic) -> pb::TopicDescription {
        pb::TopicDescription {
            name: t.meta.name.clone(),
            replication_factor: t.meta.replication_factor,
            config: Some(t.meta.settings.to_pb()),
            partitions: (0..t.meta.partitions())
                .map(|i| {
                    let leader = self.broker.leader_of(t, i);
                    let replicas = t.meta.assignment[i as usize].clone();
                    // Offsets and in-sync replicas as this broker's replica
                    // sees them; zero where it holds none.
                    match &t.partitions[i as usize] {
                        Some(p) => pb::PartitionDescription {
                            partition: i,
                            leader,
                            in_sync_replicas: if p.group.status().is_leader() {
                                p.group.status().in_sync()
                            } else {
                                Vec::new()
                            },
                            replicas,
                            log_start_offset: p.log.log_start_offset(),
                            log_end_offset: p.log.log_end_offset(),
                            high_watermark: p.high_watermark(),
                            size_bytes: p.log.size_bytes(),
                            damaged: p
                                .log
                                .damaged()
                                .into_iter()
                                .map(|d| pb::DamagedRange {
                                    start_offset: d.start_offset,
                                    end_offset: d.end_offset,
                                    bytes: d.len,
                                    reason: d.reason,
                                    ..Default::default()
                                })
                                .collect(),
                            dirty_ratio: if t.meta.settings.compacted() {
                                p.log.dirtiness().ratio()
                            } else {
                                0.0
                            },
                            last_compaction_ms: p
                                .compaction
                                .last_ms
                                .load(std::sync::atomic::Ordering::Relaxed),
                        },
                        None => {
                            pb::PartitionDescription { partition: i, leader, replicas, ..Default::default() }
                        }
                    }
                })
                .collect(),
        }
    }

    fn brokers(&self) -> Vec<pb::BrokerInfo> {
        let metadata = self.broker.metadata_status();
        let in_sync = metadata.in_sync();
        self.broker
            .peers
            .iter()
            .map(|(&id, address)| pb::BrokerInfo {
                id,
                address: address.clone(),
                // Known on the metadata leader (who hears from everyone);
                // elsewhere only this broker is known to be up.
                alive: id == self.broker.config.broker_id || in_sync.contains(&id),
            })
            .collect()
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn alter_topic(
        &self,
        request: Request<pb::AlterTopicRequest>,
    ) -> Result<Response<pb::AlterTopicResponse>, Status> {
        let req = request.into_inner();
        crate::topics::check_user_topic(&req.name)?;
        let config = req.config.unwrap_or_default();
        let topic = match (config_changes(&config), req.partitions) {
            (false, None) => {
                return Err(crate::Error::InvalidArgument(
                    "config, partitions: set at least one setting or the partition count to change".into(),
                )
                .into())
            }
            (false, Some(n)) => self.broker.add_partitions(&req.name, n).await?,
            (true, None) => self.broker.alter_topic(&req.name, &config).await?,
            (true, Some(n)) => {
                self.broker.alter_topic(&req.name, &config).await?;
                self.broker.add_partitions(&req.name, n).await?
            }
        };
        Ok(Response::new(pb::AlterTopicResponse { topic: Some(self.describe(&topic)) }))
    }

    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        let req = request.into_inner();
        crate::topics::check_user_topic(&req.name)?;
        let topic = self.broker.create_topic(req).await?;
        Ok(Response::new(pb::CreateTopicResponse { topic: Some(self.describe(&topic)) }))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        let name = request.into_inner().name;
        crate::topics::check_user_topic(&name)?;
        self.broker.delete_topic(&name).await?;
        Ok(Response::new(pb::DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        _: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        self.broker.check_metadata_loaded()?;
        let topics = self
            .broker
            .topics()
            .iter()
            .map(|t| pb::TopicSummary {
                name: t.meta.name.clone(),
                partitions: t.meta.partitions(),
                replication_factor: t.meta.replication_factor,
            })
            .collect();
        Ok(Response::new(pb::ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        self.broker.check_metadata_loaded()?;
        let topic = self.broker.topic(&request.into_inner().name)?;
        Ok(Response::new(pb::DescribeTopicResponse { topic: Some(self.describe(&topic)) }))
    }

    async fn describe_cluster(
        &self,
        _: Request<pb::DescribeClusterRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        let id = self.broker.config.broker_id;
        Ok(Response::new(pb::DescribeClusterResponse {
            broker_id: id,
            brokers: self.brokers(),
            controller_id: id,
        }))
    }

    async fn scrub_topic(
        &self,
        request: Request<pb::ScrubTopicRequest>,
    ) -> Result<Response<pb::ScrubTopicResponse>, Status> {
        let topic = request.into_inner().topic;
        Ok(Response::new(self.broker.scrub_topic(&topic).await?))
    }

    async fn metadata(
        &self,
        request: Request<pb::MetadataRequest>,
    ) -> Result<Response<pb::MetadataResponse>, Status> {
        let req = request.into_inner();
        self.broker.check_metadata_loaded()?;
        let topics = if req.topics.is_empty() {
            self.broker.topics()
        } else {
            req.topics.iter().map(|name| self.broker.topic(name)).collect::<crate::Result<Vec<_>>>()?
        };
        let topics = topics
            .iter()
            .map(|t| pb::TopicMetadata {
                name: t.meta.name.clone(),
                partitions: (0..t.meta.partitions())
                    .map(|i| pb::PartitionMetadata {
                        partition: i,
                        leader: self.broker.leader_of(t, i),
                        replicas: t.meta.assignment[i as usize].clone(),
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::MetadataResponse { brokers: self.brokers(), topics }))
    }
}

/// Whether an alter request's config sets anything.
fn config_changes(c: &pb::TopicConfig) -> bool {
    *c != pb::TopicConfig::default()
}
