//! Log compaction by key (issue #15), driven as a user would: a topic
//! created with `--cleanup-policy compact`, 100 keys written 1,000 times
//! each over gRPC `Publish` and 10 of them then deleted with tombstones;
//! the broker compacts in the background until `fjord tail
//! --from-beginning` shows one record per live key with its last value
//! and no tombstone once they are older than `delete_retention_ms`,
//! the partition's size has fallen more than tenfold, a consumer group
//! that had committed halfway continues to every last value, and a
//! restart serves the same view. Records without a key are refused.
//!
//! On three brokers (RF 3) every replica compacts on its own, and after
//! the leader is SIGKILLed the new leader serves the same compacted view.
//!
//! And `__consumer_offsets` is compacted: thousands of commits by a few
//! groups leave about one record per (group, partition) in its closed
//! segments, a restarted coordinator replays it to every group's last
//! commit, and a deleted group stays deleted.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::{fjord, fjord_ok, Broker, Cluster};
use fjord_proto::pb::{self, producer_client::ProducerClient};

const KEYS: usize = 100;
const VERSIONS: usize = 1000;
/// Keys deleted with a tombstone at the end. Their segment is too small to
/// reach the dirty ratio on its own (as in Kafka), so the topic sets
/// `max_compaction_lag_ms`: dirty data older than that is compacted anyway.
const DELETED: usize = 10;

fn value(key: usize, version: usize) -> String {
    format!("k{key:03}=v{version:04}-{}", "x".repeat(80))
}

async fn publish(addr: &str, topic: &str, records: Vec<(String, Option<String>)>) {
    let mut p = ProducerClient::connect(format!("http://{addr}")).await.unwrap();
    let records = records
        .into_iter()
        .map(|(k, v)| pb::Record {
            key: Some(Bytes::from(k)),
            value: v.map(Bytes::from),
            ..Default::default()
        })
        .collect();
    let r =
        p.publish(pb::PublishRequest { topic: topic.into(), records, ..Default::default() }).await.unwrap();
    assert!(r.into_inner().results.iter().all(|r| r.error.is_none()));
}

/// key → value of every record `tail` prints (JSON lines), and the count.
fn tail(addr: &str, args: &[&str]) -> (BTreeMap<String, Option<String>>, usize) {
    let out = fjord_ok(addr, args, b"");
    let mut m = BTreeMap::new();
    let mut n = 0;
    for line in out.lines() {
        let j: serde_json::Value = serde_json::from_str(line).unwrap();
        m.insert(j["key"].as_str().unwrap().to_owned(), j["value"].as_str().map(str::to_owned));
        n += 1;
    }
    (m, n)
}

fn size(addr: &str, topic: &str) -> u64 {
    let out = fjord_ok(addr, &["topic", "describe", topic, "--format", "json"], b"");
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["partitions"][0]["size_bytes"].as_u64().unwrap()
}

/// Topic settings that make the compactor clean within seconds: small
/// segments rolled every 3 s, cleaned at 20% dirty, tombstones kept 1 s.
const COMPACT_QUICKLY: &[&str] = &[
    "--cleanup-policy",
    "compact",
    "--segment-bytes",
    "65536",
    "--segment-ms",
    "3000",
    "--min-cleanable-dirty-ratio",
    "0.2",
    "--delete-retention-ms",
    "1000",
    "--max-compaction-lag-ms",
    "2000",
];

