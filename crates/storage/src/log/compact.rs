//! Log compaction by key (issue #15, `storage-format.md` §2.5 and §9).
//!
//! A pass keeps, for each key, only the record with the highest offset,
//! in the closed segments it may touch; a tombstone (null value) that is
//! the last of its key is dropped too once it is older than
//! `delete_retention_ms`. Every batch stays where it was, with its base
//! offset, Raft term and index and the offsets it covers: only records
//! inside it go (`fjord_codec::compact_batch`). So offsets never change,
//! the Raft log keeps every index (a compacted entry is still a valid
//! entry to send), and the indexes of a cleaned segment are the ones the
//! original had, at new positions.
//!
//! # Which segments
//! Only closed, sealed segments wholly below the `limit` the caller gives
//! (the high watermark: nothing uncommitted is ever rewritten) and wholly
//! older than `min_compaction_lag_ms`. The key map is built from the
//! records of those segments from the first one not yet cleaned by this
//! process, and holds at most `key_map_bytes / KEY_MAP_ENTRY_BYTES` keys
//! (16-byte hashes of the keys, so memory does not depend on key size);
//! when it fills, the pass cleans up to the last record it could map and a
//! later pass goes on from there.
//!
//! # Crash protocol (§9)
//! A cleaned segment `B` is written and sealed (fsynced) in a scratch
//! directory `compact-B` of the partition directory, which is then
//! renamed `swap-B` (the commit point) and fsynced; its offset index,
//! time index and then log file are renamed over the originals, and the
//! empty `swap-B` removed. On open, a `compact-*` directory is an
//! unfinished pass and is removed; a `swap-*` directory is a committed
//! one, and its remaining files are renamed into place, in the same
//! order, before any segment is opened. A crash at any step therefore
//! leaves either the old segment or the new one, never a mix: the log
//! file, renamed last, decides, and its indexes are moved before it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use fjord_codec::format::SEGMENT_NAME_DIGITS;
use fjord_codec::{compact_batch, for_each_record_key, split_batches, RecordKey};

use super::Log;
use crate::config::LogConfig;
use crate::error::io;
use crate::raft_state::sync_dir;
use crate::segment::{segment_paths, Segment, SegmentView};
use crate::{Error, Result};

/// Default memory for one pass's key map, as Kafka's
/// `log.cleaner.dedupe.buffer.size` (128 MiB there, shared by its threads).
pub const COMPACTION_KEY_MAP_BYTES_DEFAULT: usize = 64 * 1024 * 1024;
/// Bytes one key of the map is counted as: a 16-byte key hash and an
/// 8-byte offset in a hash table at its usual load, with its overhead.
pub const KEY_MAP_ENTRY_BYTES: usize = 48;
/// Default time a tombstone that is the last of its key is kept, as
/// Kafka's `delete.retention.ms`: readers have a day to see a delete.
pub const DELETE_RETENTION_MS_DEFAULT: u64 = 24 * 60 * 60 * 1000;
/// Prefix of the scratch directory a cleaned segment is written in.
const SCRATCH_PREFIX: &str = "compact-";
/// Prefix the scratch directory is renamed to once it is complete.
const SWAP_PREFIX: &str = "swap-";

/// What one compaction pass may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionConfig {
    /// Memory for the key map; at least one key's worth.
    pub key_map_bytes: usize,
    /// How long a tombstone that is the last of its key is kept, in ms.
    pub delete_retention_ms: u64,
    /// Records younger than this (by segment max timestamp) are not touched.
    pub min_compaction_lag_ms: u64,
    /// If set, only records whose key starts with these bytes are
    /// compacted; every other record is kept as written. A log whose
    /// older records were not written to be compacted by key (the
    /// offsets topic's legacy records, keyed by group id alone) keeps
    /// those whole.
    pub key_prefix: Option<Vec<u8>>,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            key_map_bytes: COMPACTION_KEY_MAP_BYTES_DEFAULT,
            delete_retention_ms: DELETE_RETENTION_MS_DEFAULT,
            min_compaction_lag_ms: 0,
            key_prefix: None,
        }
    }
}

impl CompactionConfig {
    /// Whether a record with `key` is compacted (see `key_prefix`).
    pub fn compacts(&self, key: &[u8]) -> bool {
        self.key_prefix.as_deref().is_none_or(|p| key.starts_with(p))
    }
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Segments the pass could touch, and of them those rewritten.
    pub segments_considered: u64,
    /// Segments replaced by a cleaned copy.
    pub segments_cleaned: u64,
    /// Bytes of the segments read (the considered ones).
    pub bytes_read: u64,
    /// Bytes of the rewritten segments before and after.
    pub bytes_before: u64,
    /// See `bytes_before`.
    pub bytes_after: u64,
    /// Records dropped because a later record has their key.
    pub records_removed: u64,
    /// Tombstones dropped because they were old enough.
    pub tombstones_removed: u64,
    /// Offsets below this were considered with a complete key map: the
    /// next pass maps keys from here.
    pub cleaned_up_to: u64,
}

