//! Records inside a batch (`storage-format.md` §3) and the iterator that
//! yields them as zero-copy slices of the batch.

use std::ops::Range;

use bytes::Bytes;

use crate::batch::BatchHeader;
use crate::format::*;
use crate::le;
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
    let len =
        le::u32(batch, pos + RECORD_LEN_AT).ok_or(bad("record runs past the end of the batch"))? as usize;
    if len < RECORD_LEN_MIN - 4 || len > batch.len() - pos - 4 {
        return Err(bad("record length is out of bounds"));
    }
    let end = pos + 4 + len;
    // Every read below is bounded by the record's own end.
    let mut r = le::Reader::new(&batch[..end], pos + RECORD_OFFSET_DELTA_AT);
    let offset_delta = r.u32().ok_or(bad("record runs past its length"))?;
    let timestamp_delta = r.i64().ok_or(bad("record runs past its length"))?;
    let key = take_opt(&mut r).ok_or(bad("key length is out of bounds"))?;
    let value = take_opt(&mut r).ok_or(bad("value length is out of bounds"))?;
    let header_count = r.u32().ok_or(bad("header count runs past the record"))?;
    let headers_start = r.pos();
    if header_count as usize > r.remaining() / RECORD_HEADER_FIXED_LEN {
        return Err(bad("header count does not fit the record"));
    }
    for _ in 0..header_count {
        let klen = r.u16().ok_or(bad("header runs past the record"))? as usize;
        let key = r.take(klen).ok_or(bad("header key runs past the record"))?;
        std::str::from_utf8(key).map_err(|_| bad("header key is not UTF-8"))?;
        take_opt(&mut r).ok_or(bad("header value length is out of bounds"))?;
    }
    if r.remaining() != 0 {
        return Err(bad("record length does not match its fields"));
    }
    let layout =
        RecordLayout { offset_delta, timestamp_delta, key, value, header_count, headers: headers_start..end };
    Ok((layout, end))
}

/// Reads an `i32`-length-prefixed optional byte string (-1 is `None`) and
/// returns its range, or `None` if the length is negative otherwise or
/// runs past the reader's end.
fn take_opt(r: &mut le::Reader<'_>) -> Option<Option<Range<usize>>> {
    let mut peek = r.clone();
    let len = peek.i32()?;
    if len == -1 {
        *r = peek;
        return Some(None);
    }
    let start = peek.pos();
    peek.take(usize::try_from(len).ok()?)?;
    let range = start..peek.pos();
    *r = peek;
    Some(Some(range))
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
        // A compacted batch holds fewer records than the offsets it covers:
        // its records end with its region (§2.5).
        let done = if self.header.is_compacted() {
            self.pos >= self.batch.len()
        } else {
            self.index >= self.header.record_count
        };
        if self.failed || done {
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
        // Bounds and UTF-8 were checked by `parse_record`; a read that
        // still fails ends the headers rather than panicking.
        let mut r = le::Reader::new(&self.batch[..rec.headers.end], rec.headers.start);
        for _ in 0..rec.header_count {
            let Some(key) = r.u16().and_then(|klen| r.take(klen as usize)) else { break };
            let key = String::from_utf8_lossy(key).into_owned();
            let Some(value) = take_opt(&mut r) else { break };
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