#[test]
fn a_compacted_topic_keeps_the_last_value_of_each_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let flags = ["--maintenance-interval", "1s"];
    let mut broker = Broker::start(&data, &flags);
    let addr = broker.addr.clone();
    fjord_ok(&addr, &[&["topic", "create", "c", "-p", "1"], COMPACT_QUICKLY].concat(), b"");
    let d = fjord_ok(&addr, &["topic", "describe", "c"], b"");
    assert!(d.contains("cleanup.policy=compact"), "{d}");
    // A record without a key is refused, saying why.
    let out = fjord(&addr, &["publish", "c", "--value", "no key"], b"");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no key") && err.contains("cleanup_policy compact"), "{err}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let all: Vec<(String, Option<String>)> =
        (0..VERSIONS).flat_map(|v| (0..KEYS).map(move |k| (format!("k{k:03}"), Some(value(k, v))))).collect();
    let (first, second) = all.split_at(all.len() / 2);
    for chunk in first.chunks(1000) {
        rt.block_on(publish(&addr, "c", chunk.to_vec()));
    }
    // A group reads and commits the first records (the broker may have
    // compacted some of the first half already: what it reads is whatever
    // is left, in order).
    let (_, n) =
        tail(&addr, &["tail", "c", "--group", "g", "--from-beginning", "--limit", "100", "--format", "json"]);
    assert_eq!(n, 100);
    for chunk in second.chunks(1000) {
        rt.block_on(publish(&addr, "c", chunk.to_vec()));
    }
    let deleted: Vec<(String, Option<String>)> = (0..DELETED).map(|k| (format!("k{k:03}"), None)).collect();
    if !deleted.is_empty() {
        rt.block_on(publish(&addr, "c", deleted.clone()));
    }
    // The same records in a topic that is not compacted: the reference size.
    fjord_ok(&addr, &["topic", "create", "plain", "-p", "1", "--segment-bytes", "65536"], b"");
    for chunk in all.chunks(1000) {
        rt.block_on(publish(&addr, "plain", chunk.to_vec()));
    }
    if !deleted.is_empty() {
        rt.block_on(publish(&addr, "plain", deleted));
    }
    let written = size(&addr, "plain");
    assert!(written > 9_000_000, "{written} bytes written");

    // Compaction runs in the background (the active segment rolls after
    // 3 s, tombstones expire after 1 s) until one record per live key is left.
    let expected: BTreeMap<String, Option<String>> =
        (DELETED..KEYS).map(|k| (format!("k{k:03}"), Some(value(k, VERSIONS - 1)))).collect();
    let mut last = (BTreeMap::new(), 0);
    for _ in 0..120 {
        last = tail(&addr, &["tail", "c", "--from-beginning", "--format", "json"]);
        if last.1 == expected.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    if last.1 != expected.len() {
        let mut files: Vec<_> = std::fs::read_dir(data.join("topics/c/0"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .map(|p| (p.file_name().unwrap().to_owned(), p.metadata().unwrap().len()))
            .collect();
        files.sort();
        eprintln!("files: {files:?}\n{}", broker.log());
    }
    assert_eq!(last.1, expected.len(), "one record per live key, no tombstone: {} records", last.1);
    assert_eq!(last.0, expected);
    let compacted = size(&addr, "c");
    assert!(compacted * 10 < written, "size fell from {written} to {compacted} bytes");
    let d = fjord_ok(&addr, &["topic", "describe", "c", "--format", "json"], b"");
    let p = &serde_json::from_str::<serde_json::Value>(&d).unwrap()["partitions"][0];
    assert!(p["last_compaction_ms"].as_i64().is_some_and(|t| t > 0), "{p}");
    assert!(p["dirty_ratio"].as_f64().is_some_and(|r| r == 0.0), "{p}");

    // The group goes on from its commit and gets every last value.
    let (seen, n) = tail(
        &addr,
        &["tail", "c", "--group", "g", "--limit", &expected.len().to_string(), "--format", "json"],
    );
    assert_eq!(n, expected.len());
    assert_eq!(seen, expected);

    // A restart serves the same compacted view.
    broker.kill();
    let broker = Broker::start(&data, &flags);
    let again = tail(&broker.addr, &["tail", "c", "--from-beginning", "--format", "json"]);
    assert_eq!(again, last);
}

/// Disk used by the `.log` files in a partition directory (blocks, since
/// the active segment's file is preallocated sparse).
fn log_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| p.metadata().unwrap().blocks() * 512)
        .sum()
}

/// Partition 0's leader and in-sync replicas, from `topic describe`.
fn leader_and_isr(addr: &str, topic: &str) -> (u64, usize) {
    let out = fjord_ok(addr, &["topic", "describe", topic, "--format", "json"], b"");
    let p = &serde_json::from_str::<serde_json::Value>(&out).unwrap()["partitions"][0];
    (p["leader"].as_u64().unwrap_or(0), p["in_sync_replicas"].as_array().map_or(0, Vec::len))
}

