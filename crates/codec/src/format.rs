//! Every byte layout Fjord puts on disk or on the wire, in one place.
//!
//! `storage-format.md` at the repository root is the authoritative
//! description; each group of constants below names the section it mirrors.
//! Offsets are derived from one another and sizes are pinned with `const`
//! assertions, so a change here that the document does not also get fails to
//! compile or shows up in review as a changed section. All integers are
//! little-endian.

// ---------------------------------------------------------------------------
// storage-format.md §2 "Record batch"
// ---------------------------------------------------------------------------

/// Magic (format version) of a record batch; §2.
pub const BATCH_MAGIC: u8 = 1;

/// `u32` CRC-32 (IEEE polynomial, as computed by `crc32fast`) of bytes
/// `[CRC_START, batch_len)`: everything after this field, the broker-stamped
/// fields included, so no bit of a stored batch goes unchecked; §2.
pub const CRC_AT: usize = 0;
/// First byte covered by the CRC.
pub const CRC_START: usize = CRC_AT + 4;
/// `u32` total length of the batch in bytes, header included; §2.
pub const BATCH_LEN_AT: usize = CRC_START;
/// `u64` base offset: offset of the first record. Set by the broker; §2.
pub const BASE_OFFSET_AT: usize = BATCH_LEN_AT + 4;
/// `u64` Raft term of the entry that wrote the batch. Set by the broker; §2.
pub const RAFT_TERM_AT: usize = BASE_OFFSET_AT + 8;
/// `u64` Raft index of the entry that wrote the batch. Set by the broker; §2.
pub const RAFT_INDEX_AT: usize = RAFT_TERM_AT + 8;
/// End of the fields the broker stamps (`[BASE_OFFSET_AT, STAMP_END)`); the
/// producer's part starts here and is never rewritten.
pub const STAMP_END: usize = RAFT_INDEX_AT + 8;
/// `u8` magic; §2.
pub const MAGIC_AT: usize = STAMP_END;
/// `u8` reserved, must be 0; §2.
pub const RESERVED_AT: usize = MAGIC_AT + 1;
/// `u16` attributes (compression codec, control flag); §2.
pub const ATTRIBUTES_AT: usize = RESERVED_AT + 1;
/// `u32` number of records; every batch holds at least one; §2.
pub const RECORD_COUNT_AT: usize = ATTRIBUTES_AT + 2;
/// `i64` timestamp of the first record, ms since the Unix epoch; §2.
pub const FIRST_TIMESTAMP_AT: usize = RECORD_COUNT_AT + 4;
/// `i64` largest record timestamp in the batch; §2.
pub const MAX_TIMESTAMP_AT: usize = FIRST_TIMESTAMP_AT + 8;
/// `i64` producer id, -1 when the producer is not idempotent; §2.
pub const PRODUCER_ID_AT: usize = MAX_TIMESTAMP_AT + 8;
/// `i16` producer epoch, -1 when not idempotent; §2.
pub const PRODUCER_EPOCH_AT: usize = PRODUCER_ID_AT + 8;
/// `u16` reserved, must be 0; §2.
pub const RESERVED2_AT: usize = PRODUCER_EPOCH_AT + 2;
/// `i32` sequence number of the first record, -1 when not idempotent; §2.
pub const BASE_SEQUENCE_AT: usize = RESERVED2_AT + 2;
/// Length of the fixed batch header; records start here; §2.
pub const BATCH_HEADER_LEN: usize = BASE_SEQUENCE_AT + 4;
const _: () = assert!(BATCH_HEADER_LEN == 72);

/// Attribute bits 0–2: compression codec of the records region; §2.1.
pub const ATTR_COMPRESSION_MASK: u16 = 0b0111;
/// Compression codec value: records are stored as they are.
pub const COMPRESSION_NONE: u16 = 0;
/// Compression codec value: the records region is one LZ4 block (§2.3).
pub const COMPRESSION_LZ4: u16 = 1;
/// Compression codec value: the records region is one zstd frame (§2.3).
pub const COMPRESSION_ZSTD: u16 = 2;
/// `u32` length of the records region once decompressed, first in a
/// compressed batch's records region; §2.3.
pub const COMPRESSED_LEN_AT: usize = BATCH_HEADER_LEN;
/// Start of the compressed block; §2.3.
pub const COMPRESSED_DATA_AT: usize = COMPRESSED_LEN_AT + 4;
/// Largest decompressed records region: what an uncompressed batch of the
/// largest size could hold. Checked before anything is allocated.
pub const RECORDS_LEN_MAX: usize = BATCH_LEN_MAX - BATCH_HEADER_LEN;
/// Attribute bit 3: a control batch (Raft no-op, configuration change); §2.1.
pub const ATTR_CONTROL: u16 = 1 << 3;
/// Attribute bit 4: a batch the compactor rewrote on this replica, holding
/// only the records that survived; it still covers `record_count` offsets; §2.5.
pub const ATTR_COMPACTED: u16 = 1 << 4;
/// Attribute bits this version defines; any other set bit is rejected.
pub const ATTR_KNOWN: u16 = ATTR_COMPRESSION_MASK | ATTR_CONTROL | ATTR_COMPACTED;

