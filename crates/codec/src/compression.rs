//! Batch compression (`storage-format.md` §2.3): the records region of a
//! batch may be one LZ4 block. The header stays uncompressed, so offsets,
//! CRCs and the log never need to decompress; producers compress and
//! consumers (and the broker's validation) decompress.

use std::borrow::Cow;

use bytes::Bytes;

use crate::batch::{u32_at, BatchHeader};
use crate::format::*;
use crate::{Error, Result};

/// How a batch's records are compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    /// Stored as they are.
    #[default]
    None,
    /// One LZ4 block (fast; about 2-4x on text).
    Lz4,
}

impl Compression {
    /// The codec named by a batch's attribute bits.
    ///
    /// # Errors
    /// [`Error::BadHeader`] for a codec this version does not know.
    pub fn from_attributes(attributes: u16) -> Result<Compression> {
        match attributes & ATTR_COMPRESSION_MASK {
            COMPRESSION_NONE => Ok(Compression::None),
            COMPRESSION_LZ4 => Ok(Compression::Lz4),
            _ => Err(Error::BadHeader("unsupported compression codec")),
        }
    }

    /// Its attribute bits.
    pub fn attribute(self) -> u16 {
        match self {
            Compression::None => COMPRESSION_NONE,
            Compression::Lz4 => COMPRESSION_LZ4,
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            other => Err(format!("unknown compression {other:?}; expected none or lz4")),
        }
    }
}

/// The records region of a whole batch, decompressed if need be. The
/// declared decompressed length is checked against [`RECORDS_LEN_MAX`]
/// before anything is allocated, and the block must decode to exactly it.
pub(crate) fn records_region<'a>(batch: &'a [u8], header: &BatchHeader) -> Result<Cow<'a, [u8]>> {
    let len = header.batch_len as usize;
    match Compression::from_attributes(header.attributes)? {
        Compression::None => Ok(Cow::Borrowed(&batch[BATCH_HEADER_LEN..len])),
        Compression::Lz4 => {
            if len < COMPRESSED_DATA_AT {
                return Err(Error::BadHeader("compressed batch has no length prefix"));
            }
            let plain = u32_at(batch, COMPRESSED_LEN_AT) as usize;
            if plain > RECORDS_LEN_MAX {
                return Err(Error::TooLarge {
                    what: "decompressed records",
                    size: plain as u64,
                    max: RECORDS_LEN_MAX as u64,
                });
            }
            let mut out = vec![0u8; plain];
            let n = lz4_flex::block::decompress_into(&batch[COMPRESSED_DATA_AT..len], &mut out)
                .map_err(|_| Error::BadHeader("compressed records do not decode"))?;
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

/// Compresses a records region: the length prefix then the LZ4 block.
pub(crate) fn compress_lz4(records: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + lz4_flex::block::get_maximum_output_size(records.len()));
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    out.extend_from_slice(&lz4_flex::block::compress(records));
    out
}
