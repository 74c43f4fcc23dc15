//! `fjord bench` against a real broker, as someone measuring Fjord runs it:
//! produce, consume and e2e report what they sent and read, and
//! `--warmup` leaves the start of a paced run out of the latency figures.

mod common;

use common::{fjord, fjord_ok, Broker};
use serde_json::Value;

/// The JSON summary a bench command prints last.
fn summary(out: &str) -> Value {
    serde_json::from_str(out.lines().last().expect("some output")).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn produce_consume_and_e2e_report_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    let addr = &broker.addr;

    let args = ["bench", "produce", "--topic", "p", "--records", "3000", "--record-size", "100", "--json"];
    let produced = summary(&fjord_ok(addr, &args, b""));
    assert_eq!((produced["kind"].as_str(), produced["records"].as_u64()), (Some("produce"), Some(3000)));
    assert_eq!(produced["bytes"], 300_000);
    assert_eq!(produced["latency"]["count"], 3000, "every ack is timed: {produced}");
    assert_eq!(produced["warmup_s"], 0.0);

    // The record-level path: whole records on PublishStream, batches built
    // by the broker, into the same topic.
    let args = [
        "bench",
        "produce",
        "--api",
        "records",
        "--topic",
        "p",
        "--records",
        "2000",
        "--record-size",
        "100",
        "--batch-bytes",
        "10000",
        "--json",
    ];
    let published = summary(&fjord_ok(addr, &args, b""));
    assert_eq!(published["records"], 2000, "{published}");
    assert_eq!(published["latency"]["count"], 2000, "every record is timed: {published}");
    assert_eq!(published["latency"]["of"], "request send to answer");
    let bad = fjord(addr, &["bench", "e2e", "--api", "records", "--topic", "p", "--records", "1"], b"");
    assert!(
        !bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("--api records"),
        "{bad:?}"
    );

    let consumed = summary(&fjord_ok(addr, &["bench", "consume", "--topic", "p", "--json"], b""));
    assert_eq!((consumed["kind"].as_str(), consumed["records"].as_u64()), (Some("consume"), Some(5000)));

    // Paced over one second with the first half as warm-up: every record
    // arrives, about half are timed.
    let args = [
        "bench",
        "e2e",
        "--topic",
        "e",
        "--records",
        "3000",
        "--record-size",
        "64",
        "--rate",
        "3000",
        "--warmup",
        "500ms",
        "--json",
    ];
    let e2e = summary(&fjord_ok(addr, &args, b""));
    assert_eq!((e2e["kind"].as_str(), e2e["records"].as_u64()), (Some("e2e"), Some(3000)), "{e2e}");
    assert_eq!(e2e["warmup_s"], 0.5);
    let timed = e2e["latency"]["count"].as_u64().unwrap();
    assert!((1200..=1800).contains(&timed), "records timed after a 0.5 s warm-up of a 1 s run: {timed}");
    assert_eq!(e2e["latency"]["of"], "due to receipt");

    // The text form says what was left out.
    let args = ["bench", "e2e", "--topic", "e", "--records", "200", "--rate", "1000", "--warmup", "100ms"];
    let text = fjord_ok(addr, &args, b"");
    assert!(text.contains("after a 100ms warm-up"), "{text}");

    let bad = fjord(addr, &["bench", "e2e", "--topic", "e", "--records", "10", "--warmup", "soon"], b"");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--warmup"), "{bad:?}");
}

/// `bench commit` commits offsets of one group as an admin would, and
/// `bench produce --keys` fills a compacted topic (which refuses keyless
/// records, so without --keys it fails saying why).
#[test]
fn commit_makes_every_commit_and_keyed_produce_fills_a_compacted_topic() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    let addr = &broker.addr;
    fjord_ok(addr, &["topic", "create", "t", "-p", "2"], b"");
    fjord_ok(addr, &["publish", "t", "--partition", "0"], b"a\nb\nc\n");
    fjord_ok(addr, &["publish", "t", "--partition", "1"], b"d\n");
    let args = [
        "bench",
        "commit",
        "--group",
        "g",
        "--topic",
        "t",
        "--commits",
        "203",
        "--partitions-per-commit",
        "2",
        "--concurrency",
        "4",
        "--json",
    ];
    let out = summary(&fjord_ok(addr, &args, b""));
    assert_eq!((out["kind"].as_str(), out["commits"].as_u64()), (Some("commit"), Some(203)), "{out}");
    assert_eq!(out["latency"]["count"], 203, "{out}");
    let d: Value =
        serde_json::from_str(&fjord_ok(addr, &["group", "describe", "g", "--format", "json"], b"")).unwrap();
    let committed: Vec<u64> =
        d["partitions"].as_array().unwrap().iter().map(|p| p["committed"].as_u64().unwrap()).collect();
    assert_eq!(committed.len(), 2, "both partitions are committed: {d}");
    let too_many =
        ["bench", "commit", "--group", "g", "--topic", "t", "--commits", "1", "--partitions-per-commit", "3"];
    let bad = fjord(addr, &too_many, b"");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("--partitions-per-commit 3"), "{err}");

    fjord_ok(addr, &["topic", "create", "c", "-p", "1", "--cleanup-policy", "compact"], b"");
    let keyless = fjord(addr, &["bench", "produce", "--topic", "c", "--records", "10"], b"");
    assert!(!keyless.status.success(), "keyless records into a compacted topic");
    assert!(String::from_utf8_lossy(&keyless.stderr).contains("has no key"), "{keyless:?}");
    let args = ["bench", "produce", "--topic", "c", "--records", "500", "--keys", "7", "--json"];
    assert_eq!(summary(&fjord_ok(addr, &args, b""))["records"], 500);
    let keys: std::collections::BTreeSet<String> =
        fjord_ok(addr, &["tail", "c", "--from-beginning", "--format", "json"], b"")
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["key"].as_str().unwrap().to_owned())
            .collect();
    assert_eq!(keys, (0..7).map(|k| k.to_string()).collect());
}
