//! Scrubbing closed segments: damage is found, refused to readers with its
//! offsets while the rest reads, and repaired from another replica's copy.

use std::os::unix::fs::FileExt;

use super::*;

/// Two replicas of the same log: the same batches at the same Raft positions.
fn two_replicas(dir: &std::path::Path, n: u64) -> (Log, Log) {
    let a = Log::open(dir.join("a"), small_config()).unwrap();
    let b = Log::open(dir.join("b"), small_config()).unwrap();
    for i in 0..n {
        a.append_durable(&batch(i, 3, 1000 + i as i64), pos(1, i + 1)).unwrap();
        b.append_durable(&batch(i, 3, 1000 + i as i64), pos(1, i + 1)).unwrap();
    }
    a.flush().unwrap();
    b.flush().unwrap();
    (a, b)
}

/// The log file of the `k`-th segment in `dir`.
fn segment_file(dir: &std::path::Path, k: usize) -> std::path::PathBuf {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs[k].clone()
}

fn flip(path: &std::path::Path, at: u64) {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x10], at).unwrap();
}

#[test]
fn a_flipped_byte_is_found_refused_with_its_offsets_and_repaired_from_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_replicas(dir.path(), 60);
    let before = read_all(&a, 0);
    let clean = a.scrub(&mut |_| {}).unwrap();
    assert!(clean.damage.is_empty() && clean.index_damage.is_empty(), "{clean:?}");
    assert!(clean.segments >= 3, "{clean:?}");
    // One byte inside a record of the second segment, as bit rot would.
    let file = segment_file(a.dir(), 1);
    flip(&file, 200);
    let mut paced = 0;
    let report = a.scrub(&mut |n| paced += n).unwrap();
    assert_eq!(report.damage.len(), 1, "{report:?}");
    assert_eq!(paced, clean.bytes, "every byte read is paced");
    let d = report.damage[0].clone();
    assert!(d.reason.contains("CRC"), "{d:?}");
    assert!(d.start_offset < d.end_offset && d.len > 0);
    // Refused where damaged, naming the offsets; the rest still reads.
    let err = a.read(d.start_offset, 1 << 20, u64::MAX).unwrap_err();
    assert!(
        matches!(err, Error::Damaged { start_offset, end_offset, .. }
        if start_offset == d.start_offset && end_offset == d.end_offset),
        "{err}"
    );
    if d.position > 0 {
        let r = a.read(d.segment, 1 << 30, u64::MAX).unwrap();
        assert_eq!(r.next_offset, d.start_offset, "a read of the segment stops right before the damage");
    }
    assert!(a.read(d.end_offset, 1 << 20, u64::MAX).is_ok(), "after it reads");
    // Repair from the other replica.
    let copy = b.read_verified(d.start_offset, d.end_offset).unwrap();
    assert!(matches!(a.read_verified(d.start_offset, d.end_offset), Err(Error::Damaged { .. })));
    let mut wrong = copy.to_vec();
    wrong[100] ^= 1;
    assert!(matches!(a.repair(&d, &wrong), Err(Error::RepairRefused(_))), "a bad copy is refused");
    assert!(matches!(a.repair(&d, &copy[..copy.len() - 1]), Err(Error::RepairRefused(_))));
    a.repair(&d, &copy).unwrap();
    assert!(a.damaged().is_empty());
    assert_eq!(read_all(&a, 0), before);
    assert!(a.scrub(&mut |_| {}).unwrap().damage.is_empty());
    assert_eq!(std::fs::read(&file).unwrap(), std::fs::read(segment_file(b.dir(), 1)).unwrap());
    // Also after a reopen.
    drop(a);
    let a = Log::open(dir.path().join("a"), small_config()).unwrap();
    assert!(a.scrub(&mut |_| {}).unwrap().damage.is_empty());
    assert_eq!(read_all(&a, 0), before);
}

#[test]
fn a_damaged_header_is_bounded_by_the_next_good_batch_and_a_damaged_index_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_replicas(dir.path(), 60);
    let file = segment_file(a.dir(), 1);
    // The first batch's length field: its end can no longer be known from it.
    flip(&file, fjord_codec::format::BATCH_LEN_AT as u64 + 2);
    let report = a.scrub(&mut |_| {}).unwrap();
    assert_eq!(report.damage.len(), 1, "{report:?}");
    let d = report.damage[0].clone();
    assert_eq!(d.position, 0);
    let copy = b.read_verified(d.start_offset, d.end_offset).unwrap();
    assert_eq!(copy.len() as u64, d.len, "the range ends where good batches resume");
    a.repair(&d, &copy).unwrap();
    assert_eq!(read_all(&a, 0), read_all(&b, 0));
    // An offset-index entry pointing elsewhere is reported.
    let mut idx = file.clone();
    idx.set_extension(fjord_codec::format::OFFSET_INDEX_SUFFIX);
    flip(
        &idx,
        fjord_codec::format::OFFSET_INDEX_ENTRY_LEN as u64
            + fjord_codec::format::OFFSET_ENTRY_POSITION_AT as u64,
    );
    let report = a.scrub(&mut |_| {}).unwrap();
    assert!(report.damage.is_empty(), "{report:?}");
    assert_eq!(report.index_damage.len(), 1, "{report:?}");
}

#[test]
fn entries_read_for_a_peer_stop_before_a_batch_that_fails_its_crc_and_remember_it() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_replicas(dir.path(), 60);
    let file = segment_file(a.dir(), 1);
    flip(&file, 200);
    // Unverified reads (for applying) still return it; the verified read
    // for a peer ends before it, and fails if it is the first asked for.
    let all = a.raft_entries(1, 61, usize::MAX).unwrap();
    assert_eq!(all.len(), 60);
    let bad = all.iter().position(|(h, b)| fjord_codec::verify_crc(b, h).is_err()).expect("one batch rotted");
    assert!(a.damaged().is_empty(), "nothing is known before a verified read");
    let sent = a.raft_entries_verified(1, 61, usize::MAX).unwrap();
    assert_eq!(sent.len(), bad, "the verified read stops right before the damaged batch");
    let first_bad = all[bad].0.raft_index;
    let err = a.raft_entries_verified(first_bad, 61, usize::MAX).unwrap_err();
    assert!(
        matches!(err, Error::Damaged { start_offset, .. } if start_offset == all[bad].0.base_offset),
        "{err}"
    );
    // The damage is remembered once: reads refuse it, and a repair fixes it.
    let damaged = a.damaged();
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    assert!(matches!(a.read(damaged[0].start_offset, 1 << 20, u64::MAX), Err(Error::Damaged { .. })));
    let copy = b.read_verified(damaged[0].start_offset, damaged[0].end_offset).unwrap();
    a.repair(&damaged[0], &copy).unwrap();
    assert_eq!(a.raft_entries_verified(1, 61, usize::MAX).unwrap().len(), 60);
    assert!(a.damaged().is_empty());
}
