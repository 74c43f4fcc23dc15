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
        let id = self.broker.config.broker_id;
        pb::TopicDescription {
            name: t.meta.name.clone(),
            replication_factor: t.meta.replication_factor,
            config: Some(t.meta.settings.to_pb()),
            partitions: t
                .partitions
                .iter()
                .map(|p| pb::PartitionDescription {
                    partition: p.id,
                    leader: id,
                    replicas: vec![id],
                    in_sync_replicas: vec![id],
                    log_start_offset: p.log.log_start_offset(),
                    log_end_offset: p.log.log_end_offset(),
                    high_watermark: p.high_watermark(),
                    size_bytes: p.log.size_bytes(),
                })
                .collect(),
        }
    }

    fn brokers(&self) -> Vec<pb::BrokerInfo> {
        vec![pb::BrokerInfo {
            id: self.broker.config.broker_id,
            address: self.broker.advertised.clone(),
            alive: true,
        }]
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        let topic = self.broker.create_topic(request.into_inner()).await?;
        Ok(Response::new(pb::CreateTopicResponse { topic: Some(self.describe(&topic)) }))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        self.broker.delete_topic(&request.into_inner().name).await?;
        Ok(Response::new(pb::DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        _: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let topics = self
            .broker
            .topics()
            .iter()
            .map(|t| pb::TopicSummary {
                name: t.meta.name.clone(),
                partitions: t.meta.partitions,
                replication_factor: t.meta.replication_factor,
            })
            .collect();
        Ok(Response::new(pb::ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
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

    async fn metadata(
        &self,
        request: Request<pb::MetadataRequest>,
    ) -> Result<Response<pb::MetadataResponse>, Status> {
        let req = request.into_inner();
        let id = self.broker.config.broker_id;
        let topics = if req.topics.is_empty() {
            self.broker.topics()
        } else {
            req.topics.iter().map(|name| self.broker.topic(name)).collect::<crate::Result<Vec<_>>>()?
        };
        let topics = topics
            .iter()
            .map(|t| pb::TopicMetadata {
                name: t.meta.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| pb::PartitionMetadata { partition: p.id, leader: id, replicas: vec![id] })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::MetadataResponse { brokers: self.brokers(), topics }))
    }
}