/// How dirty a log is: the share of its closed bytes written since the
/// last pass reached them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Dirtiness {
    /// Bytes of closed segments.
    pub closed_bytes: u64,
    /// Bytes of closed segments at or above the clean point.
    pub dirty_bytes: u64,
    /// First timestamp of the oldest dirty closed segment, if any.
    pub oldest_dirty_timestamp: Option<i64>,
    /// When the first tombstone a pass kept (not yet old enough) may go,
    /// ms since the epoch: a pass is due then even if nothing is dirty.
    pub tombstones_expire_at: Option<i64>,
}

impl Dirtiness {
    /// `dirty_bytes / closed_bytes`, 0 for a log with no closed segment.
    pub fn ratio(&self) -> f64 {
        if self.closed_bytes == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / self.closed_bytes as f64
        }
    }
}

/// A step of the swap at which a test stops the pass, as a crash would.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CrashAt {
    /// The cleaned segment is written in its scratch directory.
    Written,
    /// The scratch directory is renamed: the commit point.
    Committed,
    /// The indexes are in place, the log file not yet.
    IndexesMoved,
    /// Everything is in place; the empty swap directory remains.
    LogMoved,
}

impl Log {
    /// How dirty the log is (see [`Dirtiness`]).
    pub fn dirtiness(&self) -> Dirtiness {
        let inner = self.lock();
        let mut d = Dirtiness { tombstones_expire_at: inner.tombstones_expire_at, ..Dirtiness::default() };
        for s in inner.segments.iter().filter(|s| !s.active) {
            d.closed_bytes += s.size;
            if s.next_offset > inner.clean_point {
                d.dirty_bytes += s.size;
                if d.oldest_dirty_timestamp.is_none() {
                    d.oldest_dirty_timestamp = s.first_timestamp;
                }
            }
        }
        d
    }

