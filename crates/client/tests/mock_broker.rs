//! The client against an in-process mock broker: an in-memory log per
//! partition behind the real gRPC services, with scripted failures. It
//! checks what the real broker's integration tests cannot force on demand:
//! `NotLeader` retries keep partition order, offsets reach every delivery,
//! and `OffsetOutOfRange` reaches the consumer typed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fjord_client::{
    Client, ClientConfig, Consumer, ConsumerConfig, Error, OffsetSpec, Producer, ProducerConfig,
    ProducerRecord, Seek,
};
use fjord_codec::{split_batches, stamp_batch, validate_batch};
use fjord_proto::pb;
use futures::Stream;
use tonic::{Request, Response, Status};

type Stream2<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

const PARTITIONS: u32 = 2;

#[derive(Default)]
struct State {
    logs: HashMap<u32, Vec<u8>>,
    ends: HashMap<u32, u64>,
    /// Produce calls to fail with NOT_LEADER before accepting.
    not_leader_left: u32,
    produce_calls: u32,
    /// Produce streams opened.
    streams: u32,
    /// The first produce stream answers this many requests, then takes in
    /// nothing more and answers nothing (a broker that stopped on a live
    /// connection); later streams are served.
    first_stream_hangs_after: Option<u32>,
    /// Metadata calls answered: the 2nd to 4th answer UNAVAILABLE (a
    /// broker starting), and topic "late" exists from the 5th on.
    metadata_calls: u32,
}

