//! Sequence state of idempotent producers, kept by a group's leader so
//! that a retried batch is never written twice and a gap is refused.
//!
//! A producer stamps each batch with its producer id, epoch and the
//! sequence number of its first record (storage-format.md §2). The leader
//! checks every proposed batch against the table below before proposing
//! it: the next sequence is appended; a batch it already holds (a retry)
//! is answered with the offsets it was first stored at; anything else is
//! refused.
//!
//! **Where the truth lives.** The table is derived from the batch headers
//! in the leader's log and nothing else, so it needs no file of its own and
//! cannot disagree with the log. A leader builds it by scanning its log
//! once it serves (it has committed an entry of its own term, so every
//! earlier entry in its log is committed and will stay) and an idempotent
//! batch arrives: the scan runs on a blocking thread while such batches
//! wait, in order, in the group's task. It then keeps the table up to date
//! as it proposes. It is dropped when leadership is lost, because
//! a deposed leader's uncommitted suffix may be overwritten. A new leader,
//! or a restarted broker, therefore deduplicates exactly like the old one
//! for every batch that was acknowledged.
//!
//! **Bounds.** Per producer the last [`PRODUCER_BATCHES_RETAINED`]
//! batches are remembered (a client retries only its batches in flight,
//! fewer than that); producers idle for [`PRODUCER_IDLE_EXPIRY_MS`] (by
//! the broker's clock) are forgotten, and at most
//! [`PRODUCERS_PER_GROUP_MAX`] are kept (the longest idle goes first).
//! The rebuild reads the headers of the last [`PRODUCER_REBUILD_BYTES`] of
//! the log (whole segments), not the whole log, so a failover costs the
//! same on a 10 GiB partition as on a small one. The time window is not
//! used for the scan because record timestamps are the producers' (a
//! replay of old data carries old ones). So across a leader change a retry
//! is recognised when less than that much was written to the partition
//! between the first attempt and the retry, which retry timeouts of
//! seconds keep far from. A producer the table does not know (new,
//! expired, or beyond the scan) may start at any sequence.

use std::collections::{HashMap, VecDeque};

use fjord_codec::{sequence_add, split_batches, BatchHeader};
use fjord_storage::Log;

use crate::{Error, Result};

/// Recent batches remembered per producer: a retry of any of them is
/// recognised. The client keeps fewer batches than this in flight per
/// partition (Kafka uses 5 for both).
pub const PRODUCER_BATCHES_RETAINED: usize = 5;
/// A producer not heard from for this long is forgotten (Kafka's
/// `producer.id.expiration.ms` defaults to a day; retries happen within
/// seconds, and a shorter window keeps the rebuild scan short).
pub const PRODUCER_IDLE_EXPIRY_MS: i64 = 60 * 60 * 1000;
/// Producers remembered per partition; beyond it the longest idle is dropped.
pub const PRODUCERS_PER_GROUP_MAX: usize = 10_000;
/// How much of the log's tail a new leader scans for producer state; see
/// the module doc. At the default 1 GiB segments the scan covers one or
/// two segments: at 1 KiB batches a cold scan touches every page of them,
/// at 256 KiB batches one page per batch.
pub const PRODUCER_REBUILD_BYTES: u64 = 1024 * 1024 * 1024;
/// Bytes read from the log per step of the rebuild scan (only the batch
/// headers are looked at; the slices are mmap'd, not copied).
const REBUILD_READ_BYTES: usize = 64 * 1024 * 1024;

/// One batch a producer wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SeqBatch {
    first_seq: i32,
    last_seq: i32,
    /// Raft index of the entry holding it: how its offsets are found again.
    raft_index: u64,
}

#[derive(Debug, Clone)]
struct ProducerEntry {
    epoch: i16,
    /// Oldest first, at most [`PRODUCER_BATCHES_RETAINED`].
    batches: VecDeque<SeqBatch>,
    /// Broker clock of the last batch, or the batch's timestamp when
    /// rebuilt from the log.
    last_seen_ms: i64,
}

/// What to do with a proposed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not idempotent, or the next in sequence: propose it.
    Append,
    /// Already in the log as the entry at this Raft index: answer with it.
    Duplicate { raft_index: u64 },
}

/// Sequence of the last record of a batch of `count` (at least 1) records starting at `first`.
fn last_sequence(first: i32, count: u32) -> i32 {
    sequence_add(first, count - 1)
}

