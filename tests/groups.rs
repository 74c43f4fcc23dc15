//! Consumer groups end to end: real brokers, `fjord tail --group`
//! processes (killed with SIGKILL), in-process `GroupConsumer`s, and the
//! `fjord group` admin commands.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{fjord, fjord_bin, fjord_ok, Broker, Cluster};
use fjord_client::{
    AutoOffsetReset, Client, ClientConfig, Error, GroupConsumer, GroupConsumerConfig, GroupEvent,
};

const PARTITIONS: u32 = 6;
/// partition → the offset after the last record read from it: what the
/// group must have committed once everything read is committed. (Offsets
/// are not dense: a Raft leader's no-op takes one.)
fn next_offsets(seen: &[Seen]) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    for (p, o, _) in seen {
        let e = out.entry(*p).or_insert(0);
        *e = (*e).max(o + 1);
    }
    out
}

fn committed_map(c: &[fjord_client::CommittedOffset]) -> BTreeMap<u32, u64> {
    c.iter().map(|c| (c.partition, c.offset)).collect()
}

/// Asserts `committed` is exactly what reading `seen` (all handed out)
/// commits: per partition the offset after the last record read, or past
/// the Raft no-ops that followed it, but never past a record not read.
async fn assert_commits_cover(client: &Client, topic: &str, committed: &BTreeMap<u32, u64>, seen: &[Seen]) {
    let next = next_offsets(seen);
    assert_eq!(committed.keys().collect::<Vec<_>>(), next.keys().collect::<Vec<_>>());
    for (p, n) in &next {
        let c = committed[p];
        assert!(c >= *n, "partition {p}: committed {c} is below the next unread offset {n}");
        if c > *n {
            let mut skipped = fjord_client::Consumer::new(client.clone(), Default::default());
            skipped.assign(topic, Some(&[*p])).await.unwrap();
            skipped.seek(topic, *p, fjord_client::Seek::Offset(*n)).unwrap();
            skipped.stop_at(topic, *p, c).unwrap();
            let rec = skipped.next().await;
            assert!(rec.is_none(), "partition {p}: committed {c} skips a record at or after {n}: {rec:?}");
        }
    }
}

/// Session timeout of test members: short, so a killed one is noticed fast.
const SESSION: &str = "3s";

/// (partition, offset, value) of one record a member printed.
type Seen = (u32, u64, String);

/// A `fjord tail --group` process and what it has printed so far.
struct Member {
    child: Option<Child>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Member {
    fn start(addr: &str, topic: &str, group: &str) -> Member {
        let mut child = Command::new(fjord_bin())
            .args(["--broker", addr, "tail", topic, "--group", group, "--from-beginning", "--format", "json"])
            .args(["--session-timeout", SESSION, "--commit-interval", "300ms"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn fjord tail --group");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (out, sink) = (child.stdout.take().unwrap(), seen.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                let v: serde_json::Value = serde_json::from_str(&line).expect("json line");
                let rec = (
                    v["partition"].as_u64().unwrap() as u32,
                    v["offset"].as_u64().unwrap(),
                    v["value"].as_str().unwrap().to_string(),
                );
                sink.lock().unwrap().push(rec);
            }
        });
        Member { child: Some(child), seen }
    }

