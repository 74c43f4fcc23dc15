//! raft-rs's `Storage` over a partition's segment log: the log *is* the
//! Raft log. Entry `i` is the batch whose header says `raft_index == i`;
//! its data is that batch (a leader no-op is a control batch); the hard
//! state and the snapshot point live in the partition's `raft-state` file.

use std::sync::Arc;

use bytes::Bytes;
use fjord_codec::format::{CONTROL_CONF_CHANGE, CONTROL_NOOP};
use fjord_codec::{le, records, BatchBuilder, BatchHeader};
use fjord_storage::{Log, RaftPos, RaftState, RaftStateFile};
use raft::prelude::*;
use raft::{GetEntriesContext, StorageError};

use crate::{Error, Result};

/// First byte of a conf-change control record's payload: which raft-rs type it encodes.
const CONF_CHANGE_V1: u8 = 1;
const CONF_CHANGE_V2: u8 = 2;

/// The Raft log and state of one group, shared by its driver and readers.
#[derive(Debug)]
pub struct GroupStore {
    log: Arc<Log>,
    file: RaftStateFile,
    state: RaftState,
    conf: ConfState,
}

impl GroupStore {
    /// Wraps an opened log and reads the Raft state stored beside it.
    /// `voters` is the group's membership (from the cluster metadata).
    ///
    /// # Errors
    /// The state file failing to read, or corrupt.
    pub fn open(log: Arc<Log>, voters: Vec<u64>) -> Result<GroupStore> {
        let (file, state) = RaftStateFile::open(log.dir())?;
        let mut conf = ConfState::default();
        conf.set_voters(voters);
        Ok(GroupStore { log, file, state: state.unwrap_or_default(), conf })
    }

    /// The same store for a new raft-rs node over the same log and state
    /// (the driver restarting its node after a full disk).
    pub(crate) fn reopened(&self) -> GroupStore {
        GroupStore {
            log: self.log.clone(),
            file: self.file.clone(),
            state: self.state,
            conf: self.conf.clone(),
        }
    }

    /// The log.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// The persisted Raft state as last stored.
    pub fn raft_state(&self) -> RaftState {
        self.state
    }

    /// Durably stores a new hard state (term, vote, commit).
    ///
    /// # Errors
    /// I/O errors.
    pub fn store_hard_state(&mut self, hs: &HardState) -> Result<()> {
        let mut next = self.state;
        next.term = hs.term;
        next.vote = hs.vote;
        next.commit = hs.commit;
        if next != self.state {
            self.file.store(&next)?;
            self.state = next;
        }
        Ok(())
    }

    /// Records that the log now starts after `(index, term)` (a snapshot
    /// installed, or retention deleted the entries up to there).
    ///
    /// # Errors
    /// I/O errors.
    pub fn store_snapshot_point(&mut self, index: u64, term: u64) -> Result<()> {
        let mut next = self.state;
        next.snapshot_index = index;
        next.snapshot_term = term;
        next.commit = next.commit.max(index);
        self.file.store(&next)?;
        self.state = next;
        Ok(())
    }

    fn last_index_inner(&self) -> u64 {
        self.log.last_raft().map_or(self.state.snapshot_index, |p| p.index)
    }

    fn first_index_inner(&self) -> u64 {
        self.log.first_raft_index().unwrap_or(self.state.snapshot_index + 1)
    }
}

/// Timestamp of control batches: fixed, so every replica stores the same
/// bytes for the same entry (and control batches never move the time index).
const CONTROL_TIMESTAMP: i64 = 0;

/// The batch that stores a Raft entry: its own data when it is a batch, a
/// control batch for a leader no-op or a configuration change.
pub fn entry_to_batch(e: &Entry) -> Bytes {
    let now_ms = CONTROL_TIMESTAMP;
    match e.get_entry_type() {
        EntryType::EntryNormal if e.data.is_empty() => BatchBuilder::control(CONTROL_NOOP, &[], now_ms),
        EntryType::EntryNormal => e.data.clone(),
        EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
            let tag = if e.get_entry_type() == EntryType::EntryConfChange {
                CONF_CHANGE_V1
            } else {
                CONF_CHANGE_V2
            };
            let mut payload = Vec::with_capacity(e.data.len() + 1);
            payload.push(tag);
            payload.extend_from_slice(&e.data);
            BatchBuilder::control(CONTROL_CONF_CHANGE, &payload, now_ms)
        }
    }
}

