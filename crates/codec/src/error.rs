//! Errors of the batch codec. Every one of them means the bytes are not a
//! well-formed batch; none of them is a bug in Fjord.

/// Why a byte string is not a valid record batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Fewer bytes than the structure being read needs.
    #[error("truncated batch: needed {needed} bytes, have {have}")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        have: usize,
    },
    /// The batch length field is smaller than a header or above the format limit.
    #[error("batch length {len} is outside {min}..={max} bytes")]
    BadLength {
        /// The length found.
        len: u64,
        /// Smallest valid length (a header with no records).
        min: u64,
        /// `format::BATCH_LEN_MAX`, or the caller's smaller limit.
        max: u64,
    },
    /// The magic byte is not one this version reads.
    #[error("unsupported batch magic {found} (expected {expected})")]
    BadMagic {
        /// Found.
        found: u8,
        /// Expected (`format::BATCH_MAGIC`).
        expected: u8,
    },
    /// The CRC stored in the header does not match the bytes.
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// The CRC in the header.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// Attribute bits or reserved fields that this version does not define.
    #[error("invalid batch header: {0}")]
    BadHeader(&'static str),
    /// A record inside the batch is malformed.
    #[error("record {index} of the batch is malformed: {reason}")]
    BadRecord {
        /// Position of the record within the batch, from 0.
        index: u32,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A batch being built would exceed a limit.
    #[error("{what} of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// What is too large ("batch", "key", "header key", ...).
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
