//! Scrubbing: re-reading closed segments to find bit rot, refusing to serve
//! what is damaged, and replacing it with a good copy (issue #20).
//!
//! A closed segment is trusted on open without being read (§9), so damage
//! to it (a flipped bit on the disk or in memory) would be served until a
//! client's CRC check failed. [`Log::scrub`] walks every closed segment's
//! batches and checks what the appender guaranteed: header in range, CRC,
//! offsets and Raft indexes consecutive, and the offset index pointing at
//! the batches it names. A damaged range is remembered ([`Damage`]) and
//! [`Log::read`] refuses it with [`Error::Damaged`] naming its offsets,
//! while the ranges around it still read. [`Log::repair`] writes a copy of
//! the range from another replica over it (the batches are the same bytes
//! on every replica: the leader stamps them once), after checking the copy
//! covers exactly the same offsets and bytes and passes every CRC.
//!
//! # Crash protocol
//! A repair writes in place, over bytes that are already wrong, then
//! fdatasyncs and reads the range back through the map. A crash in between
//! leaves the range no better than before (still failing its CRC), and the
//! next scrub finds it again; nothing that was good is ever written.
//! Damage is remembered in memory only: after a restart it is found again
//! by the next scrub.

use std::os::unix::fs::FileExt;

use bytes::{Bytes, BytesMut};
use fjord_codec::{verify_crc, BatchHeader};

use super::{Inner, Log};
use crate::error::io;
use crate::index::OffsetEntry;
use crate::segment::SegmentView;
use crate::{Error, Result};

/// The largest damaged range [`Log::repair`] replaces in one call (and a
/// peer serves for it): larger ranges are reported and left refused.
pub const REPAIR_RANGE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Bytes [`Log::read_verified`] reads per step.
const VERIFIED_READ_BYTES: usize = 4 * 1024 * 1024;

/// A range of a closed segment whose batches fail their checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Base offset of the segment.
    pub segment: u64,
    /// Byte position of the range in the segment's log file.
    pub position: u64,
    /// Length of the range in bytes.
    pub len: u64,
    /// First offset the range holds.
    pub start_offset: u64,
    /// The offset after it.
    pub end_offset: u64,
    /// What failed first.
    pub reason: String,
}

/// What a scrub pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Closed segments checked.
    pub segments: u64,
    /// Bytes of batches read.
    pub bytes: u64,
    /// Batches that passed.
    pub batches: u64,
    /// Damaged ranges, in offset order.
    pub damage: Vec<Damage>,
    /// Offset-index entries that do not point at the batch they name.
    pub index_damage: Vec<String>,
}

impl Log {
    /// Checks every closed segment (see the module doc), calling `pace`
    /// with the bytes read after each batch (the caller's rate limit), and
    /// remembers what is damaged so that reads refuse it. Reads and appends
    /// go on meanwhile: the lock is held only to pick each segment up.
    ///
    /// # Errors
    /// None for damage (it is the report); an error only if the log cannot
    /// be listed.
    pub fn scrub(&self, pace: &mut dyn FnMut(u64)) -> Result<ScrubReport> {
        let bases: Vec<u64> =
            self.lock().segments.iter().filter(|s| !s.active).map(|s| s.base_offset).collect();
        let mut report = ScrubReport::default();
        for base in bases {
            let picked = {
                let inner = self.lock();
                inner
                    .segments
                    .iter()
                    .find(|s| s.base_offset == base && !s.active)
                    .map(|s| (s.view(), s.next_offset, s.offset_entries()))
            };
            let Some((view, next_offset, entries)) = picked else { continue }; // deleted meanwhile
            let found = scrub_segment(&view, base, next_offset, &entries, pace, &mut report);
            let mut inner = self.lock();
            if !inner.segments.iter().any(|s| s.base_offset == base && !s.active) {
                continue;
            }
            inner.damaged.retain(|d| d.segment != base);
            for d in &found {
                tracing::error!(
                    dir = %self.dir.display(), segment = base, start_offset = d.start_offset,
                    end_offset = d.end_offset, position = d.position, len = d.len, reason = %d.reason,
                    "scrub found a damaged range; it is not served until repaired"
                );
            }
            inner.damaged.extend(found.iter().cloned());
            inner.damaged.sort_by_key(|d| d.start_offset);
            report.segments += 1;
            report.damage.extend(found);
        }
        Ok(report)
    }

