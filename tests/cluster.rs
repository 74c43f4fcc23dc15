//! Three-broker clusters: replicated partitions keep accepting and serving
//! writes when brokers die, lose nothing acknowledged, converge byte for
//! byte, survive a network partition and a full restart.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::load::{busiest_leader, check, connect, read_all, start_writers};
use common::Cluster;
use fjord_client::{Producer, ProducerConfig, ProducerRecord};
use fjord_proto::internal::{raft_client::RaftClient, Faults};
use fjord_proto::pb::{self, producer_client::ProducerClient};
use fjord_storage::{Log, LogConfig};

const PARTITIONS: u32 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_leaders_loses_nothing_and_replicas_converge_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3);
    let client = connect(&cluster.bootstrap()).await;
    client.create_topic("replicated", PARTITIONS, 3, Default::default()).await.unwrap();
    let producer = Arc::new(
        Producer::new(
            client.clone(),
            ProducerConfig { linger: Duration::from_millis(2), ..ProducerConfig::default() },
        )
        .unwrap(),
    );
    let writers = start_writers(producer.clone(), "replicated", 3);

    // Kill the busiest leader, let the others carry on, bring it back; three times.
    for cycle in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let victim = busiest_leader(&client, "replicated").await;
        let before = writers.acked.lock().unwrap().len();
        cluster.kill(victim);
        let killed_at = Instant::now();
        // The producer resumes on its own: acknowledgements keep coming.
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writers.acked.lock().unwrap().len() > before + 100 {
                break;
            }
            assert!(
                killed_at.elapsed() < Duration::from_secs(30),
                "cycle {cycle}: no progress after killing broker {victim}"
            );
        }
        eprintln!("cycle {cycle}: killed broker {victim}; writes resumed within {:?}", killed_at.elapsed());
        cluster.restart(victim);
    }
    let acked = writers.finish().await;
    Arc::try_unwrap(producer).ok().unwrap().close().await.unwrap();
    assert!(acked.len() > 1000, "writers made progress: {}", acked.len());

    let got = read_all(&cluster.bootstrap(), "replicated").await;
    let duplicates = check(&acked, &got);
    eprintln!("{} acknowledged, {} read", acked.len(), got.values().map(Vec::len).sum::<usize>());
    assert_eq!(duplicates, 0, "the idempotent producer's retries are stored once");

    // Every replica converges: wait until each partition's leader reports
    // all three in sync, then stop the cluster and compare logs on disk.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = client.describe_topic("replicated").await.unwrap();
        if d.partitions.iter().all(|p| p.in_sync_replicas.len() == 3) {
            break;
        }
        assert!(Instant::now() < deadline, "replicas did not catch up: {d:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let hws: Vec<u64> = client
        .describe_topic("replicated")
        .await
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.high_watermark)
        .collect();
    for id in 1..=3 {
        assert!(cluster.brokers[id - 1].as_mut().unwrap().terminate(), "broker {id} stops cleanly");
    }
    let mut compared = 0;
    for p in 0..PARTITIONS {
        let logs: Vec<Log> = (1..=3)
            .map(|id| {
                let dir = cluster.data_dir(id).join("topics/replicated").join(p.to_string());
                Log::open(dir, LogConfig { retention_ms: None, ..LogConfig::default() }).unwrap()
            })
            .collect();
        let upto = hws[p as usize].max(1);
        let spans: Vec<(u64, u64)> =
            logs.iter().map(|l| (l.log_start_offset(), l.log_end_offset())).collect();
        assert!(
            spans.iter().all(|&(_, end)| end >= upto),
            "partition {p}: a replica lacks committed data: {spans:?}, hw {upto}"
        );
        let start = spans.iter().map(|s| s.0).max().unwrap();
        // Segment boundaries are each replica's own (rolls are local); the
        // batches are not.
        let bytes: Vec<Bytes> = logs
            .iter()
            .map(|l| {
                let (mut all, mut at) = (Vec::new(), start);
                while at < upto {
                    let r = l.read(at, usize::MAX, upto).unwrap();
                    all.extend_from_slice(&r.batches);
                    at = r.next_offset;
                }
                Bytes::from(all)
            })
            .collect();
        compared += bytes[0].len();
        if !(bytes[0] == bytes[1] && bytes[1] == bytes[2]) {
            let describe = |b: &Bytes| {
                fjord_codec::split_batches(b.clone())
                    .map(|r| r.map(|(h, _)| (h.base_offset, h.raft_term, h.raft_index, h.batch_len, h.crc)))
                    .collect::<Vec<_>>()
            };
            let d: Vec<_> = bytes.iter().map(describe).collect();
            let first = (0..d[0].len().min(d[1].len()).min(d[2].len()))
                .find(|&i| !(d[0][i] == d[1][i] && d[1][i] == d[2][i]));
            panic!(
                "partition {p}: replicas differ below the high watermark {upto}: lens {:?}, first differing batch {first:?}: {:?}",
                d.iter().map(Vec::len).collect::<Vec<_>>(),
                first.map(|i| (d[0].get(i), d[1].get(i), d[2].get(i)))
            );
        }
    }

    assert!(compared > 1_000_000, "replicas were compared over {compared} bytes");

    // Metadata and data survive a full-cluster restart.
    for id in 1..=3 {
        cluster.restart(id);
    }
    let client = connect(&cluster.bootstrap()).await;
    let topics = client.list_topics().await.unwrap();
    assert!(topics.iter().any(|t| t.name == "replicated" && t.partitions == PARTITIONS));
    let again = read_all(&cluster.bootstrap(), "replicated").await;
    assert_eq!(again, got, "everything reads back after a full restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_broker_cannot_acknowledge_and_converges_after_healing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3);
    let client = connect(&cluster.bootstrap()).await;
    client.create_topic("split", 1, 3, Default::default()).await.unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
    producer.send(ProducerRecord::new("split", "before")).await.unwrap().await.unwrap();

    // Cut the partition's leader off from the other two.
    let leader = busiest_leader(&client, "split").await;
    let set = |id: u64, isolate: Vec<u64>| {
        let addr = cluster.addrs[id as usize - 1].clone();
        async move {
            let mut raft = RaftClient::connect(format!("http://{addr}")).await.unwrap();
            raft.set_faults(Faults { isolate, ..Default::default() }).await.unwrap();
        }
    };
    let others: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    set(leader, others.clone()).await;
    for &o in &others {
        set(o, vec![leader]).await;
    }

    // The isolated leader cannot acknowledge a write sent straight to it
    // (raw gRPC: a client would follow its NOT_LEADER hint elsewhere once
    // it steps down).
    let mut direct =
        ProducerClient::connect(format!("http://{}", cluster.addrs[leader as usize - 1])).await.unwrap();
    let mut b = fjord_codec::BatchBuilder::new(1 << 20);
    b.push(None, Some(b"lost"), &[], 1).unwrap();
    let req = pb::ProduceRequest {
        topic: "split".into(),
        batches: vec![pb::PartitionBatch { partition: 0, batch: b.finish() }],
        timeout_ms: 3000,
        ..Default::default()
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), direct.produce(req)).await;
    let acknowledged = matches!(&answer, Ok(Ok(r)) if r.get_ref().results.iter().all(|p| p.error.is_none()));
    assert!(!acknowledged, "an isolated broker acknowledged a write: {answer:?}");

    // The majority elects a leader and keeps going.
    let majority =
        others.iter().map(|&o| cluster.addrs[o as usize - 1].clone()).collect::<Vec<_>>().join(",");
    let side = connect(&majority).await;
    let p2 = Producer::new(side, ProducerConfig::default()).unwrap();
    for i in 0..20 {
        if let Err(e) = p2.send(ProducerRecord::new("split", format!("during-{i}"))).await.unwrap().await {
            for b in cluster.brokers.iter().flatten() {
                eprintln!(
                    "=== broker log\n{}",
                    b.log()
                        .lines()
                        .filter(|l| l.contains("group=1") || l.contains("isolat"))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            panic!("during-{i}: {e}");
        }
    }

    // Heal: the old leader drops its uncommitted tail and converges.
    for id in 1..=3 {
        set(id, vec![]).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got = read_all(&cluster.bootstrap(), "split").await;
        let values: Vec<&str> = got.values().flatten().map(|(_, v)| v.as_str()).collect();
        if values.len() >= 21 {
            break values.into_iter().map(String::from).collect::<Vec<_>>();
        }
        assert!(Instant::now() < deadline, "the majority's writes are not readable: {values:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(got[0], "before");
    assert!(
        !got.iter().any(|v| v == "lost"),
        "the isolated broker's unacknowledged write was discarded: {got:?}"
    );
    let d = loop {
        let d = client.describe_topic("split").await.unwrap();
        if d.partitions[0].in_sync_replicas.len() == 3 {
            break d;
        }
        assert!(Instant::now() < deadline, "the healed broker did not catch up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(d.partitions[0].replicas.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_restarted_at_once_is_replaced_without_waiting_for_its_silence() {
    // A broker killed and restarted within the liveness timeout looks alive
    // to its peers the whole time; its new incarnation is what tells the
    // quiet followers of the groups it led to elect, and the first live
    // follower by id campaigns at once. Before incarnations they waited for
    // the restarted broker's own election timeout to wake them: 5-7 s to
    // the first ack; since, 0.4-3.6 s, mostly 0.8 s (the spread is the
    // client's retry backoff).
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3);
    let client = connect(&cluster.bootstrap()).await;
    client.create_topic("restart", 1, 3, Default::default()).await.unwrap();
    let config = ProducerConfig { linger: Duration::from_millis(1), ..ProducerConfig::default() };
    let producer = Producer::new(client.clone(), config).unwrap();
    let mut acked = Vec::new();
    for round in 0..2 {
        let before = format!("before-{round}");
        producer.send(ProducerRecord::new("restart", before.clone())).await.unwrap().await.unwrap();
        acked.push(before);
        tokio::time::sleep(Duration::from_secs(3)).await; // the group quiesces
        let victim = busiest_leader(&client, "restart").await;
        cluster.kill(victim);
        let killed = Instant::now();
        cluster.restart(victim);
        let after = format!("after-{round}");
        let delivery = producer.send(ProducerRecord::new("restart", after.clone())).await.unwrap();
        tokio::time::timeout(Duration::from_secs(20), delivery).await.expect("writes resume").unwrap();
        acked.push(after);
        eprintln!(
            "round {round}: broker {victim} killed and restarted; first ack {:?} after the kill",
            killed.elapsed()
        );
    }
    let got = read_all(&cluster.bootstrap(), "restart").await;
    let values: Vec<&str> = got[&0].iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(values, acked, "every acknowledged record, once, in order");
}
