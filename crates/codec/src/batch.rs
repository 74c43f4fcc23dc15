//! The record-batch header, its validation, and the builder producers use.
//!
//! Layout: `storage-format.md` §2, constants in [`crate::format`].

use bytes::{BufMut, Bytes, BytesMut};

use crate::compression::{compress, records_region, Compression};
use crate::format::*;
use crate::le::Fixed;
use crate::record::{parse_record, RecordLayout};
use crate::{Error, Result};

/// Offsets are kept below 2^62 so that `base_offset + record_count` and any
/// signed conversion a client makes can never overflow.
const OFFSET_MAX: u64 = 1 << 62;

/// The sequence number `count` records after `seq`: producer sequences
/// wrap from `i32::MAX` to 0, as Kafka's do (`storage-format.md` §2.4).
pub fn sequence_add(seq: i32, count: u32) -> i32 {
    ((seq as i64 + count as i64) % (i32::MAX as i64 + 1)) as i32
}

/// The fixed header of a record batch, decoded (`storage-format.md` §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Raft term of the entry that wrote the batch (0 before the broker stamps it).
    pub raft_term: u64,
    /// Raft index of the entry that wrote the batch (0 before the broker stamps it).
    pub raft_index: u64,
    /// Total length in bytes, header included.
    pub batch_len: u32,
    /// CRC-32 of bytes `[CRC_START, batch_len)`.
    pub crc: u32,
    /// Attribute bits (§2.1).
    pub attributes: u16,
    /// Number of records; at least 1.
    pub record_count: u32,
    /// Timestamp of the first record, ms since the Unix epoch.
    pub first_timestamp: i64,
    /// Largest record timestamp.
    pub max_timestamp: i64,
    /// Producer id, -1 when not idempotent.
    pub producer_id: i64,
    /// Producer epoch, -1 when not idempotent.
    pub producer_epoch: i16,
    /// Sequence of the first record, -1 when not idempotent.
    pub base_sequence: i32,
}

impl BatchHeader {
    /// Decodes and checks the header at the start of `buf`.
    ///
    /// Checks everything that can be checked without the records: the length
    /// against [`BATCH_LEN_MAX`] and the minimum, magic, reserved fields,
    /// attribute bits, and the record count against the length. It does not
    /// check the CRC ([`verify_crc`]) nor that `buf` holds the whole batch.
    ///
    /// # Errors
    /// [`Error::Truncated`] when `buf` is shorter than a header, otherwise the
    /// error naming the first field that is wrong.
    pub fn parse(buf: &[u8]) -> Result<Self> {
        let h = Fixed::<BATCH_HEADER_LEN>::prefix(buf)
            .ok_or(Error::Truncated { needed: BATCH_HEADER_LEN, have: buf.len() })?;
        let batch_len = h.u32::<BATCH_LEN_AT>();
        let compacted = h.u16::<ATTRIBUTES_AT>() & ATTR_COMPACTED != 0;
        // The smallest region: a compressed one (length prefix and one byte of
        // block); an uncompressed one is held to whole records below. A
        // compacted batch may have lost every record (§2.5).
        let min = if compacted { BATCH_HEADER_LEN as u64 } else { (COMPRESSED_DATA_AT + 1) as u64 };
        if (batch_len as u64) < min || batch_len as usize > BATCH_LEN_MAX {
            return Err(Error::BadLength { len: batch_len as u64, min, max: BATCH_LEN_MAX as u64 });
        }
        let magic = h.0[MAGIC_AT];
        if magic != BATCH_MAGIC {
            return Err(Error::BadMagic { found: magic, expected: BATCH_MAGIC });
        }
        if h.0[RESERVED_AT] != 0 || h.u16::<RESERVED2_AT>() != 0 {
            return Err(Error::BadHeader("reserved header bytes are not zero"));
        }
        let header = BatchHeader {
            base_offset: h.u64::<BASE_OFFSET_AT>(),
            raft_term: h.u64::<RAFT_TERM_AT>(),
            raft_index: h.u64::<RAFT_INDEX_AT>(),
            batch_len,
            crc: h.u32::<CRC_AT>(),
            attributes: h.u16::<ATTRIBUTES_AT>(),
            record_count: h.u32::<RECORD_COUNT_AT>(),
            first_timestamp: h.i64::<FIRST_TIMESTAMP_AT>(),
            max_timestamp: h.i64::<MAX_TIMESTAMP_AT>(),
            producer_id: h.i64::<PRODUCER_ID_AT>(),
            producer_epoch: h.i16::<PRODUCER_EPOCH_AT>(),
            base_sequence: h.i32::<BASE_SEQUENCE_AT>(),
        };
        if header.attributes & !ATTR_KNOWN != 0 {
            return Err(Error::BadHeader("unknown attribute bits are set"));
        }
        let compression = Compression::from_attributes(header.attributes)?;
        // Records must fit their region; a compressed region may hold up
        // to RECORDS_LEN_MAX once decompressed.
        let body = match compression {
            Compression::None => batch_len as usize - BATCH_HEADER_LEN,
            Compression::Lz4 | Compression::Zstd => RECORDS_LEN_MAX,
        };
        // A compacted batch's count is the offsets it covers, more than the
        // records it still holds.
        let held_max = if compacted { RECORD_COUNT_MAX } else { body / RECORD_LEN_MIN };
        if header.record_count == 0 || header.record_count as usize > held_max {
            return Err(Error::BadHeader("record count does not fit the batch length"));
        }
        if header.is_control() && header.record_count != 1 {
            return Err(Error::BadHeader("a control batch holds exactly one record"));
        }
        if header.is_control() && compacted {
            return Err(Error::BadHeader("a control batch is never compacted"));
        }
        if header.base_offset >= OFFSET_MAX {
            return Err(Error::BadHeader("base offset is out of range"));
        }
        if header.max_timestamp < header.first_timestamp {
            return Err(Error::BadHeader("max timestamp is below the first timestamp"));
        }
        Ok(header)
    }

