//! The recovery point (`storage-format.md` §8): how far the active segment
//! is known to be on stable storage.
//!
//! # Crash protocol
//! After each successful fsync of the active segment, the position it
//! covered is written in place (24 bytes, one sector, with a CRC) — but not
//! fsynced: the file can only lag the data, never lead it, because it is
//! written after the data's fsync returned. Recovery trusts index points up
//! to the recorded position (that data was fsynced, so no write reordering
//! can have left a hole before it) and validates every batch after it. A
//! stale, missing or torn file only makes recovery scan more of the segment.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use fjord_codec::format::*;
use fjord_codec::le::Fixed;

use crate::error::io;
use crate::Result;

/// The open recovery-point file of a partition.
#[derive(Debug)]
pub(crate) struct RecoveryPoint {
    path: PathBuf,
    file: File,
}

impl RecoveryPoint {
    /// Opens (creating) the file in `dir` and returns it with the point it
    /// holds: `(segment base, position)`, or `None` if absent or damaged.
    pub(crate) fn open(dir: &Path) -> Result<(RecoveryPoint, Option<(u64, u64)>)> {
        let path = dir.join(RECOVERY_POINT_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open", &path))?;
        let mut b = [0u8; RECOVERY_POINT_LEN];
        let point = match file.read_exact_at(&mut b, 0) {
            Ok(()) => decode(&b),
            Err(_) => None,
        };
        Ok((RecoveryPoint { path, file }, point))
    }

    /// Records that the segment at `base` is durable below `position`.
    pub(crate) fn store(&self, base: u64, position: u64) -> Result<()> {
        self.file.write_all_at(&encode(base, position), 0).map_err(io("write", &self.path))
    }
}

fn encode(base: u64, position: u64) -> [u8; RECOVERY_POINT_LEN] {
    let mut b = [0u8; RECOVERY_POINT_LEN];
    b[RP_MAGIC_AT..][..4].copy_from_slice(&RECOVERY_POINT_MAGIC.to_le_bytes());
    b[RP_SEGMENT_AT..][..8].copy_from_slice(&base.to_le_bytes());
    b[RP_POSITION_AT..][..8].copy_from_slice(&position.to_le_bytes());
    let crc = crc32fast::hash(&b[RP_SEGMENT_AT..]);
    b[RP_CRC_AT..][..4].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8; RECOVERY_POINT_LEN]) -> Option<(u64, u64)> {
    let f = Fixed(b);
    (f.u32::<RP_MAGIC_AT>() == RECOVERY_POINT_MAGIC
        && f.u32::<RP_CRC_AT>() == crc32fast::hash(&b[RP_SEGMENT_AT..]))
    .then(|| (f.u64::<RP_SEGMENT_AT>(), f.u64::<RP_POSITION_AT>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_reads_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let (rp, point) = RecoveryPoint::open(dir.path()).unwrap();
        assert_eq!(point, None);
        rp.store(40, 12345).unwrap();
        assert_eq!(RecoveryPoint::open(dir.path()).unwrap().1, Some((40, 12345)));
        let path = dir.path().join(RECOVERY_POINT_FILE);
        for at in [0, RP_CRC_AT, RP_SEGMENT_AT + 1, RP_POSITION_AT + 7] {
            let mut b = encode(40, 12345);
            b[at] ^= 1;
            std::fs::write(&path, b).unwrap();
            assert_eq!(RecoveryPoint::open(dir.path()).unwrap().1, None, "byte {at}");
        }
        std::fs::write(&path, &encode(1, 2)[..10]).unwrap();
        assert_eq!(RecoveryPoint::open(dir.path()).unwrap().1, None);
    }

    proptest::proptest! {
        /// Any file content decodes to a point or to "absent", never a panic.
        #[test]
        fn any_bytes_decode_or_read_as_absent(b in proptest::array::uniform24(proptest::num::u8::ANY)) {
            let _ = decode(&b);
        }
    }
}
