//! The partition's Raft hard state and applied index (`storage-format.md` §7).
//!
//! # Crash protocol
//! The file holds two slots, each a whole record with a sequence number
//! and its own CRC, in separate sectors. A store writes the next sequence
//! into the slot the current one is not in, in place, and fdatasyncs the
//! file. A crash mid-write can tear only the slot being written; the other
//! still holds the state before it, which is then the current state (the
//! torn write was never acknowledged: its fdatasync had not returned).
//!
//! Writing in place needs no new blocks, so a full disk cannot stop a Raft
//! group's term, vote and commit updates (issue #14): the version 1 file
//! was replaced whole through a new `raft-state.tmp`, and creating that on
//! a full disk stopped the metadata group. Only the first store (no file,
//! or a version 1 file) creates the file, atomically: written as
//! `raft-state.tmp`, fsynced, renamed, directory fsynced.
//!
//! A slot whose magic, version or CRC is wrong next to a valid one is the
//! torn write above. A file with no valid slot is reported as corrupt,
//! never silently reset: forgetting a vote could elect two leaders in one term.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use fjord_codec::format::*;
use fjord_codec::le;

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
    /// Encodes one slot (§7) for the write numbered `sequence`.
    pub fn encode(&self, sequence: u64) -> [u8; RAFT_STATE_LEN] {
        let mut b = [0u8; RAFT_STATE_LEN];
        b[RS_MAGIC_AT..][..4].copy_from_slice(&RAFT_STATE_MAGIC.to_le_bytes());
        b[RS_VERSION_AT..][..2].copy_from_slice(&RAFT_STATE_VERSION.to_le_bytes());
        for (at, v) in [
            (RS_SEQUENCE_AT, sequence),
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

    /// Decodes one slot, checking its magic, version and CRC; returns the
    /// state and the slot's sequence number.
    ///
    /// # Errors
    /// A description of the first check that fails.
    pub fn decode(b: &[u8]) -> std::result::Result<(RaftState, u64), String> {
        decode_record(b, RAFT_STATE_VERSION)
    }

    /// Reads the state of the partition in `dir`; `None` if it was never stored.
    ///
    /// # Errors
    /// As [`RaftStateFile::open`].
    pub fn load(dir: &Path) -> Result<Option<RaftState>> {
        RaftStateFile::open(dir).map(|(_, state)| state)
    }
}

/// Decodes a record of `version` (1: no sequence, fields 8 bytes earlier).
fn decode_record(b: &[u8], version: u16) -> std::result::Result<(RaftState, u64), String> {
    // Version 1 lacks the sequence field: its later fields sit 8 bytes earlier.
    let (shift, len) = match version {
        RAFT_STATE_VERSION_1 => (8, RAFT_STATE_V1_LEN),
        _ => (0, RAFT_STATE_LEN),
    };
    if b.len() < len {
        return Err(format!("length {} is below {len}", b.len()));
    }
    // Positions are within `len`, checked above; a read that still fails
    // is reported as the record being short, never a panic.
    let short = || format!("length {} is below {len}", b.len());
    let u64_at = |at: usize| le::u64(b, at - shift).ok_or_else(short);
    let magic = le::u32(b, RS_MAGIC_AT).ok_or_else(short)?;
    if magic != RAFT_STATE_MAGIC {
        return Err(format!("bad magic {magic:#010x}"));
    }
    let stored_version = le::u16(b, RS_VERSION_AT).ok_or_else(short)?;
    if stored_version != version {
        return Err(format!("unsupported version {stored_version}"));
    }
    let crc_at = RS_CRC_AT - shift;
    let stored = le::u32(b, crc_at).ok_or_else(short)?;
    let computed = crc32fast::hash(&b[..crc_at]);
    if stored != computed {
        return Err(format!("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"));
    }
    let sequence = if version == RAFT_STATE_VERSION_1 { 0 } else { u64_at(RS_SEQUENCE_AT)? };
    let state = RaftState {
        term: u64_at(RS_TERM_AT)?,
        vote: u64_at(RS_VOTE_AT)?,
        commit: u64_at(RS_COMMIT_AT)?,
        applied: u64_at(RS_APPLIED_AT)?,
        snapshot_index: u64_at(RS_SNAPSHOT_INDEX_AT)?,
        snapshot_term: u64_at(RS_SNAPSHOT_TERM_AT)?,
    };
    Ok((state, sequence))
}

/// Picks the current state of a version 2 file: the valid slot with the
/// higher sequence, which must sit in the slot its sequence names.
fn decode_file(b: &[u8]) -> std::result::Result<(RaftState, u64), String> {
    let mut best: Option<(RaftState, u64)> = None;
    let mut damaged = Vec::new();
    for slot in 0..RAFT_STATE_SLOTS {
        let bytes = &b[slot * RAFT_STATE_SLOT_BYTES..][..RAFT_STATE_LEN];
        if bytes.iter().all(|&x| x == 0) {
            continue; // never written
        }
        match RaftState::decode(bytes) {
            Ok((state, seq)) if seq as usize % RAFT_STATE_SLOTS == slot => {
                if best.is_none_or(|(_, s)| seq > s) {
                    best = Some((state, seq));
                }
            }
            Ok((_, seq)) => {
                damaged.push(format!("slot {slot} holds sequence {seq}, which belongs in the other"))
            }
            Err(why) => damaged.push(format!("slot {slot}: {why}")),
        }
    }
    match best {
        Some((state, seq)) => {
            if !damaged.is_empty() {
                // The write after `seq` was torn by a crash before its
                // fdatasync returned: nothing relied on it yet.
                tracing::warn!(sequence = seq, damaged = %damaged.join("; "), "raft state: using the slot before a torn write");
            }
            Ok((state, seq))
        }
        None if damaged.is_empty() => Err("neither slot holds a state".into()),
        None => Err(damaged.join("; ")),
    }
}

/// The `raft-state` file of one partition, open for stores (§7).
#[derive(Debug, Clone)]
pub struct RaftStateFile {
    dir: PathBuf,
    /// Sequence of the current slot; 0 when the file is not a version 2
    /// file yet (absent, or version 1), which the next store creates.
    sequence: u64,
}

impl RaftStateFile {
    /// Reads the state of the partition in `dir` (`None` if it was never
    /// stored) and returns the file, ready for [`RaftStateFile::store`].
    ///
    /// # Errors
    /// I/O errors, or [`Error::Corrupt`] for a file with no valid slot.
    pub fn open(dir: &Path) -> Result<(RaftStateFile, Option<RaftState>)> {
        let path = dir.join(RAFT_STATE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((RaftStateFile { dir: dir.to_owned(), sequence: 0 }, None))
            }
            Err(e) => return Err(io("read", &path)(e)),
        };
        let corrupt = |reason: String| Error::Corrupt { path: path.clone(), reason };
        // The length is checked before any field is read.
        let (state, sequence) = match bytes.len() {
            RAFT_STATE_V1_LEN => (decode_record(&bytes, RAFT_STATE_VERSION_1).map_err(corrupt)?.0, 0),
            RAFT_STATE_FILE_LEN => decode_file(&bytes).map_err(corrupt)?,
            n => {
                return Err(corrupt(format!(
                    "length {n} is neither {RAFT_STATE_FILE_LEN} nor a version 1 file's {RAFT_STATE_V1_LEN}"
                )))
            }
        };
        Ok((RaftStateFile { dir: dir.to_owned(), sequence }, Some(state)))
    }

    /// Durably replaces the state (see the crash protocol).
    ///
    /// # Errors
    /// I/O errors; the state before this store is then still the current one.
    pub fn store(&mut self, state: &RaftState) -> Result<()> {
        let next = self.sequence + 1;
        let path = self.dir.join(RAFT_STATE_FILE);
        if self.sequence == 0 {
            let tmp = self.dir.join(RAFT_STATE_TMP_FILE);
            let mut image = [0u8; RAFT_STATE_FILE_LEN];
            let slot = next as usize % RAFT_STATE_SLOTS;
            image[slot * RAFT_STATE_SLOT_BYTES..][..RAFT_STATE_LEN].copy_from_slice(&state.encode(next));
            let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
            f.write_all(&image).map_err(io("write", &tmp))?;
            f.sync_all().map_err(io("fsync", &tmp))?;
            std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
            sync_dir(&self.dir)?;
        } else {
            let f = OpenOptions::new().write(true).open(&path).map_err(io("open", &path))?;
            let at = (next as usize % RAFT_STATE_SLOTS) * RAFT_STATE_SLOT_BYTES;
            f.write_all_at(&state.encode(next), at as u64).map_err(io("write", &path))?;
            f.sync_data().map_err(io("fdatasync", &path))?;
        }
        self.sequence = next;
        Ok(())
    }
}

