//! Bit rot is found and repaired (issue #20): one byte flipped in a closed
//! segment of a follower and another in one of the leader of an RF 3
//! partition; `fjord topic scrub` finds both, repairs them from the other
//! replicas, and the three replicas are equal byte for byte afterwards, with
//! every record read back. On a single replica the background scrubber
//! finds the damage, reads of that range fail with an error naming its
//! offsets (never the corrupt batch), the rest still reads, and the broker
//! keeps serving.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{fjord, fjord_ok, Broker, Cluster};

const RECORDS: usize = 3000;
/// Records per `fjord publish`: one batch of about 10 KiB each, so that the
/// 64 KiB segments hold several batches and many segments close.
const PER_PUBLISH: usize = 100;

fn publish(addr: &str, topic: &str, written: &str) {
    let all: Vec<&str> = written.lines().collect();
    for chunk in all.chunks(PER_PUBLISH) {
        let input: String = chunk.iter().map(|l| format!("{l}\n")).collect();
        fjord_ok(addr, &["publish", topic], input.as_bytes());
    }
}

/// `n` lines of about 100 bytes that compress poorly (so that they fill
/// several 64 KiB segments).
fn lines(prefix: &str, n: usize) -> String {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            format!(
                "{prefix}-{i:05}-{:016x}{:016x}{:016x}{:016x}{:016x}\n",
                next(),
                next(),
                next(),
                next(),
                next()
            )
        })
        .collect()
}

/// Every batch of a replica's log files by base offset, as stored.
fn batches(dir: &Path) -> std::collections::BTreeMap<u64, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    for f in segment_logs(dir) {
        // The active segment is preallocated: its batches end at zeros.
        for b in fjord_codec::split_batches(bytes::Bytes::from(std::fs::read(f).unwrap())) {
            let Ok((h, b)) = b else { break };
            out.insert(h.base_offset, b.to_vec());
        }
    }
    out
}

/// The segment log files of a partition directory, sorted.
fn segment_logs(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs
}

/// Flips one bit of the byte in the middle of `file`, as bit rot would.
fn flip_middle(file: &Path) {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(file).unwrap();
    let at = f.metadata().unwrap().len() / 2;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x04], at).unwrap();
}

fn describe(addr: &str, topic: &str) -> serde_json::Value {
    let out = fjord_ok(addr, &["topic", "describe", topic, "--format", "json"], b"");
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["partitions"][0].clone()
}

