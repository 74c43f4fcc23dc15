//! The metrics endpoint against the real thing: a broker with
//! `--metrics-listen 127.0.0.1:0`, traffic through the CLI, the scrape's
//! values checked against what was published and consumed, the scrape
//! linted by `promtool check metrics`, and a real Prometheus scraping the
//! broker and answering PromQL for group lag and an RPC latency quantile.
//!
//! Prometheus is Debian's `prometheus` package, installed here when
//! `promtool` is missing; the test is skipped (with the reason printed)
//! only when apt itself is unavailable.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{fjord, fjord_ok, free_ports, Broker};

/// Records published before the group reads.
const RECORDS: usize = 200;
/// Records published after it read everything: its lag.
const LAGGING: usize = 7;
/// How long Prometheus may take to start and show the broker's metrics
/// (it scrapes every second).
const PROMETHEUS_WAIT: Duration = Duration::from_secs(30);

/// `GET path` on `addr` over HTTP/1.0 (no chunked encoding to undo):
/// (status code, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header and a body");
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("a status line");
    (status, body.to_owned())
}

/// Percent-encodes a PromQL query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Samples of one family in a scrape: labels (as written) → value.
fn samples(scrape: &str, name: &str) -> BTreeMap<String, f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (n == name).then(|| (labels.to_owned(), value.parse().unwrap()))
        })
        .collect()
}

/// The one sample of `name` whose labels contain every `want` pair.
fn value(scrape: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = samples(scrape, name)
        .into_iter()
        .filter(|(labels, _)| want.iter().all(|(k, v)| labels.contains(&format!("{k}=\"{v}\""))))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(found.len(), 1, "{name}{want:?}: {found:?} in\n{scrape}");
    found[0]
}

/// The sum of `name` over the partitions of topic `t`.
fn topic_sum(scrape: &str, name: &str) -> f64 {
    samples(scrape, name).into_iter().filter(|(l, _)| l.contains("topic=\"t\"")).map(|(_, v)| v).sum()
}