    fn client_id(&self) -> String {
        format!("fjord-tail-{}", self.child.as_ref().unwrap().id())
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// SIGKILL: no commit, no leave.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

fn publish(addr: &str, topic: &str, from: usize, to: usize) -> BTreeSet<String> {
    let values: Vec<String> = (from..to).map(|i| format!("v{i:05}")).collect();
    let input: String = values.iter().map(|v| format!("k{v}:{v}\n")).collect();
    fjord_ok(addr, &["publish", topic, "--key-separator", ":"], input.as_bytes());
    values.into_iter().collect()
}

fn describe(addr: &str, group: &str) -> serde_json::Value {
    serde_json::from_str(&fjord_ok(addr, &["group", "describe", group, "--format", "json"], b"")).unwrap()
}

/// client id → owned partitions, from `fjord group describe --format json`.
fn owners(d: &serde_json::Value) -> BTreeMap<String, BTreeSet<u32>> {
    d["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let owned =
                m["owned"].as_array().unwrap().iter().map(|p| p["partition"].as_u64().unwrap() as u32);
            (m["client_id"].as_str().unwrap().to_string(), owned.collect())
        })
        .collect()
}

/// Waits until the group is stable with exactly `members` members that
/// between them own every partition once; returns the owners.
fn wait_stable(addr: &str, group: &str, members: usize, within: Duration) -> BTreeMap<String, BTreeSet<u32>> {
    let deadline = Instant::now() + within;
    loop {
        // Until the first member's join is committed the group is unknown.
        let out = fjord(addr, &["group", "describe", group, "--format", "json"], b"");
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("unknown group") && Instant::now() < deadline, "describe failed: {err}");
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let o = owners(&d);
        let all: Vec<u32> = o.values().flatten().copied().collect();
        let once = all.len() == PARTITIONS as usize && all.iter().collect::<BTreeSet<_>>().len() == all.len();
        if d["state"] == "stable" && o.len() == members && once {
            return o;
        }
        assert!(Instant::now() < deadline, "group {group} not stable with {members} members: {d}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_read(members: &[&Member], want: &BTreeSet<String>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got: BTreeSet<String> = members.iter().flat_map(|m| m.seen()).map(|(_, _, v)| v).collect();
        let missing = want.difference(&got).count();
        if missing == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{missing} of {} records were never read", want.len());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn cli_members_share_partitions_survive_a_kill_and_a_join_is_incremental() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    let addr = &broker.addr;
    fjord_ok(addr, &["topic", "create", "work", "--partitions", &PARTITIONS.to_string()], b"");
    let mut want = publish(addr, "work", 0, 300);

    // Three members: each partition owned by exactly one, everything read.
    let mut members: Vec<Member> = (0..3).map(|_| Member::start(addr, "work", "g")).collect();
    let owned = wait_stable(addr, "g", 3, Duration::from_secs(30));
    for m in &members {
        assert_eq!(owned[&m.client_id()].len(), 2, "balanced: {owned:?}");
    }
    wait_read(&members.iter().collect::<Vec<_>>(), &want, Duration::from_secs(20));

    // SIGKILL one member: its partitions move to the others within the
    // session timeout (plus a heartbeat), and nothing is lost.
    std::thread::sleep(Duration::from_millis(800)); // let the others commit
    let victim_parts = owned[&members[0].client_id()].clone();
    let killed_at = Instant::now();
    members[0].kill();
    want.extend(publish(addr, "work", 300, 600));
    let survivors = wait_stable(addr, "g", 2, Duration::from_secs(15));
    assert!(killed_at.elapsed() < Duration::from_secs(12), "took {:?}", killed_at.elapsed());
    let live: Vec<&Member> = members.iter().collect();
    wait_read(&live, &want, Duration::from_secs(20));
    // Duplicates only where the killed member had read without committing.
    let mut count: BTreeMap<String, (usize, u32)> = BTreeMap::new();
    for (p, _, v) in members.iter().flat_map(|m| m.seen()) {
        count.entry(v).or_insert((0, p)).0 += 1;
    }
    for (v, (n, p)) in &count {
        assert!(
            *n == 1 || victim_parts.contains(p),
            "{v} read {n} times from partition {p}, not the victim's"
        );
    }
    // ...and there only a tail of what the victim read: its successor
    // started at the victim's last commit.
    for p in &victim_parts {
        let victim: BTreeSet<u64> = members[0].seen().iter().filter(|r| r.0 == *p).map(|r| r.1).collect();
        let again: BTreeSet<u64> = members[1..]
            .iter()
            .flat_map(|m| m.seen())
            .filter(|r| r.0 == *p && victim.contains(&r.1))
            .map(|r| r.1)
            .collect();
        if let Some(&from) = again.first() {
            let tail: BTreeSet<u64> = victim.range(from..).copied().collect();
            assert_eq!(again, tail, "partition {p}: re-read offsets are the victim's uncommitted tail");
        }
    }

    // A member joins: only the partitions it takes move; the others keep
    // theirs and keep receiving records.
    let before: BTreeMap<String, BTreeSet<u32>> = survivors.clone();
    let seen_before: Vec<usize> = members[1..].iter().map(|m| m.seen().len()).collect();
    members.push(Member::start(addr, "work", "g"));
    let after = wait_stable(addr, "g", 3, Duration::from_secs(20));
    let newcomer = &after[&members[3].client_id()];
    assert_eq!(newcomer.len(), 2, "{after:?}");
    for m in &members[1..3] {
        let (b, a) = (&before[&m.client_id()], &after[&m.client_id()]);
        assert!(a.is_subset(b), "a survivor only gives partitions up: {b:?} → {a:?}");
        assert_eq!(a.len(), 2);
    }
    want.extend(publish(addr, "work", 600, 900));
    wait_read(&members.iter().collect::<Vec<_>>(), &want, Duration::from_secs(20));
    for (i, m) in members[1..3].iter().enumerate() {
        assert!(m.seen().len() > seen_before[i], "member {} kept receiving records", i + 1);
    }
}

#[test]
fn groups_fan_out_resume_from_commits_and_refuse_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    let addr = &broker.addr;
    fjord_ok(addr, &["topic", "create", "events", "--partitions", "3"], b"");
    let want = publish(addr, "events", 0, 100);
    let tail = |group: &str, limit: usize| -> Vec<String> {
        let out = fjord_ok(
            addr,
            &["tail", "events", "--group", group, "--from-beginning", "--limit", &limit.to_string()],
            b"",
        );
        out.lines().map(str::to_string).collect()
    };
    // Group a stops after 40 records and resumes: 60 more, none twice, none skipped.
    let first = tail("a", 40);
    let second = tail("a", 60);
    assert_eq!((first.len(), second.len()), (40, 60));
    let union: BTreeSet<String> = first.iter().chain(second.iter()).cloned().collect();
    assert_eq!(union, want, "a restarted group resumes exactly at its commits");
    // Group b, on the same topic, gets every record too (fan-out).
    let b: BTreeSet<String> = tail("b", 100).into_iter().collect();
    assert_eq!(b, want);
    let d = describe(addr, "a");
    let lag: u64 = d["partitions"].as_array().unwrap().iter().map(|p| p["lag"].as_u64().unwrap()).sum();
    assert_eq!((d["state"].as_str(), lag), (Some("empty"), 0), "{d}");
    let listed = fjord_ok(addr, &["group", "list"], b"");
    assert_eq!(listed.lines().collect::<Vec<_>>(), ["a", "b"]);

    // Reset a to the beginning and read everything again.
    fjord_ok(addr, &["group", "reset-offsets", "a", "--topic", "events", "--to-earliest"], b"");
    assert_eq!(tail("a", 100).into_iter().collect::<BTreeSet<_>>(), want);
    let out = fjord_ok(
        addr,
        &["group", "reset-offsets", "a", "--topic", "events", "--to-offset", "5", "--format", "json"],
        b"",
    );
    assert!(out.contains("\"offset\":5"), "{out}");

    // Bad input: unknown groups, reserved topics.
    for args in [&["group", "describe", "nope"][..], &["group", "delete", "nope"]] {
        let out = fjord(addr, args, b"");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("unknown group \"nope\""), "{args:?}: {err}");
    }
    for args in [&["topic", "create", "__mine", "-p", "1"][..], &["topic", "delete", "__consumer_offsets"]] {
        let out = fjord(addr, args, b"");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("is reserved"), "{args:?}: {err}");
    }
    let out = fjord(addr, &["publish", "__consumer_offsets", "--value", "x"], b"");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("is reserved"));

    fjord_ok(addr, &["group", "delete", "b"], b"");
    assert_eq!(fjord_ok(addr, &["group", "list"], b"").lines().collect::<Vec<_>>(), ["a"]);
}