/// fsyncs a directory so that creations, renames and deletions in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(term: u64) -> RaftState {
        RaftState { term, vote: 2, commit: 100, applied: 99, snapshot_index: 10, snapshot_term: 3 }
    }

    #[test]
    fn stores_alternate_slots_in_place_and_load_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, s) = RaftStateFile::open(dir.path()).unwrap();
        assert_eq!(s, None);
        for term in 1..=5 {
            file.store(&state(term)).unwrap();
            assert_eq!(RaftState::load(dir.path()).unwrap(), Some(state(term)));
            let len = std::fs::metadata(dir.path().join(RAFT_STATE_FILE)).unwrap().len();
            assert_eq!(len, RAFT_STATE_FILE_LEN as u64);
        }
        // A file reopened goes on from its sequence.
        let (mut file, s) = RaftStateFile::open(dir.path()).unwrap();
        assert_eq!(s, Some(state(5)));
        file.store(&state(6)).unwrap();
        assert_eq!(RaftState::load(dir.path()).unwrap(), Some(state(6)));
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let before = inode(&dir.path().join(RAFT_STATE_FILE));
        file.store(&state(7)).unwrap();
        assert_eq!(inode(&dir.path().join(RAFT_STATE_FILE)), before, "written in place, not replaced");
    }

    #[test]
    fn a_torn_write_leaves_the_state_before_it_and_two_bad_slots_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, _) = RaftStateFile::open(dir.path()).unwrap();
        file.store(&state(1)).unwrap();
        file.store(&state(2)).unwrap(); // sequence 2, slot 0
        let path = dir.path().join(RAFT_STATE_FILE);
        let good = std::fs::read(&path).unwrap();
        // The write of sequence 3 (slot 1) torn at every byte: state 2 stands.
        for cut in [1, 9, 20, RS_CRC_AT, RAFT_STATE_LEN - 1] {
            let mut b = good.clone();
            let torn = state(3).encode(3);
            b[RAFT_STATE_SLOT_BYTES..][..cut].copy_from_slice(&torn[..cut]);
            std::fs::write(&path, &b).unwrap();
            assert_eq!(RaftState::load(dir.path()).unwrap(), Some(state(2)), "torn at {cut}");
        }
        // Both slots damaged: reported, never reset.
        for at in [0, RS_VERSION_AT, RS_TERM_AT + 3, RS_CRC_AT] {
            let mut b = good.clone();
            b[at] ^= 0x40;
            b[RAFT_STATE_SLOT_BYTES + at] ^= 0x40;
            std::fs::write(&path, &b).unwrap();
            let err = RaftState::load(dir.path()).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "byte {at}: {err}");
        }
        std::fs::write(&path, &good[..10]).unwrap();
        assert!(matches!(RaftState::load(dir.path()), Err(Error::Corrupt { .. })));
        std::fs::write(&path, vec![0u8; RAFT_STATE_FILE_LEN]).unwrap();
        assert!(matches!(RaftState::load(dir.path()), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn a_version_1_file_is_read_and_replaced_by_the_first_store() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(4);
        // Version 1 as it was written: the fields without the sequence.
        let mut v1 = [0u8; RAFT_STATE_V1_LEN];
        v1[RS_MAGIC_AT..][..4].copy_from_slice(&RAFT_STATE_MAGIC.to_le_bytes());
        v1[RS_VERSION_AT..][..2].copy_from_slice(&RAFT_STATE_VERSION_1.to_le_bytes());
        for (i, v) in
            [s.term, s.vote, s.commit, s.applied, s.snapshot_index, s.snapshot_term].iter().enumerate()
        {
            v1[8 + 8 * i..][..8].copy_from_slice(&v.to_le_bytes());
        }
        let crc = crc32fast::hash(&v1[..56]);
        v1[56..].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(dir.path().join(RAFT_STATE_FILE), v1).unwrap();
        let (mut file, loaded) = RaftStateFile::open(dir.path()).unwrap();
        assert_eq!(loaded, Some(s));
        file.store(&state(5)).unwrap();
        let len = std::fs::metadata(dir.path().join(RAFT_STATE_FILE)).unwrap().len();
        assert_eq!(len, RAFT_STATE_FILE_LEN as u64);
        assert_eq!(RaftState::load(dir.path()).unwrap(), Some(state(5)));
        v1[20] ^= 1;
        std::fs::write(dir.path().join(RAFT_STATE_FILE), v1).unwrap();
        assert!(matches!(RaftState::load(dir.path()), Err(Error::Corrupt { .. })));
    }

    proptest::proptest! {
        /// Bytes from disk never panic the decoders: any string is a state or an error.
        #[test]
        fn any_bytes_decode_or_fail_cleanly(b in proptest::collection::vec(proptest::num::u8::ANY, 0..2 * RAFT_STATE_LEN)) {
            let _ = RaftState::decode(&b);
            let _ = decode_record(&b, RAFT_STATE_VERSION_1);
        }

        #[test]
        fn any_file_decodes_or_fails_cleanly(b in proptest::collection::vec(proptest::num::u8::ANY, RAFT_STATE_FILE_LEN..=RAFT_STATE_FILE_LEN)) {
            let _ = decode_file(&b);
        }
    }
}
