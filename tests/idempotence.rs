//! The idempotent producer: a batch retried after a timeout, a leader's
//! death or a broker restart is stored once, in order; a sequence gap or a
//! stale epoch is refused with its documented error.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::load::{busiest_leader, check, connect, read_all, start_writers};
use common::{Broker, Cluster};
use fjord_client::{Producer, ProducerConfig};
use fjord_codec::BatchBuilder;
use fjord_proto::internal::{raft_client::RaftClient, Faults};
use fjord_proto::pb::{self, producer_client::ProducerClient, ErrorCode};

/// Holds every broker's produce responses `ms` after commit (0: release).
async fn set_ack_delay(cluster: &Cluster, ms: u32) {
    for (i, b) in cluster.brokers.iter().enumerate() {
        if b.is_some() {
            let mut raft = RaftClient::connect(format!("http://{}", cluster.addrs[i])).await.unwrap();
            raft.set_faults(Faults { ack_delay_ms: ms, ..Default::default() }).await.unwrap();
        }
    }
}

/// How many times brokers under `root` answered a retry from the log.
fn retries_answered(root: &std::path::Path) -> usize {
    std::fs::read_dir(root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".broker.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .map(|log| log.matches("idempotent retry answered").count())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_through_timeouts_and_leader_kills_are_stored_exactly_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3);
    let client = connect(&cluster.bootstrap()).await;
    client.create_topic("exactly", 3, 3, Default::default()).await.unwrap();
    // Short request timeouts, so held acknowledgements make the producer
    // give up on attempts that did commit, and retry them.
    let config = ProducerConfig {
        linger: Duration::from_millis(2),
        request_timeout: Duration::from_millis(800),
        ..ProducerConfig::default()
    };
    let producer = Arc::new(Producer::new(client.clone(), config).unwrap());
    let writers = start_writers(producer.clone(), "exactly", 3);

    for cycle in 0..3 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        set_ack_delay(&cluster, 1500).await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        set_ack_delay(&cluster, 0).await;
        let victim = busiest_leader(&client, "exactly").await;
        let before = writers.acked.lock().unwrap().len();
        cluster.kill(victim);
        let killed_at = Instant::now();
        while writers.acked.lock().unwrap().len() < before + 100 {
            assert!(killed_at.elapsed() < Duration::from_secs(30), "cycle {cycle}: no progress");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cluster.restart(victim);
    }
    let failed = writers.failed.clone();
    let acked = writers.finish().await;
    eprintln!("failed deliveries: {:?}", failed.lock().unwrap());
    let closing = Instant::now();
    Arc::try_unwrap(producer).ok().unwrap().close().await.unwrap();
    eprintln!("close took {:?}", closing.elapsed());
    assert!(acked.len() > 1000, "writers made progress: {}", acked.len());

    let got = read_all(&cluster.bootstrap(), "exactly").await;
    let stored: usize = got.values().map(Vec::len).sum();
    let duplicates = check(&acked, &got);
    let answered = retries_answered(dir.path());
    eprintln!("{} acknowledged, {stored} stored, {answered} retries answered from the log", acked.len());
    assert_eq!(duplicates, 0, "no record is stored twice");
    assert!(answered > 0, "the held acknowledgements caused retries of committed batches");
}

/// One idempotent batch of one record, stamped now (an old timestamp
/// would let retention delete it, and with it what the broker knows).
fn batch(pid: i64, epoch: i16, seq: i32, value: &str) -> Bytes {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let mut b = BatchBuilder::new(1 << 20).producer(pid, epoch, seq);
    b.push(None, Some(value.as_bytes()), &[], now as i64).unwrap();
    b.finish()
}

/// Produces `batch` to partition 0 of "raw"; the partition's result.
async fn produce(addr: &str, batch: Bytes) -> pb::PartitionResult {
    let mut c = ProducerClient::connect(format!("http://{addr}")).await.unwrap();
    let req = pb::ProduceRequest {
        topic: "raw".into(),
        batches: vec![pb::PartitionBatch { partition: 0, batch }],
        ..Default::default()
    };
    c.produce(req).await.unwrap().into_inner().results.pop().unwrap()
}

fn error_code(r: &pb::PartitionResult) -> Option<ErrorCode> {
    r.error.as_ref().map(|e| e.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_recognised_after_a_restart_and_bad_sequences_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = Broker::start(&data, &[]);
    let client = connect(&broker.addr).await;
    client.create_topic("raw", 1, 1, Default::default()).await.unwrap();
    let (pid, epoch) = client.init_producer().await.unwrap();
    let (other, _) = client.init_producer().await.unwrap();
    assert!(pid >= 0 && epoch == 0 && other != pid, "ids are unique: {pid} {other}");

    let first = produce(&broker.addr, batch(pid, 0, 0, "a")).await;
    assert_eq!((error_code(&first), first.duplicate), (None, false));
    let retry = produce(&broker.addr, batch(pid, 0, 0, "a")).await;
    assert_eq!((error_code(&retry), retry.duplicate, retry.base_offset), (None, true, first.base_offset));

    // A crash and a restart: the sequence state comes back from the log.
    broker.kill();
    let mut broker = Broker::start(&data, &[]);
    let client = connect(&broker.addr).await;
    let after = produce(&broker.addr, batch(pid, 0, 0, "a")).await;
    assert_eq!((error_code(&after), after.duplicate, after.base_offset), (None, true, first.base_offset));
    let next = produce(&broker.addr, batch(pid, 0, 1, "b")).await;
    assert_eq!((error_code(&next), next.duplicate), (None, false));
    assert!(next.base_offset > first.base_offset);
    let (third, _) = client.init_producer().await.unwrap();
    assert!(third != pid && third != other, "ids are never reused across restarts");

    // A gap names the sequence expected.
    let gap = produce(&broker.addr, batch(pid, 0, 5, "gap")).await;
    assert_eq!(error_code(&gap), Some(ErrorCode::OutOfOrderSequence));
    assert!(gap.error.as_ref().unwrap().message.contains("next expected is 2"), "{gap:?}");
    // A new epoch starts over at 0; the old one is then fenced.
    let bumped = produce(&broker.addr, batch(pid, 1, 0, "c")).await;
    assert_eq!(error_code(&bumped), None);
    let stale = produce(&broker.addr, batch(pid, 0, 2, "stale")).await;
    assert_eq!(error_code(&stale), Some(ErrorCode::ProducerFenced), "{stale:?}");
    let not_zero = produce(&broker.addr, batch(pid, 2, 7, "d")).await;
    assert_eq!(error_code(&not_zero), Some(ErrorCode::OutOfOrderSequence));

    // Half-set producer fields are malformed: the whole request is refused.
    let mut c = ProducerClient::connect(format!("http://{}", broker.addr)).await.unwrap();
    let half = pb::ProduceRequest {
        topic: "raw".into(),
        batches: vec![pb::PartitionBatch { partition: 0, batch: batch(pid, -1, 3, "half") }],
        ..Default::default()
    };
    let status = c.produce(half).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("producer id"), "{}", status.message());

    // What the log holds: each accepted batch once.
    let got = read_all(&broker.addr, "raw").await;
    let values: Vec<&str> = got[&0].iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(values, ["a", "b", "c"]);
    broker.terminate();
}

/// A batch the broker refuses for good (here: larger than the broker's
/// batch limit) fails alone. The batches pipelined behind it, which the
/// broker refused as out of sequence, move to the producer's next epoch
/// and are stored, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_fails_alone_and_the_batches_behind_it_are_restamped() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &["--batch-bytes-max", "65536"]);
    let client = connect(&broker.addr).await;
    client.create_topic("refused", 1, 1, Default::default()).await.unwrap();
    // Batches close only when full (256 KiB) until the flush: the first
    // holds the 60 small records before the big one (under the broker's
    // 64 KiB), the second the big one and the small ones that fit after it
    // (refused), the third the rest (under 64 KiB again).
    let config = ProducerConfig { linger: Duration::from_secs(60), ..ProducerConfig::default() };
    let producer = Producer::new(client.clone(), config).unwrap();
    let small = |i: usize| format!("{i:04}{}", "s".repeat(1020));
    let mut deliveries = Vec::new();
    for i in 0..60 {
        deliveries
            .push((small(i), producer.send(fjord_client::ProducerRecord::new("refused", small(i))).await));
    }
    let big = format!("big{}", "b".repeat(200 * 1024));
    deliveries.push((big.clone(), producer.send(fjord_client::ProducerRecord::new("refused", big)).await));
    for i in 60..160 {
        deliveries
            .push((small(i), producer.send(fjord_client::ProducerRecord::new("refused", small(i))).await));
    }
    producer.flush().await;
    let (mut stored, mut refused) = (Vec::new(), Vec::new());
    for (value, d) in deliveries {
        match d.unwrap().await {
            Ok(meta) => stored.push((meta.offset, value)),
            Err(fjord_client::Error::MessageTooLarge { .. }) => refused.push(value),
            Err(e) => panic!("record {}: {e}", &value[..4]),
        }
    }
    producer.close().await.unwrap();
    assert!(refused.iter().any(|v| v.starts_with("big")), "the big record's batch was refused");
    assert!(stored.len() > 60 && stored.last().unwrap().1.starts_with("0159"), "later batches were stored");
    assert!(refused.len() < 100, "only the refused batch failed: {} records", refused.len());
    // Acknowledged offsets are consecutive (after the leader's no-op), and
    // the log is exactly them.
    let offsets: Vec<u64> = stored.iter().map(|(o, _)| *o).collect();
    let first = offsets[0];
    assert_eq!(offsets, (first..first + stored.len() as u64).collect::<Vec<_>>());
    let got = read_all(&broker.addr, "refused").await;
    assert_eq!(got[&0], stored);
}