    /// The offset after the last record of this batch.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + self.record_count as u64
    }

    /// Offset of the last record of this batch.
    pub fn last_offset(&self) -> u64 {
        self.next_offset() - 1
    }

    /// Whether this is a control batch (§2.2): Raft bookkeeping, not user records.
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Whether the compactor rewrote this batch (§2.5): it holds only the
    /// records that survived, so offsets inside it can skip, and
    /// `record_count` is the offsets it covers, not the records it holds.
    pub fn is_compacted(&self) -> bool {
        self.attributes & ATTR_COMPACTED != 0
    }
}

/// Checks the CRC of a whole batch (`batch.len()` must be its `batch_len`).
///
/// # Errors
/// [`Error::Truncated`] if `batch` is shorter than its header says,
/// [`Error::CrcMismatch`] if the bytes do not match the stored CRC.
pub fn verify_crc(batch: &[u8], header: &BatchHeader) -> Result<()> {
    let len = header.batch_len as usize;
    if batch.len() < len {
        return Err(Error::Truncated { needed: len, have: batch.len() });
    }
    let computed = crc32fast::hash(&batch[CRC_START..len]);
    if computed != header.crc {
        return Err(Error::CrcMismatch { stored: header.crc, computed });
    }
    Ok(())
}

/// Fully validates one batch as a broker must before accepting it: the
/// header, that `batch` is exactly one batch long and at most `len_max`
/// bytes, the CRC, and every record (lengths within bounds, offset deltas
/// `0..n`, timestamps consistent with the header, UTF-8 header keys).
///
/// # Errors
/// The first problem found, as an [`Error`].
pub fn validate_batch(batch: &[u8], len_max: usize) -> Result<BatchHeader> {
    let header = BatchHeader::parse(batch)?;
    let len = header.batch_len as usize;
    if len > len_max {
        return Err(Error::TooLarge { what: "batch", size: len as u64, max: len_max as u64 });
    }
    if batch.len() != len {
        return Err(Error::BadLength { len: batch.len() as u64, min: len as u64, max: len as u64 });
    }
    verify_crc(batch, &header)?;
    let region = records_region(batch, &header)?;
    if header.is_compacted() {
        validate_compacted(&region, &header)?;
        return Ok(header);
    }
    let mut pos = 0;
    let mut max_ts = i64::MIN;
    for index in 0..header.record_count {
        let (rec, next): (RecordLayout, usize) = parse_record(&region, pos, index)?;
        if rec.offset_delta != index {
            return Err(Error::BadRecord { index, reason: "offset delta is not its position" });
        }
        if index == 0 && rec.timestamp_delta != 0 {
            return Err(Error::BadRecord { index, reason: "first record's timestamp delta is not 0" });
        }
        let ts = header
            .first_timestamp
            .checked_add(rec.timestamp_delta)
            .ok_or(Error::BadRecord { index, reason: "timestamp overflows" })?;
        max_ts = max_ts.max(ts);
        if header.is_control() && rec.key.as_ref().map(|k| k.len()) != Some(2) {
            return Err(Error::BadRecord { index, reason: "control record key is not a u16" });
        }
        pos = next;
    }
    if pos != region.len() {
        return Err(Error::BadHeader("bytes follow the last record"));
    }
    if max_ts != header.max_timestamp {
        return Err(Error::BadHeader("max timestamp does not match the records"));
    }
    Ok(header)
}

