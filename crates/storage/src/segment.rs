//! One segment: a log file of consecutive batches named by its base offset,
//! with its offset and time indexes (`storage-format.md` §4–§6, §8).
//!
//! # Crash protocol
//! The active segment's log file is preallocated (sparse) to its capacity and
//! written with positional writes; durability comes from `fdatasync` of the
//! log file alone (the Log's flush policy). Indexes are written through maps
//! and fsynced only when the segment is closed, so after an unclean stop the
//! active segment is recovered by [`Segment::recover`]:
//! 1. keep the longest prefix of index entries that strictly increase;
//! 2. walk back to the last index point whose offset and time entries agree
//!    and whose batch is intact (length, CRC, offset and Raft index match);
//! 3. resume right after that batch with the exact state the appender had
//!    then, and validate batches forward (length, CRC, offset continuity,
//!    Raft index `+1`, term not decreasing) until the first that fails;
//! 4. zero everything after the last good batch (punching a hole), so bytes
//!    of a torn or discarded tail can never be read back as batches later.
//!
//! Anything acknowledged was fsynced, so it lies before the first torn
//! batch and survives step 3.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use fjord_codec::format::*;
use fjord_codec::{verified_stamped_prefix, verify_crc, BatchHeader};

use crate::config::LogConfig;
use crate::error::io;
use crate::handle::FileHandle;
use crate::index::{IndexFile, OffsetEntry, OffsetIndex, TimeEntry, TimeIndex};
use crate::{Error, Result};

/// File paths of the segment with base offset `base` in `dir` (§4).
pub(crate) fn segment_paths(dir: &Path, base: u64) -> [PathBuf; 3] {
    let stem = format!("{base:0width$}", width = SEGMENT_NAME_DIGITS);
    [LOG_SUFFIX, OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX].map(|ext| dir.join(format!("{stem}.{ext}")))
}

/// A read-only snapshot of a segment's readable bytes, usable without the log's lock.
#[derive(Debug, Clone)]
pub(crate) struct SegmentView {
    pub(crate) path: PathBuf,
    pub(crate) map: Bytes,
    pub(crate) size: usize,
}

impl SegmentView {
    /// The header of the batch at `pos`, checked to lie within the segment.
    pub(crate) fn header_at(&self, pos: usize) -> Result<BatchHeader> {
        let end = self.size;
        let h = BatchHeader::parse(&self.map[pos.min(end)..end]).map_err(|e| self.corrupt(pos, e))?;
        if h.batch_len as usize > end - pos {
            return Err(self.corrupt(pos, "batch runs past the end of the segment"));
        }
        Ok(h)
    }

    pub(crate) fn corrupt(&self, pos: usize, what: impl std::fmt::Display) -> Error {
        Error::Corrupt { path: self.path.clone(), reason: format!("at byte {pos}: {what}") }
    }
}

/// One segment of a partition log.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base_offset: u64,
    log_path: PathBuf,
    /// Released once sealed ([`crate::handle`]).
    file: FileHandle,
    map: Bytes,
    /// Bytes of valid batches.
    pub(crate) size: u64,
    /// Offset after the last batch.
    pub(crate) next_offset: u64,
    offsets: OffsetIndex,
    times: TimeIndex,
    /// Largest timestamp in the segment (`i64::MIN` when empty).
    pub(crate) max_timestamp: i64,
    /// First timestamp of the first batch, for age-based rolling.
    pub(crate) first_timestamp: Option<i64>,
    /// Header of the last batch, when known (always for the active segment).
    pub(crate) last_header: Option<BatchHeader>,
    bytes_since_index: u64,
    interval: u64,
    /// The segment appends go to (the last one).
    pub(crate) active: bool,
    /// Closed, fsynced and trimmed ([`Segment::seal`]). A rolled segment is
    /// closed at once but sealed later, off the append path.
    pub(crate) sealed: bool,
}

