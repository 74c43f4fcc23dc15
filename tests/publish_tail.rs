//! Publish 100,000 records across partitions through the CLI and through
//! the Rust client, read them back, and check per-partition order and
//! content against what was sent.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::{client, fjord, fjord_ok, Broker};
use fjord_client::{
    partition_for_key, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, Seek,
};

const RECORDS: usize = 100_000;
const PARTITIONS: u32 = 4;
const KEYS: usize = 61;

fn key(i: usize) -> String {
    format!("user-{}", i % KEYS)
}

/// What each partition must hold, in order: the values of the records whose
/// key hashes to it, in send order.
fn expected_by_partition() -> BTreeMap<u32, Vec<(String, String)>> {
    let mut want: BTreeMap<u32, Vec<(String, String)>> = BTreeMap::new();
    for i in 0..RECORDS {
        let k = key(i);
        let p = partition_for_key(k.as_bytes(), PARTITIONS);
        want.entry(p).or_default().push((k, format!("value {i} {}", "x".repeat(i % 50))));
    }
    want
}

#[test]
fn cli_publish_then_tail_returns_every_record_in_partition_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    let addr = &broker.addr;
    fjord_ok(addr, &["topic", "create", "cli-topic", "--partitions", &PARTITIONS.to_string()], b"");
    let mut input = String::new();
    for i in 0..RECORDS {
        input.push_str(&format!("{}\tvalue {i} {}\n", key(i), "x".repeat(i % 50)));
    }
    let out = fjord_ok(addr, &["publish", "cli-topic", "--key-separator", "\t"], input.as_bytes());
    assert!(out.contains(&format!("{RECORDS} records acknowledged")), "publish said: {out}");

    let json = fjord_ok(addr, &["tail", "cli-topic", "--from-beginning", "--format", "json"], b"");
    let mut got: BTreeMap<u32, Vec<(u64, String, String)>> = BTreeMap::new();
    for line in json.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad json {line:?}: {e}"));
        let p = v["partition"].as_u64().unwrap() as u32;
        let rec = (
            v["offset"].as_u64().unwrap(),
            v["key"].as_str().unwrap().to_string(),
            v["value"].as_str().unwrap().to_string(),
        );
        got.entry(p).or_default().push(rec);
    }
    let want = expected_by_partition();
    assert_eq!(got.len(), want.len(), "partitions with data");
    for (p, recs) in &got {
        let offsets: Vec<u64> = recs.iter().map(|r| r.0).collect();
        // Offsets increase; a Raft leader's no-op (a control batch) takes one too.
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "partition {p}: offsets in order");
        let kv: Vec<(String, String)> = recs.iter().map(|r| (r.1.clone(), r.2.clone())).collect();
        assert!(kv == want[p], "partition {p}: content or order differs from what was published");
    }

    // Text format: one value per line; --partition and --limit.
    let text =
        fjord_ok(addr, &["tail", "cli-topic", "--from-beginning", "--partition", "1", "--limit", "3"], b"");
    let first: Vec<&str> = want[&1].iter().take(3).map(|(_, v)| v.as_str()).collect();
    assert_eq!(text.lines().collect::<Vec<_>>(), first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_produce_then_consume_returns_every_record_at_its_acknowledged_offset() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    let c = client(&broker.addr).await;
    c.create_topic("rust-topic", PARTITIONS, 0, Default::default()).await.unwrap();

    let producer = Producer::new(c.clone(), ProducerConfig::default()).unwrap();
    let mut deliveries = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let rec = ProducerRecord::new("rust-topic", Bytes::from(format!("value {i} {}", "x".repeat(i % 50))))
            .with_key(Bytes::from(key(i)))
            .with_header("seq", Some(Bytes::from(i.to_string())));
        deliveries.push(producer.send(rec).await.unwrap());
    }
    let mut acked: BTreeMap<u32, Vec<(u64, usize)>> = BTreeMap::new();
    for (i, d) in deliveries.into_iter().enumerate() {
        let meta = d.await.unwrap();
        assert_eq!(meta.partition, partition_for_key(key(i).as_bytes(), PARTITIONS));
        acked.entry(meta.partition).or_default().push((meta.offset, i));
    }
    producer.close().await.unwrap();
    for (p, recs) in &acked {
        let offsets: Vec<u64> = recs.iter().map(|r| r.0).collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "partition {p}: acked offsets follow send order");
    }

    let mut consumer =
        Consumer::new(c.clone(), ConsumerConfig { start: Seek::Beginning, ..ConsumerConfig::default() });
    consumer.assign("rust-topic", None).await.unwrap();
    consumer.stop_at_high_watermark().await.unwrap();
    let mut got: BTreeMap<u32, Vec<(u64, usize)>> = BTreeMap::new();
    while let Some(rec) = consumer.next().await {
        let rec = rec.unwrap();
        let seq: usize =
            std::str::from_utf8(rec.headers[0].value.as_ref().unwrap()).unwrap().parse().unwrap();
        assert_eq!(rec.key.as_deref(), Some(key(seq).as_bytes()));
        assert_eq!(rec.value.as_deref(), Some(format!("value {seq} {}", "x".repeat(seq % 50)).as_bytes()));
        got.entry(rec.partition).or_default().push((rec.offset, seq));
    }
    assert_eq!(got, acked, "every record comes back at the offset it was acknowledged with");
}

