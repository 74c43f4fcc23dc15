//! Three-node groups in one process over an in-memory transport: election,
//! replication, failover, logs identical byte for byte up to the commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fjord_codec::BatchBuilder;
use fjord_storage::{Log, LogConfig, RaftState};

use crate::*;

/// Routes messages between in-process groups; links can be cut.
#[derive(Default)]
struct Net {
    nodes: Mutex<HashMap<u64, GroupHandle>>,
    down: Mutex<Vec<u64>>,
}

impl Transport for Net {
    fn send(&self, to: u64, _group: u64, msg: Message) {
        let down = self.down.lock().unwrap();
        if down.contains(&to) || down.contains(&msg.from) {
            return;
        }
        // Through the wire encoding, as the broker's transport does.
        let msg = decode_message(&encode_message(&msg).unwrap()).unwrap();
        if let Some(h) = self.nodes.lock().unwrap().get(&to) {
            h.step(msg);
        }
    }

    fn is_alive(&self, node: u64) -> bool {
        !self.down.lock().unwrap().contains(&node)
    }
}

fn batch(v: &str) -> Bytes {
    let mut b = BatchBuilder::new(1 << 20);
    b.push(None, Some(v.as_bytes()), &[], 1).unwrap();
    b.finish()
}

fn start_node(net: &Arc<Net>, dir: &std::path::Path, id: u64) -> (GroupHandle, Arc<Log>) {
    let log = Arc::new(Log::open(dir.join(id.to_string()), LogConfig::default()).unwrap());
    let state = RaftState::load(log.dir()).unwrap().unwrap_or_default();
    let store = GroupStore::new(log.clone(), state, vec![1, 2, 3]);
    let mut config = GroupConfig::new(7, id, vec![1, 2, 3]);
    config.tick = Duration::from_millis(20);
    let h = start(config, store, net.clone()).unwrap();
    net.nodes.lock().unwrap().insert(id, h.clone());
    (h, log)
}

async fn leader(nodes: &[(GroupHandle, Arc<Log>)], not: Option<u64>) -> usize {
    for _ in 0..500 {
        for (i, (h, _)) in nodes.iter().enumerate() {
            if h.status().is_leader() && Some(i as u64 + 1) != not {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no leader elected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_fail_over_and_agree_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let net = Arc::new(Net::default());
    let mut nodes: Vec<_> = (1..=3).map(|id| start_node(&net, dir.path(), id)).collect();
    let l = leader(&nodes, None).await;
    let mut committed = Vec::new();
    for i in 0..50 {
        let c = nodes[l].0.propose(batch(&format!("v{i}")), Ack::Quorum).await.unwrap();
        committed.push(c);
    }
    assert!(committed.windows(2).all(|w| w[1].base_offset == w[0].next_offset));
    // A follower refuses proposals and names the leader.
    let f = (l + 1) % 3;
    match nodes[f].0.propose(batch("x"), Ack::Quorum).await {
        Err(Error::NotLeader { leader }) => assert_eq!(leader, l as u64 + 1),
        other => panic!("expected NotLeader, got {other:?}"),
    }

    // The leader is cut off: the other two elect a new leader and go on.
    let old = l as u64 + 1;
    net.down.lock().unwrap().push(old);
    let l2 = leader(&nodes, Some(old)).await;
    assert_ne!(l2, l);
    let mut after = Vec::new();
    for i in 0..20 {
        after.push(nodes[l2].0.propose(batch(&format!("w{i}")), Ack::Quorum).await.unwrap());
    }
    // The isolated old leader cannot commit anything.
    let stuck =
        tokio::time::timeout(Duration::from_millis(500), nodes[l].0.propose(batch("lost"), Ack::Quorum))
            .await;
    assert!(!matches!(stuck, Ok(Ok(_))), "an isolated node must not acknowledge: {stuck:?}");

    // Heal: the old leader drops its uncommitted tail and converges.
    net.down.lock().unwrap().clear();
    let hw = nodes[l2].0.status().high_watermark();
    for _ in 0..500 {
        if nodes.iter().all(|(h, _)| h.status().high_watermark() >= hw) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reads: Vec<Bytes> =
        nodes.iter().map(|(_, log)| log.read(0, usize::MAX, hw).unwrap().batches).collect();
    assert!(!reads[0].is_empty());
    assert!(
        reads[0] == reads[1] && reads[1] == reads[2],
        "logs agree byte for byte up to the high watermark"
    );

    // Restart a node from its files: it rejoins and catches up.
    let victim = (l2 + 1) % 3;
    nodes[victim].0.stop().await;
    for i in 0..10 {
        nodes[l2].0.propose(batch(&format!("z{i}")), Ack::Quorum).await.unwrap();
    }
    let id = victim as u64 + 1;
    nodes[victim] = start_node(&net, dir.path(), id);
    let hw = nodes[l2].0.status().high_watermark();
    for _ in 0..500 {
        if nodes[victim].0.status().high_watermark() >= hw {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (a, b) =
        (nodes[victim].1.read(0, usize::MAX, hw).unwrap(), nodes[l2].1.read(0, usize::MAX, hw).unwrap());
    assert!(a.batches == b.batches && a.next_offset == hw, "the restarted node caught up byte for byte");
    for (h, _) in &nodes {
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_one_commits_its_own_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
    let store = GroupStore::new(log.clone(), RaftState::default(), vec![1]);
    let h = start(GroupConfig::new(1, 1, vec![1]), store, Arc::new(Net::default())).unwrap();
    h.campaign();
    let mut c = None;
    for _ in 0..200 {
        match h.propose(batch("a"), Ack::Quorum).await {
            Ok(x) => {
                c = Some(x);
                break;
            }
            Err(Error::NotLeader { .. }) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("{e}"),
        }
    }
    let c = c.expect("became leader");
    // Offset 0 is the new leader's no-op (a control batch).
    assert_eq!((c.base_offset, c.next_offset), (1, 2));
    assert_eq!(h.status().high_watermark(), 2);
    h.stop().await;
}