/// The idempotent producers of one group, as its leader sees them.
#[derive(Debug, Default)]
pub(crate) struct ProducerTable {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerTable {
    /// Decides on a batch with header `h` (already validated by the broker).
    ///
    /// # Errors
    /// [`Error::ProducerFenced`] for an epoch older than the one stored;
    /// [`Error::OutOfOrderSequence`] for a sequence that neither follows
    /// the last one nor repeats a remembered batch, or a new epoch that
    /// does not start at 0.
    pub(crate) fn check(&self, h: &BatchHeader) -> Result<Verdict> {
        if h.producer_id < 0 || h.is_control() {
            return Ok(Verdict::Append);
        }
        let Some(p) = self.producers.get(&h.producer_id) else {
            return Ok(Verdict::Append);
        };
        let (pid, epoch, first) = (h.producer_id, h.producer_epoch, h.base_sequence);
        if epoch < p.epoch {
            return Err(Error::ProducerFenced { producer_id: pid, epoch, current_epoch: p.epoch });
        }
        if epoch > p.epoch {
            // A producer bumps its epoch to start its sequence over.
            return match first {
                0 => Ok(Verdict::Append),
                _ => Err(Error::OutOfOrderSequence { producer_id: pid, expected: 0, got: first }),
            };
        }
        let last = last_sequence(first, h.record_count);
        if let Some(b) = p.batches.iter().find(|b| b.first_seq == first && b.last_seq == last) {
            return Ok(Verdict::Duplicate { raft_index: b.raft_index });
        }
        let expected = p.batches.back().map_or(first, |b| sequence_add(b.last_seq, 1));
        if first == expected {
            return Ok(Verdict::Append);
        }
        Err(Error::OutOfOrderSequence { producer_id: pid, expected, got: first })
    }

    /// Records a batch that is in the log (or proposed) at `raft_index`.
    pub(crate) fn record(&mut self, h: &BatchHeader, raft_index: u64, now_ms: i64) {
        if h.producer_id < 0 || h.is_control() {
            return;
        }
        if !self.producers.contains_key(&h.producer_id) && self.producers.len() >= PRODUCERS_PER_GROUP_MAX {
            self.evict_longest_idle();
        }
        let p = self.producers.entry(h.producer_id).or_insert_with(|| ProducerEntry {
            epoch: h.producer_epoch,
            batches: VecDeque::with_capacity(PRODUCER_BATCHES_RETAINED),
            last_seen_ms: now_ms,
        });
        if h.producer_epoch != p.epoch {
            p.epoch = h.producer_epoch;
            p.batches.clear();
        }
        if p.batches.len() == PRODUCER_BATCHES_RETAINED {
            p.batches.pop_front();
        }
        let last_seq = last_sequence(h.base_sequence, h.record_count);
        p.batches.push_back(SeqBatch { first_seq: h.base_sequence, last_seq, raft_index });
        p.last_seen_ms = p.last_seen_ms.max(now_ms);
    }

    /// Forgets producers idle since before `now_ms - PRODUCER_IDLE_EXPIRY_MS`.
    pub(crate) fn expire(&mut self, now_ms: i64) {
        self.producers.retain(|_, p| now_ms - p.last_seen_ms <= PRODUCER_IDLE_EXPIRY_MS);
    }

    fn evict_longest_idle(&mut self) {
        if let Some(pid) = self.producers.iter().min_by_key(|(_, p)| p.last_seen_ms).map(|(id, _)| *id) {
            self.producers.remove(&pid);
        }
    }

    /// Number of producers remembered.
    pub(crate) fn len(&self) -> usize {
        self.producers.len()
    }

