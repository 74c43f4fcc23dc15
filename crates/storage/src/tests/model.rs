//! Model-based property test: random appends, reads, timestamp lookups,
//! truncations, segment deletions and reopenings run against the log and
//! against a plain vector of records; every observation must agree.

use fjord_codec::{records, split_batches, BatchBuilder};
use proptest::prelude::*;

use crate::*;

#[derive(Debug, Clone)]
enum Op {
    Append { records: Vec<i16> },
    Read { at: u16, max_bytes: u16 },
    Timestamp { ts: i16 },
    Truncate { at: u16 },
    DeleteBefore { at: u16 },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec(0i16..50, 1..5).prop_map(|records| Op::Append { records }),
        3 => (any::<u16>(), any::<u16>()).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        2 => (-5i16..60).prop_map(|ts| Op::Timestamp { ts }),
        1 => any::<u16>().prop_map(|at| Op::Truncate { at }),
        1 => any::<u16>().prop_map(|at| Op::DeleteBefore { at }),
        1 => Just(Op::Reopen),
    ]
}

/// One record of the model: its offset, value and timestamp; batches are
/// remembered by their base offsets and Raft indexes.
#[derive(Debug, Clone, PartialEq)]
struct Rec {
    offset: u64,
    value: String,
    ts: i64,
}

#[derive(Debug, Default)]
struct Model {
    records: Vec<Rec>,
    /// `(base_offset, raft_index)` of every batch still in the log.
    batches: Vec<(u64, u64)>,
    start: u64,
    end: u64,
    next_raft: u64,
    term: u64,
}

fn config() -> LogConfig {
    LogConfig { segment_bytes: 1024, index_interval_bytes: 64, retention_ms: None, ..LogConfig::default() }
}

fn pick(at: u16, n: usize) -> usize {
    at as usize % n
}

fn run(ops: Vec<Op>) -> std::result::Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    let mut m = Model { next_raft: 1, term: 1, ..Model::default() };
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Append { records } => {
                let mut b = BatchBuilder::new(1 << 20);
                let mut recs = Vec::new();
                for (i, ts) in records.iter().enumerate() {
                    let value = format!("s{step}r{i}");
                    b.push(None, Some(value.as_bytes()), &[], *ts as i64).unwrap();
                    recs.push(Rec { offset: m.end + i as u64, value, ts: *ts as i64 });
                }
                let a = log.append(&b.finish(), RaftPos { term: m.term, index: m.next_raft }).unwrap();
                prop_assert_eq!(a.base_offset, m.end);
                m.batches.push((m.end, m.next_raft));
                m.end += recs.len() as u64;
                m.next_raft += 1;
                m.records.extend(recs);
            }
            Op::Read { at, max_bytes } => {
                let span = (m.end - m.start + 1) as usize;
                let from = m.start + pick(at, span) as u64;
                let r = log.read(from, max_bytes as usize, m.end).unwrap();
                let mut got = Vec::new();
                for part in split_batches(r.batches) {
                    let (h, bytes) = part.unwrap();
                    fjord_codec::verify_crc(&bytes, &h).unwrap();
                    for rec in records(&bytes).unwrap() {
                        let rec = rec.unwrap();
                        if rec.offset >= from {
                            let value = String::from_utf8(rec.value.unwrap().to_vec()).unwrap();
                            got.push(Rec { offset: rec.offset, value, ts: rec.timestamp });
                        }
                    }
                }
                let want: Vec<Rec> = m
                    .records
                    .iter()
                    .filter(|x| x.offset >= from && x.offset < r.next_offset)
                    .cloned()
                    .collect();
                prop_assert_eq!(&got, &want, "read at {}", from);
                if from < m.end {
                    prop_assert!(r.next_offset > from, "a read below the end makes progress");
                }
                prop_assert!(m.batches.iter().any(|b| b.0 == r.next_offset) || r.next_offset == m.end);
            }
            Op::Timestamp { ts } => {
                let want = m.records.iter().find(|r| r.ts >= ts as i64).map(|r| r.offset);
                prop_assert_eq!(log.offset_for_timestamp(ts as i64, m.end).unwrap(), want, "ts {}", ts);
            }
            Op::Truncate { at } => {
                if m.batches.is_empty() {
                    continue;
                }
                let (base, raft) = m.batches[pick(at, m.batches.len())];
                log.truncate_suffix(base).unwrap();
                m.batches.retain(|b| b.0 < base);
                m.records.retain(|r| r.offset < base);
                m.end = base;
                m.next_raft = raft;
                m.term += 1; // a new leader overwrites the tail
            }
            Op::DeleteBefore { at } => {
                let span = (m.end - m.start + 1) as usize;
                let upto = m.start + pick(at, span) as u64;
                log.delete_segments_before(upto).unwrap();
                let start = log.log_start_offset();
                prop_assert!(start >= m.start && start <= upto.max(m.start));
                prop_assert!(
                    start == m.end || m.batches.iter().any(|b| b.0 == start),
                    "start {} is a batch boundary",
                    start
                );
                m.start = start;
                m.batches.retain(|b| b.0 >= start);
                m.records.retain(|r| r.offset >= start);
            }
            Op::Reopen => {
                drop(log);
                log = Log::open(dir.path(), config()).unwrap();
            }
        }
        prop_assert_eq!(log.log_end_offset(), m.end, "end after step {}", step);
        prop_assert_eq!(log.log_start_offset(), m.start, "start after step {}", step);
        if let Some(&(_, raft)) = m.batches.last() {
            prop_assert_eq!(log.last_raft().map(|r| r.index), Some(raft));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn log_matches_a_vector_of_records(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops)?;
    }
}
