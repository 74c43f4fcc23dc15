//! The group consumer against a scripted in-process coordinator: answers
//! lost, a set-up held up, fencing. These are the races a real broker
//! cannot be made to lose on demand.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fjord_proto::pb;
use futures::Stream;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::*;
use crate::ClientConfig;

type Stream2<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send>>;
type Reply<T> = std::result::Result<Response<T>, Status>;

/// One heartbeat the coordinator received.
#[derive(Debug, Clone)]
struct Seen {
    member_id: String,
    epoch: i64,
    owned: BTreeSet<u32>,
    /// Whether a FetchOffsets was being held at the gate when it came.
    during_set_up: bool,
}

#[derive(Debug, Default)]
struct Script {
    /// Partitions of topic "t" every heartbeat answer assigns.
    assigned: Vec<u32>,
    epoch: i64,
    heartbeats: Vec<Seen>,
    /// Joins recorded but answered with UNAVAILABLE, as if the answer were lost.
    lose_join_answers: u32,
    /// Answer the next heartbeat with UNKNOWN_MEMBER.
    fence_next: bool,
    held_at_gate: bool,
}

#[derive(Clone)]
struct Mock {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    /// FetchOffsets waits while this is false.
    gate: watch::Sender<bool>,
}

fn detailed(code: tonic::Code, ec: pb::ErrorCode, message: &str) -> Status {
    let detail = pb::ErrorDetail { code: ec as i32, message: message.into(), ..Default::default() };
    Status::with_details(code, message, fjord_proto::encode_status_details(code, &detail).into())
}

