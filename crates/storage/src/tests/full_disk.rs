//! A full filesystem refuses writes without poisoning the log, and the log
//! takes them again once space is freed (issue #14): on a real tmpfs that
//! the test mounts (as root; skipped with the reason otherwise), and with
//! an injected `ENOSPC` from fsync.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// A tmpfs mounted for one test, unmounted (lazily) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> std::result::Result<Tmpfs, String> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs(at.to_owned()))
    }
}

impl Tmpfs {
    /// The mount, or `None` after printing why the test is skipped.
    fn or_skip(at: &Path, size: &str) -> Option<Tmpfs> {
        Tmpfs::mount(at, size)
            .map_err(|why| println!("skipped: a full-disk test needs a small filesystem and {why}"))
            .ok()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// One record of about 8 KiB naming its batch.
fn big_batch(tag: u64) -> Bytes {
    let mut b = BatchBuilder::new(1 << 20);
    let v = format!("batch-{tag}-{}", "y".repeat(8000));
    b.push(None, Some(v.as_bytes()), &[], 1_700_000_000_000 + tag as i64).unwrap();
    b.finish()
}

#[test]
fn a_full_filesystem_refuses_appends_without_poisoning_and_they_resume_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let Some(volume) = Tmpfs::or_skip(&dir.path().join("volume"), "2m") else { return };
    // Another user's file, removed later to free space.
    let ballast = volume.0.join("ballast");
    std::fs::write(&ballast, vec![1u8; 512 * 1024]).unwrap();
    // Small segments: rolls (new files, new index pages) happen while it fills.
    let config = LogConfig { segment_bytes: 256 * 1024, ..LogConfig::default() };
    let data = volume.0.join("log");
    let log = Log::open(&data, config.clone()).unwrap();
    let mut index = 1;
    let refusal = loop {
        assert!(index < 1000, "2 MiB took 8 MB without a refusal");
        match log.append_durable(&big_batch(index), pos(1, index)) {
            Ok(a) => assert_eq!(a.base_offset, index - 1),
            Err(e) => break e,
        }
        index += 1;
    };
    let acked = index - 1;
    assert!(refusal.is_no_space(), "a full disk is said as such: {refusal}");
    assert!(refusal.to_string().contains("No space left on device"), "{refusal}");
    assert!(log.poisoned().is_none(), "a full disk does not poison the log");
    assert_eq!(log.log_end_offset(), acked, "the refused batch left nothing behind");
    assert!(acked > 100, "the volume held {acked} batches before it was full");
    // Again: the same refusal, still nothing changed.
    assert!(log.append_durable(&big_batch(index), pos(1, index)).unwrap_err().is_no_space());
    assert_eq!(log.log_end_offset(), acked);
    // Space returns: appends go on where they stopped.
    std::fs::remove_file(&ballast).unwrap();
    for i in index..index + 20 {
        log.append_durable(&big_batch(i), pos(1, i)).unwrap();
    }
    let total = index + 19;
    let check = |log: &Log| {
        let all = read_all(log, 0);
        assert_eq!(all.len() as u64, total);
        for (i, (offset, value)) in all.iter().enumerate() {
            assert_eq!(*offset, i as u64);
            assert!(value.starts_with(&format!("batch-{}-", i + 1)), "offset {offset}");
        }
    };
    check(&log);
    drop(log);
    let log = Log::open(&data, config).unwrap();
    check(&log);
    assert_eq!(log.last_raft(), Some(pos(1, total)));
}

#[test]
fn an_fsync_that_finds_the_disk_full_cuts_the_log_back_to_what_was_durable() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    log.append_durable(&batch(0, 2, 0), pos(1, 1)).unwrap();
    log.fail_next_sync_with(rustix::io::Errno::NOSPC.raw_os_error());
    let err = log.append_durable(&batch(1, 2, 0), pos(1, 2)).unwrap_err();
    assert!(err.is_no_space(), "{err}");
    assert!(log.poisoned().is_none(), "{:?}", log.poisoned());
    // The batch whose fsync failed may have lost its pages: it is gone.
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(log.last_raft(), Some(pos(1, 1)));
    log.append_durable(&batch(2, 2, 0), pos(1, 2)).unwrap();
    let all = read_all(&log, 0);
    assert_eq!(all.len(), 4);
    assert!(all[2].1.starts_with("batch-2-"), "{all:?}");
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(read_all(&log, 0).len(), 4);
}

/// Fills the filesystem at `dir` to the last page with a file; returns its path.
fn fill_up(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let page = [7u8; 4096];
    while f.write_all(&page).is_ok() {}
    while f.write_all(&page[..1]).is_ok() {}
    path
}

#[test]
fn an_index_entry_on_a_full_filesystem_is_refused_where_its_map_would_fault() {
    let dir = tempfile::tempdir().unwrap();
    let Some(volume) = Tmpfs::or_skip(&dir.path().join("volume"), "1m") else { return };
    // An offset-index entry for every batch: 256 fill the index's first page.
    let config = LogConfig { index_interval_bytes: INDEX_INTERVAL_BYTES_MIN, ..LogConfig::default() };
    let data = volume.0.join("log");
    let log = Log::open(&data, config.clone()).unwrap();
    let per_page = 4096 / fjord_codec::format::OFFSET_INDEX_ENTRY_LEN as u64;
    for i in 1..=per_page {
        log.append_durable(&batch(i, 1, 0), pos(1, i)).unwrap();
    }
    let filler = fill_up(&volume.0);
    // The next batch fits in the log's last (allocated) page, but its index
    // entry starts a new page of the sparse index: written through the map,
    // that store would raise SIGBUS and kill the process.
    let next = per_page + 1;
    let err = log.append_durable(&batch(next, 1, 0), pos(1, next)).unwrap_err();
    assert!(err.is_no_space(), "{err}");
    assert!(log.poisoned().is_none());
    assert_eq!(log.log_end_offset(), per_page);
    std::fs::remove_file(filler).unwrap();
    for i in next..next + 10 {
        log.append_durable(&batch(i, 1, 0), pos(1, i)).unwrap();
    }
    drop(log);
    let log = Log::open(&data, config).unwrap();
    let all = read_all(&log, 0);
    assert_eq!(all.len() as u64, per_page + 10);
    assert!(all
        .iter()
        .enumerate()
        .all(|(i, (o, v))| *o == i as u64 && v.starts_with(&format!("batch-{}-", i + 1))));
}