    /// Runs one compaction pass (see the module doc) over closed segments
    /// below offset `limit`, at time `now_ms`. Reads and appends go on
    /// meanwhile; the lock is held only to pick segments and to swap each
    /// cleaned one in.
    ///
    /// # Errors
    /// [`Error::Config`] for a key map too small for one key; I/O errors;
    /// a batch failing its checks stops the pass before anything of its
    /// segment is replaced.
    pub fn compact(&self, config: &CompactionConfig, limit: u64, now_ms: i64) -> Result<CompactionReport> {
        let capacity = config.key_map_bytes / KEY_MAP_ENTRY_BYTES;
        if capacity == 0 {
            return Err(Error::Config(format!(
                "compaction key map of {} bytes holds no key; at least {KEY_MAP_ENTRY_BYTES}",
                config.key_map_bytes
            )));
        }
        let lag_cut = now_ms.saturating_sub(config.min_compaction_lag_ms as i64);
        let (segments, clean_point, expiring) = {
            let inner = self.lock();
            let picked: Vec<(u64, SegmentView, u64)> = inner
                .segments
                .iter()
                .take_while(|s| !s.active && s.sealed && s.next_offset <= limit && s.max_timestamp <= lag_cut)
                .map(|s| (s.base_offset, s.view(), s.next_offset))
                .collect();
            (picked, inner.clean_point, inner.tombstones_expire_at.is_some_and(|t| t <= now_ms))
        };
        let mut report = CompactionReport {
            segments_considered: segments.len() as u64,
            cleaned_up_to: clean_point,
            ..Default::default()
        };
        let Some(&(_, _, end)) = segments.last() else { return Ok(report) };
        if end <= clean_point && !expiring {
            return Ok(report); // nothing written since the last pass, no tombstone due
        }
        // The key map: each key's last offset in the dirty part.
        let mut map: HashMap<u128, u64> = HashMap::new();
        let mut mapped_to = clean_point;
        'map: for (base, view, next) in &segments {
            if *next <= clean_point {
                continue;
            }
            report.bytes_read += view.size as u64;
            for item in split_batches(view.map.slice(..view.size)) {
                let (h, batch) = item.map_err(|e| corrupt(view, *base, e))?;
                if h.next_offset() <= clean_point {
                    continue;
                }
                // Map a batch whole or not at all, so that `mapped_to`
                // is a batch boundary.
                let mut keys = Vec::new();
                for_each_record_key(&batch, |k| {
                    if let Some(key) = k.key.filter(|key| config.compacts(key)) {
                        keys.push((key_hash(key), k.offset));
                    }
                })
                .map_err(|e| corrupt(view, *base, e))?;
                let new_keys = keys.iter().filter(|(k, _)| !map.contains_key(k)).count();
                if map.len() + new_keys > capacity {
                    break 'map;
                }
                map.extend(keys);
                mapped_to = h.next_offset();
            }
        }
        if mapped_to == clean_point && end > clean_point {
            // Not even one batch fits: the map is too small for this log.
            return Err(Error::Config(format!(
                "compaction key map of {} bytes ({capacity} keys) cannot hold the keys of one batch at offset \
                 {clean_point} of {}",
                config.key_map_bytes,
                self.dir.display()
            )));
        }
        let tombstone_cut = now_ms.saturating_sub(config.delete_retention_ms as i64);
        let mut kept_tombstone: Option<i64> = None;
        for (base, view, next) in &segments {
            if *base >= mapped_to {
                break;
            }
            let oldest =
                self.clean_segment(*base, view, *next, &map, mapped_to, tombstone_cut, config, &mut report)?;
            kept_tombstone = match (kept_tombstone, oldest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        report.cleaned_up_to = mapped_to;
        let mut inner = self.lock();
        inner.clean_point = inner.clean_point.max(mapped_to);
        inner.tombstones_expire_at =
            kept_tombstone.map(|ts| ts.saturating_add(config.delete_retention_ms as i64));
        Ok(report)
    }

    /// Writes the cleaned copy of one segment and swaps it in, if any of
    /// its records goes; returns the timestamp of the oldest tombstone it
    /// keeps (last of its key, not yet old enough to go).
    #[allow(clippy::too_many_arguments)]
    fn clean_segment(
        &self,
        base: u64,
        view: &SegmentView,
        next: u64,
        map: &HashMap<u128, u64>,
        mapped_to: u64,
        tombstone_cut: i64,
        compaction: &CompactionConfig,
        report: &mut CompactionReport,
    ) -> Result<Option<i64>> {
        let mut out: Vec<Bytes> = Vec::new();
        let mut kept_tombstone: Option<i64> = None;
        let (mut removed, mut tombstones, mut changed) = (0u64, 0u64, false);
        for item in split_batches(view.map.slice(..view.size)) {
            let (_, batch) = item.map_err(|e| corrupt(view, base, e))?;
            let keep = |k: RecordKey<'_>| {
                // Without a key: written before the topic was compacted.
                let Some(key) = k.key.filter(|key| compaction.compacts(key)) else { return true };
                if k.offset >= mapped_to {
                    return true;
                }
                match map.get(&key_hash(key)) {
                    Some(&last) if last > k.offset => {
                        removed += 1;
                        false
                    }
                    _ if k.tombstone && k.timestamp < tombstone_cut => {
                        tombstones += 1;
                        false
                    }
                    _ => {
                        if k.tombstone {
                            kept_tombstone = Some(kept_tombstone.map_or(k.timestamp, |t| t.min(k.timestamp)));
                        }
                        true
                    }
                }
            };
            match compact_batch(&batch, keep).map_err(|e| corrupt(view, base, e))? {
                Some(cleaned) => {
                    changed = true;
                    out.push(cleaned);
                }
                None => out.push(batch),
            }
        }
        if !changed {
            return Ok(kept_tombstone);
        }
        let config = self.config();
        // The segment size may have been lowered since this one was made:
        // its cleaned copy must fit whatever it holds.
        let seg_config = LogConfig { segment_bytes: config.segment_bytes.max(view.size as u64), ..config };
        let scratch = self.dir.join(format!("{SCRATCH_PREFIX}{base:0w$}", w = SEGMENT_NAME_DIGITS));
        if scratch.exists() {
            std::fs::remove_dir_all(&scratch).map_err(io("delete", &scratch))?;
        }
        std::fs::create_dir(&scratch).map_err(io("create", &scratch))?;
        let written = write_cleaned(&scratch, base, &out, &seg_config);
        let new_size = match written {
            Ok(size) => size,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&scratch);
                return Err(e);
            }
        };
        sync_dir(&scratch)?;
        #[cfg(test)]
        self.crash_point(CrashAt::Written)?;
        // The swap, under the lock: the segment must still be the one read
        // (not deleted by retention, not cut by a truncation).
        let mut inner = self.lock();
        let Some(i) = inner.segments.iter().position(|s| s.base_offset == base) else {
            drop(inner);
            std::fs::remove_dir_all(&scratch).map_err(io("delete", &scratch))?;
            return Ok(kept_tombstone);
        };
        let seg = &inner.segments[i];
        if seg.active || seg.next_offset != next || seg.size != view.size as u64 {
            drop(inner);
            std::fs::remove_dir_all(&scratch).map_err(io("delete", &scratch))?;
            return Ok(kept_tombstone);
        }
        let swap = self.dir.join(format!("{SWAP_PREFIX}{base:0w$}", w = SEGMENT_NAME_DIGITS));
        std::fs::rename(&scratch, &swap).map_err(io("rename", &scratch))?;
        sync_dir(&self.dir)?;
        #[cfg(test)]
        self.crash_point(CrashAt::Committed)?;
        finish_swap(&self.dir, &swap, base, |_step| {
            #[cfg(test)]
            if _step == 2 {
                self.crash_point(CrashAt::IndexesMoved)?;
            }
            Ok(())
        })?;
        let next_base = inner.segments.get(i + 1).map(|s| s.base_offset);
        let (reopened, _) = Segment::open(&self.dir, base, next_base, u64::MAX, &self.config())?;
        inner.segments[i] = reopened;
        inner.damaged.retain(|d| d.segment != base);
        drop(inner);
        #[cfg(test)]
        self.crash_point(CrashAt::LogMoved)?;
        std::fs::remove_dir(&swap).map_err(io("delete", &swap))?;
        sync_dir(&self.dir)?;
        report.segments_cleaned += 1;
        report.bytes_before += view.size as u64;
        report.bytes_after += new_size;
        report.records_removed += removed;
        report.tombstones_removed += tombstones;
        tracing::debug!(
            dir = %self.dir.display(), segment = base, before = view.size, after = new_size, removed, tombstones,
            "compacted a segment"
        );
        Ok(kept_tombstone)
    }

    #[cfg(test)]
    fn crash_point(&self, at: CrashAt) -> Result<()> {
        if *self.compact_crash.lock().unwrap() == Some(at) {
            return Err(Error::Config(format!("test crash at {at:?}")));
        }
        Ok(())
    }

    /// Test hook: the next pass stops at `at` as if the process died there.
    #[cfg(test)]
    pub(crate) fn crash_compaction_at(&self, at: Option<CrashAt>) {
        *self.compact_crash.lock().unwrap() = at;
    }
}