    /// The damaged ranges known (found by [`Log::scrub`], not yet repaired).
    pub fn damaged(&self) -> Vec<Damage> {
        self.lock().damaged.clone()
    }

    /// Remembers a range found damaged outside a scrub (an entry about to
    /// be sent to a peer failed its CRC), once, so that reads refuse it and
    /// the next repair replaces it. Damage in the active segment is only
    /// logged: repairs replace closed segments, and recovery checks the
    /// active one's tail.
    pub(super) fn remember_damage(&self, inner: &mut Inner, d: Damage, active: bool) {
        if inner.damaged.iter().any(|x| x.segment == d.segment && x.position == d.position) {
            return;
        }
        tracing::error!(
            dir = %self.dir.display(), segment = d.segment, start_offset = d.start_offset,
            end_offset = d.end_offset, position = d.position, len = d.len, reason = %d.reason,
            "a batch failed its CRC on its way to a peer; it is not sent or served until repaired"
        );
        if !active {
            inner.damaged.push(d);
            inner.damaged.sort_by_key(|d| d.start_offset);
        }
    }

    /// The batches holding offsets `[start, end)` as this replica has them,
    /// each checked against its CRC, for another replica to repair from.
    ///
    /// # Errors
    /// [`Error::Damaged`] if this copy is damaged too (known or found now),
    /// [`Error::OffsetOutOfRange`] if the log does not hold the range,
    /// [`Error::RepairRefused`] if it exceeds [`REPAIR_RANGE_BYTES_MAX`].
    pub fn read_verified(&self, start: u64, end: u64) -> Result<Bytes> {
        let log_end = self.log_end_offset();
        if end > log_end || start >= end {
            return Err(Error::OffsetOutOfRange { offset: end, log_start: self.log_start_offset(), log_end });
        }
        let mut out = BytesMut::new();
        let mut at = start;
        while at < end {
            let r = self.read(at, VERIFIED_READ_BYTES, end)?;
            if r.next_offset <= at {
                break;
            }
            let mut pos = 0;
            while pos < r.batches.len() {
                let h = BatchHeader::parse(&r.batches[pos..]).map_err(|e| self.damaged_here(at, end, e))?;
                let len = h.batch_len as usize;
                let batch =
                    r.batches.get(pos..pos + len).ok_or_else(|| self.damaged_here(at, end, "short batch"))?;
                verify_crc(batch, &h).map_err(|e| self.damaged_here(h.base_offset, h.next_offset(), e))?;
                pos += len;
            }
            out.extend_from_slice(&r.batches);
            if out.len() as u64 > REPAIR_RANGE_BYTES_MAX {
                return Err(Error::RepairRefused(format!(
                    "offsets [{start}, {end}) hold more than {REPAIR_RANGE_BYTES_MAX} bytes"
                )));
            }
            at = r.next_offset;
        }
        Ok(out.freeze())
    }

    fn damaged_here(&self, start: u64, end: u64, why: impl std::fmt::Display) -> Error {
        Error::Damaged {
            dir: self.dir.clone(),
            start_offset: start,
            end_offset: end,
            reason: why.to_string(),
        }
    }

