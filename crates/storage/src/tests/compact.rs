//! Compaction against a model: random keyed writes and tombstones across
//! many small segments, compaction passes with a small key map (so passes
//! clean a prefix and continue), and crashes injected at every step of
//! the swap, each followed by a reopen. After every complete pass the log
//! holds exactly the last record of each key below the point the pass
//! reached (minus expired tombstones); at every moment it holds only
//! records that were written, at their offsets, every key's last record,
//! and only valid batches; a crash leaves each segment old or new, never
//! a mix.

use std::collections::{BTreeMap, HashMap};

use fjord_codec::{records, split_batches, validate_batch, BatchBuilder};
use proptest::prelude::*;

use crate::log::compact::CrashAt;
use crate::*;

#[derive(Debug, Clone)]
enum Op {
    /// Records of one batch: key number and whether it is a tombstone.
    Write(Vec<(u8, bool)>),
    /// A pass, stopped at the step given as a crash would stop it.
    Compact(Option<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => proptest::collection::vec((0u8..12, proptest::bool::weighted(0.15)), 1..6).prop_map(Op::Write),
        2 => proptest::option::weighted(0.5, 0u8..4).prop_map(Op::Compact),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct Rec {
    offset: u64,
    key: u8,
    value: Option<String>,
    ts: i64,
}

const TS_BASE: i64 = 10_000;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 64,
        retention_ms: None,
        flush: FlushPolicy::Never,
        ..LogConfig::default()
    }
}

/// Every record the log holds, every batch validated on the way.
fn contents(log: &Log) -> Vec<Rec> {
    let mut out = Vec::new();
    let end = log.log_end_offset();
    let mut at = log.log_start_offset();
    while at < end {
        let r = log.read(at, 1 << 20, end).unwrap();
        assert!(r.next_offset > at);
        for part in split_batches(r.batches) {
            let (h, b) = part.unwrap();
            validate_batch(&b, 1 << 20).unwrap_or_else(|e| panic!("batch at {}: {e}", h.base_offset));
            for rec in records(&b).unwrap() {
                let rec = rec.unwrap();
                let key: u8 = std::str::from_utf8(rec.key.as_deref().unwrap()).unwrap()[1..].parse().unwrap();
                out.push(Rec {
                    offset: rec.offset,
                    key,
                    value: rec.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
                    ts: rec.timestamp,
                });
            }
        }
        at = r.next_offset;
    }
    out
}

/// The segment log files by base offset, as bytes.
fn segment_files(dir: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| (p.file_name().unwrap().to_str().unwrap().to_owned(), std::fs::read(&p).unwrap()))
        .collect()
}

