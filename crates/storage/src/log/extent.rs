//! Changes to the log's extent, and Raft-index lookups: truncation of an
//! uncommitted suffix, reset to a snapshot point, retention, and the
//! mapping from a Raft index to its batch.

use bytes::Bytes;
use fjord_codec::{verify_crc, BatchHeader};

use super::{segment_for, Damage, DeletedSegment, Inner, Log, RaftPos};
use crate::raft_state::sync_dir;
use crate::segment::{Segment, SegmentView};
use crate::{Error, Result};

impl Log {
    /// Discards every batch at or after `offset`, which must be a batch
    /// boundary at or above the log start (a Raft follower whose leader
    /// changed drops its uncommitted tail). Durable before it returns.
    ///
    /// # Errors
    /// [`Error::BadTruncation`] for an offset inside a batch or below the
    /// log start; I/O errors poison the log.
    pub fn truncate_suffix(&self, offset: u64) -> Result<()> {
        let mut inner = self.lock();
        let (start, end) =
            (inner.segments[0].base_offset, inner.segments.last().expect("never empty").next_offset);
        if offset >= end {
            return Ok(());
        }
        if offset < start {
            return Err(Error::BadTruncation { offset, reason: "below the log start offset" });
        }
        let target = segment_for(&inner.segments, offset);
        let pos = target.position_of(offset)?;
        let h = target.view().header_at(pos as usize)?;
        if h.base_offset != offset {
            return Err(Error::BadTruncation { offset, reason: "not the first offset of a batch" });
        }
        let first_dropped_raft = h.raft_index;
        match self.truncate_segments(&mut inner, offset, pos) {
            Ok(()) => {}
            Err(e) => return Err(self.poison(&mut inner, e)),
        }
        // The new last entry: from the active segment, or the one before it.
        let n = inner.segments.len();
        let mut last = inner.segments[n - 1].last_header;
        if last.is_none() && n > 1 {
            last = inner.segments[n - 2].read_last_header()?;
        }
        inner.last_raft = last.map(|h| RaftPos { term: h.raft_term, index: h.raft_index });
        inner.next_raft_index = if inner.last_raft.is_none() { Some(first_dropped_raft) } else { None };
        inner.first_raft = inner.segments.iter().find_map(|s| s.first_raft_index());
        super::scrub::forget_stale_damage(&mut inner);
        // `truncate_to` fsynced the segment: everything below `offset` is durable.
        let mut st = self.lock_sync();
        st.durable = offset;
        let active = inner.segments.last().expect("never empty");
        st.recovery_point.store(active.base_offset, active.size)?;
        Ok(())
    }

    fn truncate_segments(&self, inner: &mut Inner, offset: u64, pos: u64) -> Result<()> {
        // Newest first, the directory fsynced after each, so a crash at any
        // point leaves a log that is a consistent prefix of the old one.
        while inner.segments.len() > 1 && inner.segments.last().expect("never empty").base_offset > offset {
            let seg = inner.segments.pop().expect("never empty");
            seg.delete(&self.dir)?;
            sync_dir(&self.dir)?;
        }
        let target = inner.segments.last_mut().expect("never empty");
        target.truncate_to(pos, &self.config())
    }

    /// Discards the whole log and starts it afresh, empty, at `start_offset`,
    /// its first entry to carry Raft index `next_raft_index`: a Raft
    /// follower installing a snapshot (the leader's log now starts there).
    /// Durable before it returns.
    ///
    /// # Errors
    /// I/O errors, which poison the log.
    pub fn reset(&self, start_offset: u64, next_raft_index: u64) -> Result<()> {
        let mut inner = self.lock();
        let result = (|| {
            while let Some(seg) = inner.segments.pop() {
                seg.delete(&self.dir)?;
                sync_dir(&self.dir)?;
            }
            inner.segments.push(Segment::create(&self.dir, start_offset, &self.config())?);
            sync_dir(&self.dir)
        })();
        if let Err(e) = result {
            return Err(self.poison(&mut inner, e));
        }
        inner.last_raft = None;
        inner.first_raft = None;
        inner.next_raft_index = Some(next_raft_index);
        inner.damaged.clear();
        let mut st = self.lock_sync();
        st.durable = start_offset;
        Ok(())
    }

    /// Deletes closed segments whose records all lie below `offset` (the
    /// active segment is never deleted). Returns what was deleted.
    ///
    /// # Errors
    /// I/O errors.
    pub fn delete_segments_before(&self, offset: u64) -> Result<Vec<DeletedSegment>> {
        let mut inner = self.lock();
        self.delete_front_while(&mut inner, |seg, _| seg.next_offset <= offset)
    }

    fn delete_front_while(
        &self,
        inner: &mut Inner,
        pred: impl Fn(&Segment, u64) -> bool,
    ) -> Result<Vec<DeletedSegment>> {
        let mut deleted = Vec::new();
        let mut total: u64 = inner.segments.iter().map(|s| s.size).sum();
        while inner.segments.len() > 1 && pred(&inner.segments[0], total) {
            let mut seg = inner.segments.remove(0);
            let last_raft =
                seg.read_last_header()?.map(|h| RaftPos { term: h.raft_term, index: h.raft_index });
            let d = DeletedSegment {
                base_offset: seg.base_offset,
                next_offset: seg.next_offset,
                size: seg.size,
                last_raft,
            };
            total -= seg.size;
            seg.delete(&self.dir)?;
            deleted.push(d);
        }
        if !deleted.is_empty() {
            inner.first_raft = inner.segments.iter().find_map(|s| s.first_raft_index());
            super::scrub::forget_stale_damage(inner);
            sync_dir(&self.dir)?;
        }
        Ok(deleted)
    }