    /// Builds the table from the batch headers in the last
    /// [`PRODUCER_REBUILD_BYTES`] of `log`; every producer found counts as
    /// seen at `now_ms`. Blocking: reads the log.
    ///
    /// # Errors
    /// A storage error, or a damaged header.
    pub(crate) fn rebuild(log: &Log, now_ms: i64) -> Result<ProducerTable> {
        let mut table = ProducerTable::default();
        let end = log.log_end_offset();
        let mut offset = log.tail_start(PRODUCER_REBUILD_BYTES);
        while offset < end {
            let read = log.read(offset, REBUILD_READ_BYTES, end)?;
            if read.next_offset <= offset {
                break;
            }
            for batch in split_batches(read.batches) {
                let (h, _) = batch.map_err(|e| Error::Corrupt(format!("batch header in the log: {e}")))?;
                table.record(&h, h.raft_index, now_ms);
            }
            offset = read.next_offset;
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use fjord_codec::BatchBuilder;

    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: u32) -> BatchHeader {
        let mut b = BatchBuilder::new(1 << 20).producer(pid, epoch, seq);
        for _ in 0..count {
            b.push(None, Some(b"x"), &[], 1).unwrap();
        }
        let bytes: Bytes = b.finish();
        BatchHeader::parse(&bytes).unwrap()
    }

    #[test]
    fn sequences_follow_repeat_or_fail() {
        let mut t = ProducerTable::default();
        let a = header(7, 0, 0, 3);
        assert_eq!(t.check(&a).unwrap(), Verdict::Append);
        t.record(&a, 10, 0);
        // The retry of the same batch is a duplicate pointing at its entry.
        assert_eq!(t.check(&a).unwrap(), Verdict::Duplicate { raft_index: 10 });
        let b = header(7, 0, 3, 2);
        assert_eq!(t.check(&b).unwrap(), Verdict::Append);
        t.record(&b, 11, 0);
        // A gap, and a batch overlapping a stored one but not equal to it.
        for (seq, count) in [(6, 1), (4, 1), (2, 3)] {
            match t.check(&header(7, 0, seq, count)) {
                Err(Error::OutOfOrderSequence { producer_id: 7, expected: 5, got }) => assert_eq!(got, seq),
                other => panic!("seq {seq}: {other:?}"),
            }
        }
        // Other producers are independent; unknown ones start anywhere.
        assert_eq!(t.check(&header(8, 0, 42, 1)).unwrap(), Verdict::Append);
        assert_eq!(t.check(&header(-1, -1, -1, 1)).unwrap(), Verdict::Append);
    }

    #[test]
    fn epochs_fence_and_restart_sequences() {
        let mut t = ProducerTable::default();
        t.record(&header(1, 2, 0, 1), 5, 0);
        assert!(matches!(
            t.check(&header(1, 1, 1, 1)),
            Err(Error::ProducerFenced { producer_id: 1, epoch: 1, current_epoch: 2 })
        ));
        assert!(matches!(
            t.check(&header(1, 3, 9, 1)),
            Err(Error::OutOfOrderSequence { expected: 0, got: 9, .. })
        ));
        let bumped = header(1, 3, 0, 1);
        assert_eq!(t.check(&bumped).unwrap(), Verdict::Append);
        t.record(&bumped, 6, 0);
        assert_eq!(t.check(&header(1, 3, 1, 1)).unwrap(), Verdict::Append);
        assert!(matches!(t.check(&header(1, 2, 1, 1)), Err(Error::ProducerFenced { .. })));
    }

    #[test]
    fn only_recent_batches_are_remembered_and_sequences_wrap() {
        let mut t = ProducerTable::default();
        for i in 0..(PRODUCER_BATCHES_RETAINED as i32 + 2) {
            t.record(&header(1, 0, i, 1), i as u64, 0);
        }
        // The oldest two fell out of the window: a retry of them is now a gap.
        assert!(matches!(t.check(&header(1, 0, 0, 1)), Err(Error::OutOfOrderSequence { .. })));
        assert!(matches!(t.check(&header(1, 0, 2, 1)).unwrap(), Verdict::Duplicate { raft_index: 2 }));
        assert_eq!(last_sequence(i32::MAX - 1, 3), 0);
        let mut t = ProducerTable::default();
        t.record(&header(2, 0, i32::MAX - 1, 3), 1, 0);
        assert_eq!(t.check(&header(2, 0, 1, 1)).unwrap(), Verdict::Append);
    }

    #[test]
    fn idle_producers_expire_and_the_table_is_bounded() {
        let mut t = ProducerTable::default();
        t.record(&header(1, 0, 0, 1), 1, 0);
        t.record(&header(2, 0, 0, 1), 2, PRODUCER_IDLE_EXPIRY_MS);
        t.expire(PRODUCER_IDLE_EXPIRY_MS + 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.check(&header(1, 0, 9, 1)).unwrap(), Verdict::Append, "expired: unknown again");
        for pid in 0..PRODUCERS_PER_GROUP_MAX as i64 + 10 {
            t.record(&header(100 + pid, 0, 0, 1), 1, pid);
        }
        assert_eq!(t.len(), PRODUCERS_PER_GROUP_MAX);
    }
}
