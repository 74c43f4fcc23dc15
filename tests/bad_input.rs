//! Every kind of bad input gets its documented status and a message that
//! says what was wrong, and the broker keeps serving throughout.

mod common;

use bytes::Bytes;
use common::{expect, fjord, fjord_ok, Broker};
use fjord_codec::format::*;
use fjord_codec::BatchBuilder;
use fjord_proto::pb::{
    self, admin_client::AdminClient, consumer_client::ConsumerClient, producer_client::ProducerClient,
};
use tonic::transport::Channel;
use tonic::Code;

async fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
}

fn batch(values: &[&str]) -> Bytes {
    let mut b = BatchBuilder::new(BATCH_LEN_MAX);
    for v in values {
        b.push(None, Some(v.as_bytes()), &[], 1_700_000_000_000).unwrap();
    }
    b.finish()
}

fn produce(topic: &str, partition: u32, batch: Bytes) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: topic.into(),
        batches: vec![pb::PartitionBatch { partition, batch }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_precise_statuses_and_the_broker_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(&dir.path().join("data"), &[]);
    let ch = channel(&broker.addr).await;
    let (mut admin, mut producer, mut consumer) =
        (AdminClient::new(ch.clone()), ProducerClient::new(ch.clone()), ConsumerClient::new(ch.clone()));
    let create = |name: &str, partitions| pb::CreateTopicRequest {
        name: name.into(),
        partitions,
        ..Default::default()
    };
    admin.create_topic(create("good", 2)).await.unwrap();

    // Topic administration.
    expect(
        admin.create_topic(create("bad name", 1)).await,
        Code::InvalidArgument,
        pb::ErrorCode::InvalidRequest,
        &["' '", "allowed"],
    );
    expect(
        admin.create_topic(create(&"x".repeat(250), 1)).await,
        Code::InvalidArgument,
        pb::ErrorCode::InvalidRequest,
        &["249"],
    );
    expect(
        admin.create_topic(create("..", 1)).await,
        Code::InvalidArgument,
        pb::ErrorCode::InvalidRequest,
        &["not allowed"],
    );
    expect(
        admin.create_topic(create("good", 1)).await,
        Code::AlreadyExists,
        pb::ErrorCode::TopicAlreadyExists,
        &["good"],
    );
    expect(
        admin.create_topic(create("many", 100_000)).await,
        Code::InvalidArgument,
        pb::ErrorCode::InvalidRequest,
        &["4096"],
    );
    let rf3 = pb::CreateTopicRequest { replication_factor: 3, ..create("rf3", 1) };
    expect(
        admin.create_topic(rf3).await,
        Code::InvalidArgument,
        pb::ErrorCode::InvalidRequest,
        &["replication factor 3"],
    );
    let tiny = pb::CreateTopicRequest {
        config: Some(pb::TopicConfig { segment_bytes: Some(10), ..Default::default() }),
        ..create("tiny", 1)
    };
    expect(
        admin.create_topic(tiny).await,
        Code::InvalidArgument,
        pb::ErrorCode::InvalidRequest,
        &["segment_bytes"],
    );
    let del = pb::DeleteTopicRequest { name: "nope".into() };
    expect(admin.delete_topic(del).await, Code::NotFound, pb::ErrorCode::UnknownTopic, &["nope"]);
    let desc = pb::DescribeTopicRequest { name: "nope".into() };
    expect(admin.describe_topic(desc).await, Code::NotFound, pb::ErrorCode::UnknownTopic, &["nope"]);

    // Produce.
    expect(
        producer.produce(produce("nope", 0, batch(&["a"]))).await,
        Code::NotFound,
        pb::ErrorCode::UnknownTopic,
        &["nope"],
    );
    expect(
        producer.produce(produce("good", 7, batch(&["a"]))).await,
        Code::NotFound,
        pb::ErrorCode::UnknownPartition,
        &["7", "2"],
    );
    let big = "v".repeat(1024 * 1024);
    let nine_mib: Vec<&str> = (0..9).map(|_| big.as_str()).collect();
    expect(
        producer.produce(produce("good", 0, batch(&nine_mib))).await,
        Code::InvalidArgument,
        pb::ErrorCode::MessageTooLarge,
        &["8388608", "batch_bytes_max"],
    );
    let mut flipped = batch(&["hello"]).to_vec();
    flipped[BATCH_HEADER_LEN + 10] ^= 1;
    expect(
        producer.produce(produce("good", 0, flipped.into())).await,
        Code::InvalidArgument,
        pb::ErrorCode::CorruptBatch,
        &["CRC"],
    );
    expect(
        producer.produce(produce("good", 0, Bytes::from_static(b"not a batch at all"))).await,
        Code::InvalidArgument,
        pb::ErrorCode::CorruptBatch,
        &["truncated"],
    );
    // A compressed batch whose block does not decode (CRC recomputed so only
    // the decompression can tell).
    let mut b = BatchBuilder::new(BATCH_LEN_MAX).compression(fjord_codec::Compression::Lz4);
    b.push(None, Some("abc".repeat(100).as_bytes()), &[], 1).unwrap();
    let mut packed = b.finish().to_vec();
    let n = packed.len();
    packed[COMPRESSED_DATA_AT..n].fill(0xff);
    let crc = crc32fast::hash(&packed[CRC_START..]);
    packed[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    expect(
        producer.produce(produce("good", 0, packed.into())).await,
        Code::InvalidArgument,
        pb::ErrorCode::CorruptBatch,
        &["decode"],
    );
    let mut huge_len = batch(&["x"]).to_vec();
    huge_len[BATCH_LEN_AT..BATCH_LEN_AT + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    expect(
        producer.produce(produce("good", 0, huge_len.into())).await,
        Code::InvalidArgument,
        pb::ErrorCode::CorruptBatch,
        &["length"],
    );
    let empty = pb::ProduceRequest { topic: "good".into(), ..Default::default() };
    expect(
        producer.produce(empty).await,
        Code::InvalidArgument,
        pb::ErrorCode::InvalidRequest,
        &["no batches"],
    );
    let mut twice = produce("good", 0, batch(&["a"]));
    twice.batches.push(pb::PartitionBatch { partition: 0, batch: batch(&["b"]) });
    expect(producer.produce(twice).await, Code::InvalidArgument, pb::ErrorCode::InvalidRequest, &["twice"]);
    let acks = pb::ProduceRequest { acks: 99, ..produce("good", 0, batch(&["a"])) };
    expect(producer.produce(acks).await, Code::InvalidArgument, pb::ErrorCode::InvalidRequest, &["acks"]);
    // A request above the transport limit is refused before it is buffered.
    let over: Vec<u8> = vec![0; REQUEST_LIMIT];
    let status = producer.produce(produce("good", 0, over.into())).await.expect_err("oversize request");
    assert!(
        matches!(
            status.code(),
            Code::ResourceExhausted | Code::OutOfRange | Code::InvalidArgument | Code::Internal
        ),
        "{status:?}"
    );

    // Nothing above was written: the partition holds no records (only the
    // Raft leader's no-op, a control batch consumers skip).
    let fetch =
        |offset| pb::FetchRequest { topic: "good".into(), partition: 0, offset, ..Default::default() };
    let r = consumer.fetch(fetch(0)).await.unwrap().into_inner();
    assert!(user_values(&r.batches).is_empty());
    let h0 = r.high_watermark;

    // Fetch and offsets.
    producer.produce(produce("good", 0, batch(&["a", "b", "c"]))).await.unwrap();
    let end = h0 + 3;
    let range = format!("[0, {end}]");
    let d = expect(
        consumer.fetch(fetch(end + 1)).await,
        Code::OutOfRange,
        pb::ErrorCode::OffsetOutOfRange,
        &[&range],
    );
    assert_eq!((d.log_start_offset, d.log_end_offset), (0, end));
    expect(
        consumer.fetch(fetch(u64::MAX)).await,
        Code::OutOfRange,
        pb::ErrorCode::OffsetOutOfRange,
        &[&range],
    );
    let wait = pb::FetchRequest { max_wait_ms: 1_000_000, ..fetch(0) };
    expect(
        consumer.fetch(wait).await,
        Code::InvalidArgument,
        pb::ErrorCode::InvalidRequest,
        &["max_wait_ms", "30000"],
    );
    let unknown = pb::FetchRequest { topic: "nope".into(), ..fetch(0) };
    expect(consumer.fetch(unknown).await, Code::NotFound, pb::ErrorCode::UnknownTopic, &["nope"]);
    let spec = pb::ListOffsetsRequest { topic: "good".into(), partition: 0, spec: 0, timestamp_ms: 0 };
    expect(
        consumer.list_offsets(spec).await,
        Code::InvalidArgument,
        pb::ErrorCode::InvalidRequest,
        &["spec"],
    );
    let sub = consumer.subscribe(fetch(end + 10)).await;
    expect(sub, Code::OutOfRange, pb::ErrorCode::OffsetOutOfRange, &[&range]);

    // The broker is still serving, and what was written reads back.
    let r = consumer.fetch(fetch(0)).await.unwrap().into_inner();
    assert_eq!((r.high_watermark, r.next_offset), (end, end));
    assert_eq!(user_values(&r.batches), ["a", "b", "c"]);
    assert!(broker.is_running());
    assert!(!broker.log().contains("panicked"), "no panic in the broker log");
}

/// Values of the records in the non-control batches of a fetch.
fn user_values(batches: &Bytes) -> Vec<String> {
    fjord_codec::split_batches(batches.clone())
        .map(Result::unwrap)
        .filter(|(h, _)| !h.is_control())
        .flat_map(|(_, b)| fjord_codec::records(&b).unwrap())
        .map(|rec| String::from_utf8(rec.unwrap().value.unwrap().to_vec()).unwrap())
        .collect()
}

/// Bigger than the broker's `REQUEST_BYTES_MAX` (64 MiB batch + 1 MiB).
const REQUEST_LIMIT: usize = 66 * 1024 * 1024;

#[test]
fn cli_errors_are_one_line_on_stderr_with_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    fjord_ok(&broker.addr, &["topic", "create", "t", "--partitions", "1"], b"");
    fjord_ok(&broker.addr, &["publish", "t"], b"one\ntwo\n");
    let cases: &[(&[&str], &str)] = &[
        (&["tail", "nope", "--from-beginning"], "nope"),
        (&["topic", "create", "bad/name", "--partitions", "1"], "allowed"),
        (&["topic", "create", "t", "--partitions", "1"], "already exists"),
        (&["topic", "describe", "nope"], "nope"),
        (&["publish", "nope"], "nope"),
        (&["tail", "t", "--offset", "5", "--partition", "0"], "out of range"),
        (&["publish", "t", "--partition", "9"], "partition"),
    ];
    for (args, words) in cases {
        let out = fjord(&broker.addr, args, b"x\n");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: exit code; stderr {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line on stderr, got {stderr:?}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].to_lowercase().contains(words),
            "{args:?}: {}",
            lines[0]
        );
    }
    // A broker that is not there: a clear error within the timeout, not a hang.
    let out = fjord("127.0.0.1:1", &["--timeout", "3s", "topic", "list"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_group_requests_are_refused_with_what_was_wrong() {
    use fjord_proto::pb::groups_client::GroupsClient;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    fjord_ok(&broker.addr, &["topic", "create", "t", "--partitions", "2"], b"");
    let mut groups = GroupsClient::new(channel(&broker.addr).await);
    groups.find_coordinator(pb::FindCoordinatorRequest { group_id: "g".into() }).await.unwrap();
    let join = |member_id: String, topics: Vec<String>, assignor: &str| pb::GroupHeartbeatRequest {
        group_id: "g".into(),
        member_id,
        member_epoch: 0,
        topics,
        assignor: assignor.into(),
        ..Default::default()
    };
    let t = vec!["t".to_string()];
    let long = "m".repeat(129);
    expect(
        groups.group_heartbeat(join(long, t.clone(), "")).await,
        Code::InvalidArgument,
        pb::ErrorCode::InvalidRequest,
        &["member_id is 129 bytes", "128"],
    );
    expect(
        groups.group_heartbeat(join("m1".into(), vec!["a/b".into()], "")).await,
        Code::InvalidArgument,
        pb::ErrorCode::InvalidRequest,
        &["topics", "a/b"],
    );
    // A client-chosen id: a retried join is the same member, not a second one.
    let first = groups.group_heartbeat(join("m1".into(), t.clone(), "range")).await.unwrap().into_inner();
    let again = groups.group_heartbeat(join("m1".into(), t.clone(), "")).await.unwrap().into_inner();
    assert_eq!((first.member_id.as_str(), again.member_id.as_str()), ("m1", "m1"));
    let d =
        groups.describe_group(pb::DescribeGroupRequest { group_id: "g".into() }).await.unwrap().into_inner();
    assert_eq!(d.members.len(), 1, "{d:?}");
    expect(
        groups.group_heartbeat(join("m2".into(), t.clone(), "round-robin")).await,
        Code::InvalidArgument,
        pb::ErrorCode::InvalidRequest,
        &["\"range\"", "join with assignor"],
    );
    // Offsets only for partitions that exist, even from an admin.
    let commit = |topic: &str, partition| pb::CommitOffsetsRequest {
        group_id: "empty".into(),
        member_id: String::new(),
        member_epoch: -1,
        offsets: vec![pb::OffsetCommit {
            topic: topic.into(),
            partition,
            offset: 1,
            metadata: String::new(),
        }],
    };
    expect(
        groups.commit_offsets(commit("nope", 0)).await,
        Code::NotFound,
        pb::ErrorCode::UnknownTopic,
        &["nope"],
    );
    expect(
        groups.commit_offsets(commit("t", 7)).await,
        Code::NotFound,
        pb::ErrorCode::UnknownPartition,
        &["no partition 7"],
    );
    groups.commit_offsets(commit("t", 1)).await.unwrap(); // the leader's no-op is at 0: 1 is the end
}

/// A commit past a partition's high watermark (from an admin or a member)
/// is refused with the valid range, and the group keeps its offset: one at
/// 2^64-1 showed as committed with a lag of 0 and would skip every record
/// written until the log got there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_past_the_high_watermark_are_out_of_range() {
    use fjord_proto::pb::groups_client::GroupsClient;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    fjord_ok(&broker.addr, &["topic", "create", "t", "--partitions", "1"], b"");
    fjord_ok(&broker.addr, &["publish", "t"], b"a\nb\nc\n");
    let ch = channel(&broker.addr).await;
    let (mut groups, mut consumer) = (GroupsClient::new(ch.clone()), ConsumerClient::new(ch));
    let lo = pb::ListOffsetsRequest { topic: "t".into(), partition: 0, spec: 2, timestamp_ms: 0 };
    let o = consumer.list_offsets(lo).await.unwrap().into_inner();
    let (start, end) = (o.log_start_offset, o.high_watermark);
    assert!(end >= 3, "three records: {o:?}");
    let commit = |offset| pb::CommitOffsetsRequest {
        group_id: "g".into(),
        member_id: String::new(),
        member_epoch: -1,
        offsets: vec![pb::OffsetCommit { topic: "t".into(), partition: 0, offset, metadata: String::new() }],
    };
    // The first request of a group creates the offsets topic; its
    // coordinator may then still be starting.
    for g in ["g", "m"] {
        groups.find_coordinator(pb::FindCoordinatorRequest { group_id: g.into() }).await.unwrap();
    }
    let mut first = groups.commit_offsets(commit(end)).await;
    for _ in 0..100 {
        match &first {
            Err(s) if s.code() == Code::Unavailable => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                first = groups.commit_offsets(commit(end)).await;
            }
            _ => break,
        }
    }
    first.expect("the high watermark itself is a valid position");
    let committed = |addr: &str| {
        let out = fjord_ok(addr, &["group", "describe", "g", "--format", "json"], b"");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        (v["partitions"][0]["committed"].as_u64(), v["partitions"][0]["lag"].as_u64())
    };
    assert_eq!(committed(&broker.addr), (Some(end), Some(0)));
    let range = format!("[{start}, {end}]");
    for bad in [u64::MAX, end + 1] {
        let d = expect(
            groups.commit_offsets(commit(bad)).await,
            Code::OutOfRange,
            pb::ErrorCode::OffsetOutOfRange,
            &[&bad.to_string(), &range, "t/0"],
        );
        assert_eq!((d.log_start_offset, d.log_end_offset), (start, end));
    }
    assert_eq!(committed(&broker.addr), (Some(end), Some(0)), "the refused commits changed nothing");
    // A member's commit gets the same check.
    let join = pb::GroupHeartbeatRequest {
        group_id: "m".into(),
        member_id: "m1".into(),
        member_epoch: 0,
        topics: vec!["t".into()],
        ..Default::default()
    };
    let mut hb = groups.group_heartbeat(join.clone()).await.unwrap().into_inner();
    for _ in 0..50 {
        if !hb.assigned.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let again = pb::GroupHeartbeatRequest { member_epoch: hb.member_epoch, ..join.clone() };
        hb = groups.group_heartbeat(again).await.unwrap().into_inner();
    }
    assert!(!hb.assigned.is_empty(), "the member was given t/0: {hb:?}");
    let member_commit = pb::CommitOffsetsRequest {
        group_id: "m".into(),
        member_id: "m1".into(),
        member_epoch: hb.member_epoch,
        ..commit(u64::MAX)
    };
    expect(
        groups.commit_offsets(member_commit).await,
        Code::OutOfRange,
        pb::ErrorCode::OffsetOutOfRange,
        &[&range],
    );
}

/// Names longer than a topic name can be are refused as such by every RPC
/// that takes one, and no error echoes more than a short prefix: a
/// 10,000-byte name used to come back whole in the status trailers, over
/// the client's 8 KiB metadata limit, hiding the real error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_topic_names_are_invalid_everywhere_and_never_echoed_whole() {
    use fjord_proto::pb::groups_client::GroupsClient;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    fjord_ok(&broker.addr, &["topic", "create", "t", "--partitions", "1"], b"");
    let ch = channel(&broker.addr).await;
    let (mut admin, mut producer, mut consumer, mut groups) = (
        AdminClient::new(ch.clone()),
        ProducerClient::new(ch.clone()),
        ConsumerClient::new(ch.clone()),
        GroupsClient::new(ch.clone()),
    );
    /// What "short" means here: the limit's words and a quoted prefix, never the name.
    const SHORT: usize = 200;
    fn refused(what: &str, len: usize, r: Result<impl std::fmt::Debug, tonic::Status>) {
        let s = r.expect_err(what);
        assert_eq!(s.code(), Code::InvalidArgument, "{what} of a {len}-byte name: {s:?}");
        assert!(s.message().len() < SHORT, "{what}: a {}-byte message", s.message().len());
        assert!(s.message().contains("249"), "{what}: {:?}", s.message());
    }
    for len in [250, 10_000] {
        let name = "n".repeat(len);
        let fetch = pb::FetchRequest { topic: name.clone(), partition: 0, ..Default::default() };
        refused("Fetch", len, consumer.fetch(fetch.clone()).await);
        refused("Subscribe", len, consumer.subscribe(fetch).await);
        let lo = pb::ListOffsetsRequest { topic: name.clone(), partition: 0, spec: 1, timestamp_ms: 0 };
        refused("ListOffsets", len, consumer.list_offsets(lo).await);
        refused("Produce", len, producer.produce(produce(&name, 0, batch(&["a"]))).await);
        let reserved = format!("__{name}"); // the reserved-prefix check came first and quoted it
        refused("Produce __", len, producer.produce(produce(&reserved, 0, batch(&["a"]))).await);
        refused(
            "DescribeTopic",
            len,
            admin.describe_topic(pb::DescribeTopicRequest { name: name.clone() }).await,
        );
        refused("DeleteTopic", len, admin.delete_topic(pb::DeleteTopicRequest { name: name.clone() }).await);
        refused(
            "CreateTopic",
            len,
            admin
                .create_topic(pb::CreateTopicRequest {
                    name: name.clone(),
                    partitions: 1,
                    ..Default::default()
                })
                .await,
        );
        refused("Metadata", len, admin.metadata(pb::MetadataRequest { topics: vec![name.clone()] }).await);
        let commit = pb::CommitOffsetsRequest {
            group_id: "g".into(),
            member_id: String::new(),
            member_epoch: -1,
            offsets: vec![pb::OffsetCommit {
                topic: name.clone(),
                partition: 0,
                offset: 0,
                metadata: String::new(),
            }],
        };
        refused("CommitOffsets", len, groups.commit_offsets(commit).await);
        let reset = pb::ResetOffsetsRequest {
            group_id: "g".into(),
            topic: name.clone(),
            spec: 1,
            ..Default::default()
        };
        refused("ResetOffsets", len, groups.reset_offsets(reset).await);
        let join = pb::GroupHeartbeatRequest {
            group_id: "g".into(),
            member_id: "m".into(),
            topics: vec![name.clone()],
            ..Default::default()
        };
        refused("GroupHeartbeat", len, groups.group_heartbeat(join).await);
    }
    // An unknown topic of a valid length is still NOT_FOUND, quoted in full.
    let unknown = "u".repeat(249);
    let s = admin.describe_topic(pb::DescribeTopicRequest { name: unknown.clone() }).await.unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    assert!(s.message().len() < SHORT && s.message().contains("…(249 bytes)"), "{:?}", s.message());
    // And the broker keeps serving.
    fjord_ok(&broker.addr, &["publish", "t"], b"still here\n");
    assert_eq!(fjord_ok(&broker.addr, &["tail", "t", "--from-beginning"], b""), "still here\n");
}