/// The leader of partition 0 of `topic` once all three replicas are in
/// sync (0 if that does not happen within 10 s).
fn leader_with_three_in_sync(bootstrap: &str, topic: &str) -> u64 {
    let mut leader = 0;
    for _ in 0..100 {
        let p = describe(bootstrap, topic);
        leader = p["leader"].as_u64().unwrap_or(0);
        if leader != 0 && p["in_sync_replicas"].as_array().unwrap().len() == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    leader
}

#[test]
fn flipped_bytes_on_a_follower_and_the_leader_are_found_and_repaired_from_the_other_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3);
    let bootstrap = cluster.bootstrap();
    fjord_ok(&bootstrap, &["topic", "create", "t", "-p", "1", "-r", "3", "--segment-bytes", "65536"], b"");
    let written = lines("t", RECORDS);
    publish(&bootstrap, "t", &written);
    // Every replica holds everything, and closed segments are sealed.
    let leader = leader_with_three_in_sync(&bootstrap, "t");
    std::thread::sleep(Duration::from_secs(2)); // a maintenance pass seals closed segments
    let partition_dir = |id: u64| cluster.data_dir(id).join("topics/t/0");
    let follower = (1..=3).find(|&b| b != leader).unwrap();
    let logs = segment_logs(&partition_dir(follower));
    assert!(logs.len() >= 4, "several closed segments: {logs:?}");
    flip_middle(&logs[1]);
    flip_middle(&segment_logs(&partition_dir(leader))[2]);

    let out = fjord(&bootstrap, &["topic", "scrub", "t"], b"");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "scrub: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let found: Vec<&str> = stdout.lines().filter(|l| l.contains(") damaged: ")).collect();
    assert_eq!(found.len(), 2, "both flipped bytes are found:\n{stdout}");
    for (line, broker) in found.iter().zip([leader.min(follower), leader.max(follower)]) {
        assert!(line.contains(&format!("on broker {broker}:")), "{line}");
        assert!(line.contains("CRC") && line.ends_with("repaired from another replica"), "{line}");
    }

    // The three replicas are equal byte for byte (batch by batch: a
    // replica that started from a snapshot lacks the first no-op batch,
    // so its segments start one offset later), and read back whole.
    let reference = batches(&partition_dir(leader));
    for id in (1..=3).filter(|&b| b != leader) {
        let theirs = batches(&partition_dir(id));
        let first = *theirs.keys().next().unwrap();
        assert!(first <= 1, "broker {id} starts at {first}");
        let ours: Vec<_> = reference.range(first..).collect();
        assert!(ours == theirs.iter().collect::<Vec<_>>(), "broker {id}'s batches differ from the leader's");
    }
    assert_eq!(fjord_ok(&bootstrap, &["tail", "t", "--from-beginning"], b""), written);
    let again = fjord_ok(&bootstrap, &["topic", "scrub", "t", "--format", "json"], b"");
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    let replicas = again.as_array().unwrap();
    assert_eq!(replicas.len(), 3, "{again}");
    assert!(
        replicas
            .iter()
            .all(|r| r["damaged"].as_array().unwrap().is_empty() && r["segments"].as_u64() >= Some(3)),
        "{again}"
    );
    for id in 1..=3 {
        cluster.kill(id);
    }
}

#[test]
fn damage_on_a_single_replica_is_found_in_the_background_and_refused_with_its_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = Broker::start(
        &data,
        &["--maintenance-interval", "1s", "--scrub-interval", "1s", "--scrub-bytes-per-sec", "0"],
    );
    let addr = broker.addr.clone();
    fjord_ok(&addr, &["topic", "create", "s", "-p", "1", "-r", "1", "--segment-bytes", "65536"], b"");
    let written = lines("s", RECORDS);
    publish(&addr, "s", &written);
    std::thread::sleep(Duration::from_secs(2)); // sealed
    let logs = segment_logs(&data.join("topics/s/0"));
    assert!(logs.len() >= 4, "{logs:?}");
    flip_middle(&logs[1]);
    let mut log = String::new();
    for _ in 0..100 {
        log = broker.log();
        if log.contains("scrub found a damaged range") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(log.contains("scrub found a damaged range"), "the background scrub found it:\n{log}");

    // A read from the beginning gets the records before the damage, then an
    // error naming the damaged offsets; never the corrupt batch.
    let out = fjord(&addr, &["tail", "s", "--from-beginning"], b"");
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(written.starts_with(&stdout), "what is read is a prefix of what was written");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains("are damaged on this broker's replica"), "{stderr}");
    let range = last.split_once("offsets [").unwrap().1;
    let (start, rest) = range.split_once(", ").unwrap();
    let end = rest.split_once(')').unwrap().0;
    let (start, end): (u64, u64) = (start.parse().unwrap(), end.parse().unwrap());
    // Offset 0 is the new leader's no-op control batch: records start at 1.
    assert_eq!(stdout.lines().count() as u64 + 1, start, "every record before the damage is read");
    // `topic describe` shows it, in JSON and as a line under the table.
    let p = describe(&addr, "s");
    let damaged = p["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{p}");
    assert_eq!(
        (damaged[0]["start_offset"].as_u64(), damaged[0]["end_offset"].as_u64()),
        (Some(start), Some(end))
    );
    let text = fjord_ok(&addr, &["topic", "describe", "s"], b"");
    assert!(
        text.contains(&format!("partition 0: offsets [{start}, {end}) ("))
            && text.contains("fjord topic scrub s"),
        "{text}"
    );
    // From the range's end on, the rest reads.
    let after = fjord_ok(&addr, &["tail", "s", "--offset", &end.to_string()], b"");
    let expected: String = written.lines().skip(end as usize - 1).map(|l| format!("{l}\n")).collect();
    assert_eq!(after, expected);
    // A scrub now says it cannot repair it, and why.
    let out = fjord(&addr, &["topic", "scrub", "s"], b"");
    assert!(!out.status.success());
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(&format!("offsets [{start}, {end})")) && report.contains("no other replica"),
        "{report}"
    );
    // The broker keeps serving.
    fjord_ok(&addr, &["publish", "s"], b"one more\n");
    assert!(broker.is_running());
    broker.kill();
}

