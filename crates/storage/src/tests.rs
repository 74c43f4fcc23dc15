//! Tests of the partition log against what a caller sees: offsets, the
//! bytes read back, errors; crash tests that damage files on disk and
//! reopen; and a model-based property test.

mod compact;
mod crash;
mod full_disk;
mod model;
mod scrub;

use bytes::Bytes;
use fjord_codec::{records, split_batches, BatchBuilder};

use crate::*;

/// Small segments and a dense index so a few KiB exercise rolls and index lookups.
pub(crate) fn small_config() -> LogConfig {
    LogConfig { segment_bytes: 4096, index_interval_bytes: 128, retention_ms: None, ..LogConfig::default() }
}

/// A batch of `n` records whose values name their batch and position.
pub(crate) fn batch(tag: u64, n: usize, ts: i64) -> Bytes {
    let mut b = BatchBuilder::new(1 << 20);
    for i in 0..n {
        let v = format!("batch-{tag}-record-{i}-{}", "x".repeat((tag % 7) as usize * 10));
        b.push(Some(format!("k{i}").as_bytes()), Some(v.as_bytes()), &[], ts + i as i64).unwrap();
    }
    b.finish()
}

/// All record values read from `from` to the end, following `next_offset`.
pub(crate) fn read_all(log: &Log, from: u64) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut at = from;
    let end = log.log_end_offset();
    while at < end {
        let r = log.read(at, 1000, end).unwrap();
        assert!(r.next_offset > at, "read at {at} made no progress");
        for part in split_batches(r.batches) {
            let (h, b) = part.unwrap();
            fjord_codec::verify_crc(&b, &h).unwrap();
            for rec in records(&b).unwrap() {
                let rec = rec.unwrap();
                if rec.offset >= at {
                    out.push((rec.offset, String::from_utf8(rec.value.unwrap().to_vec()).unwrap()));
                }
            }
        }
        at = r.next_offset;
    }
    out
}

fn pos(term: u64, index: u64) -> RaftPos {
    RaftPos { term, index }
}

#[test]
fn append_assigns_offsets_and_reads_them_back_across_rolls_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    {
        let log = Log::open(dir.path(), small_config()).unwrap();
        for i in 0..60u64 {
            let n = 1 + (i % 4) as usize;
            let at = log.append_durable(&batch(i, n, 1000 + i as i64 * 10), pos(1, i + 1)).unwrap();
            assert_eq!(at.base_offset, expected.len() as u64);
            for r in 0..n {
                expected.push((
                    expected.len() as u64,
                    format!("batch-{i}-record-{r}-{}", "x".repeat((i % 7) as usize * 10)),
                ));
            }
        }
        assert!(log.segment_count() > 3, "small segments must roll");
        assert_eq!(read_all(&log, 0), expected);
    }
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.log_end_offset(), expected.len() as u64);
    assert_eq!(log.last_raft(), Some(pos(1, 60)));
    assert_eq!(read_all(&log, 0), expected);
    // Reads starting mid-batch return the batch holding the offset.
    assert_eq!(read_all(&log, 7), expected[7..].to_vec());
    let at = log.append_durable(&batch(99, 1, 5000), pos(2, 61)).unwrap();
    assert_eq!(at.base_offset, expected.len() as u64);
}

#[test]
fn reads_respect_the_limit_and_max_bytes_and_reject_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    for i in 0..10 {
        log.append(&batch(i, 2, 0), pos(1, i + 1)).unwrap();
    }
    // The high watermark hides uncommitted batches.
    let r = log.read(0, usize::MAX, 6).unwrap();
    assert_eq!(r.next_offset, 6);
    assert_eq!(split_batches(r.batches).count(), 3);
    assert!(log.read(6, usize::MAX, 6).unwrap().batches.is_empty());
    // max_bytes bounds the response but one batch always comes back.
    let r = log.read(0, 1, 20).unwrap();
    assert_eq!((split_batches(r.batches).count(), r.next_offset), (1, 2));
    match log.read(21, 100, 20) {
        Err(Error::OffsetOutOfRange { offset: 21, log_start: 0, log_end: 20 }) => {}
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    assert!(log.read(20, 100, 20).unwrap().batches.is_empty());
}

