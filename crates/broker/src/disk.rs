//! The broker's guard against a full disk, after Redpanda's
//! `storage_min_free_bytes`: below a threshold of free space, produce
//! requests are refused with RESOURCE_EXHAUSTED before anything is
//! written, while fetches, group commits (small, and needed to drain) and
//! topic deletion (which frees space) go on. Above it again, writes
//! resume by themselves.
//!
//! The check is one `statvfs` per produce request (about a microsecond),
//! so even a 64 MiB volume is caught before the write that would fill it,
//! as long as the threshold exceeds what the requests in flight carry.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::{Error, Result};

/// Default threshold: 1 GiB, or this fraction of the volume if smaller.
pub const MIN_FREE_BYTES_DEFAULT: u64 = 1024 * 1024 * 1024;
/// The fraction of the volume (in percent) the default threshold caps at,
/// so small volumes are not refused while mostly empty.
pub const MIN_FREE_PERCENT_DEFAULT: u64 = 5;

/// Free space of the data directory's filesystem against the threshold.
#[derive(Debug)]
pub(crate) struct DiskGuard {
    dir: PathBuf,
    /// Bytes that must stay free.
    threshold: u64,
    /// Free bytes at the last check.
    free: AtomicU64,
    /// Whether the last check was below the threshold (logged on change).
    low: AtomicBool,
}

impl DiskGuard {
    /// A guard of `dir`'s filesystem: `min_free_bytes`, or the default
    /// (the smaller of 1 GiB and 5% of the volume).
    ///
    /// # Errors
    /// `statvfs` failing on `dir`.
    pub(crate) fn new(dir: PathBuf, min_free_bytes: Option<u64>) -> Result<DiskGuard> {
        let space = fjord_storage::disk_space(&dir)?;
        let threshold = min_free_bytes
            .unwrap_or_else(|| MIN_FREE_BYTES_DEFAULT.min(space.total / 100 * MIN_FREE_PERCENT_DEFAULT));
        let guard =
            DiskGuard { dir, threshold, free: AtomicU64::new(space.free), low: AtomicBool::new(false) };
        tracing::info!(dir = %guard.dir.display(), free = space.free, min_free_bytes = threshold, "disk space");
        guard.check()?;
        Ok(guard)
    }

    /// Measures the free space now; logs a line when it crosses the threshold.
    /// Returns the free bytes.
    pub(crate) fn check(&self) -> Result<u64> {
        let free = fjord_storage::disk_space(&self.dir)?.free;
        self.free.store(free, Ordering::Relaxed);
        let low = free < self.threshold;
        if self.low.swap(low, Ordering::Relaxed) != low {
            if low {
                tracing::warn!(
                    dir = %self.dir.display(), free, min_free_bytes = self.threshold,
                    "disk nearly full: refusing produce requests until space is freed"
                );
            } else {
                tracing::info!(dir = %self.dir.display(), free, min_free_bytes = self.threshold, "disk space recovered: accepting produce requests again");
            }
        }
        Ok(free)
    }

    /// Fails with [`Error::DiskFull`] if the free space is below the threshold.
    pub(crate) fn check_produce(&self) -> Result<()> {
        let free = self.check()?;
        if free < self.threshold {
            return Err(Error::DiskFull { dir: self.dir.clone(), free, min_free_bytes: self.threshold });
        }
        Ok(())
    }
}
