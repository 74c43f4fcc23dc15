//! Crash tests: damage the files of a log the way a crash or a bad disk
//! would, reopen it, and check that everything before the damage reads
//! back intact and nothing after it appears.

use std::path::{Path, PathBuf};

use fjord_codec::format::*;
use rand::{Rng, SeedableRng};

use super::{batch, read_all, small_config};
use crate::segment::segment_paths;
use crate::*;
use fjord_codec::format::RECOVERY_POINT_FILE;

/// A pristine log to damage: closed segments stay in `dir`; the active
/// segment's files are kept in memory and written anew for every case.
struct Pristine {
    dir: tempfile::TempDir,
    active_base: u64,
    active_log: Vec<u8>,
    active_index: Vec<u8>,
    active_time: Vec<u8>,
    /// `(start, end, base_offset, next_offset)` of each batch in the active segment.
    active_batches: Vec<(usize, usize, u64, u64)>,
    /// The position a crash is taken to have fsynced the active segment to:
    /// a third of the way in. Damage "in the tail" lies after it.
    durable: usize,
    expected: Vec<(u64, String)>,
}

/// Segments of a few batches each, so the log has closed segments and an active one.
fn config() -> LogConfig {
    LogConfig { segment_bytes: 2500, ..small_config() }
}

fn trimmed(path: &Path, entry_len: usize) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let used = bytes.chunks(entry_len).take_while(|e| e.iter().any(|&b| b != 0)).count();
    bytes[..used * entry_len].to_vec()
}

fn pristine() -> Pristine {
    let dir = tempfile::tempdir().unwrap();
    let config = config();
    let log = Log::open(dir.path(), config).unwrap();
    for i in 0..40u64 {
        log.append(&batch(i, 1 + (i % 3) as usize, 1000 * i as i64), RaftPos { term: 1, index: i + 1 })
            .unwrap();
    }
    log.flush().unwrap();
    let expected = read_all(&log, 0);
    drop(log);
    let mut bases: Vec<u64> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    bases.sort();
    assert!(bases.len() >= 3, "need closed segments too: {bases:?}");
    let active_base = *bases.last().unwrap();
    let [log_path, index_path, time_path] = segment_paths(dir.path(), active_base);
    let all = std::fs::read(&log_path).unwrap();
    let mut active_batches = Vec::new();
    let mut pos = 0;
    while pos + BATCH_HEADER_LEN <= all.len() {
        let Ok(h) = fjord_codec::BatchHeader::parse(&all[pos..]) else { break };
        active_batches.push((pos, pos + h.batch_len as usize, h.base_offset, h.next_offset()));
        pos += h.batch_len as usize;
    }
    assert!(active_batches.len() >= 5, "the active segment needs several batches");
    let durable = active_batches[active_batches.len() / 3].0;
    Pristine {
        durable,
        active_log: all[..pos].to_vec(),
        active_index: trimmed(&index_path, OFFSET_INDEX_ENTRY_LEN),
        active_time: trimmed(&time_path, TIME_INDEX_ENTRY_LEN),
        dir,
        active_base,
        active_batches,
        expected,
    }
}

impl Pristine {
    fn paths(&self) -> [PathBuf; 3] {
        segment_paths(self.dir.path(), self.active_base)
    }

    /// Writes the active segment's files as given, and the recovery point
    /// at `self.durable` (or none), and reopens the log.
    fn reopen_with(&self, log: &[u8], index: Option<&[u8]>, time: Option<&[u8]>) -> Log {
        self.reopen_with_point(log, index, time, Some(self.durable))
    }

