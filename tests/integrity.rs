//! Corruption is caught at the first hop that can see it: a follower fed
//! corrupted Raft appends refuses them, catches up from the leader, and
//! ends byte for byte equal to it; nothing corrupt is stored or served.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::load::connect;
use common::Cluster;
use fjord_client::{Producer, ProducerConfig, ProducerRecord};
use fjord_proto::internal::{raft_client::RaftClient, Faults};
use fjord_storage::{Log, LogConfig};

/// Appends corrupted on their way into the follower.
const CORRUPTED: u32 = 5;
/// Bound on waiting for the follower to catch up.
const CATCH_UP: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_refuses_corrupt_appends_and_catches_up_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3);
    let client = connect(&cluster.bootstrap()).await;
    client.create_topic("checked", 1, 3, Default::default()).await.unwrap();
    let leader = loop {
        let d = client.describe_topic("checked").await.unwrap();
        if let (Some(leader), 3) = (d.partitions[0].leader, d.partitions[0].in_sync_replicas.len()) {
            break leader;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let mut raft =
        RaftClient::connect(format!("http://{}", cluster.addrs[follower as usize - 1])).await.unwrap();
    raft.set_faults(Faults { corrupt_appends: CORRUPTED, ..Default::default() }).await.unwrap();

    // Writes are acknowledged by the leader and the healthy follower.
    let producer = Producer::new(
        client.clone(),
        ProducerConfig { linger: Duration::from_millis(1), ..Default::default() },
    )
    .unwrap();
    for i in 0..300u32 {
        let value = format!("record-{i:04}-{}", "v".repeat(200));
        let delivery = producer.send(ProducerRecord::new("checked", value)).await.unwrap();
        if i % 10 == 9 {
            delivery.await.unwrap();
        }
    }
    producer.close().await.unwrap();
    let log = cluster.brokers[follower as usize - 1].as_ref().unwrap().log();
    assert!(log.contains("corrupted an append on arrival"), "the fault was injected:\n{log}");
    assert!(log.contains("refused a corrupt append"), "the follower refused it:\n{log}");

    // The follower catches up on its own.
    let deadline = Instant::now() + CATCH_UP;
    let hw = loop {
        let d = client.describe_topic("checked").await.unwrap();
        let p = &d.partitions[0];
        if p.in_sync_replicas.len() == 3 && p.high_watermark > 300 {
            break p.high_watermark;
        }
        assert!(Instant::now() < deadline, "the follower did not catch up: {p:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Let the last commit index reach every replica, then compare on disk.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for id in 1..=3 {
        assert!(cluster.brokers[id - 1].as_mut().unwrap().terminate(), "broker {id} stops cleanly");
    }
    let replicas: Vec<Bytes> = (1..=3)
        .map(|id| {
            let dir = cluster.data_dir(id).join("topics/checked/0");
            let log = Log::open(dir, LogConfig { retention_ms: None, ..LogConfig::default() }).unwrap();
            assert!(log.log_end_offset() >= hw, "broker {id} holds everything committed");
            let (mut all, mut at) = (Vec::new(), log.log_start_offset());
            while at < hw {
                let r = log.read(at, usize::MAX, hw).unwrap();
                for part in fjord_codec::split_batches(r.batches.clone()) {
                    let (h, b) = part.unwrap();
                    fjord_codec::verify_crc(&b, &h).unwrap_or_else(|e| {
                        panic!("broker {id} stored a corrupt batch at {}: {e}", h.base_offset)
                    });
                }
                all.extend_from_slice(&r.batches);
                at = r.next_offset;
            }
            Bytes::from(all)
        })
        .collect();
    assert!(replicas[0].len() > 60_000, "compared {} bytes", replicas[0].len());
    assert!(replicas[0] == replicas[1] && replicas[1] == replicas[2], "replicas are equal byte for byte");
    let _ = &mut cluster;
}