/// Largest batch the format allows, header included: 64 MiB.
///
/// Every batch length read from disk or the wire is checked against this
/// before it is used. It must stay well below `u32::MAX` because segment
/// positions are `u32` (§4) and a segment always holds at least one batch.
pub const BATCH_LEN_MAX: usize = 64 * 1024 * 1024;
const _: () = assert!(BATCH_LEN_MAX < u32::MAX as usize / 4);

// ---------------------------------------------------------------------------
// storage-format.md §3 "Record"
// ---------------------------------------------------------------------------

/// `u32` length of the record after this field; §3.
pub const RECORD_LEN_AT: usize = 0;
/// `u32` offset of the record relative to the batch base offset; §3.
pub const RECORD_OFFSET_DELTA_AT: usize = RECORD_LEN_AT + 4;
/// `i64` record timestamp minus the batch first timestamp, ms; §3.
pub const RECORD_TIMESTAMP_DELTA_AT: usize = RECORD_OFFSET_DELTA_AT + 4;
/// `i32` key length, -1 for no key; §3.
pub const RECORD_KEY_LEN_AT: usize = RECORD_TIMESTAMP_DELTA_AT + 8;
/// Fixed bytes of a record before its key; §3.
pub const RECORD_PREFIX_LEN: usize = RECORD_KEY_LEN_AT + 4;
/// Smallest possible record: prefix, `i32` value length, `u32` header count.
pub const RECORD_LEN_MIN: usize = RECORD_PREFIX_LEN + 4 + 4;
const _: () = assert!(RECORD_LEN_MIN == 28);
/// Fixed bytes of one record header: `u16` key length and `i32` value length; §3.
pub const RECORD_HEADER_FIXED_LEN: usize = 2 + 4;
/// Longest record-header key (UTF-8 bytes); the `u16` length field's range.
pub const HEADER_KEY_LEN_MAX: usize = u16::MAX as usize;
/// Most records one batch may hold: as many minimal records as fit.
pub const RECORD_COUNT_MAX: usize = (BATCH_LEN_MAX - BATCH_HEADER_LEN) / RECORD_LEN_MIN;

/// Key of the single record in a control batch that marks a Raft leader no-op; §2.2.
pub const CONTROL_NOOP: u16 = 0;
/// Key of the single record in a control batch carrying a Raft configuration change; §2.2.
pub const CONTROL_CONF_CHANGE: u16 = 1;

// ---------------------------------------------------------------------------
// storage-format.md §4 "Segment files"
// ---------------------------------------------------------------------------

/// Digits of the zero-padded base offset in segment file names; §4.
pub const SEGMENT_NAME_DIGITS: usize = 20;
/// Extension of a segment's log file; §4.
pub const LOG_SUFFIX: &str = "log";
/// Extension of a segment's offset index; §5.
pub const OFFSET_INDEX_SUFFIX: &str = "index";
/// Extension of a segment's time index; §6.
pub const TIME_INDEX_SUFFIX: &str = "timeindex";

// ---------------------------------------------------------------------------
// storage-format.md §5 "Offset index"
// ---------------------------------------------------------------------------

/// `u32` offset relative to the segment base offset; §5.
pub const OFFSET_ENTRY_REL_OFFSET_AT: usize = 0;
/// `u32` byte position of the batch in the log file; §5.
pub const OFFSET_ENTRY_POSITION_AT: usize = OFFSET_ENTRY_REL_OFFSET_AT + 4;
/// `u64` Raft index of the batch; §5.
pub const OFFSET_ENTRY_RAFT_INDEX_AT: usize = OFFSET_ENTRY_POSITION_AT + 4;
/// Bytes per offset-index entry; §5.
pub const OFFSET_INDEX_ENTRY_LEN: usize = OFFSET_ENTRY_RAFT_INDEX_AT + 8;
const _: () = assert!(OFFSET_INDEX_ENTRY_LEN == 16);

// ---------------------------------------------------------------------------
// storage-format.md §6 "Time index"
// ---------------------------------------------------------------------------

/// `i64` largest timestamp in the segment up to and including the batch; §6.
pub const TIME_ENTRY_TIMESTAMP_AT: usize = 0;
/// `u32` base offset of that batch, relative to the segment base offset; §6.
pub const TIME_ENTRY_REL_OFFSET_AT: usize = TIME_ENTRY_TIMESTAMP_AT + 8;
/// Bytes per time-index entry; §6.
pub const TIME_INDEX_ENTRY_LEN: usize = TIME_ENTRY_REL_OFFSET_AT + 4;
const _: () = assert!(TIME_INDEX_ENTRY_LEN == 12);