    fn reopen_with_point(
        &self,
        log: &[u8],
        index: Option<&[u8]>,
        time: Option<&[u8]>,
        durable: Option<usize>,
    ) -> Log {
        let point = self.dir.path().join(RECOVERY_POINT_FILE);
        match durable {
            Some(d) => {
                let (rp, _) = crate::recovery_point::RecoveryPoint::open(self.dir.path()).unwrap();
                rp.store(self.active_base, d as u64).unwrap();
            }
            None => std::fs::remove_file(&point).unwrap_or(()),
        }
        let [log_path, index_path, time_path] = self.paths();
        std::fs::write(&log_path, log).unwrap();
        for (path, bytes) in [(&index_path, index), (&time_path, time)] {
            match bytes {
                Some(b) => std::fs::write(path, b).unwrap(),
                None => {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        Log::open(self.dir.path(), config()).unwrap()
    }

    /// What must survive when the active segment is intact up to byte `intact`.
    fn expected_up_to(&self, intact: usize) -> Vec<(u64, String)> {
        let end = self
            .active_batches
            .iter()
            .take_while(|(_, end, _, _)| *end <= intact)
            .last()
            .map_or(self.active_base, |b| b.3);
        self.expected.iter().filter(|(o, _)| *o < end).cloned().collect()
    }

    fn check(&self, log: &Log, intact: usize, case: &str) {
        let want = self.expected_up_to(intact);
        let end = want.last().map_or(0, |w| w.0 + 1);
        assert_eq!(log.log_end_offset(), end.max(self.active_base), "{case}: log end");
        assert_eq!(read_all(log, 0), want, "{case}: records read back");
        let n = self.active_batches.iter().take_while(|b| b.1 <= intact).count() as u64;
        // Raft indexes run 1..=40 over all batches; the active segment's last surviving one is known.
        let before_active = 40 - self.active_batches.len() as u64;
        assert_eq!(log.last_raft().map(|r| r.index), Some(before_active + n), "{case}: last raft index");
    }
}

#[test]
fn a_cut_at_any_byte_of_the_active_segment_keeps_exactly_the_whole_batches_before_it() {
    let p = pristine();
    let len = p.active_log.len();
    for cut in 0..=len {
        // A file shortened by the crash after the last fsync; below that
        // point a crash cannot cut, unless the recovery point's own write
        // was lost, which makes recovery validate the whole segment.
        let point = (cut >= p.durable).then_some(p.durable);
        let log =
            p.reopen_with_point(&p.active_log[..cut], Some(&p.active_index), Some(&p.active_time), point);
        p.check(&log, cut, &format!("cut at {cut}"));
        // ...and the same log appended to afterwards, then reopened: the new
        // batch must follow the survivors and nothing of the old tail may return.
        let next_index = log.last_raft().unwrap().index + 1;
        let a = log.append(&batch(500, 2, 0), RaftPos { term: 2, index: next_index }).unwrap();
        log.flush().unwrap();
        drop(log);
        let log = Log::open(p.dir.path(), config()).unwrap();
        assert_eq!(log.log_end_offset(), a.next_offset, "cut at {cut}, appended after");
        assert_eq!(read_all(&log, a.base_offset).len(), 2);
        drop(log);
    }
}

#[test]
fn a_zeroed_tail_of_a_preallocated_segment_is_a_clean_end() {
    let p = pristine();
    for b in p.active_batches.iter().filter(|b| b.0 >= p.durable) {
        for cut in [b.0, b.0 + 1, b.0 + BATCH_HEADER_LEN, b.1 - 1] {
            let mut data = p.active_log.clone();
            data[cut..].fill(0);
            data.resize(data.len() + 4096, 0);
            let log = p.reopen_with(&data, Some(&p.active_index), Some(&p.active_time));
            // Zeroing bytes that were already zero damages nothing.
            let first_changed =
                (cut..p.active_log.len()).find(|&i| p.active_log[i] != 0).unwrap_or(p.active_log.len());
            p.check(&log, first_changed, &format!("zeroed from {cut}"));
        }
    }
}

#[test]
fn a_flipped_byte_in_the_tail_discards_its_batch_and_everything_after() {
    let p = pristine();
    let seed: u64 = rand::rng().random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..300 {
        let at = rng.random_range(p.durable..p.active_log.len());
        let mut data = p.active_log.clone();
        data[at] ^= rng.random_range(1..=255u8);
        let log = p.reopen_with(&data, Some(&p.active_index), Some(&p.active_time));
        let batch_start = p.active_batches.iter().find(|b| b.0 <= at && at < b.1).unwrap().0;
        p.check(&log, batch_start, &format!("seed {seed}: flipped byte {at}"));
    }
}

#[test]
fn missing_short_or_garbage_indexes_are_rebuilt() {
    let p = pristine();
    let full = p.active_log.len();
    let half_index =
        &p.active_index[..p.active_index.len() / 2 / OFFSET_INDEX_ENTRY_LEN * OFFSET_INDEX_ENTRY_LEN];
    let mut garbage_index = p.active_index.clone();
    garbage_index.extend_from_slice(&[0xAB; 3 * OFFSET_INDEX_ENTRY_LEN]);
    let mut lying_index = p.active_index.clone();
    let last = lying_index.len() - OFFSET_INDEX_ENTRY_LEN;
    lying_index[last + OFFSET_ENTRY_POSITION_AT] ^= 0x10; // points into the middle of a batch
    let mut partial_time = p.active_time.clone();
    partial_time.truncate(partial_time.len() - 5);
    type Case<'a> = (&'a str, Option<&'a [u8]>, Option<&'a [u8]>);
    let cases: [Case; 5] = [
        ("no indexes", None, None),
        ("half offset index", Some(half_index), Some(&p.active_time)),
        ("garbage after the index", Some(&garbage_index), Some(&p.active_time)),
        ("index entry pointing mid-batch", Some(&lying_index), Some(&p.active_time)),
        ("partial time entry", Some(&p.active_index), Some(&partial_time)),
    ];
    for (case, index, time) in cases {
        let log = p.reopen_with(&p.active_log, index, time);
        p.check(&log, full, case);
        // Lookups through the rebuilt indexes agree with the data.
        let end = log.log_end_offset();
        // Batch 39 holds 1 + 39 % 3 = 1 record, the first at t = 39 000.
        assert_eq!(log.offset_for_timestamp(39_000, end).unwrap(), Some(end - 1), "{case}");
        let (h, _) = log.raft_entry(40).unwrap().unwrap();
        assert_eq!(h.next_offset(), end, "{case}");
        drop(log);
        // And the rebuilt index is trusted on the next open.
        let log = Log::open(p.dir.path(), config()).unwrap();
        p.check(&log, full, &format!("{case}, second open"));
    }
}

#[test]
fn a_damaged_closed_segment_index_is_rebuilt_from_its_data() {
    let p = pristine();
    let [index_path, time_path] = {
        let [_, i, t] = segment_paths(p.dir.path(), 0);
        [i, t]
    };
    let original = std::fs::read(&index_path).unwrap();
    // A partial trailing entry, then a missing time index.
    std::fs::write(&index_path, &original[..original.len() - 3]).unwrap();
    std::fs::remove_file(&time_path).unwrap();
    let log = Log::open(p.dir.path(), config()).unwrap();
    assert_eq!(read_all(&log, 0), p.expected);
    assert_eq!(log.offset_for_timestamp(1000, log.log_end_offset()).unwrap(), Some(1));
    assert_eq!(std::fs::read(&index_path).unwrap(), original, "rebuilt byte for byte");
}