/// The Raft entry a stored batch holds.
///
/// # Errors
/// [`Error::Corrupt`] for a control batch that cannot be decoded.
pub fn batch_to_entry(h: &BatchHeader, batch: Bytes) -> Result<Entry> {
    let mut e = Entry { index: h.raft_index, term: h.raft_term, ..Default::default() };
    if !h.is_control() {
        e.set_entry_type(EntryType::EntryNormal);
        e.data = batch;
        return Ok(e);
    }
    let rec = records(&batch)
        .map_err(|err| Error::Corrupt(format!("control batch at raft index {}: {err}", h.raft_index)))?
        .next()
        .ok_or_else(|| Error::Corrupt(format!("empty control batch at raft index {}", h.raft_index)))?
        .map_err(|err| Error::Corrupt(format!("control batch at raft index {}: {err}", h.raft_index)))?;
    // The kind is a 2-byte key; anything else is corrupt, never indexed blindly.
    let kind = rec.key.as_deref().filter(|k| k.len() == 2).and_then(|k| le::u16(k, 0));
    let payload = rec.value.unwrap_or_default();
    match kind {
        Some(CONTROL_NOOP) => e.set_entry_type(EntryType::EntryNormal),
        Some(CONTROL_CONF_CHANGE) if !payload.is_empty() => {
            e.set_entry_type(match payload[0] {
                CONF_CHANGE_V1 => EntryType::EntryConfChange,
                CONF_CHANGE_V2 => EntryType::EntryConfChangeV2,
                t => return Err(Error::Corrupt(format!("unknown conf change tag {t}"))),
            });
            e.data = payload.slice(1..);
        }
        _ => return Err(Error::Corrupt(format!("unknown control batch kind {kind:?}"))),
    }
    Ok(e)
}

fn storage_err(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(e.to_string().into()))
}

impl raft::Storage for GroupStore {
    fn initial_state(&self) -> raft::Result<raft::RaftState> {
        // A commit index above the log (a log cut short by recovery of
        // entries that were never acknowledged) would be a lie.
        let hs = HardState {
            term: self.state.term,
            vote: self.state.vote,
            commit: self.state.commit.min(self.last_index_inner()),
            ..Default::default()
        };
        Ok(raft::RaftState { hard_state: hs, conf_state: self.conf.clone() })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index_inner() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index_inner() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max = max_size.into().unwrap_or(u64::MAX).min(usize::MAX as u64) as usize;
        // Entries headed to a peer (the one context raft-rs lets wait) are
        // read with their CRCs checked: a batch damaged here is never sent.
        // If the first one is damaged, the send waits (raft-rs retries on
        // the next heartbeat response) until a scrub repairs it from a
        // replica that has it; any other error would abort the group.
        let batches = if context.can_async() {
            match self.log.raft_entries_verified(low, high, max) {
                Err(fjord_storage::Error::Damaged { .. }) => {
                    return Err(raft::Error::Store(StorageError::LogTemporarilyUnavailable))
                }
                other => other.map_err(storage_err)?,
            }
        } else {
            self.log.raft_entries(low, high, max).map_err(storage_err)?
        };
        if batches.is_empty() && low < high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        batches.into_iter().map(|(h, b)| batch_to_entry(&h, b).map_err(storage_err)).collect()
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.state.snapshot_index {
            return Ok(self.state.snapshot_term);
        }
        if idx < self.first_index_inner() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index_inner() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if let Some(RaftPos { term, index }) = self.log.last_raft() {
            if index == idx {
                return Ok(term);
            }
        }
        match self.log.raft_entry(idx).map_err(storage_err)? {
            Some((h, _)) => Ok(h.raft_term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first_index_inner())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index_inner())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // A snapshot of a partition is its log up to an index: its metadata
        // says where the leader's log now starts, and the follower resets
        // its log to start there; the entries follow by normal appends.
        let first = self.first_index_inner();
        let index = first - 1;
        let term = if index == self.state.snapshot_index {
            self.state.snapshot_term
        } else {
            raft::Storage::term(self, index).unwrap_or(self.state.snapshot_term)
        };
        let mut snap = Snapshot::default();
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.conf.clone());
        snap.data = Bytes::from(self.log.log_start_offset().to_le_bytes().to_vec());
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_codec::format::{ATTRIBUTES_AT, ATTR_CONTROL};
    use proptest::prelude::*;

    proptest! {
        /// A control batch read back from disk with any key and payload
        /// (a 1-byte kind once panicked here) decodes or fails cleanly.
        #[test]
        fn any_control_record_decodes_or_fails_cleanly(
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..4)),
            value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        ) {
            let mut b = BatchBuilder::new(1 << 20);
            b.push(key.as_deref(), value.as_deref(), &[], 0).unwrap();
            let mut batch = b.finish().to_vec();
            let attrs = le::u16(&batch, ATTRIBUTES_AT).unwrap() | ATTR_CONTROL;
            batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attrs.to_le_bytes());
            let h = BatchHeader::parse(&batch).unwrap();
            let _ = batch_to_entry(&h, Bytes::from(batch));
        }

        /// Any bytes from a peer decode to a Raft message or an error.
        #[test]
        fn any_peer_bytes_decode_or_fail_cleanly(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = crate::decode_message(&b);
        }
    }

    #[test]
    fn a_one_byte_control_kind_is_corrupt_not_a_panic() {
        let mut b = BatchBuilder::new(1 << 20);
        b.push(Some(&[1]), Some(b"x"), &[], 0).unwrap();
        let mut batch = b.finish().to_vec();
        batch[ATTRIBUTES_AT] |= ATTR_CONTROL as u8;
        let h = BatchHeader::parse(&batch).unwrap();
        assert!(matches!(batch_to_entry(&h, Bytes::from(batch)), Err(Error::Corrupt(_))));
    }
}
