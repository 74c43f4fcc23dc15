//! Records inside a batch (`storage-format.md` §3) and the iterator that
//! yields them as zero-copy slices of the batch.

use std::ops::Range;

use bytes::Bytes;

use crate::batch::{i64_at, u16_at, u32_at, BatchHeader};
use crate::format::*;
use crate::{Error, Result};

/// Byte ranges of one record within its batch, after bounds checking.
pub(crate) struct RecordLayout {
    pub(crate) offset_delta: u32,
    pub(crate) timestamp_delta: i64,
    pub(crate) key: Option<Range<usize>>,
    pub(crate) value: Option<Range<usize>>,
    pub(crate) header_count: u32,
    pub(crate) headers: Range<usize>,
}

/// Parses the record at `pos` of `batch`, checking every length against
/// the record's own length and the record's length against the batch, and
/// returns it with the position of the next record.
pub(crate) fn parse_record(batch: &[u8], pos: usize, index: u32) -> Result<(RecordLayout, usize)> {
    let bad = |reason| Error::BadRecord { index, reason };
    if batch.len() < pos + RECORD_LEN_MIN {
        return Err(bad("record runs past the end of the batch"));
    }
    let len = u32_at(batch, pos + RECORD_LEN_AT) as usize;
    if len < RECORD_LEN_MIN - 4 || len > batch.len() - pos - 4 {
        return Err(bad("record length is out of bounds"));
    }
    let end = pos + 4 + len;
    let offset_delta = u32_at(batch, pos + RECORD_OFFSET_DELTA_AT);
    let timestamp_delta = i64_at(batch, pos + RECORD_TIMESTAMP_DELTA_AT);
    let mut at = pos + RECORD_KEY_LEN_AT;
    let key = take_opt(batch, &mut at, end).ok_or_else(|| bad("key length is out of bounds"))?;
    let value = take_opt(batch, &mut at, end).ok_or_else(|| bad("value length is out of bounds"))?;
    if at + 4 > end {
        return Err(bad("header count runs past the record"));
    }
    let header_count = u32_at(batch, at);
    at += 4;
    let headers_start = at;
    if header_count as usize > (end - at) / RECORD_HEADER_FIXED_LEN {
        return Err(bad("header count does not fit the record"));
    }
    for _ in 0..header_count {
        if at + 2 > end {
            return Err(bad("header runs past the record"));
        }
        let klen = u16_at(batch, at) as usize;
        at += 2;
        if at + klen > end {
            return Err(bad("header key runs past the record"));
        }
        std::str::from_utf8(&batch[at..at + klen]).map_err(|_| bad("header key is not UTF-8"))?;
        at += klen;
        take_opt(batch, &mut at, end).ok_or_else(|| bad("header value length is out of bounds"))?;
    }
    if at != end {
        return Err(bad("record length does not match its fields"));
    }
    let layout =
        RecordLayout { offset_delta, timestamp_delta, key, value, header_count, headers: headers_start..end };
    Ok((layout, end))
}

/// Reads an `i32`-length-prefixed optional byte string at `*at`, which must end by `end`.
fn take_opt(b: &[u8], at: &mut usize, end: usize) -> Option<Option<Range<usize>>> {
    if *at + 4 > end {
        return None;
    }
    let len = u32_at(b, *at) as i32;
    *at += 4;
    if len == -1 {
        return Some(None);
    }
    let len = usize::try_from(len).ok()?;
    if len > end - *at {
        return None;
    }
    let r = *at..*at + len;
    *at += len;
    Some(Some(r))
}

/// One record header: a UTF-8 key and an optional value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header key.
    pub key: String,
    /// Header value; `None` is distinct from empty.
    pub value: Option<Bytes>,
}

/// One record, its key and value sharing the batch's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Offset of the record in its partition.
    pub offset: u64,
    /// Timestamp, ms since the Unix epoch.
    pub timestamp: i64,
    /// Key, if any.
    pub key: Option<Bytes>,
    /// Value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers in the order the producer gave them.
    pub headers: Vec<Header>,
}

/// Iterator over the records of one batch; see [`records`].
#[derive(Debug)]
pub struct RecordIter {
    /// The batch's records region, decompressed if it was compressed.
    batch: Bytes,
    header: BatchHeader,
    pos: usize,
    index: u32,
    failed: bool,
}

/// Iterates over the records of the batch at the start of `batch`.
///
/// The header is checked first; each record is bounds-checked as it is
/// reached, and the first malformed one ends the iteration with an error.
/// The CRC is not checked here: call [`crate::verify_crc`] when the bytes
/// come from an untrusted place. A compressed batch is decompressed first
/// (its declared size bounded by `RECORDS_LEN_MAX`).
///
/// # Errors
/// A header error, or [`Error::Truncated`] if `batch` is shorter than the
/// batch length it declares.
pub fn records(batch: &Bytes) -> Result<RecordIter> {
    let header = BatchHeader::parse(batch)?;
    let len = header.batch_len as usize;
    if batch.len() < len {
        return Err(Error::Truncated { needed: len, have: batch.len() });
    }
    let region = crate::compression::records_bytes(&batch.slice(..len), &header)?;
    Ok(RecordIter { batch: region, header, pos: 0, index: 0, failed: false })
}

impl RecordIter {
    /// The header of the batch being iterated.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }
}

impl Iterator for RecordIter {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.index >= self.header.record_count {
            return None;
        }
        let parsed = parse_record(&self.batch, self.pos, self.index);
        let (rec, next) = match parsed {
            Ok(p) => p,
            Err(e) => {
                self.failed = true;
                return Some(Err(e));
            }
        };
        self.pos = next;
        self.index += 1;
        let slice = |r: Option<Range<usize>>| r.map(|r| self.batch.slice(r));
        let mut headers = Vec::with_capacity(rec.header_count as usize);
        let mut at = rec.headers.start;
        for _ in 0..rec.header_count {
            // Bounds and UTF-8 were checked by `parse_record`.
            let klen = u16_at(&self.batch, at) as usize;
            let key = String::from_utf8_lossy(&self.batch[at + 2..at + 2 + klen]).into_owned();
            at += 2 + klen;
            let value = take_opt(&self.batch, &mut at, rec.headers.end).expect("checked by parse_record");
            headers.push(Header { key, value: slice(value) });
        }
        Some(Ok(Record {
            offset: self.header.base_offset + rec.offset_delta as u64,
            timestamp: self.header.first_timestamp.wrapping_add(rec.timestamp_delta),
            key: slice(rec.key),
            value: slice(rec.value),
            headers,
        }))
    }
}