#[test]
fn raft_order_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert!(matches!(log.append(&batch(0, 1, 0), pos(1, 0)), Err(Error::RaftOrder { .. })));
    log.append(&batch(0, 1, 0), pos(2, 5)).unwrap();
    assert!(matches!(log.append(&batch(0, 1, 0), pos(2, 7)), Err(Error::RaftOrder { .. })));
    assert!(matches!(log.append(&batch(0, 1, 0), pos(1, 6)), Err(Error::RaftOrder { .. })));
    log.append(&batch(0, 1, 0), pos(3, 6)).unwrap();
    assert_eq!(log.first_raft_index(), Some(5));
    let (h, _) = log.raft_entry(6).unwrap().unwrap();
    assert_eq!((h.base_offset, h.raft_term, h.raft_index), (1, 3, 6));
    assert!(log.raft_entry(7).unwrap().is_none());
    assert!(log.raft_entry(4).unwrap().is_none());
}

#[test]
fn raft_entries_map_indexes_to_batches_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for i in 1..=80u64 {
        log.append(&batch(i, 1 + (i % 3) as usize, 0), pos(1 + i / 20, i)).unwrap();
    }
    let all = log.raft_entries(1, 81, usize::MAX).unwrap();
    assert_eq!(all.len(), 80);
    let mut next = 0;
    for (i, (h, b)) in all.iter().enumerate() {
        assert_eq!(h.raft_index, i as u64 + 1);
        assert_eq!(h.base_offset, next);
        assert_eq!(b.len(), h.batch_len as usize);
        next = h.next_offset();
    }
    let some = log.raft_entries(33, 50, 600).unwrap();
    assert!(!some.is_empty() && some.len() < 17, "max_bytes stops early: {}", some.len());
    assert_eq!(some[0].0.raft_index, 33);
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    // Record timestamps: batch i holds 3 records at 1000*i + {0,1,2}.
    for i in 0..50u64 {
        log.append(&batch(i, 3, 1000 * i as i64), pos(1, i + 1)).unwrap();
    }
    let end = log.log_end_offset();
    assert_eq!(log.offset_for_timestamp(i64::MIN, end).unwrap(), Some(0));
    assert_eq!(log.offset_for_timestamp(0, end).unwrap(), Some(0));
    assert_eq!(log.offset_for_timestamp(1, end).unwrap(), Some(1));
    assert_eq!(log.offset_for_timestamp(3, end).unwrap(), Some(3));
    assert_eq!(log.offset_for_timestamp(17_001, end).unwrap(), Some(52));
    assert_eq!(log.offset_for_timestamp(49_002, end).unwrap(), Some(149));
    assert_eq!(log.offset_for_timestamp(49_003, end).unwrap(), None);
    assert_eq!(log.offset_for_timestamp(17_001, 30).unwrap(), None, "beyond the limit");
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.offset_for_timestamp(17_001, end).unwrap(), Some(52), "closed segments after reopen");
}