    /// Replaces the damaged range `d` with `batches`, a copy of offsets
    /// `[d.start_offset, d.end_offset)` from another replica, which must be
    /// exactly `d.len` bytes of consecutive batches passing their CRCs.
    /// Durable before it returns (see the crash protocol).
    ///
    /// # Errors
    /// [`Error::RepairRefused`] when the copy does not fit the range or the
    /// range is no longer known damaged; I/O errors writing it.
    pub fn repair(&self, d: &Damage, batches: &[u8]) -> Result<()> {
        let refuse = |why: String| {
            Error::RepairRefused(format!("offsets [{}, {}): {why}", d.start_offset, d.end_offset))
        };
        if batches.len() as u64 != d.len {
            return Err(refuse(format!("the copy is {} bytes, the damaged range {}", batches.len(), d.len)));
        }
        check_copy(batches, d.start_offset, d.end_offset).map_err(refuse)?;
        let mut inner = self.lock();
        if !inner.damaged.contains(d) {
            return Err(refuse("no longer known damaged (repaired, or removed by retention)".into()));
        }
        let seg = inner
            .segments
            .iter_mut()
            .find(|s| s.base_offset == d.segment && !s.active)
            .ok_or_else(|| refuse("its segment is gone".into()))?;
        let (file, path) = seg.file_handle()?;
        file.write_all_at(batches, d.position).map_err(io("repair", &path))?;
        file.sync_data().map_err(io("fdatasync", &path))?;
        let view = seg.view();
        let written = view.map.get(d.position as usize..(d.position + d.len) as usize).unwrap_or_default();
        check_copy(written, d.start_offset, d.end_offset)
            .map_err(|why| refuse(format!("read back: {why}")))?;
        inner.damaged.retain(|x| x != d);
        tracing::info!(
            dir = %self.dir.display(), start_offset = d.start_offset, end_offset = d.end_offset, bytes = d.len,
            "repaired a damaged range from another replica"
        );
        Ok(())
    }
}

/// Whether `b` is consecutive whole batches holding exactly `[start, end)`,
/// each passing its CRC.
fn check_copy(b: &[u8], start: u64, end: u64) -> std::result::Result<(), String> {
    let (mut pos, mut expected) = (0usize, start);
    while pos < b.len() {
        let h = BatchHeader::parse(&b[pos..]).map_err(|e| format!("batch at byte {pos}: {e}"))?;
        let len = h.batch_len as usize;
        let batch = b.get(pos..pos + len).ok_or_else(|| format!("batch at byte {pos} runs past the copy"))?;
        verify_crc(batch, &h).map_err(|e| format!("batch at offset {}: {e}", h.base_offset))?;
        if h.base_offset != expected {
            return Err(format!("batch at byte {pos} starts at offset {}, not {expected}", h.base_offset));
        }
        expected = h.next_offset();
        pos += len;
    }
    if expected != end {
        return Err(format!("the copy ends at offset {expected}, not {end}"));
    }
    Ok(())
}

/// The batch at `pos`, if it passes every check given what precedes it.
fn check_batch(
    view: &SegmentView,
    pos: usize,
    expected: u64,
    prev_raft: Option<(u64, u64)>,
) -> std::result::Result<BatchHeader, String> {
    let h = view.header_at(pos).map_err(|e| e.to_string())?;
    verify_crc(&view.map[pos..pos + h.batch_len as usize], &h).map_err(|e| e.to_string())?;
    if h.base_offset != expected {
        return Err(format!("base offset {} where {expected} was expected", h.base_offset));
    }
    if let Some((term, index)) = prev_raft {
        if h.raft_index != index + 1 || h.raft_term < term {
            return Err(format!(
                "raft entry ({}, {}) does not follow ({term}, {index})",
                h.raft_term, h.raft_index
            ));
        }
    }
    Ok(h)
}

