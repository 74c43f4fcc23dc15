//! The partition's Raft hard state and applied index (`storage-format.md` §7).
//!
//! # Crash protocol
//! The file is small and replaced whole: write `raft-state.tmp`, fsync it,
//! rename it over `raft-state`, fsync the directory. A crash leaves either
//! the old file or the new one; a leftover `.tmp` is ignored and replaced by
//! the next store. A file whose magic, version or CRC is wrong is reported
//! as corrupt, never silently reset: forgetting a vote could elect two
//! leaders in one term.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use fjord_codec::format::*;

use crate::error::io;
use crate::{Error, Result};

/// Raft's durable state for one partition, plus where the log starts after a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RaftState {
    /// Current term.
    pub term: u64,
    /// Node voted for in `term`, 0 for none.
    pub vote: u64,
    /// Highest index known committed.
    pub commit: u64,
    /// Highest index applied to the state machine.
    pub applied: u64,
    /// Index of the last entry covered by a snapshot; the log starts after it.
    pub snapshot_index: u64,
    /// Term of that entry.
    pub snapshot_term: u64,
}

impl RaftState {
    /// Encodes the file (§7).
    pub fn encode(&self) -> [u8; RAFT_STATE_LEN] {
        let mut b = [0u8; RAFT_STATE_LEN];
        b[RS_MAGIC_AT..][..4].copy_from_slice(&RAFT_STATE_MAGIC.to_le_bytes());
        b[RS_VERSION_AT..][..2].copy_from_slice(&RAFT_STATE_VERSION.to_le_bytes());
        for (at, v) in [
            (RS_TERM_AT, self.term),
            (RS_VOTE_AT, self.vote),
            (RS_COMMIT_AT, self.commit),
            (RS_APPLIED_AT, self.applied),
            (RS_SNAPSHOT_INDEX_AT, self.snapshot_index),
            (RS_SNAPSHOT_TERM_AT, self.snapshot_term),
        ] {
            b[at..][..8].copy_from_slice(&v.to_le_bytes());
        }
        let crc = crc32fast::hash(&b[..RS_CRC_AT]);
        b[RS_CRC_AT..][..4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes the file, checking its length, magic, version and CRC.
    ///
    /// # Errors
    /// A description of the first check that fails.
    pub fn decode(b: &[u8]) -> std::result::Result<RaftState, String> {
        if b.len() != RAFT_STATE_LEN {
            return Err(format!("length {} is not {RAFT_STATE_LEN}", b.len()));
        }
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        let magic = u32::from_le_bytes(b[RS_MAGIC_AT..][..4].try_into().unwrap());
        if magic != RAFT_STATE_MAGIC {
            return Err(format!("bad magic {magic:#010x}"));
        }
        let version = u16::from_le_bytes(b[RS_VERSION_AT..][..2].try_into().unwrap());
        if version != RAFT_STATE_VERSION {
            return Err(format!("unsupported version {version}"));
        }
        let stored = u32::from_le_bytes(b[RS_CRC_AT..][..4].try_into().unwrap());
        let computed = crc32fast::hash(&b[..RS_CRC_AT]);
        if stored != computed {
            return Err(format!("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"));
        }
        Ok(RaftState {
            term: u64_at(RS_TERM_AT),
            vote: u64_at(RS_VOTE_AT),
            commit: u64_at(RS_COMMIT_AT),
            applied: u64_at(RS_APPLIED_AT),
            snapshot_index: u64_at(RS_SNAPSHOT_INDEX_AT),
            snapshot_term: u64_at(RS_SNAPSHOT_TERM_AT),
        })
    }

    /// Reads the state of the partition in `dir`; `None` if it was never stored.
    ///
    /// # Errors
    /// I/O errors, or [`Error::Corrupt`] for a damaged file.
    pub fn load(dir: &Path) -> Result<Option<RaftState>> {
        let path = dir.join(RAFT_STATE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("read", &path)(e)),
        };
        // The length is checked before any field is read.
        RaftState::decode(&bytes).map(Some).map_err(|reason| Error::Corrupt { path, reason })
    }

    /// Durably replaces the state of the partition in `dir` (see the crash protocol).
    ///
    /// # Errors
    /// I/O errors; the old state is then still in place.
    pub fn store(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(RAFT_STATE_TMP_FILE);
        let path = dir.join(RAFT_STATE_FILE);
        let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(&self.encode()).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        sync_dir(dir)
    }
}

/// fsyncs a directory so that creations, renames and deletions in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_load_round_trip_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(RaftState::load(dir.path()).unwrap(), None);
        let s =
            RaftState { term: 5, vote: 2, commit: 100, applied: 99, snapshot_index: 10, snapshot_term: 3 };
        s.store(dir.path()).unwrap();
        assert_eq!(RaftState::load(dir.path()).unwrap(), Some(s));
        let s2 = RaftState { term: 6, ..s };
        s2.store(dir.path()).unwrap();
        assert_eq!(RaftState::load(dir.path()).unwrap(), Some(s2));
        let path = dir.path().join(RAFT_STATE_FILE);
        for at in [0, RS_VERSION_AT, RS_TERM_AT + 3, RS_CRC_AT] {
            let mut b = s2.encode();
            b[at] ^= 0x40;
            std::fs::write(&path, b).unwrap();
            let err = RaftState::load(dir.path()).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "byte {at}: {err}");
        }
        std::fs::write(&path, &s2.encode()[..10]).unwrap();
        assert!(matches!(RaftState::load(dir.path()), Err(Error::Corrupt { .. })));
    }

    proptest::proptest! {
        /// Bytes from disk never panic the decoder: any string is a state or an error.
        #[test]
        fn any_bytes_decode_or_fail_cleanly(b in proptest::collection::vec(proptest::num::u8::ANY, 0..2 * RAFT_STATE_LEN)) {
            let _ = RaftState::decode(&b);
        }
    }
}