    /// Background upkeep, run by the caller's timer with its clock: rolls an
    /// active segment older than `segment_ms` (or whose data has passed the
    /// retention time, so an idle partition's old data still goes), then
    /// applies time and size retention to closed segments lying entirely
    /// below `limit` (the high watermark).
    ///
    /// # Errors
    /// I/O errors.
    pub fn maintain(&self, now_ms: i64, limit: u64) -> Result<Vec<DeletedSegment>> {
        self.seal_closed()?;
        let mut inner = self.lock();
        let config = self.config();
        let retention_cut = config.retention_ms.map(|r| now_ms.saturating_sub(r as i64));
        let active = inner.segments.last().expect("never empty");
        if active.size > 0 && active.next_offset <= limit && inner.poisoned.is_none() {
            let aged =
                active.first_timestamp.is_some_and(|t| now_ms.saturating_sub(t) >= config.segment_ms as i64);
            // A segment of control batches only has no time (`i64::MIN`) and
            // is not rolled for it.
            let expired = retention_cut
                .is_some_and(|cut| active.max_timestamp != i64::MIN && active.max_timestamp < cut);
            if aged || expired {
                self.roll(&mut inner)?;
            }
        }
        let retention_bytes = config.retention_bytes;
        self.delete_front_while(&mut inner, |seg, total| {
            seg.next_offset <= limit
                && (retention_cut.is_some_and(|cut| seg.max_timestamp < cut)
                    || retention_bytes.is_some_and(|max| total - seg.size >= max))
        })
    }

    /// The batch written by Raft entry `index`, if the log holds it; its
    /// header is checked, its CRC is not (for the entry's term and offsets).
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a damaged header on the path.
    pub fn raft_entry(&self, index: u64) -> Result<Option<(BatchHeader, Bytes)>> {
        Ok(self.raft_entries(index, index + 1, usize::MAX)?.into_iter().next())
    }

    /// The batches of Raft entries `[lo, hi)`, stopping early after
    /// `max_bytes` (at least one is returned if the log holds `lo`). Each
    /// header is checked, the CRCs are not: for the entries this replica
    /// applies itself. What goes to another replica is read with
    /// [`Log::raft_entries_verified`].
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a damaged header on the path.
    pub fn raft_entries(&self, lo: u64, hi: u64, max_bytes: usize) -> Result<Vec<(BatchHeader, Bytes)>> {
        self.collect_raft_entries(lo, hi, max_bytes, false)
    }

    /// [`Log::raft_entries`] with every batch's CRC checked as it is, for
    /// entries sent to another replica: a batch damaged on this disk or in
    /// memory ends the list before it, so it never leaves this replica,
    /// and the damage is remembered so that reads refuse it and a scrub
    /// repairs it from a peer. The follower checks the CRC again on arrival.
    ///
    /// # Errors
    /// [`Error::Damaged`] if the batch of `lo` itself fails its CRC;
    /// [`Error::Corrupt`] for a damaged header on the path.
    pub fn raft_entries_verified(
        &self,
        lo: u64,
        hi: u64,
        max_bytes: usize,
    ) -> Result<Vec<(BatchHeader, Bytes)>> {
        self.collect_raft_entries(lo, hi, max_bytes, true)
    }

    fn collect_raft_entries(
        &self,
        lo: u64,
        hi: u64,
        max_bytes: usize,
        verify: bool,
    ) -> Result<Vec<(BatchHeader, Bytes)>> {
        let mut out = Vec::new();
        let mut inner = self.lock();
        let Some(first) = inner.segments.iter().rposition(|s| s.first_raft_index().is_some_and(|f| f <= lo))
        else {
            return Ok(out);
        };
        let Some(mut pos) = inner.segments[first].position_of_raft_index(lo)? else { return Ok(out) };
        let mut bytes = 0usize;
        let mut want = lo;
        for i in first..inner.segments.len() {
            let seg = &inner.segments[i];
            let view: SegmentView = seg.view();
            while (pos as usize) < view.size && want < hi {
                let h = view.header_at(pos as usize)?;
                if h.raft_index != want || (!out.is_empty() && bytes + h.batch_len as usize > max_bytes) {
                    return Ok(out);
                }
                let batch = view.map.slice(pos as usize..pos as usize + h.batch_len as usize);
                if verify {
                    if let Err(e) = verify_crc(&batch, &h) {
                        let damage = Damage {
                            segment: seg.base_offset,
                            position: pos,
                            len: h.batch_len as u64,
                            start_offset: h.base_offset,
                            end_offset: h.next_offset(),
                            reason: format!("raft entry {want}: {e}"),
                        };
                        let active = seg.active;
                        if out.is_empty() {
                            let err = Error::Damaged {
                                dir: self.dir.clone(),
                                start_offset: damage.start_offset,
                                end_offset: damage.end_offset,
                                reason: damage.reason.clone(),
                            };
                            self.remember_damage(&mut inner, damage, active);
                            return Err(err);
                        }
                        self.remember_damage(&mut inner, damage, active);
                        return Ok(out);
                    }
                }
                out.push((h, batch));
                bytes += h.batch_len as usize;
                pos += h.batch_len as u64;
                want += 1;
            }
            pos = 0;
        }
        Ok(out)
    }

    /// Raft index of the first entry in the log, if any.
    pub fn first_raft_index(&self) -> Option<u64> {
        self.lock().first_raft
    }
}
