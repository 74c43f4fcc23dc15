//! Restarts and crashes: what was acknowledged survives a graceful restart
//! and a SIGKILL in the middle of a producer's run.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{client, fjord_ok, Broker};
use fjord_client::{ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, Seek};

/// Reads a whole topic: partition → [(offset, value)].
async fn read_all(addr: &str, topic: &str) -> BTreeMap<u32, Vec<(u64, String)>> {
    let c = client(addr).await;
    let mut consumer =
        Consumer::new(c, ConsumerConfig { start: Seek::Beginning, ..ConsumerConfig::default() });
    consumer.assign(topic, None).await.unwrap();
    consumer.stop_at_high_watermark().await.unwrap();
    let mut got: BTreeMap<u32, Vec<(u64, String)>> = BTreeMap::new();
    while let Some(rec) = consumer.next().await {
        let rec = rec.unwrap();
        let value = String::from_utf8(rec.value.unwrap().to_vec()).unwrap();
        got.entry(rec.partition).or_default().push((rec.offset, value));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_serves_everything_it_had() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = Broker::start(&data, &[]);
    fjord_ok(&broker.addr, &["topic", "create", "keep", "--partitions", "3", "--retention-ms", "-1"], b"");
    let lines: String = (0..3000).map(|i| format!("record {i}\n")).collect();
    fjord_ok(&broker.addr, &["publish", "keep"], lines.as_bytes());
    let before = read_all(&broker.addr, "keep").await;
    assert_eq!(before.values().map(Vec::len).sum::<usize>(), 3000);
    assert!(broker.terminate(), "graceful shutdown exits 0");

    let broker = Broker::start(&data, &[]);
    let after = read_all(&broker.addr, "keep").await;
    assert_eq!(after, before);
    let listed = fjord_ok(&broker.addr, &["topic", "list"], b"");
    assert!(listed.contains("keep"), "topic metadata survives: {listed}");
    let described = fjord_ok(&broker.addr, &["topic", "describe", "keep", "--format", "json"], b"");
    assert!(
        described.contains("\"retention_ms\": -1") || described.contains("\"retention_ms\":-1"),
        "{described}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_production_loses_nothing_that_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = Broker::start(&data, &[]);
    fjord_ok(&broker.addr, &["topic", "create", "crash", "--partitions", "4"], b"");

    let cfg = ClientConfig {
        request_timeout: Duration::from_secs(2),
        retry_deadline: Duration::from_secs(3),
        ..ClientConfig::from_bootstrap(&broker.addr).unwrap()
    };
    let c = fjord_client::Client::connect(cfg).await.unwrap();
    let producer = Arc::new(
        Producer::new(c, ProducerConfig { linger: Duration::from_millis(1), ..ProducerConfig::default() })
            .unwrap(),
    );
    let acked: Arc<Mutex<Vec<(u32, u64, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    // Producers keep sending until the broker dies; every delivery that
    // resolves Ok is an acknowledgement the broker must honour.
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (producer, acked, stop) = (producer.clone(), acked.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..1_000_000u64 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let value = format!("w{w}-{i}");
                let rec = ProducerRecord::new("crash", Bytes::from(value.clone()))
                    .with_key(Bytes::from(format!("k{w}")));
                let Ok(delivery) = producer.send(rec).await else { return };
                let acked = acked.clone();
                tokio::spawn(async move {
                    if let Ok(meta) = delivery.await {
                        acked.lock().unwrap().push((meta.partition, meta.offset, value));
                    }
                });
                if i % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    broker.kill();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await; // outstanding deliveries fail by their deadline
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 100, "the producer got going before the kill: {} acked", acked.len());

    let broker = Broker::start(&data, &[]);
    let after = read_all(&broker.addr, "crash").await;
    let mut by_partition: BTreeMap<u32, BTreeMap<u64, String>> = BTreeMap::new();
    for (p, recs) in &after {
        let offsets: Vec<u64> = recs.iter().map(|r| r.0).collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "partition {p}: offsets in order");
        by_partition.insert(*p, recs.iter().cloned().collect());
    }
    for (p, offset, value) in &acked {
        let found = by_partition.get(p).and_then(|m| m.get(offset));
        assert_eq!(found, Some(value), "acknowledged record {value} at {p}/{offset} must survive the crash");
    }
    // Per writer (one key, so one partition), values are in send order.
    for recs in after.values() {
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        for (_, v) in recs {
            let (w, i) = v.split_once('-').unwrap();
            let i: u64 = i.parse().unwrap();
            if let Some(prev) = last.insert(w.to_string(), i) {
                assert!(i > prev, "{w}: {i} after {prev}");
            }
        }
    }
}

/// `tail --last N` counts records, not offsets: every restart makes the new
/// leader append a Raft no-op (a control batch) that takes an offset, so
/// the last offset below the high watermark is not a record.
#[test]
fn tail_last_prints_the_last_records_after_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = Broker::start(&data, &[]);
    fjord_ok(&broker.addr, &["topic", "create", "last", "--partitions", "1"], b"");
    fjord_ok(&broker.addr, &["publish", "last"], b"a\nb\nc\n");
    let tail = |addr: &str, n: &str| fjord_ok(addr, &["tail", "last", "--last", n], b"");
    assert_eq!(tail(&broker.addr, "1"), "c\n");

    assert!(broker.terminate(), "graceful shutdown exits 0");
    let mut broker = Broker::start(&data, &[]);
    assert_eq!(tail(&broker.addr, "1"), "c\n", "after a graceful restart");
    broker.kill();
    let broker = Broker::start(&data, &[]);
    assert_eq!(tail(&broker.addr, "1"), "c\n", "after a SIGKILL and restart");
    assert_eq!(tail(&broker.addr, "2"), "b\nc\n");
    fjord_ok(&broker.addr, &["publish", "last"], b"d\n");
    // Two no-ops now lie between c and d.
    assert_eq!(tail(&broker.addr, "2"), "c\nd\n");
    assert_eq!(tail(&broker.addr, "10"), "a\nb\nc\nd\n", "fewer records than asked: all of them");
    let described = fjord_ok(&broker.addr, &["topic", "describe", "last"], b"");
    assert!(described.contains("offsets can skip"), "{described}");
}