impl Segment {
    /// Creates an empty active segment starting at `base`.
    pub(crate) fn create(dir: &Path, base: u64, config: &LogConfig) -> Result<Segment> {
        let [log_path, off_path, time_path] = segment_paths(dir, base);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&log_path)
            .map_err(io("create", &log_path))?;
        let offsets =
            OffsetIndex(IndexFile::create(&off_path, OFFSET_INDEX_ENTRY_LEN, config.index_capacity())?);
        let times =
            TimeIndex(IndexFile::create(&time_path, TIME_INDEX_ENTRY_LEN, config.index_capacity() + 1)?);
        let mut seg = Segment::new(base, log_path, file, offsets, times, config);
        seg.set_file_len(config.segment_capacity())?;
        seg.active = true;
        Ok(seg)
    }

    fn new(
        base: u64,
        log_path: PathBuf,
        file: File,
        offsets: OffsetIndex,
        times: TimeIndex,
        config: &LogConfig,
    ) -> Self {
        Segment {
            base_offset: base,
            file: FileHandle::new(log_path.clone(), file),
            log_path,
            map: Bytes::new(),
            size: 0,
            next_offset: base,
            offsets,
            times,
            max_timestamp: i64::MIN,
            first_timestamp: None,
            last_header: None,
            bytes_since_index: 0,
            interval: config.index_interval_bytes as u64,
            active: false,
            sealed: false,
        }
    }

    /// Opens an existing segment. A closed segment (`next_base` is the next
    /// segment's base offset) is trusted without reading its data when its
    /// indexes are whole and agree with its size; otherwise, and always for
    /// the last segment, it is recovered. Returns the segment and how many
    /// bytes of damaged tail recovery discarded. `durable` is the position
    /// below which the segment is known fsynced (the recovery point; 0 if unknown).
    pub(crate) fn open(
        dir: &Path,
        base: u64,
        next_base: Option<u64>,
        durable: u64,
        config: &LogConfig,
    ) -> Result<(Segment, u64)> {
        let [log_path, off_path, time_path] = segment_paths(dir, base);
        let file =
            OpenOptions::new().read(true).write(true).open(&log_path).map_err(io("open", &log_path))?;
        let len = file.metadata().map_err(io("stat", &log_path))?.len();
        let offsets = IndexFile::open(&off_path, OFFSET_INDEX_ENTRY_LEN)?;
        let times = IndexFile::open(&time_path, TIME_INDEX_ENTRY_LEN)?;
        let clean_closed = match (&offsets, &times, next_base) {
            (Some(o), Some(t), Some(next)) => {
                !o.has_partial_entry()?
                    && !t.has_partial_entry()?
                    && closed_indexes_agree(o, t, len, next - base)
            }
            _ => false,
        };
        let offsets = match offsets {
            Some(o) => OffsetIndex(o),
            None => {
                OffsetIndex(IndexFile::create(&off_path, OFFSET_INDEX_ENTRY_LEN, config.index_capacity())?)
            }
        };
        let times = match times {
            Some(t) => TimeIndex(t),
            None => {
                TimeIndex(IndexFile::create(&time_path, TIME_INDEX_ENTRY_LEN, config.index_capacity() + 1)?)
            }
        };
        let mut seg = Segment::new(base, log_path, file, offsets, times, config);
        if clean_closed {
            seg.map_file(len)?;
            seg.size = len;
            seg.next_offset = next_base.expect("closed segments have a successor");
            seg.max_timestamp = seg.times.last().map_or(i64::MIN, |t| t.timestamp);
            seg.sealed = true;
            seg.release_files();
            return Ok((seg, 0));
        }
        let discarded = seg.recover(config, durable)?;
        if let Some(next) = next_base {
            if seg.next_offset != next {
                return Err(Error::Corrupt {
                    path: seg.log_path.clone(),
                    reason: format!(
                        "segment ends at offset {} but the next segment starts at {next}",
                        seg.next_offset
                    ),
                });
            }
            seg.seal()?;
        }
        Ok((seg, discarded))
    }

    /// Rebuilds the segment's state from its indexes and the tail of its log
    /// (see the module's crash protocol), leaving it active. Index points at
    /// or below `durable` (a position known fsynced) may be trusted; every
    /// batch after the chosen one is validated. Returns the bytes of damaged
    /// tail discarded (0 when the tail was clean zeros).
    pub(crate) fn recover(&mut self, config: &LogConfig, durable: u64) -> Result<u64> {
        let file_len = self.file.get()?.metadata().map_err(io("stat", &self.log_path))?.len();
        self.map_file(file_len.max(config.segment_capacity()))?;
        let view_len = file_len as usize;
        // Step 1: strictly increasing prefixes.
        let first_ok = |e: &OffsetEntry| e.rel_offset == 0 && e.position == 0 && e.raft_index >= 1;
        self.offsets.keep_prefix(|prev, e| {
            (e.position as u64) < file_len && prev.map_or(first_ok(e), |p| e.follows(p))
        });
        self.times.keep_prefix(|prev, t| {
            prev.map_or(t.rel_offset == 0, |p| t.rel_offset > p.rel_offset && t.timestamp >= p.timestamp)
        });
        self.offsets.0.set_capacity(config.index_capacity().max(self.offsets.0.len()))?;
        self.times.0.set_capacity((config.index_capacity() + 1).max(self.times.0.len()))?;
        // Step 2: last index point at or below the durable position whose
        // entries agree and whose batch is intact.
        let below_durable =
            (0..self.offsets.0.len()).filter(|&i| self.offsets.get(i).position as u64 <= durable).count();
        let mut k = below_durable.min(self.times.0.len());
        let mut resume = None;
        while k > 0 {
            let (o, t) = (self.offsets.get(k - 1), self.times.get(k - 1));
            if o.rel_offset == t.rel_offset {
                if let Some(h) = self.intact_batch_at(o.position as usize, view_len) {
                    if h.base_offset == self.base_offset + o.rel_offset as u64 && h.raft_index == o.raft_index
                    {
                        resume = Some((o, t, h));
                        break;
                    }
                }
            }
            k -= 1;
        }
        self.offsets.0.truncate(k);
        self.times.0.truncate(k);
        // Step 3: the appender's state right after that batch, then scan on.
        match resume {
            Some((o, t, h)) => {
                self.size = o.position as u64 + h.batch_len as u64;
                self.next_offset = h.next_offset();
                self.max_timestamp = t.timestamp;
                self.bytes_since_index = h.batch_len as u64;
                self.last_header = Some(h);
                self.first_timestamp =
                    self.first_record_timestamp(h.base_offset + h.record_count as u64, view_len);
            }
            None => {
                self.size = 0;
                self.next_offset = self.base_offset;
                self.max_timestamp = i64::MIN;
                self.bytes_since_index = 0;
                self.last_header = None;
                self.first_timestamp = None;
            }
        }
        let mut torn = false;
        loop {
            let pos = self.size as usize;
            if pos + BATCH_HEADER_LEN > view_len {
                break;
            }
            if self.map[pos..pos + BATCH_HEADER_LEN].iter().all(|&b| b == 0) {
                break; // clean end: preallocated zeros
            }
            let Some(h) = self.intact_batch_at(pos, view_len) else {
                torn = true;
                break;
            };
            let follows = match &self.last_header {
                Some(last) => h.raft_index == last.raft_index + 1 && h.raft_term >= last.raft_term,
                None => h.raft_index >= 1,
            };
            if h.base_offset != self.next_offset || !follows {
                torn = true;
                break;
            }
            self.note_batch(&h)?;
        }
        // Step 4: nothing after the last good batch may be read back later.
        let discarded = if torn { file_len - self.size } else { 0 };
        if torn {
            tracing::warn!(
                segment = %self.log_path.display(),
                position = self.size,
                discarded,
                "recovery truncated a torn or corrupt tail"
            );
        }
        self.zero_from(self.size, file_len)?;
        self.set_file_len(config.segment_capacity().max(self.size))?;
        self.active = true;
        self.sealed = false;
        Ok(discarded)
    }

    /// First timestamp of the first non-control batch below `end_offset`,
    /// walking headers from the segment start (control batches are rare:
    /// one per Raft leader change).
    fn first_record_timestamp(&self, end_offset: u64, len: usize) -> Option<i64> {
        let mut pos = 0;
        while let Some(h) = self.intact_batch_at(pos, len) {
            if h.base_offset >= end_offset {
                return None;
            }
            if !h.is_control() {
                return Some(h.first_timestamp);
            }
            pos += h.batch_len as usize;
        }
        None
    }

    /// The header of a batch at `pos` if it lies whole within `len` bytes and its CRC matches.
    fn intact_batch_at(&self, pos: usize, len: usize) -> Option<BatchHeader> {
        let h = BatchHeader::parse(self.map.get(pos..len)?).ok()?;
        let batch = self.map.get(pos..pos + h.batch_len as usize)?;
        (pos + h.batch_len as usize <= len && verify_crc(batch, &h).is_ok()).then_some(h)
    }

    /// The size this segment was created (or reopened) for: its mapped
    /// capacity less the one maximal batch that may cross the limit.
    pub(crate) fn size_limit(&self) -> u64 {
        (self.map.len() as u64).saturating_sub(BATCH_LEN_MAX as u64)
    }

    /// Appends a batch whose broker fields (`base_offset`, term, index)
    /// are in `header`; `batch` holds the bytes as received, and its CRC
    /// must check as it arrived (else [`Error::InvalidBatch`], nothing
    /// written). The stamped prefix (with its new CRC) and the untouched
    /// rest are written with two positional writes, so the batch is never
    /// copied.
    pub(crate) fn append(&mut self, batch: &[u8], header: &BatchHeader) -> Result<()> {
        debug_assert!(self.active);
        debug_assert_eq!(header.base_offset, self.next_offset);
        let prefix = verified_stamped_prefix(batch, header.base_offset, header.raft_term, header.raft_index)
            .map_err(Error::InvalidBatch)?;
        let pos = self.size;
        let end = pos + batch.len() as u64;
        assert!(end <= self.map.len() as u64, "batch past the segment capacity: sized by LogConfig");
        // The index entries this batch may add get their blocks first, so
        // that nothing can fail once the batch is written.
        if self.takes_index_point() {
            self.offsets.0.reserve_next()?;
            self.times.0.reserve_next()?;
        }
        let written = {
            let file = self.file.get()?;
            file.write_all_at(&prefix, pos)
                .and_then(|()| file.write_all_at(&batch[STAMP_END..], pos + STAMP_END as u64))
                .map_err(io("write", &self.log_path))
        };
        if let Err(e) = written {
            // A full filesystem may have taken part of the batch: cut it off
            // (which frees its blocks) so the log is exactly as it was.
            if e.is_no_space() {
                self.zero_from(pos, end)?;
            }
            return Err(e);
        }
        self.note_batch(header)
    }

    /// Whether the next batch gets offset- and time-index entries (§5, §6).
    fn takes_index_point(&self) -> bool {
        self.offsets.0.len() == 0 || self.bytes_since_index >= self.interval
    }

    /// Advances the in-memory state over a batch just written or validated
    /// at `self.size`, adding index entries at index points (§5, §6).
    ///
    /// # Errors
    /// [`Error::NoSpace`] if an index entry's blocks cannot be allocated
    /// (never after [`Segment::append`] reserved them); nothing has changed then.
    fn note_batch(&mut self, h: &BatchHeader) -> Result<()> {
        let rel = (h.base_offset - self.base_offset) as u32;
        if self.takes_index_point() {
            self.offsets.0.reserve_next()?;
            self.times.0.reserve_next()?;
        }
        // Control batches (Raft bookkeeping) carry no records and no
        // meaningful time: they move neither the time index nor retention.
        if !h.is_control() {
            self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
            self.first_timestamp.get_or_insert(h.first_timestamp);
        }
        if self.takes_index_point() {
            let entry = OffsetEntry { rel_offset: rel, position: self.size as u32, raft_index: h.raft_index };
            self.offsets.0.push(&entry.encode())?;
            self.times.0.push(&TimeEntry { timestamp: self.max_timestamp, rel_offset: rel }.encode())?;
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += h.batch_len as u64;
        self.size += h.batch_len as u64;
        self.next_offset = h.next_offset();
        self.last_header = Some(*h);
        Ok(())
    }

    /// Seals a closed segment: data fsynced, files trimmed to what is
    /// used, a final time entry holding the segment's max timestamp, indexes
    /// fsynced. After this the segment is trusted on open without a scan.
    pub(crate) fn seal(&mut self) -> Result<()> {
        self.reserve_seal()?;
        self.sync_data()?;
        if let (Some(last), Some(h)) = (self.times.last(), &self.last_header) {
            if self.max_timestamp > last.timestamp {
                let rel = (h.base_offset - self.base_offset) as u32;
                self.times.0.push(&TimeEntry { timestamp: self.max_timestamp, rel_offset: rel }.encode())?;
            }
        }
        self.set_file_len(self.size)?;
        self.file.get()?.sync_all().map_err(io("fsync", &self.log_path))?;
        let (n_off, n_time) = (self.offsets.0.len(), self.times.0.len());
        self.offsets.0.set_capacity(n_off)?;
        self.times.0.set_capacity(n_time)?;
        self.offsets.0.sync()?;
        self.times.0.sync()?;
        self.active = false;
        self.sealed = true;
        self.release_files();
        Ok(())
    }

    /// Allocates the blocks of the final time entry [`Segment::seal`] adds.
    ///
    /// # Errors
    /// [`Error::NoSpace`] on a full filesystem; nothing has changed then.
    pub(crate) fn reserve_seal(&mut self) -> Result<()> {
        if self.times.last().is_some_and(|last| self.max_timestamp > last.timestamp) {
            self.times.0.reserve_next()?;
        }
        Ok(())
    }

    /// Closes the three descriptors of a sealed segment; its maps stay.
    fn release_files(&mut self) {
        self.file.release();
        self.offsets.0.release();
        self.times.0.release();
    }

    /// Discards every batch from byte `pos` on (a batch boundary) and makes
    /// the segment active again.
    pub(crate) fn truncate_to(&mut self, pos: u64, config: &LogConfig) -> Result<()> {
        let file_len = self.file.get()?.metadata().map_err(io("stat", &self.log_path))?.len();
        self.zero_from(pos, file_len)?;
        self.file.get()?.sync_all().map_err(io("fsync", &self.log_path))?;
        self.recover(config, pos)?;
        assert_eq!(self.size, pos, "truncation point {pos} is a batch boundary");
        Ok(())
    }

    /// Zeroes `[from, to)` of the log file: punches a hole where the file
    /// system can, writes zeros where it cannot.
    fn zero_from(&self, from: u64, to: u64) -> Result<()> {
        if from >= to {
            return Ok(());
        }
        use rustix::fs::{fallocate, FallocateFlags};
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        let file = self.file.shared()?;
        if fallocate(&*file, flags, from, to - from).is_ok() {
            return Ok(());
        }
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut at = from;
        while at < to {
            let n = (to - at).min(ZEROS.len() as u64) as usize;
            file.write_all_at(&ZEROS[..n], at).map_err(io("zero", &self.log_path))?;
            at += n as u64;
        }
        Ok(())
    }

    fn set_file_len(&mut self, len: u64) -> Result<()> {
        self.map = Bytes::new();
        self.file.get()?.set_len(len).map_err(io("resize", &self.log_path))?;
        self.map_file(len)
    }

    fn map_file(&mut self, len: u64) -> Result<()> {
        if len == 0 {
            self.map = Bytes::new();
            return Ok(());
        }
        let file = self.file.get()?.clone();
        let file_len = file.metadata().map_err(io("stat", &self.log_path))?.len();
        if file_len < len {
            file.set_len(len).map_err(io("resize", &self.log_path))?;
        }
        // SAFETY: the file belongs to this partition log alone. Bytes that
        // readers may hold slices of are below `size` and are never changed
        // except by a scrub's repair (which writes good bytes over a range
        // that failed its CRC and is refused to readers meanwhile) and by
        // truncation of uncommitted data (which zeroes them, never
        // shrinking the file under a live map: `set_file_len` replaces the
        // map, and shrinking happens only in `close`, below nothing readable).
        let map = unsafe { memmap2::MmapOptions::new().len(len as usize).map(&*file) };
        self.map = Bytes::from_owner(map.map_err(io("mmap", &self.log_path))?);
        Ok(())
    }

    /// fdatasync of the log file.
    pub(crate) fn sync_data(&self) -> Result<()> {
        self.file.shared()?.sync_data().map_err(io("fdatasync", &self.log_path))
    }

    /// A handle to fsync outside the log's lock (group commit).
    pub(crate) fn file_handle(&self) -> Result<(Arc<File>, PathBuf)> {
        Ok((self.file.shared()?, self.log_path.clone()))
    }

    pub(crate) fn view(&self) -> SegmentView {
        SegmentView { path: self.log_path.clone(), map: self.map.clone(), size: self.size as usize }
    }

    /// Position of the batch holding `offset`, or `size` if `offset` is the segment's end.
    pub(crate) fn position_of(&self, offset: u64) -> Result<u64> {
        debug_assert!(offset >= self.base_offset && offset <= self.next_offset);
        if offset == self.next_offset {
            return Ok(self.size);
        }
        let rel = offset - self.base_offset;
        let start = self.offsets.floor_by(rel, |e| e.rel_offset as u64).map_or(0, |e| e.position as u64);
        self.walk_until(start, |h| h.next_offset() > offset)
    }

    /// Position of the batch written by Raft entry `index`, if this segment has it.
    pub(crate) fn position_of_raft_index(&self, index: u64) -> Result<Option<u64>> {
        let Some(entry) = self.offsets.floor_by(index, |e| e.raft_index) else { return Ok(None) };
        let pos = self.walk_until(entry.position as u64, |h| h.raft_index >= index)?;
        let view = self.view();
        Ok((pos < self.size && view.header_at(pos as usize)?.raft_index == index).then_some(pos))
    }

    /// Every offset-index entry, for the scrubber.
    pub(crate) fn offset_entries(&self) -> Vec<OffsetEntry> {
        (0..self.offsets.0.len()).map(|i| self.offsets.get(i)).collect()
    }

    /// Raft index of the first batch, if any.
    pub(crate) fn first_raft_index(&self) -> Option<u64> {
        (self.offsets.0.len() > 0).then(|| self.offsets.get(0).raft_index)
    }

    /// Position from which to scan for the first batch with max timestamp >= `ts`.
    pub(crate) fn scan_start_for_timestamp(&self, ts: i64) -> u64 {
        match self.times.last_below(ts) {
            Some(t) => self
                .offsets
                .floor_by(t.rel_offset as u64, |e| e.rel_offset as u64)
                .map_or(0, |e| e.position as u64),
            None => 0,
        }
    }

    /// Walks batch headers from `pos` and returns the position of the first
    /// one for which `stop` holds, or the segment size.
    fn walk_until(&self, mut pos: u64, stop: impl Fn(&BatchHeader) -> bool) -> Result<u64> {
        let view = self.view();
        while pos < self.size {
            let h = view.header_at(pos as usize)?;
            if stop(&h) {
                break;
            }
            pos += h.batch_len as u64;
        }
        Ok(pos)
    }

    /// Header of the last batch of a closed segment: a walk from its last index point.
    pub(crate) fn read_last_header(&mut self) -> Result<Option<BatchHeader>> {
        if self.last_header.is_none() {
            if let Some(e) = self.offsets.last() {
                let view = self.view();
                let mut pos = e.position as usize;
                while pos < view.size {
                    let h = view.header_at(pos)?;
                    pos += h.batch_len as usize;
                    self.last_header = Some(h);
                }
            }
        }
        Ok(self.last_header)
    }

    /// Removes the segment's files.
    pub(crate) fn delete(self, dir: &Path) -> Result<()> {
        for path in segment_paths(dir, self.base_offset) {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("delete", &path)(e)),
            }
        }
        Ok(())
    }
}

/// Whether a closed segment's trimmed indexes are consistent with its log
/// size and offset span, judged from their last entries alone.
fn closed_indexes_agree(o: &IndexFile, t: &IndexFile, log_len: u64, span: u64) -> bool {
    if o.len() == 0 || t.len() == 0 {
        return false;
    }
    let last = OffsetEntry::decode(o.entry(o.len() - 1));
    let first = OffsetEntry::decode(o.entry(0));
    let last_t = TimeEntry::decode(t.entry(t.len() - 1));
    first.rel_offset == 0
        && first.position == 0
        && (last.position as u64) < log_len
        && (last.rel_offset as u64) < span
        && (last_t.rel_offset as u64) < span
        && last.raft_index >= 1
}