/// A topic whose replicas would not fit in the broker's file-descriptor
/// budget is refused with a message naming the budget, before anything is
/// opened, and the topics already there keep serving. Without the check,
/// creating it ran the process out of descriptors half way through the
/// metadata apply, and partitions already serving failed their fsyncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_beyond_the_fd_budget_is_refused_and_nothing_else_stops() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &["--max-connections", "64"]);
    // 1024 descriptors: minus 64 connections and 256 for the broker's own
    // files, a budget of 704, or about 170 partitions of 4 descriptors.
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &broker.pid().to_string(), "--nofile=1024:1024"])
        .status()
        .expect("prlimit (util-linux)");
    assert!(limited.success());
    fjord_ok(&broker.addr, &["topic", "create", "small", "--partitions", "10"], b"");
    fjord_ok(&broker.addr, &["publish", "small"], b"before\n");
    let mut admin = AdminClient::new(channel(&broker.addr).await);
    let huge = pb::CreateTopicRequest { name: "huge".into(), partitions: 4096, ..Default::default() };
    let started = std::time::Instant::now();
    expect(
        admin.create_topic(huge).await,
        Code::InvalidArgument,
        pb::ErrorCode::InvalidRequest,
        &["\"huge\"", "16384 file descriptors", "fd budget is 704", "RLIMIT_NOFILE 1024", "ulimit -n"],
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "refused before opening anything");
    let listed = fjord_ok(&broker.addr, &["topic", "list"], b"");
    assert!(!listed.contains("huge"), "{listed}");
    fjord_ok(&broker.addr, &["publish", "small"], b"after\n");
    let got = fjord_ok(&broker.addr, &["tail", "small", "--from-beginning"], b"");
    let mut got: Vec<&str> = got.lines().collect();
    got.sort();
    assert_eq!(got, ["after", "before"]);
    assert!(!broker.log().contains("Too many open files"), "{}", broker.log());
}