/// The records of a compacted batch (§2.5): whole records filling the
/// region, offset deltas strictly increasing below `record_count`, every
/// timestamp at most the (kept) `max_timestamp`.
fn validate_compacted(region: &[u8], header: &BatchHeader) -> Result<()> {
    let mut pos = 0;
    let mut index = 0u32;
    let mut prev: Option<u32> = None;
    while pos < region.len() {
        let (rec, next) = parse_record(region, pos, index)?;
        if prev.is_some_and(|p| rec.offset_delta <= p) || rec.offset_delta >= header.record_count {
            return Err(Error::BadRecord { index, reason: "offset delta is out of order or past the batch" });
        }
        let ts = header
            .first_timestamp
            .checked_add(rec.timestamp_delta)
            .ok_or(Error::BadRecord { index, reason: "timestamp overflows" })?;
        if ts > header.max_timestamp {
            return Err(Error::BadRecord { index, reason: "timestamp is above the batch's max timestamp" });
        }
        prev = Some(rec.offset_delta);
        pos = next;
        index += 1;
    }
    Ok(())
}

/// The first [`STAMP_END`] bytes of `batch` with the broker-owned fields
/// (§2: base offset, Raft term and index) set and the CRC recomputed over
/// them and the rest of the batch, after checking that the CRC the batch
/// arrived with matches its bytes. Writing this prefix followed by
/// `batch[STAMP_END..]` stores the stamped batch without copying it.
///
/// Every hop that stores bytes it did not create (a leader appending a
/// producer's batch, a follower appending the leader's) goes through here,
/// so a CRC is only ever computed over bytes whose own CRC checked: a bit
/// flipped upstream fails here instead of being blessed with a fresh CRC.
/// The body is hashed once; crc32 combination gives both the old and the
/// new CRC from it.
///
/// # Errors
/// [`Error::Truncated`] if `batch` is shorter than its header says (or
/// than a header), [`Error::CrcMismatch`] if its bytes do not match its CRC.
pub fn verified_stamped_prefix(
    batch: &[u8],
    base_offset: u64,
    raft_term: u64,
    raft_index: u64,
) -> Result<[u8; STAMP_END]> {
    let h = Fixed::<BATCH_HEADER_LEN>::prefix(batch)
        .ok_or(Error::Truncated { needed: BATCH_HEADER_LEN, have: batch.len() })?;
    let len = h.u32::<BATCH_LEN_AT>() as usize;
    if len < BATCH_HEADER_LEN || batch.len() < len {
        return Err(Error::Truncated { needed: len.max(BATCH_HEADER_LEN), have: batch.len() });
    }
    assert!(base_offset < OFFSET_MAX, "offset {base_offset} beyond the offset space");
    let mut body = crc32fast::Hasher::new();
    body.update(&batch[STAMP_END..len]);
    let mut arrived = crc32fast::Hasher::new();
    arrived.update(&batch[CRC_START..STAMP_END]);
    arrived.combine(&body);
    let (stored, computed) = (h.u32::<CRC_AT>(), arrived.finalize());
    if stored != computed {
        return Err(Error::CrcMismatch { stored, computed });
    }
    let mut p = [0u8; STAMP_END];
    p[BATCH_LEN_AT..BATCH_LEN_AT + 4].copy_from_slice(&batch[BATCH_LEN_AT..BATCH_LEN_AT + 4]);
    p[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_le_bytes());
    p[RAFT_TERM_AT..RAFT_TERM_AT + 8].copy_from_slice(&raft_term.to_le_bytes());
    p[RAFT_INDEX_AT..RAFT_INDEX_AT + 8].copy_from_slice(&raft_index.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&p[CRC_START..]);
    h.combine(&body);
    p[CRC_AT..CRC_AT + 4].copy_from_slice(&h.finalize().to_le_bytes());
    Ok(p)
}