/// Writes `batches` as a sealed segment `base` in `dir`; returns its size.
fn write_cleaned(dir: &Path, base: u64, batches: &[Bytes], config: &LogConfig) -> Result<u64> {
    let mut seg = Segment::create(dir, base, config)?;
    for b in batches {
        let h = fjord_codec::BatchHeader::parse(b).map_err(Error::InvalidBatch)?;
        seg.append(b, &h)?;
    }
    seg.seal()?;
    Ok(seg.size)
}

/// Moves the files of a committed swap directory over the originals:
/// offset index, time index, then the log file (which decides), each
/// only if still there, so that finishing after a crash repeats nothing
/// wrongly. `step` is called after each move with 1, 2, 3.
fn finish_swap(dir: &Path, swap: &Path, base: u64, mut step: impl FnMut(u8) -> Result<()>) -> Result<()> {
    let [log, offsets, times] = segment_paths(swap, base);
    let [to_log, to_offsets, to_times] = segment_paths(dir, base);
    for (n, (from, to)) in [(offsets, to_offsets), (times, to_times), (log, to_log)].into_iter().enumerate() {
        if from.exists() {
            std::fs::rename(&from, &to).map_err(io("rename", &from))?;
        }
        if n == 2 {
            sync_dir(dir)?;
        }
        step(n as u8 + 1)?;
    }
    Ok(())
}

/// Completes or discards compaction passes a crash interrupted, before
/// any segment is opened (see the module's crash protocol).
pub(super) fn recover_swaps(dir: &Path) -> Result<()> {
    let mut changed = false;
    for entry in std::fs::read_dir(dir).map_err(io("list", dir))? {
        let entry = entry.map_err(io("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path: PathBuf = entry.path();
        if name.starts_with(SCRATCH_PREFIX) {
            tracing::info!(path = %path.display(), "removing an unfinished compaction");
            std::fs::remove_dir_all(&path).map_err(io("delete", &path))?;
            changed = true;
        } else if let Some(base) = name.strip_prefix(SWAP_PREFIX).and_then(|b| b.parse::<u64>().ok()) {
            tracing::info!(path = %path.display(), "finishing a compaction swap");
            finish_swap(dir, &path, base, |_| Ok(()))?;
            std::fs::remove_dir_all(&path).map_err(io("delete", &path))?;
            changed = true;
        }
    }
    if changed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// 128-bit hash of a key: a collision would drop a live record, so a
/// 64-bit hash (one collision in ~4 billion keys) is not enough.
fn key_hash(key: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key)
}

fn corrupt(view: &SegmentView, base: u64, e: impl std::fmt::Display) -> Error {
    Error::Corrupt { path: view.path.clone(), reason: format!("compacting segment {base}: {e}") }
}