#[test]
fn compressed_and_plain_producers_share_a_topic_and_consumers_read_identical_records() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    let addr = &broker.addr;
    fjord_ok(addr, &["topic", "create", "mixed", "--partitions", "1"], b"");
    let lines: String =
        (0..2000).map(|i| format!("{{\"level\":\"info\",\"msg\":\"request served\",\"n\":{i}}}\n")).collect();
    fjord_ok(addr, &["publish", "mixed", "--compression", "lz4"], lines.as_bytes());
    fjord_ok(addr, &["publish", "mixed", "--compression", "none"], lines.as_bytes());
    let text = fjord_ok(addr, &["tail", "mixed", "--from-beginning"], b"");
    assert_eq!(text, format!("{lines}{lines}"), "both halves read back identically");
    // Batches are stored as they arrived: compressed ones take less disk.
    let size = |topic: &str, compression: &str| {
        fjord_ok(addr, &["topic", "create", topic, "--partitions", "1"], b"");
        fjord_ok(addr, &["publish", topic, "--compression", compression], lines.as_bytes());
        let described = fjord_ok(addr, &["topic", "describe", topic, "--format", "json"], b"");
        let v: serde_json::Value = serde_json::from_str(&described).unwrap();
        v["partitions"][0]["size_bytes"].as_u64().unwrap()
    };
    let (plain, packed) = (size("plain", "none"), size("packed", "lz4"));
    assert!(packed * 3 < plain, "lz4 log {packed} bytes vs plain {plain} bytes");
    let zstd = size("zpacked", "zstd");
    assert!(zstd * 3 < plain, "zstd log {zstd} bytes vs plain {plain} bytes");
    assert_eq!(fjord_ok(addr, &["tail", "zpacked", "--from-beginning"], b""), lines);

    // A topic that forces zstd stores uncompressed producers' batches as zstd.
    fjord_ok(addr, &["topic", "create", "forced", "--partitions", "1", "--compression", "zstd"], b"");
    fjord_ok(addr, &["publish", "forced", "--compression", "none"], lines.as_bytes());
    let described = fjord_ok(addr, &["topic", "describe", "forced", "--format", "json"], b"");
    let v: serde_json::Value = serde_json::from_str(&described).unwrap();
    assert_eq!(v["config"]["compression"], "zstd");
    let forced = v["partitions"][0]["size_bytes"].as_u64().unwrap();
    assert!(forced * 3 < plain, "forced zstd log {forced} bytes vs plain {plain} bytes");
    assert_eq!(fjord_ok(addr, &["tail", "forced", "--from-beginning"], b""), lines);
    let bad = fjord(addr, &["topic", "create", "gz", "--partitions", "1", "--compression", "gzip"], b"");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("compression \"gzip\" is not one of producer, none, lz4, zstd"), "{err}");
}
