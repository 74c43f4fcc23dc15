//! Three-node groups in one process over an in-memory transport: election,
//! replication, failover, logs identical byte for byte up to the commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fjord_codec::BatchBuilder;
use fjord_storage::{Log, LogConfig};

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
    let store = GroupStore::open(log.clone(), vec![1, 2, 3]).unwrap();
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
    let changes = nodes[l2].0.status().leader_changes();
    assert!(changes >= 2, "the new leader saw the first election and the failover: {changes}");
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
    let store = GroupStore::open(log.clone(), vec![1]).unwrap();
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

fn idem(pid: i64, epoch: i16, seq: i32, v: &str) -> Bytes {
    let mut b = BatchBuilder::new(1 << 20).producer(pid, epoch, seq);
    b.push(None, Some(v.as_bytes()), &[], 1).unwrap();
    b.finish()
}

/// Proposes until the leader serves (idempotent batches wait for that).
async fn propose_serving(h: &GroupHandle, data: Bytes) -> Result<Committed> {
    for _ in 0..500 {
        match h.propose(data.clone(), Ack::Quorum).await {
            Err(Error::NotServing) => tokio::time::sleep(Duration::from_millis(10)).await,
            other => return other,
        }
    }
    panic!("the leader never served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_of_idempotent_batches_are_answered_from_the_log_by_any_leader() {
    let dir = tempfile::tempdir().unwrap();
    let net = Arc::new(Net::default());
    let mut nodes: Vec<_> = (1..=3).map(|id| start_node(&net, dir.path(), id)).collect();
    let l = leader(&nodes, None).await;
    let first = propose_serving(&nodes[l].0, idem(5, 0, 0, "a")).await.unwrap();
    assert!(!first.duplicate);
    let second = nodes[l].0.propose(idem(5, 0, 1, "b"), Ack::Quorum).await.unwrap();
    // A retry of the first batch: its original offsets, nothing appended.
    let end = nodes[l].1.log_end_offset();
    let again = nodes[l].0.propose(idem(5, 0, 0, "a"), Ack::Quorum).await.unwrap();
    assert!(again.duplicate);
    assert_eq!((again.base_offset, again.next_offset), (first.base_offset, first.next_offset));
    assert_eq!(nodes[l].1.log_end_offset(), end);
    // A gap and a stale epoch are refused.
    match nodes[l].0.propose(idem(5, 0, 5, "gap"), Ack::Quorum).await {
        Err(Error::OutOfOrderSequence { producer_id: 5, expected: 2, got: 5 }) => {}
        other => panic!("expected OutOfOrderSequence, got {other:?}"),
    }

    // The leader is cut off and another takes over: it rebuilds the
    // sequences from its own log and recognises the retry just the same.
    let old = l as u64 + 1;
    net.down.lock().unwrap().push(old);
    let l2 = leader(&nodes, Some(old)).await;
    let retried = propose_serving(&nodes[l2].0, idem(5, 0, 1, "b")).await.unwrap();
    assert!(retried.duplicate);
    assert_eq!(retried.base_offset, second.base_offset);
    let third = nodes[l2].0.propose(idem(5, 0, 2, "c"), Ack::Quorum).await.unwrap();
    assert!(!third.duplicate && third.base_offset > second.base_offset);
    net.down.lock().unwrap().clear();

    // Every node restarts from its files: the retry is still recognised.
    for (h, _) in &nodes {
        h.stop().await;
    }
    net.nodes.lock().unwrap().clear();
    nodes = (1..=3).map(|id| start_node(&net, dir.path(), id)).collect();
    let l3 = leader(&nodes, None).await;
    let after_restart = propose_serving(&nodes[l3].0, idem(5, 0, 2, "c")).await.unwrap();
    assert!(after_restart.duplicate);
    assert_eq!(after_restart.base_offset, third.base_offset);
    match nodes[l3].0.propose(idem(5, 0, 3, "d"), Ack::Quorum).await {
        Ok(c) => assert!(!c.duplicate),
        other => panic!("the next sequence is appended: {other:?}"),
    }
    for (h, _) in &nodes {
        h.stop().await;
    }
}
