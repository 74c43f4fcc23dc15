//! The per-segment indexes: a sparse offset index and a time index
//! (`storage-format.md` §5 and §6), each a memory-mapped file of
//! fixed-width entries.
//!
//! The active segment's index files are preallocated to the most entries
//! the segment can need and written through the map; when the segment is
//! closed they are trimmed to the entries in use and fsynced. After an
//! unclean stop the active index is trusted only as far as its entries keep
//! strictly increasing and agree with the log (see `segment::recover`).

use std::fs::{File, OpenOptions};
use std::path::Path;

use fjord_codec::format::*;
use fjord_codec::le::Fixed;
use memmap2::MmapMut;

use crate::error::io;
use crate::handle::FileHandle;
use crate::Result;

/// Bytes of an index file allocated at a time ahead of the entries
/// written through its map: one page, so a partition holds at most a page
/// per index allocated beyond its entries (4,096 partitions: 32 MiB).
const INDEX_RESERVE_BYTES: usize = 4096;

/// A file of fixed-width entries, mapped read-write.
///
/// The preallocated file is sparse, and a store through a map into a hole
/// that the filesystem cannot fill (it is full) raises `SIGBUS`, which
/// would kill the whole broker. So the blocks under the next entry are
/// allocated (`fallocate`) before it is written, where a full filesystem
/// is an ordinary error ([`IndexFile::reserve_next`]).
#[derive(Debug)]
pub(crate) struct IndexFile {
    file: FileHandle,
    map: Option<MmapMut>,
    entry_len: usize,
    len: usize,
    cap: usize,
    /// Bytes from the start of the file known to have blocks under them.
    allocated: usize,
}