#[test]
fn every_replica_compacts_and_a_new_leader_serves_the_same_view() {
    const VERSIONS: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3);
    let bootstrap = cluster.bootstrap();
    fjord_ok(&bootstrap, &[&["topic", "create", "c", "-p", "1", "-r", "3"], COMPACT_QUICKLY].concat(), b"");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let all: Vec<(String, Option<String>)> =
        (0..VERSIONS).flat_map(|v| (0..KEYS).map(move |k| (format!("k{k:03}"), Some(value(k, v))))).collect();
    let leader = |addr: &str| {
        for _ in 0..100 {
            let (l, isr) = leader_and_isr(addr, "c");
            if l != 0 && isr == 3 {
                return l;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no leader with three replicas in sync");
    };
    // Raw `Publish` goes to the partition's leader.
    let first = cluster.addrs[leader(&bootstrap) as usize - 1].clone();
    for chunk in all.chunks(1000) {
        rt.block_on(publish(&first, "c", chunk.to_vec()));
    }
    let deleted: Vec<(String, Option<String>)> = (0..DELETED).map(|k| (format!("k{k:03}"), None)).collect();
    rt.block_on(publish(&first, "c", deleted));
    let written: usize = all.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, String::len)).sum();

    // Every replica compacts on its own until it holds about the live set
    // (one record per live key, in a handful of small segments).
    let expected: BTreeMap<String, Option<String>> =
        (DELETED..KEYS).map(|k| (format!("k{k:03}"), Some(value(k, VERSIONS - 1)))).collect();
    let partition_dir = |id: u64| cluster.data_dir(id).join("topics/c/0");
    let mut sizes = Vec::new();
    for _ in 0..120 {
        sizes = (1..=3).map(|id| log_bytes(&partition_dir(id))).collect();
        if sizes.iter().all(|&s| s * 10 < written as u64) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(sizes.iter().all(|&s| s * 10 < written as u64), "replica sizes {sizes:?} of {written} written");
    let mut view = (BTreeMap::new(), 0);
    for _ in 0..60 {
        view = tail(&bootstrap, &["tail", "c", "--from-beginning", "--format", "json"]);
        if view.1 == expected.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(view.0, expected);
    assert_eq!(view.1, expected.len(), "one record per live key, no tombstone");

    // The leader dies; another replica, compacted by itself, serves the same view.
    let old = leader(&bootstrap);
    cluster.kill(old);
    let alive = (1..=3).filter(|&id| id != old).map(|id| cluster.addrs[id as usize - 1].clone());
    let alive = alive.collect::<Vec<_>>().join(",");
    let mut new = 0;
    for _ in 0..100 {
        new = leader_and_isr(&alive, "c").0;
        if new != 0 && new != old {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(new != 0 && new != old, "a new leader after killing broker {old}");
    assert_eq!(tail(&alive, &["tail", "c", "--from-beginning", "--format", "json"]), view);
    // And it takes writes on top of the compacted log.
    let new_addr = cluster.addrs[new as usize - 1].clone();
    rt.block_on(publish(&new_addr, "c", vec![("k050".into(), Some("after".into()))]));
    let (after, n) = tail(&alive, &["tail", "c", "--from-beginning", "--format", "json"]);
    assert_eq!(n, expected.len() + 1);
    assert_eq!(after["k050"].as_deref(), Some("after"));
    for id in 1..=3 {
        cluster.kill(id);
    }
}

/// Records `fjord tail` reads from the whole offsets topic.
fn offsets_records(addr: &str) -> usize {
    fjord_ok(addr, &["tail", "__consumer_offsets", "--from-beginning", "--format", "json"], b"")
        .lines()
        .count()
}

#[test]
fn the_offsets_topic_is_compacted_and_replays_to_the_last_commits() {
    const GROUPS: usize = 5;
    const PARTITIONS: u32 = 4;
    const ROUNDS: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let flags = ["--maintenance-interval", "1s", "--offsets-segment-bytes", "16384"];
    let mut broker = Broker::start(&data, &flags);
    let addr = broker.addr.clone();
    fjord_ok(&addr, &["topic", "create", "t", "-p", &PARTITIONS.to_string()], b"");
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Commits may not pass a partition's end: ROUNDS records in each.
    let mut producer = rt.block_on(ProducerClient::connect(format!("http://{addr}"))).unwrap();
    for p in 0..PARTITIONS {
        let records = (0..ROUNDS)
            .map(|_| pb::Record { partition: Some(p), value: Some(Bytes::from("x")), ..Default::default() })
            .collect();
        let req = pb::PublishRequest { topic: "t".into(), records, ..Default::default() };
        let r = rt.block_on(producer.publish(req)).unwrap().into_inner();
        assert!(r.results.iter().all(|r| r.error.is_none()));
    }
    let client = rt.block_on(common::client(&addr));
    let commit = |group: usize, round: u64| -> Vec<fjord_client::CommittedOffset> {
        (0..PARTITIONS)
            .map(|p| fjord_client::CommittedOffset {
                topic: "t".into(),
                partition: p,
                offset: round + 1,
                metadata: format!("g{group} round {round}"),
            })
            .collect()
    };
    for round in 0..ROUNDS {
        for g in 0..GROUPS {
            rt.block_on(client.commit_offsets(&format!("g{g}"), "", -1, &commit(g, round), None)).unwrap();
        }
    }
    let d = fjord_ok(&addr, &["topic", "describe", "__consumer_offsets"], b"");
    assert!(d.contains("cleanup.policy=compact"), "{d}");
    // One record per committed partition: 6,000 written. Closed segments
    // are compacted in the background; the active 16 KiB segment of each
    // partition holds at most a few dozen commits.
    let written = GROUPS * PARTITIONS as usize * ROUNDS as usize;
    let mut left = usize::MAX;
    for _ in 0..60 {
        left = offsets_records(&addr);
        if left * 6 < written {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("{left} of {written} offsets records left after compaction");
    assert!(left * 6 < written, "{left} of {written} records are left:\n{}", broker.log());

    // Deleting a group writes tombstones for its keys.
    fjord_ok(&addr, &["group", "delete", "g0"], b"");
    let last = |g: usize| commit(g, ROUNDS - 1);

    // A new coordinator replays the compacted log to the last commits.
    broker.kill();
    let broker = Broker::start(&data, &flags);
    let client = rt.block_on(common::client(&broker.addr));
    for g in 1..GROUPS {
        let got = rt.block_on(client.fetch_offsets(&format!("g{g}"), &[])).unwrap();
        assert_eq!(got, last(g), "group g{g}");
    }
    assert_eq!(rt.block_on(client.fetch_offsets("g0", &[])).unwrap(), []);
    let groups = fjord_ok(&broker.addr, &["group", "list"], b"");
    assert!(!groups.lines().any(|l| l.trim() == "g0") && groups.contains("g1"), "{groups}");
}