/// A partition replica that cannot be opened when its topic is created
/// (here a file stands where its directory goes; in the field, no
/// descriptors or a broken disk) stops neither the topic's other
/// partitions nor the metadata log: it answers UNAVAILABLE naming itself,
/// and it opens in the background once the obstacle is gone, without a
/// restart. Main once failed the whole apply: the topic was committed but
/// answered "unknown topic" on this broker, and every restart re-applied
/// it and failed the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_open_stops_nothing_else_and_opens_once_it_can() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = Broker::start(&data, &[]);
    fjord_ok(&broker.addr, &["topic", "create", "other", "--partitions", "1"], b"");
    let obstacle = data.join("topics").join("t").join("1");
    std::fs::create_dir_all(obstacle.parent().unwrap()).unwrap();
    std::fs::write(&obstacle, b"not a directory").unwrap();
    fjord_ok(&broker.addr, &["topic", "create", "t", "--partitions", "3"], b"");
    for p in ["0", "2"] {
        fjord_ok(&broker.addr, &["publish", "t", "--partition", p], format!("to {p}\n").as_bytes());
    }
    let out = fjord(&broker.addr, &["--timeout", "2s", "publish", "t", "--partition", "1"], b"lost?\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("partition 1 of topic t could not be opened on broker 1"), "{stderr}");
    fjord_ok(&broker.addr, &["publish", "other"], b"unaffected\n");
    assert!(broker.log().contains("cannot open the partition replica; it is retried"), "{}", broker.log());

    std::fs::remove_file(&obstacle).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = fjord(&broker.addr, &["--timeout", "2s", "publish", "t", "--partition", "1"], b"to 1\n");
        if out.status.success() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(broker.log().contains("opened the partition replica on a retry"), "{}", broker.log());
    // Whole after a restart: every partition holds what was acknowledged.
    broker.kill();
    let broker = Broker::start(&data, &[]);
    for p in ["0", "1", "2"] {
        let got = fjord_ok(&broker.addr, &["tail", "t", "--partition", p, "--from-beginning"], b"");
        assert_eq!(got, format!("to {p}\n"), "partition {p}");
    }
    assert_eq!(fjord_ok(&broker.addr, &["tail", "other", "--from-beginning"], b""), "unaffected\n");
}
