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
    // What the run cost this process, and per GB of value bytes.
    let cpu = produced["client_cpu_s"].as_f64().unwrap();
    assert!(cpu > 0.0, "{produced}");
    let per_gb = produced["client_cpu_s_per_gb"].as_f64().unwrap();
    assert!((per_gb - cpu / 0.0003).abs() < 1e-6 * per_gb, "{produced}");

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

/// `bench e2e --find-max-rate` runs paced steps and reports the highest
/// that held its latency bound; with a generous bound and a low cap on a
/// quiet broker the cap itself holds, and every step is in the JSON.
#[test]
fn find_max_rate_reports_the_steps_it_ran_and_the_highest_that_held() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    let addr = &broker.addr;
    let args = [
        "bench",
        "e2e",
        "--topic",
        "m",
        "--partitions",
        "2",
        "--record-size",
        "64",
        "--find-max-rate",
        "--p99-ms",
        "2000",
        "--step-duration",
        "1s",
        "--start-rate",
        "200",
        "--max-rate",
        "400",
        "--fetch-min-bytes",
        "4096",
        "--fetch-max-wait",
        "20ms",
        "--json",
    ];
    let out = summary(&fjord_ok(addr, &args, b""));
    assert_eq!(out["kind"], "e2e-max-rate", "{out}");
    assert_eq!(out["p99_ms_bound"], 2000.0);
    let steps = out["steps"].as_array().unwrap();
    let rates: Vec<f64> = steps.iter().map(|s| s["rate"].as_f64().unwrap()).collect();
    assert_eq!(rates, [200.0, 400.0], "doubling from --start-rate up to --max-rate: {out}");
    for s in steps {
        let want = s["rate"].as_f64().unwrap() as u64;
        assert_eq!(s["summary"]["records"].as_u64(), Some(want), "a 1 s step sends rate records: {s}");
        assert_eq!(s["summary"]["latency"]["of"], "due to receipt", "{s}");
    }
    // Each step's verdict decides the answer: the highest that held.
    let held: Vec<f64> =
        steps.iter().filter(|s| s["held"] == true).map(|s| s["rate"].as_f64().unwrap()).collect();
    assert_eq!(out["max_rate"].as_f64(), held.iter().copied().reduce(f64::max), "{out}");

    // The text form names each step and the answer.
    let mut text_args: Vec<&str> = args[..args.len() - 1].to_vec();
    let cap = text_args.iter().position(|a| *a == "--max-rate").unwrap() + 1;
    text_args[cap] = "200";
    let text = fjord_ok(addr, &text_args, b"");
    assert!(text.contains("step 1: 200 records/s for 1s"), "{text}");
    assert!(text.contains("p99 <= 2000 ms"), "{text}");

    for (bad, says) in [
        (vec!["bench", "e2e", "--topic", "m", "--find-max-rate", "--rate", "100"], "leave out --rate"),
        (vec!["bench", "produce", "--topic", "m", "--find-max-rate"], "for bench e2e"),
        (
            vec!["bench", "produce", "--topic", "m", "--records", "1", "--fetch-min-bytes", "9"],
            "for bench e2e",
        ),
        (
            vec!["bench", "e2e", "--topic", "m", "--records", "1", "--fetch-min-bytes", "0"],
            "--fetch-min-bytes",
        ),
        (vec!["bench", "e2e", "--topic", "m", "--find-max-rate", "--p99-ms", "0"], "--p99-ms"),
        (
            vec!["bench", "e2e", "--topic", "m", "--find-max-rate", "--start-rate", "9", "--max-rate", "8"],
            "above",
        ),
        (vec!["bench", "e2e", "--topic", "m"], "--records"),
    ] {
        let o = fjord(addr, &bad, b"");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{bad:?}: {err}");
    }
}