async fn connect(bootstrap: &str) -> Client {
    let cfg = ClientConfig {
        request_timeout: Duration::from_secs(3),
        retry_deadline: Duration::from_secs(30),
        ..ClientConfig::from_bootstrap(bootstrap).unwrap()
    };
    Client::connect(cfg).await.unwrap()
}

fn member_config(group: &str, topic: &str) -> GroupConsumerConfig {
    let mut c = GroupConsumerConfig::new(group, &[topic]);
    c.session_timeout = Duration::from_secs(3);
    c.auto_offset_reset = AutoOffsetReset::Earliest;
    c.auto_commit_interval = Duration::from_millis(300);
    c
}

/// Polls until `n` records arrived (or panics after `within`); returns them.
async fn read(consumer: &mut GroupConsumer, n: usize, within: Duration) -> Vec<Seen> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while got.len() < n {
        let ev = tokio::time::timeout_at(deadline, consumer.poll()).await;
        match ev.unwrap_or_else(|_| panic!("only {} of {n} records in {within:?}", got.len())).unwrap() {
            GroupEvent::Record(r) => {
                got.push((r.partition, r.offset, String::from_utf8(r.value.unwrap().to_vec()).unwrap()))
            }
            GroupEvent::Assigned(_) | GroupEvent::Revoked(_) => {}
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_are_fenced_and_active_groups_cannot_be_reset_or_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    let addr = broker.addr.clone();
    let client = connect(&addr).await;
    client.create_topic("t", 2, 0, Default::default()).await.unwrap();
    publish(&addr, "t", 0, 10);
    let mut consumer = GroupConsumer::new(client.clone(), member_config("g", "t")).unwrap();
    let seen = read(&mut consumer, 10, Duration::from_secs(15)).await;
    consumer.commit().await.unwrap();
    let member = consumer.member_id();
    let o = |p| fjord_client::CommittedOffset {
        topic: "t".into(),
        partition: p,
        offset: 1,
        metadata: String::new(),
    };
    match client.commit_offsets("g", &member, 9_999, &[o(0)], None).await {
        Err(Error::StaleMemberEpoch { message }) => assert!(message.contains("epoch 9999"), "{message}"),
        other => panic!("stale epoch commit: {other:?}"),
    }
    match client.commit_offsets("g", "", -1, &[o(0)], None).await {
        Err(Error::GroupNotEmpty { .. }) => {}
        other => panic!("admin commit to an active group: {other:?}"),
    }
    match client.commit_offsets("g", "ghost", 1, &[o(0)], None).await {
        Err(Error::UnknownMember { .. }) => {}
        other => panic!("unknown member commit: {other:?}"),
    }
    // The status carries the documented gRPC code and ErrorDetail code.
    let mut raw =
        fjord_proto::pb::groups_client::GroupsClient::connect(format!("http://{addr}")).await.unwrap();
    let status = raw
        .commit_offsets(fjord_proto::pb::CommitOffsetsRequest {
            group_id: "g".into(),
            member_id: member.clone(),
            member_epoch: 9_999,
            offsets: vec![],
        })
        .await
        .unwrap_err();
    let detail = fjord_proto::decode_status_details(status.details()).unwrap();
    assert_eq!(
        (status.code(), detail.code()),
        (tonic::Code::FailedPrecondition, fjord_proto::pb::ErrorCode::StaleMemberEpoch)
    );
    for args in
        [&["group", "reset-offsets", "g", "--topic", "t", "--to-latest"][..], &["group", "delete", "g"]]
    {
        let out = fjord(&addr, args, b"");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("group not empty"), "{args:?}: {err}");
    }
    let committed = client.fetch_offsets("g", &[]).await.unwrap();
    assert_commits_cover(&client, "t", &committed_map(&committed), &seen).await;
    consumer.close().await.unwrap();
    assert_eq!(client.describe_group("g").await.unwrap().state, "empty");
    client.delete_group("g").await.unwrap();
    assert!(matches!(client.describe_group("g").await, Err(Error::UnknownGroup { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_survives_the_loss_of_its_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3);
    let bootstrap = cluster.bootstrap();
    let client = connect(&bootstrap).await;
    client.create_topic("orders", PARTITIONS, 3, Default::default()).await.unwrap();
    let first = publish(&bootstrap, "orders", 0, 200);
    let mut consumer = GroupConsumer::new(client.clone(), member_config("billing", "orders")).unwrap();
    let mut seen = read(&mut consumer, 200, Duration::from_secs(30)).await;
    assert_eq!(seen.iter().map(|r| r.2.clone()).collect::<BTreeSet<_>>(), first);
    consumer.commit().await.unwrap();
    let committed = client.fetch_offsets("billing", &[]).await.unwrap();
    assert_commits_cover(&client, "orders", &committed_map(&committed), &seen).await;
    let coordinator = client.describe_group("billing").await.unwrap().coordinator_id;

    cluster.kill(coordinator);
    let survivor =
        cluster.addrs.iter().enumerate().find(|(i, _)| *i as u64 + 1 != coordinator).unwrap().1.clone();
    // The new coordinator has the offsets committed through the old one.
    let intact = connect(&survivor).await.fetch_offsets("billing", &[]).await.unwrap();
    assert_eq!(committed_map(&intact), committed_map(&committed), "committed offsets survive the failover");
    let second = publish(&survivor, "orders", 200, 400);
    // At least once: records of the first round may come again if a
    // commit was lost with the coordinator; read until the second round is in.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !second.iter().all(|v| seen.iter().any(|r| &r.2 == v)) {
        assert!(Instant::now() < deadline, "records after the failover were not all read");
        seen.extend(read(&mut consumer, 1, Duration::from_secs(30)).await);
    }
    consumer.commit().await.unwrap();
    let client = connect(&survivor).await;
    let d = client.describe_group("billing").await.unwrap();
    assert_ne!(d.coordinator_id, coordinator, "a new coordinator took over");
    assert_eq!(d.members.len(), 1, "the member kept (or regained) its membership: {d:?}");
    let after = client.fetch_offsets("billing", &[]).await.unwrap();
    assert_commits_cover(&client, "orders", &committed_map(&after), &seen).await;
    consumer.close().await.unwrap();
}

/// Polls until an event `want` accepts (records in between are skipped);
/// panics after `within`.
async fn until_event(
    consumer: &mut GroupConsumer,
    within: Duration,
    want: impl Fn(&GroupEvent) -> bool,
) -> GroupEvent {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let ev = tokio::time::timeout_at(deadline, consumer.poll()).await;
        let ev = ev.unwrap_or_else(|_| panic!("no such event within {within:?}")).unwrap();
        if want(&ev) {
            return ev;
        }
    }
}

fn one_partition_offsets(addr: &str, topic: &str) -> Vec<u64> {
    let out = fjord_ok(addr, &["tail", topic, "--from-beginning", "--format", "json"], b"");
    out.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["offset"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_hand_over_exact_positions_and_drop_partitions_when_the_coordinator_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(&dir.path().join("data"), &[]);
    let addr = broker.addr.clone();
    let client = connect(&addr).await;
    client.create_topic("one", 1, 0, Default::default()).await.unwrap();
    publish(&addr, "one", 0, 3);

    // Latest: a partition revoked before its first record still commits
    // where it started, so the next member reads what came after.
    let latest = |group: &str| GroupConsumerConfig {
        auto_offset_reset: AutoOffsetReset::Latest,
        ..member_config(group, "one")
    };
    let mut first = GroupConsumer::new(client.clone(), latest("late")).unwrap();
    until_event(&mut first, Duration::from_secs(15), |e| matches!(e, GroupEvent::Assigned(_))).await;
    let end = client.list_offsets("one", 0, fjord_client::OffsetSpec::Latest).await.unwrap().offset;
    let after = publish(&addr, "one", 3, 8);
    first.close().await.unwrap();
    assert_eq!(committed_map(&client.fetch_offsets("late", &[]).await.unwrap()), BTreeMap::from([(0, end)]));
    let mut second = GroupConsumer::new(client.clone(), latest("late")).unwrap();
    let got = read(&mut second, 5, Duration::from_secs(15)).await;
    assert_eq!(
        got.iter().map(|r| r.2.clone()).collect::<BTreeSet<_>>(),
        after,
        "the next owner starts at the commit"
    );

    // Explicit offsets with metadata, for owned partitions only.
    let o = |p, offset| fjord_client::CommittedOffset {
        topic: "one".into(),
        partition: p,
        offset,
        metadata: "m".into(),
    };
    second.commit_offsets(&[o(0, 4)]).await.unwrap();
    let c = client.fetch_offsets("late", &[]).await.unwrap();
    assert_eq!((c[0].offset, c[0].metadata.as_str()), (4, "m"));
    match second.commit_offsets(&[o(0, 5), o(1, 0)]).await {
        Err(Error::UnknownPartition { message }) => assert!(message.contains("one/1"), "{message}"),
        other => panic!("commit of a partition not owned: {other:?}"),
    }
    assert_eq!(client.fetch_offsets("late", &[]).await.unwrap()[0].offset, 4, "nothing committed");

    // A member asking for another assignor is told which --assignor to pass.
    let out = fjord(&addr, &["tail", "one", "--group", "late", "--assignor", "range", "--limit", "1"], b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--assignor sticky"), "{err}");
    second.close().await.unwrap();

    // The coordinator stops answering: after a session the member stops
    // reading its partitions; when it answers again the member rejoins
    // under the id it made itself, so the group has it once.
    let mut member = GroupConsumer::new(client.clone(), member_config("stop", "one")).unwrap();
    read(&mut member, 8, Duration::from_secs(15)).await;
    let id = member.member_id();
    assert_eq!(id.len(), 32, "{id}");
    let signal = |sig: &str| {
        assert!(Command::new("kill").args([sig, &broker.pid().to_string()]).status().unwrap().success())
    };
    signal("-STOP");
    let stopped = Instant::now();
    let ev = until_event(&mut member, Duration::from_secs(10), |e| matches!(e, GroupEvent::Revoked(_))).await;
    assert_eq!(ev, GroupEvent::Revoked(vec![("one".into(), 0)]));
    assert!(stopped.elapsed() < Duration::from_secs(5), "revoked after {:?}", stopped.elapsed());
    signal("-CONT");
    let ev =
        until_event(&mut member, Duration::from_secs(20), |e| matches!(e, GroupEvent::Assigned(_))).await;
    assert_eq!(ev, GroupEvent::Assigned(vec![("one".into(), 0)]));
    assert_eq!(member.member_id(), id);
    let d = client.describe_group("stop").await.unwrap();
    assert_eq!(d.members.iter().map(|m| m.member_id.clone()).collect::<Vec<_>>(), [id], "{d:?}");
    member.close().await.unwrap();
    broker.kill();
}

#[test]
fn tail_group_does_not_commit_a_record_it_could_not_print() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    let addr = &broker.addr;
    fjord_ok(addr, &["topic", "create", "one", "--partitions", "1"], b"");
    publish(addr, "one", 0, 10);
    let mut child = Command::new(fjord_bin())
        .args(["--broker", addr, "tail", "one", "--group", "pipe", "--from-beginning", "--format", "json"])
        .args(["--commit-interval", "100ms"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..10 {
        lines.next().unwrap().unwrap();
    }
    drop(lines); // as `| head -10` does
    publish(addr, "one", 10, 11);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "tail --group did not stop on a closed stdout");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "a closed pipe ends tail quietly: {status} {err}");
    // The 11th record was not printed: the commit stops before it, and the
    // member left the group on its way out.
    let offsets = one_partition_offsets(addr, "one");
    let d = describe(addr, "pipe");
    let committed = d["partitions"][0]["committed"].as_u64();
    assert_eq!(committed, Some(offsets[10]), "{d}");
    assert_eq!(d["members"].as_array().map(Vec::len), Some(0), "{d}");
    let next = fjord_ok(addr, &["tail", "one", "--group", "pipe", "--limit", "1"], b"");
    assert_eq!(next.trim(), "v00010");
}

#[test]
fn bench_consume_reads_as_a_group_member_and_commits_what_it_read() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    let addr = &broker.addr;
    fjord_ok(addr, &["topic", "create", "bench", "--partitions", "3"], b"");
    let lines: String = (0..300).map(|i| format!("k{i}:v{i}\n")).collect();
    fjord_ok(addr, &["publish", "bench", "--key-separator", ":"], lines.as_bytes());
    let out = fjord_ok(
        addr,
        &["bench", "consume", "--topic", "bench", "--group", "b", "--records", "300", "--json"],
        b"",
    );
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(summary["records"], 300, "{out}");
    // It left the group, and its commits cover every record: no lag.
    let d = describe(addr, "b");
    assert_eq!(d["members"].as_array().unwrap().len(), 0, "{d}");
    let lag: u64 = d["partitions"].as_array().unwrap().iter().map(|p| p["lag"].as_u64().unwrap()).sum();
    assert_eq!(lag, 0, "{d}");
    let missing = fjord(addr, &["bench", "consume", "--topic", "bench", "--group", "b"], b"");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--records"));
}

#[test]
fn a_caught_up_group_shows_no_lag_past_a_leaders_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = Broker::start(&data, &[]);
    fjord_ok(&broker.addr, &["topic", "create", "noop", "--partitions", "1"], b"");
    fjord_ok(&broker.addr, &["publish", "noop"], b"a\nb\nc\n");
    // A restart elects the broker again: its new term's no-op (a control
    // batch, one offset) now ends the partition, after the last record.
    assert!(broker.terminate());
    let broker = Broker::start(&data, &[]);
    let addr = &broker.addr;
    let args = ["bench", "consume", "--topic", "noop", "--group", "g", "--records", "3", "--json"];
    fjord_ok(addr, &args, b"");
    let d = describe(addr, "g");
    let p = &d["partitions"][0];
    assert!(p["log_end"].as_u64().unwrap() > 4, "the no-op follows the 3 records and the first no-op: {d}");
    assert_eq!(p["lag"], 0, "{d}");
}

