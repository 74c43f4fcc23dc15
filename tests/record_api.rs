//! The record-level API (`Publish`, `PublishStream`, `Read`, `ReadStream`)
//! driven over raw gRPC against a real broker: placement by key and
//! partition, headers and nulls round-trip, compressed topics, idempotent
//! retries, following the tail, and bad input with statuses that name the
//! field and the limit while the broker keeps serving.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{expect, Broker};
use fjord_proto::pb::{
    self, admin_client::AdminClient, consumer_client::ConsumerClient, producer_client::ProducerClient,
};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;

/// Bound on every call and wait here.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

async fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}")).unwrap().timeout(CALL_TIMEOUT).connect().await.unwrap()
}

fn record(key: Option<&str>, value: Option<&str>) -> pb::Record {
    pb::Record {
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        ..Default::default()
    }
}

fn publish(topic: &str, records: Vec<pb::Record>) -> pb::PublishRequest {
    pb::PublishRequest { topic: topic.into(), records, ..Default::default() }
}

fn read_req(topic: &str, partition: u32, offset: u64) -> pb::ReadRequest {
    pb::ReadRequest { topic: topic.into(), partition, offset, ..Default::default() }
}

async fn create(admin: &mut AdminClient<Channel>, name: &str, partitions: u32, compression: Option<&str>) {
    let config = pb::TopicConfig { compression: compression.map(str::to_owned), ..Default::default() };
    admin
        .create_topic(pb::CreateTopicRequest {
            name: name.into(),
            partitions,
            config: Some(config),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Every record of a partition from the start, read in small steps.
async fn read_all(
    consumer: &mut ConsumerClient<Channel>,
    topic: &str,
    partition: u32,
) -> Vec<pb::ConsumerRecord> {
    let mut out = Vec::new();
    let start = pb::ReadRequest {
        start: pb::OffsetSpec::Earliest as i32,
        max_records: 7,
        ..read_req(topic, partition, 0)
    };
    let mut resp = consumer.read(start).await.unwrap().into_inner();
    loop {
        assert!(resp.records.len() <= 7, "max_records is a bound");
        out.extend(resp.records);
        if resp.next_offset >= resp.high_watermark {
            return out;
        }
        let next = pb::ReadRequest { max_records: 7, ..read_req(topic, partition, resp.next_offset) };
        resp = consumer.read(next).await.unwrap().into_inner();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_placed_stored_and_read_back_as_sent() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    let ch = channel(&broker.addr).await;
    let (mut admin, mut producer, mut consumer) =
        (AdminClient::new(ch.clone()), ProducerClient::new(ch.clone()), ConsumerClient::new(ch.clone()));

    for (topic, compression) in [("plain", None), ("packed", Some("zstd"))] {
        create(&mut admin, topic, 4, compression).await;
        // Keyed records with headers (a repeated key, a null value), a
        // tombstone, an explicit partition, and keyless records.
        let mut records = Vec::new();
        for i in 0..200u32 {
            let key = format!("key-{}", i % 13);
            let mut r = record(Some(&key), Some(&format!("value-{i}")));
            r.headers = vec![
                pb::Header { key: "n".into(), value: Some(Bytes::from(i.to_string())) },
                pb::Header { key: "n".into(), value: None },
            ];
            r.timestamp_ms = 1_700_000_000_000 + i as i64;
            records.push(r);
        }
        records.push(record(Some("gone"), None));
        records.push(pb::Record { partition: Some(3), ..record(None, Some("explicit")) });
        records.extend((0..5).map(|i| record(None, Some(&format!("keyless-{i}")))));
        let sent = records.clone();
        let resp = producer.publish(publish(topic, records)).await.unwrap().into_inner();
        assert_eq!(resp.results.len(), sent.len());
        for (r, res) in sent.iter().zip(&resp.results) {
            assert!(res.error.is_none(), "{topic}: {res:?}");
            if let (Some(key), None) = (&r.key, r.partition) {
                assert_eq!(res.partition, fjord_client::partition_for_key(key, 4), "murmur2 placement");
            }
        }
        assert_eq!(resp.results[201].partition, 3, "an explicit partition is kept");
        let keyless: Vec<u32> = resp.results[202..].iter().map(|r| r.partition).collect();
        assert!(keyless.iter().all(|p| *p == keyless[0]), "keyless records of a request stick: {keyless:?}");

        // Read back: each partition holds its records in request order with
        // every field as sent, at the offsets Publish answered.
        let mut got = 0;
        for partition in 0..4 {
            let read = read_all(&mut consumer, topic, partition).await;
            let want: Vec<(&pb::Record, &pb::RecordResult)> =
                sent.iter().zip(&resp.results).filter(|(_, res)| res.partition == partition).collect();
            assert_eq!(read.len(), want.len(), "{topic}/{partition}");
            for (c, (r, res)) in read.iter().zip(&want) {
                assert_eq!((c.partition, c.offset), (partition, res.offset));
                assert_eq!((&c.key, &c.value), (&r.key, &r.value), "{topic}/{partition}@{}", c.offset);
                assert_eq!(c.headers, r.headers);
                if r.timestamp_ms != 0 {
                    assert_eq!(c.timestamp_ms, r.timestamp_ms);
                } else {
                    assert!(c.timestamp_ms > 1_700_000_000_000, "broker time");
                }
            }
            got += read.len();
        }
        assert_eq!(got, sent.len());
    }

    // ReadStream from the end follows what is published next, skipping the
    // control batch a leader writes.
    let latest = pb::ReadRequest { start: pb::OffsetSpec::Latest as i32, ..read_req("plain", 1, 0) };
    let mut stream = consumer.read_stream(latest).await.unwrap().into_inner();
    let more: Vec<pb::Record> = (0..5)
        .map(|i| pb::Record { partition: Some(1), ..record(None, Some(&format!("tail-{i}"))) })
        .collect();
    let answered = producer.publish(publish("plain", more)).await.unwrap().into_inner();
    let mut followed = Vec::new();
    while followed.len() < 5 {
        let resp = tokio::time::timeout(CALL_TIMEOUT, stream.next())
            .await
            .expect("stream answers")
            .unwrap()
            .unwrap();
        followed.extend(resp.records);
    }
    let offsets: Vec<u64> = followed.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, answered.results.iter().map(|r| r.offset).collect::<Vec<_>>());
    assert_eq!(followed[4].value.as_deref(), Some(&b"tail-4"[..]));

    // PublishStream answers in request order, by correlation id.
    let requests: Vec<pb::PublishRequest> = (0..20u64)
        .map(|i| pb::PublishRequest {
            correlation_id: 100 + i,
            ..publish("plain", vec![record(Some("s"), Some("v"))])
        })
        .collect();
    let mut answers = producer.publish_stream(tokio_stream::iter(requests)).await.unwrap().into_inner();
    let mut ids = Vec::new();
    let mut last = None;
    while let Some(a) = answers.next().await {
        let a = a.unwrap();
        assert!(a.error.is_none(), "{a:?}");
        let off = a.results[0].offset;
        assert!(last.is_none_or(|l| off > l), "one key's records are stored in the order sent");
        last = Some(off);
        ids.push(a.correlation_id);
    }
    assert_eq!(ids, (100..120).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_publish_retried_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    let ch = channel(&broker.addr).await;
    let (mut admin, mut producer, mut consumer) =
        (AdminClient::new(ch.clone()), ProducerClient::new(ch.clone()), ConsumerClient::new(ch.clone()));
    create(&mut admin, "once", 2, None).await;
    let id = producer.init_producer(pb::InitProducerRequest {}).await.unwrap().into_inner();
    let req = |seq: i32, n: usize| pb::PublishRequest {
        producer_id: Some(id.producer_id),
        producer_epoch: Some(id.producer_epoch),
        base_sequence: Some(seq),
        ..publish(
            "once",
            (0..n)
                .map(|i| pb::Record { partition: Some(1), ..record(None, Some(&format!("r{seq}-{i}"))) })
                .collect(),
        )
    };
    let first = producer.publish(req(0, 3)).await.unwrap().into_inner();
    let retry = producer.publish(req(0, 3)).await.unwrap().into_inner();
    assert!(first.results.iter().all(|r| !r.duplicate && r.error.is_none()), "{first:?}");
    assert!(retry.results.iter().all(|r| r.duplicate), "the retry is recognised: {retry:?}");
    let offsets = |r: &pb::PublishResponse| r.results.iter().map(|r| r.offset).collect::<Vec<_>>();
    assert_eq!(offsets(&first), offsets(&retry), "answered with the first copy's offsets");
    producer.publish(req(3, 2)).await.unwrap();
    // A gap is refused in band, for the partition's records.
    let gap = producer.publish(req(9, 1)).await.unwrap().into_inner();
    let err = gap.results[0].error.as_ref().expect("a gap fails");
    assert_eq!(err.code(), pb::ErrorCode::OutOfOrderSequence, "{err:?}");
    let values: Vec<Bytes> =
        read_all(&mut consumer, "once", 1).await.into_iter().filter_map(|r| r.value).collect();
    assert_eq!(values, ["r0-0", "r0-1", "r0-2", "r3-0", "r3-1"].map(|v| Bytes::from(v.as_bytes())).to_vec());

    // Half-set producer fields, or records not naming one partition.
    let half = pb::PublishRequest { base_sequence: None, ..req(5, 1) };
    expect(
        producer.publish(half).await,
        Code::InvalidArgument,
        pb::ErrorCode::InvalidRequest,
        &["set all three"],
    );
    let mut mixed = req(5, 2);
    mixed.records[1].partition = Some(0);
    expect(
        producer.publish(mixed).await,
        Code::InvalidArgument,
        pb::ErrorCode::InvalidRequest,
        &["same partition"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_record_requests_name_the_field_and_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(&dir.path().join("data"), &["--batch-bytes-max", "65536"]);
    let ch = channel(&broker.addr).await;
    let (mut admin, mut producer, mut consumer) =
        (AdminClient::new(ch.clone()), ProducerClient::new(ch.clone()), ConsumerClient::new(ch.clone()));
    create(&mut admin, "t", 3, None).await;
    let one = || vec![record(None, Some("v"))];
    let (bad, invalid) = (Code::InvalidArgument, pb::ErrorCode::InvalidRequest);

    expect(producer.publish(publish("", one())).await, bad, invalid, &["topic", "249"]);
    expect(
        producer.publish(publish("nope", one())).await,
        Code::NotFound,
        pb::ErrorCode::UnknownTopic,
        &["nope"],
    );
    expect(producer.publish(publish("__consumer_offsets", one())).await, bad, invalid, &["reserved"]);
    expect(producer.publish(publish("t", vec![])).await, bad, invalid, &["records", "at least one"]);
    let big = "x".repeat(70_000);
    let over = vec![record(None, Some("ok")), record(None, Some(&big))];
    expect(
        producer.publish(publish("t", over)).await,
        bad,
        pb::ErrorCode::MessageTooLarge,
        &["records[1]", "65464"],
    );
    let outside = vec![pb::Record { partition: Some(3), ..record(None, Some("v")) }];
    expect(
        producer.publish(publish("t", outside)).await,
        bad,
        invalid,
        &["records[0].partition", "3 partition"],
    );
    let past = vec![pb::Record { timestamp_ms: -5, ..record(None, Some("v")) }];
    expect(producer.publish(publish("t", past)).await, bad, invalid, &["records[0].timestamp_ms"]);
    let long_key = vec![pb::Record {
        headers: vec![pb::Header { key: "k".repeat(70_000), value: None }],
        ..record(None, Some("v"))
    }];
    let long_key = pb::PublishRequest { records: long_key, ..publish("t", vec![]) };
    expect(producer.publish(long_key).await, bad, invalid, &["records[0].headers[0].key", "65535"]);
    let million: Vec<pb::Record> = (0..1_000_000).map(|_| pb::Record::default()).collect();
    expect(producer.publish(publish("t", million)).await, bad, invalid, &["1000000", "100000"]);
    let acks = pb::PublishRequest { acks: 9, ..publish("t", one()) };
    expect(producer.publish(acks).await, bad, invalid, &["acks"]);
    let slow = pb::PublishRequest { timeout_ms: 400_000, ..publish("t", one()) };
    expect(producer.publish(slow).await, bad, invalid, &["timeout_ms", "300000"]);
    // A refused request wrote nothing (each partition holds only the
    // leader's no-op).
    for p in 0..3 {
        assert!(read_all(&mut consumer, "t", p).await.is_empty(), "partition {p} is empty");
    }

    // Read.
    expect(consumer.read(read_req("t", 7, 0)).await, Code::NotFound, pb::ErrorCode::UnknownPartition, &["7"]);
    expect(
        consumer.read(read_req("t", 0, 99)).await,
        Code::OutOfRange,
        pb::ErrorCode::OffsetOutOfRange,
        &["99"],
    );
    let many = pb::ReadRequest { max_records: 20_000, ..read_req("t", 0, 0) };
    expect(consumer.read(many).await, bad, invalid, &["max_records", "10000"]);
    let wide = pb::ReadRequest { max_bytes: 1 << 30, ..read_req("t", 0, 0) };
    expect(consumer.read(wide).await, bad, invalid, &["max_bytes"]);
    let long = pb::ReadRequest { max_wait_ms: 60_000, ..read_req("t", 0, 0) };
    expect(consumer.read(long).await, bad, invalid, &["max_wait_ms", "30000"]);
    let spec = pb::ReadRequest { start: 42, ..read_req("t", 0, 0) };
    expect(consumer.read(spec).await, bad, invalid, &["start"]);
    expect(
        consumer.read_stream(read_req("t", 0, 99)).await,
        Code::OutOfRange,
        pb::ErrorCode::OffsetOutOfRange,
        &["99"],
    );

    // Still serving, and a long poll waits for a first record.
    let ok = producer.publish(publish("t", one())).await.unwrap().into_inner();
    let p = ok.results[0].partition;
    let next = ok.results[0].offset + 1;
    let wait = pb::ReadRequest { max_wait_ms: 300, ..read_req("t", p, next) };
    let started = std::time::Instant::now();
    let empty = consumer.read(wait).await.unwrap().into_inner();
    assert!(empty.records.is_empty() && started.elapsed() >= Duration::from_millis(250), "{empty:?}");
    assert!(broker.is_running());
}
