//! Reading the tail as it grows (long-poll fetch, server-streaming
//! subscribe, `fjord tail --follow`) and background retention.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{fjord_bin, fjord_ok, Broker};
use fjord_codec::BatchBuilder;
use fjord_proto::pb::{self, consumer_client::ConsumerClient, producer_client::ProducerClient};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

fn batch(value: &str) -> Bytes {
    let mut b = BatchBuilder::new(1 << 20);
    b.push(None, Some(value.as_bytes()), &[], fjord_now_ms()).unwrap();
    b.finish()
}

fn fjord_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Values of the records of the non-control batches (a Raft leader's no-op
/// is a control batch consumers skip).
fn values(batches: &Bytes) -> Vec<String> {
    fjord_codec::split_batches(batches.clone())
        .map(Result::unwrap)
        .filter(|(h, _)| !h.is_control())
        .flat_map(|(_, b)| fjord_codec::records(&b).unwrap())
        .map(|r| String::from_utf8(r.unwrap().value.unwrap().to_vec()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_and_subscribe_deliver_new_records_as_they_are_committed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    fjord_ok(&broker.addr, &["topic", "create", "live", "--partitions", "1"], b"");
    let ch = Channel::from_shared(format!("http://{}", broker.addr)).unwrap().connect().await.unwrap();
    let (mut consumer, mut producer) = (ConsumerClient::new(ch.clone()), ProducerClient::new(ch));
    let produce = |v: &str| pb::ProduceRequest {
        topic: "live".into(),
        batches: vec![pb::PartitionBatch { partition: 0, batch: batch(v) }],
        ..Default::default()
    };

    // A long poll at the end waits, and returns as soon as a record is committed.
    let latest = pb::ListOffsetsRequest {
        topic: "live".into(),
        partition: 0,
        spec: pb::OffsetSpec::Latest as i32,
        timestamp_ms: 0,
    };
    let end = consumer.list_offsets(latest).await.unwrap().into_inner().offset;
    let fetch = pb::FetchRequest {
        topic: "live".into(),
        partition: 0,
        offset: end,
        min_bytes: 1,
        max_wait_ms: 10_000,
        ..Default::default()
    };
    let mut c2 = consumer.clone();
    let started = Instant::now();
    let waiting = tokio::spawn(async move { c2.fetch(fetch).await.unwrap().into_inner() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the fetch waits for data");
    producer.produce(produce("first")).await.unwrap();
    let got = waiting.await.unwrap();
    assert_eq!(values(&got.batches), ["first"]);
    assert!(started.elapsed() < Duration::from_secs(5), "woken by the commit, not the timeout");

    // With nothing to read, a long poll returns empty at its deadline.
    let empty = pb::FetchRequest {
        topic: "live".into(),
        partition: 0,
        offset: got.next_offset,
        min_bytes: 1,
        max_wait_ms: 200,
        ..Default::default()
    };
    let r = consumer.fetch(empty).await.unwrap().into_inner();
    assert!(r.batches.is_empty());
    assert_eq!((r.next_offset, r.high_watermark), (got.next_offset, got.next_offset));

    // Subscribe from the start follows the tail.
    let sub = pb::FetchRequest { topic: "live".into(), partition: 0, offset: 0, ..Default::default() };
    let mut stream = consumer.subscribe(sub).await.unwrap().into_inner();
    let mut seen = Vec::new();
    for i in 0..5 {
        if i > 0 {
            producer.produce(produce(&format!("next-{i}"))).await.unwrap();
        }
        while seen.len() < i + 1 {
            let chunk =
                tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap().unwrap();
            seen.extend(values(&chunk.batches));
        }
    }
    assert_eq!(seen, ["first", "next-1", "next-2", "next-3", "next-4"]);

    // Deleting the topic ends the subscription with NOT_FOUND.
    fjord_ok(&broker.addr, &["topic", "delete", "live"], b"");
    let end = tokio::time::timeout(Duration::from_secs(40), stream.next()).await.unwrap();
    match end {
        Some(Err(status)) => assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}"),
        None => {}
        Some(Ok(chunk)) => panic!("unexpected data after delete: {chunk:?}"),
    }
}

#[test]
fn tail_follow_prints_records_as_they_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    fjord_ok(&broker.addr, &["topic", "create", "f", "--partitions", "2"], b"");
    fjord_ok(&broker.addr, &["publish", "f"], b"before\n");
    let mut tail = Command::new(fjord_bin())
        .args(["--broker", &broker.addr, "tail", "f", "--from-beginning", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        while let Some(Ok(line)) = lines.next() {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next = || rx.recv_timeout(Duration::from_secs(15)).expect("tail --follow printed a line");
    assert_eq!(next(), "before");
    for i in 0..3 {
        fjord_ok(&broker.addr, &["publish", "f", "--partition", "1"], format!("live-{i}\n").as_bytes());
        assert_eq!(next(), format!("live-{i}"));
    }
    let _ = tail.kill();
    let _ = tail.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_segments_in_the_background_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &["--maintenance-interval", "200ms"]);
    fjord_ok(
        &broker.addr,
        &[
            "topic",
            "create",
            "short",
            "--partitions",
            "1",
            "--segment-bytes",
            "1024",
            "--retention-ms",
            "1500",
        ],
        b"",
    );
    let lines: String = (0..200).map(|i| format!("record {i} {}\n", "z".repeat(40))).collect();
    fjord_ok(&broker.addr, &["publish", "short", "--batch-bytes", "512"], lines.as_bytes());
    let c = common::client(&broker.addr).await;
    let before = c.list_offsets("short", 0, fjord_client::OffsetSpec::Earliest).await.unwrap();
    let end = before.high_watermark;
    assert_eq!(before.log_start_offset, 0);
    assert!(end >= 200, "200 records (and the leader's no-op) are in: {end}");
    // Within a few maintenance rounds after 1.5 s, everything is gone,
    // the idle active segment included.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = c.list_offsets("short", 0, fjord_client::OffsetSpec::Earliest).await.unwrap();
        // The broker logs each deletion just after it happens.
        if o.log_start_offset == end && broker.log().contains("retention deleted a segment") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention did not run or was not logged: log start {}; log:\n{}",
            o.log_start_offset,
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = common::fjord(&broker.addr, &["tail", "short", "--offset", "0", "--partition", "0"], b"");
    assert!(String::from_utf8_lossy(&out.stderr).contains("out of range"), "reads below the log start fail");
    // New records still go in after everything expired.
    fjord_ok(&broker.addr, &["publish", "short"], b"after\n");
    let text = fjord_ok(&broker.addr, &["tail", "short", "--from-beginning"], b"");
    assert_eq!(text, "after\n");
}