fn run(ops: Vec<Op>, retention: u64, map_keys: usize) -> std::result::Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    let mut log = Log::open(&path, config()).unwrap();
    let cfg = CompactionConfig {
        key_map_bytes: map_keys * KEY_MAP_ENTRY_BYTES,
        delete_retention_ms: retention,
        min_compaction_lag_ms: 0,
        key_prefix: None,
    };
    let total: i64 = ops.iter().map(|o| if let Op::Write(r) = o { r.len() as i64 } else { 0 }).sum();
    let now = TS_BASE + total + 50;
    let cut = now - retention as i64;
    let mut written: Vec<Rec> = Vec::new();
    let mut raft = 0u64;
    // The highest point any pass reached: at and above it nothing was touched.
    let mut reached = 0u64;
    for op in ops {
        match op {
            Op::Write(recs) => {
                let mut b = BatchBuilder::new(1 << 20);
                let base = log.log_end_offset();
                for (i, (key, tomb)) in recs.iter().enumerate() {
                    let offset = base + i as u64;
                    let value = (!tomb).then(|| format!("v{offset}"));
                    let ts = TS_BASE + written.len() as i64;
                    b.push(Some(format!("k{key}").as_bytes()), value.as_deref().map(str::as_bytes), &[], ts)
                        .unwrap();
                    written.push(Rec { offset, key: *key, value, ts });
                }
                raft += 1;
                log.append(&b.finish(), RaftPos { term: 1, index: raft }).unwrap();
            }
            Op::Compact(crash) => {
                log.flush().unwrap();
                log.seal_closed().unwrap();
                let crash = crash.map(|c| {
                    [CrashAt::Written, CrashAt::Committed, CrashAt::IndexesMoved, CrashAt::LogMoved]
                        [c as usize]
                });
                let before = segment_files(&path);
                log.crash_compaction_at(crash);
                let result = log.compact(&cfg, log.log_end_offset(), now);
                match (crash, result) {
                    (_, Ok(report)) => {
                        // Below the point this pass reached, a record that a
                        // later one of its key (there) supersedes is gone, as
                        // is an expired tombstone that is last of its key
                        // there; a record that is last of its key up to any
                        // point a pass reached is there. (One last below this
                        // pass's point but superseded below an earlier,
                        // further point may have gone in that pass.)
                        let to = report.cleaned_up_to;
                        let horizon = to.max(reached);
                        reached = horizon;
                        let last_below = |r: &Rec, limit: u64| {
                            !written.iter().any(|w| w.key == r.key && w.offset > r.offset && w.offset < limit)
                        };
                        let have = contents(&log);
                        let present: std::collections::HashSet<u64> = have.iter().map(|r| r.offset).collect();
                        for r in written.iter().filter(|r| r.offset < to) {
                            let expired = r.value.is_none() && r.ts < cut;
                            if !last_below(r, to) || expired {
                                prop_assert!(
                                    !present.contains(&r.offset),
                                    "{:?} is gone after a pass to {}",
                                    r,
                                    to
                                );
                            } else if last_below(r, horizon) {
                                prop_assert!(
                                    present.contains(&r.offset),
                                    "{:?} stays after a pass to {}",
                                    r,
                                    to
                                );
                            }
                        }
                    }
                    (Some(at), Err(_)) => {
                        // The process "dies" here and starts again. What the
                        // pass reached is unknown: anything below the end
                        // may have been touched.
                        reached = reached.max(log.log_end_offset());
                        drop(log);
                        log = Log::open(&path, config()).unwrap();
                        let after = segment_files(&path);
                        let changed =
                            before.iter().filter(|(name, bytes)| after.get(*name) != Some(bytes)).count();
                        let leftovers = std::fs::read_dir(&path)
                            .unwrap()
                            .filter(|e| e.as_ref().unwrap().path().is_dir())
                            .count();
                        prop_assert_eq!(leftovers, 0, "recovery finishes or removes every swap");
                        prop_assert_eq!(after.len(), before.len());
                        let expect_changed = usize::from(at != CrashAt::Written);
                        prop_assert_eq!(
                            changed,
                            expect_changed,
                            "a crash at {:?} leaves the old or the new segment",
                            at
                        );
                    }
                    (None, Err(e)) => return Err(TestCaseError::fail(format!("pass failed: {e}"))),
                }
                log.crash_compaction_at(None);
            }
        }
        // Always: only written records, at their offsets, in order; every
        // key's last record unless it is an expired tombstone a pass reached;
        // nothing at or above `reached` is missing.
        let have = contents(&log);
        let by_offset: HashMap<u64, &Rec> = written.iter().map(|r| (r.offset, r)).collect();
        for w in have.windows(2) {
            prop_assert!(w[0].offset < w[1].offset);
        }
        for r in &have {
            prop_assert_eq!(Some(&r), by_offset.get(&r.offset), "a record that was written");
        }
        let present: std::collections::HashSet<u64> = have.iter().map(|r| r.offset).collect();
        let mut last: HashMap<u8, &Rec> = HashMap::new();
        for r in &written {
            last.insert(r.key, r);
        }
        for r in last.values() {
            let may_go = r.value.is_none() && r.ts < cut && r.offset < reached;
            prop_assert!(
                may_go || present.contains(&r.offset),
                "the last record of k{} at {}",
                r.key,
                r.offset
            );
        }
        for r in written.iter().filter(|r| r.offset >= reached) {
            prop_assert!(present.contains(&r.offset), "untouched record {} is there", r.offset);
        }
        // Every record read from its own offset (through the indexes).
        for r in &have {
            let got = log.read(r.offset, 1, u64::MAX).unwrap();
            let (h, _) = split_batches(got.batches).next().unwrap().unwrap();
            prop_assert!(h.base_offset <= r.offset && r.offset < h.next_offset());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]
    #[test]
    fn compaction_keeps_the_last_record_per_key_and_survives_a_crash_at_every_step(
        ops in proptest::collection::vec(op(), 1..120),
        retention in 0u64..400,
        map_keys in prop_oneof![Just(6usize), Just(1000usize)],
    ) {
        run(ops, retention, map_keys)?;
    }
}