/// Sets the broker-owned fields of a validated batch in place and
/// recomputes its CRC; see [`stamped_prefix`].
///
/// # Panics
/// If `batch` is shorter than its header says.
pub fn stamp_batch(batch: &mut [u8], base_offset: u64, raft_term: u64, raft_index: u64) {
    let p = verified_stamped_prefix(batch, base_offset, raft_term, raft_index)
        .expect("stamp_batch is given a batch whose CRC checks");
    batch[..STAMP_END].copy_from_slice(&p);
}

/// Writes the idempotent-producer fields (§2) of a batch whose length is
/// set and recomputes its CRC: how [`BatchBuilder::finish`] ends, and how
/// a producer that gave up on an earlier batch of the partition moves the
/// batches it still holds to its new epoch and sequences, as Kafka's
/// producer does, instead of failing them too.
///
/// # Panics
/// If `batch` is shorter than its header says: only for batches this
/// process built.
pub fn restamp_producer(batch: &mut [u8], producer_id: i64, producer_epoch: i16, base_sequence: i32) {
    let len = Fixed::<BATCH_HEADER_LEN>::prefix(batch).map_or(0, |h| h.u32::<BATCH_LEN_AT>() as usize);
    assert!(len >= BATCH_HEADER_LEN && batch.len() >= len, "restamping a batch that was not built here");
    batch[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer_id.to_le_bytes());
    batch[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&producer_epoch.to_le_bytes());
    batch[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&base_sequence.to_le_bytes());
    let crc = crc32fast::hash(&batch[CRC_START..len]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Bytes a [`BatchBuilder::new`] reserves: a header and 1 KiB of records,
/// enough for a handful of small records (control batches, tests, tools)
/// without reserving `len_max`, which may be up to [`BATCH_LEN_MAX`].
const BUILDER_CAPACITY_DEFAULT: usize = BATCH_HEADER_LEN + 1024;

/// Builds a record batch, as a producer does.
///
/// ```
/// use fjord_codec::{records, BatchBuilder};
/// let mut b = BatchBuilder::new(1 << 20);
/// b.push(Some(b"user-1"), Some(b"hello"), &[("source", Some(b"cli"))], 1_700_000_000_000).unwrap();
/// let batch = b.finish();
/// let recs: Vec<_> = records(&batch).unwrap().collect::<Result<_, _>>().unwrap();
/// assert_eq!(recs[0].value.as_deref(), Some(&b"hello"[..]));
/// ```
#[derive(Debug)]
pub struct BatchBuilder {
    buf: BytesMut,
    len_max: usize,
    count: u32,
    first_timestamp: i64,
    max_timestamp: i64,
    attributes: u16,
    compression: Compression,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
}

impl BatchBuilder {
    /// A builder whose batch will not exceed `len_max` bytes (capped at
    /// [`BATCH_LEN_MAX`]). It starts small, with room for a header and
    /// 1 KiB of records, and grows as records are pushed:
    /// right for one-off batches built with a generous `len_max`. A caller
    /// that fills batches to their limit should use
    /// [`with_capacity`](Self::with_capacity).
    pub fn new(len_max: usize) -> Self {
        Self::with_capacity(len_max, BUILDER_CAPACITY_DEFAULT)
    }

    /// A builder like [`new`](Self::new) that reserves room for `capacity`
    /// bytes, header included, up front, so that a batch filled up to
    /// `capacity` is never reallocated and copied while it grows.
    /// `capacity` is clamped to `BATCH_HEADER_LEN..=len_max` (after
    /// `len_max` is capped at [`BATCH_LEN_MAX`]): nothing beyond the limit
    /// can ever be used.
    pub fn with_capacity(len_max: usize, capacity: usize) -> Self {
        let len_max = len_max.min(BATCH_LEN_MAX);
        let capacity = capacity.min(len_max).max(BATCH_HEADER_LEN);
        let mut buf = BytesMut::with_capacity(capacity);
        buf.put_bytes(0, BATCH_HEADER_LEN);
        BatchBuilder {
            buf,
            len_max,
            count: 0,
            first_timestamp: 0,
            max_timestamp: i64::MIN,
            attributes: COMPRESSION_NONE,
            compression: Compression::None,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }

    /// Compresses the records when the batch is finished (§2.3).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Sets the idempotent-producer fields (§2) of a batch being built,
    /// e.g. once it is known which sequence it will be sent with.
    pub fn set_producer(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
    }

    /// Sets the idempotent-producer fields (§2).
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.set_producer(producer_id, producer_epoch, base_sequence);
        self
    }

    /// Bytes one record would take in a batch.
    pub fn record_len(key: Option<&[u8]>, value: Option<&[u8]>, headers: &[(&str, Option<&[u8]>)]) -> usize {
        RECORD_LEN_MIN
            + key.map_or(0, <[u8]>::len)
            + value.map_or(0, <[u8]>::len)
            + headers
                .iter()
                .map(|(k, v)| RECORD_HEADER_FIXED_LEN + k.len() + v.map_or(0, <[u8]>::len))
                .sum::<usize>()
    }

    /// Appends one record.
    ///
    /// # Errors
    /// [`Error::TooLarge`] when the record would take the batch past its
    /// limit, or a header key is longer than [`HEADER_KEY_LEN_MAX`]. The
    /// builder is unchanged then, so the caller can finish this batch and
    /// start another.
    pub fn push(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
        timestamp_ms: i64,
    ) -> Result<()> {
        let rec_len = Self::record_len(key, value, headers);
        let new_len = self.buf.len() + rec_len;
        if new_len > self.len_max {
            return Err(Error::TooLarge { what: "batch", size: new_len as u64, max: self.len_max as u64 });
        }
        if let Some((k, _)) = headers.iter().find(|(k, _)| k.len() > HEADER_KEY_LEN_MAX) {
            return Err(Error::TooLarge {
                what: "header key",
                size: k.len() as u64,
                max: HEADER_KEY_LEN_MAX as u64,
            });
        }
        if self.count == 0 {
            self.first_timestamp = timestamp_ms;
        }
        let b = &mut self.buf;
        b.reserve(rec_len);
        b.put_u32_le((rec_len - 4) as u32);
        b.put_u32_le(self.count);
        b.put_i64_le(timestamp_ms.wrapping_sub(self.first_timestamp));
        put_opt(b, key);
        put_opt(b, value);
        b.put_u32_le(headers.len() as u32);
        for (k, v) in headers {
            b.put_u16_le(k.len() as u16);
            b.put_slice(k.as_bytes());
            put_opt(b, *v);
        }
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp_ms);
        Ok(())
    }

    /// Number of records pushed so far.
    pub fn record_count(&self) -> u32 {
        self.count
    }

    /// Bytes the builder can hold before it must reallocate.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Bytes the batch would have if finished now.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Writes the header and CRC and returns the batch.
    ///
    /// # Panics
    /// If no record was pushed: an empty batch is not valid.
    pub fn finish(mut self) -> Bytes {
        assert!(self.count > 0, "a batch needs at least one record");
        if let Some(packed) = compress(self.compression, &self.buf[BATCH_HEADER_LEN..]) {
            // A block that would not fit the batch limit (incompressible
            // data near the limit) is stored as it is.
            if BATCH_HEADER_LEN + packed.len() <= self.len_max {
                self.buf.truncate(BATCH_HEADER_LEN);
                self.buf.extend_from_slice(&packed);
                self.attributes |= self.compression.attribute();
            }
        }
        let b = &mut self.buf[..];
        let len = b.len() as u32;
        b[BATCH_LEN_AT..BATCH_LEN_AT + 4].copy_from_slice(&len.to_le_bytes());
        b[MAGIC_AT] = BATCH_MAGIC;
        b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&self.attributes.to_le_bytes());
        b[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&self.count.to_le_bytes());
        b[FIRST_TIMESTAMP_AT..FIRST_TIMESTAMP_AT + 8].copy_from_slice(&self.first_timestamp.to_le_bytes());
        b[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&self.max_timestamp.to_le_bytes());
        // The producer fields and the CRC over everything.
        restamp_producer(b, self.producer_id, self.producer_epoch, self.base_sequence);
        self.buf.freeze()
    }

    /// Builds a control batch (§2.2) of kind `kind` ([`CONTROL_NOOP`],
    /// [`CONTROL_CONF_CHANGE`]) carrying `payload`.
    ///
    /// # Panics
    /// If `payload` does not fit in [`BATCH_LEN_MAX`].
    pub fn control(kind: u16, payload: &[u8], timestamp_ms: i64) -> Bytes {
        let mut b = BatchBuilder::new(BATCH_LEN_MAX);
        b.attributes |= ATTR_CONTROL;
        b.push(Some(&kind.to_le_bytes()), Some(payload), &[], timestamp_ms)
            .expect("control payload fits in a batch");
        b.finish()
    }
}