#[tonic::async_trait]
impl pb::groups_server::Groups for Mock {
    async fn find_coordinator(
        &self,
        _: Request<pb::FindCoordinatorRequest>,
    ) -> Reply<pb::FindCoordinatorResponse> {
        Ok(Response::new(pb::FindCoordinatorResponse {
            coordinator_id: 1,
            coordinator_address: self.addr.to_string(),
            partition: 0,
        }))
    }
    async fn group_heartbeat(
        &self,
        req: Request<pb::GroupHeartbeatRequest>,
    ) -> Reply<pb::GroupHeartbeatResponse> {
        let req = req.into_inner();
        let mut s = self.script.lock().unwrap();
        let during_set_up = s.held_at_gate;
        s.heartbeats.push(Seen {
            member_id: req.member_id.clone(),
            epoch: req.member_epoch,
            owned: req.owned.iter().map(|tp| tp.partition).collect(),
            during_set_up,
        });
        if req.member_epoch == -1 {
            return Ok(Response::new(pb::GroupHeartbeatResponse {
                member_id: req.member_id,
                member_epoch: -1,
                ..Default::default()
            }));
        }
        if std::mem::take(&mut s.fence_next) {
            return Err(detailed(tonic::Code::NotFound, pb::ErrorCode::UnknownMember, "unknown member"));
        }
        if req.member_epoch == 0 && s.lose_join_answers > 0 {
            s.lose_join_answers -= 1;
            return Err(Status::unavailable("answer lost"));
        }
        let member_id = if req.member_id.is_empty() {
            format!("server-made-{}", s.heartbeats.len())
        } else {
            req.member_id
        };
        Ok(Response::new(pb::GroupHeartbeatResponse {
            member_id,
            member_epoch: s.epoch,
            assigned: s
                .assigned
                .iter()
                .map(|p| pb::TopicPartition { topic: "t".into(), partition: *p })
                .collect(),
            heartbeat_interval_ms: 20,
        }))
    }
    async fn commit_offsets(&self, _: Request<pb::CommitOffsetsRequest>) -> Reply<pb::CommitOffsetsResponse> {
        Ok(Response::new(pb::CommitOffsetsResponse {}))
    }
    async fn fetch_offsets(&self, _: Request<pb::FetchOffsetsRequest>) -> Reply<pb::FetchOffsetsResponse> {
        let mut gate = self.gate.subscribe();
        self.script.lock().unwrap().held_at_gate = !*gate.borrow();
        let _ = gate.wait_for(|open| *open).await;
        self.script.lock().unwrap().held_at_gate = false;
        Ok(Response::new(pb::FetchOffsetsResponse { offsets: vec![] }))
    }
    async fn describe_group(&self, _: Request<pb::DescribeGroupRequest>) -> Reply<pb::DescribeGroupResponse> {
        Err(Status::unimplemented("mock"))
    }
    async fn list_groups(&self, _: Request<pb::ListGroupsRequest>) -> Reply<pb::ListGroupsResponse> {
        Err(Status::unimplemented("mock"))
    }
    async fn delete_group(&self, _: Request<pb::DeleteGroupRequest>) -> Reply<pb::DeleteGroupResponse> {
        Err(Status::unimplemented("mock"))
    }
    async fn reset_offsets(&self, _: Request<pb::ResetOffsetsRequest>) -> Reply<pb::ResetOffsetsResponse> {
        Err(Status::unimplemented("mock"))
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for Mock {
    async fn create_topic(&self, _: Request<pb::CreateTopicRequest>) -> Reply<pb::CreateTopicResponse> {
        Err(Status::unimplemented("mock"))
    }
    async fn delete_topic(&self, _: Request<pb::DeleteTopicRequest>) -> Reply<pb::DeleteTopicResponse> {
        Err(Status::unimplemented("mock"))
    }
    async fn alter_topic(&self, _: Request<pb::AlterTopicRequest>) -> Reply<pb::AlterTopicResponse> {
        Err(Status::unimplemented("mock"))
    }
    async fn list_topics(&self, _: Request<pb::ListTopicsRequest>) -> Reply<pb::ListTopicsResponse> {
        Err(Status::unimplemented("mock"))
    }
    async fn describe_topic(&self, _: Request<pb::DescribeTopicRequest>) -> Reply<pb::DescribeTopicResponse> {
        Err(Status::unimplemented("mock"))
    }
    async fn scrub_topic(&self, _: Request<pb::ScrubTopicRequest>) -> Reply<pb::ScrubTopicResponse> {
        Err(Status::unimplemented("mock"))
    }
    async fn describe_cluster(
        &self,
        _: Request<pb::DescribeClusterRequest>,
    ) -> Reply<pb::DescribeClusterResponse> {
        Err(Status::unimplemented("mock"))
    }
    async fn metadata(&self, _: Request<pb::MetadataRequest>) -> Reply<pb::MetadataResponse> {
        Ok(Response::new(pb::MetadataResponse {
            brokers: vec![pb::BrokerInfo { id: 1, address: self.addr.to_string(), alive: true }],
            topics: vec![pb::TopicMetadata {
                name: "t".into(),
                partitions: (0..2)
                    .map(|p| pb::PartitionMetadata { partition: p, leader: 1, replicas: vec![1] })
                    .collect(),
            }],
        }))
    }
}

#[tonic::async_trait]
impl pb::consumer_server::Consumer for Mock {
    async fn fetch(&self, req: Request<pb::FetchRequest>) -> Reply<pb::FetchResponse> {
        let req = req.into_inner();
        tokio::time::sleep(Duration::from_millis(req.max_wait_ms.min(50) as u64)).await;
        Ok(Response::new(pb::FetchResponse {
            topic: req.topic,
            partition: req.partition,
            batches: Default::default(),
            next_offset: req.offset,
            high_watermark: 0,
            log_start_offset: 0,
        }))
    }

    type SubscribeStream = Stream2<pb::FetchResponse>;

    async fn subscribe(&self, _: Request<pb::FetchRequest>) -> Reply<Self::SubscribeStream> {
        Err(Status::unimplemented("mock"))
    }

    async fn list_offsets(&self, _: Request<pb::ListOffsetsRequest>) -> Reply<pb::ListOffsetsResponse> {
        Ok(Response::new(pb::ListOffsetsResponse { offset: 0, log_start_offset: 0, high_watermark: 0 }))
    }

    async fn read(&self, _: Request<pb::ReadRequest>) -> Reply<pb::ReadResponse> {
        Err(Status::unimplemented("mock"))
    }

    type ReadStreamStream = Stream2<pb::ReadResponse>;

    async fn read_stream(&self, _: Request<pb::ReadRequest>) -> Reply<Self::ReadStreamStream> {
        Err(Status::unimplemented("mock"))
    }
}

async fn start(script: Script, gate_open: bool) -> (Mock, Client) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mock = Mock { addr, script: Arc::new(Mutex::new(script)), gate: watch::Sender::new(gate_open) };
    let server = tonic::transport::Server::builder()
        .add_service(pb::groups_server::GroupsServer::new(mock.clone()))
        .add_service(pb::admin_server::AdminServer::new(mock.clone()))
        .add_service(pb::consumer_server::ConsumerServer::new(mock.clone()));
    tokio::spawn(server.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
    let config = ClientConfig {
        request_timeout: Duration::from_secs(2),
        ..ClientConfig::from_bootstrap(&addr.to_string()).unwrap()
    };
    let client = Client::connect(config).await.unwrap();
    (mock, client)
}

fn config() -> GroupConsumerConfig {
    GroupConsumerConfig {
        session_timeout: Duration::from_secs(5),
        auto_commit: false,
        ..GroupConsumerConfig::new("g", &["t"])
    }
}

impl Mock {
    fn heartbeats(&self) -> Vec<Seen> {
        self.script.lock().unwrap().heartbeats.clone()
    }

    /// Waits (up to 5 s) until the heartbeats received satisfy `ok`.
    async fn until(&self, what: &str, ok: impl Fn(&[Seen]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !ok(&self.heartbeats()) {
            let hs = self.heartbeats();
            let last = &hs[hs.len().saturating_sub(5)..];
            assert!(tokio::time::Instant::now() < deadline, "never saw {what}; last heartbeats: {last:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_is_held_while_set_up_and_not_read_once_revoked() {
    let (mock, client) = start(Script { assigned: vec![0], epoch: 1, ..Default::default() }, false).await;
    let mut consumer = GroupConsumer::new(client, config()).unwrap();
    let ev = {
        let poll = consumer.poll();
        tokio::pin!(poll);
        let held_then_revoked = async {
            // While t/0 is being set up, it is reported owned: the coordinator
            // must not grant it to anyone else yet.
            mock.until("t/0 reported owned during its set-up", |hs| {
                hs.iter().any(|h| h.during_set_up && h.owned.contains(&0))
            })
            .await;
            // The coordinator revokes it meanwhile, and then grants t/1.
            let n = {
                let mut s = mock.script.lock().unwrap();
                (s.assigned, s.epoch) = (vec![], 2);
                s.heartbeats.len()
            };
            mock.until("a heartbeat answered with the revocation", |hs| hs.len() > n + 1).await;
            mock.script.lock().unwrap().assigned = vec![1];
            mock.gate.send_replace(true);
        };
        tokio::select! {
            ev = &mut poll => panic!("poll returned during set-up: {ev:?}"),
            () = held_then_revoked => {}
        }
        // The set-up of t/0 finished after its revocation: it is never read.
        tokio::time::timeout(Duration::from_secs(5), &mut poll).await.expect("an event").unwrap()
    };
    assert_eq!(ev, GroupEvent::Assigned(vec![("t".into(), 1)]));
    assert_eq!(consumer.assignment(), [("t".to_string(), 1)]);
    let n = mock.heartbeats().len();
    mock.until("t/1 alone reported owned", |hs| {
        hs.len() > n && hs.last().unwrap().owned == BTreeSet::from([1])
    })
    .await;
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_and_rejoins_name_the_same_member() {
    let (mock, client) =
        start(Script { assigned: vec![0], epoch: 1, lose_join_answers: 2, ..Default::default() }, true).await;
    let mut consumer = GroupConsumer::new(client, config()).unwrap();
    let id = consumer.member_id();
    let ev = tokio::time::timeout(Duration::from_secs(5), consumer.poll()).await.expect("assigned").unwrap();
    assert_eq!(ev, GroupEvent::Assigned(vec![("t".into(), 0)]));
    // Fenced (the coordinator forgot it): everything is dropped, and it
    // joins again under the same id.
    mock.script.lock().unwrap().fence_next = true;
    let ev = tokio::time::timeout(Duration::from_secs(5), consumer.poll()).await.expect("revoked").unwrap();
    assert_eq!(ev, GroupEvent::Revoked(vec![("t".into(), 0)]));
    let ev = tokio::time::timeout(Duration::from_secs(5), consumer.poll()).await.expect("assigned").unwrap();
    assert_eq!(ev, GroupEvent::Assigned(vec![("t".into(), 0)]));
    let joins: Vec<String> =
        mock.heartbeats().into_iter().filter(|h| h.epoch == 0).map(|h| h.member_id).collect();
    assert_eq!(joins, vec![id.clone(); 4], "two lost answers, the join, the rejoin");
    assert_eq!(consumer.member_id(), id);
    consumer.close().await.unwrap();
    let last = mock.heartbeats().pop().unwrap();
    assert_eq!((last.member_id, last.epoch), (id, -1), "it left under its id");
}
