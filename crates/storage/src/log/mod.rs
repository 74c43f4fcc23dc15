//! [`Log`]: the log of one partition, a sequence of segments.
//!
//! Appends and structural changes (roll, truncation, retention) run under
//! one mutex. Reads take it only to find the segment and the start
//! position, then walk the memory map without it, so a slow consumer never
//! delays a producer. Durability is tracked apart from the log's lock so
//! that appends keep flowing while an fsync runs, and concurrent waiters
//! share one fsync (group commit).

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, RwLock};

use bytes::Bytes;
use fjord_codec::format::*;
use fjord_codec::{records, BatchHeader};

pub(crate) mod compact;
mod extent;
mod scrub;

pub use compact::{
    CompactionConfig, CompactionReport, Dirtiness, COMPACTION_KEY_MAP_BYTES_DEFAULT,
    DELETE_RETENTION_MS_DEFAULT, KEY_MAP_ENTRY_BYTES,
};
pub use scrub::{Damage, ScrubReport, REPAIR_RANGE_BYTES_MAX};

use crate::config::{FlushPolicy, LogConfig};
use crate::error::io;
use crate::raft_state::sync_dir;
use crate::recovery_point::RecoveryPoint;
use crate::segment::Segment;
use crate::{Error, Result};

/// Position of an entry in the Raft log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RaftPos {
    /// Term.
    pub term: u64,
    /// Index.
    pub index: u64,
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset given to the batch's first record.
    pub base_offset: u64,
    /// Offset after its last record: wait for this with [`Log::sync_through`].
    pub next_offset: u64,
}

/// Whole batches read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// Consecutive whole batches, a zero-copy slice of the segment map. The
    /// first batch holds the offset asked for (it may start before it).
    pub batches: Bytes,
    /// Offset after the last batch returned (the offset asked for if none).
    pub next_offset: u64,
}

/// A closed segment removed by retention or [`Log::delete_segments_before`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletedSegment {
    /// Its base offset.
    pub base_offset: u64,
    /// The offset after its last record: the new log start.
    pub next_offset: u64,
    /// Bytes freed.
    pub size: u64,
    /// The Raft entry of its last batch: where a snapshot must now say the log starts.
    pub last_raft: Option<RaftPos>,
}

#[derive(Debug)]
struct Inner {
    /// Sorted by base offset; the last one is active. Never empty.
    segments: Vec<Segment>,
    /// Last Raft entry in the log, if any.
    last_raft: Option<RaftPos>,
    /// Raft index of the first entry in the log (cached: Raft asks for it
    /// on every message).
    first_raft: Option<u64>,
    /// Raft index the next append must carry when the log holds no entry
    /// to follow (after truncating everything); `None` accepts any.
    next_raft_index: Option<u64>,
    poisoned: Option<String>,
    /// Ranges of closed segments a scrub found damaged, refused to readers
    /// until repaired; sorted by offset. See `scrub`.
    damaged: Vec<Damage>,
    /// Offsets below this were compacted by this process with a complete
    /// key map; the next pass maps keys from here. See `compact`.
    clean_point: u64,
    /// When the first tombstone the last pass kept may go; see `compact`.
    tombstones_expire_at: Option<i64>,
}

#[derive(Debug)]
struct SyncState {
    /// Every offset below this is on stable storage.
    durable: u64,
    /// An fsync is running; others wait for it rather than start their own.
    syncing: bool,
    poisoned: Option<String>,
    last_flush_ms: Option<u64>,
    recovery_point: RecoveryPoint,
    /// Bumped each time a failed fsync cut the log back to `durable`
    /// (a full filesystem): a waiter that saw another value waits for
    /// offsets that may be gone, and fails instead.
    cuts: u64,
    /// Test hook: the next fsync fails with this OS error.
    #[cfg(test)]
    fail_next_sync: Option<i32>,
}

/// The log of one partition. See the crate documentation.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    /// Changed only by [`Log::set_config`] (a topic's settings altered);
    /// each operation reads one snapshot of it.
    config: RwLock<LogConfig>,
    inner: Mutex<Inner>,
    sync: Mutex<SyncState>,
    synced: Condvar,
    /// Test hook: where the next compaction pass stops, as a crash would.
    #[cfg(test)]
    compact_crash: Mutex<Option<compact::CrashAt>>,
}

