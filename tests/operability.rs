//! What an operator sees and sets: at the default level one log line per
//! event that matters, raft-rs's narration kept below it and without
//! source paths; `--log-format json` for log shippers; a config file
//! under the environment and the flags.

mod common;

use std::process::Command;

use std::time::{Duration, Instant};

use common::{fjord, fjord_bin, fjord_ok, Broker, Cluster};

#[test]
fn a_config_file_sits_under_the_environment_and_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fjord.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:0\"\nbatch_bytes_max = 65536\nmax_connections = 100\nflush = \"never\"\n",
    )
    .unwrap();
    let print = |envs: &[(&str, &str)], flags: &[&str]| {
        let out = Command::new(fjord_bin())
            .args(["broker", "--config"])
            .arg(&file)
            .args(flags)
            .arg("--print-config")
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let line = |out: &str, key: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key}: {out}"))
            .to_owned()
    };
    let out = print(&[("FJORD_MAX_CONNECTIONS", "50"), ("FJORD_FLUSH", "always")], &["--flush", "200ms"]);
    let shown = file.display().to_string();
    assert!(
        line(&out, "batch_bytes_max").contains("\"65536\"") && line(&out, "batch_bytes_max").contains(&shown)
    );
    assert!(
        line(&out, "max_connections").contains("\"50\"")
            && line(&out, "max_connections").contains("env FJORD_MAX_CONNECTIONS")
    );
    assert!(
        line(&out, "flush").contains("\"200ms\"") && line(&out, "flush").contains("flag --flush"),
        "{out}"
    );
    assert!(line(&out, "data_dir").contains("default"), "{out}");

    // A broker started from the file uses it.
    let mut broker = Broker::start_args(&dir.path().join("data"), &["--config", file.to_str().unwrap()]);
    fjord_ok(&broker.addr, &["topic", "create", "small", "--partitions", "1"], b"");
    let big = format!("{}\n", "x".repeat(100_000));
    let refused = fjord(&broker.addr, &["publish", "small"], big.as_bytes());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("65536"), "the file's batch_bytes_max applies: {err}");
    assert!(broker.terminate());

    // Unknown keys and bad values: one line naming the file and the key, exit 1.
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nretention = 5\n").unwrap();
    let out = Command::new(fjord_bin()).args(["broker", "--config"]).arg(&file).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("fjord.toml") && err.contains("\"retention\"") && err.lines().count() == 1, "{err}");
    std::fs::write(&file, "batch_bytes_max = \"lots\"\n").unwrap();
    let out = Command::new(fjord_bin()).args(["broker", "--config"]).arg(&file).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("lots"), "{out:?}");
}

#[test]
fn default_logs_are_one_line_per_event_and_json_logs_parse() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(&dir.path().join("text"), &[]);
    fjord_ok(&broker.addr, &["topic", "create", "quiet", "--partitions", "8"], b"");
    fjord_ok(&broker.addr, &["publish", "quiet"], b"a\nb\nc\n");
    assert!(broker.terminate(), "the broker stops cleanly");
    let log = broker.log();
    for noise in ["slog", "raft.rs", ".cargo/registry", "became follower", "newRaft"] {
        assert!(!log.contains(noise), "{noise:?} in the default log:\n{log}");
    }
    for event in ["starting broker", "broker ready", "created topic", "raft role changed", "broker stopped"] {
        assert!(log.contains(event), "no {event:?} line:\n{log}");
    }
    // Start, ready, metadata and 8 partitions electing, the topic, shutdown.
    let lines = log.lines().count();
    assert!(lines <= 20, "{lines} lines for one topic of 8 partitions:\n{log}");

    let mut broker = Broker::start(&dir.path().join("json"), &["--log-format", "json"]);
    fjord_ok(&broker.addr, &["topic", "create", "shipped", "--partitions", "1"], b"");
    assert!(broker.terminate());
    let log = broker.log();
    let mut events = 0;
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string() && v["message"].is_string(), "{v}");
        events += 1;
    }
    assert!(log.contains(r#""message":"created topic""#) && events >= 4, "{log}");
}

#[test]
fn topic_settings_change_on_every_replica_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3);
    let all = cluster.bootstrap();
    fjord_ok(
        &all,
        &["topic", "create", "alt", "--partitions", "1", "-r", "3", "--segment-bytes", "65536"],
        b"",
    );
    let lines: String = (0..2000).map(|i| format!("{i:05}-{}\n", "x".repeat(200))).collect();
    fjord_ok(&all, &["publish", "alt"], lines.as_bytes());

    let altered = fjord_ok(
        &all,
        &["topic", "alter", "alt", "--retention-bytes", "100000", "--compression", "zstd"],
        b"",
    );
    assert!(altered.contains("retention.bytes=100000") && altered.contains("compression=zstd"), "{altered}");
    // Every broker applied it: each describes the new settings, and each
    // replica's retention (every second here) drops old segments.
    let deadline = Instant::now() + Duration::from_secs(30);
    for addr in &cluster.addrs {
        loop {
            let d: serde_json::Value =
                serde_json::from_str(&fjord_ok(addr, &["topic", "describe", "alt", "--format", "json"], b""))
                    .unwrap();
            let start = d["partitions"][0]["log_start_offset"].as_u64().unwrap();
            if d["config"]["retention_bytes"] == 100000 && d["config"]["compression"] == "zstd" && start > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "broker {addr} did not apply the change: {d}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // The other settings kept their values.
    let d = fjord_ok(&all, &["topic", "describe", "alt"], b"");
    assert!(d.contains("segment.bytes=65536"), "{d}");

    // Bad input: one line, non-zero exit, nothing changed.
    for (args, words) in [
        (&["topic", "alter", "nope", "--retention-ms", "5"][..], "nope"),
        (&["topic", "alter", "alt"][..], "at least one"),
        (&["topic", "alter", "alt", "--segment-bytes", "10"][..], "segment_bytes"),
        (&["topic", "alter", "alt", "--compression", "gzip"][..], "gzip"),
    ] {
        let out = fjord(&all, args, b"");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(words) && err.lines().count() == 1, "{args:?}: {err}");
    }
}
