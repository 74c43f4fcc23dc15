//! Load for cluster tests: writers that send numbered sequences and record
//! what was acknowledged, a reader of whole topics, and the check that
//! what was acknowledged is exactly what the log holds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fjord_client::{Client, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerRecord, Seek};

pub async fn connect(bootstrap: &str) -> Client {
    let cfg = ClientConfig {
        request_timeout: Duration::from_secs(3),
        retry_deadline: Duration::from_secs(30),
        ..ClientConfig::from_bootstrap(bootstrap).unwrap()
    };
    Client::connect(cfg).await.unwrap()
}

/// partition → [(offset, value)] of every record, read from the leaders.
pub async fn read_all(bootstrap: &str, topic: &str) -> BTreeMap<u32, Vec<(u64, String)>> {
    let mut consumer = Consumer::new(
        connect(bootstrap).await,
        ConsumerConfig { start: Seek::Beginning, ..ConsumerConfig::default() },
    );
    consumer.assign(topic, None).await.unwrap();
    consumer.stop_at_high_watermark().await.unwrap();
    let mut got: BTreeMap<u32, Vec<(u64, String)>> = BTreeMap::new();
    while let Some(rec) = consumer.next().await {
        let rec = rec.unwrap();
        got.entry(rec.partition)
            .or_default()
            .push((rec.offset, String::from_utf8(rec.value.unwrap().to_vec()).unwrap()));
    }
    got
}

/// The broker leading the most partitions of `topic`, by the cluster's metadata.
pub async fn busiest_leader(client: &Client, topic: &str) -> u64 {
    let meta = client.metadata().await.unwrap();
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    for p in meta.topic(topic).unwrap().partitions.iter() {
        if let Some(l) = p.leader {
            *count.entry(l).or_default() += 1;
        }
    }
    count.into_iter().max_by_key(|(_, n)| *n).map(|(id, _)| id).unwrap()
}

/// Writers, each sending a numbered sequence under its own key, recording
/// what was acknowledged.
pub struct Writers {
    stop: Arc<AtomicBool>,
    pub acked: Arc<Mutex<Vec<(u32, u64, String)>>>,
    /// Errors of deliveries that failed, by message, with their counts.
    pub failed: Arc<Mutex<BTreeMap<String, usize>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

pub fn start_writers(producer: Arc<Producer>, topic: &'static str, n: usize) -> Writers {
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(u32, u64, String)>>> = Arc::default();
    let failed: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let tasks = (0..n)
        .map(|w| {
            let (producer, stop, acked, failed) =
                (producer.clone(), stop.clone(), acked.clone(), failed.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let value = format!("w{w}-{i:08}");
                    let rec = ProducerRecord::new(topic, Bytes::from(value.clone()))
                        .with_key(Bytes::from(format!("key-{w}")));
                    let Ok(delivery) = producer.send(rec).await else { break };
                    let (acked, failed) = (acked.clone(), failed.clone());
                    tokio::spawn(async move {
                        match delivery.await {
                            Ok(meta) => acked.lock().unwrap().push((meta.partition, meta.offset, value)),
                            Err(e) => *failed.lock().unwrap().entry(e.to_string()).or_default() += 1,
                        }
                    });
                    i += 1;
                    if i.is_multiple_of(16) {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            })
        })
        .collect();
    Writers { stop, acked, failed, tasks }
}

impl Writers {
    pub async fn finish(self) -> Vec<(u32, u64, String)> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(60), t).await;
        }
        tokio::time::sleep(Duration::from_secs(5)).await; // outstanding deliveries resolve
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

/// Every acknowledged record is readable at its offset, and each writer's
/// records appear in the order sent. Returns how many records were
/// written twice (which a non-idempotent producer's retries can cause).
pub fn check(acked: &[(u32, u64, String)], got: &BTreeMap<u32, Vec<(u64, String)>>) -> usize {
    let mut at: BTreeMap<(u32, u64), &str> = BTreeMap::new();
    for (p, recs) in got {
        assert!(recs.windows(2).all(|w| w[0].0 < w[1].0), "partition {p}: offsets increase");
        for (o, v) in recs {
            at.insert((*p, *o), v);
        }
    }
    for (p, o, v) in acked {
        assert_eq!(at.get(&(*p, *o)).copied(), Some(v.as_str()), "acknowledged {v} at {p}/{o} is readable");
    }
    let mut duplicates = 0;
    for recs in got.values() {
        let mut last: BTreeMap<&str, u64> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for (_, v) in recs {
            let (w, i) = v.split_once('-').unwrap();
            let i: u64 = i.parse().unwrap();
            if !seen.insert(v.clone()) {
                duplicates += 1;
                continue;
            }
            if let Some(prev) = last.insert(w, i) {
                assert!(i > prev, "{w}: {i} after {prev}: records of one writer are never reordered");
            }
        }
    }
    duplicates
}