/// A group that has read everything stays caught up across a restart:
/// the new leader's no-op control batch (timestamp 0, not a time) after
/// its commit is nothing to consume, so `describe` gives its age as 0,
/// not the 56 years since 1970 it once showed.
#[test]
fn a_caught_up_group_is_not_lagging_by_decades_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = Broker::start(&data, &[]);
    fjord_ok(&broker.addr, &["topic", "create", "t", "-p", "1"], b"");
    publish(&broker.addr, "t", 0, 5);
    fjord_ok(&broker.addr, &["tail", "t", "--group", "g", "--from-beginning", "--limit", "5"], b"");
    broker.kill();
    let broker = Broker::start(&data, &[]);
    let mut d = describe(&broker.addr, "g");
    for _ in 0..50 {
        if d["partitions"][0]["lag_ms"].is_i64() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        d = describe(&broker.addr, "g");
    }
    let p = &d["partitions"][0];
    // The first no-op and the 5 records.
    assert_eq!(p["committed"].as_u64(), Some(6), "{d}");
    assert_eq!(p["lag_ms"].as_i64(), Some(0), "{d}");
    let table = fjord_ok(&broker.addr, &["group", "describe", "g"], b"");
    let huge = table.split_whitespace().any(|w| w.len() >= 9 && w.bytes().all(|b| b.is_ascii_digit()));
    assert!(!huge, "no age counted from 1970:\n{table}");
}