impl IndexFile {
    /// Creates (or replaces) an empty index with room for `cap` entries.
    pub(crate) fn create(path: &Path, entry_len: usize, cap: usize) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(io("create", path))?;
        let file = FileHandle::new(path.to_owned(), file);
        let mut index = IndexFile { file, map: None, entry_len, len: 0, cap: 0, allocated: 0 };
        index.set_capacity(cap)?;
        Ok(index)
    }

    /// Opens an existing index; every whole entry in the file counts as in use
    /// until the caller says otherwise. `None` if the file does not exist.
    pub(crate) fn open(path: &Path, entry_len: usize) -> Result<Option<Self>> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("open", path)(e)),
        };
        let bytes = file.metadata().map_err(io("stat", path))?.len() as usize;
        let cap = bytes / entry_len;
        let map = map_file(&file, path, cap * entry_len)?;
        // An index that was never trimmed (the active segment's, after a
        // stop) is scanned from the front by `segment::recover`, which a map
        // advised random would fault in a page at a time: read ahead its
        // first data extent instead, up to the first hole, where the
        // sparse preallocated rest begins. A trimmed index has no hole and
        // is only probed at its end.
        if let (Some(m), Ok(hole)) = (&map, rustix::fs::seek(&file, rustix::fs::SeekFrom::Hole(0))) {
            if (hole as usize) < bytes {
                let _ = m.advise_range(memmap2::Advice::WillNeed, 0, (hole as usize).min(m.len()));
            }
        }
        // Nothing is known allocated: the first entry written reserves its page.
        let file = FileHandle::new(path.to_owned(), file);
        Ok(Some(IndexFile { file, map, entry_len, len: cap, cap, allocated: 0 }))
    }

    /// Whether the file's length is not a whole number of entries.
    pub(crate) fn has_partial_entry(&self) -> Result<bool> {
        let bytes = self.file.shared()?.metadata().map_err(io("stat", self.path()))?.len() as usize;
        Ok(!bytes.is_multiple_of(self.entry_len))
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Entry `i`, `N` bytes long: the entry length this file was opened with.
    pub(crate) fn entry<const N: usize>(&self, i: usize) -> &[u8; N] {
        assert!(i < self.len, "index entry {i} beyond {} in {}", self.len, self.path().display());
        assert_eq!(
            N,
            self.entry_len,
            "index entries of {} are {} bytes",
            self.path().display(),
            self.entry_len
        );
        let map = self.map.as_ref().expect("a non-empty index is mapped");
        map[i * N..].first_chunk::<N>().expect("the map holds `len` whole entries")
    }

    /// Makes sure the blocks under the next entry exist, so that writing
    /// it through the map cannot fault on a full filesystem.
    ///
    /// # Errors
    /// [`crate::Error::NoSpace`] when the filesystem is full (nothing is
    /// written), or another I/O error.
    pub(crate) fn reserve_next(&mut self) -> Result<()> {
        let end = (self.len + 1) * self.entry_len;
        if end <= self.allocated || self.len >= self.cap {
            return Ok(());
        }
        let from = self.allocated.max(self.len * self.entry_len) / INDEX_RESERVE_BYTES * INDEX_RESERVE_BYTES;
        let to = (end.div_ceil(INDEX_RESERVE_BYTES) * INDEX_RESERVE_BYTES).min(self.cap * self.entry_len);
        let file = self.file.get()?;
        use rustix::fs::{fallocate, FallocateFlags};
        match fallocate(&**file, FallocateFlags::KEEP_SIZE, from as u64, (to - from) as u64) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::OPNOTSUPP => {
                // No fallocate here: fill the blocks with the zeros they
                // hold, through the file (these bytes are past every entry).
                use std::os::unix::fs::FileExt;
                let at = self.len * self.entry_len;
                file.write_all_at(&vec![0u8; to - at], at as u64).map_err(io("allocate", self.path()))?;
            }
            Err(e) => return Err(io("allocate", self.path())(e.into())),
        }
        self.allocated = to;
        Ok(())
    }

    /// Appends an entry, reserving its blocks first if
    /// [`IndexFile::reserve_next`] has not.
    ///
    /// # Errors
    /// As [`IndexFile::reserve_next`]; nothing is written then.
    ///
    /// # Panics
    /// If the index is full: capacities are sized from the segment limit
    /// (`LogConfig::index_capacity`), so that is a bug.
    pub(crate) fn push(&mut self, entry: &[u8]) -> Result<()> {
        assert_eq!(entry.len(), self.entry_len);
        assert!(self.len < self.cap, "index {} is full ({} entries)", self.path().display(), self.cap);
        self.reserve_next()?;
        let at = self.len * self.entry_len;
        let map = self.map.as_mut().expect("a non-empty index is mapped");
        map[at..at + self.entry_len].copy_from_slice(entry);
        self.len += 1;
        Ok(())
    }

    /// Keeps the first `n` entries and zeroes the rest, so a later scan of
    /// a preallocated file does not find them again. Punching a hole frees
    /// the pages instead of dirtying megabytes of zeros; where the file
    /// system cannot, the entries are overwritten through the map.
    pub(crate) fn truncate(&mut self, n: usize) {
        if n >= self.len {
            return;
        }
        let (from, to) = ((n * self.entry_len) as u64, (self.len * self.entry_len) as u64);
        use rustix::fs::{fallocate, FallocateFlags};
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        // A released file that cannot be reopened is zeroed through the map.
        let punched = self.file.get().ok().is_some_and(|f| fallocate(&**f, flags, from, to - from).is_ok());
        if !punched {
            if let Some(map) = self.map.as_mut() {
                map[from as usize..to as usize].fill(0);
            }
        }
        self.allocated = self.allocated.min(from as usize);
        self.len = n;
    }

    /// Changes the file's size to `cap` entries and maps it again; entries
    /// beyond `cap` are dropped.
    pub(crate) fn set_capacity(&mut self, cap: usize) -> Result<()> {
        self.map = None;
        let file = self.file.get()?.clone();
        file.set_len((cap * self.entry_len) as u64).map_err(io("resize", self.path()))?;
        self.map = map_file(&file, self.path(), cap * self.entry_len)?;
        self.cap = cap;
        self.len = self.len.min(cap);
        self.allocated = self.allocated.min(cap * self.entry_len);
        Ok(())
    }

    /// Writes mapped changes back and fsyncs the file.
    pub(crate) fn sync(&self) -> Result<()> {
        if let Some(map) = &self.map {
            map.flush().map_err(io("msync", self.path()))?;
        }
        self.file.shared()?.sync_all().map_err(io("fsync", self.path()))
    }

    /// Closes the file's descriptor; entries stay readable through the map.
    pub(crate) fn release(&mut self) {
        self.file.release();
    }

    fn path(&self) -> &Path {
        self.file.path()
    }
}

fn map_file(file: &File, path: &Path, bytes: usize) -> Result<Option<MmapMut>> {
    if bytes == 0 {
        return Ok(None);
    }
    // SAFETY: the map is of a file that only this process writes, through
    // this map; other handles (recovery, truncation) are ours too. The file
    // is never shrunk below the mapped length while the map exists
    // (`set_capacity` drops the map first).
    let map = unsafe { memmap2::MmapOptions::new().len(bytes).map_mut(file) };
    let map = map.map_err(io("mmap", path))?;
    // Lookups binary-search and appends touch one page at a time, so a
    // fault must not read ahead: on a disk whose read-ahead is 8 MiB, the
    // first entry of a new (sparse) index read and zeroed the whole
    // preallocated file, 7 MiB per partition, which made creating 4,096
    // partitions fill the page cache (issue #21, 3). Advisory: a kernel
    // that refuses it only reads more.
    let _ = map.advise(memmap2::Advice::Random);
    Ok(Some(map))
}

/// One offset-index entry (§5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub(crate) rel_offset: u32,
    pub(crate) position: u32,
    pub(crate) raft_index: u64,
}

impl OffsetEntry {
    pub(crate) fn decode(b: &[u8; OFFSET_INDEX_ENTRY_LEN]) -> Self {
        let b = Fixed(b);
        OffsetEntry {
            rel_offset: b.u32::<OFFSET_ENTRY_REL_OFFSET_AT>(),
            position: b.u32::<OFFSET_ENTRY_POSITION_AT>(),
            raft_index: b.u64::<OFFSET_ENTRY_RAFT_INDEX_AT>(),
        }
    }