#[test]
fn a_batch_that_rots_on_the_leader_is_never_sent_to_a_follower_catching_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3);
    let bootstrap = cluster.bootstrap();
    fjord_ok(&bootstrap, &["topic", "create", "t", "-p", "1", "-r", "3", "--segment-bytes", "65536"], b"");
    let leader = leader_with_three_in_sync(&bootstrap, "t");
    assert_ne!(leader, 0);
    // One follower is away while everything is written; the other holds a
    // good copy of every batch.
    let away = (1..=3).find(|&b| b != leader).unwrap();
    cluster.kill(away);
    let written = lines("t", RECORDS);
    publish(&bootstrap, "t", &written);
    std::thread::sleep(Duration::from_secs(2)); // sealed
    let root = dir.path().to_owned();
    let partition_dir = move |id: u64| root.join(format!("broker-{id}/topics/t/0"));
    let leader_logs = segment_logs(&partition_dir(leader));
    assert!(leader_logs.len() >= 4, "{leader_logs:?}");
    flip_middle(&leader_logs[1]);

    // The follower comes back and catches up from the leader, which checks
    // every batch it sends: the rotten one is found (before any scrub) and
    // held back, so the follower stops short of it and stores nothing bad.
    cluster.restart(away);
    let leader_log = dir.path().join(format!("broker-{leader}.broker.log"));
    let mut found = false;
    for _ in 0..200 {
        if std::fs::read_to_string(&leader_log).unwrap().contains("failed its CRC on its way to a peer") {
            found = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        found,
        "the leader found the damage when sending it:\n{}",
        std::fs::read_to_string(&leader_log).unwrap()
    );
    let follower_log = std::fs::read_to_string(dir.path().join(format!("broker-{away}.broker.log"))).unwrap();
    assert!(
        !follower_log.contains("refused a corrupt append"),
        "nothing corrupt reached the follower:\n{follower_log}"
    );
    let theirs = batches(&partition_dir(away));
    let reference = batches(&partition_dir(leader));
    for (base, b) in &theirs {
        let h = fjord_codec::BatchHeader::parse(b).unwrap();
        fjord_codec::verify_crc(b, &h)
            .unwrap_or_else(|e| panic!("broker {away} stored a bad batch at {base}: {e}"));
    }
    let damaged_base = *reference
        .iter()
        .find(|(_, b)| fjord_codec::verify_crc(b, &fjord_codec::BatchHeader::parse(b).unwrap()).is_err())
        .expect("the leader's copy is damaged")
        .0;
    assert!(theirs.keys().all(|&b| b < damaged_base), "broker {away} stopped short of offset {damaged_base}");

    // A scrub repairs the leader from the other follower, and the one that
    // was away then catches up to a byte-for-byte copy.
    let out = fjord_ok(&bootstrap, &["topic", "scrub", "t"], b"");
    assert!(out.contains("repaired from another replica"), "{out}");
    let mut equal = false;
    for _ in 0..200 {
        let reference = batches(&partition_dir(leader));
        let theirs = batches(&partition_dir(away));
        let first = theirs.keys().next().copied().unwrap_or(0);
        if reference.range(first..).collect::<Vec<_>>() == theirs.iter().collect::<Vec<_>>() {
            equal = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(equal, "broker {away} caught up to the leader's bytes after the repair");
    assert_eq!(fjord_ok(&bootstrap, &["tail", "t", "--from-beginning"], b""), written);
    for id in 1..=3 {
        cluster.kill(id);
    }
}
