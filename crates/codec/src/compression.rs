//! Batch compression (`storage-format.md` §2.3): the records region of a
//! batch may be one LZ4 block or one zstd frame. The header stays uncompressed, so offsets,
//! CRCs and the log never need to decompress; producers compress and
//! consumers (and the broker's validation) decompress.

use std::borrow::Cow;

use bytes::Bytes;

use crate::batch::BatchHeader;
use crate::format::*;
use crate::le;
use crate::{Error, Result};

/// How a batch's records are compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    /// Stored as they are.
    #[default]
    None,
    /// One LZ4 block (fast; about 2-4x on text).
    Lz4,
    /// One zstd frame at level [`ZSTD_LEVEL`] (slower to write, smaller:
    /// about 1.5x LZ4's ratio on text).
    Zstd,
}

/// zstd level producers compress at: zstd's and Kafka's default, most of
/// the ratio for a fraction of the higher levels' CPU.
pub const ZSTD_LEVEL: i32 = 3;

impl Compression {
    /// The codec named by a batch's attribute bits.
    ///
    /// # Errors
    /// [`Error::BadHeader`] for a codec this version does not know.
    pub fn from_attributes(attributes: u16) -> Result<Compression> {
        match attributes & ATTR_COMPRESSION_MASK {
            COMPRESSION_NONE => Ok(Compression::None),
            COMPRESSION_LZ4 => Ok(Compression::Lz4),
            COMPRESSION_ZSTD => Ok(Compression::Zstd),
            _ => Err(Error::BadHeader("unsupported compression codec")),
        }
    }

    /// Its attribute bits.
    pub fn attribute(self) -> u16 {
        match self {
            Compression::None => COMPRESSION_NONE,
            Compression::Lz4 => COMPRESSION_LZ4,
            Compression::Zstd => COMPRESSION_ZSTD,
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        })
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            other => Err(format!("unknown compression {other:?}; expected none, lz4 or zstd")),
        }
    }
}

/// The records region of a whole batch, decompressed if need be. The
/// declared decompressed length is checked against [`RECORDS_LEN_MAX`]
/// before anything is allocated, and the block must decode to exactly it.
pub(crate) fn records_region<'a>(batch: &'a [u8], header: &BatchHeader) -> Result<Cow<'a, [u8]>> {
    let len = header.batch_len as usize;
    let codec = Compression::from_attributes(header.attributes)?;
    match codec {
        Compression::None => batch
            .get(BATCH_HEADER_LEN..len)
            .map(Cow::Borrowed)
            .ok_or(Error::Truncated { needed: len, have: batch.len() }),
        Compression::Lz4 | Compression::Zstd => {
            let batch = batch.get(..len).ok_or(Error::Truncated { needed: len, have: batch.len() })?;
            if len < COMPRESSED_DATA_AT {
                return Err(Error::BadHeader("compressed batch has no length prefix"));
            }
            let plain = le::u32(batch, COMPRESSED_LEN_AT)
                .ok_or(Error::BadHeader("compressed batch has no length prefix"))?
                as usize;
            if plain > RECORDS_LEN_MAX {
                return Err(Error::TooLarge {
                    what: "decompressed records",
                    size: plain as u64,
                    max: RECORDS_LEN_MAX as u64,
                });
            }
            let mut out = vec![0u8; plain];
            let packed = &batch[COMPRESSED_DATA_AT..len];
            let decoded = match codec {
                Compression::Lz4 => lz4_flex::block::decompress_into(packed, &mut out).ok(),
                // Decoding into a buffer of the declared length bounds the
                // output whatever the frame claims.
                _ => zstd::bulk::decompress_to_buffer(packed, &mut out[..]).ok(),
            };
            let n = decoded.ok_or(Error::BadHeader("compressed records do not decode"))?;
            if n != plain {
                return Err(Error::BadHeader("compressed records decode to another length than declared"));
            }
            Ok(Cow::Owned(out))
        }
    }
}

/// [`records_region`] as shared bytes: a zero-copy slice when uncompressed.
pub(crate) fn records_bytes(batch: &Bytes, header: &BatchHeader) -> Result<Bytes> {
    match records_region(batch, header)? {
        Cow::Borrowed(_) => Ok(batch.slice(BATCH_HEADER_LEN..header.batch_len as usize)),
        Cow::Owned(v) => Ok(Bytes::from(v)),
    }
}

/// Compresses a records region: the length prefix, then the LZ4 block or
/// zstd frame. `None` for [`Compression::None`].
pub(crate) fn compress(codec: Compression, records: &[u8]) -> Option<Vec<u8>> {
    let packed = match codec {
        Compression::None => return None,
        Compression::Lz4 => lz4_flex::block::compress(records),
        // Compressing a buffer in memory fails only on allocation failure.
        Compression::Zstd => zstd::bulk::compress(records, ZSTD_LEVEL).expect("zstd compresses in memory"),
    };
    let mut out = Vec::with_capacity(4 + packed.len());
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    out.extend_from_slice(&packed);
    Some(out)
}

/// The same batch with its records region in `to`: the records are
/// decompressed and compressed again, the header is kept but for the
/// codec bits and the length, and the CRC is recomputed. A batch already
/// in `to` comes back as it is. Used by a broker whose topic forces a codec,
/// on a batch that passed [`crate::validate_batch`] with header `header`
/// (so it is not decoded and checked a second time).
///
/// # Errors
/// [`Error::TooLarge`] when the records do not fit `len_max` in any codec
/// (a compressed batch whose records, stored plain, would exceed it).
pub fn recompress(batch: &Bytes, header: &BatchHeader, to: Compression, len_max: usize) -> Result<Bytes> {
    if Compression::from_attributes(header.attributes)? == to {
        return Ok(batch.clone());
    }
    let plain = records_region(batch, header)?;
    let packed = compress(to, &plain).filter(|p| BATCH_HEADER_LEN + p.len() <= len_max);
    // Records that do not shrink enough to fit stay as they are, as a
    // producer's builder would leave them.
    let (codec, region): (Compression, &[u8]) = match &packed {
        Some(p) => (to, p),
        None => (Compression::None, &plain),
    };
    let size = BATCH_HEADER_LEN + region.len();
    if size > len_max {
        return Err(Error::TooLarge { what: "recompressed batch", size: size as u64, max: len_max as u64 });
    }
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + region.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_LEN]);
    out.extend_from_slice(region);
    let len = out.len() as u32;
    out[BATCH_LEN_AT..BATCH_LEN_AT + 4].copy_from_slice(&len.to_le_bytes());
    let attributes = (header.attributes & !ATTR_COMPRESSION_MASK) | codec.attribute();
    out[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_le_bytes());
    let crc = crc32fast::hash(&out[CRC_START..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(Bytes::from(out))
}