// ---------------------------------------------------------------------------
// storage-format.md §7 "Raft state file"
// ---------------------------------------------------------------------------

/// File name of a partition's Raft hard state; §7.
pub const RAFT_STATE_FILE: &str = "raft-state";
/// Temporary name it is first written under before the atomic rename; §7.
pub const RAFT_STATE_TMP_FILE: &str = "raft-state.tmp";
/// `u32` magic, the ASCII bytes "FJRS"; §7.
pub const RAFT_STATE_MAGIC: u32 = u32::from_le_bytes(*b"FJRS");
/// Version of the Raft state layout: two slots written in place; §7.
pub const RAFT_STATE_VERSION: u16 = 2;
/// Version 1: one record, replaced whole by a rename; still read; §7.
pub const RAFT_STATE_VERSION_1: u16 = 1;
/// `u32` magic; §7.
pub const RS_MAGIC_AT: usize = 0;
/// `u16` version; §7.
pub const RS_VERSION_AT: usize = RS_MAGIC_AT + 4;
/// `u16` reserved, 0; §7.
pub const RS_RESERVED_AT: usize = RS_VERSION_AT + 2;
/// `u64` sequence number of the write: the slot with the higher one is current; §7.
pub const RS_SEQUENCE_AT: usize = RS_RESERVED_AT + 2;
/// `u64` current term; §7.
pub const RS_TERM_AT: usize = RS_SEQUENCE_AT + 8;
/// `u64` vote (node id, 0 for none); §7.
pub const RS_VOTE_AT: usize = RS_TERM_AT + 8;
/// `u64` commit index; §7.
pub const RS_COMMIT_AT: usize = RS_VOTE_AT + 8;
/// `u64` applied index; §7.
pub const RS_APPLIED_AT: usize = RS_COMMIT_AT + 8;
/// `u64` index of the last entry covered by a snapshot (the log starts after it); §7.
pub const RS_SNAPSHOT_INDEX_AT: usize = RS_APPLIED_AT + 8;
/// `u64` term of that entry; §7.
pub const RS_SNAPSHOT_TERM_AT: usize = RS_SNAPSHOT_INDEX_AT + 8;
/// `u32` CRC-32 of bytes `[0, RS_CRC_AT)` of the slot; §7.
pub const RS_CRC_AT: usize = RS_SNAPSHOT_TERM_AT + 8;
/// Length of one slot's record; §7.
pub const RAFT_STATE_LEN: usize = RS_CRC_AT + 4;
const _: () = assert!(RAFT_STATE_LEN == 68);
/// Distance between the slots, so that each lies in its own 512-byte
/// sector and a torn write of one cannot touch the other; §7.
pub const RAFT_STATE_SLOT_BYTES: usize = 512;
/// Slots in the file; the write with sequence `s` goes to slot `s % 2`; §7.
pub const RAFT_STATE_SLOTS: usize = 2;
/// Length of the (version 2) file; §7.
pub const RAFT_STATE_FILE_LEN: usize = RAFT_STATE_SLOT_BYTES * RAFT_STATE_SLOTS;
/// Length of a version 1 file: the same fields without the sequence, each
/// 8 bytes earlier, the CRC at 56; §7.
pub const RAFT_STATE_V1_LEN: usize = RAFT_STATE_LEN - 8;

// ---------------------------------------------------------------------------
// storage-format.md §8 "Recovery point file"
// ---------------------------------------------------------------------------

/// File name of a partition's recovery point; §8.
pub const RECOVERY_POINT_FILE: &str = "recovery-point";
/// `u32` magic, the ASCII bytes "FJRP"; §8.
pub const RECOVERY_POINT_MAGIC: u32 = u32::from_le_bytes(*b"FJRP");
/// `u32` magic; §8.
pub const RP_MAGIC_AT: usize = 0;
/// `u32` CRC-32 of bytes `[RP_SEGMENT_AT, RECOVERY_POINT_LEN)`; §8.
pub const RP_CRC_AT: usize = RP_MAGIC_AT + 4;
/// `u64` base offset of the segment the position belongs to; §8.
pub const RP_SEGMENT_AT: usize = RP_CRC_AT + 4;
/// `u64` byte position in that segment's log file below which everything was fsynced; §8.
pub const RP_POSITION_AT: usize = RP_SEGMENT_AT + 8;
/// Total length of the recovery point file; §8.
pub const RECOVERY_POINT_LEN: usize = RP_POSITION_AT + 8;
const _: () = assert!(RECOVERY_POINT_LEN == 24);
