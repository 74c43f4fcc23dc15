//! The on-disk log of one Fjord partition.
//!
//! A partition directory holds segment files of record batches, each with a
//! sparse offset index and a time index, all memory-mapped, plus a small
//! Raft state file. [`Log`] appends batches (stamping their offsets and the
//! Raft term and index that wrote them), reads whole batches as zero-copy
//! [`bytes::Bytes`] slices up to a caller-given limit (the high watermark),
//! looks offsets up by timestamp or Raft index, truncates uncommitted
//! suffixes, applies retention, and recovers from crashes by validating
//! only the tail of the active segment.
//!
//! The byte layout is specified in `storage-format.md`; the constants live
//! in `fjord_codec::format`. This crate is synchronous and must not depend
//! on tonic, raft or an async runtime: the replication layer drives it.
//!
//! ```
//! use fjord_codec::BatchBuilder;
//! use fjord_storage::{Log, LogConfig, RaftPos};
//! let dir = tempfile::tempdir().unwrap();
//! let log = Log::open(dir.path(), LogConfig::default()).unwrap();
//! let mut b = BatchBuilder::new(1 << 20);
//! b.push(None, Some(b"hello"), &[], 1_700_000_000_000).unwrap();
//! let at = log.append_durable(&b.finish(), RaftPos { term: 1, index: 1 }).unwrap();
//! assert_eq!((at.base_offset, at.next_offset), (0, 1));
//! let read = log.read(0, 1 << 20, log.log_end_offset()).unwrap();
//! assert_eq!(read.next_offset, 1);
//! ```

mod config;
mod disk;
mod error;
mod handle;
mod index;
mod log;
mod raft_state;
mod recovery_point;
mod segment;

pub use config::{
    FlushPolicy, FsyncObserver, LogConfig, INDEX_INTERVAL_BYTES_DEFAULT, INDEX_INTERVAL_BYTES_MIN,
    SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SEGMENT_MS_DEFAULT,
};
pub use disk::{disk_space, DiskSpace};
pub use error::{Error, Result};
pub use log::{
    Appended, CompactionConfig, CompactionReport, Damage, DeletedSegment, Dirtiness, Log, RaftPos,
    ReadResult, ScrubReport, COMPACTION_KEY_MAP_BYTES_DEFAULT, DELETE_RETENTION_MS_DEFAULT,
    KEY_MAP_ENTRY_BYTES, REPAIR_RANGE_BYTES_MAX,
};
pub use raft_state::{RaftState, RaftStateFile};

#[cfg(test)]
mod tests;
