//! Rewriting a batch with only some of its records: what log compaction
//! does to each batch of a closed segment (`storage-format.md` §2.5).
//!
//! Surviving records are copied as they are (their offset and timestamp
//! deltas are relative to header fields that are kept), so offsets never
//! change and a batch can be compacted again. The header keeps everything
//! but `batch_len`, the attributes (the compacted bit, and the codec when
//! nothing is left to compress) and the CRC, which is computed here over
//! bytes built from records whose batch was checked first: this is the one
//! place besides a producer that makes a new batch.

use bytes::Bytes;

use crate::batch::BatchHeader;
use crate::compression::{compress, records_region, Compression};
use crate::format::*;
use crate::record::parse_record;
use crate::{verify_crc, Error, Result};

/// What the compactor sees of a record when deciding whether it survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordKey<'a> {
    /// Offset of the record.
    pub offset: u64,
    /// Timestamp, ms since the Unix epoch.
    pub timestamp: i64,
    /// Key; compaction keeps the last record of each key.
    pub key: Option<&'a [u8]>,
    /// Whether the value is null: a delete marker for its key.
    pub tombstone: bool,
}

/// Calls `f` for each record of `batch` (its CRC checked first).
///
/// # Errors
/// A malformed batch or a CRC mismatch.
pub fn for_each_record_key(batch: &[u8], f: impl FnMut(RecordKey<'_>)) -> Result<BatchHeader> {
    let header = BatchHeader::parse(batch)?;
    verify_crc(batch, &header)?;
    record_keys_of_valid(batch, &header, f)?;
    Ok(header)
}

/// [`for_each_record_key`] for a batch [`crate::validate_batch`] already
/// accepted with `header`: neither the header nor the CRC is checked again.
///
/// # Errors
/// A compressed region that does not decode (never for a validated batch).
pub fn record_keys_of_valid(
    batch: &[u8],
    header: &BatchHeader,
    mut f: impl FnMut(RecordKey<'_>),
) -> Result<()> {
    let region = records_region(batch, header)?;
    walk(&region, header, |k, _| f(k))
}

/// Walks the records of a records region, giving each one's key and byte range.
fn walk(
    region: &[u8],
    header: &BatchHeader,
    mut f: impl FnMut(RecordKey<'_>, std::ops::Range<usize>),
) -> Result<()> {
    let mut pos = 0;
    let mut index = 0u32;
    while pos < region.len() && (header.is_compacted() || index < header.record_count) {
        let (rec, next) = parse_record(region, pos, index)?;
        let key = RecordKey {
            offset: header.base_offset + rec.offset_delta as u64,
            timestamp: header.first_timestamp.wrapping_add(rec.timestamp_delta),
            key: rec.key.map(|r| &region[r]),
            tombstone: rec.value.is_none(),
        };
        f(key, pos..next);
        pos = next;
        index += 1;
    }
    Ok(())
}

/// `batch` with only the records `keep` accepts, marked compacted; `None`
/// when `keep` accepts every record (the batch stays as it is) or the
/// batch is a control batch (never compacted). A batch may lose every
/// record: it then holds none but still covers its offsets.
///
/// # Errors
/// A malformed batch or a CRC mismatch: nothing is built from bytes that
/// do not check.
pub fn compact_batch(batch: &[u8], mut keep: impl FnMut(RecordKey<'_>) -> bool) -> Result<Option<Bytes>> {
    let header = BatchHeader::parse(batch)?;
    verify_crc(batch, &header)?;
    if header.is_control() {
        return Ok(None);
    }
    let region = records_region(batch, &header)?;
    let mut kept = Vec::with_capacity(region.len());
    let (mut all, mut any) = (true, false);
    walk(&region, &header, |k, range| {
        if keep(k) {
            kept.extend_from_slice(&region[range]);
            any = true;
        } else {
            all = false;
        }
    })?;
    if all {
        return Ok(None);
    }
    let codec = Compression::from_attributes(header.attributes)?;
    let packed = match codec {
        Compression::None => None,
        _ if !any => None,
        _ => compress(codec, &kept).filter(|p| p.len() < kept.len()),
    };
    let (codec, body) = match &packed {
        Some(p) => (codec, p.as_slice()),
        None => (Compression::None, kept.as_slice()),
    };
    // `compress` gives the region whole: length prefix, then the block.
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + body.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_LEN]);
    out.extend_from_slice(body);
    let len = u32::try_from(out.len()).map_err(|_| Error::BadHeader("compacted batch is too long"))?;
    out[BATCH_LEN_AT..BATCH_LEN_AT + 4].copy_from_slice(&len.to_le_bytes());
    let attributes = (header.attributes & !ATTR_COMPRESSION_MASK) | codec.attribute() | ATTR_COMPACTED;
    out[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_le_bytes());
    let crc = crc32fast::hash(&out[CRC_START..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(Some(Bytes::from(out)))
}