    pub(crate) fn encode(&self) -> [u8; OFFSET_INDEX_ENTRY_LEN] {
        let mut b = [0u8; OFFSET_INDEX_ENTRY_LEN];
        b[OFFSET_ENTRY_REL_OFFSET_AT..][..4].copy_from_slice(&self.rel_offset.to_le_bytes());
        b[OFFSET_ENTRY_POSITION_AT..][..4].copy_from_slice(&self.position.to_le_bytes());
        b[OFFSET_ENTRY_RAFT_INDEX_AT..][..8].copy_from_slice(&self.raft_index.to_le_bytes());
        b
    }

    /// Whether `self` may follow `prev`: every field strictly increases.
    pub(crate) fn follows(&self, prev: &OffsetEntry) -> bool {
        self.rel_offset > prev.rel_offset
            && self.position > prev.position
            && self.raft_index > prev.raft_index
    }
}

/// One time-index entry (§6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub(crate) timestamp: i64,
    pub(crate) rel_offset: u32,
}

impl TimeEntry {
    pub(crate) fn decode(b: &[u8; TIME_INDEX_ENTRY_LEN]) -> Self {
        let b = Fixed(b);
        TimeEntry {
            timestamp: b.i64::<TIME_ENTRY_TIMESTAMP_AT>(),
            rel_offset: b.u32::<TIME_ENTRY_REL_OFFSET_AT>(),
        }
    }

    pub(crate) fn encode(&self) -> [u8; TIME_INDEX_ENTRY_LEN] {
        let mut b = [0u8; TIME_INDEX_ENTRY_LEN];
        b[TIME_ENTRY_TIMESTAMP_AT..][..8].copy_from_slice(&self.timestamp.to_le_bytes());
        b[TIME_ENTRY_REL_OFFSET_AT..][..4].copy_from_slice(&self.rel_offset.to_le_bytes());
        b
    }
}

/// The sparse offset index of one segment.
#[derive(Debug)]
pub(crate) struct OffsetIndex(pub(crate) IndexFile);

impl OffsetIndex {
    pub(crate) fn get(&self, i: usize) -> OffsetEntry {
        OffsetEntry::decode(self.0.entry(i))
    }

    pub(crate) fn last(&self) -> Option<OffsetEntry> {
        self.0.len().checked_sub(1).map(|i| self.get(i))
    }

    /// The last entry whose key (`rel_offset` or `raft_index`) is `<= key`.
    pub(crate) fn floor_by(&self, key: u64, field: impl Fn(&OffsetEntry) -> u64) -> Option<OffsetEntry> {
        let n = self.0.len().partition_point(|i| field(&self.get(i)) <= key);
        n.checked_sub(1).map(|i| self.get(i))
    }

    /// Keeps the longest prefix of entries each of which passes `keep`
    /// (given the entry before it), dropping the rest.
    pub(crate) fn keep_prefix(&mut self, keep: impl Fn(Option<&OffsetEntry>, &OffsetEntry) -> bool) {
        let n = prefix_len(self.0.len(), |i| self.get(i), keep);
        self.0.truncate(n);
    }
}

/// The time index of one segment.
#[derive(Debug)]
pub(crate) struct TimeIndex(pub(crate) IndexFile);

impl TimeIndex {
    pub(crate) fn get(&self, i: usize) -> TimeEntry {
        TimeEntry::decode(self.0.entry(i))
    }

    pub(crate) fn last(&self) -> Option<TimeEntry> {
        self.0.len().checked_sub(1).map(|i| self.get(i))
    }

    /// The last entry whose timestamp is below `ts`.
    pub(crate) fn last_below(&self, ts: i64) -> Option<TimeEntry> {
        let n = self.0.len().partition_point(|i| self.get(i).timestamp < ts);
        n.checked_sub(1).map(|i| self.get(i))
    }

    /// Keeps the longest prefix of entries each of which passes `keep`
    /// (given the entry before it), dropping the rest.
    pub(crate) fn keep_prefix(&mut self, keep: impl Fn(Option<&TimeEntry>, &TimeEntry) -> bool) {
        let n = prefix_len(self.0.len(), |i| self.get(i), keep);
        self.0.truncate(n);
    }
}

fn prefix_len<E>(len: usize, get: impl Fn(usize) -> E, keep: impl Fn(Option<&E>, &E) -> bool) -> usize {
    let mut prev = None;
    for i in 0..len {
        let e = get(i);
        if !keep(prev.as_ref(), &e) {
            return i;
        }
        prev = Some(e);
    }
    len
}

/// Extension trait so `usize` ranges can binary-search on a predicate.
trait PartitionPoint {
    fn partition_point(self, pred: impl Fn(usize) -> bool) -> usize;
}

impl PartitionPoint for usize {
    /// First `i` in `0..self` for which `pred` is false, `pred` being true
    /// for a prefix and false after it.
    fn partition_point(self, pred: impl Fn(usize) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(mid) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}
