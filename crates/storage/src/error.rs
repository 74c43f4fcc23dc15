//! Errors of the storage engine.

use std::path::PathBuf;

/// What went wrong in a partition log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("open", "write", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An I/O call failed because the filesystem is full (`ENOSPC`, or
    /// `EDQUOT` for a quota). Unlike other I/O failures it never poisons
    /// the log: whatever was partly written is cut off, so the log is as
    /// it was before the call and takes writes again once space is freed.
    #[error("{op} {path}: {source}")]
    NoSpace {
        /// What was being done ("write", "fdatasync", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A read or lookup below the log start or above the log end.
    #[error("offset {offset} is out of range: the log holds [{log_start}, {log_end})")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: u64,
        /// First offset still in the log.
        log_start: u64,
        /// Offset the next record will get.
        log_end: u64,
    },
    /// An earlier fsync failed, so what is on disk is unknown; the log accepts no more writes.
    #[error("partition log {dir} is poisoned and accepts no writes: {reason}")]
    Poisoned {
        /// The partition directory.
        dir: PathBuf,
        /// The failure that poisoned it.
        reason: String,
    },
    /// A batch handed to `append` is malformed.
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] fjord_codec::Error),
    /// The Raft position given to `append` does not follow the log.
    #[error("raft entry ({term}, {index}) does not follow the log's last entry ({last_term}, {last_index})")]
    RaftOrder {
        /// Term given.
        term: u64,
        /// Index given.
        index: u64,
        /// Term of the last entry in the log.
        last_term: u64,
        /// Index the next entry must have minus one.
        last_index: u64,
    },
    /// `truncate_suffix` was asked to cut inside a batch or below the log start.
    #[error("cannot truncate at offset {offset}: {reason}")]
    BadTruncation {
        /// The offset given.
        offset: u64,
        /// Why it is not allowed.
        reason: &'static str,
    },
    /// A range of a closed segment failed a scrub's checks (bit rot): it is
    /// not served until repaired from another replica.
    #[error(
        "offsets [{start_offset}, {end_offset}) of partition log {dir} are damaged on this replica and are not \
         served until repaired from another replica ({reason})"
    )]
    Damaged {
        /// The partition directory.
        dir: PathBuf,
        /// First damaged offset.
        start_offset: u64,
        /// The offset after the damaged range.
        end_offset: u64,
        /// What failed.
        reason: String,
    },
    /// A repair's copy does not fit the damaged range, or the range is no
    /// longer damaged; nothing was written.
    #[error("repair refused: {0}")]
    RepairRefused(String),
    /// A configuration value is out of its range.
    #[error("invalid storage config: {0}")]
    Config(String),
    /// A file on disk is damaged beyond what recovery may repair silently
    /// (anything but the tail of a segment, or the Raft state file).
    #[error("corrupt {path}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Whether the failure is a full filesystem (see [`Error::NoSpace`]).
    pub fn is_no_space(&self) -> bool {
        matches!(self, Error::NoSpace { .. })
    }
}

/// Wraps an `io::Error` with the operation and path, for `map_err`; a full
/// filesystem becomes [`Error::NoSpace`].
pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| match source.raw_os_error() {
        Some(code)
            if code == rustix::io::Errno::NOSPC.raw_os_error()
                || code == rustix::io::Errno::DQUOT.raw_os_error() =>
        {
            Error::NoSpace { op, path, source }
        }
        _ => Error::Io { op, path, source },
    }
}
