//! Settings of one partition log.

use crate::{Error, Result};
use fjord_codec::format::BATCH_LEN_MAX;

/// Smallest segment size accepted. Tiny segments are only useful in tests.
pub const SEGMENT_BYTES_MIN: u64 = 1024;
/// Largest segment size: positions in the offset index are `u32`, and a
/// segment may overrun its size by one batch (a batch never straddles two
/// segments), so size plus one maximal batch must stay below 4 GiB.
pub const SEGMENT_BYTES_MAX: u64 = 2 * 1024 * 1024 * 1024;
const _: () = assert!(SEGMENT_BYTES_MAX + BATCH_LEN_MAX as u64 <= u32::MAX as u64);
/// Default segment size: 1 GiB, as Kafka.
pub const SEGMENT_BYTES_DEFAULT: u64 = 1024 * 1024 * 1024;
/// Default segment age before it is rolled: 7 days, as Kafka.
pub const SEGMENT_MS_DEFAULT: u64 = 7 * 24 * 3600 * 1000;
/// Default bytes of log between two offset-index entries.
pub const INDEX_INTERVAL_BYTES_DEFAULT: u32 = 4096;
/// Smallest index interval: one entry per 64 bytes keeps even a tiny-segment index small.
pub const INDEX_INTERVAL_BYTES_MIN: u32 = 64;

/// When appended data is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// fsync before an append is acknowledged; concurrent appends share one
    /// fsync (group commit). The default.
    Always,
    /// fsync at most this many ms after data is written, from the caller's
    /// timer ([`crate::Log::flush_if_due`]).
    IntervalMs(u64),
    /// Leave write-back to the OS (a process crash loses nothing; a power
    /// loss may).
    Never,
}

/// Settings of one partition log. Each field gives its unit and default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll the active segment before it exceeds this many bytes. Default 1 GiB.
    pub segment_bytes: u64,
    /// Roll the active segment when its first batch is older than this, ms. Default 7 days.
    pub segment_ms: u64,
    /// Bytes of log between two offset-index entries. Default 4096.
    pub index_interval_bytes: u32,
    /// Delete closed segments whose newest record is older than this, ms; `None` keeps forever.
    /// Default 7 days.
    pub retention_ms: Option<u64>,
    /// Delete the oldest closed segments while the log is larger than this; `None` for no limit.
    pub retention_bytes: Option<u64>,
    /// Durability of appends. Default [`FlushPolicy::Always`].
    pub flush: FlushPolicy,
    /// Told how long each data fsync of the log took. Default: nobody.
    pub fsync_observer: FsyncObserver,
}

/// A callback told the duration of every data fsync of a log (the group
/// commit in [`crate::Log::sync_through`] and the sealing of closed
/// segments), so that the broker can keep a latency histogram without this
/// crate knowing about metrics. It runs on the fsyncing thread, after the
/// fsync and outside every lock: it must be cheap (a histogram update).
#[derive(Clone, Default)]
pub struct FsyncObserver(Option<std::sync::Arc<dyn Fn(std::time::Duration) + Send + Sync>>);

impl FsyncObserver {
    /// An observer that calls `f` with each fsync's duration.
    pub fn new(f: impl Fn(std::time::Duration) + Send + Sync + 'static) -> FsyncObserver {
        FsyncObserver(Some(std::sync::Arc::new(f)))
    }

    /// Runs `fsync`, then reports how long it took (whether or not it failed:
    /// a slow failing disk is worth seeing too).
    pub(crate) fn time<T>(&self, fsync: impl FnOnce() -> T) -> T {
        let Some(f) = &self.0 else { return fsync() };
        let start = std::time::Instant::now();
        let result = fsync();
        f(start.elapsed());
        result
    }
}

impl std::fmt::Debug for FsyncObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "FsyncObserver(set)" } else { "FsyncObserver(none)" })
    }
}

/// Two observers are equal when they are the same callback (or both absent),
/// so that configs still compare.
impl PartialEq for FsyncObserver {
    fn eq(&self, other: &FsyncObserver) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for FsyncObserver {}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            segment_ms: SEGMENT_MS_DEFAULT,
            index_interval_bytes: INDEX_INTERVAL_BYTES_DEFAULT,
            retention_ms: Some(SEGMENT_MS_DEFAULT),
            retention_bytes: None,
            flush: FlushPolicy::Always,
            fsync_observer: FsyncObserver::default(),
        }
    }
}

impl LogConfig {
    /// Checks every field against its range.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field and its limits.
    pub fn validate(&self) -> Result<()> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(Error::Config(format!(
                "segment_bytes {} is outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
                self.segment_bytes
            )));
        }
        if self.segment_ms == 0 {
            return Err(Error::Config("segment_ms must be at least 1".into()));
        }
        if self.index_interval_bytes < INDEX_INTERVAL_BYTES_MIN {
            return Err(Error::Config(format!(
                "index_interval_bytes {} is below {INDEX_INTERVAL_BYTES_MIN}",
                self.index_interval_bytes
            )));
        }
        if self.flush == FlushPolicy::IntervalMs(0) {
            return Err(Error::Config("a flush interval must be at least 1 ms".into()));
        }
        Ok(())
    }

    /// Bytes a segment file is preallocated to: its size limit plus one
    /// maximal batch, since the batch that crosses the limit still lands in
    /// it. Files are sparse, so unwritten space costs no disk.
    pub(crate) fn segment_capacity(&self) -> u64 {
        self.segment_bytes + BATCH_LEN_MAX as u64
    }

    /// Offset-index entries a segment can need: one per interval plus the first.
    pub(crate) fn index_capacity(&self) -> usize {
        (self.segment_capacity() / self.index_interval_bytes as u64) as usize + 2
    }
}