/// Checks one closed segment; returns its damaged ranges.
fn scrub_segment(
    view: &SegmentView,
    base: u64,
    next_offset: u64,
    entries: &[OffsetEntry],
    pace: &mut dyn FnMut(u64),
    report: &mut ScrubReport,
) -> Vec<Damage> {
    let size = view.size;
    let intact_at = |pos: usize| -> Option<BatchHeader> {
        let h = view.header_at(pos).ok()?;
        verify_crc(&view.map[pos..pos + h.batch_len as usize], &h).ok()?;
        Some(h)
    };
    let mut damage = Vec::new();
    let mut starts = std::collections::BTreeMap::new();
    let (mut pos, mut expected, mut prev_raft) = (0usize, base, None);
    while pos < size {
        match check_batch(view, pos, expected, prev_raft) {
            Ok(h) => {
                starts.insert(pos, h);
                pos += h.batch_len as usize;
                expected = h.next_offset();
                prev_raft = Some((h.raft_term, h.raft_index));
                report.batches += 1;
                report.bytes += h.batch_len as u64;
                pace(h.batch_len as u64);
            }
            Err(reason) => {
                // Where good batches resume: right after this one when its
                // length holds and an intact batch follows it, else at the
                // next index point whose batch is intact and agrees with
                // its entry, else the segment's end.
                let after = view.header_at(pos).ok().map(|h| pos + h.batch_len as usize).filter(|&next| {
                    next == size || intact_at(next).is_some_and(|n| n.base_offset > expected)
                });
                let resume = match after {
                    Some(next) if next == size => Some((size, next_offset)),
                    Some(next) => intact_at(next).map(|n| (next, n.base_offset)),
                    None => None,
                };
                let resume = resume
                    .or_else(|| {
                        entries.iter().find_map(|e| {
                            let at = e.position as usize;
                            let off = base + e.rel_offset as u64;
                            (at > pos && off > expected)
                                .then(|| intact_at(at))
                                .flatten()
                                .filter(|h| h.base_offset == off && h.raft_index == e.raft_index)
                                .map(|_| (at, off))
                        })
                    })
                    .unwrap_or((size, next_offset));
                damage.push(Damage {
                    segment: base,
                    position: pos as u64,
                    len: (resume.0 - pos) as u64,
                    start_offset: expected,
                    end_offset: resume.1,
                    reason: format!("{}: {reason}", view.path.display()),
                });
                pace((resume.0 - pos) as u64);
                report.bytes += (resume.0 - pos) as u64;
                (pos, expected, prev_raft) = (resume.0, resume.1, None);
            }
        }
    }
    if expected != next_offset && damage.is_empty() {
        damage.push(Damage {
            segment: base,
            position: size as u64,
            len: 0,
            start_offset: expected,
            end_offset: next_offset,
            reason: format!(
                "{}: the batches end at offset {expected}, the segment at {next_offset}",
                view.path.display()
            ),
        });
    }
    let in_damage =
        |at: usize| damage.iter().any(|d| (d.position as usize..(d.position + d.len) as usize).contains(&at));
    for e in entries {
        let at = e.position as usize;
        if in_damage(at) {
            continue;
        }
        let ok = starts
            .get(&at)
            .is_some_and(|h| h.base_offset == base + e.rel_offset as u64 && h.raft_index == e.raft_index);
        if !ok {
            report.index_damage.push(format!(
                "{}: offset index entry (offset {}, position {at}, raft index {}) does not name the batch there",
                view.path.display(),
                base + e.rel_offset as u64,
                e.raft_index
            ));
        }
    }
    damage
}

/// The first damaged range holding `offset`, for [`Log::read`].
pub(super) fn damage_at(inner: &Inner, offset: u64) -> Option<&Damage> {
    inner.damaged.iter().find(|d| (d.start_offset..d.end_offset).contains(&offset))
}

/// The position of the first damaged range of segment `base` at or after
/// `pos`, where a read from `pos` must stop.
pub(super) fn damage_after(inner: &Inner, base: u64, pos: u64) -> Option<u64> {
    inner.damaged.iter().filter(|d| d.segment == base && d.position >= pos).map(|d| d.position).min()
}

/// Forgets damage of segments that are gone or active again (retention,
/// truncation, reset).
pub(super) fn forget_stale_damage(inner: &mut Inner) {
    let segments = &inner.segments;
    inner.damaged.retain(|d| segments.iter().any(|s| s.base_offset == d.segment && !s.active));
}