#[derive(Clone)]
struct Mock {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

fn detailed(code: tonic::Code, detail: pb::ErrorDetail) -> Status {
    Status::with_details(
        code,
        detail.message.clone(),
        fjord_proto::encode_status_details(code, &detail).into(),
    )
}

#[tonic::async_trait]
impl pb::admin_server::Admin for Mock {
    async fn create_topic(
        &self,
        _: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn delete_topic(
        &self,
        _: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn alter_topic(
        &self,
        _: Request<pb::AlterTopicRequest>,
    ) -> Result<Response<pb::AlterTopicResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn list_topics(
        &self,
        _: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        Ok(Response::new(pb::ListTopicsResponse {
            topics: vec![pb::TopicSummary {
                name: "t".into(),
                partitions: PARTITIONS,
                replication_factor: 1,
            }],
        }))
    }
    async fn describe_topic(
        &self,
        _: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        let detail = pb::ErrorDetail {
            code: pb::ErrorCode::UnknownTopic as i32,
            message: "no such topic".into(),
            ..Default::default()
        };
        Err(detailed(tonic::Code::NotFound, detail))
    }
    async fn scrub_topic(
        &self,
        _: Request<pb::ScrubTopicRequest>,
    ) -> Result<Response<pb::ScrubTopicResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn describe_cluster(
        &self,
        _: Request<pb::DescribeClusterRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn metadata(
        &self,
        _: Request<pb::MetadataRequest>,
    ) -> Result<Response<pb::MetadataResponse>, Status> {
        let n = {
            let mut st = self.state.lock().unwrap();
            st.metadata_calls += 1;
            st.metadata_calls
        };
        if (2..=4).contains(&n) {
            return Err(Status::unavailable("this broker has not loaded the cluster metadata yet; retry"));
        }
        let topic = |name: &str| pb::TopicMetadata {
            name: name.into(),
            partitions: (0..PARTITIONS)
                .map(|p| pb::PartitionMetadata { partition: p, leader: 1, replicas: vec![1] })
                .collect(),
        };
        let mut topics = vec![topic("t")];
        if n >= 5 {
            topics.push(topic("late"));
        }
        Ok(Response::new(pb::MetadataResponse {
            brokers: vec![pb::BrokerInfo { id: 1, address: self.addr.to_string(), alive: true }],
            topics,
        }))
    }
}

#[tonic::async_trait]
impl pb::producer_server::Producer for Mock {
    async fn produce(
        &self,
        req: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let req = req.into_inner();
        let mut st = self.state.lock().unwrap();
        st.produce_calls += 1;
        if st.not_leader_left > 0 {
            st.not_leader_left -= 1;
            let detail = pb::ErrorDetail {
                code: pb::ErrorCode::NotLeader as i32,
                message: "moved".into(),
                leader_id: 1,
                leader_address: self.addr.to_string(),
                ..Default::default()
            };
            return Err(detailed(tonic::Code::Unavailable, detail));
        }
        let mut results = Vec::new();
        for pb::PartitionBatch { partition, batch } in req.batches {
            let mut batch = batch.to_vec();
            let header =
                validate_batch(&batch, 1 << 20).map_err(|e| Status::invalid_argument(e.to_string()))?;
            let base = *st.ends.get(&partition).unwrap_or(&0);
            stamp_batch(&mut batch, base, 1, 1);
            st.ends.insert(partition, base + header.record_count as u64);
            st.logs.entry(partition).or_default().extend_from_slice(&batch);
            results.push(pb::PartitionResult {
                partition,
                base_offset: base,
                record_count: header.record_count,
                error: None,
                duplicate: false,
            });
        }
        Ok(Response::new(pb::ProduceResponse { correlation_id: req.correlation_id, results, error: None }))
    }

    async fn init_producer(
        &self,
        _req: Request<pb::InitProducerRequest>,
    ) -> Result<Response<pb::InitProducerResponse>, Status> {
        Ok(Response::new(pb::InitProducerResponse { producer_id: 1, producer_epoch: 0 }))
    }

    type ProduceStreamStream = Stream2<pb::ProduceResponse>;

    /// As the broker does: requests answered in order, request-wide
    /// errors in band.
    async fn produce_stream(
        &self,
        req: Request<tonic::Streaming<pb::ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        use futures::StreamExt;
        let mock = self.clone();
        let hang_after = {
            let mut st = self.state.lock().unwrap();
            st.streams += 1;
            if st.streams == 1 {
                st.first_stream_hangs_after
            } else {
                None
            }
        };
        let mut answered = 0;
        let answers = req.into_inner().then(move |req| {
            let mock = mock.clone();
            answered += 1;
            let hang = hang_after.is_some_and(|n| answered > n);
            async move {
                if hang {
                    // Requests are taken one at a time: this stalls the
                    // stream for good, and nothing after it is written.
                    std::future::pending::<()>().await;
                }
                let req = req?;
                let id = req.correlation_id;
                match pb::producer_server::Producer::produce(&mock, Request::new(req)).await {
                    Ok(resp) => Ok(resp.into_inner()),
                    Err(status) => Ok(pb::ProduceResponse {
                        correlation_id: id,
                        results: vec![],
                        error: fjord_proto::decode_status_details(status.details()),
                    }),
                }
            }
        });
        Ok(Response::new(Box::pin(answers)))
    }

    // The Rust client never calls the record-level API.
    async fn publish(&self, _: Request<pb::PublishRequest>) -> Result<Response<pb::PublishResponse>, Status> {
        Err(Status::unimplemented("the mock serves the batch-level API only"))
    }

    type PublishStreamStream = Stream2<pb::PublishResponse>;

    async fn publish_stream(
        &self,
        _: Request<tonic::Streaming<pb::PublishRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        Err(Status::unimplemented("the mock serves the batch-level API only"))
    }
}

#[tonic::async_trait]
impl pb::consumer_server::Consumer for Mock {
    async fn read(&self, _: Request<pb::ReadRequest>) -> Result<Response<pb::ReadResponse>, Status> {
        Err(Status::unimplemented("the mock serves the batch-level API only"))
    }

    type ReadStreamStream = Stream2<pb::ReadResponse>;

    async fn read_stream(
        &self,
        _: Request<pb::ReadRequest>,
    ) -> Result<Response<Self::ReadStreamStream>, Status> {
        Err(Status::unimplemented("the mock serves the batch-level API only"))
    }

    async fn fetch(&self, req: Request<pb::FetchRequest>) -> Result<Response<pb::FetchResponse>, Status> {
        let req = req.into_inner();
        let (log, end) = {
            let st = self.state.lock().unwrap();
            (
                st.logs.get(&req.partition).cloned().unwrap_or_default(),
                *st.ends.get(&req.partition).unwrap_or(&0),
            )
        };
        if req.offset > end {
            let detail = pb::ErrorDetail {
                code: pb::ErrorCode::OffsetOutOfRange as i32,
                message: format!("offset {} beyond {end}", req.offset),
                log_start_offset: 0,
                log_end_offset: end,
                ..Default::default()
            };
            return Err(detailed(tonic::Code::OutOfRange, detail));
        }
        // Whole batches holding offsets >= req.offset, at most two per answer
        // so the consumer has to come back.
        let mut out = Vec::new();
        let mut next = req.offset;
        for item in split_batches(log.into()).filter_map(Result::ok) {
            let (h, bytes) = item;
            if h.next_offset() > req.offset && out.len() < 2 {
                next = h.next_offset();
                out.push(bytes);
            }
        }
        if out.is_empty() {
            tokio::time::sleep(Duration::from_millis(req.max_wait_ms as u64).min(Duration::from_secs(20)))
                .await;
        }
        Ok(Response::new(pb::FetchResponse {
            topic: req.topic,
            partition: req.partition,
            batches: out.concat().into(),
            next_offset: next,
            high_watermark: end,
            log_start_offset: 0,
        }))
    }

    type SubscribeStream = Stream2<pb::FetchResponse>;

    async fn subscribe(
        &self,
        _: Request<pb::FetchRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(Status::unimplemented("mock"))
    }

    async fn list_offsets(
        &self,
        req: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        let req = req.into_inner();
        let end = *self.state.lock().unwrap().ends.get(&req.partition).unwrap_or(&0);
        let offset = if req.spec == pb::OffsetSpec::Earliest as i32 { 0 } else { end };
        Ok(Response::new(pb::ListOffsetsResponse { offset, log_start_offset: 0, high_watermark: end }))
    }
}

async fn start_mock(not_leader: u32) -> Mock {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = State { not_leader_left: not_leader, ..Default::default() };
    let mock = Mock { addr, state: Arc::new(Mutex::new(state)) };
    let server = tonic::transport::Server::builder()
        .add_service(pb::admin_server::AdminServer::new(mock.clone()))
        .add_service(pb::producer_server::ProducerServer::new(mock.clone()))
        .add_service(pb::consumer_server::ConsumerServer::new(mock.clone()));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(server.serve_with_incoming(incoming));
    mock
}

async fn client(mock: &Mock) -> Client {
    Client::connect(ClientConfig::from_bootstrap(&mock.addr.to_string()).unwrap()).await.unwrap()
}

#[tokio::test]
async fn produce_then_consume_in_order_through_not_leader_retries() {
    let mock = start_mock(3).await;
    let client = client(&mock).await;
    // Small batches so each partition needs many, sent one at a time.
    let config = ProducerConfig { batch_bytes: 1024, linger: Duration::from_millis(2), ..Default::default() };
    let producer = Producer::new(client.clone(), config).unwrap();
    let mut deliveries = Vec::new();
    for i in 0..500u32 {
        let rec = ProducerRecord::new("t", format!("v{i}")).with_key(format!("k{}", i % 7));
        deliveries.push((i, producer.send(rec).await.unwrap()));
    }
    producer.flush().await;
    let mut per_partition: HashMap<u32, Vec<(u64, u32)>> = HashMap::new();
    for (i, d) in deliveries {
        let meta = d.await.unwrap();
        assert_eq!(
            meta.partition,
            fjord_client::partition_for_key(format!("k{}", i % 7).as_bytes(), PARTITIONS)
        );
        per_partition.entry(meta.partition).or_default().push((meta.offset, i));
    }
    // Offsets per partition are 0..n in send order: retries did not reorder.
    for (p, list) in &per_partition {
        let offsets: Vec<u64> = list.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, (0..list.len() as u64).collect::<Vec<_>>(), "partition {p}");
    }
    producer.close().await.unwrap();
    let calls = mock.state.lock().unwrap().produce_calls;
    assert!(calls > 3 + 2, "expected several batches plus 3 refused attempts, saw {calls} calls");

    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    consumer.assign("t", None).await.unwrap();
    consumer.seek_all(Seek::Beginning);
    consumer.stop_at_high_watermark().await.unwrap();
    let mut read: HashMap<u32, Vec<(u64, String)>> = HashMap::new();
    while let Some(rec) = consumer.next().await {
        let rec = rec.unwrap();
        let value = String::from_utf8(rec.value.unwrap().to_vec()).unwrap();
        read.entry(rec.partition).or_default().push((rec.offset, value));
    }
    for (p, list) in &per_partition {
        let want: Vec<(u64, String)> = list.iter().map(|(o, i)| (*o, format!("v{i}"))).collect();
        assert_eq!(read[p], want, "partition {p}");
    }
    let latest = client.list_offsets("t", 0, OffsetSpec::Latest).await.unwrap();
    assert_eq!(latest.high_watermark, per_partition[&0].len() as u64);
}

/// The sender takes queued records in bulk on each wake-up; a burst much
/// larger than one bulk (sends only yield when the queue is full, so on
/// this single-threaded runtime about 1024 queue up at a time) must come
/// back whole, each record once, in order per partition.
#[tokio::test]
async fn a_burst_of_records_is_delivered_in_full() {
    let mock = start_mock(0).await;
    let client = client(&mock).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
    let mut deliveries = Vec::new();
    for i in 0..5000u32 {
        let rec = ProducerRecord::new("t", format!("v{i}")).with_partition(i % PARTITIONS);
        deliveries.push(producer.send(rec).await.unwrap());
    }
    let mut next = HashMap::new();
    for (i, d) in deliveries.into_iter().enumerate() {
        let meta = d.await.unwrap_or_else(|e| panic!("record {i}: {e}"));
        let want = next.entry(meta.partition).or_insert(0u64);
        assert_eq!(meta.offset, *want, "record {i} in partition {}", meta.partition);
        *want += 1;
    }
    assert_eq!(next.values().sum::<u64>(), 5000);
    producer.close().await.unwrap();
    assert!(mock.state.lock().unwrap().streams >= 1, "an idempotent producer sends on a produce stream");
}

/// `send_with` reports each record once through its callback, in order
/// per partition, and a record refused at once gets its error from the
/// call, not from the callback.
#[tokio::test]
async fn callbacks_report_every_record_once() {
    let mock = start_mock(0).await;
    let client = client(&mock).await;
    let config = ProducerConfig { batch_bytes: 4096, ..Default::default() };
    let producer = Producer::new(client.clone(), config).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    for i in 0..2000u32 {
        let seen = seen.clone();
        let rec = ProducerRecord::new("t", format!("v{i}")).with_partition(i % PARTITIONS);
        producer.send_with(rec, move |r| seen.lock().unwrap().push((i, r))).await.unwrap();
    }
    let refused_called = Arc::new(Mutex::new(false));
    let flag = refused_called.clone();
    let too_big = ProducerRecord::new("t", vec![0u8; 8192]);
    let refused = producer.send_with(too_big, move |_| *flag.lock().unwrap() = true).await;
    assert!(matches!(refused, Err(fjord_client::Error::RecordTooLarge { .. })), "{refused:?}");
    producer.close().await.unwrap();

    // In the order the callbacks ran: per partition that is send order.
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(seen.len(), 2000, "one call per record");
    let mut next = HashMap::new();
    for (i, r) in seen {
        let meta = r.unwrap_or_else(|e| panic!("record {i}: {e}"));
        assert_eq!(meta.partition, i % PARTITIONS);
        let want = next.entry(meta.partition).or_insert(0u64);
        assert_eq!(meta.offset, *want, "record {i}: callbacks out of order");
        *want += 1;
    }
    assert!(!*refused_called.lock().unwrap(), "the refused record's callback ran");
}

/// A broker that stops answering on a live stream: the requests on it go
/// unanswered past the deadline, the stream is replaced, and the stalled
/// batches are resent. Partition 1 has a batch stalled on the old stream
/// when partition 0's timeout replaces it, and sends another right after:
/// that one must not overtake the stalled one (a new stream would append
/// it first), so the log holds every record once, in send order. (Routed
/// to the new stream, partition 1's records come out 0, 2, 1.)
#[tokio::test]
async fn batches_stalled_on_a_dead_stream_are_not_overtaken() {
    let mock = start_mock(0).await;
    mock.state.lock().unwrap().first_stream_hangs_after = Some(1);
    let client = client(&mock).await;
    let config = ProducerConfig {
        batch_bytes: 1024,
        // A small record's batch waits a second; a big one fills a batch.
        linger: Duration::from_secs(1),
        request_timeout: Duration::from_millis(1500),
        max_in_flight_requests: 20,
        ..Default::default()
    };
    let producer = Producer::new(client.clone(), config).unwrap();
    let big =
        |p: u32, i: u32| ProducerRecord::new("t", format!("p{p}-{i}-{}", "x".repeat(900))).with_partition(p);
    let small = |p: u32, i: u32| ProducerRecord::new("t", format!("p{p}-{i}")).with_partition(p);
    let mut deliveries = Vec::new();
    // Partition 1's first batch is acknowledged (the one request the
    // stream answers) while its next batch is open, so it may pipeline.
    let first = producer.send(big(1, 0)).await.unwrap();
    deliveries.push(producer.send(small(1, 1)).await.unwrap());
    first.await.unwrap();
    // Partition 0 stalls on the stream; it times out 1.5 s from now and
    // the stream is replaced. Partition 1's open batch goes at 1 s and
    // stalls too (it times out at 2.5 s); its next batch goes at 1.7 s.
    deliveries.push(producer.send(big(0, 0)).await.unwrap());
    tokio::time::sleep(Duration::from_millis(1700)).await;
    deliveries.push(producer.send(big(1, 2)).await.unwrap());
    producer.flush().await;
    for (i, d) in deliveries.into_iter().enumerate() {
        d.await.unwrap_or_else(|e| panic!("delivery {i}: {e}"));
    }
    producer.close().await.unwrap();

    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    consumer.assign("t", None).await.unwrap();
    consumer.seek_all(Seek::Beginning);
    consumer.stop_at_high_watermark().await.unwrap();
    let mut read: HashMap<u32, Vec<String>> = HashMap::new();
    while let Some(rec) = consumer.next().await {
        let rec = rec.unwrap();
        let value = String::from_utf8(rec.value.unwrap().to_vec()).unwrap();
        read.entry(rec.partition).or_default().push(value.chars().take(6).collect());
    }
    assert_eq!(read[&0], ["p0-0-x"]);
    assert_eq!(read[&1], ["p1-0-x", "p1-1", "p1-2-x"]);
}

#[tokio::test]
async fn typed_errors_reach_the_caller() {
    let mock = start_mock(0).await;
    let client = client(&mock).await;
    let producer =
        Producer::new(client.clone(), ProducerConfig { batch_bytes: 1024, ..Default::default() }).unwrap();
    let big = ProducerRecord::new("t", vec![0u8; 2000]);
    assert!(matches!(producer.send(big).await, Err(Error::RecordTooLarge { max: 1024, .. })));
    assert!(matches!(producer.send(ProducerRecord::new("nope", "x")).await, Err(Error::UnknownTopic { .. })));
    let rec = ProducerRecord::new("t", "x").with_partition(9);
    assert!(matches!(producer.send(rec).await, Err(Error::UnknownPartition { .. })));
    let meta = producer.send(ProducerRecord::new("t", "x").with_partition(1)).await.unwrap().await.unwrap();
    assert_eq!((meta.partition, meta.offset), (1, 0));
    producer.close().await.unwrap();

    assert!(matches!(client.describe_topic("t").await, Err(Error::UnknownTopic { .. })));
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    consumer.assign("t", Some(&[1])).await.unwrap();
    consumer.seek("t", 1, Seek::Offset(1_000)).unwrap();
    match consumer.next().await {
        Some(Err(Error::OffsetOutOfRange { log_start: 0, log_end: 1, .. })) => {}
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    // The failed partition is stopped until the next seek.
    assert!(consumer.next().await.is_none());
    consumer.seek("t", 1, Seek::FromEnd(1)).unwrap();
    consumer.stop_at("t", 1, 1).unwrap();
    let rec = consumer.next().await.unwrap().unwrap();
    assert_eq!((rec.offset, rec.value.as_deref()), (0, Some(&b"x"[..])));
    assert!(consumer.next().await.is_none());
    assert_eq!(consumer.position("t", 1), Some(1));

    // Reading an empty partition to its end ends without a long poll.
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig { max_wait: Duration::from_secs(30), ..Default::default() },
    );
    consumer.assign("t", Some(&[0])).await.unwrap();
    consumer.seek_all(Seek::Beginning);
    consumer.stop_at_high_watermark().await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await;
    assert!(matches!(ended, Ok(None)), "{ended:?}");
}

#[tokio::test]
async fn a_starting_broker_delays_a_send_but_does_not_fail_it() {
    let mock = start_mock(0).await;
    let client = client(&mock).await;
    // "late" is not cached: finding it meets three UNAVAILABLE answers first.
    assert_eq!(client.partition_count("late").await.unwrap(), PARTITIONS);
    assert!(mock.state.lock().unwrap().metadata_calls >= 5);
}
