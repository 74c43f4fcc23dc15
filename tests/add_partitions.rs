//! Partitions can be added to a topic while it is written and read
//! (Kafka's `kafka-topics --alter --partitions`): on a 3-broker cluster at
//! RF 3, `fjord topic alter T --partitions 4` adds two replicated
//! partitions; a running producer's partitioner starts using them within
//! its `metadata_max_age` without any error; a running consumer group is
//! assigned them; every acknowledged record is read back; lowering the
//! count is refused with a message that says why; and a restarted broker
//! replays the change with the same Raft groups.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::load::read_all;
use common::{fjord, fjord_ok, Cluster};
use fjord_client::{
    AutoOffsetReset, Client, ClientConfig, GroupConsumer, GroupConsumerConfig, GroupEvent, Producer,
    ProducerConfig, ProducerRecord,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_under_load_are_used_by_producers_and_groups() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3);
    let bootstrap = cluster.bootstrap();
    let config = ClientConfig {
        request_timeout: Duration::from_secs(3),
        retry_deadline: Duration::from_secs(30),
        metadata_max_age: Duration::from_millis(500),
        ..ClientConfig::from_bootstrap(&bootstrap).unwrap()
    };
    let client = Client::connect(config).await.unwrap();
    client.create_topic("grow", 2, 3, Default::default()).await.unwrap();

    // Keyless records, sticky per batch, while the count changes: 300
    // before the alter, 1,500 after it, written by a task while this one
    // reads them as a group member.
    let producer = Producer::new(
        client.clone(),
        ProducerConfig { linger: Duration::from_millis(2), ..Default::default() },
    )
    .unwrap();
    let writer = {
        let bootstrap = bootstrap.clone();
        tokio::spawn(async move {
            let mut acked: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
            for (phase, n) in [(0, 300), (1, 1500)] {
                if phase == 1 {
                    let bootstrap = bootstrap.clone();
                    let out = tokio::task::spawn_blocking(move || {
                        fjord_ok(&bootstrap, &["topic", "alter", "grow", "--partitions", "4"], b"")
                    })
                    .await
                    .unwrap();
                    let rows = out
                        .lines()
                        .filter(|l| l.split_whitespace().next().is_some_and(|c| c.parse::<u32>().is_ok()));
                    assert_eq!(rows.count(), 4, "{out}");
                }
                let mut deliveries = Vec::new();
                for i in 0..n {
                    let record = ProducerRecord::new("grow", format!("{phase}-{i}"));
                    deliveries.push(producer.send(record).await.unwrap());
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                for d in deliveries {
                    let m = d.await.expect("every record is acknowledged");
                    acked.entry(m.partition).or_default().insert(m.offset);
                }
                if phase == 0 {
                    assert!(acked.keys().all(|&p| p < 2), "{acked:?}");
                }
            }
            acked
        })
    };

    // A group member reading everything, noting where each record was.
    let mut member_config = GroupConsumerConfig::new("readers", &["grow"]);
    member_config.session_timeout = Duration::from_secs(3);
    member_config.auto_offset_reset = AutoOffsetReset::Earliest;
    let mut member = GroupConsumer::new(client.clone(), member_config).unwrap();
    let mut consumed: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    let mut acked = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut writer = Some(writer);
    loop {
        if writer.as_ref().is_some_and(|w| w.is_finished()) {
            acked = Some(writer.take().unwrap().await.unwrap());
        }
        if acked.as_ref() == Some(&consumed) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the group read {:?} of {:?}",
            consumed.iter().map(|(p, o)| (*p, o.len())).collect::<Vec<_>>(),
            acked.as_ref().map(|a| a.iter().map(|(p, o)| (*p, o.len())).collect::<Vec<_>>())
        );
        match tokio::time::timeout(Duration::from_millis(200), member.poll()).await {
            Ok(Ok(GroupEvent::Record(r))) => {
                consumed.entry(r.partition).or_default().insert(r.offset);
            }
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => panic!("group member failed: {e}"),
        }
    }
    member.close().await.unwrap();
    let acked = acked.unwrap();
    assert!(
        acked.contains_key(&2) && acked.contains_key(&3),
        "the producer used the new partitions: {acked:?}"
    );

    // Lowering the count, or keeping it, is refused and says why.
    for n in ["3", "4"] {
        let out = fjord(&bootstrap, &["topic", "alter", "grow", "--partitions", n], b"");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("has 4 partitions") && stderr.contains("never removed"), "{stderr}");
    }

    // A restarted broker replays the added partitions; all replicas agree.
    cluster.kill(1);
    cluster.restart(1);
    let described = fjord_ok(&cluster.addrs[0], &["topic", "describe", "grow", "--format", "json"], b"");
    let d: serde_json::Value = serde_json::from_str(&described).unwrap();
    assert_eq!(d["partitions"].as_array().map(Vec::len), Some(4), "{described}");
    let stored = read_all(&bootstrap, "grow").await;
    let stored: BTreeMap<u32, BTreeSet<u64>> =
        stored.into_iter().map(|(p, recs)| (p, recs.into_iter().map(|(o, _)| o).collect())).collect();
    assert_eq!(stored, acked);
}