impl Log {
    /// Opens the partition log in `dir`, creating it if empty, and recovers
    /// from an unclean stop (see `segment`'s crash protocol). Closed
    /// segments are not read, so open time does not grow with the log.
    ///
    /// # Errors
    /// An invalid config, I/O errors, or [`Error::Corrupt`] when a closed
    /// segment is damaged beyond its tail.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log> {
        config.validate()?;
        let dir = dir.as_ref().to_owned();
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        compact::recover_swaps(&dir)?;
        let bases = list_segments(&dir)?;
        let (recovery_point, point) = RecoveryPoint::open(&dir)?;
        let mut segments = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            // How much of this segment is known fsynced. The point names
            // the active segment of its fsync, and that fsync covered every
            // unsealed segment before it (`sync_through`), so a segment
            // below the point's is durable whole: after a crash its index
            // points are trusted and only the batches after the last one are
            // checked, instead of every batch of a segment the crash left
            // unsealed (which read every closed segment since the last seal).
            let durable = match point {
                Some((point_base, _)) if base < point_base => u64::MAX,
                Some((point_base, position)) if base == point_base => position,
                _ => 0,
            };
            let (seg, discarded) = Segment::open(&dir, base, bases.get(i + 1).copied(), durable, &config)?;
            if discarded > 0 {
                tracing::warn!(dir = %dir.display(), base, discarded, "discarded a damaged segment tail");
            }
            segments.push(seg);
        }
        if segments.is_empty() {
            segments.push(Segment::create(&dir, 0, &config)?);
            sync_dir(&dir)?;
        }
        // The last Raft entry: the active segment's last batch, or the
        // previous segment's if the active one is empty.
        let mut last_raft = None;
        for seg in segments.iter_mut().rev() {
            if let Some(h) = seg.read_last_header()? {
                last_raft = Some(RaftPos { term: h.raft_term, index: h.raft_index });
                break;
            }
        }
        let end = segments.last().expect("never empty").next_offset;
        let first_raft = segments.iter().find_map(|s| s.first_raft_index());
        let log = Log {
            dir,
            config: RwLock::new(config),
            inner: Mutex::new(Inner {
                segments,
                last_raft,
                first_raft,
                next_raft_index: None,
                poisoned: None,
                damaged: Vec::new(),
                clean_point: 0,
                tombstones_expire_at: None,
            }),
            sync: Mutex::new(SyncState {
                durable: end,
                syncing: false,
                poisoned: None,
                last_flush_ms: None,
                recovery_point,
                cuts: 0,
                #[cfg(test)]
                fail_next_sync: None,
            }),
            synced: Condvar::new(),
            #[cfg(test)]
            compact_crash: Mutex::new(None),
        };
        Ok(log)
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The config in force.
    pub fn config(&self) -> LogConfig {
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes the settings a topic may alter while the log is open:
    /// retention (applied at the next retention pass) and segment size and
    /// age (applied from the next roll). The flush policy and index
    /// interval stay as opened. A segment never grows past the size it was
    /// created for, so a larger `segment_bytes` takes effect from the next
    /// segment on.
    ///
    /// # Errors
    /// [`Error::Config`] when the new values are out of range.
    pub fn set_config(&self, new: &LogConfig) -> Result<()> {
        let mut c = self.config();
        c.retention_ms = new.retention_ms;
        c.retention_bytes = new.retention_bytes;
        c.segment_bytes = new.segment_bytes;
        c.segment_ms = new.segment_ms;
        c.validate()?;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = c;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_sync(&self) -> MutexGuard<'_, SyncState> {
        self.sync.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// First offset still in the log.
    pub fn log_start_offset(&self) -> u64 {
        self.lock().segments[0].base_offset
    }

    /// Offset the next record will get.
    pub fn log_end_offset(&self) -> u64 {
        self.lock().segments.last().expect("never empty").next_offset
    }

    /// Bytes of batches in the log.
    pub fn size_bytes(&self) -> u64 {
        self.lock().segments.iter().map(|s| s.size).sum()
    }

    /// Base offset of the newest segment such that it and the segments
    /// after it hold at least `bytes` (the log start if the log holds less):
    /// where a scan of the log's last `bytes` begins, at segment granularity.
    pub fn tail_start(&self, bytes: u64) -> u64 {
        let inner = self.lock();
        let mut held = 0;
        for seg in inner.segments.iter().rev() {
            held += seg.size;
            if held >= bytes {
                return seg.base_offset;
            }
        }
        inner.segments[0].base_offset
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.lock().segments.len()
    }

    /// The last Raft entry in the log.
    pub fn last_raft(&self) -> Option<RaftPos> {
        self.lock().last_raft
    }

    /// Why the log stopped accepting writes, if it did.
    pub fn poisoned(&self) -> Option<String> {
        self.lock().poisoned.clone()
    }

    /// Appends one batch, giving it the next offsets and the Raft position
    /// `raft` (which must follow the log's last entry: index `+1`, term not
    /// lower). The caller has validated the batch (`fjord_codec::validate_batch`,
    /// or a follower the leader's CRC); its header and its CRC as it
    /// arrived are checked again here before it is stamped (an
    /// [`Error::InvalidBatch`] writes nothing and does not poison the log).
    /// Returns before the data is
    /// durable: see [`Log::sync_through`] and [`Log::append_durable`].
    ///
    /// # Errors
    /// [`Error::Poisoned`], [`Error::InvalidBatch`], [`Error::RaftOrder`], or
    /// an I/O error (which poisons the log).
    pub fn append(&self, batch: &[u8], raft: RaftPos) -> Result<Appended> {
        let mut inner = self.lock();
        if let Some(reason) = &inner.poisoned {
            return Err(Error::Poisoned { dir: self.dir.clone(), reason: reason.clone() });
        }
        let mut header = BatchHeader::parse(batch)?;
        if header.batch_len as usize != batch.len() {
            return Err(Error::InvalidBatch(fjord_codec::Error::BadLength {
                len: batch.len() as u64,
                min: header.batch_len as u64,
                max: header.batch_len as u64,
            }));
        }
        let follows = match (inner.last_raft, inner.next_raft_index) {
            (_, Some(next)) => raft.index == next,
            (Some(last), None) => raft.index == last.index + 1 && raft.term >= last.term,
            (None, None) => raft.index >= 1,
        };
        if !follows || raft.term == 0 {
            let last =
                inner.last_raft.unwrap_or(RaftPos { term: 0, index: inner.next_raft_index.unwrap_or(1) - 1 });
            return Err(Error::RaftOrder {
                term: raft.term,
                index: raft.index,
                last_term: last.term,
                last_index: last.index,
            });
        }
        let active = inner.segments.last().expect("never empty");
        let limit = self.config().segment_bytes.min(active.size_limit());
        if active.size > 0 && active.size + batch.len() as u64 > limit {
            self.roll(&mut inner)?;
        }
        let active = inner.segments.last_mut().expect("never empty");
        header.base_offset = active.next_offset;
        header.raft_term = raft.term;
        header.raft_index = raft.index;
        match active.append(batch, &header) {
            Ok(()) => {}
            // Refused before anything was written, or a full filesystem
            // whose partial write was cut off: the log is as it was.
            Err(e @ Error::InvalidBatch(_)) => return Err(e),
            Err(e) if e.is_no_space() => return Err(e),
            Err(e) => return Err(self.poison(&mut inner, e)),
        }
        inner.last_raft = Some(raft);
        inner.first_raft.get_or_insert(raft.index);
        inner.next_raft_index = None;
        Ok(Appended { base_offset: header.base_offset, next_offset: header.next_offset() })
    }

    /// [`Log::append`], then waits for durability as the flush policy says.
    ///
    /// # Errors
    /// As [`Log::append`] and [`Log::sync_through`].
    pub fn append_durable(&self, batch: &[u8], raft: RaftPos) -> Result<Appended> {
        let appended = self.append(batch, raft)?;
        if self.config().flush == FlushPolicy::Always {
            self.sync_through(appended.next_offset)?;
        }
        Ok(appended)
    }

    /// Blocks until every offset below `offset` is on stable storage. One
    /// caller runs the fsync; the others that arrive meanwhile wait for it or
    /// for the next one, so N concurrent appenders cost about two fsyncs,
    /// not N.
    ///
    /// # Errors
    /// [`Error::Poisoned`] if this or an earlier fsync failed. A failed
    /// fsync is never retried: the kernel may have dropped the dirty pages.
    pub fn sync_through(&self, offset: u64) -> Result<()> {
        let mut st = self.lock_sync();
        let cuts = st.cuts;
        loop {
            if let Some(reason) = &st.poisoned {
                return Err(Error::Poisoned { dir: self.dir.clone(), reason: reason.clone() });
            }
            if st.durable >= offset {
                return Ok(());
            }
            if st.cuts != cuts {
                return Err(Error::NoSpace {
                    op: "fdatasync",
                    path: self.dir.clone(),
                    source: rustix::io::Errno::NOSPC.into(),
                });
            }
            if st.syncing {
                st = self.synced.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            st.syncing = true;
            drop(st);
            let (unsealed, end, base, size) = {
                let inner = self.lock();
                let active = inner.segments.last().expect("never empty");
                let unsealed: Result<Vec<_>> =
                    inner.segments.iter().filter(|s| !s.sealed).map(|s| s.file_handle()).collect();
                (unsealed, active.next_offset, active.base_offset, active.size)
            };
            #[cfg(test)]
            let injected = std::mem::take(&mut self.lock_sync().fail_next_sync);
            #[cfg(not(test))]
            let injected: Option<i32> = None;
            let result = match injected {
                Some(errno) => Err(io("fdatasync", &self.dir)(std::io::Error::from_raw_os_error(errno))),
                None => unsealed.and_then(|unsealed| {
                    self.config().fsync_observer.time(|| {
                        unsealed
                            .iter()
                            .try_for_each(|(file, path)| file.sync_data().map_err(io("fdatasync", path)))
                    })
                }),
            };
            st = self.lock_sync();
            st.syncing = false;
            match result.and_then(|()| st.recovery_point.store(base, size)) {
                Ok(()) => st.durable = st.durable.max(end),
                Err(e) if e.is_no_space() => {
                    // The kernel may have dropped the pages it could not
                    // write, so nothing after the last good fsync can be
                    // trusted: cut the log back to it (freeing those blocks)
                    // and go on from there; only if the cut fails is the log
                    // poisoned. What was cut was never acknowledged: an
                    // acknowledgement waits for the fsync that failed.
                    let durable = st.durable;
                    st.cuts += 1;
                    drop(st);
                    let cut = self.truncate_suffix(durable);
                    self.synced.notify_all();
                    match cut {
                        Ok(()) => tracing::warn!(
                            dir = %self.dir.display(), error = %e, offset = durable,
                            "fsync found the disk full; the log was cut back to what was durable"
                        ),
                        Err(cut) => {
                            let reason =
                                format!("{e}; cutting the log back to offset {durable} failed: {cut}");
                            let mut inner = self.lock();
                            self.poison(
                                &mut inner,
                                Error::Io {
                                    op: "truncate",
                                    path: self.dir.clone(),
                                    source: std::io::Error::other(reason),
                                },
                            );
                        }
                    }
                    return Err(e);
                }
                Err(e) => {
                    let reason = e.to_string();
                    st.poisoned = Some(reason.clone());
                    drop(st);
                    self.lock().poisoned.get_or_insert(reason);
                    tracing::error!(dir = %self.dir.display(), error = %e, "fsync failed; partition log poisoned");
                    self.synced.notify_all();
                    st = self.lock_sync();
                    continue;
                }
            }
            self.synced.notify_all();
        }
    }

    /// Makes everything appended so far durable.
    ///
    /// # Errors
    /// As [`Log::sync_through`].
    pub fn flush(&self) -> Result<()> {
        let end = self.log_end_offset();
        self.sync_through(end)?;
        self.seal_closed()
    }

    /// For [`FlushPolicy::IntervalMs`]: flushes if the interval has passed
    /// since the last flush. The caller's timer provides `now_ms`.
    ///
    /// # Errors
    /// As [`Log::sync_through`].
    pub fn flush_if_due(&self, now_ms: u64) -> Result<()> {
        let FlushPolicy::IntervalMs(interval) = self.config().flush else { return Ok(()) };
        let due = {
            let mut st = self.lock_sync();
            let due = st.last_flush_ms.is_none_or(|last| now_ms.saturating_sub(last) >= interval);
            if due {
                st.last_flush_ms = Some(now_ms);
            }
            due
        };
        if due {
            self.flush()?;
        }
        Ok(())
    }

    /// The offset below which everything is durable.
    pub fn durable_offset(&self) -> u64 {
        self.lock_sync().durable
    }

    fn poison(&self, inner: &mut Inner, e: Error) -> Error {
        let reason = e.to_string();
        tracing::error!(dir = %self.dir.display(), error = %reason, "write failed; partition log poisoned");
        inner.poisoned.get_or_insert(reason.clone());
        self.lock_sync().poisoned.get_or_insert(reason);
        self.synced.notify_all();
        e
    }

    /// Closes the active segment and starts a new one at the log end. The
    /// old segment is sealed (fsynced, trimmed) later by [`Log::seal_closed`],
    /// so an append that rolls does not wait for a whole segment to reach
    /// the disk; until then [`Log::sync_through`] fsyncs it with the active one.
    fn roll(&self, inner: &mut Inner) -> Result<()> {
        let active = inner.segments.last_mut().expect("never empty");
        let end = active.next_offset;
        let seg = match Segment::create(&self.dir, end, &self.config())
            .and_then(|s| sync_dir(&self.dir).map(|()| s))
        {
            Ok(s) => s,
            Err(e) if e.is_no_space() => {
                // Nothing refers to the new files yet: remove what was made
                // and stay on the old segment, which stays active.
                for path in crate::segment::segment_paths(&self.dir, end) {
                    let _ = std::fs::remove_file(path);
                }
                return Err(e);
            }
            Err(e) => return Err(self.poison(inner, e)),
        };
        inner.segments.last_mut().expect("never empty").active = false;
        tracing::debug!(dir = %self.dir.display(), base = end, "rolled segment");
        inner.segments.push(seg);
        Ok(())
    }

    /// Seals closed segments that a roll left unsealed: fsync outside the
    /// lock (appends go on meanwhile), then trim and fsync their indexes.
    /// Run by [`Log::flush`] and [`Log::maintain`].
    ///
    /// # Errors
    /// An fsync or trim failure, which poisons the log.
    pub fn seal_closed(&self) -> Result<()> {
        let pending: Result<Vec<_>> = {
            let inner = self.lock();
            inner
                .segments
                .iter()
                .filter(|s| !s.active && !s.sealed)
                .map(|s| s.file_handle().map(|h| (s.base_offset, h)))
                .collect()
        };
        let pending: Vec<_> = match pending {
            Ok(p) => p,
            Err(e) => return Err(self.poison(&mut self.lock(), e)),
        };
        if pending.is_empty() {
            return Ok(());
        }
        for (_, (file, path)) in &pending {
            if let Err(e) =
                self.config().fsync_observer.time(|| file.sync_data()).map_err(io("fdatasync", path))
            {
                let mut inner = self.lock();
                return Err(self.poison(&mut inner, e));
            }
        }
        let mut inner = self.lock();
        for (base, _) in pending {
            let Some(i) = inner.segments.iter().position(|s| s.base_offset == base && !s.active && !s.sealed)
            else {
                continue; // deleted or truncated meanwhile
            };
            // Sealing adds a final time entry: with no room for it, the
            // segment stays unsealed (still fsynced with the active one)
            // and the next pass retries.
            inner.segments[i].reserve_seal()?;
            if let Err(e) = inner.segments[i].seal() {
                return Err(self.poison(&mut inner, e));
            }
        }
        Ok(())
    }

    /// Reads whole batches from `offset` on, up to `max_bytes` (at least one
    /// batch is returned whatever its size, so a consumer always advances),
    /// never including a batch that is not entirely below `limit` (the high
    /// watermark: consumers never see uncommitted data). Reads stop at a
    /// segment end; the next read continues in the next segment.
    ///
    /// # Errors
    /// [`Error::OffsetOutOfRange`] if `offset` is below the log start or
    /// above the log end; [`Error::Corrupt`] if a batch header on disk is damaged.
    pub fn read(&self, offset: u64, max_bytes: usize, limit: u64) -> Result<ReadResult> {
        let (view, pos) = {
            let inner = self.lock();
            let (start, end) =
                (inner.segments[0].base_offset, inner.segments.last().expect("never empty").next_offset);
            if offset < start || offset > end {
                return Err(Error::OffsetOutOfRange { offset, log_start: start, log_end: end });
            }
            if offset >= limit.min(end) {
                return Ok(ReadResult { batches: Bytes::new(), next_offset: offset });
            }
            if let Some(d) = scrub::damage_at(&inner, offset) {
                return Err(Error::Damaged {
                    dir: self.dir.clone(),
                    start_offset: d.start_offset,
                    end_offset: d.end_offset,
                    reason: d.reason.clone(),
                });
            }
            let seg = segment_for(&inner.segments, offset);
            let pos = seg.position_of(offset)?;
            // A read stops before a damaged range; the next one is refused.
            let mut view = seg.view();
            if let Some(stop) = scrub::damage_after(&inner, seg.base_offset, pos) {
                view.size = view.size.min(stop as usize);
            }
            (view, pos as usize)
        };
        let mut end = pos;
        let mut next_offset = offset;
        while end < view.size {
            let h = view.header_at(end)?;
            if h.next_offset() > limit || (end > pos && end - pos + h.batch_len as usize > max_bytes) {
                break;
            }
            end += h.batch_len as usize;
            next_offset = h.next_offset();
        }
        Ok(ReadResult { batches: view.map.slice(pos..end), next_offset })
    }

    /// The first offset whose record timestamp is `>= ts`, among offsets
    /// below `limit`; `None` if there is none.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if a batch on the path is damaged.
    pub fn offset_for_timestamp(&self, ts: i64, limit: u64) -> Result<Option<u64>> {
        let (view, pos) = {
            let inner = self.lock();
            let Some(seg) = inner.segments.iter().find(|s| s.size > 0 && s.max_timestamp >= ts) else {
                return Ok(None);
            };
            (seg.view(), seg.scan_start_for_timestamp(ts) as usize)
        };
        let mut pos = pos;
        while pos < view.size {
            let h = view.header_at(pos)?;
            if h.base_offset >= limit {
                return Ok(None);
            }
            if h.max_timestamp >= ts && !h.is_control() {
                let batch = view.map.slice(pos..pos + h.batch_len as usize);
                for rec in records(&batch).map_err(|e| view.corrupt(pos, e))? {
                    let rec = rec.map_err(|e| view.corrupt(pos, e))?;
                    if rec.timestamp >= ts {
                        return Ok((rec.offset < limit).then_some(rec.offset));
                    }
                }
            }
            pos += h.batch_len as usize;
        }
        Ok(None)
    }
}

#[cfg(test)]
impl Log {
    pub(crate) fn fail_next_sync(&self) {
        self.fail_next_sync_with(rustix::io::Errno::IO.raw_os_error());
    }

    pub(crate) fn fail_next_sync_with(&self, errno: i32) {
        self.lock_sync().fail_next_sync = Some(errno);
    }
}

/// The segment holding `offset` (which lies in `[start, end]`); the end of
/// a closed segment belongs to the next one.
fn segment_for(segments: &[Segment], offset: u64) -> &Segment {
    let i = segments.partition_point(|s| s.base_offset <= offset).saturating_sub(1);
    let seg = &segments[i];
    if offset == seg.next_offset && i + 1 < segments.len() {
        &segments[i + 1]
    } else {
        seg
    }
}

/// Base offsets of the segments in `dir`, sorted. Index files without a
/// log file (a crash during deletion) are removed.
fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    let mut orphans = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("list", dir))? {
        let entry = entry.map_err(io("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((stem, ext)) = name.split_once('.') else { continue };
        if stem.len() != SEGMENT_NAME_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(base) = stem.parse::<u64>() else { continue };
        match ext {
            LOG_SUFFIX => bases.push(base),
            OFFSET_INDEX_SUFFIX | TIME_INDEX_SUFFIX => orphans.push((base, entry.path())),
            _ => {}
        }
    }
    bases.sort_unstable();
    for (base, path) in orphans {
        if bases.binary_search(&base).is_err() {
            tracing::warn!(path = %path.display(), "removing an index file whose segment is gone");
            std::fs::remove_file(&path).map_err(io("delete", &path))?;
        }
    }
    Ok(bases)
}