#[test]
fn truncate_suffix_discards_the_tail_durably_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    let mut boundaries = vec![0];
    for i in 1..=40u64 {
        let a = log.append(&batch(i, 2, 0), pos(1, i)).unwrap();
        boundaries.push(a.next_offset);
    }
    let before = read_all(&log, 0);
    assert!(matches!(log.truncate_suffix(3), Err(Error::BadTruncation { .. })), "mid-batch");
    // Cut back into an earlier, closed segment.
    log.truncate_suffix(boundaries[10]).unwrap();
    assert_eq!(log.log_end_offset(), boundaries[10]);
    assert_eq!(log.last_raft(), Some(pos(1, 10)));
    assert_eq!(read_all(&log, 0), before[..boundaries[10] as usize].to_vec());
    assert!(matches!(log.append(&batch(0, 1, 0), pos(2, 12)), Err(Error::RaftOrder { .. })));
    log.append(&batch(77, 1, 0), pos(2, 11)).unwrap();
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    let after = read_all(&log, 0);
    assert_eq!(after.len(), boundaries[10] as usize + 1);
    assert_eq!(after.last().unwrap().1, "batch-77-record-0-");
    assert_eq!(log.last_raft(), Some(pos(2, 11)));
    // Truncating everything leaves an empty log that expects the same Raft index.
    log.truncate_suffix(0).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset(), log.last_raft()), (0, 0, None));
    assert!(matches!(log.append(&batch(0, 1, 0), pos(3, 2)), Err(Error::RaftOrder { .. })));
    log.append(&batch(0, 1, 0), pos(3, 1)).unwrap();
}

#[test]
fn retention_deletes_old_closed_segments_and_moves_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { retention_ms: Some(10_000), ..small_config() };
    let log = Log::open(dir.path(), config).unwrap();
    for i in 0..60u64 {
        log.append(&batch(i, 2, i as i64 * 1000), pos(1, i + 1)).unwrap();
    }
    let end = log.log_end_offset();
    let segments = log.segment_count();
    // At t = 40s, records older than 30s go; nothing at or above the limit does.
    let deleted = log.maintain(40_000, end).unwrap();
    assert!(!deleted.is_empty());
    let start = log.log_start_offset();
    assert_eq!(start, deleted.last().unwrap().next_offset);
    assert!(log.segment_count() < segments);
    assert!(
        matches!(log.read(0, 100, end), Err(Error::OffsetOutOfRange { log_start, .. }) if log_start == start)
    );
    let first = read_all(&log, start);
    assert_eq!(first.first().unwrap().0, start);
    // Everything expired, partition idle: the active segment is rolled and
    // deleted too, but only below the limit.
    let deleted = log.maintain(1_000_000, end - 2).unwrap();
    assert!(log.log_start_offset() < end, "data above the limit stays: {deleted:?}");
    log.maintain(1_000_000, end).unwrap();
    log.maintain(1_000_000, end).unwrap();
    assert_eq!(log.log_start_offset(), end);
    assert_eq!(log.log_end_offset(), end);
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (end, end));
    // Nothing is left to say which Raft entry came last: the replication
    // layer records that as the snapshot index in `RaftState`.
    assert_eq!(log.last_raft(), None);
}

#[test]
fn size_retention_keeps_the_newest_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { retention_bytes: Some(8192), ..small_config() };
    let log = Log::open(dir.path(), config).unwrap();
    for i in 0..100u64 {
        log.append(&batch(i, 2, 0), pos(1, i + 1)).unwrap();
    }
    let end = log.log_end_offset();
    log.maintain(0, end).unwrap();
    let size = log.size_bytes();
    assert!((8192..8192 + 4096 + 1024).contains(&size), "size after retention: {size}");
    assert_eq!(read_all(&log, log.log_start_offset()).last().unwrap().0, end - 1);
}

#[test]
fn a_failed_fsync_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.append_durable(&batch(0, 1, 0), pos(1, 1)).unwrap();
    log.fail_next_sync();
    let err = log.append_durable(&batch(1, 1, 0), pos(1, 2)).unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    assert!(matches!(log.append(&batch(2, 1, 0), pos(1, 3)), Err(Error::Poisoned { .. })));
    assert!(matches!(log.flush(), Err(Error::Poisoned { .. })), "never retried as if it had worked");
    assert!(log.poisoned().unwrap().contains("fdatasync"));
    // Reads of what was durable still work.
    assert_eq!(read_all(&log, 0).len(), 2);
}