#[test]
fn a_compacted_log_is_smaller_and_reads_the_last_value_of_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    // 10 keys written 40 times each, 4 records to a batch.
    for i in 0..100u64 {
        let mut b = BatchBuilder::new(1 << 20);
        for j in 0..4 {
            let n = i * 4 + j;
            b.push(
                Some(format!("k{}", n % 10).as_bytes()),
                Some(format!("v{n}").as_bytes()),
                &[],
                TS_BASE + n as i64,
            )
            .unwrap();
        }
        log.append(&b.finish(), RaftPos { term: 1, index: i + 1 }).unwrap();
    }
    log.flush().unwrap();
    log.seal_closed().unwrap();
    let before = log.size_bytes();
    let d = log.dirtiness();
    assert!(d.ratio() > 0.9, "{d:?}");
    let report = log.compact(&CompactionConfig::default(), log.log_end_offset(), TS_BASE + 1000).unwrap();
    assert!(report.segments_cleaned > 3 && report.records_removed > 300, "{report:?}");
    // An emptied batch stays as its 72-byte header (the Raft log keeps
    // every index), so 4-record batches shrink to about a third.
    assert!(log.size_bytes() < before / 2, "{} of {before} bytes", log.size_bytes());
    assert_eq!(log.dirtiness().dirty_bytes, 0);
    // Offsets are kept; the batches of removed records stay, emptied.
    let have = contents(&log);
    assert!(have.len() < 60, "{}", have.len());
    assert_eq!(log.log_start_offset(), 0);
    // The active segment is never touched: its records are all there.
    assert!(have.iter().any(|r| r.offset == 399), "{have:?}");
    // Raft entries keep every index, compacted or not.
    let entries = log.raft_entries_verified(1, 101, usize::MAX).unwrap();
    assert_eq!(entries.len(), 100);
    // And it all reopens.
    drop(log);
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(contents(&log), have);
    let again = log.compact(&CompactionConfig::default(), log.log_end_offset(), TS_BASE + 1000).unwrap();
    assert_eq!(again.segments_cleaned, 0, "a second pass finds nothing to remove: {again:?}");
}

#[test]
fn a_key_prefix_compacts_only_the_records_whose_key_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    // 60 batches, each one record keyed "p:a" and one keyed "old".
    for i in 0..60u64 {
        let mut b = BatchBuilder::new(1 << 20);
        for key in ["p:a", "old"] {
            b.push(Some(key.as_bytes()), Some(format!("v{i}").as_bytes()), &[], TS_BASE + i as i64).unwrap();
        }
        log.append(&b.finish(), RaftPos { term: 1, index: i + 1 }).unwrap();
    }
    log.flush().unwrap();
    log.seal_closed().unwrap();
    let cfg = CompactionConfig { key_prefix: Some(b"p:".to_vec()), ..CompactionConfig::default() };
    let report = log.compact(&cfg, log.log_end_offset(), TS_BASE + 1000).unwrap();
    assert!(report.records_removed > 40, "{report:?}");
    let mut count: HashMap<String, Vec<u64>> = HashMap::new();
    let mut at = 0;
    while at < log.log_end_offset() {
        let r = log.read(at, 1 << 24, log.log_end_offset()).unwrap();
        for part in split_batches(r.batches) {
            let (_, b) = part.unwrap();
            for rec in records(&b).unwrap() {
                let rec = rec.unwrap();
                let key = String::from_utf8(rec.key.unwrap().to_vec()).unwrap();
                count.entry(key).or_default().push(rec.offset);
            }
        }
        at = r.next_offset;
    }
    // Every "old" record is there, at its offset; of "p:a" only the last
    // of the closed segments and those of the active one.
    assert_eq!(count["old"], (0..60).map(|i| i * 2 + 1).collect::<Vec<u64>>());
    assert!(count["p:a"].len() < 20, "{:?}", count["p:a"]);
    assert_eq!(count["p:a"].last(), Some(&118));
}