fn put_opt(b: &mut BytesMut, v: Option<&[u8]>) {
    match v {
        Some(v) => {
            b.put_i32_le(v.len() as i32);
            b.put_slice(v);
        }
        None => b.put_i32_le(-1),
    }
}

/// Iterator over consecutive whole batches in a buffer; see [`split_batches`].
#[derive(Debug)]
pub struct BatchIter {
    buf: Bytes,
    failed: bool,
}

/// Splits a buffer of consecutive batches (a fetch response, a segment
/// slice) into `(header, batch bytes)` pairs without copying. Headers are
/// checked; CRCs are not (see [`verify_crc`]).
pub fn split_batches(buf: Bytes) -> BatchIter {
    BatchIter { buf, failed: false }
}

impl Iterator for BatchIter {
    type Item = Result<(BatchHeader, Bytes)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.buf.is_empty() {
            return None;
        }
        let parsed = BatchHeader::parse(&self.buf).and_then(|h| {
            if (h.batch_len as usize) <= self.buf.len() {
                Ok(h)
            } else {
                Err(Error::Truncated { needed: h.batch_len as usize, have: self.buf.len() })
            }
        });
        match parsed {
            Ok(header) => Some(Ok((header, self.buf.split_to(header.batch_len as usize)))),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushes 100-byte records until the builder refuses one; returns how
    /// many times its buffer had to grow.
    fn fill(b: &mut BatchBuilder) -> usize {
        let mut grew = 0;
        let mut capacity = b.capacity();
        while b.push(None, Some(&[7; 100]), &[], 0).is_ok() {
            if b.capacity() != capacity {
                grew += 1;
                capacity = b.capacity();
            }
        }
        grew
    }

    #[test]
    fn with_capacity_fills_to_its_limit_without_growing() {
        const LEN_MAX: usize = 256 * 1024;
        let mut b = BatchBuilder::with_capacity(LEN_MAX, LEN_MAX);
        assert!(b.capacity() >= LEN_MAX);
        assert_eq!(fill(&mut b), 0, "the buffer was reallocated");
        assert!(b.len() + BatchBuilder::record_len(None, Some(&[7; 100]), &[]) > LEN_MAX);
        let header = validate_batch(&b.finish(), LEN_MAX).unwrap();
        assert!(header.record_count > 2000);

        // `new` starts small, so the same batch grows (and is copied) as it fills.
        let mut small = BatchBuilder::new(LEN_MAX);
        assert!(small.capacity() < LEN_MAX / 16);
        assert!(fill(&mut small) > 0);
    }

    #[test]
    fn with_capacity_reserves_no_more_than_the_limit_allows() {
        assert!(BatchBuilder::with_capacity(4096, 1 << 30).capacity() < 1 << 20);
        assert!(BatchBuilder::with_capacity(1 << 30, 1 << 30).capacity() < 2 * BATCH_LEN_MAX);
        // Below a header: still room for the header, which is always written.
        let b = BatchBuilder::with_capacity(4096, 0);
        assert!(b.capacity() >= BATCH_HEADER_LEN);
        assert_eq!(b.len(), BATCH_HEADER_LEN);
    }
}