#[test]
fn a_batch_whose_crc_fails_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.append(&batch(0, 2, 0), pos(1, 1)).unwrap();
    let mut bad = batch(1, 2, 0).to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let err = log.append(&bad, pos(1, 2)).unwrap_err();
    assert!(matches!(err, Error::InvalidBatch(fjord_codec::Error::CrcMismatch { .. })), "{err}");
    assert!(log.poisoned().is_none(), "a refusal is not a storage failure");
    assert_eq!(log.log_end_offset(), 2, "nothing of it was written");
    log.append(&batch(2, 1, 0), pos(1, 2)).unwrap();
    assert_eq!(read_all(&log, 0).len(), 3, "the log goes on after the refusal");
}

#[test]
fn altered_settings_apply_to_an_open_log_and_never_overfill_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    let mut n = 1;
    for i in 0..20 {
        log.append(&batch(i, 3, 0), pos(1, n)).unwrap();
        n += 1;
    }
    // A larger segment size: the active segment still rolls at the size it
    // was made for (its file and indexes are sized by it); new ones use it.
    let mut bigger = small_config();
    bigger.segment_bytes = 1 << 20;
    bigger.retention_bytes = Some(8192);
    log.set_config(&bigger).unwrap();
    for i in 20..400 {
        log.append(&batch(i, 3, 0), pos(1, n)).unwrap();
        n += 1;
    }
    assert_eq!(read_all(&log, 0).len(), 400 * 3);
    let deleted = log.maintain(0, log.log_end_offset()).unwrap();
    // The segment open when the change came still rolled at its own 4 KiB
    // (plus the batch that crossed it); the ~50 KB after it went into one
    // segment of the new size, so 8 KiB of retention deletes everything before it.
    assert!(deleted.len() >= 2 && log.log_start_offset() > 0, "the new retention applies: {deleted:?}");
    assert!(deleted.iter().all(|d| d.size <= 4096 + 256), "no segment outgrew its size: {deleted:?}");
    assert!(read_all(&log, log.log_start_offset()).len() > 300 * 3, "the new segment holds the rest");
    let mut bad = small_config();
    bad.segment_bytes = 10;
    assert!(matches!(log.set_config(&bad), Err(Error::Config(_))));
    assert_eq!(log.config().segment_bytes, 1 << 20, "a refused change changes nothing");
}

#[test]
fn the_fsync_observer_sees_every_group_commit_and_seal() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    let observer = FsyncObserver::new(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let log = Log::open(dir.path(), LogConfig { fsync_observer: observer, ..small_config() }).unwrap();
    for i in 0..3 {
        log.append_durable(&batch(i, 1, 0), pos(1, i + 1)).unwrap();
    }
    assert_eq!(seen.load(Ordering::Relaxed), 3, "one fsync per durable append, one at a time");
    for i in 3..40 {
        log.append(&batch(i, 4, 0), pos(1, i + 1)).unwrap(); // rolls 4 KiB segments
    }
    assert!(log.segment_count() > 2);
    log.flush().unwrap();
    assert!(seen.load(Ordering::Relaxed) >= 5, "the flush and the seal of closed segments are timed too");
}

#[test]
fn concurrent_appenders_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
    let next = std::sync::Arc::new(std::sync::Mutex::new(1u64));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (log, next) = (log.clone(), next.clone());
            std::thread::spawn(move || {
                for i in 0..50 {
                    let appended = {
                        let mut n = next.lock().unwrap();
                        let a = log.append(&batch(t * 100 + i, 1, 0), pos(1, *n)).unwrap();
                        *n += 1;
                        a
                    };
                    log.sync_through(appended.next_offset).unwrap();
                    assert!(log.durable_offset() >= appended.next_offset);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(log.log_end_offset(), 200);
    assert_eq!(read_all(&log, 0).len(), 200);
}

#[test]
fn control_batches_take_one_offset_and_are_readable() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let noop = BatchBuilder::control(fjord_codec::format::CONTROL_NOOP, b"", 0);
    log.append(&noop, pos(1, 1)).unwrap();
    let a = log.append(&batch(0, 2, 0), pos(1, 2)).unwrap();
    assert_eq!(a.base_offset, 1);
    let (h, _) = log.raft_entry(1).unwrap().unwrap();
    assert!(h.is_control());
}

#[test]
fn config_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        LogConfig { segment_bytes: 10, ..LogConfig::default() },
        LogConfig { segment_bytes: SEGMENT_BYTES_MAX + 1, ..LogConfig::default() },
        LogConfig { index_interval_bytes: 1, ..LogConfig::default() },
        LogConfig { flush: FlushPolicy::IntervalMs(0), ..LogConfig::default() },
    ] {
        assert!(matches!(Log::open(dir.path(), bad), Err(Error::Config(_))));
    }
}

