//! What an operator sees: at the default level one log line per event
//! that matters, raft-rs's narration kept below it and without source
//! paths; `--log-format json` for log shippers.

mod common;

use common::{fjord_ok, Broker};

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