/// Where the broker serves metrics, from its log line
/// `fjord broker <id> metrics on http://<addr>/metrics`.
fn metrics_addr(broker: &Broker) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = broker.log();
        if let Some(at) = log.find("metrics on http://") {
            let rest = &log[at + "metrics on http://".len()..];
            return rest[..rest.find("/metrics").expect("address ends in /metrics")].to_owned();
        }
        assert!(Instant::now() < deadline, "no metrics line in the broker's log:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Publishes `n` keyed records (keys spread them over both partitions).
fn publish(addr: &str, from: usize, n: usize) {
    let lines: String = (from..from + n).map(|i| format!("key-{}:record-{i}\n", i % 13)).collect();
    let out = fjord_ok(addr, &["publish", "t", "--key-separator", ":"], lines.as_bytes());
    assert!(out.contains(&format!("{n} records acknowledged")) || out.is_empty(), "{out}");
}

/// Whether `promtool` and `prometheus` are here, installing Debian's
/// package if not; `Err` says why they cannot be had.
fn ensure_prometheus() -> Result<(), String> {
    let have = |bin: &str| Command::new(bin).arg("--version").output().is_ok_and(|o| o.status.success());
    if have("promtool") && have("prometheus") {
        return Ok(());
    }
    if Command::new("apt-get").arg("--version").output().is_err() {
        return Err("promtool is missing and apt-get is unavailable".into());
    }
    println!("promtool/prometheus missing: apt-get update && apt-get install -y prometheus");
    let update = Command::new("apt-get").arg("update").output().map_err(|e| e.to_string())?;
    println!("apt-get update: {}", update.status);
    let install = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "prometheus"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&install.stdout);
    for line in text.lines().filter(|l| l.starts_with("Setting up") || l.contains("newly installed")) {
        println!("apt: {line}");
    }
    assert!(
        install.status.success(),
        "apt-get install prometheus failed: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    assert!(have("promtool") && have("prometheus"), "installed, yet promtool or prometheus is missing");
    Ok(())
}

/// A Prometheus process, killed by its pid on every exit path.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a PromQL query until it returns a sample with a finite value,
/// publishing a record between tries so that rates have something to see.
fn query_until_value(prom: &str, q: &str, broker: &str, deadline: Instant) -> f64 {
    let mut last = String::new();
    let mut i = 0;
    while Instant::now() < deadline {
        let (status, body) = http_get(prom, &format!("/api/v1/query?query={}", encode(q)));
        if status == 200 {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["status"], "success", "{body}");
            let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
            let value =
                result.first().and_then(|r| r["value"][1].as_str()).and_then(|s| s.parse::<f64>().ok());
            if let Some(x) = value.filter(|x| x.is_finite()) {
                println!("{q} = {x} ({} series)", result.len());
                return x;
            }
        }
        last = body;
        publish(broker, 1_000_000 + i, 1);
        i += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("no value for {q} in {PROMETHEUS_WAIT:?}; last answer: {last}");
}

#[test]
fn a_scrape_tells_what_was_published_and_consumed_and_prometheus_reads_it() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("b1"), &["--metrics-listen", "127.0.0.1:0"]);
    let metrics = metrics_addr(&broker);
    let a = broker.addr.as_str();
    fjord_ok(a, &["topic", "create", "t", "--partitions", "2"], b"");
    publish(a, 0, RECORDS);
    let missing = fjord(a, &["topic", "describe", "no-such-topic"], b"");
    assert!(!missing.status.success());
    let read =
        fjord_ok(a, &["tail", "t", "--group", "G", "--from-beginning", "--limit", &RECORDS.to_string()], b"");
    assert_eq!(read.lines().count(), RECORDS, "the group read everything");

    let (status, scrape) = http_get(&metrics, "/metrics");
    assert_eq!(status, 200);
    println!("scrape: {} bytes, {} lines", scrape.len(), scrape.lines().count());
    assert_eq!(topic_sum(&scrape, "fjord_records_produced_total"), RECORDS as f64);
    assert!(topic_sum(&scrape, "fjord_records_fetched_total") >= RECORDS as f64);
    assert!(topic_sum(&scrape, "fjord_bytes_produced_total") > 0.0);
    assert_eq!(value(&scrape, "fjord_partitions_led", &[]), 2.0 + 8.0, "t and the offsets topic");
    assert_eq!(value(&scrape, "fjord_partitions_unavailable", &[]), 0.0);
    assert_eq!(value(&scrape, "fjord_brokers_alive", &[]), 1.0);
    assert!(value(&scrape, "fjord_disk_free_bytes", &[]) > 0.0);
    assert!(value(&scrape, "fjord_fsync_duration_seconds_count", &[]) > 0.0, "fsyncs are timed");
    for p in ["0", "1"] {
        let at = [("topic", "t"), ("partition", p)];
        let hw = value(&scrape, "fjord_partition_high_watermark", &at);
        let group = [("group", "G"), ("topic", "t"), ("partition", p)];
        assert_eq!(value(&scrape, "fjord_group_committed_offset", &group), hw, "partition {p}");
        assert_eq!(value(&scrape, "fjord_group_lag", &group), 0.0, "partition {p}");
        assert_eq!(value(&scrape, "fjord_group_lag_seconds", &group), 0.0, "partition {p}");
    }
    assert!(topic_sum(&scrape, "fjord_partition_high_watermark") >= RECORDS as f64);
    let not_found = [("method", "fjord.v1.Admin/DescribeTopic"), ("code", "NOT_FOUND")];
    assert_eq!(value(&scrape, "fjord_rpc_requests_total", &not_found), 1.0, "errors are counted by code");
    assert!(
        value(&scrape, "fjord_rpc_requests_total", &[("method", "fjord.v1.Groups/CommitOffsets")]) >= 1.0
    );

    // Records the group has not read: lag in records, and in seconds
    // once they have waited.
    publish(a, RECORDS, LAGGING);
    std::thread::sleep(Duration::from_millis(1_100));
    let (_, scrape) = http_get(&metrics, "/metrics");
    let lag: f64 = samples(&scrape, "fjord_group_lag").values().sum();
    assert_eq!(lag, LAGGING as f64);
    let oldest = samples(&scrape, "fjord_group_lag_seconds").values().copied().fold(0.0, f64::max);
    assert!((1.0..60.0).contains(&oldest), "the oldest unread record waited about a second: {oldest}");

    // `fjord group describe` tells the same age, in ms in JSON and as
    // seconds in its table.
    let d: serde_json::Value =
        serde_json::from_str(&fjord_ok(a, &["group", "describe", "G", "--format", "json"], b"")).unwrap();
    let parts = d["partitions"].as_array().unwrap();
    let lag: u64 = parts.iter().map(|p| p["lag"].as_u64().unwrap()).sum();
    assert_eq!(lag, LAGGING as u64, "{d}");
    let oldest_ms = parts.iter().map(|p| p["lag_ms"].as_i64().expect("lag_ms on a single broker")).max();
    assert!((1_000..60_000).contains(&oldest_ms.unwrap()), "{d}");
    let table = fjord_ok(a, &["group", "describe", "G"], b"");
    assert!(table.contains("LAG_S"), "{table}");

    if let Err(why) = ensure_prometheus() {
        println!("SKIPPED the promtool and Prometheus part: {why}");
        return;
    }
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin.take().unwrap().write_all(scrape.as_bytes()).unwrap();
    let lint = lint.wait_with_output().unwrap();
    assert!(
        lint.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    let port = free_ports(1)[0];
    let prom_dir = tempfile::tempdir().unwrap();
    let config = prom_dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: fjord\n    \
             static_configs:\n      - targets: ['{metrics}']\n"
        ),
    )
    .unwrap();
    let prom_log = std::fs::File::create(prom_dir.path().join("prometheus.log")).unwrap();
    let _prometheus = Prometheus(
        Command::new("prometheus")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--storage.tsdb.path={}", prom_dir.path().join("data").display()))
            .arg(format!("--config.file={}", config.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(prom_log)
            .spawn()
            .expect("start prometheus"),
    );
    let prom = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + PROMETHEUS_WAIT;
    while TcpStream::connect(&prom).is_err() {
        assert!(Instant::now() < deadline, "prometheus did not listen on {prom}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let lag = query_until_value(&prom, "sum(fjord_group_lag{group=\"G\"})", a, deadline);
    assert!(lag >= LAGGING as f64, "Prometheus sees the group's lag: {lag}");
    let p99 = query_until_value(
        &prom,
        "histogram_quantile(0.99, sum by (le) (rate(fjord_rpc_duration_seconds_bucket{method=~\"fjord.v1.Producer/.*\"}[1m])))",
        a,
        deadline,
    );
    assert!(p99 > 0.0 && p99 < 30.0, "a produce-side latency quantile: {p99} s");
    assert!(started.elapsed() < Duration::from_secs(90), "bounded in time: {:?}", started.elapsed());
}