#[test]
fn reset_starts_an_empty_log_at_a_new_offset_and_raft_index() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for i in 1..=30u64 {
        log.append(&batch(i, 2, 0), pos(1, i)).unwrap();
    }
    log.reset(500, 90).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset(), log.last_raft()), (500, 500, None));
    assert!(matches!(log.append(&batch(0, 1, 0), pos(4, 91)), Err(Error::RaftOrder { .. })));
    let a = log.append(&batch(0, 1, 0), pos(4, 90)).unwrap();
    assert_eq!(a.base_offset, 500);
    log.flush().unwrap();
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset(), log.last_raft()), (500, 501, Some(pos(4, 90))));
    assert_eq!(log.segment_count(), 1);
}

#[test]
fn tail_start_covers_at_least_the_bytes_asked_for_in_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.tail_start(1), 0, "an empty log starts at 0");
    for i in 0..60 {
        log.append(&batch(i, 3, 1_000), pos(1, i + 1)).unwrap();
    }
    assert!(log.segment_count() > 3);
    let last_base = read_all(&log, 0).len() as u64; // sanity: all records readable
    assert!(last_base > 0);
    // One byte is covered by the active segment alone; everything by the first.
    let active = log.tail_start(1);
    assert!(active > 0 && active < log.log_end_offset());
    assert_eq!(log.tail_start(u64::MAX), 0);
    let two = log.tail_start(4096 + 1);
    assert!(two < active, "more than a segment's bytes reach into the one before");
    // What the tail holds from there is at least what was asked for.
    let r = log.read(two, usize::MAX, log.log_end_offset()).unwrap();
    let mut held = r.batches.len() as u64;
    let mut at = r.next_offset;
    while at < log.log_end_offset() {
        let r = log.read(at, usize::MAX, log.log_end_offset()).unwrap();
        held += r.batches.len() as u64;
        at = r.next_offset;
    }
    assert!(held > 4096, "{held} bytes from {two}");
}

/// Descriptors this process holds on files under `dir`.
fn descriptors_under(dir: &std::path::Path) -> usize {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(&dir))
        .count()
}

#[test]
fn sealed_segments_hold_no_descriptors_and_reopen_when_truncated_into() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    let mut boundaries = vec![0];
    for i in 1..=250u64 {
        boundaries.push(log.append_durable(&batch(i, 2, 0), pos(1, i)).unwrap().next_offset);
    }
    log.flush().unwrap();
    let segments = log.segment_count();
    assert!(segments > 10, "small segments must roll: {segments}");
    // The active segment's log and two indexes, and the recovery point:
    // not three more per closed segment.
    let open = descriptors_under(dir.path());
    assert!(open <= 4, "{open} descriptors open for {segments} segments");
    let before = read_all(&log, 0);
    assert_eq!(before.len(), 500, "sealed segments read through their maps");
    // A truncation into a sealed segment reopens its files.
    log.truncate_suffix(boundaries[10]).unwrap();
    assert_eq!(read_all(&log, 0), before[..boundaries[10] as usize].to_vec());
    log.append_durable(&batch(77, 1, 0), pos(2, 11)).unwrap();
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(read_all(&log, 0).len(), boundaries[10] as usize + 1);
    assert!(descriptors_under(dir.path()) <= 4);
}
